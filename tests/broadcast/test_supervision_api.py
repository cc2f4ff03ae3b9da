"""Supervision over HTTP: GET /api/alerts/{id}/linkage, its SSE stream (real HTTP, real Redis) and the live page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from broadcast import keys, supervision_api
from broadcast.linkage import Acknowledgement, AckStatus, AckVia, LinkageStore, Task, acknowledge, close
from broadcast.redis_server import free_port
from broadcast.roster import bind_user
from broadcast.users import UserDirectory, parse_roles
from geotarget import build_demo_gazetteer
from tests.broadcast.test_store import start_api

DEADLINE = 600.0
FUTIAN, NANSHAN = "440304", "440305"


async def draft(client, auth) -> str:
    body = {"signal": {"hazard": "rainstorm", "level": "red"},
            "areas": [{"desc": {"zh-CN": "福田区、南山区", "en": "Futian, Nanshan"}, "geocodes": [FUTIAN, NANSHAN]}]}
    response = await client.post("/api/alerts", json=body, headers=auth["alice"])
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


def units_under(*districts: str) -> list[str]:
    """The districts, their streets and communities, with the city."""
    gazetteer = build_demo_gazetteer()
    return ["440300", *[u for d in districts for u in (d, *(x.code for x in gazetteer.descendants(d)))]]


def open_tasks(client: redis.Redis, alert_id: str, units: list[str], *, opened_at: float | None = None) -> None:
    gazetteer = build_demo_gazetteer()
    at = time.time() if opened_at is None else opened_at
    tasks = [Task(alert_id, code, gazetteer.unit(code).level.value, gazetteer.unit(code).parent, at, at + DEADLINE)
             for code in units]
    assert LinkageStore(client).open(tasks) == len(tasks)


def ack(client: redis.Redis, alert_id: str, unit: str, status: AckStatus = AckStatus.RECEIVED,
        note: str = "") -> Task:
    ack = Acknowledgement(f"officer-{unit}", time.time(), AckVia.API, status, note)
    task, changed = LinkageStore(client).change(alert_id, unit, "acknowledged", lambda t: acknowledge(t, ack))
    assert changed
    return task


def codes(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["code"] for n in nodes} | {c for n in nodes for c in codes(n["children"])}


@pytest.fixture
async def alert(client, auth, redis_client) -> str:
    alert_id = await draft(client, auth)
    open_tasks(redis_client, alert_id, units_under(FUTIAN, NANSHAN))
    return alert_id


# ---------------------------------------------------------------- the tree


async def test_supervisor_gets_the_whole_tree_and_rollups(client, auth, redis_client, alert) -> None:
    ack(redis_client, alert, FUTIAN, AckStatus.LINKAGE_STARTED, "command post open")
    ack(redis_client, alert, "440300")
    response = await client.get(f"/api/alerts/{alert}/linkage", headers=auth["bob"])
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["alert_id"] == alert and abs(body["now"] - time.time()) < 5
    assert [root["code"] for root in body["tree"]] == ["440300"]
    assert codes(body["tree"]) == set(units_under(FUTIAN, NANSHAN))
    total = len(units_under(FUTIAN, NANSHAN))
    assert body["rollups"]["all"]["total"] == total and body["rollups"]["all"]["acknowledged"] == 2
    assert body["rollups"]["levels"]["district"] == {**body["rollups"]["levels"]["district"], "total": 2,
                                                     "acknowledged": 1, "linkage_started": 1, "open": 1}
    futian = next(d for d in body["tree"][0]["children"] if d["code"] == FUTIAN)
    assert futian["task"]["status"] == "linkage_started" and futian["task"]["note"] == "command post open"
    assert futian["name_zh"] == "福田区" and futian["name_en"] == "Futian District"
    assert futian["rollup"]["all"]["acknowledged"] == 1
    for who in ("alice", "carol", "erin", "root"):
        assert (await client.get(f"/api/alerts/{alert}/linkage", headers=auth[who])).status == 200


async def test_officer_sees_only_their_subtree(client, auth, redis_client, alert) -> None:
    bind_user(redis_client, "dave", [FUTIAN])
    body = await (await client.get(f"/api/alerts/{alert}/linkage", headers=auth["dave"])).json()
    assert [root["code"] for root in body["tree"]] == [FUTIAN]
    assert codes(body["tree"]) == set(units_under(FUTIAN)) - {"440300"}
    assert not any(code.startswith(NANSHAN) for code in codes(body["tree"]))
    assert body["rollups"]["levels"]["city"]["total"] == 0
    assert body["rollups"]["all"]["total"] == len(units_under(FUTIAN)) - 1

    bind_user(redis_client, "dave", ["440306"])  # Bao'an: not hit by this alert
    body = await (await client.get(f"/api/alerts/{alert}/linkage", headers=auth["dave"])).json()
    assert body["tree"] == [] and body["rollups"]["all"]["total"] == 0


async def test_officer_without_units_is_refused(client, auth, alert) -> None:
    response = await client.get(f"/api/alerts/{alert}/linkage", headers=auth["dave"])
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"
    response = await client.get(f"/api/alerts/{alert}/linkage/stream", headers=auth["dave"])
    assert response.status == 403


async def test_unknown_alert_and_missing_token(client, auth, alert) -> None:
    assert (await client.get("/api/alerts/nope/linkage", headers=auth["bob"])).status == 404
    assert (await client.get("/api/alerts/nope/linkage/stream", headers=auth["bob"])).status == 404
    for path in (f"/api/alerts/{alert}/linkage", f"/api/alerts/{alert}/linkage/stream"):
        for headers in ({}, {"Authorization": "Bearer bct_forged"}):
            response = await client.get(path, headers=headers)
            assert response.status == 401, (path, headers)
            assert (await response.json())["error"]["field"] == "Authorization"


async def test_alert_without_tasks_has_an_empty_tree(client, auth) -> None:
    alert_id = await draft(client, auth)
    body = await (await client.get(f"/api/alerts/{alert_id}/linkage", headers=auth["bob"])).json()
    assert body["tree"] == [] and body["rollups"]["all"]["total"] == 0


# ---------------------------------------------------------------- the stream


@dataclass
class Event:
    type: str
    id: str | None
    data: Any


class EventReader:
    """Reads server-sent events off an aiohttp response as a browser would; comments are kept."""

    def __init__(self, response) -> None:  # type: ignore[no-untyped-def]
        self.response = response
        self.comments: list[str] = []
        self.retry: int | None = None

    async def next(self, timeout: float = 10) -> Event:
        kind, event_id, data = "message", None, []
        while True:
            raw = await asyncio.wait_for(self.response.content.readline(), timeout)
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    return Event(kind, event_id, json.loads("\n".join(data)))
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)

    async def changes(self, count: int, timeout: float = 10) -> list[Event]:
        """The next ``count`` change events (rollups events in between are skipped)."""
        out = []
        while len(out) < count:
            event = await self.next(timeout)
            if event.type == "change":
                out.append(event)
        return out


async def stream(client, alert_id: str, headers: dict[str, str], **params: str):  # type: ignore[no-untyped-def]
    response = await client.get(f"/api/alerts/{alert_id}/linkage/stream", headers=headers, params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response, EventReader(response)


async def test_stream_starts_with_a_snapshot_then_delivers_every_change(client, auth, redis_client, alert) -> None:
    response, events = await stream(client, alert, auth["bob"])
    snapshot = await events.next()
    assert events.retry == supervision_api.RETRY_MS
    assert snapshot.type == "snapshot" and snapshot.data["alert_id"] == alert
    assert snapshot.data["rollups"]["all"]["acknowledged"] == 0
    last = redis_client.xrevrange(keys.linkage_events(alert), count=1)[0][0].decode()
    assert snapshot.id == last  # the snapshot includes every change up to its id

    communities = [c for c in units_under(FUTIAN) if len(c) == 12][:5]
    acked = [ack(redis_client, alert, code, AckStatus.LINKAGE_STARTED, f"started {code}") for code in communities]
    open_tasks(redis_client, alert, ["440306"])  # Bao'an joins (an Update raised the area)
    _, closed = LinkageStore(redis_client).change(alert, NANSHAN, "closed", lambda t: close(t, "cancelled"))
    assert closed

    changes = await events.changes(7)
    stream_ids = [i.decode() for i, _ in redis_client.xrange(keys.linkage_events(alert), min=f"({last}")]
    assert [c.id for c in changes] == stream_ids
    assert [(c.data["type"], c.data["unit"]) for c in changes] == (
        [("acknowledged", code) for code in communities] + [("opened", "440306"), ("closed", NANSHAN)])
    for change, task in zip(changes, acked, strict=False):
        node = change.data["node"]
        assert node["code"] == task.unit and node["level"] == "community" and node["parent"] == task.parent
        assert node["task"]["status"] == "linkage_started" and node["task"]["note"] == f"started {task.unit}"
        assert node["task"]["version"] == task.version
    assert changes[-1].data["node"]["task"]["state"] == "closed"

    rollups = await events.next()
    while rollups.type != "rollups":
        rollups = await events.next()
    assert rollups.data["rollups"]["all"]["acknowledged"] == 5
    assert rollups.data["rollups"]["all"]["closed"] == 1
    response.close()


async def test_stream_resumes_exactly_after_last_event_id(client, auth, redis_client, alert) -> None:
    response, events = await stream(client, alert, auth["bob"])
    await events.next()
    communities = [c for c in units_under(NANSHAN) if len(c) == 12][:6]
    for code in communities[:3]:
        ack(redis_client, alert, code)
    first = await events.changes(3)
    response.close()

    for code in communities[3:]:  # while the client is away
        ack(redis_client, alert, code)
    response, events = await stream(client, alert, {**auth["bob"], "Last-Event-ID": first[1].id})
    resumed = await events.changes(4)  # no snapshot: straight on from the change after first[1]
    assert [c.data["unit"] for c in resumed] == [communities[2], *communities[3:]]
    assert resumed[0].id == first[2].id
    response.close()


async def test_stream_sends_a_fresh_snapshot_when_the_missed_changes_are_gone(client, auth, redis_client,
                                                                             alert) -> None:
    old = redis_client.xrange(keys.linkage_events(alert), count=2)
    ack(redis_client, alert, FUTIAN)
    redis_client.xtrim(keys.linkage_events(alert), maxlen=3, approximate=False)  # the first changes are trimmed away
    response, events = await stream(client, alert, {**auth["bob"], "Last-Event-ID": old[0][0].decode()})
    snapshot = await events.next()
    assert snapshot.type == "snapshot"
    assert snapshot.data["rollups"]["all"]["acknowledged"] == 1
    response.close()
    response = await client.get(f"/api/alerts/{alert}/linkage/stream",
                                headers={**auth["bob"], "Last-Event-ID": "yesterday"})
    assert response.status == 422 and (await response.json())["error"]["field"] == "Last-Event-ID"


async def test_officer_stream_carries_only_their_subtree(client, auth, redis_client, alert) -> None:
    bind_user(redis_client, "dave", [FUTIAN])
    response, events = await stream(client, alert, auth["dave"])
    snapshot = await events.next()
    assert [root["code"] for root in snapshot.data["tree"]] == [FUTIAN]
    nanshan = [c for c in units_under(NANSHAN) if len(c) == 12][:3]
    futian = [c for c in units_under(FUTIAN) if len(c) == 12][:2]
    for code in [nanshan[0], futian[0], "440300", nanshan[1], NANSHAN, futian[1], nanshan[2]]:
        ack(redis_client, alert, code)
    changes = await events.changes(2)
    assert [c.data["unit"] for c in changes] == futian
    with pytest.raises(TimeoutError):
        await events.changes(1, timeout=1.5)
    response.close()


async def test_stream_takes_the_token_as_a_query_parameter(client, auth, tokens, redis_client, alert) -> None:
    response, events = await stream(client, alert, {}, access_token=tokens["erin"])
    assert (await events.next()).type == "snapshot"
    response.close()
    # only the stream: other routes still want the header
    response = await client.get(f"/api/alerts/{alert}/linkage", params={"access_token": tokens["erin"]})
    assert response.status == 401
    response = await client.get(f"/api/alerts/{alert}/linkage/stream", params={"access_token": "bct_forged"})
    assert response.status == 401


async def test_stream_sends_heartbeats(client, auth, alert, monkeypatch) -> None:
    monkeypatch.setattr(supervision_api, "HEARTBEAT_SECONDS", 0.2)
    response, events = await stream(client, alert, auth["bob"])
    await events.next()
    deadline = time.monotonic() + 5
    while "keepalive" not in events.comments and time.monotonic() < deadline:
        line = await asyncio.wait_for(response.content.readline(), 5)
        if line.startswith(b":"):
            events.comments.append(line.decode()[1:].strip())
    assert "keepalive" in events.comments
    response.close()


async def test_stream_reports_units_falling_overdue_without_any_change(client, auth, redis_client,
                                                                      monkeypatch) -> None:
    monkeypatch.setattr(supervision_api, "HEARTBEAT_SECONDS", 0.3)
    alert_id = await draft(client, auth)
    gazetteer = build_demo_gazetteer()
    unit = gazetteer.unit(FUTIAN)
    soon = time.time() + 0.5
    LinkageStore(redis_client).open([Task(alert_id, FUTIAN, "district", unit.parent, soon - 60, soon)])
    response, events = await stream(client, alert_id, auth["bob"])
    assert (await events.next()).data["rollups"]["all"]["overdue"] == 0
    event = await events.next(timeout=5)
    assert event.type == "rollups" and event.data["rollups"]["all"]["overdue"] == 1
    response.close()


async def test_a_thousand_changes_all_arrive_in_order(client, auth, redis_client, alert) -> None:
    response, events = await stream(client, alert, auth["bob"])
    await events.next()
    units = units_under(FUTIAN, NANSHAN)
    for code in units:
        ack(redis_client, alert, code)
    for code in units:
        ack(redis_client, alert, code, AckStatus.LINKAGE_STARTED)
    changes = await events.changes(2 * len(units), timeout=20)
    assert [c.data["unit"] for c in changes] == units + units
    assert len({c.id for c in changes}) == len(changes)
    response.close()


# ---------------------------------------------------------------- the page


async def test_live_page_is_served_without_a_token(client, alert) -> None:
    response = await client.get(f"/linkage/{alert}")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "/linkage/stream" in page and "Last-Event-ID" in page and "sessionStorage" in page
    assert "预警联动监督" in page and "Linkage supervision" in page
    for external in ('src="http', "src='http", 'href="http', "@import", "//cdn"):
        assert external not in page


async def test_second_officer_sees_their_own_district(client, auth, redis_client, alert) -> None:
    token = UserDirectory(redis_client).add("olga", parse_roles(["officer"]))
    bind_user(redis_client, "olga", [NANSHAN])
    body = await (await client.get(f"/api/alerts/{alert}/linkage",
                                   headers={"Authorization": f"Bearer {token}"})).json()
    assert [root["code"] for root in body["tree"]] == [NANSHAN]
    assert not any(code.startswith(FUTIAN) for code in codes(body["tree"]))


async def test_quiet_streams_outlive_the_redis_socket_timeout(client) -> None:
    kwargs = client.app[supervision_api.STREAM_REDIS].connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] > supervision_api.HEARTBEAT_SECONDS + 5  # XREAD BLOCK waits a heartbeat


async def test_redis_failure_ends_the_stream_cleanly(client, auth, alert, monkeypatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("redis went away")

    monkeypatch.setattr(client.app[supervision_api.STREAM_REDIS], "xread", broken)
    response, events = await stream(client, alert, auth["bob"])
    assert (await events.next()).type == "snapshot"
    rest = await asyncio.wait_for(response.content.read(), 5)
    assert b"HTTP/1.1" not in rest and b"error" not in rest  # ended, not a second response written into it


async def test_polls_share_a_view_for_half_a_second(client, auth, redis_client, alert) -> None:
    first = await (await client.get(f"/api/alerts/{alert}/linkage", headers=auth["bob"])).json()
    ack(redis_client, alert, FUTIAN)
    again = await (await client.get(f"/api/alerts/{alert}/linkage", headers=auth["erin"])).json()
    assert again["now"] == first["now"]  # same scope (everything), within VIEW_MAX_AGE_SECONDS
    await asyncio.sleep(supervision_api.VIEW_MAX_AGE_SECONDS + 0.1)
    fresh = await (await client.get(f"/api/alerts/{alert}/linkage", headers=auth["erin"])).json()
    assert fresh["now"] > first["now"] and fresh["rollups"]["all"]["acknowledged"] == 1


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_view_builder_yields_to_answers_and_ends_with_an_api_killed_outright(redis_url: str) -> None:
    api = start_api(free_port(), redis_url)  # a served API starts its view builder at once
    try:
        deadline = time.monotonic() + 30
        builders: list[int] = []
        while time.monotonic() < deadline and not builders:
            builders = [p for p in _children(api.pid) if b"spawn_main" in (Path("/proc") / str(p) / "cmdline")
                        .read_bytes() and b"resource_tracker" not in (Path("/proc") / str(p) / "cmdline").read_bytes()]
            time.sleep(0.1)
        assert builders, "the API started no view builder"
        expected = min(19, os.getpriority(os.PRIO_PROCESS, api.pid) + supervision_api.VIEW_NICE)
        deadline = time.monotonic() + 30  # the builder lowers its priority once it has started
        while time.monotonic() < deadline and os.getpriority(os.PRIO_PROCESS, builders[0]) != expected:
            time.sleep(0.1)
        assert os.getpriority(os.PRIO_PROCESS, builders[0]) == expected, "answers come first"
    finally:
        api.send_signal(signal.SIGKILL)
        api.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in builders):
        time.sleep(0.1)
    assert not any(_alive(p) for p in builders), "the view builder outlived its API process"
