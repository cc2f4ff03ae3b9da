"""The email adapter against the SMTP simulator (a real aiosmtpd server on the test's loop)."""

from __future__ import annotations

import email.header

import pytest

from broadcast.cap import from_xml
from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.email import EmailAdapter, valid_address
from ops.simulators.smtp import SmtpSimulator
from tests.conftest import sample_message

ZH = Recipient(id="u1", address="duty.officer@futian.example", language="zh-CN")
EN = Recipient(id="u2", address="consul@consulate.example", language="en")


@pytest.fixture
async def smtp():  # type: ignore[no-untyped-def]
    simulator = SmtpSimulator()
    await simulator.start("127.0.0.1", 0, 0)
    try:
        yield simulator
    finally:
        await simulator.stop()


def adapter_for(context: ChannelContext, port: int, *extra: str) -> EmailAdapter:
    settings = context.settings.with_overrides(
        channel_options=("email.host=127.0.0.1", f"email.port={port}", *extra))
    return EmailAdapter(ChannelContext(settings, context.http, context.redis))


async def test_messages_arrive_in_each_recipients_language(smtp, channel_context) -> None:  # type: ignore[no-untyped-def]
    message = sample_message("email")
    results = await adapter_for(channel_context, smtp.port).send(message, [ZH, EN])

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED, DeliveryStatus.ACCEPTED]
    zh, en = smtp.recorder.messages("email")
    assert zh["rcpt_tos"] == [ZH.address] and zh["to"] == ZH.address
    assert en["rcpt_tos"] == [EN.address]
    assert zh["auth_user"] == "alerts" and zh["mail_from"] == "alerts@szmb.example"
    assert zh["subject"] == message.texts["zh-CN"].subject and zh["subject"].startswith("【预警】")
    assert en["subject"] == message.texts["en"].subject and en["subject"].startswith("[Warning]")
    # The Chinese subject travels as RFC 2047 encoded-words and decodes back to the same text.
    assert "=?utf-8?" in zh["raw_subject"].lower()
    decoded = "".join(part.decode(cs or "ascii") if isinstance(part, bytes) else part
                      for part, cs in email.header.decode_header(zh["raw_subject"]))
    assert decoded == zh["subject"]
    assert zh["content_language"] == "zh-CN" and en["content_language"] == "en"
    assert zh["text"].strip() == message.texts["zh-CN"].body and "防御指引" in zh["text"]
    assert en["text"].strip() == message.texts["en"].body and "What to do" in en["text"]
    assert "防御指引" in zh["html"] and "<h1" in zh["html"] and "What to do" in en["html"]
    assert zh["content_type"] == "multipart/mixed"
    alert = message.alert
    assert zh["attachments"] == [{"filename": f"{alert.identifier}.xml", "content_type": "application/cap+xml",
                                  "size": len(message.cap_xml)}]
    assert zh["cap_size"] == len(message.cap_xml)
    assert from_xml(zh["cap_xml"].encode("utf-8")).identifier == alert.identifier
    assert zh["message_id"] == results[0].provider_ref and zh["message_id"].endswith("@szmb.example>")
    assert zh["message_id"] != en["message_id"] and zh["date"]
    assert "深圳市气象台" in zh["from"]


async def test_bad_and_unknown_addresses_are_permanent_others_delivered(smtp, channel_context) -> None:  # type: ignore[no-untyped-def]
    bad = Recipient(id="bad", address="not-an-address@", language="en")
    unknown = Recipient(id="gone", address="nobody@szmb.example", language="zh-CN")
    results = await adapter_for(channel_context, smtp.port).send(sample_message("email"), [bad, ZH, unknown, EN])

    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED,
                                           DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED]
    assert "not a valid email address" in (results[0].error or "")
    assert (results[2].error or "").startswith("SMTP 550") and "User unknown" in (results[2].error or "")
    assert [m["rcpt_tos"] for m in smtp.recorder.messages("email")] == [[ZH.address], [EN.address]]


async def test_throttle_and_data_errors(smtp, channel_context) -> None:  # type: ignore[no-untyped-def]
    adapter = adapter_for(channel_context, smtp.port)
    smtp.recorder.faults.throttle_rate = 1.0
    results = await adapter.send(sample_message("email"), [ZH, EN])
    assert {r.status for r in results} == {DeliveryStatus.THROTTLED}
    assert "451" in (results[0].error or "") and results[0].retry_after == 60.0
    smtp.recorder.faults.throttle_rate = 0.0

    smtp.recorder.faults.error_rate, smtp.recorder.faults.error_status = 1.0, 451
    assert {r.status for r in await adapter.send(sample_message("email"), [ZH])} == {DeliveryStatus.TRANSIENT}
    smtp.recorder.faults.error_status = 500
    results = await adapter.send(sample_message("email"), [ZH, EN])
    assert {r.status for r in results} == {DeliveryStatus.PERMANENT} and "554" in (results[1].error or "")
    assert smtp.recorder.messages("email") == []


async def test_wrong_password_is_transient_error(smtp, channel_context) -> None:  # type: ignore[no-untyped-def]
    adapter = adapter_for(channel_context, smtp.port, "email.password=wrong")
    with pytest.raises(TransientDeliveryError, match="535"):
        await adapter.send(sample_message("email"), [ZH])
    assert smtp.recorder.messages() == []


async def test_server_down_is_transient_error(smtp, channel_context) -> None:  # type: ignore[no-untyped-def]
    smtp.recorder.faults.down = True
    with pytest.raises(TransientDeliveryError, match="421"):
        await adapter_for(channel_context, smtp.port).send(sample_message("email"), [ZH])


async def test_nothing_listening_is_transient_error(channel_context) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter_for(channel_context, free_port()).send(sample_message("email"), [ZH])


async def test_only_bad_addresses_need_no_server(channel_context) -> None:  # type: ignore[no-untyped-def]
    results = await adapter_for(channel_context, free_port()).send(
        sample_message("email"), [Recipient(id="x", address="a b@example.com")])
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT]


async def test_inspection_api(smtp, channel_context) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{smtp.inspect_port}"
    async with channel_context.http.put(f"{base}/_sim/unknown_users",
                                        json={"addresses": [ZH.address]}) as response:
        assert response.status == 200
    results = await adapter_for(channel_context, smtp.port).send(sample_message("email"), [ZH, EN])
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED]
    async with channel_context.http.get(f"{base}/_sim/messages") as response:
        body = await response.json()
    assert [m["to"] for m in body["messages"]] == [EN.address]


def test_address_syntax() -> None:
    assert valid_address("a.b+c@sub.example.cn")
    assert not valid_address("a@b") and not valid_address("a@@b.cn") and not valid_address("a b@c.cn")
