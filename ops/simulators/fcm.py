"""Firebase Cloud Messaging (HTTP v1) simulator: OAuth2 tokens and messages:send.

    POST /token   grant_type=client_credentials, client_id, client_secret (form)
         -> {"access_token": "ya29...", "expires_in": 3599, "token_type": "Bearer"}
         errors (HTTP 400/401): {"error": "invalid_client" | "unsupported_grant_type", "error_description"}
    POST /v1/projects/{project}/messages:send   Authorization: Bearer <token>
         {"message": {"token" | "topic": ..., "notification": {"title", "body"}, "data": {str: str},
                      "android": {"priority", "ttl": "3600s", ...}, "apns": {"headers", "payload"}}}
         -> {"name": "projects/{project}/messages/{id}"}

Errors are Google's ``{"error": {"code", "message", "status", "details": [...]}}`` with the
FCM error code in a ``google.firebase.fcm.v1.FcmError`` detail:

    401 UNAUTHENTICATED       missing, unknown or expired bearer token
    403 PERMISSION_DENIED     the token is for another project
    400 INVALID_ARGUMENT      a token that is not an FCM registration token (field violation
                              ``message.token``), a bad topic name, non-string data values,
                              not exactly one target, a bad ttl
    404 NOT_FOUND/UNREGISTERED  a token whose app was uninstalled
    429 RESOURCE_EXHAUSTED/QUOTA_EXCEEDED with Retry-After (the throttle fault)

The real token endpoint (oauth2.googleapis.com/token) takes a JWT signed with the service
account's private key (the jwt-bearer grant); the simulator takes the service account's
id and a shared secret instead, which is enough to exercise caching and expiry. Besides
the inspection API of ops/simulators/base.py:

    POST /_sim/tokens/expire   every issued access token now answers 401 (expiry, for tests)
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

from ops.simulators.base import Recorder, http_simulator

PROJECT = "szmb-alerts"
CLIENT_ID = "broadcast-push@szmb-alerts.iam.gserviceaccount.com"
CLIENT_SECRET = "9d1e4b7a0c3f6e2d8b5a1c4f7e0d3b6a"
TOKEN_LIFETIME = 3599
# Registration tokens of installed demo apps; UNREGISTERED_TOKENS were uninstalled.
DEVICE_TOKENS = frozenset(f"dSZMB{n:04d}:APA91bH{'x' * 40}{n:04d}" for n in range(1, 9))
UNREGISTERED_TOKENS = frozenset(f"dSZMB{n:04d}:APA91bH{'u' * 40}{n:04d}" for n in range(1, 3))
# Without a named set (``broadcast sim``), the demo registry's tokens (32 hex digits) are installed apps too.
DEMO_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_TOPIC = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,900}$")
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def _google_error(code: int, status: str, message: str, *, fcm_code: str | None = None,
                  field: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": _FCM_ERROR, "errorCode": fcm_code})
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": message}]})
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return web.json_response({"error": body}, status=code, headers=headers)


def create_app(recorder: Recorder | None = None, *, project: str = PROJECT, client_id: str = CLIENT_ID,
               client_secret: str = CLIENT_SECRET, device_tokens: Iterable[str] | None = None,
               unregistered: Iterable[str] = UNREGISTERED_TOKENS) -> web.Application:
    """The FCM simulator app (see the module docstring).

    Args:
        recorder: where messages and token requests are recorded.
        project: the Firebase project the service account may send for.
        client_id: the service account's id; ``client_secret`` its secret.
        device_tokens: registration tokens of installed apps (any topic name is accepted). None:
            DEVICE_TOKENS and any token of the demo registry's form (see DEMO_TOKEN).
        unregistered: tokens of uninstalled apps (404 UNREGISTERED); any other token is 400.
    """
    known = frozenset(device_tokens) if device_tokens is not None else None
    gone = frozenset(unregistered)
    access: dict[str, float] = {}  # access token -> expiry (epoch seconds)
    ids = itertools.count(1_700_000_000_000_001)

    def routes(app: web.Application, rec: Recorder) -> None:
        async def token(request: web.Request) -> web.Response:
            form = await request.post()
            if form.get("grant_type") != "client_credentials":
                return web.json_response({"error": "unsupported_grant_type",
                                          "error_description": "Invalid grant_type"}, status=400)
            if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
                return web.json_response({"error": "invalid_client",
                                          "error_description": "The OAuth client was not found."}, status=401)
            value = "ya29.sim-" + secrets.token_urlsafe(48)
            access[value] = time.time() + TOKEN_LIFETIME
            rec.record("token", client_id=client_id)
            return web.json_response({"access_token": value, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"})

        async def expire_tokens(request: web.Request) -> web.Response:
            for value in access:
                access[value] = 0.0
            return web.json_response({"expired": len(access)})

        async def send(request: web.Request) -> web.Response:
            header = request.headers.get("Authorization", "")
            bearer = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
            if access.get(bearer, 0.0) <= time.time():
                return _google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. "
                                     "Expected OAuth 2 access token, login cookie or other valid "
                                     "authentication credential.")
            if request.match_info["project"] != project:
                return _google_error(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' "
                                     f"denied on resource '//cloudresourcemanager.googleapis.com/projects/"
                                     f"{request.match_info['project']}' (or it may not exist).")
            try:
                body = json.loads(await request.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
            message = body.get("message") if isinstance(body, dict) else None
            if not isinstance(message, dict):
                return _google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                                     fcm_code="INVALID_ARGUMENT", field="message")
            targets = [k for k in ("token", "topic", "condition") if k in message]
            if len(targets) != 1:
                return _google_error(400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition "
                                     "must be set.", fcm_code="INVALID_ARGUMENT", field="message")
            data = message.get("data", {})
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                return _google_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data': values must "
                                     "be strings.", fcm_code="INVALID_ARGUMENT", field="message.data")
            ttl = (message.get("android") or {}).get("ttl")
            if ttl is not None and not (isinstance(ttl, str) and _TTL.match(ttl)):
                return _google_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'.",
                                     fcm_code="INVALID_ARGUMENT", field="message.android.ttl")
            target_kind = targets[0]
            target = message[target_kind]
            if target_kind == "token":
                if target in gone:
                    return _google_error(404, "NOT_FOUND", "Requested entity was not found.",
                                         fcm_code="UNREGISTERED")
                installed = (target in known if known is not None
                             else target in DEVICE_TOKENS or bool(DEMO_TOKEN.match(str(target))))
                if not installed:
                    return _google_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM "
                                         "registration token", fcm_code="INVALID_ARGUMENT", field="message.token")
            elif target_kind == "topic" and not (isinstance(target, str) and _TOPIC.match(target)):
                return _google_error(400, "INVALID_ARGUMENT", "Invalid topic name.", fcm_code="INVALID_ARGUMENT",
                                     field="message.topic")
            name = f"projects/{project}/messages/{next(ids)}"
            rec.record("message", name=name, target_kind=target_kind, target=target,
                       notification=message.get("notification"), data=data,
                       android=message.get("android"), apns=message.get("apns"))
            return web.json_response({"name": name})

        app.router.add_post("/token", token)
        app.router.add_post("/v1/projects/{project}/messages:send", send)
        app.router.add_post("/_sim/tokens/expire", expire_tokens)

    def throttled() -> web.Response:
        return _google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'.",
                             fcm_code="QUOTA_EXCEEDED", headers={"Retry-After": "7"})

    return http_simulator("fcm", routes, throttle_response=throttled, recorder=recorder)
