"""The sms channel over SMPP 3.4 against the SMSC simulator, and the simulator against smpplib."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import aiohttp
import pytest
import smpplib.client
import smpplib.consts
import smpplib.gsm

from broadcast import keys
from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.smpp import (
    DEFAULT_PASSWORD,
    DEFAULT_SYSTEM_ID,
    Bind,
    Command,
    Pdu,
    PduParser,
    ShortMessage,
    SmppProvider,
)
from channels.sms import SmsAdapter, phone_problem
from channels.sms_text import segments
from ops.simulators.smpp import SmppSimulator, _Connection
from tests.conftest import sample_message


@pytest.fixture
async def smsc():  # type: ignore[no-untyped-def]
    simulator = SmppSimulator(receipt_delay=0.02, undeliverable={"8613900000009"})
    await simulator.start("127.0.0.1", 0, 0)
    try:
        yield simulator
    finally:
        await simulator.stop()


def context_for(base: ChannelContext, port: int, *options: str) -> ChannelContext:
    settings = base.settings.with_overrides(
        channel_options=("sms.smpp_host=127.0.0.1", f"sms.smpp_port={port}", *options))
    return ChannelContext(settings, base.http, base.redis)


async def inspect(base: ChannelContext, simulator: SmppSimulator, kind: str = "submit_sm") -> list[dict[str, Any]]:
    """What the simulator recorded, read through its HTTP inspection API."""
    url = f"http://127.0.0.1:{simulator.inspect_port}/_sim/messages"
    async with base.http.get(url, params={"kind": kind}) as response:
        assert response.status == 200
        return (await response.json())["messages"]


async def set_faults(base: ChannelContext, simulator: SmppSimulator, **faults: Any) -> None:
    async with base.http.put(f"http://127.0.0.1:{simulator.inspect_port}/_sim/faults", json=faults) as response:
        assert response.status == 200


def mobiles(count: int, start: int = 0, language: str = "zh-CN") -> list[Recipient]:
    return [Recipient(id=f"{language}-{i}", address=f"+86138{i:08d}", language=language)
            for i in range(start, start + count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_zh_and_en_to_many_recipients_with_a_window(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    message = sample_message("sms")
    zh_body, en_body = message.texts["zh-CN"].body, message.texts["en"].body
    zh_parts, en_parts = segments(zh_body), segments(en_body)
    assert len(zh_parts) >= 3 and len(en_parts) >= 3  # the sample is long enough to concatenate
    batch = mobiles(25, 0, "zh-CN") + mobiles(25, 100, "en")
    await set_faults(channel_context, smsc, latency_ms=40)
    adapter = SmsAdapter(context_for(channel_context, smsc.port, "sms.window=16"))
    assert adapter.endpoint() == f"smpp://{DEFAULT_SYSTEM_ID}@127.0.0.1:{smsc.port}"
    started = time.monotonic()
    try:
        results = await adapter.send(message, batch)
    finally:
        await adapter.aclose()
    elapsed = time.monotonic() - started
    pdus = 25 * len(zh_parts) + 25 * len(en_parts)
    # One PDU at a time would take pdus * 40 ms; a window of 16 overlaps them.
    assert elapsed < pdus * 0.040 / 3, elapsed

    assert [r.recipient_id for r in results] == [r.id for r in batch]
    assert all(r.status == DeliveryStatus.ACCEPTED for r in results), results
    recorded = await inspect(channel_context, smsc)
    assert len(recorded) == pdus
    by_destination: dict[str, list[dict[str, Any]]] = {}
    for entry in recorded:
        by_destination.setdefault(entry["destination"], []).append(entry)
    for recipient, result in zip(batch, results, strict=True):
        entries = sorted(by_destination[recipient.address.removeprefix("+")], key=lambda e: e["part"])
        zh = recipient.language == "zh-CN"
        expected_parts = zh_parts if zh else en_parts
        assert [e["text"] for e in entries] == expected_parts
        assert {e["data_coding"] for e in entries} == {8 if zh else 0}
        assert {e["esm_class"] for e in entries} == {0x40}
        assert {e["parts"] for e in entries} == {len(expected_parts)}
        assert len({e["reference"] for e in entries}) == 1
        # One receipt per text: requested on the last part only.
        assert [e["registered_delivery"] for e in entries] == [0] * (len(entries) - 1) + [1]
        assert {e["source"] for e in entries} == {"12379"}
        complete = [e["full_text"] for e in entries if e["full_text"] is not None]
        assert complete == [zh_body if zh else en_body]
        assert result.provider_ref == entries[-1]["message_id"]


async def test_a_refused_part_is_sent_again_under_the_same_reference(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    # Half the submit_sm throttled, all parts of a text sent at once: a text with none of its parts
    # accepted comes back throttled (nothing reached the handset); a refused part of a text with
    # accepted parts is sent again under the text's reference, so the text reaches the handset once.
    await set_faults(channel_context, smsc, throttle_rate=0.5)
    adapter = SmsAdapter(context_for(channel_context, smsc.port, "sms.throttle_retry_after=0.05"))
    batch = mobiles(200)  # a text has 3 parts: 1 in 8 is refused whole
    try:
        results = await adapter.send(sample_message("sms"), batch)
    finally:
        await adapter.aclose()
    recorded = await inspect(channel_context, smsc)
    body = sample_message("sms").texts["zh-CN"].body
    refused_whole = 0
    for recipient, result in zip(batch, results, strict=True):
        entries = [e for e in recorded if e["destination"] == recipient.address.removeprefix("+")]
        complete = [e["full_text"] for e in entries if e["full_text"] is not None]
        parts = sorted(e["part"] for e in entries)
        assert len({e["reference"] for e in entries}) <= 1 and len(parts) == len(set(parts)), "no part twice"
        if result.status == DeliveryStatus.ACCEPTED:
            assert complete == [body]
            assert parts == list(range(1, entries[0]["parts"] + 1))
            continue
        assert result.status == DeliveryStatus.THROTTLED
        if entries:  # a part throttled PART_RETRIES + 1 times in a row (1 in 2,048): given up
            assert complete == [] and "ESME_RTHROTTLED" in (result.error or "")
        else:
            assert "part 1 of" in (result.error or "")
            refused_whole += 1
    assert refused_whole >= 1
    assert sum(r.status == DeliveryStatus.ACCEPTED for r in results) >= 150


class RecordedEmission:
    """An emission that holds the batch back for ``hold`` seconds and notes when things happen."""

    def __init__(self, simulator: SmppSimulator, hold: float) -> None:
        self.simulator, self.hold = simulator, hold
        self.ready_at: float | None = None
        self.written_at: list[float] = []
        self.arrived_while_held = -1

    async def ready(self) -> None:
        before = len(self.simulator.compact.times)
        await asyncio.sleep(self.hold)
        self.arrived_while_held = len(self.simulator.compact.times) - before
        self.ready_at = time.time()

    def written(self) -> None:
        self.written_at.append(time.time())


async def test_texts_leave_at_their_moment_and_are_reported_on_the_wire_not_when_answered() -> None:
    simulator = SmppSimulator(record="compact", receipt_delay=0)
    await simulator.start("127.0.0.1", 0, 0)
    simulator.recorder.faults.latency_ms = 300  # every answer comes 300 ms after its submit_sm
    settings = Settings().with_overrides(channel_options=("sms.smpp_host=127.0.0.1", f"sms.smpp_port={simulator.port}",
                                                          "sms.window=64"))
    emission = RecordedEmission(simulator, hold=0.2)
    async with aiohttp.ClientSession() as http:
        provider = SmppProvider(ChannelContext(settings, http, None))
        body = sample_message("sms").texts["zh-CN"].body
        try:
            await provider.send_texts([(mobiles(1)[0], "warm-up")])  # bound before the clock starts
            results = await provider.send_texts([(r, body) for r in mobiles(30, 1)], emission)
            returned = time.time()
        finally:
            await provider.aclose()
            await simulator.stop()
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 30
    assert len(segments(body)) == 3 and len(emission.written_at) == 1
    assert emission.ready_at is not None and emission.arrived_while_held == 0, "nothing left before its moment"
    texts = simulator.compact.times[1:]
    assert len(texts) == 30 and min(texts) >= emission.ready_at
    # 90 parts in a window of 64: the last 26 leave when the first answers are in, 300 ms on; the
    # report comes then, 300 ms before the last answers.
    written = emission.written_at[0]
    assert written - emission.ready_at >= 0.3 and returned - written >= 0.2
    assert max(texts) <= written, "every text was whole on the wire when reported"


async def test_a_connection_lost_mid_chunk_keeps_what_was_accepted() -> None:
    # A window of 4 against 3-part texts and an SMSC answering after 200 ms: text A and the first
    # part of B go at once, the next 4 parts when their answers are in; the SMSC is gone before
    # those are answered. A was accepted and must say so (sending it again would show it twice);
    # B and C did not get through whole and are transient; nothing raises.
    simulator = SmppSimulator(record="compact", receipt_delay=0)
    await simulator.start("127.0.0.1", 0, 0)
    simulator.recorder.faults.latency_ms = 200
    settings = Settings().with_overrides(channel_options=("sms.smpp_host=127.0.0.1", f"sms.smpp_port={simulator.port}",
                                                          "sms.window=4"))
    body = sample_message("sms").texts["zh-CN"].body
    async with aiohttp.ClientSession() as http:
        provider = SmppProvider(ChannelContext(settings, http, None))
        try:
            await provider.send_texts([(mobiles(1)[0], "warm-up")])
            sending = asyncio.create_task(provider.send_texts([(r, body) for r in mobiles(3, 1)]))
            await asyncio.sleep(0.3)
            await simulator.stop()
            results = await asyncio.wait_for(sending, 5)
        finally:
            await provider.aclose()
    assert len(segments(body)) == 3
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.TRANSIENT, DeliveryStatus.TRANSIENT]
    assert results[0].provider_ref
    assert all("connection" in (r.error or "").lower() for r in results[1:]), results


async def test_a_short_text_is_one_plain_submit_sm(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    provider = SmppProvider(context_for(channel_context, smsc.port))
    try:
        results = await provider.send_texts([(mobiles(1)[0], "Price €5 [test]"), (mobiles(1, 1)[0], "暴雨" * 35)])
    finally:
        await provider.aclose()
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    first, second = sorted(await inspect(channel_context, smsc), key=lambda e: e["destination"])
    assert (first["text"], first["full_text"], first["data_coding"], first["esm_class"]) == \
        ("Price €5 [test]", "Price €5 [test]", 0, 0)
    assert (second["full_text"], second["data_coding"], second["esm_class"], second["parts"]) == \
        ("暴雨" * 35, 8, 0, 1)


async def test_receipts_reach_redis_and_the_callback(channel_context, smsc, redis_client) -> None:  # type: ignore[no-untyped-def]
    received: list[tuple[str, str, int | None]] = []

    async def on_receipt(ref: str, status: str, error_code: int | None) -> None:
        received.append((ref, status, error_code))

    context = context_for(channel_context, smsc.port)
    adapter = SmsAdapter(context, provider=SmppProvider(context, on_receipt=on_receipt))
    batch = [*mobiles(3), Recipient(id="gone", address="+8613900000009")]
    try:
        results = await adapter.send(sample_message("sms"), [Recipient(r.id, r.address, "en") for r in batch])
        refs = [r.provider_ref for r in results]
        assert all(refs)
        redis = channel_context.redis
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all([await redis.exists(keys.receipt_early(ref)) for ref in refs[:3]]) and \
                    await redis.exists(keys.receipt(refs[3])):
                break
            await asyncio.sleep(0.02)
    finally:
        await adapter.aclose()
    for ref in refs[:3]:
        # Delivered: counted, not stored one by one. No send was recorded for it here (no alert), so
        # the outcome waits for that under receipt_early (broadcast.receipts).
        assert await redis.get(keys.receipt_early(ref)) == b"delivered"
        assert not await redis.exists(keys.receipt(ref))
    assert 0 < await redis.ttl(keys.receipt(refs[3])) <= keys.RECEIPT_TTL_SECONDS
    undelivered = json.loads(await redis.get(keys.receipt(refs[3])))
    assert (undelivered["status"], undelivered["error_code"], undelivered["to"]) == \
        ("undelivered", 1, "+8613900000009")
    assert (undelivered["provider"], undelivered["kind"], undelivered["final"]) == ("smpp", "sms", True)
    assert await redis.get(keys.receipt_early(refs[3])) == b"undelivered"
    assert (refs[3], "undelivered", 1) in received
    assert (refs[0], "delivered", 0) in received
    # one receipt per text (on its last part), however many parts it took
    assert len(segments(sample_message("sms").texts["en"].body)) > 1
    assert len(received) == 4
    sent = await inspect(channel_context, smsc, "deliver_sm")
    assert len(sent) == 4


async def test_throttling_is_throttled_not_failed(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    await set_faults(channel_context, smsc, throttle_rate=1.0)
    adapter = SmsAdapter(context_for(channel_context, smsc.port, "sms.throttle_retry_after=2.5"))
    try:
        results = await adapter.send(sample_message("sms"), mobiles(10))
        assert [r.status for r in results] == [DeliveryStatus.THROTTLED] * 10
        assert {r.retry_after for r in results} == {2.5}
        assert all("ESME_RTHROTTLED" in (r.error or "") for r in results)
        assert await inspect(channel_context, smsc) == []

        await set_faults(channel_context, smsc, throttle_rate=0.5)
        results = await adapter.send(sample_message("sms"), mobiles(30))
    finally:
        await adapter.aclose()
    statuses = {r.status for r in results}
    assert statuses == {DeliveryStatus.ACCEPTED, DeliveryStatus.THROTTLED}


async def test_system_errors_are_transient(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    await set_faults(channel_context, smsc, error_rate=1.0)
    adapter = SmsAdapter(context_for(channel_context, smsc.port))
    try:
        results = await adapter.send(sample_message("sms"), mobiles(3))
    finally:
        await adapter.aclose()
    assert [r.status for r in results] == [DeliveryStatus.TRANSIENT] * 3
    assert "ESME_RSYSERR" in (results[0].error or "")


async def test_invalid_numbers_are_permanent_and_never_sent(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    bad = [Recipient("landline", "+8675588889999"), Recipient("short", "+861381234"),
           Recipient("letters", "+86138abc45678"), Recipient("zero", "+0123456789"),
           Recipient("too-long", "+1234567890123456")]
    adapter = SmsAdapter(context_for(channel_context, smsc.port))
    try:
        results = await adapter.send(sample_message("sms"), bad)
        assert [r.status for r in results] == [DeliveryStatus.PERMANENT] * len(bad)
        assert smsc.submit_count == 0
        mixed = [bad[0], *mobiles(1), bad[1]]
        results = await adapter.send(sample_message("sms"), mixed)
    finally:
        await adapter.aclose()
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED,
                                           DeliveryStatus.PERMANENT]
    assert "mainland China mobile" in (results[0].error or "")
    assert smsc.submit_count == len(segments(sample_message("sms").texts["zh-CN"].body))


async def test_the_provider_option_is_checked(channel_context) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        SmsAdapter(context_for(channel_context, 9, "sms.provider=carrier-pigeon"))
    assert caught.value.field == "sms.provider"
    with pytest.raises(InvalidInput) as caught:
        SmsAdapter(context_for(channel_context, 9, "sms.password=far-too-long"))
    assert caught.value.field == "sms.password"


def test_phone_rules() -> None:
    assert phone_problem("+8613800138000") is None
    assert phone_problem("8619912345678") is None
    assert phone_problem("+85291234567") is None  # Hong Kong, 8 digits after the country code
    assert phone_problem("+4915112345678") is None
    assert phone_problem("+8612800138000") is not None  # 12x is not a mobile prefix
    assert phone_problem("+86 138 0013 8000") is not None
    assert phone_problem("") is not None


async def test_the_smsc_rejecting_a_destination_is_permanent(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    # An address our check lets through but the SMSC refuses (0x0B) maps to permanent.
    provider = SmppProvider(context_for(channel_context, smsc.port))
    try:
        results = await provider.send_texts([(Recipient("x", "+86 13800138000"), "hello")])
    finally:
        await provider.aclose()
    assert results[0].status == DeliveryStatus.PERMANENT
    assert "ESME_RINVDSTADR" in (results[0].error or "")


@pytest.mark.parametrize(("option", "code"), [("sms.password=wrong", "ESME_RINVPASWD"),
                                              ("sms.system_id=nobody", "ESME_RINVSYSID")])
async def test_bad_credentials_raise_transient(channel_context, smsc, option, code) -> None:  # type: ignore[no-untyped-def]
    adapter = SmsAdapter(context_for(channel_context, smsc.port, option))
    try:
        with pytest.raises(TransientDeliveryError, match=code):
            await adapter.send(sample_message("sms"), mobiles(2))
    finally:
        await adapter.aclose()
    assert smsc.submit_count == 0


async def test_a_down_smsc_refuses_the_bind(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    await set_faults(channel_context, smsc, down=True)
    adapter = SmsAdapter(context_for(channel_context, smsc.port))
    try:
        with pytest.raises(TransientDeliveryError, match="ESME_RBINDFAIL"):
            await adapter.send(sample_message("sms"), mobiles(1))
    finally:
        await adapter.aclose()


async def test_nothing_listening_raises_transient(channel_context) -> None:  # type: ignore[no-untyped-def]
    adapter = SmsAdapter(context_for(channel_context, free_port(), "sms.connect_timeout=2"))
    try:
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            await adapter.send(sample_message("sms"), mobiles(1))
    finally:
        await adapter.aclose()


async def test_a_lost_session_is_rebound_on_the_next_send(channel_context) -> None:  # type: ignore[no-untyped-def]
    simulator = SmppSimulator()
    await simulator.start()
    provider = SmppProvider(context_for(channel_context, simulator.port))
    try:
        first = await provider.send_texts([(mobiles(1)[0], "one")])
        port = simulator.port
        await simulator.stop()
        simulator = SmppSimulator()
        await simulator.start(port=port)
        second = await provider.send_texts([(mobiles(1)[0], "two")])
    finally:
        await provider.aclose()
        await simulator.stop()
    assert first[0].status == second[0].status == DeliveryStatus.ACCEPTED
    assert [m["text"] for m in simulator.recorder.messages("submit_sm")] == ["two"]


async def test_keepalive_and_unbind(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    provider = SmppProvider(context_for(channel_context, smsc.port, "sms.enquire_link_interval=0.05"))
    try:
        await provider.send_texts([(mobiles(1)[0], "one")])
        await asyncio.sleep(0.4)
        assert smsc.pdu_counts["enquire_link"] >= 4
        assert smsc.pdu_counts["unbind"] == 0
        second = await provider.send_texts([(mobiles(1)[0], "two")])
        assert second[0].status == DeliveryStatus.ACCEPTED
        assert smsc.pdu_counts["bind_transceiver"] == 1  # the same session all along
    finally:
        await provider.aclose()
    assert smsc.pdu_counts["unbind"] == 1


def _smpplib_session(port: int, text: str, destination: str) -> tuple[list[Any], list[Any]]:
    """An independent SMPP client (smpplib, blocking): bind, submit ``text`` in parts, collect receipts."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    responses: list[Any] = []
    receipts: list[Any] = []
    client.set_message_sent_handler(lambda pdu: responses.append(pdu))
    client.set_message_received_handler(lambda pdu: receipts.append(pdu))
    client.connect()
    try:
        client.bind_transceiver(system_id=DEFAULT_SYSTEM_ID, password=DEFAULT_PASSWORD)
        parts, coding, esm_class = smpplib.gsm.make_parts(text)
        for part in parts:
            client.send_message(source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="SZMB",
                                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN, destination_addr=destination,
                                short_message=part, data_coding=coding, esm_class=esm_class,
                                registered_delivery=True)
        deadline = time.monotonic() + 5
        while (len(responses) < len(parts) or len(receipts) < len(parts)) and time.monotonic() < deadline:
            client.read_once(auto_send_enquire_link=False)
        client.unbind()
    finally:
        client.disconnect()
    return responses, receipts


@pytest.mark.parametrize("text", ["深圳市气象台发布暴雨红色预警信号，请立即到安全场所避险。" * 4,
                                  "Rainstorm red warning: take shelter now. " * 6,
                                  "短信测试"])
async def test_smpplib_interoperates_with_the_simulator(smsc, text) -> None:  # type: ignore[no-untyped-def]
    responses, receipts = await asyncio.to_thread(_smpplib_session, smsc.port, text, "8613800138000")
    recorded = smsc.recorder.messages("submit_sm")
    assert len(responses) == len(recorded) == len(receipts) >= 1
    assert all(r.status == 0 for r in responses)
    ids = sorted(r.message_id.decode() for r in responses)
    assert ids == sorted(m["message_id"] for m in recorded)
    assert {m["destination"] for m in recorded} == {"8613800138000"}
    assert {m["source"] for m in recorded} == {"SZMB"}
    assert {m["data_coding"] for m in recorded} == {0 if text.isascii() else 8}
    assert [m["full_text"] for m in recorded if m["full_text"] is not None] == [text]
    # smpplib parsed our deliver_sm receipts
    assert sorted(r.receipted_message_id.decode() for r in receipts) == ids
    assert all(b"stat:DELIVRD" in r.short_message for r in receipts)
    assert all(r.esm_class == 0x04 for r in receipts)


def test_receipts_parse_from_the_tlvs_or_from_the_text_alike() -> None:
    from channels.smpp import (
        ESM_CLASS_DELIVERY_RECEIPT,
        MESSAGE_STATES,
        TAG_MESSAGE_STATE,
        TAG_RECEIPTED_MESSAGE_ID,
        Pdu,
        PduParser,
        ShortMessage,
        cstring,
        format_receipt,
        parse_receipt,
    )

    def deliver(stat: str, err: int, tlvs: bool) -> ShortMessage:
        extra = {TAG_RECEIPTED_MESSAGE_ID: cstring("ABC1"), TAG_MESSAGE_STATE: bytes((MESSAGE_STATES[stat],))}
        sm = ShortMessage("8613800000001", "12379", format_receipt("ABC1", stat, err, "2611271400", "2611271401"),
                          esm_class=ESM_CLASS_DELIVERY_RECEIPT, tlvs=extra if tlvs else {})
        # Through the wire format and back, as the client reads it.
        [pdu] = PduParser().feed(Pdu(0x00000005, 0, 7, sm.encode()).encode())
        return ShortMessage.decode(pdu.body)

    for stat, err in (("DELIVRD", 0), ("UNDELIV", 1), ("EXPIRED", 27)):
        with_tlvs, text_only = parse_receipt(deliver(stat, err, True)), parse_receipt(deliver(stat, err, False))
        assert with_tlvs is not None and text_only is not None
        assert (with_tlvs.message_id, with_tlvs.stat, with_tlvs.error) == ("ABC1", stat, err)
        assert (text_only.message_id, text_only.stat, text_only.error) == ("ABC1", stat, err)
        assert with_tlvs.destination == text_only.destination == "8613800000001"
    assert parse_receipt(ShortMessage("8613800000001", "12379", b"hello")) is None  # mobile-originated


def test_pdu_parser_splits_a_stream_however_it_is_cut() -> None:
    from channels.smpp import Pdu, PduParser, ShortMessage, SmppProtocolError

    pdus = [Pdu(0x00000004, 0, n, ShortMessage("12379", f"86138000000{n:02d}", b"x" * n).encode())
            for n in range(1, 30)]
    stream = b"".join(p.encode() for p in pdus)
    for cut in (1, 7, 16, 100, len(stream)):
        parser, got = PduParser(), []
        for at in range(0, len(stream), cut):
            got += parser.feed(stream[at:at + cut])
        assert got == pdus
    with pytest.raises(SmppProtocolError):
        PduParser().feed(b"\x00\x00\x00\x05" + b"\x00" * 12)  # command_length below the header's 16
    with pytest.raises(SmppProtocolError):
        ShortMessage.decode(b"\x00\x01\x01123")  # cut short inside the source address


async def test_an_smsc_that_does_not_answer_in_time_gives_transient_results(channel_context, smsc) -> None:  # type: ignore[no-untyped-def]
    context = context_for(channel_context, smsc.port, "sms.response_timeout=0.4")
    adapter = SmsAdapter(context)
    try:
        assert {r.status.value for r in await adapter.send(sample_message("sms"), mobiles(1))} == {"accepted"}
        await set_faults(channel_context, smsc, latency_ms=1500)  # the session is bound; now it goes slow
        started = time.monotonic()
        results = await adapter.send(sample_message("sms"), mobiles(3, start=10))
        waited = time.monotonic() - started
    finally:
        await set_faults(channel_context, smsc, latency_ms=0)
        await adapter.aclose()
    assert [r.status.value for r in results] == ["transient"] * 3
    assert all("no submit_sm_resp within 0.4" in (r.error or "") for r in results)
    assert waited < 1.4  # failed by the timeout, not by the late answers


async def test_the_simulator_times_a_text_when_it_arrived_not_when_it_was_read() -> None:
    """A benchmark's busiest second is counted at the simulator: a simulator that is slow to read
    (its machine busy) must not show its own lag as bunching in the sender's traffic."""
    simulator = SmppSimulator(record="compact")
    await simulator.start("127.0.0.1", 0, 0)
    bound, go, sent_at = threading.Event(), threading.Event(), []

    def esme() -> None:  # a blocking client in a thread: it sends while the simulator's loop is stuck
        with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as sock:
            sock.sendall(Pdu(Command.BIND_TRANSMITTER, 0, 1, Bind(DEFAULT_SYSTEM_ID, DEFAULT_PASSWORD).encode())
                         .encode())
            parser, answers = PduParser(), []
            while not answers:
                answers = parser.feed(sock.recv(4096))
            assert answers[0].command_id == Command.BIND_TRANSMITTER_RESP and answers[0].command_status == 0
            bound.set()
            go.wait(5)
            sent_at.append(time.time())
            sock.sendall(Pdu(Command.SUBMIT_SM, 0, 2, ShortMessage("12379", "8613800000001", b"hello").encode())
                         .encode())
            time.sleep(0.5)

    client = threading.Thread(target=esme)
    client.start()
    try:
        while not bound.is_set():
            await asyncio.sleep(0.01)
        go.set()
        time.sleep(0.4)  # the simulator's loop is busy elsewhere: nothing is read meanwhile
        read_after = time.time()
        for _ in range(200):
            if simulator.compact.times:
                break
            await asyncio.sleep(0.01)
        assert list(simulator.compact.destinations) == ["8613800000001"]
        arrived = simulator.compact.times[0]
        assert abs(arrived - sent_at[0]) < 0.1, (arrived - sent_at[0], read_after - sent_at[0])
    finally:
        client.join(5)
        await simulator.stop()


async def test_a_connection_lets_several_tasks_wait_for_its_buffer_to_drain() -> None:
    """The receipt pump and a session's reader may both wait for one connection's buffer to drain."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = _Connection(ours)
    try:
        connection.write(b"x" * 1_000_000)  # more than the socket takes at once
        assert connection.buffered() > 0
        waiting = [asyncio.ensure_future(connection.drain()) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)
        theirs.setblocking(False)
        received = 0
        for _ in range(2000):
            try:
                received += len(theirs.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
            if received == 1_000_000:
                break
        await asyncio.wait_for(asyncio.gather(*waiting), 2)
        assert received == 1_000_000 and connection.buffered() == 0
        connection.write(b"y" * 1_000_000)
        late = [asyncio.ensure_future(connection.drain()) for _ in range(2)]
        await asyncio.sleep(0.05)
        connection.close()  # closing wakes whoever still waits
        await asyncio.wait_for(asyncio.gather(*late), 2)
    finally:
        connection.close()
        theirs.close()
