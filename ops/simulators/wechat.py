"""WeChat Official Account API simulator: access tokens and template messages.

Speaks the two calls the wechat channel makes, in WeChat's wire format (HTTP 200 with an
``errcode``/``errmsg`` body for every error):

    GET  /cgi-bin/token?grant_type=client_credential&appid=...&secret=...
         -> {"access_token": "...", "expires_in": 7200}
         errors: 40002 invalid grant_type, 40013 invalid appid, 40125 invalid appsecret
    POST /cgi-bin/message/template/send?access_token=...
         {"touser": openid, "template_id": ..., "url": ..., "client_msg_id": ...,
          "data": {"first": {"value": ..., "color": ...}, "keyword1": {...}, ..., "remark": {...}}}
         -> {"errcode": 0, "errmsg": "ok", "msgid": 200228332}
         errors: 41001 access_token missing, 40001 invalid credential, 42001 access_token
         expired, 40003 invalid openid, 43004 require subscribe, 40037 invalid template_id,
         47001 data format error, 45009 reach max api daily quota limit (the throttle fault),
         -1 system error (the error fault answers that with HTTP 200 as well)

Issuing a new token invalidates the previous one, as WeChat does (WeChat keeps the old
one valid for five more minutes; the simulator keeps it until it expires, which is what a
cache must survive anyway). A repeated ``client_msg_id`` for the same openid within ten
minutes is answered with the first send's msgid and not delivered twice (WeChat's
anti-duplicate id). Besides the inspection API of ops/simulators/base.py:

    POST /_sim/tokens/expire   every issued token now answers 42001 (expiry, for tests)
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ops.simulators.base import RECORDER, Handler, Recorder, http_simulator

APPID = "wx8a3f9c2e5d7b1a46"
SECRET = "5f0c8e2b9a7d4c1e3b6a9f0d2c5e8b1a"
TEMPLATE_ID = "SZMB-WARNING-TPL-0001"
TOKEN_LIFETIME = 7200
DEDUPE_SECONDS = 600
# Followers of the demo account when a test names them; any other openid answers 40003.
KNOWN_OPENIDS = frozenset({
    "oSZMB0000000000000000000001",
    "oSZMB0000000000000000000002",
    "oSZMB0000000000000000000003",
    "oSZMB0000000000000000000004",
})
UNSUBSCRIBED_OPENIDS = frozenset({"oSZMB0000000000000000000099"})  # known, but unfollowed: 43004
# Without a named set (``broadcast sim``), every openid of the form the demo subscriber
# registry generates ("o" and 27 base64url characters) is a follower.
DEMO_OPENID = re.compile(r"^o[A-Za-z0-9_-]{27}$")


def _err(code: int, message: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": f"{message} rid: {secrets.token_hex(4)}"})


def create_app(recorder: Recorder | None = None, *, appid: str = APPID, secret: str = SECRET,
               template_ids: Iterable[str] = (TEMPLATE_ID,), openids: Iterable[str] | None = None,
               unsubscribed: Iterable[str] = UNSUBSCRIBED_OPENIDS,
               token_lifetime: int = TOKEN_LIFETIME) -> web.Application:
    """The WeChat simulator app (see the module docstring).

    Args:
        recorder: where accepted messages and token requests are recorded.
        appid: the one Official Account the simulator knows.
        secret: its AppSecret.
        template_ids: template ids the account has added.
        openids: followers; a template message to any other openid answers 40003. None: any
            openid of the demo registry's form (see DEMO_OPENID), and KNOWN_OPENIDS.
        unsubscribed: openids that once followed and have unfollowed (43004).
        token_lifetime: the ``expires_in`` of issued tokens.
    """
    known = frozenset(openids) if openids is not None else None
    gone = frozenset(unsubscribed)
    templates = frozenset(template_ids)
    tokens: dict[str, float] = {}  # token -> expiry (epoch seconds); only the newest is valid
    sent: dict[tuple[str, str], tuple[int, float]] = {}  # (openid, client_msg_id) -> (msgid, time)
    msgids = itertools.count(2_002_283_320)

    def routes(app: web.Application, rec: Recorder) -> None:
        async def token(request: web.Request) -> web.Response:
            query = request.query
            if query.get("grant_type") != "client_credential":
                return _err(40002, "invalid grant_type")
            if query.get("appid") != appid:
                return _err(40013, "invalid appid")
            if query.get("secret") != secret:
                return _err(40125, "invalid appsecret")
            value = secrets.token_urlsafe(96)
            tokens.clear()
            tokens[value] = time.time() + token_lifetime
            rec.record("token", appid=appid)
            return web.json_response({"access_token": value, "expires_in": token_lifetime})

        async def expire_tokens(request: web.Request) -> web.Response:
            for value in tokens:
                tokens[value] = 0.0
            return web.json_response({"expired": len(tokens)})

        async def template_send(request: web.Request) -> web.Response:
            access_token = request.query.get("access_token")
            if not access_token:
                return _err(41001, "access_token missing")
            if access_token not in tokens:
                return _err(40001, "invalid credential, access_token is invalid or not latest")
            if tokens[access_token] <= time.time():
                return _err(42001, "access_token expired")
            try:
                body: Any = json.loads(await request.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                return _err(47001, "data format error")
            if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
                return _err(47001, "data format error")
            openid = body.get("touser")
            if not isinstance(openid, str) or openid in gone:
                return _err(43004, "require subscribe") if openid in gone else _err(40003, "invalid openid")
            if not (openid in known if known is not None
                    else openid in KNOWN_OPENIDS or DEMO_OPENID.match(openid)):
                return _err(40003, "invalid openid")
            if body.get("template_id") not in templates:
                return _err(40037, "invalid template_id")
            data = body["data"]
            if not all(isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values()):
                return _err(47001, "data format error")
            client_msg_id = body.get("client_msg_id")
            now = time.time()
            if isinstance(client_msg_id, str) and client_msg_id:
                previous = sent.get((openid, client_msg_id))
                if previous is not None and now - previous[1] < DEDUPE_SECONDS:
                    return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": previous[0]})
            msgid = next(msgids)
            if isinstance(client_msg_id, str) and client_msg_id:
                sent[(openid, client_msg_id)] = (msgid, now)
            rec.record("template", msgid=msgid, touser=openid, template_id=body["template_id"],
                       url=body.get("url"), client_msg_id=client_msg_id,
                       data={key: value["value"] for key, value in data.items()},
                       colors={key: value.get("color") for key, value in data.items()})
            return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": msgid})

        app.router.add_get("/cgi-bin/token", token)
        app.router.add_post("/cgi-bin/message/template/send", template_send)
        app.router.add_post("/_sim/tokens/expire", expire_tokens)

    def throttled() -> web.Response:
        return _err(45009, "reach max api daily quota limit")

    app = http_simulator("wechat", routes, throttle_response=throttled, recorder=recorder)
    fault_recorder = app[RECORDER]

    @web.middleware
    async def system_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
        # WeChat reports its own failures as errcode -1 in an HTTP 200 body; an injected
        # error fault looks the same (a simulated outage, ``down``, stays an HTTP 503).
        response = await handler(request)
        if (not request.path.startswith("/_sim/") and response.status >= 500
                and not fault_recorder.faults.down):
            return _err(-1, "system error")
        return response

    app.middlewares.insert(0, system_busy)
    return app
