"""The cap_feed channel: publishing into the public Atom feed, its HTTP endpoints, and a polling reader."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import defusedxml.ElementTree as SafeET
import pytest
import redis
import redis.asyncio
from aiohttp import web

from broadcast import feed, keys
from broadcast.cap import from_xml, to_xml
from broadcast.errors import TransientDeliveryError
from broadcast.model import MsgType
from broadcast.redis_server import free_port
from broadcast.render import build_message
from channels.base import ChannelContext, DeliveryStatus, Message, Recipient
from channels.cap_feed import PUBLIC_FEED, CapFeedAdapter, public_feed_recipient
from ops.simulators import feed_reader
from ops.simulators.base import RECORDER
from tests.conftest import sample_alert

ATOM = "{http://www.w3.org/2005/Atom}"
ASYNC_REDIS = web.AppKey("redis", redis.asyncio.Redis)
SYNC_REDIS = web.AppKey("sync_redis", redis.Redis)


def make_message(alert_id: str, identifier: str, *, hazard: str = "rainstorm", level: str = "red",
                 msg_type: MsgType = MsgType.ALERT, replaces: Message | None = None,
                 expires_in: timedelta | None = None) -> Message:
    alert, signal = sample_alert(level=level, hazard=hazard)
    changes: dict[str, Any] = {"identifier": identifier, "msg_type": msg_type}
    if replaces is not None:
        changes["references"] = (replaces.alert.reference,)
    if expires_in is not None:
        end = datetime.now(UTC) + expires_in
        changes["infos"] = tuple(dataclasses.replace(info, effective=end - timedelta(hours=2), expires=end)
                                 for info in alert.infos)
    alert = dataclasses.replace(alert, **changes)
    return build_message("cap_feed", alert_id, alert, signal=signal, timezone="Asia/Shanghai", cap_xml=to_xml(alert))


@pytest.fixture
async def context(settings, redis_client):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            yield ChannelContext(settings, http, client)
        finally:
            await client.aclose()


@pytest.fixture
async def feed_server(context, aiohttp_server):  # type: ignore[no-untyped-def]
    """The feed endpoints on an app holding an asyncio Redis client (as the workers do)."""
    app = web.Application()
    app[ASYNC_REDIS] = context.redis
    feed.add_routes(app, ASYNC_REDIS)
    return await aiohttp_server(app)


async def publish(context: ChannelContext, message: Message) -> str:
    [result] = await CapFeedAdapter(context).send(message, [public_feed_recipient()])
    assert result.status is DeliveryStatus.ACCEPTED, result
    assert result.provider_ref is not None
    return result.provider_ref


async def get(http: aiohttp.ClientSession, url: Any, **headers: str) -> tuple[int, bytes, Any]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers


async def test_feed_lists_published_alerts_with_links_to_their_cap(context, feed_server) -> None:  # type: ignore[no-untyped-def]
    rain = make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1")
    typhoon = make_message("20260701-090000-bbbbbb", "SZMB-TYPHOON-1", hazard="typhoon", level="orange")
    assert await publish(context, rain) == rain.alert_id
    assert await publish(context, typhoon) == typhoon.alert_id
    base = str(feed_server.make_url("")).rstrip("/")

    status, body, headers = await get(context.http, feed_server.make_url("/feed/cap.atom"))

    assert status == 200 and headers["Content-Type"].startswith("application/atom+xml")
    assert headers["Cache-Control"] == "public, max-age=30" and headers["ETag"].startswith('"')
    root = SafeET.fromstring(body)
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") == f"{base}/feed/cap.atom"
    assert "预警" in root.findtext(f"{ATOM}title", "")
    [self_link] = root.findall(f"{ATOM}link[@rel='self']")
    assert self_link.get("href") == f"{base}/feed/cap.atom"
    assert root.findtext(f"{ATOM}author/{ATOM}name")
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 2
    updated = [datetime.fromisoformat(e.findtext(f"{ATOM}updated", "")) for e in entries]
    assert updated == sorted(updated, reverse=True)  # newest first
    assert datetime.fromisoformat(root.findtext(f"{ATOM}updated", "")) == updated[0]
    assert len({e.findtext(f"{ATOM}id") for e in entries}) == 2
    assert all(e.findtext(f"{ATOM}id", "").startswith("urn:uuid:") for e in entries)
    by_title = {e.findtext(f"{ATOM}title"): e for e in entries}
    assert set(by_title) == {rain.alert.infos[0].headline, typhoon.alert.infos[0].headline}
    for message in (rain, typhoon):
        entry = by_title[message.alert.infos[0].headline]
        assert message.alert.infos[0].instruction in entry.findtext(f"{ATOM}summary", "")
        [link] = entry.findall(f"{ATOM}link[@rel='alternate']")
        assert link.get("type") == "application/cap+xml"
        assert link.get("href") == f"{base}/feed/cap/{message.alert_id}.xml"
        status, cap, cap_headers = await get(context.http, link.get("href"))
        assert status == 200 and cap_headers["Content-Type"].startswith("application/cap+xml")
        alert = from_xml(cap)
        assert (alert.identifier, alert.infos[0].event_codes) == (message.alert.identifier,
                                                                  message.alert.infos[0].event_codes)

    status, body, _ = await get(context.http, feed_server.make_url("/feed/cap.atom?lang=en"))
    titles = {e.findtext(f"{ATOM}title") for e in SafeET.fromstring(body).findall(f"{ATOM}entry")}
    assert titles == {rain.alert.infos[1].headline, typhoon.alert.infos[1].headline}
    assert (await get(context.http, feed_server.make_url("/feed/cap/nope.xml")))[0] == 404


async def test_etag_answers_304_until_the_feed_changes(context, feed_server) -> None:  # type: ignore[no-untyped-def]
    await publish(context, make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1"))
    url = feed_server.make_url("/feed/cap.atom")
    _, _, headers = await get(context.http, url)
    etag = headers["ETag"]

    status, body, again = await get(context.http, url, **{"If-None-Match": etag})
    assert (status, body, again["ETag"]) == (304, b"", etag)
    cap_url = feed_server.make_url("/feed/cap/20260701-080000-aaaaaa.xml")
    _, _, cap_headers = await get(context.http, cap_url)
    assert (await get(context.http, cap_url, **{"If-None-Match": f'W/{cap_headers["ETag"]}'}))[0] == 304

    await publish(context, make_message("20260701-090000-bbbbbb", "SZMB-RAIN-2"))
    status, body, changed = await get(context.http, url, **{"If-None-Match": etag})
    assert status == 200 and changed["ETag"] != etag and len(SafeET.fromstring(body).findall(f"{ATOM}entry")) == 2


async def test_expired_alerts_leave_the_feed(context, feed_server) -> None:  # type: ignore[no-untyped-def]
    live = make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1")
    old = make_message("20260701-070000-cccccc", "SZMB-RAIN-0", expires_in=timedelta(minutes=-5))
    await publish(context, live)
    await publish(context, old)

    _, body, _ = await get(context.http, feed_server.make_url("/feed/cap.atom"))
    links = [link.get("href") for link in SafeET.fromstring(body).iter(f"{ATOM}link") if link.get("rel") == "alternate"]
    assert [href.rsplit("/", 1)[1] for href in links] == [f"{live.alert_id}.xml"]

    assert await feed.withdraw_expired(context.redis, datetime.now(UTC)) == [old.alert_id]
    assert await context.redis.zrange(keys.FEED_ENTRIES, 0, -1) == [live.alert_id.encode()]
    assert await context.redis.exists(keys.feed_entry(old.alert_id)) == 0
    assert 0 < await context.redis.ttl(keys.feed_entry(live.alert_id)) <= int((timedelta(hours=6) + feed.KEY_GRACE)
                                                                             .total_seconds())
    assert (await get(context.http, feed_server.make_url(f"/feed/cap/{old.alert_id}.xml")))[0] == 404


async def test_a_cancel_replaces_its_original(context, feed_server) -> None:  # type: ignore[no-untyped-def]
    original = make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1")
    other = make_message("20260701-083000-dddddd", "SZMB-TYPHOON-1", hazard="typhoon", level="blue")
    await publish(context, original)
    await publish(context, other)
    cancel = make_message("20260701-100000-eeeeee", "SZMB-RAIN-1-C", msg_type=MsgType.CANCEL, replaces=original)

    await publish(context, cancel)

    _, body, _ = await get(context.http, feed_server.make_url("/feed/cap.atom"))
    titles = [e.findtext(f"{ATOM}title", "") for e in SafeET.fromstring(body).findall(f"{ATOM}entry")]
    assert titles == ["【解除】" + cancel.alert.infos[0].headline, other.alert.infos[0].headline]
    assert await feed.get_entry(context.redis, original.alert_id) is None


async def test_endpoints_work_with_the_synchronous_client_of_the_api(context, redis_url, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    message = make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1")
    sync = redis.Redis.from_url(redis_url)
    try:
        await feed.publish(sync, message)
        app = web.Application()
        app[SYNC_REDIS] = sync
        feed.add_routes(app, SYNC_REDIS, base_url="https://alerts.sz.example")
        server = await aiohttp_server(app)
        status, body, _ = await get(context.http, server.make_url("/feed/cap.atom"))
    finally:
        sync.close()
    assert status == 200
    [link] = [x for x in SafeET.fromstring(body).iter(f"{ATOM}link") if x.get("rel") == "alternate"]
    assert link.get("href") == f"https://alerts.sz.example/feed/cap/{message.alert_id}.xml"


async def test_adapter_answers_every_recipient(context) -> None:  # type: ignore[no-untyped-def]
    message = make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1")
    results = await CapFeedAdapter(context).send(message, [Recipient(id="elsewhere", address="/x"),
                                                           public_feed_recipient()])
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED]
    assert PUBLIC_FEED in (results[0].error or "")
    assert CapFeedAdapter(context).endpoint().endswith("/feed/cap.atom")
    assert CapFeedAdapter.capabilities.kind == "pull"


async def test_adapter_without_redis_is_transient(settings) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        dead = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(TransientDeliveryError):
                await CapFeedAdapter(ChannelContext(settings, http, dead)).send(
                    make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1"), [public_feed_recipient()])
        finally:
            await dead.aclose()


async def test_feed_reader_sees_new_entries_then_not_modified(context, feed_server, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    rain = make_message("20260701-080000-aaaaaa", "SZMB-RAIN-1")
    typhoon = make_message("20260701-090000-bbbbbb", "SZMB-TYPHOON-1", hazard="typhoon", level="orange")
    await publish(context, rain)
    await publish(context, typhoon)
    reader = await aiohttp_client(feed_reader.create_app(str(feed_server.make_url("/feed/cap.atom")), interval=0))
    recorder = reader.app[RECORDER]

    async def poll() -> dict[str, Any]:
        response = await reader.post("/_sim/poll")
        assert response.status == 200
        return await response.json()

    assert await poll() == {"status": 200, "new_entries": 2}
    entries = recorder.messages("entry")
    assert {e["identifier"] for e in entries} == {"SZMB-RAIN-1", "SZMB-TYPHOON-1"}
    assert {e["title"] for e in entries} == {rain.alert.infos[0].headline, typhoon.alert.infos[0].headline}
    assert await poll() == {"status": 304, "new_entries": 0}
    assert len(recorder.messages("not_modified")) == 1

    cancel = make_message("20260701-100000-eeeeee", "SZMB-RAIN-1-C", msg_type=MsgType.CANCEL, replaces=rain)
    await publish(context, cancel)
    assert await poll() == {"status": 200, "new_entries": 1}
    assert [e["identifier"] for e in recorder.messages("entry")][-1] == "SZMB-RAIN-1-C"
    assert recorder.messages("entry")[-1]["msg_type"] == "Cancel"
    [withdrawn] = recorder.messages("withdrawn")
    assert withdrawn["id"] == next(e["id"] for e in entries if e["identifier"] == "SZMB-RAIN-1")
    response = await reader.get("/_sim/messages")
    kinds = [m["kind"] for m in (await response.json())["messages"]]
    assert kinds == ["entry", "entry", "not_modified", "entry", "withdrawn"]


async def test_the_feed_reader_waits_for_a_feed_that_never_answered_then_reports_errors(  # type: ignore[no-untyped-def]
        context, aiohttp_client, aiohttp_server) -> None:
    port = free_port()
    reader = await aiohttp_client(feed_reader.create_app(f"http://127.0.0.1:{port}/feed/cap.atom", interval=0))
    recorder = reader.app[RECORDER]

    async def poll() -> dict[str, Any]:
        response = await reader.post("/_sim/poll")
        assert response.status == 200
        return await response.json()

    assert await poll() == {"status": None, "new_entries": 0}  # the service is not up yet
    assert [m["kind"] for m in recorder.messages()] == ["waiting"]
    async def empty_feed(_: web.Request) -> web.Response:
        return web.Response(body=b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>',
                            content_type="application/atom+xml")

    feed = web.Application()
    feed.router.add_get("/feed/cap.atom", empty_feed)
    server = await aiohttp_server(feed, port=port)
    assert await poll() == {"status": 200, "new_entries": 0}
    await server.close()
    assert (await poll())["status"] is None
    assert [m["kind"] for m in recorder.messages()] == ["waiting", "error"], "after an answer, failures are errors"
