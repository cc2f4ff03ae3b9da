"""The voice channel against the Twilio simulator: the TwiML of the call, and a keypress acknowledging it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from channels.base import DeliveryStatus, Recipient, adapter_class
from channels.twilio import STATUS_CALLBACK_PATH, VOICE_CALLBACK_PATH
from channels.twilio_callbacks import acknowledgements
from channels.voice import VoiceAdapter
from tests.channels.test_twilio import EN, ZH, TwilioEnv, receipt, twilio_env, wait_for  # noqa: F401
from tests.conftest import sample_message


def test_voice_is_registered_with_its_capabilities() -> None:
    assert adapter_class("voice") is VoiceAdapter
    caps = VoiceAdapter.capabilities
    assert (caps.max_batch, caps.segment_rule, caps.rate_per_second, caps.supports_receipts, caps.supports_ack) == (
        100, "none", 100, True, True)


async def test_calls_carry_the_rendered_text_in_a_gather(twilio_env: TwilioEnv) -> None:  # noqa: F811
    message = sample_message("voice")
    adapter = VoiceAdapter(twilio_env.context())

    results = await adapter.send(message, [ZH, EN])

    assert [(r.recipient_id, r.status) for r in results] == [("r-zh", DeliveryStatus.ACCEPTED),
                                                             ("r-en", DeliveryStatus.ACCEPTED)]
    calls = twilio_env.recorder.messages("call")
    assert [(c["sid"], c["to"]) for c in calls] == [(results[0].provider_ref, ZH.address),
                                                    (results[1].provider_ref, EN.address)]
    for call, recipient, say_language in ((calls[0], ZH, "cmn-CN"), (calls[1], EN, "en-US")):
        root = ET.fromstring(call["twiml"])
        gather = root.find("Gather")
        assert gather is not None and gather.get("numDigits") == "1" and gather.get("method") == "POST"
        action = urlsplit(gather.get("action", ""))
        assert f"{action.scheme}://{action.netloc}{action.path}" == twilio_env.public_url + VOICE_CALLBACK_PATH
        query = parse_qs(action.query)
        assert query["alert"] == [message.alert_id] and query["recipient"] == [recipient.id]
        say = gather.find("Say")
        assert say is not None and say.get("language") == say_language
        assert say.text == message.text_for(recipient.language).body
        goodbye = root.find("Say")
        assert goodbye is not None and goodbye.text == message.text_for(recipient.language).parts["goodbye"]
        assert call["status_callback"] == twilio_env.public_url + STATUS_CALLBACK_PATH
        assert call["status_callback_event"] == ["answered", "completed", "initiated", "ringing"]
    assert calls[0]["twiml"].count("深圳市气象台发布福田区暴雨红色预警信号") == 1
    assert "收到请按1确认" in calls[0]["twiml"] and "Press 1 to confirm" in calls[1]["twiml"]


async def test_pressing_1_records_an_acknowledgement(twilio_env: TwilioEnv, redis_client: redis.Redis,  # noqa: F811
                                                     aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    message = sample_message("voice")
    [result] = await VoiceAdapter(twilio_env.context()).send(message, [ZH])
    simulator = await aiohttp_client(twilio_env.simulator)

    response = await simulator.post(f"/_sim/calls/{result.provider_ref}/press", json={"digits": "1"})

    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == 200 and "谢谢，已确认" in answer["twiml"] and "<Hangup" in answer["twiml"]
    raw = redis_client.hget(acknowledgements(message.alert_id), ZH.id)
    assert raw is not None
    ack = json.loads(raw)
    assert (ack["call_sid"], ack["digits"], ack["to"], ack["channel"]) == (result.provider_ref, "1", ZH.address,
                                                                           "voice")
    assert redis_client.ttl(acknowledgements(message.alert_id)) > 0
    [keypress] = twilio_env.recorder.messages("keypress")
    assert keypress["twiml"] == answer["twiml"]
    # The call then completes, and its receipt says so.
    doc = await wait_for(lambda: receipt(redis_client, result.provider_ref, "completed"))
    assert doc["kind"] == "voice" and doc["final"] is True


async def test_another_digit_does_not_acknowledge(twilio_env: TwilioEnv, redis_client: redis.Redis,  # noqa: F811
                                                  aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    message = sample_message("voice")
    [result] = await VoiceAdapter(twilio_env.context()).send(message, [EN])
    simulator = await aiohttp_client(twilio_env.simulator)

    response = await simulator.post(f"/_sim/calls/{result.provider_ref}/press", json={"digits": "2"})
    answer = await response.json()
    assert answer["status"] == 200 and "Press 1 to confirm" in answer["twiml"] and "<Gather" in answer["twiml"]
    assert redis_client.hget(acknowledgements(message.alert_id), EN.id) is None

    # The call asked again; pressing 1 now acknowledges (the relative action resolved as Twilio would).
    response = await simulator.post(f"/_sim/calls/{result.provider_ref}/press", json={"digits": "1"})
    answer = await response.json()
    assert answer["status"] == 200 and "Thank you, acknowledged." in answer["twiml"]
    assert redis_client.hget(acknowledgements(message.alert_id), EN.id) is not None


async def test_a_forged_keypress_is_refused(twilio_env: TwilioEnv, redis_client: redis.Redis,  # noqa: F811
                                            aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(twilio_env.callbacks)
    response = await client.post(f"{VOICE_CALLBACK_PATH}?alert=a1&recipient=r-zh&lang=zh-CN",
                                 data={"CallSid": "CA" + "0" * 32, "Digits": "1"},
                                 headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
    assert response.status == 403
    assert redis_client.exists(acknowledgements("a1")) == 0


async def test_unanswered_call_ends_with_a_no_answer_receipt(twilio_env: TwilioEnv,  # noqa: F811
                                                             redis_client: redis.Redis) -> None:
    [result] = await VoiceAdapter(twilio_env.context()).send(sample_message("voice"),
                                                             [Recipient("r-x", "+8613800000000")])
    assert result.status is DeliveryStatus.ACCEPTED
    doc = await wait_for(lambda: receipt(redis_client, result.provider_ref, "no-answer"))
    assert doc["final"] is True


async def test_bad_numbers_are_permanent(twilio_env: TwilioEnv) -> None:  # noqa: F811
    results = await VoiceAdapter(twilio_env.context()).send(
        sample_message("voice"), [Recipient("bad", "0755-8800"), Recipient("short", "+86138001"), ZH])
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.PERMANENT,
                                           DeliveryStatus.ACCEPTED]
    assert "E.164" in (results[0].error or "") and "21211" in (results[1].error or "")
    assert [c["to"] for c in twilio_env.recorder.messages("call")] == [ZH.address]


async def test_throttled_calls(twilio_env: TwilioEnv) -> None:  # noqa: F811
    twilio_env.recorder.faults.throttle_rate = 1.0
    [result] = await VoiceAdapter(twilio_env.context()).send(sample_message("voice"), [ZH])
    assert result.status is DeliveryStatus.THROTTLED and result.retry_after == 1.0


async def test_wrong_auth_token_takes_the_channel_down(twilio_env: TwilioEnv) -> None:  # noqa: F811
    adapter = VoiceAdapter(twilio_env.context("voice.twilio_auth_token=wrong-token"))
    with pytest.raises(TransientDeliveryError, match="20003"):
        await adapter.send(sample_message("voice"), [ZH, EN])
    assert twilio_env.recorder.messages("call") == []


async def test_nothing_listening_is_transient_delivery_error(twilio_env: TwilioEnv) -> None:  # noqa: F811
    adapter = VoiceAdapter(twilio_env.context(url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await adapter.send(sample_message("voice"), [ZH])

