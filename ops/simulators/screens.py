"""Simulator of the display-screen management API (the city's public LED/LCD screens).

    POST   /api/v1/screens/display     Authorization: Bearer demo-screens-token
        {"alert": "...", "screens": ["SC00001", ...],
         "content": {"lines": ["...", ...], "colour": "#RRGGBB", "blink": false},
         "until": "2026-07-01T20:00:00+08:00" | null}
    DELETE /api/v1/screens/display     {"alert": "...", "screens": [...]}   clears them
    GET    /api/v1/screens/{id}        what the screen shows now (404 if unknown)

Both answer 200 {"id": "D-000001", "results": [{"screen": id, "status": "displayed" |
"cleared" | "rejected", "code": ..., "message": ...}]}: a screen that is not in the
inventory is rejected ``unknown_screen``, content with more lines than the screen has, or
a line wider than it, ``content_too_large``. Widths are counted in full-width cells: a
wide (CJK) character takes one, any other character half of one. A request that is
malformed as a whole answers 400 {"error": {"code": "invalid_request", "message",
"field"}}; a missing or wrong token 401.

Recorded: kind ``display`` (alert, lines, colour, blink, until, displayed and rejected
screens) and kind ``clear``. The inventory (screen id -> (lines, chars_per_line))
defaults to the demo facility registry's screens, generated on first use.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ops.simulators.base import Recorder, http_simulator

DEMO_TOKEN = "demo-screens-token"
COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
MAX_SCREENS_PER_REQUEST = 1000


@functools.cache
def demo_inventory() -> dict[str, tuple[int, int]]:
    """Screen id -> (lines, chars_per_line) of the demo facility registry."""
    from geotarget import build_demo_gazetteer
    from geotarget.facilities import generate_screens

    return {s.id: (s.lines, s.chars_per_line) for s in generate_screens(build_demo_gazetteer())}


def half_cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F", "A") else 1 for c in text)


class BadRequest(Exception):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


def _screens(doc: dict[str, Any]) -> list[str]:
    screens = doc.get("screens")
    if (not isinstance(screens, list) or not screens or len(screens) > MAX_SCREENS_PER_REQUEST
            or not all(isinstance(s, str) and s for s in screens)):
        raise BadRequest(f"screens must be a list of 1..{MAX_SCREENS_PER_REQUEST} screen ids", "screens")
    return screens


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    content = doc.get("content")
    if not isinstance(content, dict):
        raise BadRequest("content must be an object", "content")
    lines = content.get("lines")
    if not isinstance(lines, list) or not lines or not all(isinstance(x, str) for x in lines):
        raise BadRequest("content.lines must be a non-empty list of strings", "content.lines")
    if any("\n" in line for line in lines):
        raise BadRequest("a line must not contain a line break", "content.lines")
    colour = content.get("colour")
    if not isinstance(colour, str) or not COLOUR.match(colour):
        raise BadRequest("content.colour must be #RRGGBB", "content.colour")
    if not isinstance(content.get("blink", False), bool):
        raise BadRequest("content.blink must be true or false", "content.blink")
    until = doc.get("until")
    if until is not None:
        try:
            moment = datetime.fromisoformat(until) if isinstance(until, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise BadRequest("until must be an ISO 8601 time with a UTC offset, or null", "until")
        if moment <= datetime.now(UTC):
            raise BadRequest("until is in the past", "until")
    return {"lines": lines, "colour": colour, "blink": bool(content.get("blink", False)), "until": until}


def create_app(recorder: Recorder | None = None, *, token: str = DEMO_TOKEN,
               screens: Mapping[str, tuple[int, int]] | None = None) -> web.Application:
    """The screen-management simulator; ``screens`` is the inventory (default: the demo registry's)."""
    counter = itertools.count(1)
    showing: dict[str, dict[str, Any]] = {}

    def inventory() -> Mapping[str, tuple[int, int]]:
        return screens if screens is not None else demo_inventory()

    def routes(app: web.Application, rec: Recorder) -> None:
        async def parse(request: web.Request) -> dict[str, Any] | web.Response:
            if request.headers.get("Authorization") != f"Bearer {token}":
                return _error(401, "unauthorized", "missing or wrong bearer token")
            try:
                doc = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return _error(400, "invalid_request", "the body is not JSON", "body")
            if not isinstance(doc, dict):
                return _error(400, "invalid_request", "the body must be a JSON object", "body")
            return doc

        async def display(request: web.Request) -> web.Response:
            doc = await parse(request)
            if isinstance(doc, web.Response):
                return doc
            try:
                targets, content = _screens(doc), _content(doc)
            except BadRequest as exc:
                return _error(400, "invalid_request", exc.message, exc.field)
            known = inventory()
            results, shown, rejected = [], [], []
            for screen in targets:
                if screen not in known:
                    item = {"screen": screen, "status": "rejected", "code": "unknown_screen",
                            "message": f"no screen {screen!r} is managed here"}
                else:
                    lines, chars = known[screen]
                    too_wide = [i for i, line in enumerate(content["lines"]) if half_cells(line) > 2 * chars]
                    if len(content["lines"]) > lines or too_wide:
                        item = {"screen": screen, "status": "rejected", "code": "content_too_large",
                                "message": f"the screen shows {lines} lines of {chars} characters"}
                    else:
                        item = {"screen": screen, "status": "displayed"}
                        showing[screen] = {"alert": doc.get("alert"), **content}
                        shown.append(screen)
                if item["status"] == "rejected":
                    rejected.append(item)
                results.append(item)
            reference = f"D-{next(counter):06d}"
            rec.record("display", id=reference, alert=doc.get("alert"), screens=shown, rejected=rejected, **content)
            return web.json_response({"id": reference, "results": results})

        async def clear(request: web.Request) -> web.Response:
            doc = await parse(request)
            if isinstance(doc, web.Response):
                return doc
            try:
                targets = _screens(doc)
            except BadRequest as exc:
                return _error(400, "invalid_request", exc.message, exc.field)
            known = inventory()
            results = [{"screen": s, "status": "cleared"} if s in known else
                       {"screen": s, "status": "rejected", "code": "unknown_screen",
                        "message": f"no screen {s!r} is managed here"} for s in targets]
            for screen in targets:
                showing.pop(screen, None)
            reference = f"D-{next(counter):06d}"
            rec.record("clear", id=reference, alert=doc.get("alert"),
                       screens=[r["screen"] for r in results if r["status"] == "cleared"])
            return web.json_response({"id": reference, "results": results})

        async def screen_state(request: web.Request) -> web.Response:
            screen = request.match_info["screen"]
            if request.headers.get("Authorization") != f"Bearer {token}":
                return _error(401, "unauthorized", "missing or wrong bearer token")
            if screen not in inventory():
                return _error(404, "unknown_screen", f"no screen {screen!r} is managed here")
            lines, chars = inventory()[screen]
            return web.json_response({"screen": screen, "lines": lines, "chars_per_line": chars,
                                      "showing": showing.get(screen)})

        app.router.add_post("/api/v1/screens/display", display)
        app.router.add_delete("/api/v1/screens/display", clear)
        app.router.add_get("/api/v1/screens/{screen}", screen_state)

    return http_simulator("screens", routes, recorder=recorder)
