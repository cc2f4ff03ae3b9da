"""Twilio simulator: the REST API for Messages and Calls, status callbacks, and a callee's keypress.

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   To, From, Body, StatusCallback (form)
    POST /2010-04-01/Accounts/{AccountSid}/Calls.json      To, From, Twiml (or Url), StatusCallback,
                                                           StatusCallbackEvent (repeated)
    POST /_sim/calls/{CallSid}/press                       {"digits": "1"}: the callee presses a key
    POST /_sim/inbound                                     {"from": "+86...", "body": "1", "to": optional,
                                                           "url": optional}: someone texts our number

As Twilio does: HTTP Basic auth AccountSid:AuthToken (else 401, code 20003); form-encoded
bodies; 201 with the Message or Call resource ("SM..."/"CA..." SID, status "queued");
errors as ``{"code", "message", "more_info", "status"}`` (21211 invalid To, 21614 To not a
mobile for SMS, 21602 no Body, 21603 no From, 21604 no To, 21617 Body over 1600 characters,
21205 no Twiml or Url, 12100 TwiML not parseable); throttling as 429 with code 20429.

After ``callback_delay`` seconds per step it POSTs status callbacks to StatusCallback,
signed with X-Twilio-Signature (RequestValidator.compute_signature with the auth token):
messages queued -> sent -> delivered (or -> undelivered, ErrorCode 30003, when To ends in
0000); calls initiated -> ringing -> in-progress -> completed (after a keypress or
``call_timeout`` seconds), or initiated -> ringing -> no-answer when To ends in 0000; a call
reports only the StatusCallbackEvent it asked for (Twilio's default: completed). A keypress
POSTs Digits to the <Gather> action URL (signed) and records the TwiML answer. An inbound text
is POSTed, signed, to the number's SMS webhook (``sms_url``, or the request's ``url``) with Twilio's
fields (From, To, Body, MessageSid, ...); a <Message> in the TwiML answer is "sent" back as the reply.

Recorded kinds: "message" (sid, to, from, body, status_callback, num_segments, encoding),
"call" (sid, to, from, twiml, url, status_callback, status_callback_event),
"status_callback" (url, params, status or error), "keypress" (call_sid, digits, action,
status, twiml), "inbound" (url, params, status), "reply" (sid, to, from, body, in_reply_to).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import urljoin
from xml.etree import ElementTree
from xml.etree.ElementTree import Element

import aiohttp
import defusedxml.ElementTree
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from channels import sms_text
from channels.twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_FROM
from ops.simulators.base import Recorder, http_simulator

API_VERSION = "2010-04-01"
E164 = re.compile(r"\+[1-9]\d{6,14}")
MAX_BODY = 1600
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Which StatusCallbackEvent asks for which call status.
CALL_EVENT_OF = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered",
                 "completed": "completed", "busy": "completed", "no-answer": "completed",
                 "failed": "completed", "canceled": "completed"}


@dataclass
class SimulatedCall:
    sid: str
    to: str
    from_: str
    twiml: str | None
    status_callback: str | None
    events: frozenset[str]
    status: str = "queued"
    answered_at: float | None = None
    pressed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class TwilioState:
    recorder: Recorder
    account_sid: str
    auth_token: str
    callback_delay: float
    call_timeout: float
    sms_url: str | None = None
    calls: dict[str, SimulatedCall] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def post_signed(self, url: str, params: Mapping[str, str], kind: str, **extra: Any) -> tuple[int, str]:
        """POST ``params`` to ``url`` as Twilio does (form, X-Twilio-Signature); records it."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1",
                   "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        assert self.session is not None
        try:
            async with self.session.post(URL(url, encoded=True), data=dict(params), headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=15)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.recorder.record(kind, url=url, params=dict(params), error=f"{exc.__class__.__name__}: {exc}", **extra)
            return 0, ""
        self.recorder.record(kind, url=url, params=dict(params), status=response.status, **extra)
        return response.status, text


STATE = web.AppKey("twilio_state", TwilioState)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                             status=status)


def throttled() -> web.Response:
    response = _error(429, 20429, "Too Many Requests")
    response.headers["Retry-After"] = "1"
    return response


def _authenticated(request: web.Request, state: TwilioState) -> web.Response | None:
    """None if Basic auth names the path's account with its token, else Twilio's 401."""
    try:
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        auth = None
    path_sid = request.match_info["AccountSid"]
    if auth is None or auth.login != state.account_sid or auth.password != state.auth_token \
            or path_sid != state.account_sid:
        response = web.json_response({"code": 20003, "detail": "Your AccountSid or AuthToken was incorrect.",
                                      "message": "Authenticate",
                                      "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401},
                                     status=401)
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response
    return None


def _invalid_to(to: str) -> str | None:
    """Why Twilio would call ``to`` invalid (21211), or None. China mobiles have 11 digits, starting 1."""
    if not E164.fullmatch(to):
        return f"The 'To' number {to} is not a valid phone number."
    if to.startswith("+86") and to[3:4] == "1" and len(to) != 14:
        return f"The 'To' number {to} is not a valid phone number."
    return None


def _now_rfc2822() -> str:
    return formatdate(usegmt=False)


def _resource(kind: str, sid: str, account_sid: str, **fields: Any) -> dict[str, Any]:
    now = _now_rfc2822()
    return {"sid": sid, "account_sid": account_sid, "api_version": API_VERSION, "date_created": now,
            "date_updated": now, "direction": "outbound-api", "status": "queued", "price": None,
            "price_unit": "USD", "uri": f"/{API_VERSION}/Accounts/{account_sid}/{kind}/{sid}.json", **fields}


async def create_message(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if (refused := _authenticated(request, state)) is not None:
        return refused
    form = await request.post()
    to, from_, body = str(form.get("To", "")), str(form.get("From", "")), form.get("Body")
    callback = str(form.get("StatusCallback", "")) or None
    if not to:
        return _error(400, 21604, "A 'To' phone number is required.")
    if (problem := _invalid_to(to)) is not None:
        return _error(400, 21211, problem)
    if to.startswith("+86") and to[3:4] != "1":
        return _error(400, 21614, f"'To' number {to} is not a valid mobile number")
    if not from_:
        return _error(400, 21603, "A 'From' phone number is required.")
    if not isinstance(body, str) or not body:
        return _error(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY:
        return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    sid = "SM" + uuid.uuid4().hex
    summary = sms_text.summary(body)
    state.recorder.record("message", sid=sid, account_sid=state.account_sid, to=to, **{"from": from_},
                          body=body, status_callback=callback, num_segments=summary.segments,
                          encoding=summary.encoding)
    if callback:
        state.spawn(_message_progress(state, sid, to, from_, callback))
    return web.json_response(_resource("Messages", sid, state.account_sid, to=to, **{"from": from_}, body=body,
                                       num_segments=str(summary.segments), num_media="0", error_code=None,
                                       error_message=None, messaging_service_sid=None, date_sent=None),
                             status=201)


async def _message_progress(state: TwilioState, sid: str, to: str, from_: str, callback: str) -> None:
    fails = to.endswith("0000")
    for status in ("queued", "sent", "undelivered" if fails else "delivered"):
        await asyncio.sleep(state.callback_delay)
        params = {"AccountSid": state.account_sid, "ApiVersion": API_VERSION, "From": from_,
                  "MessageSid": sid, "MessageStatus": status, "SmsSid": sid, "SmsStatus": status, "To": to}
        if status == "undelivered":
            params["ErrorCode"] = "30003"
        await state.post_signed(callback, params, "status_callback", sid=sid)


def _parse_twiml(twiml: str) -> Element | None:
    try:
        root = defusedxml.ElementTree.fromstring(twiml)
    except Exception:  # defusedxml raises several types (ParseError, DTDForbidden, EntitiesForbidden)
        return None
    return root if root.tag == "Response" else None


async def create_call(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if (refused := _authenticated(request, state)) is not None:
        return refused
    form = await request.post()
    to, from_ = str(form.get("To", "")), str(form.get("From", ""))
    twiml, url = form.get("Twiml"), form.get("Url")
    callback = str(form.get("StatusCallback", "")) or None
    events = frozenset(str(e) for e in form.getall("StatusCallbackEvent", [])) or frozenset({"completed"})
    if not to:
        return _error(400, 21201, "No 'To' number is specified")
    if (problem := _invalid_to(to)) is not None:
        return _error(400, 21211, problem)
    if not from_:
        return _error(400, 21213, "No 'From' number is specified")
    if not isinstance(twiml, str) and not isinstance(url, str):
        return _error(400, 21205, "Url parameter is required.")
    if isinstance(twiml, str) and _parse_twiml(twiml) is None:
        return _error(400, 12100, "Document parse failure")
    sid = "CA" + uuid.uuid4().hex
    call = SimulatedCall(sid, to, from_, twiml if isinstance(twiml, str) else None, callback, events)
    state.calls[sid] = call
    state.recorder.record("call", sid=sid, account_sid=state.account_sid, to=to, **{"from": from_},
                          twiml=call.twiml, url=url if isinstance(url, str) else None, status_callback=callback,
                          status_callback_event=sorted(events))
    state.spawn(_call_progress(state, call))
    return web.json_response(_resource("Calls", sid, state.account_sid, to=to, to_formatted=to,
                                       **{"from": from_}, from_formatted=from_, parent_call_sid=None,
                                       duration=None, start_time=None, end_time=None, answered_by=None),
                             status=201)


async def _call_status(state: TwilioState, call: SimulatedCall, status: str, sequence: int) -> None:
    call.status = status
    if call.status_callback and CALL_EVENT_OF[status] in call.events:
        params = {"AccountSid": state.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
                  "CallStatus": status, "CallbackSource": "call-progress-events", "Called": call.to,
                  "Caller": call.from_, "Direction": "outbound-api", "From": call.from_,
                  "SequenceNumber": str(sequence), "Timestamp": _now_rfc2822(), "To": call.to}
        if status in FINAL_CALL_STATUSES:
            duration = 0 if call.answered_at is None else int(asyncio.get_running_loop().time() - call.answered_at)
            params["CallDuration"] = str(duration)
        await state.post_signed(call.status_callback, params, "status_callback", sid=call.sid)


async def _call_progress(state: TwilioState, call: SimulatedCall) -> None:
    steps = ("initiated", "ringing", "no-answer") if call.to.endswith("0000") else ("initiated", "ringing",
                                                                                  "in-progress")
    for sequence, status in enumerate(steps):
        await asyncio.sleep(state.callback_delay)
        if status == "in-progress":
            call.answered_at = asyncio.get_running_loop().time()
        await _call_status(state, call, status, sequence)
    if call.status in FINAL_CALL_STATUSES:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(call.pressed.wait(), state.call_timeout)
    await asyncio.sleep(state.callback_delay)
    await _call_status(state, call, "completed", len(steps))


async def press(request: web.Request) -> web.Response:
    """The callee presses keys: POST Digits to the call's <Gather> action, record the TwiML answer."""
    state = request.app[STATE]
    call = state.calls.get(request.match_info["CallSid"])
    if call is None:
        return web.json_response({"error": "no such call"}, status=404)
    try:
        doc = await request.json()
    except ValueError:
        doc = None
    digits = doc.get("digits") if isinstance(doc, dict) else None
    if not isinstance(digits, str) or not re.fullmatch(r"[0-9*#]{1,20}", digits):
        return web.json_response({"error": {"message": "digits: one or more of 0-9 * #", "field": "digits"}},
                                 status=422)
    if call.status in FINAL_CALL_STATUSES:
        return web.json_response({"error": f"call is {call.status}"}, status=409)
    root = _parse_twiml(call.twiml) if call.twiml else None
    gather = root.find("Gather") if root is not None else None
    if gather is None or not gather.get("action"):
        return web.json_response({"error": "the call's TwiML has no <Gather action=...>"}, status=409)
    action = gather.get("action", "")
    params = {"AccountSid": state.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
              "CallStatus": "in-progress", "Called": call.to, "Caller": call.from_, "Digits": digits,
              "Direction": "outbound-api", "FinishedOnKey": "", "From": call.from_, "To": call.to}
    status, answer = await state.post_signed(action, params, "gather_request", sid=call.sid)
    state.recorder.record("keypress", call_sid=call.sid, digits=digits, action=action, status=status, twiml=answer)
    next_root = _parse_twiml(answer) if status == 200 else None
    next_gather = next_root.find("Gather") if next_root is not None else None
    if next_gather is not None and next_gather.get("action"):
        # The answer asks again: the call goes on, with the new <Gather> (relative actions resolve as Twilio does).
        next_gather.set("action", urljoin(action, next_gather.get("action", "")))
        call.twiml = ElementTree.tostring(next_root, encoding="unicode")
    else:
        call.pressed.set()
    return web.json_response({"call_sid": call.sid, "digits": digits, "action": action, "status": status,
                              "twiml": answer})


async def inbound(request: web.Request) -> web.Response:
    """Someone texts our number: POST it, signed, to the SMS webhook as Twilio does; record any reply."""
    state = request.app[STATE]
    try:
        doc = await request.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return web.json_response({"error": {"message": "send a JSON object", "field": "body"}}, status=422)
    sender, body, to = doc.get("from"), doc.get("body"), doc.get("to") or DEMO_FROM
    url = doc.get("url") or state.sms_url
    for name, value in (("from", sender), ("body", body), ("to", to)):
        if not isinstance(value, str) or (name != "body" and not E164.fullmatch(value)):
            return web.json_response({"error": {"message": f"{name}: an E.164 number" if name != "body" else
                                                "body: a string", "field": name}}, status=422)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return web.json_response({"error": {"message": "no SMS webhook configured: give url", "field": "url"}},
                                 status=409)
    sid = "SM" + uuid.uuid4().hex
    params = {"AccountSid": state.account_sid, "ApiVersion": API_VERSION, "Body": body, "From": sender,
              "MessageSid": sid, "NumMedia": "0", "NumSegments": str(sms_text.summary(body).segments),
              "SmsMessageSid": sid, "SmsSid": sid, "SmsStatus": "received", "To": to}
    status, answer = await state.post_signed(url, params, "inbound", sid=sid)
    reply = None
    root = _parse_twiml(answer) if status == 200 else None
    element = root.find("Message") if root is not None else None
    if element is not None and (element.text or "").strip():
        reply = element.text.strip()
        state.recorder.record("reply", sid="SM" + uuid.uuid4().hex, to=sender, **{"from": to}, body=reply,
                              in_reply_to=sid)
    return web.json_response({"sid": sid, "status": status, "twiml": answer, "reply": reply})


def create_app(recorder: Recorder | None = None, *, account_sid: str = DEMO_ACCOUNT_SID,
               auth_token: str = DEMO_AUTH_TOKEN, callback_delay: float = 1.0,
               call_timeout: float = 30.0, sms_url: str | None = None) -> web.Application:
    """The Twilio simulator app.

    Args:
        recorder: where accepted messages, calls, callbacks and keypresses are recorded.
        account_sid: the one account it knows.
        auth_token: that account's token (Basic auth, and the key of callback signatures).
        callback_delay: seconds before each status callback step.
        call_timeout: seconds an answered call waits for a keypress before it completes.
        sms_url: the number's SMS webhook, where inbound texts go (a request may name another).
    """
    def routes(app: web.Application, rec: Recorder) -> None:
        app[STATE] = TwilioState(rec, account_sid, auth_token, callback_delay, call_timeout, sms_url)
        base = f"/{API_VERSION}/Accounts/{{AccountSid}}"
        app.router.add_post(f"{base}/Messages.json", create_message)
        app.router.add_post(f"{base}/Calls.json", create_call)
        app.router.add_post("/_sim/calls/{CallSid}/press", press)
        app.router.add_post("/_sim/inbound", inbound)

    app = http_simulator("twilio", routes, throttle_response=throttled, recorder=recorder)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]
        state.session = aiohttp.ClientSession()
        yield
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        await state.session.close()

    app.cleanup_ctx.append(session_ctx)
    return app
