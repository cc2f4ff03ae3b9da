"""The HTTP API (aiohttp): an app factory, two middlewares (errors, bearer auth) and thin handlers.

Handlers parse the request, call :class:`broadcast.alerts.AlertService` in a worker
thread (the service uses the synchronous Redis client that RQ needs, so that a state
change and its RQ job commit in one transaction), and render the result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis
import shapely.geometry
import uvloop
from aiohttp import web

from broadcast import accounting, cap, feed, linkage_api, metrics, supervision_api
from broadcast.alerts import Actor, AlertService
from broadcast.errors import BroadcastError, InvalidInput, MalformedInput, PayloadTooLarge, Unauthenticated
from broadcast.openapi import openapi_document
from broadcast.records import AlertRecord
from broadcast.settings import Settings
from broadcast.signals import load_catalogue
from broadcast.users import Permission, RecentTokens, User, UserDirectory
from channels import twilio_callbacks
from channels.twilio import callback_auth_token
from geotarget.gazetteer import Level, Unit
from geotarget.registry import RegistryStore, TargetCache
from geotarget.resolve import resolve_request

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", redis.Redis)
SERVICE = web.AppKey("service", AlertService)
USERS = web.AppKey("users", UserDirectory)
TOKENS = web.AppKey("tokens", RecentTokens)
USER = web.RequestKey("user", User)  # the authenticated user

PUBLIC_PATHS = frozenset({"/healthz"})
# Providers cannot send our bearer tokens: their callbacks are checked by their own signatures
# (channels/twilio_callbacks.py); the CAP feed is public by design (broadcast/feed.py); the live
# linkage page holds no data and asks for a token itself (broadcast/supervision_api.py).
PUBLIC_PREFIXES = ("/api/callbacks/", "/feed/", "/linkage/", "/ack/")  # /ack/: the signed token is the credential
# Browsers' EventSource cannot send headers: these streams also take the token as ?access_token=.
QUERY_TOKEN_SUFFIXES = ("/linkage/stream",)
CAP_CONTENT_TYPES = frozenset({"application/cap+xml", "application/xml", "text/xml"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response({"error": body}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BroadcastError as err:
        return error_response(err.status, err.code, err.message, err.field)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        err = PayloadTooLarge(f"body over the limit of {limit} bytes (max_body_bytes)", field="body")
        return error_response(err.status, err.code, err.message, err.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the service log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and request.path.endswith(QUERY_TOKEN_SUFFIXES) and request.query.get("access_token"):
        scheme, token = "bearer", request.query["access_token"]
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send 'Authorization: Bearer <token>'", field="Authorization")
    tokens, token = request.app[TOKENS], token.strip()
    request[USER] = tokens.cached(token) or await asyncio.to_thread(tokens.authenticate, token)
    return await handler(request)


def actor(request: web.Request) -> Actor:
    user: User = request[USER]
    return Actor(user, request.remote or "")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedInput(f"body is not valid JSON: {exc}", field="body") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise InvalidInput("body must be a JSON object", field="body")
    return doc


def record_response(record: AlertRecord, status: int = 200) -> web.Response:
    return web.json_response(record.to_api(), status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput("must be a whole number", field=name) from None
    if not (low <= value <= high):
        raise InvalidInput(f"must be between {low} and {high}", field=name)
    return value


# ---------------------------------------------------------------- handlers


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.to_thread(request.app[REDIS].ping)
    except redis.RedisError as exc:
        return web.json_response({"status": "unavailable", "redis": str(exc)}, status=503)
    return web.json_response({"status": "ok"})


async def prometheus_metrics(request: web.Request) -> web.Response:
    request[USER].require(Permission.READ_ALERTS)
    client = request.app[REDIS]

    def run() -> str:
        return metrics.render_metrics(client, alert_ids=metrics.recent_alert_ids(client, hours=24))

    text = await asyncio.to_thread(run)
    return web.Response(body=text.encode(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS]))


async def create_alert(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    content_type = request.content_type
    if content_type in CAP_CONTENT_TYPES:
        body = await request.read()
        record = await asyncio.to_thread(service.import_cap, actor(request), body)
    elif content_type == "application/json":
        doc = await read_json(request)
        record = await asyncio.to_thread(service.create, actor(request), doc)
    else:
        raise InvalidInput("send application/json (a composition request) or application/cap+xml",
                           field="Content-Type")
    response = record_response(record, status=201)
    response.headers["Location"] = f"/api/alerts/{record.id}"
    return response


async def list_alerts(request: web.Request) -> web.Response:
    limit = int_query(request, "limit", 50, 1, 500)
    offset = int_query(request, "offset", 0, 0, 10_000_000)
    service = request.app[SERVICE]
    records = await asyncio.to_thread(service.list, actor(request), limit=limit, offset=offset)
    total = await asyncio.to_thread(service.store.count)
    return web.json_response({"alerts": [r.summary() for r in records], "total": total},
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def get_alert(request: web.Request) -> web.Response:
    record = await asyncio.to_thread(request.app[SERVICE].get, actor(request), request.match_info["id"])
    return record_response(record)


async def patch_alert(request: web.Request) -> web.Response:
    doc = await read_object(request)
    record = await asyncio.to_thread(request.app[SERVICE].edit, actor(request), request.match_info["id"], doc)
    return record_response(record)


async def submit_alert(request: web.Request) -> web.Response:
    record = await asyncio.to_thread(request.app[SERVICE].submit, actor(request), request.match_info["id"])
    return record_response(record)


async def approve_alert(request: web.Request) -> web.Response:
    record = await asyncio.to_thread(request.app[SERVICE].approve, actor(request), request.match_info["id"])
    return record_response(record)


def _reason(doc: dict[str, Any]) -> str | None:
    reason = doc.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("must be a string", field="reason")
    return reason


async def reject_alert(request: web.Request) -> web.Response:
    doc = await read_object(request)
    record = await asyncio.to_thread(request.app[SERVICE].reject, actor(request), request.match_info["id"],
                                     _reason(doc))
    return record_response(record)


async def update_alert(request: web.Request) -> web.Response:
    doc = await read_object(request)
    record = await asyncio.to_thread(request.app[SERVICE].request_update, actor(request),
                                     request.match_info["id"], doc)
    return record_response(record, status=201)


async def cancel_alert(request: web.Request) -> web.Response:
    doc = await read_object(request)
    unknown = set(doc) - {"reason", "urgent"}
    if unknown:
        raise InvalidInput("unknown field", field=sorted(unknown)[0])
    urgent = doc.get("urgent", False)
    if not isinstance(urgent, bool):
        raise InvalidInput("must be true or false", field="urgent")
    record = await asyncio.to_thread(request.app[SERVICE].request_cancel, actor(request),
                                     request.match_info["id"], _reason(doc), urgent)
    return record_response(record, status=201)


async def alert_preview(request: web.Request) -> web.Response:
    record, fits = await asyncio.to_thread(request.app[SERVICE].preview, actor(request), request.match_info["id"])
    selected = (record.composition or {}).get("channels")
    return _json({"id": record.id, "channels": {
        name: {"selected": selected is None or name in selected,
               "languages": {fit.language: fit.as_dict() for fit in channel_fits}}
        for name, channel_fits in fits.items()}})


async def alert_progress(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    record = await asyncio.to_thread(service.get, actor(request), request.match_info["id"])
    channels = await asyncio.to_thread(accounting.read, service.store.redis, record.id)
    totals = {counter: sum(c.counts[counter] for c in channels) for counter in accounting.COUNTERS}
    totals["pending"] = sum(c.pending for c in channels)
    return _json({"id": record.id, "state": record.state.value,
                  "channels": {c.channel: c.as_dict() for c in channels}, "totals": totals})


async def alert_cap(request: web.Request) -> web.Response:
    record = await asyncio.to_thread(request.app[SERVICE].get, actor(request), request.match_info["id"])
    return web.Response(body=cap.to_xml(record.alert), content_type="application/cap+xml", charset="utf-8")


async def alert_audit(request: web.Request) -> web.Response:
    entries = await asyncio.to_thread(request.app[SERVICE].audit_trail, actor(request), request.match_info["id"])
    return web.json_response({"entries": [e.as_dict() for e in entries]},
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def resolve_targets(request: web.Request) -> web.Response:
    request[USER].require(Permission.READ_ALERTS)
    doc = await read_json(request)
    service = request.app[SERVICE]

    def run() -> dict[str, Any]:
        return resolve_request(doc, service.targets.get(), service.settings).as_dict()

    return _json(await asyncio.to_thread(run))


def _unit_json(unit: Unit) -> dict[str, Any]:
    return {"code": unit.code, "level": unit.level.value, "name": unit.name_zh, "name_en": unit.name_en,
            "parent": unit.parent, "population": unit.population}


async def list_units(request: web.Request) -> web.Response:
    request[USER].require(Permission.READ_ALERTS)
    gazetteer = (await asyncio.to_thread(request.app[SERVICE].targets.get)).gazetteer
    level, parent = request.query.get("level"), request.query.get("parent")
    if level is not None and level not in {lv.value for lv in Level}:
        raise InvalidInput(f"level must be one of {', '.join(lv.value for lv in Level)}", field="level")
    if parent is not None:
        units = list(gazetteer.children(parent))  # NotFound for an unknown parent
    else:
        units = list(gazetteer.units_at(level)) if level else list(gazetteer)
    units = [u for u in units if level is None or u.level.value == level]
    return _json({"units": [_unit_json(u) for u in units], "total": len(units)})


async def get_unit(request: web.Request) -> web.Response:
    request[USER].require(Permission.READ_ALERTS)
    gazetteer = (await asyncio.to_thread(request.app[SERVICE].targets.get)).gazetteer
    unit = gazetteer.unit(request.match_info["code"])
    return _json({**_unit_json(unit), "geometry": shapely.geometry.mapping(unit.geometry),
                  "children": [c.code for c in gazetteer.children(unit.code)],
                  "ancestors": [a.code for a in gazetteer.ancestors(unit.code)]})


async def list_signals(request: web.Request) -> web.Response:
    catalogue = request.app[SERVICE].catalogue
    return web.json_response({"hazards": catalogue.as_dict()}, dumps=lambda d: json.dumps(d, ensure_ascii=False))


# ---------------------------------------------------------------- app


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware, auth_middleware])
    app[SETTINGS] = settings

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = redis.Redis.from_url(settings.effective_redis_url, health_check_interval=30)
        app[REDIS] = client
        app[USERS] = UserDirectory(client)
        app[TOKENS] = RecentTokens(app[USERS])
        app[SERVICE] = AlertService(client, settings, load_catalogue(),
                                    TargetCache(RegistryStore(client, settings.data_dir)))
        yield
        client.close()

    app.cleanup_ctx.append(redis_ctx)
    twilio_callbacks.add_routes(app, auth_token_for=lambda: callback_auth_token(settings),
                                public_base_url=settings.public_url)
    app.cleanup_ctx.append(twilio_callbacks.redis_ctx(settings.effective_redis_url))
    feed.add_routes(app, REDIS, base_url=settings.public_url)
    linkage_api.add_routes(app, SERVICE, USER)
    supervision_api.add_routes(app, redis_url=settings.effective_redis_url, redis_key=REDIS, service_key=SERVICE,
                               user_key=USER)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/api/signals", list_signals)
    app.router.add_post("/api/alerts", create_alert)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/{id}", get_alert)
    app.router.add_patch("/api/alerts/{id}", patch_alert)
    app.router.add_post("/api/alerts/{id}/submit", submit_alert)
    app.router.add_post("/api/alerts/{id}/approve", approve_alert)
    app.router.add_post("/api/alerts/{id}/reject", reject_alert)
    app.router.add_post("/api/alerts/{id}/update", update_alert)
    app.router.add_post("/api/alerts/{id}/cancel", cancel_alert)
    app.router.add_get("/api/alerts/{id}/cap", alert_cap)
    app.router.add_get("/api/alerts/{id}/preview", alert_preview)
    app.router.add_get("/api/alerts/{id}/progress", alert_progress)
    app.router.add_get("/api/alerts/{id}/audit", alert_audit)
    app.router.add_post("/api/targeting/resolve", resolve_targets)
    app.router.add_get("/api/units", list_units)
    app.router.add_get("/api/units/{code}", get_unit)
    return app


def serve(settings: Settings, processes: int = 1) -> None:
    """Run the API in the foreground until interrupted (SIGINT or SIGTERM).

    Args:
        settings: The service settings (host and port to listen on).
        processes: How many API processes listen on the port. One process uses one core at most
            (the GIL); with more, the kernel spreads connections over them (SO_REUSEPORT). Each
            keeps its own short-lived caches (tree views, tokens), so they share less.
    """
    if processes <= 1:
        _serve_one(settings)
        return
    context = multiprocessing.get_context("spawn")  # nothing of this process (loops, clients) is inherited
    children = [context.Process(target=_serve_one, args=(settings, True), name=f"api-{number}")
                for number in range(1, processes + 1)]
    for child in children:
        child.start()

    def stop(*_: Any) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:  # the children got the terminal's SIGINT too
        stop()
        for child in children:
            child.join()


def _serve_one(settings: Settings, reuse_port: bool = False) -> None:
    app = create_app(settings)
    app.on_startup.append(supervision_api.warm_view_builder)  # a served API builds views from its first poll
    # uvloop: the event loop's own work (selecting, scheduling callbacks, socket I/O) was ~40 % of an API
    # process's CPU under a flood of acknowledgements; uvloop does it in C.
    web.run_app(app, host=settings.host, port=settings.port, print=None, reuse_port=reuse_port,
                access_log_format='%a "%r" %s %b %Tfs', loop=uvloop.new_event_loop())
