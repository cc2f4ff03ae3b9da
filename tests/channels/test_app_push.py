"""The app_push channel against the FCM simulator: payload, topics, the OAuth token, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import TestServer

from broadcast import keys
from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.app_push import INVALID_PUSH_TOKENS, AppPushAdapter
from channels.base import ChannelContext, DeliveryStatus, Recipient
from ops.simulators.base import Recorder
from ops.simulators.fcm import DEVICE_TOKENS, PROJECT, UNREGISTERED_TOKENS, create_app
from tests.conftest import sample_message

DEVICE_ZH, DEVICE_EN, DEVICE_3 = sorted(DEVICE_TOKENS)[:3]
UNINSTALLED = sorted(UNREGISTERED_TOKENS)[0]
NEVER_ISSUED = "dSZMB9999:APA91bHnotarealtoken000000000000000"
Factory = Callable[..., AppPushAdapter]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("fcm")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder, device_tokens=DEVICE_TOKENS))


@pytest.fixture
async def make_adapter(settings: Settings, redis_url: str, redis_client: redis.Redis,
                       server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        client = redis.asyncio.Redis.from_url(redis_url)

        def make(*options: str, url: str | None = None) -> AppPushAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"app_push.url={base}", *options))
            return AppPushAdapter(ChannelContext(configured, http, client))

        try:
            yield make
        finally:
            await client.aclose()


def recipients() -> list[Recipient]:
    return [Recipient("d-zh", DEVICE_ZH, "zh-CN"), Recipient("d-en", DEVICE_EN, "en"),
            Recipient("t-futian", "/topics/district-440304", "zh-CN"),
            Recipient("t-futian-en", "district-440304-en", "en", {"kind": "topic"})]


async def set_faults(server, **faults: object) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http, http.put(server.make_url("/_sim/faults"), json=faults) as response:
        assert response.status == 200


async def expire_tokens(server) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/_sim/tokens/expire")) as response:
        assert response.status == 200


async def test_devices_and_topics_receive_notification_and_data(make_adapter: Factory, recorder: Recorder,
                                                                redis_client: redis.Redis) -> None:
    message = sample_message("app_push")
    results = await make_adapter().send(message, recipients())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 4
    arrived = {m["target"]: m for m in recorder.messages("message")}
    assert sorted(r.provider_ref for r in results) == sorted(m["name"] for m in arrived.values())  # type: ignore[type-var]
    assert all(r.provider_ref and r.provider_ref.startswith(f"projects/{PROJECT}/messages/") for r in results)
    zh, en = arrived[DEVICE_ZH], arrived[DEVICE_EN]
    assert zh["target_kind"] == "token"
    assert zh["notification"] == {"title": "暴雨红色预警信号", "body": message.texts["zh-CN"].body}
    assert zh["notification"]["body"].startswith("深圳市气象台发布福田区暴雨红色预警信号")
    assert en["notification"]["title"] == "Red Rainstorm Warning"
    assert en["notification"]["body"].startswith("Shenzhen Meteorological Observatory issues")
    assert zh["data"]["alert_id"] == "20260701-080000-abcdef"
    assert zh["data"]["identifier"] == "SZMB-TEST-1"
    assert zh["data"]["severity"] == "Extreme"
    assert zh["data"]["signal"] == "rainstorm.red"
    assert zh["data"]["msg_type"] == "Alert"
    assert en["data"]["language"] == "en"
    assert all(isinstance(v, str) for v in zh["data"].values())
    assert zh["android"]["priority"] == "high"
    ttl = int(zh["android"]["ttl"].removesuffix("s"))
    assert 6 * 3600 - 120 < ttl <= 6 * 3600  # until the alert expires
    assert zh["apns"]["headers"]["apns-priority"] == "10"
    topic = arrived["district-440304"]
    assert topic["target_kind"] == "topic"
    assert topic["notification"]["title"] == "暴雨红色预警信号"
    assert arrived["district-440304-en"]["target_kind"] == "topic"
    assert arrived["district-440304-en"]["notification"]["title"] == "Red Rainstorm Warning"
    # One OAuth token for the batch, cached for less than its 3599 s lifetime.
    assert len(recorder.messages("token")) == 1
    assert 2000 < redis_client.ttl(keys.provider_token("app_push")) < 3599


async def test_token_is_fetched_once_across_batches_and_workers(make_adapter: Factory,
                                                                 recorder: Recorder) -> None:
    message = sample_message("app_push")
    await asyncio.gather(make_adapter().send(message, recipients()[:2]),
                         make_adapter().send(message, [Recipient("d-3", DEVICE_3)]))
    later = await make_adapter().send(message, recipients()[2:])
    assert [r.status for r in later] == [DeliveryStatus.ACCEPTED] * 2
    assert len(recorder.messages("token")) == 1
    assert len(recorder.messages("message")) == 5


async def test_401_evicts_the_access_token_and_retries_once(make_adapter: Factory, recorder: Recorder, server,
                                                            redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    await adapter.send(sample_message("app_push"), recipients()[:1])
    old = redis_client.get(keys.provider_token("app_push"))
    await expire_tokens(server)

    results = await adapter.send(sample_message("app_push"), recipients())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 4
    assert len(recorder.messages("token")) == 2
    assert redis_client.get(keys.provider_token("app_push")) not in (None, old)


async def test_a_token_that_keeps_failing_stops_the_batch(make_adapter: Factory, recorder: Recorder,
                                                          redis_client: redis.Redis) -> None:
    # The token endpoint belongs to another project's tenant: its tokens never work here.
    other_recorder = Recorder("other-fcm")
    other = create_app(other_recorder, client_id="other", client_secret="other")
    async with TestServer(other) as foreign:
        adapter = make_adapter(f"app_push.token_url={foreign.make_url('/token')}",
                               "app_push.client_id=other", "app_push.client_secret=other")
        with pytest.raises(TransientDeliveryError, match="401"):
            await adapter.send(sample_message("app_push"), recipients()[:1])
    assert recorder.messages("message") == []
    assert len(other_recorder.messages("token")) == 2  # evicted after the first 401, fetched once more


async def test_bad_device_tokens_are_permanent_and_recorded_for_removal(make_adapter: Factory, recorder: Recorder,
                                                                        redis_client: redis.Redis) -> None:
    batch = [Recipient("gone", UNINSTALLED), Recipient("bogus", NEVER_ISSUED), Recipient("garbage", "x y"),
             Recipient("bad-topic", "/topics/bad topic!"), Recipient("ok", DEVICE_ZH)]
    results = await make_adapter().send(sample_message("app_push"), batch)

    assert [r.status for r in results] == [DeliveryStatus.PERMANENT] * 4 + [DeliveryStatus.ACCEPTED]
    assert results[0].error is not None and "404 UNREGISTERED" in results[0].error
    assert results[1].error is not None and "400 INVALID_ARGUMENT" in results[1].error
    assert results[2].error == "not an FCM registration token"
    assert results[3].error is not None and "topic" in results[3].error
    assert redis_client.smembers(INVALID_PUSH_TOKENS) == {UNINSTALLED.encode(), NEVER_ISSUED.encode()}
    assert [m["target"] for m in recorder.messages("message")] == [DEVICE_ZH]


async def test_quota_exceeded_is_throttled_with_retry_after(make_adapter: Factory, server) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    await adapter.send(sample_message("app_push"), recipients()[:1])  # token cached
    await set_faults(server, throttle_rate=1.0)
    results = await adapter.send(sample_message("app_push"), recipients()[:2])
    assert [r.status for r in results] == [DeliveryStatus.THROTTLED] * 2
    assert results[0].retry_after == 7.0
    assert results[0].error is not None and "QUOTA_EXCEEDED" in results[0].error


async def test_unavailable_is_transient(make_adapter: Factory, server, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    await adapter.send(sample_message("app_push"), recipients()[:1])
    await set_faults(server, error_rate=1.0, error_status=503)
    results = await adapter.send(sample_message("app_push"), recipients()[:2])
    assert [r.status for r in results] == [DeliveryStatus.TRANSIENT] * 2
    assert results[0].error is not None and results[0].error.startswith("FCM 503")
    assert redis_client.smembers(INVALID_PUSH_TOKENS) == set()


async def test_wrong_project_stops_the_batch(make_adapter: Factory) -> None:
    with pytest.raises(TransientDeliveryError, match="PERMISSION_DENIED"):
        await make_adapter("app_push.project=someone-else").send(sample_message("app_push"), recipients()[:1])


async def test_bad_credentials_stop_the_batch(make_adapter: Factory, recorder: Recorder) -> None:
    with pytest.raises(TransientDeliveryError, match="invalid_client"):
        await make_adapter("app_push.client_secret=wrong").send(sample_message("app_push"), recipients())
    assert recorder.messages() == []


async def test_nothing_listening_stops_the_batch(make_adapter: Factory) -> None:
    adapter = make_adapter(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter.send(sample_message("app_push"), recipients())


async def test_the_demo_simulator_knows_registry_tokens(aiohttp_server, make_adapter: Factory) -> None:  # type: ignore[no-untyped-def]
    demo_recorder = Recorder("fcm")
    demo = await aiohttp_server(create_app(demo_recorder))  # as `broadcast sim` starts it
    adapter = make_adapter(url=str(demo.make_url("")).rstrip("/"))
    results = await adapter.send(sample_message("app_push"), [Recipient("a", "0123456789abcdef0123456789abcdef"),
                                                              Recipient("b", "0123456789abcdef0123456789abcdeZ")])
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.PERMANENT]
    assert [m["target"] for m in demo_recorder.messages("message")] == ["0123456789abcdef0123456789abcdef"]
