"""The tv channel against the broadcaster intake simulator: CAP with crawl parameters, error mapping."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from broadcast.cap import from_xml
from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Message, Recipient
from channels.tv import TvAdapter, crawl_text
from ops.simulators.base import Recorder
from ops.simulators.tv import create_app
from tests.conftest import sample_message

Factory = Callable[..., TvAdapter]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("tv")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder))


@pytest.fixture
async def make_adapter(settings: Settings, server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        def make(*options: str, url: str | None = None) -> TvAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"tv.url={base}", *options))
            return TvAdapter(ChannelContext(configured, http))

        yield make


def stations() -> list[Recipient]:
    return [Recipient("TV01", "TV01", "zh-CN"), Recipient("TV05", "TV05", "en")]


def expiring_in(message: Message, seconds: int) -> Message:
    now = datetime.now(UTC).replace(microsecond=0)
    infos = tuple(dataclasses.replace(i, effective=now - timedelta(minutes=5), onset=None,
                                      expires=now + timedelta(seconds=seconds)) for i in message.alert.infos)
    return dataclasses.replace(message, alert=dataclasses.replace(message.alert, infos=infos))


async def test_each_station_receives_cap_with_crawl_in_its_language(make_adapter: Factory,
                                                                    recorder: Recorder) -> None:
    message = sample_message("tv")
    results = await make_adapter().send(message, stations())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    assert [r.provider_ref for r in results] == ["TVI-000001", "TVI-000002"]
    received = recorder.messages("cap")
    assert [m["station"] for m in received] == ["TV01", "TV05"]
    for entry, language in zip(received, ["zh-CN", "en"], strict=True):
        assert entry["identifier"] == message.alert.identifier
        assert entry["msg_type"] == "Alert"
        [info] = entry["infos"]
        assert info["language"] == language
        assert info["crawl"] == crawl_text(message.texts[language].body)
        assert "\n" not in info["crawl"]
        # Three passes of a ~290-character crawl take minutes, well inside the 6-hour validity.
        assert 60 < info["crawlSeconds"] < 6 * 3600
    zh, en = (m["infos"][0] for m in received)
    assert zh["crawl"].startswith("【深圳气象】深圳市气象台发布福田区暴雨红色预警信号")
    assert en["crawl"].startswith("[SZ Weather] Shenzhen Meteorological Observatory issues the Red Rainstorm")
    # 4 CJK characters a second against 12 Latin ones: the Chinese crawl runs longer per character.
    assert zh["crawlSeconds"] / len(zh["crawl"]) > en["crawlSeconds"] / len(en["crawl"])


async def test_cap_is_valid_and_keeps_the_alert(make_adapter: Factory) -> None:
    message = sample_message("tv")
    cap, problem = make_adapter().cap_for(message, "en", datetime.now(UTC))
    assert problem is None and cap is not None
    alert = from_xml(cap)
    assert alert.identifier == message.alert.identifier
    [info] = alert.infos
    assert info.language == "en"
    assert info.headline == message.alert.info_for("en").headline  # type: ignore[union-attr]
    names = [p.value_name for p in info.parameters]
    assert names[-2:] == ["crawl", "crawlSeconds"]


async def test_duration_is_capped_by_expiry_and_expired_alerts_are_not_aired(make_adapter: Factory,
                                                                             recorder: Recorder) -> None:
    results = await make_adapter().send(expiring_in(sample_message("tv"), 45), stations()[:1])
    assert results[0].status is DeliveryStatus.ACCEPTED
    assert 40 <= recorder.messages("cap")[0]["infos"][0]["crawlSeconds"] <= 45

    expired = expiring_in(sample_message("tv"), 45)
    infos = tuple(dataclasses.replace(i, effective=i.expires - timedelta(hours=1),
                                      expires=datetime.now(UTC) - timedelta(seconds=5)) for i in expired.alert.infos)
    expired = dataclasses.replace(expired, alert=dataclasses.replace(expired.alert, infos=infos))
    [result] = await make_adapter().send(expired, stations()[:1])
    assert result.status is DeliveryStatus.PERMANENT and "expired" in (result.error or "")
    assert len(recorder.messages("cap")) == 1


async def test_unknown_station_and_bad_address_are_permanent(make_adapter: Factory, recorder: Recorder) -> None:
    batch = [Recipient("TV99", "TV99"), Recipient("bad", "no spaces allowed"), stations()[0]]
    results = await make_adapter().send(sample_message("tv"), batch)
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.PERMANENT,
                                           DeliveryStatus.ACCEPTED]
    assert "unknown_station" in (results[0].error or "")
    assert "not a station id" in (results[1].error or "")
    assert [m["station"] for m in recorder.messages("cap")] == ["TV01"]


async def test_wrong_broadcaster_key_raises_transient(make_adapter: Factory, recorder: Recorder) -> None:
    with pytest.raises(TransientDeliveryError, match="broadcaster key"):
        await make_adapter("tv.key=wrong").send(sample_message("tv"), stations())
    assert recorder.messages() == []


async def test_server_errors_are_transient_and_throttling_throttled(make_adapter: Factory,
                                                                   recorder: Recorder) -> None:
    recorder.faults.update({"error_rate": 1.0, "error_status": 503})
    results = await make_adapter().send(sample_message("tv"), stations())
    assert [r.status for r in results] == [DeliveryStatus.TRANSIENT] * 2
    assert "HTTP 503" in (results[0].error or "")

    recorder.faults.update({"error_rate": 0.0, "throttle_rate": 1.0})
    [result] = await make_adapter().send(sample_message("tv"), stations()[:1])
    assert result.status is DeliveryStatus.THROTTLED and result.retry_after == 1.0


async def test_nothing_listening_raises_transient(make_adapter: Factory) -> None:
    adapter = make_adapter(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter.send(sample_message("tv"), stations())
