"""Twilio SMS provider against the Twilio simulator, and status callbacks into a real callback app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from broadcast import keys
from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.twilio import DEMO_AUTH_TOKEN, DEMO_FROM, STATUS_CALLBACK_PATH, TwilioSmsProvider
from channels.twilio_callbacks import add_routes, redis_ctx
from ops.simulators.base import Recorder
from ops.simulators.twilio import create_app
from tests.conftest import sample_message

ZH = Recipient("r-zh", "+8613800138000", "zh-CN")
EN = Recipient("r-en", "+8613900139000", "en")


@dataclass
class TwilioEnv:
    recorder: Recorder
    simulator: TestServer
    callbacks: TestServer
    settings: Settings
    http: aiohttp.ClientSession
    redis: Any

    @property
    def public_url(self) -> str:
        return str(self.callbacks.make_url("")).rstrip("/")

    def context(self, *options: str, url: str | None = None) -> ChannelContext:
        """A ChannelContext sending to the simulator (or ``url``), with callbacks to the callback app."""
        target = url or str(self.simulator.make_url("")).rstrip("/")
        settings = self.settings.with_overrides(
            public_url=self.public_url,
            channel_options=(f"sms.twilio_url={target}", f"voice.twilio_url={target}", *options))
        return ChannelContext(settings, self.http, self.redis)


@pytest.fixture
async def twilio_env(aiohttp_server, settings: Settings, channel_context: ChannelContext,  # type: ignore[no-untyped-def]
                     redis_client: redis.Redis) -> TwilioEnv:
    """The simulator (fast callbacks) and an app with only the Twilio callback routes, on real ports."""
    callbacks_app = web.Application()
    add_routes(callbacks_app, auth_token_for=lambda: DEMO_AUTH_TOKEN)
    callbacks_app.cleanup_ctx.append(redis_ctx(settings.effective_redis_url))
    callbacks = await aiohttp_server(callbacks_app)
    recorder = Recorder("twilio")
    simulator = await aiohttp_server(create_app(recorder, callback_delay=0.02, call_timeout=2.0))
    return TwilioEnv(recorder, simulator, callbacks, settings, channel_context.http, channel_context.redis)


async def wait_for(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``probe`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := probe()):
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting after {timeout} s")
        await asyncio.sleep(0.02)
    return value


def receipt(client: redis.Redis, sid: str, status: str) -> dict[str, Any] | None:
    raw = client.get(keys.receipt(sid))
    doc = json.loads(raw) if raw else None
    return doc if doc and doc["status"] == status else None


async def test_sms_arrive_as_rendered_and_receipts_land_in_redis(twilio_env: TwilioEnv,
                                                                 redis_client: redis.Redis) -> None:
    message = sample_message("sms")
    zh_text, en_text = message.text_for("zh-CN").body, message.text_for("en").body
    provider = TwilioSmsProvider(twilio_env.context())

    results = await provider.send_texts([(ZH, zh_text), (EN, en_text)])

    assert [r.recipient_id for r in results] == ["r-zh", "r-en"]
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    assert all(r.provider_ref and r.provider_ref.startswith("SM") and len(r.provider_ref) == 34 for r in results)
    arrived = twilio_env.recorder.messages("message")
    assert [(m["sid"], m["to"], m["body"]) for m in arrived] == [
        (results[0].provider_ref, ZH.address, zh_text), (results[1].provider_ref, EN.address, en_text)]
    assert zh_text.startswith("【深圳气象】") and en_text.startswith("[SZ Weather]")
    assert [m["encoding"] for m in arrived] == ["UCS-2", "GSM-7"]
    assert {m["from"] for m in arrived} == {DEMO_FROM}
    assert {m["status_callback"] for m in arrived} == {twilio_env.public_url + STATUS_CALLBACK_PATH}

    for result in results:
        doc = await wait_for(lambda r=result: receipt(redis_client, r.provider_ref, "delivered"))
        assert doc["kind"] == "sms" and doc["final"] is True and doc["error_code"] is None
        assert 0 < redis_client.ttl(keys.receipt(result.provider_ref)) <= keys.RECEIPT_TTL_SECONDS
    # Every callback the simulator sent was signed and accepted.
    callbacks = twilio_env.recorder.messages("status_callback")
    assert [c["params"]["MessageStatus"] for c in callbacks if c["sid"] == results[0].provider_ref] == [
        "queued", "sent", "delivered"]
    assert {c["status"] for c in callbacks} == {204}


async def test_unreachable_handset_gives_an_undelivered_receipt(twilio_env: TwilioEnv,
                                                               redis_client: redis.Redis) -> None:
    provider = TwilioSmsProvider(twilio_env.context())
    [result] = await provider.send_texts([(Recipient("r-1", "+8613800000000"), "test")])
    assert result.status is DeliveryStatus.ACCEPTED
    doc = await wait_for(lambda: receipt(redis_client, result.provider_ref, "undelivered"))
    assert doc["error_code"] == 30003 and doc["final"] is True


async def test_a_late_callback_does_not_undo_a_final_receipt(twilio_env: TwilioEnv, redis_client: redis.Redis,
                                                             aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(twilio_env.callbacks)
    url = twilio_env.public_url + STATUS_CALLBACK_PATH
    for status in ("delivered", "sent"):
        params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": status, "To": ZH.address}
        signature = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(url, params)
        response = await client.post(STATUS_CALLBACK_PATH, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status == 204
    assert receipt(redis_client, "SM" + "1" * 32, "delivered") is not None


async def test_a_forged_callback_signature_is_refused(twilio_env: TwilioEnv, redis_client: redis.Redis,
                                                      aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(twilio_env.callbacks)
    url = twilio_env.public_url + STATUS_CALLBACK_PATH
    params = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered", "To": ZH.address}
    forged = RequestValidator("not-the-auth-token").compute_signature(url, params)
    good = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(url, params)

    for headers in ({"X-Twilio-Signature": forged}, {}):
        response = await client.post(STATUS_CALLBACK_PATH, data=params, headers=headers)
        assert response.status == 403
    # The right signature over different fields (a tampered status) is refused too.
    response = await client.post(STATUS_CALLBACK_PATH, data={**params, "MessageStatus": "failed"},
                                 headers={"X-Twilio-Signature": good})
    assert response.status == 403
    assert redis_client.get(keys.receipt("SM" + "f" * 32)) is None

    response = await client.post(STATUS_CALLBACK_PATH, data=params, headers={"X-Twilio-Signature": good})
    assert response.status == 204
    assert receipt(redis_client, "SM" + "f" * 32, "delivered") is not None


async def test_invalid_numbers_are_permanent(twilio_env: TwilioEnv) -> None:
    provider = TwilioSmsProvider(twilio_env.context())
    batch = [Recipient("local", "13800138000"), Recipient("short", "+86138001"),
             Recipient("landline", "+8675588001234"), ZH]
    results = await provider.send_texts([(r, "test") for r in batch])

    assert [r.recipient_id for r in results] == ["local", "short", "landline", "r-zh"]
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT] * 3 + [DeliveryStatus.ACCEPTED]
    assert "E.164" in (results[0].error or "")
    assert "21211" in (results[1].error or "")
    assert "21614" in (results[2].error or "")
    assert [m["to"] for m in twilio_env.recorder.messages("message")] == [ZH.address]


async def test_many_concurrent_sends_keep_input_order(twilio_env: TwilioEnv) -> None:
    twilio_env.recorder.faults.latency_ms = 20
    provider = TwilioSmsProvider(twilio_env.context("sms.twilio_concurrency=8"))
    batch = [(Recipient(f"r{i}", f"+86138{i:08d}"), f"text {i}") for i in range(40)]
    results = await provider.send_texts(batch)
    body_of = {m["sid"]: m["body"] for m in twilio_env.recorder.messages("message")}
    assert [body_of[r.provider_ref] for r in results] == [text for _, text in batch]
    assert [r.recipient_id for r in results] == [r.id for r, _ in batch]


async def test_throttling_is_throttled_with_retry_after(twilio_env: TwilioEnv) -> None:
    twilio_env.recorder.faults.throttle_rate = 1.0
    results = await TwilioSmsProvider(twilio_env.context()).send_texts([(ZH, "a"), (EN, "b")])
    assert [r.status for r in results] == [DeliveryStatus.THROTTLED] * 2
    assert all("20429" in (r.error or "") and r.retry_after == 1.0 for r in results)
    assert twilio_env.recorder.messages("message") == []


async def test_server_errors_are_transient(twilio_env: TwilioEnv) -> None:
    twilio_env.recorder.faults.error_rate = 1.0
    twilio_env.recorder.faults.error_status = 503
    [result] = await TwilioSmsProvider(twilio_env.context()).send_texts([(ZH, "a")])
    assert result.status is DeliveryStatus.TRANSIENT
    assert "503" in (result.error or "")


async def test_a_slow_provider_times_out_as_transient(twilio_env: TwilioEnv) -> None:
    twilio_env.recorder.faults.latency_ms = 1000
    [result] = await TwilioSmsProvider(twilio_env.context("sms.twilio_timeout=0.1")).send_texts([(ZH, "a")])
    assert result.status is DeliveryStatus.TRANSIENT
    assert "did not answer in time" in (result.error or "")


async def test_wrong_auth_token_takes_the_channel_down(twilio_env: TwilioEnv) -> None:
    provider = TwilioSmsProvider(twilio_env.context("sms.twilio_auth_token=wrong-token"))
    with pytest.raises(TransientDeliveryError, match="20003"):
        await provider.send_texts([(ZH, "a"), (EN, "b")])
    assert twilio_env.recorder.messages("message") == []


async def test_nothing_listening_is_transient_delivery_error(twilio_env: TwilioEnv) -> None:
    provider = TwilioSmsProvider(twilio_env.context(url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await provider.send_texts([(ZH, "a")])
