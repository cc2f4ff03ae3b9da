"""The wechat channel against the WeChat simulator: template fields, the shared token, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import redis
import redis.asyncio

from broadcast import keys
from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.wechat import WeChatAdapter
from ops.simulators.base import Recorder
from ops.simulators.wechat import APPID, KNOWN_OPENIDS, TEMPLATE_ID, create_app
from tests.conftest import sample_message

ZH, EN, THIRD = sorted(KNOWN_OPENIDS)[:3]
Factory = Callable[..., WeChatAdapter]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("wechat")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder, openids=KNOWN_OPENIDS))


@pytest.fixture
async def make_adapter(settings: Settings, redis_url: str, redis_client: redis.Redis,
                       server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    """Adapters pointed at the simulator (or at ``url``), sharing one session and one Redis."""
    async with aiohttp.ClientSession() as http:
        client = redis.asyncio.Redis.from_url(redis_url)

        def make(*options: str, url: str | None = None) -> WeChatAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"wechat.url={base}", *options))
            return WeChatAdapter(ChannelContext(configured, http, client))

        try:
            yield make
        finally:
            await client.aclose()


def recipients() -> list[Recipient]:
    return [Recipient("r-zh", ZH, "zh-CN"), Recipient("r-en", EN, "en")]


async def test_template_messages_arrive_with_fields_in_each_language(make_adapter: Factory, recorder: Recorder,
                                                                     redis_client: redis.Redis) -> None:
    message = sample_message("wechat")
    results = await make_adapter().send(message, recipients())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.ACCEPTED]
    sent = recorder.messages("template")
    assert [r.provider_ref for r in results] == [str(m["msgid"]) for m in sent]
    by_user = {m["touser"]: m for m in sent}
    zh, en = by_user[ZH], by_user[EN]
    assert zh["template_id"] == en["template_id"] == TEMPLATE_ID
    assert zh["url"] == "https://weather.sz.example/warnings"
    assert zh["client_msg_id"] == "20260701-080000-abcdef:r-zh"
    assert list(zh["data"]) == ["first", "keyword1", "keyword2", "keyword3", "keyword4", "remark"]
    assert zh["data"]["first"] == "深圳市气象台发布福田区暴雨红色预警信号，请立即到安全场所避险"
    assert zh["data"]["keyword1"] == "暴雨红色预警信号"
    assert zh["data"]["keyword2"] == "福田区"
    assert zh["data"]["keyword3"] == message.texts["zh-CN"].parts["keyword3"]
    assert zh["data"]["remark"].endswith("咨询电话12121。")
    assert zh["colors"]["first"] == message.colour == "#E60012"
    assert en["data"]["keyword1"] == "Red Rainstorm Warning"
    assert en["data"]["keyword2"] == "Futian"
    assert en["data"]["first"].startswith("Shenzhen Meteorological Observatory issues the Red Rainstorm Warning")
    # One token for the batch, cached in Redis for less than its 7200 s lifetime.
    assert len(recorder.messages("token")) == 1
    assert recorder.messages("token")[0]["appid"] == APPID
    assert redis_client.get(keys.provider_token("wechat"))
    assert 6000 < redis_client.ttl(keys.provider_token("wechat")) < 7200


async def test_token_is_fetched_once_across_batches_and_senders(make_adapter: Factory,
                                                                 recorder: Recorder) -> None:
    message = sample_message("wechat")
    first, second = make_adapter(), make_adapter()  # two workers sharing Redis
    batches = await asyncio.gather(first.send(message, recipients()),
                                   second.send(message, [Recipient("r-3", THIRD)]))
    assert all(r.status is DeliveryStatus.ACCEPTED for batch in batches for r in batch)
    again = await make_adapter().send(message, [Recipient("r-3b", THIRD)])
    assert again[0].status is DeliveryStatus.ACCEPTED
    assert len(recorder.messages("token")) == 1
    assert len(recorder.messages("template")) == 4


async def test_expired_token_is_evicted_and_fetched_again(make_adapter: Factory, recorder: Recorder, server,
                                                          redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    message = sample_message("wechat")
    first = await adapter.send(message, recipients()[:1])
    old = redis_client.get(keys.provider_token("wechat"))
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/_sim/tokens/expire")) as response:
        assert response.status == 200

    results = await adapter.send(message, recipients())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.ACCEPTED]
    assert len(recorder.messages("token")) == 2  # both openids hit 42001; one refetch
    assert redis_client.get(keys.provider_token("wechat")) not in (None, old)
    # The repeat to the first openid carries the same client_msg_id: WeChat keeps one message.
    assert len(recorder.messages("template")) == 2
    assert results[0].provider_ref == first[0].provider_ref


async def test_a_token_the_provider_does_not_know_is_replaced(make_adapter: Factory, recorder: Recorder,
                                                              redis_client: redis.Redis) -> None:
    redis_client.set(keys.provider_token("wechat"), "stale-token-from-another-deployment", ex=600)
    results = await make_adapter().send(sample_message("wechat"), recipients()[:1])
    assert results[0].status is DeliveryStatus.ACCEPTED
    assert len(recorder.messages("token")) == 1
    assert redis_client.get(keys.provider_token("wechat")) != b"stale-token-from-another-deployment"


async def test_bad_openids_are_permanent_and_the_rest_is_sent(make_adapter: Factory, recorder: Recorder) -> None:
    batch = [Recipient("unknown", "oSZMBunknownfollower00000000"),
             Recipient("gone", "oSZMB0000000000000000000099"),
             Recipient("malformed", "not an openid!"),
             Recipient("ok", ZH)]
    results = await make_adapter().send(sample_message("wechat"), batch)

    assert [r.recipient_id for r in results] == ["unknown", "gone", "malformed", "ok"]
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT] * 3 + [DeliveryStatus.ACCEPTED]
    assert results[0].error is not None and "40003" in results[0].error
    assert results[1].error is not None and "43004" in results[1].error
    assert results[2].error is not None and "openid" in results[2].error
    assert [m["touser"] for m in recorder.messages("template")] == [ZH]


async def set_faults(server, **faults: object) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http, http.put(server.make_url("/_sim/faults"), json=faults) as response:
        assert response.status == 200


async def test_quota_errcode_is_throttled(make_adapter: Factory, server) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    await adapter.send(sample_message("wechat"), recipients()[:1])  # token cached
    await set_faults(server, throttle_rate=1.0)
    results = await adapter.send(sample_message("wechat"), recipients())
    assert [r.status for r in results] == [DeliveryStatus.THROTTLED] * 2
    assert results[0].retry_after and results[0].retry_after > 0
    assert results[0].error is not None and "45009" in results[0].error


async def test_system_busy_and_http_errors_are_transient(make_adapter: Factory, server,
                                                         recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    await adapter.send(sample_message("wechat"), recipients()[:1])
    await set_faults(server, error_rate=1.0)
    busy = await adapter.send(sample_message("wechat"), recipients())
    assert [r.status for r in busy] == [DeliveryStatus.TRANSIENT] * 2
    assert busy[0].error is not None and "busy" in busy[0].error
    await set_faults(server, error_rate=0.0, down=True)
    down = await adapter.send(sample_message("wechat"), recipients())
    assert [r.status for r in down] == [DeliveryStatus.TRANSIENT] * 2
    assert down[0].error is not None and "503" in down[0].error
    assert len(recorder.messages("template")) == 1


@pytest.mark.parametrize("option", ["wechat.secret=wrong-secret", "wechat.appid=wx0000000000000000"])
async def test_bad_credentials_stop_the_batch(make_adapter: Factory, recorder: Recorder, option: str) -> None:
    with pytest.raises(TransientDeliveryError, match=r"40125|40013"):
        await make_adapter(option).send(sample_message("wechat"), recipients())
    assert recorder.messages() == []


async def test_unknown_template_stops_the_batch(make_adapter: Factory) -> None:
    with pytest.raises(TransientDeliveryError, match="40037"):
        await make_adapter("wechat.template_id=nope").send(sample_message("wechat"), recipients())


async def test_nothing_listening_stops_the_batch(make_adapter: Factory) -> None:
    adapter = make_adapter(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter.send(sample_message("wechat"), recipients())


async def test_the_demo_simulator_follows_registry_openids(aiohttp_server, settings: Settings,  # type: ignore[no-untyped-def]
                                                           redis_client: redis.Redis) -> None:
    demo_recorder = Recorder("wechat")
    demo = await aiohttp_server(create_app(demo_recorder))  # as `broadcast sim` starts it
    configured = settings.with_overrides(channel_options=(f"wechat.url={str(demo.make_url('')).rstrip('/')}",))
    async with aiohttp.ClientSession() as http:
        adapter = WeChatAdapter(ChannelContext(configured, http, None))  # no Redis: token kept in memory
        results = await adapter.send(sample_message("wechat"), [Recipient("g", "oAbCdEfGhIjKlMnOpQrStUvWx-_1"),
                                                                Recipient("x", "oTooShort000000000000")])
        await adapter.send(sample_message("wechat"), [Recipient("g2", "oAbCdEfGhIjKlMnOpQrStUvWx-_2")])
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.PERMANENT]
    assert len(demo_recorder.messages("token")) == 1
    assert redis_client.get(keys.provider_token("wechat")) is None
