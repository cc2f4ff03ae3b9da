"""Weibo open API simulator: OAuth2 access tokens and statuses/share.json posts.

Wire format of Weibo's API (form-encoded requests, JSON answers; errors are
``{"error", "error_code", "request"}`` with HTTP 400, rate limits with HTTP 403):

    POST /oauth2/access_token   client_id, client_secret, grant_type=password, username, password
         -> {"access_token", "expires_in", "remind_in", "uid"}
         errors: 21323 invalid_request, 21324 invalid_client, 21325 invalid_grant,
                 21328 unsupported_grant_type
    POST /2/statuses/share.json  access_token, status[, rip]
         -> {"id", "idstr", "mid", "text", "created_at": "Wed Jul 01 18:00:00 +0800 2026", "user"}
         errors: 21332 invalid access_token, 21327 expired_token, 10016 status missing,
                 20012 text too long (over 140: CJK characters count 1, ASCII characters 1/2),
                 10008 no URL of the app's safe domain in the text, or a "#topic#" word in it,
                 20019 repeat content (the account already posted this text),
                 10023 user requests out of rate limit (the throttle fault, HTTP 403)

Besides the inspection API of ops/simulators/base.py:

    POST /_sim/tokens/expire   every issued token now answers 21327 (expiry, for tests)
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import time
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from ops.simulators.base import Recorder, http_simulator

CLIENT_ID = "2975311024"
CLIENT_SECRET = "c6b1d9e04f7a2358be0d41a9f6c3e872"
USERNAME = "szmb_weather@szmb.example"
PASSWORD = "demo-weibo-password"
UID = "6012345678"
SCREEN_NAME = "深圳天气"
SAFE_DOMAINS = ("weather.sz.example",)
TOKEN_LIFETIME = 157_679_999  # what Weibo gives a trusted app (five years); expiry is still possible
MAX_LENGTH = 140
_URL = re.compile(r"https?://([^/\s?#:]+)[^\s]*")
_TOPIC = re.compile(r"#[^#\s]+#")


def weibo_length(text: str) -> int:
    """Weibo's count: a CJK or full-width character is 1, an ASCII character is 1/2, rounded up."""
    return math.ceil(sum(0.5 if ord(ch) < 128 else 1 for ch in text))


def _error(request: web.Request, code: int, message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message, "error_code": code, "request": request.path}, status=status)


def create_app(recorder: Recorder | None = None, *, client_id: str = CLIENT_ID,
               client_secret: str = CLIENT_SECRET, username: str = USERNAME, password: str = PASSWORD,
               uid: str = UID, safe_domains: Iterable[str] = SAFE_DOMAINS,
               static_tokens: Iterable[str] = ()) -> web.Application:
    """The Weibo simulator app (see the module docstring).

    Args:
        recorder: where posts and token requests are recorded.
        client_id: the app key; ``client_secret`` its secret.
        username: the bureau account's login; ``password`` its password.
        uid: the bureau account's user id.
        safe_domains: the app's safe domains; a post must link to one of them.
        static_tokens: tokens valid from the start (a token configured by hand, as from the
            authorization-code flow).
    """
    domains = tuple(safe_domains)
    tokens: dict[str, float] = {value: time.time() + TOKEN_LIFETIME for value in static_tokens}
    posted: set[str] = set()
    ids = itertools.count(5_012_345_678_901_234)
    zone = ZoneInfo("Asia/Shanghai")

    def routes(app: web.Application, rec: Recorder) -> None:
        async def access_token(request: web.Request) -> web.Response:
            form = await request.post()
            if form.get("grant_type") != "password":
                return _error(request, 21328, "unsupported_grant_type")
            if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
                return _error(request, 21324, "invalid_client")
            if form.get("username") != username or form.get("password") != password:
                return _error(request, 21325, "invalid_grant")
            value = "2.00" + secrets.token_hex(16)
            tokens[value] = time.time() + TOKEN_LIFETIME
            rec.record("token", client_id=client_id, uid=uid)
            return web.json_response({"access_token": value, "expires_in": TOKEN_LIFETIME,
                                      "remind_in": str(TOKEN_LIFETIME), "uid": uid})

        async def expire_tokens(request: web.Request) -> web.Response:
            for value in tokens:
                tokens[value] = 0.0
            return web.json_response({"expired": len(tokens)})

        async def share(request: web.Request) -> web.Response:
            form = await request.post()
            token = form.get("access_token")
            if not isinstance(token, str) or token not in tokens:
                return _error(request, 21332, "invalid_access_token")
            if tokens[token] <= time.time():
                return _error(request, 21327, "expired_token")
            status = form.get("status")
            if not isinstance(status, str) or not status.strip():
                return _error(request, 10016, "Miss required parameter (status) , see doc for more info.")
            if weibo_length(status) > MAX_LENGTH:
                return _error(request, 20012, "Text too long, please input text less than 140 characters!")
            if not any(m.group(1) in domains or m.group(1).endswith(tuple("." + d for d in domains))
                       for m in _URL.finditer(status)):
                return _error(request, 10008, "Param error, see doc for more info: status must link to a safe domain")
            if _TOPIC.search(status):
                return _error(request, 10008, "Param error, see doc for more info: no #topic# in share")
            if status in posted:
                return _error(request, 20019, "Repeat content!")
            posted.add(status)
            post_id = next(ids)
            created = datetime.now(zone).strftime("%a %b %d %H:%M:%S %z %Y")
            rec.record("post", id=str(post_id), uid=uid, text=status, length=weibo_length(status),
                       rip=form.get("rip"))
            return web.json_response({"created_at": created, "id": post_id, "mid": str(post_id),
                                      "idstr": str(post_id), "text": status, "truncated": False,
                                      "user": {"id": int(uid), "idstr": uid, "screen_name": SCREEN_NAME}})

        app.router.add_post("/oauth2/access_token", access_token)
        app.router.add_post("/2/statuses/share.json", share)
        app.router.add_post("/_sim/tokens/expire", expire_tokens)

    def throttled() -> web.Response:
        return web.json_response({"error": "User requests out of rate limit!", "error_code": 10023,
                                  "request": "/2/statuses/share.json"}, status=403)

    return http_simulator("weibo", routes, throttle_response=throttled, recorder=recorder)
