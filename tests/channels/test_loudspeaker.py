"""The loudspeaker channel against the terminal-system simulator: one play per community, zh-CN then en."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.loudspeaker import LoudspeakerAdapter
from ops.simulators.base import Recorder
from ops.simulators.loudspeakers import create_app
from tests.conftest import sample_message

Factory = Callable[..., LoudspeakerAdapter]
FUTIAN_A, FUTIAN_B = "440304001001", "440304001002"
TERMINALS = {"LS00001": FUTIAN_A, "LS00002": FUTIAN_A, "LS00003": FUTIAN_B, "LS00004": FUTIAN_B}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("loudspeakers")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder, terminals=TERMINALS))


@pytest.fixture
async def make_adapter(settings: Settings, server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        def make(*options: str, url: str | None = None) -> LoudspeakerAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"loudspeaker.url={base}", *options))
            return LoudspeakerAdapter(ChannelContext(configured, http))

        yield make


def terminal(terminal_id: str, community: str | None = None) -> Recipient:
    return Recipient(terminal_id, terminal_id, "zh-CN", {"community": community or TERMINALS[terminal_id]})


def terminals() -> list[Recipient]:
    return [terminal("LS00001"), terminal("LS00003"), terminal("LS00002")]


async def test_one_play_per_community_with_chinese_then_english_speech(make_adapter: Factory,
                                                                       recorder: Recorder) -> None:
    message = sample_message("loudspeaker")
    results = await make_adapter().send(message, terminals())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 3
    assert [r.provider_ref for r in results] == ["P-000001", "P-000002", "P-000001"]
    plays = recorder.messages("play")
    assert [p["community"] for p in plays] == [FUTIAN_A, FUTIAN_B]
    assert plays[0]["terminals"] == ["LS00001", "LS00002"]
    for play in plays:
        assert play["priority"] == "emergency" and play["repeat"] == 2
        assert [s["language"] for s in play["segments"]] == ["zh-CN", "en"]
        for segment in play["segments"]:
            assert segment["text"] == " ".join(message.texts[segment["language"]].body.split())
            assert segment["riff"] == "RIFF" and segment["sample_rate"] == 22050
            assert segment["audio_seconds"] > 15
    assert plays[0]["segments"][0]["text"].startswith("请注意，请注意！深圳市气象台发布福田区暴雨红色预警信号")


async def test_language_order_is_configurable(make_adapter: Factory, recorder: Recorder) -> None:
    await make_adapter("loudspeaker.languages=en").send(sample_message("loudspeaker"), [terminal("LS00001")])
    [play] = recorder.messages("play")
    assert [s["language"] for s in play["segments"]] == ["en"]


async def test_unknown_group_and_foreign_terminal_are_permanent(make_adapter: Factory, recorder: Recorder) -> None:
    batch = [terminal("LS09999", "440304999999"), terminal("LS00009", FUTIAN_A), Recipient("x", "LS1"),
             terminal("LS00001")]
    results = await make_adapter().send(sample_message("loudspeaker"), batch)
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.PERMANENT,
                                           DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED]
    assert "unknown_group" in (results[0].error or "")
    assert "not in community group" in (results[1].error or "")
    assert "community" in (results[2].error or "")
    assert [p["community"] for p in recorder.messages("play")] == [FUTIAN_A]


async def test_bad_token_throttling_and_nothing_listening(make_adapter: Factory, recorder: Recorder) -> None:
    with pytest.raises(TransientDeliveryError, match="token"):
        await make_adapter("loudspeaker.token=wrong").send(sample_message("loudspeaker"), terminals())
    recorder.faults.update({"throttle_rate": 1.0})
    results = await make_adapter().send(sample_message("loudspeaker"), terminals())
    assert [r.status for r in results] == [DeliveryStatus.THROTTLED] * 3
    assert recorder.messages() == []
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await make_adapter(url=f"http://127.0.0.1:{free_port()}").send(sample_message("loudspeaker"), terminals())
