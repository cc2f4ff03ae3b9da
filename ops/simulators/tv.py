"""Simulator of the TV broadcasters' CAP intake (where a station's playout takes crawls from).

    POST /intake/cap
        Content-Type: application/cap+xml (or application/xml)
        X-Broadcaster-Key: demo-tv-key          401 {"error": {"code": "unauthorized", ...}} if wrong
        X-Station-Id: TV01                      404 {"error": {"code": "unknown_station", ...}} if unknown
        body: a CAP 1.2 alert whose every <info> carries the parameters "crawl" (the text, one
        line, at most 1,000 characters) and "crawlSeconds" (a whole number, 1..86400).
    202 {"id": "TVI-000001", "station": "TV01", "status": "queued"}

Bad input answers 400 {"error": {"code": "invalid_cap" | "missing_parameter" | ..., "message",
"field"}}; a wrong content type 415. Each accepted document is recorded (kind ``cap``)
with the station, identifier, msgType and per info its language, headline, crawl and
crawlSeconds. Known stations default to the demo facility registry's (TV01..TV06).

:func:`cap_intake_routes` is shared with the radio intake simulator (ops/simulators/radio.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from broadcast.cap import from_xml
from broadcast.errors import BroadcastError
from broadcast.model import Alert, Info
from ops.simulators.base import Recorder, http_simulator

DEMO_KEY = "demo-tv-key"
DEMO_STATIONS = ("TV01", "TV02", "TV03", "TV04", "TV05", "TV06")  # the demo facility registry's TV stations
MAX_CAP_BYTES = 16 * 1024 * 1024  # CAP with embedded audio (radio) runs to a few megabytes
CAP_CONTENT_TYPES = ("application/cap+xml", "application/xml", "text/xml")


class IntakeRejection(Exception):
    """An input problem, answered 400 with the intake's error shape."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


def parameter(info: Info, name: str, index: int) -> str:
    """The one value of parameter ``name`` in ``info``."""
    values = [p.value for p in info.parameters if p.value_name == name]
    if len(values) != 1:
        raise IntakeRejection("missing_parameter" if not values else "duplicate_parameter",
                              f"every <info> needs exactly one <parameter> {name!r}", f"info[{index}].parameter")
    return values[0]


def cap_intake_routes(key: str, stations: Iterable[str], prefix: str,
                      check_info: Callable[[Info, int], dict[str, Any]]) -> Callable[[web.Application, Recorder], None]:
    """Routes of a broadcaster CAP intake: auth, station, CAP parsing, then ``check_info`` per info.

    ``check_info`` returns the decoded fields to record for one info, or raises IntakeRejection.
    """
    known = frozenset(stations)
    counter = itertools.count(1)

    def routes(app: web.Application, recorder: Recorder) -> None:
        async def intake(request: web.Request) -> web.Response:
            if request.headers.get("X-Broadcaster-Key") != key:
                return error_response(401, "unauthorized", "missing or wrong X-Broadcaster-Key")
            station = request.headers.get("X-Station-Id", "")
            if not station:
                return error_response(400, "missing_station", "the X-Station-Id header is required")
            if station not in known:
                return error_response(404, "unknown_station", f"no station {station!r} at this intake")
            if request.content_type not in CAP_CONTENT_TYPES:
                return error_response(415, "unsupported_media_type",
                                      f"send CAP as application/cap+xml, not {request.content_type!r}")
            body = await request.read()
            try:
                alert: Alert = from_xml(body, max_bytes=MAX_CAP_BYTES)
                if not alert.infos:
                    raise IntakeRejection("missing_info", "the alert has no <info> to air", "info")
                infos = [check_info(info, index) for index, info in enumerate(alert.infos)]
            except IntakeRejection as exc:
                return error_response(400, exc.code, exc.message, exc.field)
            except BroadcastError as exc:
                return error_response(400, "invalid_cap", exc.message, exc.field)
            reference = f"{prefix}-{next(counter):06d}"
            recorder.record("cap", id=reference, station=station, identifier=alert.identifier, sender=alert.sender,
                            msg_type=alert.msg_type.value, bytes=len(body), infos=infos)
            return web.json_response({"id": reference, "station": station, "status": "queued"}, status=202)

        app.router.add_post("/intake/cap", intake)

    return routes


def check_crawl(info: Info, index: int) -> dict[str, Any]:
    crawl = parameter(info, "crawl", index)
    seconds = parameter(info, "crawlSeconds", index)
    if not crawl.strip() or "\n" in crawl or len(crawl) > 1000:
        raise IntakeRejection("invalid_crawl", "the crawl must be one line of 1..1000 characters",
                              f"info[{index}].parameter")
    if not seconds.isdigit() or not 1 <= int(seconds) <= 86400:
        raise IntakeRejection("invalid_crawl_seconds", f"crawlSeconds {seconds!r} is not a whole number 1..86400",
                              f"info[{index}].parameter")
    return {"language": info.language, "headline": info.headline, "crawl": crawl, "crawlSeconds": int(seconds),
            "expires": info.expires.isoformat() if info.expires else None}


def create_app(recorder: Recorder | None = None, *, key: str = DEMO_KEY,
               stations: Iterable[str] = DEMO_STATIONS) -> web.Application:
    """The TV intake simulator (see the module docstring)."""
    return http_simulator("tv", cap_intake_routes(key, stations, "TVI", check_crawl), recorder=recorder)
