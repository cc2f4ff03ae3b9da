"""Geotargeting: the administrative gazetteer (city/district/street/community) and spatial lookups."""

from geotarget.demo import build_demo_gazetteer
from geotarget.gazetteer import Gazetteer, Level, TilingProblem, Unit

__all__ = ["Gazetteer", "Level", "TilingProblem", "Unit", "build_demo_gazetteer"]
