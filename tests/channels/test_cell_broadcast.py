"""The cell broadcast adapter against the CBC simulator (osmo-cbc ECBE API)."""

from __future__ import annotations

import dataclasses

import pytest

from broadcast.cap import to_xml
from broadcast.errors import TransientDeliveryError
from broadcast.model import MsgType
from broadcast.render import build_message
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.cell_broadcast import (
    GSM7_PAGE_SEPTETS,
    MAX_PAGES,
    UCS2_PAGE_CHARS,
    CellBroadcastAdapter,
    cbs_length,
    message_code,
    split_pages,
)
from ops.simulators.base import Recorder
from ops.simulators.cbc import create_app, decode_gsm7_page
from tests.conftest import sample_alert, sample_message

CELLS = ["CS00001-1", "CS00001-2", "CS00042-3"]


def recipients(cells: list[str]) -> list[Recipient]:
    return [Recipient(id=c, address=c) for c in cells]


@pytest.fixture
async def cbc(aiohttp_server):  # type: ignore[no-untyped-def]
    recorder = Recorder("cbc")
    server = await aiohttp_server(create_app(recorder))
    return server, recorder


def adapter_for(context: ChannelContext, url: str, *extra: str) -> CellBroadcastAdapter:
    settings = context.settings.with_overrides(channel_options=(f"cell_broadcast.url={url}", *extra))
    return CellBroadcastAdapter(ChannelContext(settings, context.http, context.redis))


def follow_up(msg_type: MsgType):  # type: ignore[no-untyped-def]
    """The sample alert's Update or Cancel (referencing it), rendered for cell broadcast."""
    alert, signal = sample_alert()
    later = dataclasses.replace(alert, identifier=f"SZMB-TEST-{msg_type.value}", msg_type=msg_type,
                                references=(alert.reference,))
    return alert, build_message("cell_broadcast", "20260701-090000-fedcba", later, signal=signal,
                                timezone="Asia/Shanghai", cap_xml=to_xml(later))


async def test_alert_arrives_in_both_languages(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, recorder = cbc
    message = sample_message("cell_broadcast")
    results = await adapter_for(channel_context, str(server.make_url(""))).send(message, recipients(CELLS))

    assert [r.recipient_id for r in results] == CELLS
    assert {r.status for r in results} == {DeliveryStatus.ACCEPTED}
    sent = {m["message_id"]: m for m in recorder.messages("message")}
    # Red rainstorm: Extreme, Immediate, Observed -> CMAS 4371; English is the additional language (+13).
    assert set(sent) == {4371, 4384}
    zh, en = sent[4371], sent[4384]
    assert zh["cells"] == CELLS and en["cells"] == CELLS
    assert zh["text"] == message.texts["zh-CN"].body
    assert en["text"] == message.texts["en"].body
    assert zh["encoding"] == "ucs2" and zh["dcs"] == 0x48
    assert en["encoding"] == "gsm7" and en["dcs"] == 0x01 and en["language"] == "en"
    assert all(len(p) <= UCS2_PAGE_CHARS for p in zh["pages"]) and len(zh["pages"]) > 1
    assert all(len(p) <= GSM7_PAGE_SEPTETS for p in en["pages"]) and len(en["pages"]) > 1
    assert set(zh["page_octets"] + en["page_octets"]) == {82}
    assert zh["category"] == "high_priority" and zh["geo_scope"] == "cell_wide_immediate"
    assert zh["update_nr"] == 0 and zh["msg_code"] == message_code(message.alert) == en["msg_code"]
    assert zh["repetition_period"] == 32 and zh["num_of_bcast"] > 0
    assert results[0].provider_ref is not None and "4371" in results[0].provider_ref


async def test_update_increments_update_number_and_cancel_withdraws(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, recorder = cbc
    adapter = adapter_for(channel_context, str(server.make_url("")))
    original, update = follow_up(MsgType.UPDATE)
    first = build_message("cell_broadcast", "a1", original, signal=sample_alert()[1], timezone="Asia/Shanghai",
                          cap_xml=b"<alert/>")
    assert {r.status for r in await adapter.send(first, recipients(CELLS))} == {DeliveryStatus.ACCEPTED}
    assert {r.status for r in await adapter.send(update, recipients(CELLS))} == {DeliveryStatus.ACCEPTED}

    created = recorder.messages("message")
    assert [(m["message_id"], m["update_nr"]) for m in created] == [(4371, 0), (4384, 0), (4371, 1), (4384, 1)]
    assert len({m["msg_code"] for m in created}) == 1  # every version of one warning shares the code
    assert created[2]["serial_nr"] == created[0]["serial_nr"] + 1
    assert "更新" in created[2]["text"] and "UPDATE" in created[3]["text"]
    assert [w["update_nr"] for w in recorder.messages("withdrawal")] == [0, 0]

    _, cancel = follow_up(MsgType.CANCEL)
    results = await adapter.send(cancel, recipients(CELLS))
    assert {r.status for r in results} == {DeliveryStatus.ACCEPTED}
    withdrawn = recorder.messages("withdrawal")
    assert [(w["message_id"], w["update_nr"]) for w in withdrawn[2:]] == [(4371, 1), (4384, 1)]
    assert len(recorder.messages("message")) == 4  # a Cancel creates nothing


async def test_bad_sector_id_is_permanent_others_sent(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, recorder = cbc
    batch = [*recipients(CELLS[:2]), Recipient(id="x", address="not a cell")]
    results = await adapter_for(channel_context, str(server.make_url(""))).send(
        sample_message("cell_broadcast"), batch)
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.ACCEPTED,
                                           DeliveryStatus.PERMANENT]
    assert "sector id" in (results[2].error or "")
    assert recorder.messages("message")[0]["cells"] == CELLS[:2]


async def test_too_long_text_is_permanent_and_nothing_is_sent(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, recorder = cbc
    message = sample_message("cell_broadcast")
    long_zh = dataclasses.replace(message.texts["zh-CN"], body="暴雨" * 400)
    message = dataclasses.replace(message, texts={**message.texts, "zh-CN": long_zh})
    results = await adapter_for(channel_context, str(server.make_url(""))).send(message, recipients(CELLS))
    assert {r.status for r in results} == {DeliveryStatus.PERMANENT}
    assert "20 cell broadcast pages" in (results[0].error or "")
    assert recorder.messages() == []


def test_length_summary_and_pages() -> None:
    assert cbs_length("a" * 93).pages == 1 and cbs_length("a" * 94).pages == 2
    assert cbs_length("深" * 41).pages == 1 and cbs_length("深" * 42).pages == 2
    assert cbs_length("深" * 615).fits and not cbs_length("深" * 616).fits
    summary = cbs_length("€" * 47)  # extension characters take two septets
    assert (summary.encoding, summary.characters, summary.pages) == ("gsm7", 94, 2)
    pages = split_pages("[" * 47, "en")
    assert [len(t) for t in pages.texts] == [46, 1]  # an escape pair never straddles a page
    assert "".join(decode_gsm7_page(p) for p in pages.payloads) == "[" * 47
    assert MAX_PAGES == 15


async def test_bad_body_is_refused_like_osmo_cbc(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, _ = cbc
    auth = {"Authorization": "Basic c3ptYjpkZW1vLWNiYy1zZWNyZXQ="}  # szmb:demo-cbc-secret
    async with channel_context.http.post(server.make_url("/api/ecbe/v1/message"), json={"category": "normal"},
                                         headers=auth) as response:
        assert response.status == 400
        assert await response.text() == "CBCMSG 'cbe_name' is mandatory"


async def test_faults(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, recorder = cbc
    url = str(server.make_url(""))
    message = sample_message("cell_broadcast")
    adapter = adapter_for(channel_context, url)

    recorder.faults.throttle_rate = 1.0
    results = await adapter.send(message, recipients(CELLS))
    assert {r.status for r in results} == {DeliveryStatus.THROTTLED} and results[0].retry_after == 1.0
    recorder.faults.throttle_rate = 0.0

    recorder.faults.error_rate, recorder.faults.error_status = 1.0, 502
    assert {r.status for r in await adapter.send(message, recipients(CELLS))} == {DeliveryStatus.TRANSIENT}
    recorder.faults.error_rate = 0.0

    with pytest.raises(TransientDeliveryError, match="credentials"):
        await adapter_for(channel_context, url, "cell_broadcast.password=wrong").send(message, recipients(CELLS))
    assert recorder.messages("message") == []


async def test_nothing_listening_is_transient_error(channel_context) -> None:  # type: ignore[no-untyped-def]
    from broadcast.redis_server import free_port

    adapter = adapter_for(channel_context, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter.send(sample_message("cell_broadcast"), recipients(CELLS))


def test_default_config_points_at_the_simulator() -> None:
    from channels.cell_broadcast import CellBroadcastConfig

    config = CellBroadcastConfig.from_settings(Settings())
    assert config.url == "http://127.0.0.1:9103"


async def test_an_update_that_changes_severity_withdraws_what_is_on_air(cbc, channel_context) -> None:  # type: ignore[no-untyped-def]
    server, recorder = cbc
    adapter = adapter_for(channel_context, str(server.make_url("")))
    orange, orange_signal = sample_alert(level="orange")
    first = build_message("cell_broadcast", "a1", orange, signal=orange_signal, timezone="Asia/Shanghai",
                          cap_xml=to_xml(orange))
    await adapter.send(first, recipients(CELLS))
    on_air = {m["message_id"] for m in recorder.messages("message")}
    # Orange rainstorm is Severe: ids from 4375; the red Update of the same warning uses 4371/4384.
    assert on_air and on_air.isdisjoint({4371, 4384})

    red, red_signal = sample_alert(level="red")
    update = dataclasses.replace(red, identifier="SZMB-TEST-UP", msg_type=MsgType.UPDATE,
                                 references=(orange.reference,))
    assert message_code(update) == message_code(orange)  # the same warning chain
    results = await adapter.send(build_message("cell_broadcast", "a2", update, signal=red_signal,
                                               timezone="Asia/Shanghai", cap_xml=to_xml(update)), recipients(CELLS))
    assert {r.status for r in results} == {DeliveryStatus.ACCEPTED}
    withdrawn = {m["message_id"] for m in recorder.messages("withdrawal")}
    assert on_air <= withdrawn
    assert {m["message_id"] for m in recorder.messages("message")} - on_air == {4371, 4384}
    # A Cancel then withdraws the red ones (what is on air now), not the orange ids computed afresh.
    cancel = dataclasses.replace(red, identifier="SZMB-TEST-CANCEL", msg_type=MsgType.CANCEL,
                                 references=(orange.reference, update.reference))
    recorder.clear()
    await adapter.send(build_message("cell_broadcast", "a3", cancel, signal=red_signal, timezone="Asia/Shanghai",
                                     cap_xml=to_xml(cancel)), recipients(CELLS))
    assert {4371, 4384} <= {m["message_id"] for m in recorder.messages("withdrawal")}
    assert recorder.messages("message") == []
