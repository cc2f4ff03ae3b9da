"""The weibo channel against the Weibo simulator: the post's text and link, the token, error mapping."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import redis
import redis.asyncio

from broadcast import keys
from broadcast.errors import TransientDeliveryError
from broadcast.model import MsgType
from broadcast.redis_server import free_port
from broadcast.render import build_message
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Message, Recipient, RenderedText
from channels.weibo import WeiboAdapter, compose_status, weibo_length
from ops.simulators.base import Recorder
from ops.simulators.weibo import UID, create_app
from tests.conftest import sample_alert, sample_message

LINK = "https://weather.sz.example/warnings?id=SZMB-TEST-1"
STATIC_TOKEN = "2.00handconfiguredtoken0000000000"
Factory = Callable[..., WeiboAdapter]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("weibo")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder, static_tokens=[STATIC_TOKEN]))


@pytest.fixture
async def make_adapter(settings: Settings, redis_url: str, redis_client: redis.Redis,
                       server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        client = redis.asyncio.Redis.from_url(redis_url)

        def make(*options: str, url: str | None = None) -> WeiboAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"weibo.url={base}", *options))
            return WeiboAdapter(ChannelContext(configured, http, client))

        try:
            yield make
        finally:
            await client.aclose()


def bureau(language: str = "zh-CN") -> list[Recipient]:
    return [Recipient(f"bureau-{language}", UID, language)]


def follow_up(kind: str) -> Message:
    """An Update or Cancel of sample_alert(), rendered for weibo."""
    alert, signal = sample_alert()
    changed = dataclasses.replace(alert, identifier=f"SZMB-TEST-{kind}", msg_type=MsgType(kind),
                                  references=(alert.reference,))
    return build_message("weibo", f"20260701-090000-{kind.lower()}", changed, signal=signal,
                         timezone="Asia/Shanghai", cap_xml=b"")


async def test_one_post_per_alert_in_chinese_with_the_safe_link(make_adapter: Factory, recorder: Recorder,
                                                                redis_client: redis.Redis) -> None:
    message = sample_message("weibo")
    results = await make_adapter().send(message, bureau())

    assert results[0].status is DeliveryStatus.ACCEPTED
    [post] = recorder.messages("post")
    assert results[0].provider_ref == post["id"]
    assert post["uid"] == UID
    assert post["text"] == f"{message.texts['zh-CN'].body}{LINK}"
    assert post["text"].startswith("【暴雨红色预警信号】深圳市气象台发布福田区暴雨红色预警信号，请立即到安全场所避险。")
    assert post["length"] <= 140
    assert len(recorder.messages("token")) == 1
    assert redis_client.get(keys.provider_token("weibo"))
    assert redis_client.ttl(keys.provider_token("weibo")) > 0


async def test_english_post_and_the_token_is_reused(make_adapter: Factory, recorder: Recorder) -> None:
    message = sample_message("weibo")
    await make_adapter().send(message, bureau("zh-CN"))
    results = await make_adapter().send(message, bureau("en"))  # another worker, same Redis

    assert results[0].status is DeliveryStatus.ACCEPTED
    english = recorder.messages("post")[1]["text"]
    assert english.startswith("[Red Rainstorm Warning] Shenzhen Meteorological Observatory issues")
    assert english.endswith(f"Details: {LINK}")
    assert len(recorder.messages("token")) == 1


async def test_update_and_cancel_posts_say_so(make_adapter: Factory, recorder: Recorder) -> None:
    adapter = make_adapter()
    update = await adapter.send(follow_up("Update"), bureau())
    cancel = await adapter.send(follow_up("Cancel"), bureau())
    cancel_en = await adapter.send(follow_up("Cancel"), bureau("en"))

    assert [r[0].status for r in (update, cancel, cancel_en)] == [DeliveryStatus.ACCEPTED] * 3
    texts = [p["text"] for p in recorder.messages("post")]
    assert texts[0].startswith("【更新】") and "更新此前发布的预警" in texts[0]
    assert texts[1].startswith("【解除】深圳市气象台解除福田区暴雨红色预警信号。")
    assert texts[2].startswith("[Cancelled] The Red Rainstorm Warning for Futian is cancelled.")
    assert all(t.endswith("?id=SZMB-TEST-Update") or t.endswith("?id=SZMB-TEST-Cancel") for t in texts)


async def test_the_same_post_twice_is_permanent(make_adapter: Factory, recorder: Recorder) -> None:
    adapter = make_adapter()
    await adapter.send(sample_message("weibo"), bureau())
    again = await adapter.send(sample_message("weibo"), bureau())
    assert again[0].status is DeliveryStatus.PERMANENT
    assert again[0].error is not None and "20019" in again[0].error
    assert len(recorder.messages("post")) == 1


async def test_a_long_body_is_cut_to_140_and_keeps_its_link(make_adapter: Factory, recorder: Recorder) -> None:
    alert, _ = sample_alert()
    long_text = "暴雨红色预警：" + "请立即到安全场所避险，" * 30
    message = Message("20260701-080000-long", alert, {"zh-CN": RenderedText("zh-CN", long_text)}, b"")
    results = await make_adapter().send(message, bureau())

    assert results[0].status is DeliveryStatus.ACCEPTED
    [post] = recorder.messages("post")
    assert post["length"] == 140
    assert post["text"].startswith("暴雨红色预警：请立即到安全场所避险")
    assert post["text"].endswith(f"… {LINK}")


def test_weibo_counting_and_cutting() -> None:
    assert weibo_length("暴雨") == 2
    assert weibo_length("abc") == 2  # half each, rounded up
    assert compose_status("Details:", "https://x.example/a") == "Details: https://x.example/a"
    cut = compose_status("雨" * 200, "https://x.example/a", limit=20)
    assert cut == "雨" * 9 + "… https://x.example/a" and weibo_length(cut) == 20


async def test_only_the_bureau_account_is_a_recipient(make_adapter: Factory, recorder: Recorder) -> None:
    results = await make_adapter().send(sample_message("weibo"), [Recipient("someone", "1234567890")])
    assert results[0].status is DeliveryStatus.PERMANENT
    assert results[0].error is not None and UID in results[0].error
    assert recorder.messages("post") == []


async def test_expired_token_is_evicted_and_fetched_again(make_adapter: Factory, recorder: Recorder, server,
                                                          redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter()
    await adapter.send(sample_message("weibo"), bureau())
    old = redis_client.get(keys.provider_token("weibo"))
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/_sim/tokens/expire")) as response:
        assert response.status == 200

    results = await adapter.send(follow_up("Update"), bureau())

    assert results[0].status is DeliveryStatus.ACCEPTED
    assert len(recorder.messages("token")) == 2
    assert redis_client.get(keys.provider_token("weibo")) not in (None, old)


async def test_a_configured_token_is_used_and_its_expiry_stops_the_channel(make_adapter: Factory,
                                                                           recorder: Recorder, server) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter(f"weibo.access_token={STATIC_TOKEN}")
    ok = await adapter.send(sample_message("weibo"), bureau())
    assert ok[0].status is DeliveryStatus.ACCEPTED
    assert recorder.messages("token") == []
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/_sim/tokens/expire")) as response:
        assert response.status == 200
    with pytest.raises(TransientDeliveryError, match="21327"):
        await adapter.send(follow_up("Update"), bureau())


async def set_faults(server, **faults: object) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http, http.put(server.make_url("/_sim/faults"), json=faults) as response:
        assert response.status == 200


async def test_rate_limit_is_throttled(make_adapter: Factory, server) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter(f"weibo.access_token={STATIC_TOKEN}")
    await set_faults(server, throttle_rate=1.0)
    results = await adapter.send(sample_message("weibo"), bureau())
    assert results[0].status is DeliveryStatus.THROTTLED
    assert results[0].error is not None and "10023" in results[0].error
    assert results[0].retry_after and results[0].retry_after > 0


async def test_server_errors_are_transient(make_adapter: Factory, server, recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter(f"weibo.access_token={STATIC_TOKEN}")
    await set_faults(server, error_rate=1.0, error_status=502)
    results = await adapter.send(sample_message("weibo"), bureau())
    assert results[0].status is DeliveryStatus.TRANSIENT
    assert results[0].error == "HTTP 502"
    assert recorder.messages("post") == []


async def test_bad_credentials_stop_the_channel(make_adapter: Factory, recorder: Recorder) -> None:
    with pytest.raises(TransientDeliveryError, match="21324"):
        await make_adapter("weibo.client_secret=wrong").send(sample_message("weibo"), bureau())
    with pytest.raises(TransientDeliveryError, match="21325"):
        await make_adapter("weibo.password=wrong").send(sample_message("weibo"), bureau())
    assert recorder.messages() == []


async def test_nothing_listening_stops_the_channel(make_adapter: Factory) -> None:
    adapter = make_adapter(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter.send(sample_message("weibo"), bureau())


async def test_the_recipients_module_alias_is_the_bureau_account(make_adapter: Factory, recorder: Recorder) -> None:
    results = await make_adapter().send(sample_message("weibo"), [Recipient("bureau", "bureau")])
    assert results[0].status is DeliveryStatus.ACCEPTED
    assert [p["uid"] for p in recorder.messages("post")] == [UID]
