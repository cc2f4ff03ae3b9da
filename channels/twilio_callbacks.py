"""Twilio's callbacks to this service: delivery status (SMS and calls) and voice keypresses.

    POST /api/callbacks/twilio/status   MessageSid/MessageStatus or CallSid/CallStatus (+ ErrorCode)
                                        -> the receipt under keys.receipt(sid), JSON, TTL 7 days; 204
    POST /api/callbacks/twilio/voice    ?alert=..&recipient=..&lang=.. with Digits (the <Gather> action)
                                        -> "1": an acknowledgement in the hash ACKNOWLEDGEMENTS(alert),
                                        then the voice-acknowledgement hook (on_voice_ack); answers TwiML
    POST /api/callbacks/twilio/sms      an inbound SMS (From, To, Body, MessageSid): handed to the
                                        inbound-SMS hook (on_inbound_sms), whose answer goes back as
                                        the reply (TwiML <Message>); no hook: an empty <Response/>

Twilio cannot send our bearer token, so these paths are public (the API's auth middleware
exempts ``/api/callbacks/``); instead every request must carry a valid
``X-Twilio-Signature`` (HMAC-SHA1 of the URL and the sorted form fields, keyed with the
account's auth token), else 403. The URL signed is the one Twilio was given: pass
``public_base_url`` to :func:`add_routes` when a proxy sits in front of the service.

The Redis client is ``app[CALLBACK_REDIS]`` (an asyncio client; :func:`redis_ctx` opens one).

A receipt (string, JSON)::

    {"provider": "twilio", "kind": "sms" | "voice", "status": "delivered", "final": true,
     "error_code": 30003 | null, "to": "+86...", "time": "2026-07-01T10:00:00.123456+00:00", "rank": 3}

Twilio may deliver status callbacks out of order; a receipt never goes back from a later
stage (``rank``) to an earlier one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from broadcast import keys, receipts
from channels.twilio import INBOUND_SMS_PATH, STATUS_CALLBACK_PATH, VOICE_CALLBACK_PATH
from channels.voice import ACK_DIGIT, GATHER_TIMEOUT_SECONDS, speech_for

log = logging.getLogger(__name__)

CALLBACK_REDIS = web.AppKey("twilio_callback_redis", redis.asyncio.Redis)
_AUTH_TOKEN_FOR = web.AppKey("twilio_auth_token_for", Callable[[], str])  # type: ignore[arg-type]
_PUBLIC_BASE_URL = web.AppKey("twilio_public_base_url", str)

# Hooks other parts of the service register (broadcast/linkage_api.py): after a keypress "1"
# (alert id, recipient id, the acknowledgement recorded), and on an inbound SMS (From, Body) -> reply.
VoiceAckHook = Callable[[str, str, dict[str, Any]], Awaitable[None]]
InboundSmsHook = Callable[[str, str], Awaitable[str | None]]
_VOICE_ACK_HOOK = web.AppKey("twilio_voice_ack_hook", VoiceAckHook)  # type: ignore[arg-type]
_INBOUND_SMS_HOOK = web.AppKey("twilio_inbound_sms_hook", InboundSmsHook)  # type: ignore[arg-type]


acknowledgements = keys.acknowledgements
ACK_TTL_SECONDS = keys.ACK_TTL_SECONDS

# How far along a message or call is; a receipt is only replaced by one at the same rank or later.
STATUS_RANK: dict[str, int] = {
    "accepted": 0, "scheduled": 0, "queued": 0, "initiated": 0,
    "sending": 1, "ringing": 1,
    "sent": 2, "in-progress": 2,
    "delivered": 3, "undelivered": 3, "failed": 3, "read": 3, "canceled": 3,
    "completed": 3, "busy": 3, "no-answer": 3,
}
FINAL_RANK = 3
UNKNOWN_RANK = 1

THANKS = {"zh": "谢谢，已确认。", "en": "Thank you, acknowledged."}
NOT_ACKNOWLEDGED = {"zh": "未确认。确认收到请按1。", "en": "Not acknowledged. Press 1 to confirm."}


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _signed_form(request: web.Request) -> MultiDictProxy[str] | None:
    """The form fields if X-Twilio-Signature matches them and the URL, else None."""
    form = await request.post()
    fields = MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return None
    base = request.app[_PUBLIC_BASE_URL] or f"{request.scheme}://{request.host}"
    # raw_path is the request line as sent: Twilio signs the URL exactly as it was configured.
    url = base.rstrip("/") + request.raw_path
    if not RequestValidator(request.app[_AUTH_TOKEN_FOR]()).validate(url, fields, signature):
        log.warning("refused a Twilio callback with a wrong signature: %s", url)
        return None
    return fields


def _forbidden() -> web.Response:
    return web.json_response({"error": {"code": "forbidden", "message": "invalid X-Twilio-Signature"}},
                             status=403)


DELIVERED_STATUSES = frozenset({"delivered", "read", "completed"})


async def store_receipt(client: redis.asyncio.Redis, sid: str, receipt: dict[str, Any]) -> None:
    """Store ``receipt`` under keys.receipt(sid) unless a later stage is already stored, and count a
    final one against its alert (broadcast.receipts)."""
    outcome = ""
    if receipt["rank"] == FINAL_RANK:
        outcome = receipts.DELIVERED if receipt["status"] in DELIVERED_STATUSES else receipts.UNDELIVERED
    await receipts.record(client, [receipts.Receipt(sid, receipt, receipt["rank"], outcome)])


async def status_callback(request: web.Request) -> web.Response:
    """A message's or call's status change; becomes its receipt."""
    form = await _signed_form(request)
    if form is None:
        return _forbidden()
    if "MessageSid" in form:
        kind, sid, status = "sms", form["MessageSid"], form.get("MessageStatus", "")
    else:
        kind, sid, status = "voice", form.get("CallSid", ""), form.get("CallStatus", "")
    if not sid or not status:
        raise web.HTTPBadRequest(text="expected MessageSid and MessageStatus, or CallSid and CallStatus")
    error_code = form.get("ErrorCode")
    rank = STATUS_RANK.get(status, UNKNOWN_RANK)  # a status Twilio added later: kept, never taken as final
    receipt = {"provider": "twilio", "kind": kind, "status": status, "final": rank == FINAL_RANK,
               "error_code": int(error_code) if error_code and error_code.isdigit() else None,
               "to": form.get("To"), "time": _now(), "rank": rank}
    await store_receipt(request.app[CALLBACK_REDIS], sid, receipt)
    return web.Response(status=204)


async def voice_callback(request: web.Request) -> web.Response:
    """The callee pressed a key during the alert call: "1" acknowledges; answers TwiML."""
    form = await _signed_form(request)
    if form is None:
        return _forbidden()
    alert_id, recipient_id = request.query.get("alert", ""), request.query.get("recipient", "")
    if not alert_id or not recipient_id:
        raise web.HTTPBadRequest(text="the action URL lacks alert or recipient")
    primary = request.query.get("lang", "zh-CN").split("-")[0].lower()
    primary = primary if primary in THANKS else "zh"
    language, voice = speech_for(primary)
    digits = form.get("Digits", "")
    response = VoiceResponse()
    if digits == ACK_DIGIT:
        ack = {"channel": "voice", "call_sid": form.get("CallSid"), "digits": digits, "to": form.get("To"),
               "time": _now()}
        key = acknowledgements(alert_id)
        async with request.app[CALLBACK_REDIS].pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, recipient_id, json.dumps(ack, ensure_ascii=False))
            pipe.expire(key, ACK_TTL_SECONDS)
            await pipe.execute()
        hook = request.app.get(_VOICE_ACK_HOOK)
        if hook is not None:
            await hook(alert_id, recipient_id, ack)
        response.say(THANKS[primary], language=language, voice=voice)
        response.hangup()
    else:
        gather = response.gather(num_digits=1, action=request.path_qs, method="POST",
                                 timeout=GATHER_TIMEOUT_SECONDS)
        gather.say(NOT_ACKNOWLEDGED[primary], language=language, voice=voice)
    return web.Response(text=str(response), content_type="text/xml", charset="utf-8")


async def inbound_sms(request: web.Request) -> web.Response:
    """A text someone sent to our number: the hook's answer goes back to them as the reply."""
    form = await _signed_form(request)
    if form is None:
        return _forbidden()
    sender, body = form.get("From", ""), form.get("Body", "")
    if not sender:
        raise web.HTTPBadRequest(text="expected From and Body")
    hook = request.app.get(_INBOUND_SMS_HOOK)
    reply = await hook(sender, body) if hook is not None else None
    response = MessagingResponse()
    if reply:
        response.message(reply)
    return web.Response(text=str(response), content_type="text/xml", charset="utf-8")


def on_voice_ack(app: web.Application, hook: VoiceAckHook) -> None:
    """Call ``await hook(alert_id, recipient_id, ack)`` after a keypress "1" is recorded."""
    app[_VOICE_ACK_HOOK] = hook


def on_inbound_sms(app: web.Application, hook: InboundSmsHook) -> None:
    """Answer inbound SMS with ``await hook(from_phone, body)`` (None: no reply)."""
    app[_INBOUND_SMS_HOOK] = hook


def add_routes(app: web.Application, *, auth_token_for: Callable[[], str],
               public_base_url: str | None = None) -> None:
    """Register the Twilio callbacks on ``app`` (which must also hold ``app[CALLBACK_REDIS]``).

    Args:
        app: the service's application.
        auth_token_for: the auth token Twilio signs callbacks with (read on every request,
            so a rotated token takes effect without a restart).
        public_base_url: the service's URL as Twilio calls it (``settings.callback_base_url``)
            when it differs from what reaches the app (a proxy); default: the request's own.
    """
    app[_AUTH_TOKEN_FOR] = auth_token_for
    app[_PUBLIC_BASE_URL] = public_base_url or ""
    app.router.add_post(STATUS_CALLBACK_PATH, status_callback)
    app.router.add_post(VOICE_CALLBACK_PATH, voice_callback)
    app.router.add_post(INBOUND_SMS_PATH, inbound_sms)


def redis_ctx(redis_url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context opening ``app[CALLBACK_REDIS]`` on ``redis_url`` and closing it on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        client = redis.asyncio.Redis.from_url(redis_url)
        app[CALLBACK_REDIS] = client
        yield
        await client.aclose()

    return context
