"""The webhook channel against partner receivers (ops/simulators/webhook.py) that verify signatures."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from datetime import datetime

import aiohttp
import pytest
import redis.asyncio

from broadcast.cap import from_xml
from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.redis_server import free_port
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.webhook import (
    Partner,
    WebhookAdapter,
    add_partner,
    delivery_id,
    demo_partner,
    list_partners,
    partner_recipient,
    partner_wants,
    remove_partner,
)
from ops.simulators import webhook as sim
from ops.simulators.base import RECORDER
from tests.conftest import sample_message

WATER_SECRET = "water-dept-secret-0123456789"
TRANSPORT_SECRET = "transport-dept-secret-9876543210"
OPTIONS = ("webhook.attempts=3", "webhook.backoff_initial=0.01", "webhook.backoff_max=0.05", "webhook.timeout=2",
           "webhook.cap_base_url=https://alerts.sz.example")


@pytest.fixture
async def context(settings, redis_client):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            yield ChannelContext(settings.with_overrides(channel_options=OPTIONS), http, client)
        finally:
            await client.aclose()


async def start(aiohttp_server, secret: str):  # type: ignore[no-untyped-def]
    server = await aiohttp_server(sim.create_app(secret=secret))
    return server, server.app[RECORDER]


async def register(context: ChannelContext, pid: str, url: str, secret: str, **filters) -> Recipient:  # type: ignore[no-untyped-def]
    partner = Partner(id=pid, url=url, secret=secret, **filters)
    await add_partner(context.redis, partner)
    return partner_recipient(partner)


async def test_delivers_signed_payload_to_each_partner(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    water_server, water = await start(aiohttp_server, WATER_SECRET)
    transport_server, transport = await start(aiohttp_server, TRANSPORT_SECRET)
    batch = [await register(context, "water", str(water_server.make_url("/webhook")), WATER_SECRET),
             await register(context, "transport", str(transport_server.make_url("/webhook")), TRANSPORT_SECRET,
                            hazards=("rainstorm", "typhoon"), min_level="orange", adcodes=("440300",))]
    message = sample_message("webhook")
    before = int(time.time())

    results = await WebhookAdapter(context).send(message, batch)

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.ACCEPTED]
    assert [r.recipient_id for r in results] == ["water", "transport"]
    assert results[0].provider_ref == delivery_id(message.alert_id, "water") != results[1].provider_ref
    for recorder, result in ((water, results[0]), (transport, results[1])):
        [got] = recorder.messages("delivery")  # recorded only after the receiver verified the signature
        assert recorder.messages("refused") == []
        assert got["delivery_id"] == result.provider_ref
        assert before <= got["timestamp"] <= int(time.time())
        assert got["signature"].startswith("sha256=") and len(got["signature"]) == 7 + 64
        doc = got["payload"]
        assert doc["alert_id"] == message.alert_id
        assert doc["identifier"] == "SZMB-TEST-1"
        assert (doc["msg_type"], doc["status"]) == ("Alert", "Actual")
        assert (doc["signal"], doc["hazard"], doc["level"]) == ("rainstorm.red", "rainstorm", "red")
        assert (doc["severity"], doc["urgency"]) == ("Extreme", "Immediate")
        assert "暴雨红色预警" in doc["headline"]["zh-CN"]
        assert "Red Rainstorm Warning" in doc["headline"]["en"]
        assert "福田区" in doc["text"]["zh-CN"] and "Futian" in doc["text"]["en"]
        assert doc["areas"] == [{"desc": {"zh-CN": "福田区", "en": "Futian"}, "geocodes": ["440304"]}]
        assert doc["cap_url"] == f"https://alerts.sz.example/feed/cap/{message.alert_id}.xml"
        assert from_xml(doc["cap_xml"].encode()).identifier == "SZMB-TEST-1"
        assert datetime.fromisoformat(doc["expires"]) > datetime.fromisoformat(doc["sent"])


async def test_demo_partner_is_accepted_by_the_default_simulator(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server = await aiohttp_server(sim.create_app())
    demo = dataclasses.replace(demo_partner(context.settings), url=str(server.make_url("/webhook")))
    await add_partner(context.redis, demo)

    [result] = await WebhookAdapter(context).send(sample_message("webhook"), [partner_recipient(demo)])

    assert result.status is DeliveryStatus.ACCEPTED
    assert len(server.app[RECORDER].messages("delivery")) == 1
    assert demo_partner(context.settings).url.endswith(":9113/webhook")


async def test_wrong_secret_is_refused_by_the_receiver(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "water", str(server.make_url("/webhook")), "not-the-water-secret-at-all")]

    [result] = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert result.status is DeliveryStatus.PERMANENT and "HTTP 401" in (result.error or "")
    assert recorder.messages("delivery") == []
    assert [m["reason"] for m in recorder.messages("refused")] == ["bad signature"]


async def test_filters_decide_who_gets_the_alert(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    url = str(server.make_url("/webhook"))
    batch = [await register(context, "typhoon-desk", url, WATER_SECRET, hazards=("typhoon",)),
             await register(context, "nanshan-power", url, WATER_SECRET, adcodes=("440305",)),
             await register(context, "blue-only", url, WATER_SECRET, levels=("blue",)),
             await register(context, "city-water", url, WATER_SECRET, adcodes=("440300",), min_level="red")]
    message = sample_message("webhook")  # rainstorm red over Futian 440304

    results = await WebhookAdapter(context).send(message, batch)

    assert [r.status for r in results] == [DeliveryStatus.SUPPRESSED] * 3 + [DeliveryStatus.ACCEPTED]
    assert results[0].error == "filtered: not subscribed to hazard rainstorm"
    assert results[1].error == "filtered: the alert's areas are outside the partner's units"
    assert results[2].error == "filtered: not subscribed to level red"
    assert [m["delivery_id"] for m in recorder.messages("delivery")] == [delivery_id(message.alert_id, "city-water")]
    orange = sample_message("webhook", level="orange")
    city_red = Partner(id="x", url=url, secret=WATER_SECRET, min_level="red", adcodes=("440300",))
    assert not partner_wants(city_red, orange)
    assert partner_wants(Partner(id="y", url=url, secret=WATER_SECRET, adcodes=("44",)), orange)
    assert partner_wants(Partner(id="z", url=url, secret=WATER_SECRET, adcodes=("440304001",)), orange)


async def test_receiver_refuses_replays_and_stale_timestamps(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    body = json.dumps({"alert_id": "a1"}).encode()

    def headers(stamp: int, delivery: str) -> dict[str, str]:
        mac = hmac.new(WATER_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Content-Type": "application/json", "X-Broadcast-Timestamp": str(stamp),
                "X-Broadcast-Signature": f"sha256={mac}", "X-Broadcast-Delivery": delivery}

    now = int(time.time())
    async with aiohttp.ClientSession() as http:
        url = server.make_url("/webhook")
        statuses = []
        for hdrs in (headers(now, "d-1"), headers(now, "d-1"), headers(now - 301, "d-2"),
                     {**headers(now, "d-3"), "X-Broadcast-Signature": "sha256=" + "0" * 64}):
            async with http.post(url, data=body, headers=hdrs) as response:
                statuses.append(response.status)

    assert statuses == [200, 409, 401, 401]
    assert [m["delivery_id"] for m in recorder.messages("delivery")] == ["d-1"]
    assert [m["reason"] for m in recorder.messages("refused")] == [
        "delivery already received", "timestamp outside the replay window", "bad signature"]


async def test_resending_is_deduplicated_by_the_partner(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)]
    adapter = WebhookAdapter(context)
    message = sample_message("webhook")

    first = await adapter.send(message, batch)
    again = await adapter.send(message, batch)  # e.g. the pipeline retrying after a lost answer

    assert [r.status for r in first + again] == [DeliveryStatus.ACCEPTED] * 2
    assert len(recorder.messages("delivery")) == 1
    assert [m["status"] for m in recorder.messages("refused")] == [409]


async def test_retries_server_errors_with_backoff(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)]
    async with context.http.put(server.make_url("/_sim/fail_next"), json={"count": 2, "status": 503}) as r:
        assert r.status == 200

    [result] = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert result.status is DeliveryStatus.ACCEPTED
    refused, delivered = recorder.messages("refused"), recorder.messages("delivery")
    assert [m["status"] for m in refused] == [503, 503] and len(delivered) == 1
    assert {m["delivery_id"] for m in refused + delivered} == {result.provider_ref}


async def test_persistent_server_errors_are_transient_after_bounded_attempts(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)]
    async with context.http.put(server.make_url("/_sim/fail_next"), json={"count": 10, "status": 502}):
        pass

    [result] = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert result.status is DeliveryStatus.TRANSIENT and (result.error or "").startswith("HTTP 502")
    assert len(recorder.messages("refused")) == 3  # webhook.attempts


async def test_client_error_is_permanent_without_retry(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)]
    async with context.http.put(server.make_url("/_sim/fail_next"), json={"count": 1, "status": 400}):
        pass

    [result] = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert result.status is DeliveryStatus.PERMANENT and (result.error or "").startswith("HTTP 400")
    assert len(recorder.messages("refused")) == 1 and recorder.messages("delivery") == []


async def test_throttling_honours_retry_after(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)]
    recorder.faults.throttle_rate = 1.0

    [result] = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert result.status is DeliveryStatus.THROTTLED and result.retry_after == 1.0


async def test_bad_url_and_unknown_partner_are_permanent(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    good = await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)
    batch = [Recipient(id="water", address="ftp://example.org/hook"), Recipient(id="ghost", address="http://x.example/"),
             good]

    results = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.PERMANENT,
                                           DeliveryStatus.ACCEPTED]
    assert "not an http(s) URL" in (results[0].error or "")
    assert "no webhook partner 'ghost'" in (results[1].error or "")
    assert len(recorder.messages("delivery")) == 1
    with pytest.raises(InvalidInput) as err:
        Partner(id="bad", url="http://", secret=WATER_SECRET)
    assert err.value.field == "url"


async def test_partner_down_is_transient_for_that_partner_only(context, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    server, recorder = await start(aiohttp_server, WATER_SECRET)
    batch = [await register(context, "dead", f"http://127.0.0.1:{free_port()}/webhook", WATER_SECRET),
             await register(context, "water", str(server.make_url("/webhook")), WATER_SECRET)]

    results = await WebhookAdapter(context).send(sample_message("webhook"), batch)

    assert [r.status for r in results] == [DeliveryStatus.TRANSIENT, DeliveryStatus.ACCEPTED]
    assert "Connect" in (results[0].error or "")
    assert len(recorder.messages("delivery")) == 1


async def test_partner_registry_unreachable_fails_the_batch(settings) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        dead = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        adapter = WebhookAdapter(ChannelContext(settings.with_overrides(channel_options=OPTIONS), http, dead))
        with pytest.raises(TransientDeliveryError):
            await adapter.send(sample_message("webhook"), [Recipient(id="water", address="http://x.example/")])
        await dead.aclose()


async def test_partner_registry_round_trip(context) -> None:  # type: ignore[no-untyped-def]
    partner = Partner(id="power", url="https://power.example/hooks", secret="power-secret-0123456789",
                      name="供电局", hazards=("typhoon",), levels=("orange", "red"), adcodes=("440300",))
    await add_partner(context.redis, partner)

    assert await list_partners(context.redis) == [partner]
    assert partner.redacted()["secret"] == "***"
    assert await remove_partner(context.redis, "power") is True
    assert await remove_partner(context.redis, "power") is False
    assert await list_partners(context.redis) == []
