"""A partner department's webhook receiver, checking what a careful partner would check.

    POST /webhook       a signed alert delivery (see channels/webhook.py for the protocol)

It answers 415 without a JSON Content-Type, 400 without the X-Broadcast-* headers or
with a body that is not a JSON object with ``alert_id``, 401 for a bad signature or a
timestamp outside the replay window (5 minutes either way), 409 for a delivery id it
has already accepted within that window (older ids need not be kept: their timestamps
would be refused as stale), and 200 ``{"received": "<delivery id>"}`` otherwise.

Recorded kinds: ``delivery`` (accepted: delivery_id, timestamp, signature, payload — the
decoded JSON) and ``refused`` (status, reason, delivery_id), so tests can count attempts.

Besides the shared faults, ``PUT /_sim/fail_next {"count": 2, "status": 503}`` makes the
next ``count`` deliveries fail with ``status`` (recorded as ``refused``), to exercise retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

from channels.webhook import DEMO_SECRET  # the secret of channels.webhook.demo_partner
from ops.simulators.base import Recorder, http_simulator

REPLAY_WINDOW_SECONDS = 300.0


@dataclass
class ReceiverState:
    secret: str
    window: float = REPLAY_WINDOW_SECONDS
    fail_count: int = 0
    fail_status: int = 503
    seen: dict[str, float] = field(default_factory=dict)  # delivery id -> when accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_failure(self) -> int | None:
        with self.lock:
            if self.fail_count <= 0:
                return None
            self.fail_count -= 1
            return self.fail_status

    def accept_once(self, delivery: str, now: float) -> bool:
        """Remember ``delivery``; False when it was already accepted within the window."""
        with self.lock:
            for old, when in list(self.seen.items()):
                if now - when > self.window:
                    del self.seen[old]
            if delivery in self.seen:
                return False
            self.seen[delivery] = now
            return True


STATE = web.AppKey("webhook_state", ReceiverState)


def create_app(recorder: Recorder | None = None, *, secret: str = DEMO_SECRET,
               window: float = REPLAY_WINDOW_SECONDS) -> web.Application:
    """The receiver app.

    Args:
        recorder: Where accepted and refused deliveries are recorded (a new one by default).
        secret: The shared secret signatures are checked with.
        window: Seconds a timestamp may differ from now; also how long delivery ids are kept.
    """
    state = ReceiverState(secret=secret, window=window)

    def routes(app: web.Application, rec: Recorder) -> None:
        app[STATE] = state

        def refuse(status: int, reason: str, delivery: str | None) -> web.Response:
            rec.record("refused", status=status, reason=reason, delivery_id=delivery)
            return web.json_response({"error": reason}, status=status)

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            delivery = request.headers.get("X-Broadcast-Delivery")
            failure = state.take_failure()
            if failure is not None:
                return refuse(failure, "failure injected by /_sim/fail_next", delivery)
            if request.content_type != "application/json":
                return refuse(415, "Content-Type must be application/json", delivery)
            stamp = request.headers.get("X-Broadcast-Timestamp", "")
            signature = request.headers.get("X-Broadcast-Signature", "")
            if not delivery or not stamp or not signature:
                return refuse(400, "X-Broadcast-Timestamp, -Signature and -Delivery are required", delivery)
            try:
                timestamp = int(stamp)
            except ValueError:
                return refuse(400, "X-Broadcast-Timestamp must be unix seconds", delivery)
            now = time.time()
            if abs(now - timestamp) > state.window:
                return refuse(401, "timestamp outside the replay window", delivery)
            expected = "sha256=" + hmac.new(state.secret.encode(), stamp.encode() + b"." + body,
                                            hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                return refuse(401, "bad signature", delivery)
            try:
                doc = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return refuse(400, "body is not JSON", delivery)
            if not isinstance(doc, dict) or "alert_id" not in doc:
                return refuse(400, "body must be a JSON object with alert_id", delivery)
            if not state.accept_once(delivery, now):
                return refuse(409, "delivery already received", delivery)
            rec.record("delivery", delivery_id=delivery, timestamp=timestamp, signature=signature,
                       user_agent=request.headers.get("User-Agent"), payload=doc)
            return web.json_response({"received": delivery})

        async def fail_next(request: web.Request) -> web.Response:
            try:
                doc = await request.json()
                count, status = int(doc.get("count", 1)), int(doc.get("status", 503))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                return web.json_response({"error": {"message": "want {\"count\": n, \"status\": s}",
                                                    "field": "body"}}, status=422)
            with state.lock:
                state.fail_count, state.fail_status = max(0, count), status
            return web.json_response({"count": state.fail_count, "status": state.fail_status})

        app.router.add_post("/webhook", receive)
        app.router.add_put("/_sim/fail_next", fail_next)

    return http_simulator("webhook", routes, recorder=recorder)
