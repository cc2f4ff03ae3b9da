"""The display_screen channel against the screen-management simulator: layout per screen size, cancel."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from broadcast.errors import TransientDeliveryError
from broadcast.model import MsgType
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Message, Recipient
from channels.display_screen import DisplayScreenAdapter, cells, layout, wrap
from ops.simulators.base import Recorder
from ops.simulators.screens import DEMO_TOKEN, create_app
from tests.conftest import sample_message

Factory = Callable[..., DisplayScreenAdapter]
INVENTORY = {"SC00001": (4, 20), "SC00002": (2, 12), "SC00003": (3, 14)}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("screens")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder, screens=INVENTORY))


@pytest.fixture
async def make_adapter(settings: Settings, server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        def make(*options: str, url: str | None = None) -> DisplayScreenAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"display_screen.url={base}", *options))
            return DisplayScreenAdapter(ChannelContext(configured, http))

        yield make


def screen(screen_id: str, language: str = "zh-CN", size: tuple[int, int] | None = None) -> Recipient:
    lines, chars = size or INVENTORY[screen_id]
    return Recipient(screen_id, screen_id, language, {"lines": str(lines), "chars_per_line": str(chars),
                                                      "community": "440304001001"})


def screens() -> list[Recipient]:
    return [screen("SC00001"), screen("SC00002"), screen("SC00003", "en")]


def cancelled(message: Message) -> Message:
    alert = dataclasses.replace(message.alert, msg_type=MsgType.CANCEL, references=(message.alert.reference,))
    return dataclasses.replace(message, alert=alert)


async def test_screens_show_lines_that_fit_them_in_the_warning_colour(make_adapter: Factory, recorder: Recorder,
                                                                      server) -> None:  # type: ignore[no-untyped-def]
    message = sample_message("display_screen")
    results = await make_adapter().send(message, screens())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 3
    assert all("truncated" in (r.error or "") for r in results)  # the full instructions never fit
    shows = recorder.messages("display")
    assert [s["screens"] for s in shows] == [["SC00001"], ["SC00002"], ["SC00003"]]
    for show in shows:
        lines, chars = INVENTORY[show["screens"][0]]
        assert len(show["lines"]) == lines
        assert all(cells(line) <= 2 * chars for line in show["lines"])
        assert show["lines"][-1].endswith("…")
        assert show["colour"] == "#E60012" and show["blink"] is True
        assert show["until"] == message.alert.expires.isoformat()  # type: ignore[union-attr]
        assert show["rejected"] == []
    zh_big, zh_small, en = (s["lines"] for s in shows)
    assert zh_big[:2] == ["暴雨红色预警信号", "深圳市气象台发布福田区暴雨红色预警信号，"]
    assert zh_small == ["暴雨红色预警信号", "深圳市气象台发布福田区…"]
    assert en[0] == "Red Rainstorm Warning"
    assert en[1] == "Shenzhen Meteorological"  # broken at a space, 11.5 of 14 cells
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/api/v1/screens/SC00002"),
                        headers={"Authorization": f"Bearer {DEMO_TOKEN}"}) as response:
        state = await response.json()
    assert state["showing"]["lines"] == zh_small


def test_wrapping_counts_cjk_as_one_cell_and_latin_as_half() -> None:
    assert wrap("深圳市气象台发布暴雨预警", 5) == ["深圳市气象", "台发布暴雨", "预警"]
    assert wrap("请注意，立即避险。", 3) == ["请注", "意，立", "即避", "险。"]  # no line starts with punctuation
    assert wrap("take shelter now", 4) == ["take", "shelter", "now"]
    fitted = layout("Warning", "short text", 3, 10)
    assert fitted.lines == ("Warning", "short text") and not fitted.truncated


async def test_yellow_warnings_do_not_blink(make_adapter: Factory, recorder: Recorder) -> None:
    await make_adapter().send(sample_message("display_screen", level="yellow"), [screen("SC00001")])
    [show] = recorder.messages("display")
    assert show["blink"] is False and show["colour"] != "#E60012"


async def test_cancel_clears_the_screens(make_adapter: Factory, recorder: Recorder) -> None:
    results = await make_adapter().send(cancelled(sample_message("display_screen")), screens())
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 3
    assert sorted(s for c in recorder.messages("clear") for s in c["screens"]) == sorted(INVENTORY)
    assert recorder.messages("display") == []


async def test_unknown_screen_and_missing_size_are_permanent(make_adapter: Factory, recorder: Recorder) -> None:
    batch = [screen("SC09999", size=(4, 20)), Recipient("SC00002", "SC00002"), screen("SC00001")]
    results = await make_adapter().send(sample_message("display_screen"), batch)
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.PERMANENT,
                                           DeliveryStatus.ACCEPTED]
    assert "unknown_screen" in (results[0].error or "")
    assert "screen size unknown" in (results[1].error or "")
    [show] = recorder.messages("display")
    assert show["screens"] == ["SC00001"] and show["rejected"][0]["screen"] == "SC09999"


async def test_screen_smaller_than_registered_rejects_oversized_content(make_adapter: Factory) -> None:
    # The registry says 6 x 26 but the screen really is 4 x 20: the API refuses, the result is permanent.
    [result] = await make_adapter().send(sample_message("display_screen"), [screen("SC00001", size=(6, 26))])
    assert result.status is DeliveryStatus.PERMANENT and "content_too_large" in (result.error or "")


async def test_bad_token_server_error_and_nothing_listening(make_adapter: Factory, recorder: Recorder) -> None:
    with pytest.raises(TransientDeliveryError, match="token"):
        await make_adapter("display_screen.token=wrong").send(sample_message("display_screen"), screens())
    recorder.faults.update({"error_rate": 1.0, "error_status": 500})
    results = await make_adapter().send(sample_message("display_screen"), screens())
    assert [r.status for r in results] == [DeliveryStatus.TRANSIENT] * 3
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await make_adapter(url=f"http://127.0.0.1:{free_port()}").send(sample_message("display_screen"), screens())
