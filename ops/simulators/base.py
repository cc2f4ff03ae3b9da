"""What every local simulator shares: a recorder of what arrived, injectable faults, an inspection API.

A simulator stands in for an external service we cannot reach (Twilio, a carrier's SMS
centre, WeChat, a broadcaster...). It speaks that service's real wire format, checks
credentials like the real one, records every message it accepts, and can be told to be
slow, to fail or to throttle. Its inspection API, on 127.0.0.1 only:

    GET    /_sim/messages          everything recorded, oldest first ({"messages": [...]})
    DELETE /_sim/messages          forget it
    GET    /_sim/faults            the current faults
    PUT    /_sim/faults            set faults: {"latency_ms": 150, "error_rate": 0.1,
                                   "error_status": 503, "throttle_rate": 0.0, "down": false}

Faults apply to protocol requests only, never to /_sim/.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

from broadcast.errors import InvalidInput


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0  # fraction of requests answered with error_status
    error_status: int = 500
    throttle_rate: float = 0.0  # fraction of requests throttled (HTTP 429, SMPP 0x58, WeChat 45009...)
    down: bool = False  # refuse everything as if unreachable (HTTP 503 / SMPP bind refused)

    def update(self, doc: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for key, value in doc.items():
            if key not in known:
                raise InvalidInput("unknown fault", field=key)
            if key == "down":
                if not isinstance(value, bool):
                    raise InvalidInput("must be true or false", field=key)
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput("must be a number >= 0", field=key)
            setattr(self, key, int(value) if key == "error_status" else value)


class Recorder:
    """Messages a simulator received, in order; safe to use from several threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self.faults = Faults()
        self._random = random.Random(0)

    def record(self, kind: str, **payload: Any) -> dict[str, Any]:
        entry = {"simulator": self.name, "kind": kind, "received_at": time.time(), **payload}
        with self._lock:
            entry["seq"] = len(self._messages) + 1
            self._messages.append(entry)
        return entry

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self._messages if kind is None or m["kind"] == kind]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (deterministic sequence per simulator)."""
        return rate > 0 and self._random.random() < rate

    async def delay(self) -> None:
        if self.faults.latency_ms > 0:
            await asyncio.sleep(self.faults.latency_ms / 1000)


RECORDER = web.AppKey("recorder", Recorder)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_inspection_routes(app: web.Application, recorder: Recorder) -> None:
    """The /_sim/ inspection API (see the module docstring)."""

    async def get_messages(request: web.Request) -> web.Response:
        kind = request.query.get("kind")
        return web.json_response({"messages": recorder.messages(kind)},
                                 dumps=lambda d: json.dumps(d, ensure_ascii=False, default=str))

    async def clear_messages(request: web.Request) -> web.Response:
        recorder.clear()
        return web.json_response({"cleared": True})

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(asdict(recorder.faults))

    async def put_faults(request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            if not isinstance(doc, dict):
                raise InvalidInput("body must be a JSON object", field="body")
            recorder.faults.update(doc)
        except (InvalidInput, json.JSONDecodeError) as exc:
            field = getattr(exc, "field", "body")
            return web.json_response({"error": {"message": str(exc), "field": field}}, status=422)
        return web.json_response(asdict(recorder.faults))

    app.router.add_get("/_sim/messages", get_messages)
    app.router.add_delete("/_sim/messages", clear_messages)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_put("/_sim/faults", put_faults)


def http_fault_middleware(recorder: Recorder, *, throttle_response: Callable[[], web.Response] | None = None):
    """Apply latency, downtime, errors and throttling to protocol requests (not /_sim/)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        await recorder.delay()
        faults = recorder.faults
        if faults.down:
            return web.json_response({"error": "service unavailable (simulated)"}, status=503)
        if recorder.roll(faults.throttle_rate):
            if throttle_response is not None:
                return throttle_response()
            return web.json_response({"error": "too many requests (simulated)"}, status=429,
                                     headers={"Retry-After": "1"})
        if recorder.roll(faults.error_rate):
            return web.json_response({"error": "server error (simulated)"}, status=faults.error_status)
        return await handler(request)

    return middleware


def http_simulator(name: str, routes: Callable[[web.Application, Recorder], None], *,
                   throttle_response: Callable[[], web.Response] | None = None,
                   recorder: Recorder | None = None) -> web.Application:
    """An aiohttp app for an HTTP simulator: its protocol ``routes``, faults, and the inspection API."""
    recorder = recorder or Recorder(name)
    app = web.Application(middlewares=[http_fault_middleware(recorder, throttle_response=throttle_response)],
                          client_max_size=32 * 1024 * 1024)
    app[RECORDER] = recorder
    routes(app, recorder)
    add_inspection_routes(app, recorder)
    return app
