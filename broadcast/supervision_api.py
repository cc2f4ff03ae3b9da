"""The supervision views over HTTP: an alert's linkage tree, its live change stream, and the live page.

    GET /api/alerts/{id}/linkage          {"alert_id", "now", "tree", "rollups"} (broadcast.supervision)
    GET /api/alerts/{id}/linkage/stream   text/event-stream: a snapshot, then every change
    GET /linkage/{id}                     the live page (HTML + JS, no external assets; public: it
                                          asks for a token and holds no data itself)

Supervisors (forecaster, approver, ops, admin) see every unit; an officer sees the subtrees
rooted at the units they act for, and gets 403 when they act for none.

Screens poll the tree: callers with the same scope share one rendering of an alert's tree for
``VIEW_MAX_AGE_SECONDS`` (0.5 s), so a view may be that much behind (its ``now`` says when it
was made). The stream is exact.

The stream (server-sent events) reads the alert's change stream ``keys.linkage_events`` with
``XREAD BLOCK`` on an asyncio Redis client (one blocking read per follower, so the event loop
never waits on Redis). Events::

    id: <stream id>   event: snapshot   data: {"alert_id", "now", "tree", "rollups"}
    id: <stream id>   event: change     data: {"type", "unit", "node"}   (node as in the tree, no children)
                      event: rollups    data: {"now", "rollups"}   (at most once a second after changes)
    : keepalive                                                    (a comment every HEARTBEAT_SECONDS)

Every event id is the Redis stream id of the change it carries (the snapshot's is the last change
it includes), so a client that reconnects with ``Last-Event-ID`` (browsers' EventSource does so by
itself) gets exactly the changes after it and no snapshot; when those changes were trimmed away,
or the id is unknown, it gets a fresh snapshot instead.

Authentication is the bearer token as on every /api route. Browsers' EventSource cannot send
headers, so this one route also takes the token as ``?access_token=`` (see
``broadcast.api.auth_middleware``); prefer the header where you can, since query strings reach
access logs. The live page itself reads the stream with ``fetch`` and the header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio
from aiohttp import web

from broadcast import keys
from broadcast.alerts import AlertService
from broadcast.errors import InvalidInput, NotFound
from broadcast.linkage import Task
from broadcast.roster import units_of_user
from broadcast.settings import Settings
from broadcast.supervision import Scope, in_scope, node_view, parent_lookup, rollups, scope_for, supervision_view
from broadcast.users import Permission, User
from geotarget.gazetteer import Gazetteer
from geotarget.registry import RegistryStore, TargetCache

log = logging.getLogger(__name__)

STREAM_REDIS = web.AppKey("supervision_stream_redis", redis.asyncio.Redis)
_OPEN_STREAMS = web.AppKey("supervision_open_streams", set)

PAGE = Path(__file__).resolve().parent / "static" / "linkage.html"
HEARTBEAT_SECONDS = 15.0
# The stream's client waits in XREAD BLOCK for up to a heartbeat: its socket timeout must be longer
# (redis-py's default of 5 s would cut every quiet stream).
STREAM_SOCKET_TIMEOUT_SECONDS = 60.0
ROLLUPS_EVERY_SECONDS = 1.0
VIEW_MAX_AGE_SECONDS = 0.5  # how long callers with the same scope share a GET .../linkage view
VIEW_GAZETTEER_MAX_AGE_SECONDS = 1.0  # a newly published gazetteer shows in views this much later
VIEW_PARSED_ALERTS = 64  # alerts whose parsed tasks a view builder keeps between polls
VIEW_NICE = 5  # the view builder's CPU priority below the API process's
READ_COUNT = 500  # stream entries per XREAD
RETRY_MS = 2000  # how long EventSource waits before reconnecting
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


# ---------------------------------------------------------------- reading (sync client, in a thread)


class ParsedTasks:
    """Parsed tasks of recent alerts, reused while their stored JSON is unchanged.

    A supervisor's poll of a city-wide alert reads ~875 tasks; parsing them all costs ~10 ms of
    CPU, while between two polls only the units that answered meanwhile changed. Comparing the
    stored bytes with the ones a Task was parsed from is exact and cheap.
    """

    def __init__(self, alerts: int = 32) -> None:
        self._alerts = alerts
        self._cache: OrderedDict[str, dict[bytes, tuple[bytes, Task]]] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, alert_id: str, raw: dict[bytes, bytes]) -> dict[str, Task]:
        with self._lock:
            held = self._cache.pop(alert_id, {})
        fresh: dict[bytes, tuple[bytes, Task]] = {}
        for unit, doc in raw.items():
            known = held.get(unit)
            fresh[unit] = known if known is not None and known[0] == doc else (doc, Task.from_json(doc))
        with self._lock:
            self._cache[alert_id] = fresh
            while len(self._cache) > self._alerts:
                self._cache.popitem(last=False)
        return {unit.decode(): task for unit, (_, task) in fresh.items()}


def read_tasks(client: redis.Redis, alert_id: str, parsed: ParsedTasks | None = None) -> tuple[dict[str, Task], str]:
    """The alert's tasks and the id of the last change they include, read in one transaction.

    Raises:
        NotFound: no such alert.
    """
    with client.pipeline(transaction=True) as pipe:
        # Only whether the alert exists: parsing a city-wide alert's record costs more than the whole view.
        pipe.exists(keys.alert(alert_id))
        pipe.hgetall(keys.linkage_tasks(alert_id))
        pipe.xrevrange(keys.linkage_events(alert_id), count=1)
        exists, raw, last = pipe.execute()
    if not exists:
        raise NotFound(f"no alert {alert_id}", field="id")
    tasks = (parsed or ParsedTasks(0)).parse(alert_id, raw)
    return tasks, last[0][0].decode() if last else "0-0"


class SharedViews:
    """Rendered tree views (JSON), shared by every caller with the same scope for ``max_age`` seconds.

    Supervisors' screens poll. A city-wide tree costs ~15 ms of CPU to build and serialise, so twenty
    screens on one alert would cost twenty times that each second; shared, it costs one. A poll gets a
    view at most ``max_age`` old (its ``now`` says when it was made); the stream is exact.
    """

    def __init__(self, max_age: float, entries: int = 256) -> None:
        self.max_age = max_age
        self._entries = entries
        self._views: OrderedDict[tuple[str, frozenset[str] | None], tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, alert_id: str, scope: Scope) -> bytes | None:
        with self._lock:
            held = self._views.get((alert_id, scope.roots))
        return held[1] if held is not None and time.monotonic() - held[0] < self.max_age else None

    def put(self, alert_id: str, scope: Scope, body: bytes) -> None:
        with self._lock:
            self._views[(alert_id, scope.roots)] = (time.monotonic(), body)
            self._views.move_to_end((alert_id, scope.roots))
            while len(self._views) > self._entries:
                self._views.popitem(last=False)


@dataclass(slots=True)
class Watch:
    """What one caller's view of one alert starts from."""

    alert_id: str
    scope: Scope
    gazetteer: Gazetteer
    tasks: dict[str, Task]
    last_id: str  # the last change ``tasks`` includes

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        view = supervision_view(self.tasks, self.gazetteer, now=now, scope=self.scope)
        return {"alert_id": self.alert_id, "now": now, **view.as_dict()}


def authorise(client: redis.Redis, user: User) -> Scope:
    """What ``user`` may see of any alert's linkage.

    Raises:
        Forbidden: an officer who acts for no unit.
    """
    user.require(Permission.READ_ALERTS)
    return scope_for(user, units_of_user(client, user.name))


def open_watch(service: AlertService, client: redis.Redis, user: User, alert_id: str,
               parsed: ParsedTasks | None = None) -> Watch:
    """Check who asks and for what, then read the alert's tasks.

    Raises:
        Forbidden: an officer who acts for no unit.
        NotFound: no such alert.
    """
    scope = authorise(client, user)
    tasks, last_id = read_tasks(client, alert_id, parsed)
    return Watch(alert_id, scope, service.targets.get().gazetteer, tasks, last_id)


class ViewBuilder:
    """Builds whole tree views (JSON bytes) in a process of its own, next to the API process.

    A city-wide view is ~13 ms of CPU to build and as much to serialise. In a thread of the API
    process it holds the GIL for those 26 ms while the event loop, giving the GIL up at every
    socket call, waits up to a switch interval to get it back each time: acknowledgements queue
    behind supervisors' polls. In its own process it costs the same CPU and no one's latency.
    The process reads Redis itself (its own client, parsed-task cache and gazetteer).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:  # on first use: most API processes (and tests) never build a view
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_view_process,
                                                 initargs=(self._settings, os.getpid()))
            return self._pool

    async def build(self, alert_id: str, scope: Scope) -> bytes:
        """The view of ``alert_id`` as ``scope`` sees it.

        Raises:
            NotFound: no such alert.
        """
        body = await asyncio.get_running_loop().run_in_executor(self._executor(), _build_view, alert_id, scope.roots)
        if body is None:
            raise NotFound(f"no alert {alert_id}", field="id")
        return body

    def warm(self) -> None:
        """Start the process now (it takes seconds to import and load the gazetteer), not at the first poll."""
        self._executor().submit(_warm_view_process)

    def close(self) -> None:
        """Stop the process (and multiprocessing's resource tracker), so nothing outlives the API."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # at most one view (~30 ms) to finish
            # The tracker exits by itself once every process holding its pipe has; stopped here, it is
            # gone before this process is (a supervisor waiting for the API sees no stragglers).
            with contextlib.suppress(Exception):
                resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


VIEW_BUILDER = web.AppKey("supervision_view_builder", ViewBuilder)


@dataclass
class _ViewProcess:
    redis: redis.Redis
    targets: TargetCache
    parsed: ParsedTasks


_VIEW_PROCESS: list[_ViewProcess] = []  # the one in a view-builder process, made by its initializer


def _start_view_process(settings: Settings, parent: int) -> None:
    def exit_with_parent() -> None:  # an API process killed outright cannot shut its pool down
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, name="exit-with-parent", daemon=True).start()
    # A terminal's Ctrl-C reaches every process of the group; this one is stopped by its API process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answers first: when the cores are busy, a supervisor's view may wait, an officer's answer should not.
    with contextlib.suppress(OSError):
        os.nice(VIEW_NICE)
    client = redis.Redis.from_url(settings.effective_redis_url)
    # Every alert supervisors may be polling at once (a parsed city-wide alert takes 0.5-1.5 MB).
    parsed = ParsedTasks(VIEW_PARSED_ALERTS)
    _VIEW_PROCESS.append(_ViewProcess(client, TargetCache(RegistryStore(client, settings.data_dir)), parsed))


def _warm_view_process() -> None:
    _VIEW_PROCESS[0].targets.get()


async def warm_view_builder(app: web.Application) -> None:
    """An on_startup hook for a served API (tests leave the process to their first view)."""
    app[VIEW_BUILDER].warm()


def _build_view(alert_id: str, roots: frozenset[str] | None) -> bytes | None:
    """In the view-builder process: the view's JSON, or None for no such alert."""
    here = _VIEW_PROCESS[0]
    try:
        tasks, last_id = read_tasks(here.redis, alert_id, here.parsed)
    except NotFound:
        return None
    gazetteer = here.targets.recent(VIEW_GAZETTEER_MAX_AGE_SECONDS).gazetteer
    return _dumps(Watch(alert_id, Scope(roots), gazetteer, tasks, last_id).snapshot())


# ---------------------------------------------------------------- server-sent events


def _dumps(data: Any) -> bytes:
    # orjson: a city-wide view (~420 KB) in 0.7 ms instead of 7 ms with json, the same bytes.
    return orjson.dumps(data)


def sse(event: str | None, data: Any, event_id: str | None = None) -> bytes:
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {event}\n" if event is not None else "")
    return head.encode() + b"data: " + _dumps(data) + b"\n\n"


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def _decoded(value: Any, default: str = "0-0") -> str:
    return value.decode() if isinstance(value, bytes) else str(value or default)


async def _resumable(client: redis.asyncio.Redis, alert_id: str, after: str) -> bool:
    """Whether every change after ``after`` is still in the stream (none trimmed, the id not from the future).

    Trimming (MAXLEN) drops the oldest entries: once any were dropped, a client whose last id is older
    than the first entry left may have missed some, so it gets a snapshot (a spare one at worst).
    """
    try:
        info = await client.xinfo_stream(keys.linkage_events(alert_id))
    except redis.ResponseError:  # no stream yet: nothing was missed only if nothing was seen
        return after == "0-0"
    seen = _id_key(after)
    if seen > _id_key(_decoded(info.get("last-generated-id"))):
        return False
    if seen < _id_key(_decoded(info.get("max-deleted-entry-id"))):  # XDEL (the service never deletes)
        return False
    first = info.get("first-entry")
    trimmed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
    return not (trimmed and first and seen < _id_key(_decoded(first[0])))


@dataclass(slots=True)
class _Follower:
    """One stream's view of the tasks, kept current from the changes it relays (for the rollups events)."""

    watch: Watch
    rollups_due: bool = False
    rollups_sent: dict[str, Any] | None = None
    rollups_at: float = 0.0

    def relay(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[bytes]:
        watch = self.watch
        tasks = watch.tasks
        parent_of = parent_lookup(tasks, watch.gazetteer)
        now = time.time()
        out = []
        for event_id, fields in entries:
            task = Task.from_json(fields[b"task"])
            held = tasks.get(task.unit)
            if held is None or task.version >= held.version:  # a replay never rolls a task back
                tasks[task.unit] = task
            if watch.scope.covers(task.unit, parent_of):
                self.rollups_due = True
                out.append(sse("change", {"type": fields[b"type"].decode(), "unit": task.unit,
                                          "node": node_view(task, watch.gazetteer, now)}, event_id.decode()))
        return out

    def rollups(self, *, heartbeat: bool) -> bytes | None:
        """A rollups event when changes are waiting (or, on a heartbeat, when time made units overdue)."""
        if not (self.rollups_due or heartbeat):
            return None
        now = time.time()
        watch = self.watch
        visible = in_scope(watch.tasks, watch.gazetteer, watch.scope)
        current = rollups(visible.values(), now)
        self.rollups_due, self.rollups_at = False, now
        if current == self.rollups_sent:
            return None
        self.rollups_sent = current
        return sse("rollups", {"now": now, "rollups": current})


def _snapshot_event(watch: Watch) -> tuple[dict[str, Any], bytes]:
    snapshot = watch.snapshot()
    return snapshot, sse("snapshot", snapshot, watch.last_id)


async def follow(response: web.StreamResponse, client: redis.asyncio.Redis, watch: Watch, after: str,
                 snapshot: tuple[dict[str, Any], bytes] | None) -> None:
    """Write the stream (the snapshot event first, if given) until the client goes away or the task is cancelled."""
    follower = _Follower(watch)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    if snapshot is not None:
        follower.rollups_sent = snapshot[0]["rollups"]
        await response.write(snapshot[1])
    stream = keys.linkage_events(watch.alert_id)
    cursor = after
    while True:
        wait = HEARTBEAT_SECONDS
        if follower.rollups_due:
            wait = max(0.0, follower.rollups_at + ROLLUPS_EVERY_SECONDS - time.time())
        reply = await client.xread({stream: cursor}, count=READ_COUNT, block=max(1, int(wait * 1000)))
        chunks: list[bytes] = []
        for _, entries in reply or ():
            if entries:
                cursor = entries[-1][0].decode()
                chunks += follower.relay(entries)
        if not reply:
            pending = follower.rollups(heartbeat=not follower.rollups_due)
            chunks.append(pending if pending is not None else b": keepalive\n\n")
        elif time.time() - follower.rollups_at >= ROLLUPS_EVERY_SECONDS:
            pending = follower.rollups(heartbeat=False)
            if pending is not None:
                chunks.append(pending)
        if chunks:
            await response.write(b"".join(chunks))


# ---------------------------------------------------------------- routes


def add_routes(app: web.Application, *, redis_url: str, redis_key: web.AppKey[redis.Redis],
               service_key: web.AppKey[AlertService], user_key: web.RequestKey[User]) -> None:
    """Serve the supervision views from ``app``.

    Args:
        app: The API application (its auth middleware sets ``request[user_key]`` on /api routes).
        redis_url: Where the stream's asyncio Redis client connects (opened and closed with the app).
        redis_key: The app's synchronous Redis client (read in worker threads).
        service_key: The app's AlertService (alert lookups, the gazetteer).
        user_key: The authenticated user of a request.
    """
    open_streams: set[asyncio.Task[Any]] = set()
    app[_OPEN_STREAMS] = open_streams
    parsed = ParsedTasks()
    views = SharedViews(VIEW_MAX_AGE_SECONDS)

    async def stream_redis(app: web.Application) -> AsyncIterator[None]:
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=STREAM_SOCKET_TIMEOUT_SECONDS)
        app[STREAM_REDIS] = client
        yield
        await client.aclose()

    async def view_builder(app: web.Application) -> AsyncIterator[None]:
        app[VIEW_BUILDER] = ViewBuilder(app[service_key].settings)
        yield
        app[VIEW_BUILDER].close()

    async def end_streams(app: web.Application) -> None:
        # Streams never finish by themselves; without this a shutdown would wait for its timeout.
        for task in list(open_streams):
            task.cancel()

    async def watch(request: web.Request) -> Watch:
        return await asyncio.to_thread(open_watch, request.app[service_key], request.app[redis_key],
                                       request[user_key], request.match_info["id"], parsed)

    def shared_view(client: redis.Redis, user: User, alert_id: str) -> tuple[Scope, bytes | None]:
        scope = authorise(client, user)
        body = views.get(alert_id, scope)
        return scope, body if body is not None and client.exists(keys.alert(alert_id)) else None

    async def linkage(request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        scope, body = await asyncio.to_thread(shared_view, request.app[redis_key], request[user_key], alert_id)
        if body is None:  # built once for everyone with this scope, in the view-builder process
            body = await request.app[VIEW_BUILDER].build(alert_id, scope)
            views.put(alert_id, scope, body)
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def linkage_stream(request: web.Request) -> web.StreamResponse:
        last_event_id = request.headers.get("Last-Event-ID", "").strip() or None
        if last_event_id is not None and not _STREAM_ID.fullmatch(last_event_id):
            raise InvalidInput("must be an event id this stream sent, e.g. 1767225600000-0", field="Last-Event-ID")
        current = await watch(request)
        client = request.app[STREAM_REDIS]
        snapshot: tuple[dict[str, Any], bytes] | None = None
        if last_event_id is not None and await _resumable(client, current.alert_id, last_event_id):
            after = last_event_id
        else:
            after = current.last_id
            snapshot = await asyncio.to_thread(lambda: _snapshot_event(current))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        open_streams.add(task)
        try:
            await follow(response, client, current, after, snapshot)
        except ConnectionResetError:
            pass  # the client went away
        except redis.RedisError as exc:
            # The headers are out: end the stream (the client resumes with Last-Event-ID) rather than let the
            # error middleware write a second response into it.
            log.warning("linkage stream of %s ended: %s", current.alert_id, exc)
        finally:
            open_streams.discard(task)
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE.read_bytes(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy":
                                     "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    app.cleanup_ctx.append(stream_redis)
    app.cleanup_ctx.append(view_builder)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/api/alerts/{id}/linkage", linkage)
    app.router.add_get("/api/alerts/{id}/linkage/stream", linkage_stream)
    app.router.add_get("/linkage/{id}", page)
