"""Local simulators of the external services the channels talk to (see ops/simulators/base.py)."""
