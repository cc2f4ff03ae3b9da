"""The radio channel against the broadcaster intake simulator: script plus embedded, verified speech."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from broadcast.cap import from_xml
from broadcast.errors import TransientDeliveryError
from broadcast.redis_server import free_port
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryStatus, Recipient
from channels.radio import RadioAdapter
from ops.simulators.base import Recorder
from ops.simulators.radio import DEMO_KEY, create_app
from tests.conftest import sample_message

Factory = Callable[..., RadioAdapter]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("radio")


@pytest.fixture
async def server(aiohttp_server, recorder: Recorder):  # type: ignore[no-untyped-def]
    return await aiohttp_server(create_app(recorder))


@pytest.fixture
async def make_adapter(settings: Settings, server) -> AsyncIterator[Factory]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        def make(*options: str, url: str | None = None) -> RadioAdapter:
            base = url or str(server.make_url("")).rstrip("/")
            configured = settings.with_overrides(channel_options=(f"radio.url={base}", *options))
            return RadioAdapter(ChannelContext(configured, http))

        yield make


def stations() -> list[Recipient]:
    return [Recipient("FM01", "FM01", "zh-CN"), Recipient("FM02", "FM02", "en")]


async def test_stations_receive_script_and_verified_speech_in_their_language(make_adapter: Factory,
                                                                             recorder: Recorder) -> None:
    message = sample_message("radio")
    results = await make_adapter().send(message, stations())

    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    assert [r.provider_ref for r in results] == ["FMI-000001", "FMI-000002"]
    received = recorder.messages("cap")
    assert [m["station"] for m in received] == ["FM01", "FM02"]
    for entry, language in zip(received, ["zh-CN", "en"], strict=True):
        [info] = entry["infos"]
        assert info["language"] == language
        assert info["script"] == " ".join(message.texts[language].body.split())
        resource = info["resource"]
        assert resource["mime_type"] == "audio/x-wav"
        assert resource["digest_verified"] is True
        assert len(resource["digest"]) == 40
        assert resource["sample_rate"] == 22050 and resource["channels"] == 1 and resource["sample_bits"] == 16
        # A bulletin of a headline and instructions lasts tens of seconds, not a blip.
        assert resource["audio_seconds"] > 15
        assert float(info["audio_seconds_parameter"]) == pytest.approx(resource["audio_seconds"], abs=0.1)
    assert received[0]["infos"][0]["script"].startswith("各位听众请注意")
    assert received[1]["infos"][0]["script"].startswith("Attention please.")


async def test_cap_embeds_the_wav_with_matching_size_and_digest(make_adapter: Factory) -> None:
    cap = await make_adapter().cap_for(sample_message("radio"), "zh-CN")
    alert = from_xml(cap, max_bytes=16 * 1024 * 1024)
    [info] = alert.infos
    [resource] = info.resources
    assert resource.uri is None and resource.deref_uri
    wav = base64.b64decode(resource.deref_uri)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert resource.size == len(wav)
    assert resource.digest == hashlib.sha1(wav).hexdigest()


async def test_intake_refuses_a_tampered_digest(make_adapter: Factory, server) -> None:  # type: ignore[no-untyped-def]
    cap = await make_adapter().cap_for(sample_message("radio"), "en")
    digest = from_xml(cap, max_bytes=16 * 1024 * 1024).infos[0].resources[0].digest
    assert digest is not None
    tampered = cap.replace(digest.encode(), b"0" * 40)
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/intake/cap"), data=tampered,
                         headers={"Content-Type": "application/cap+xml", "X-Broadcaster-Key": DEMO_KEY,
                                  "X-Station-Id": "FM01"}) as response:
        body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == "digest_mismatch"


async def test_unknown_station_is_permanent(make_adapter: Factory, recorder: Recorder) -> None:
    results = await make_adapter().send(sample_message("radio"), [Recipient("FM99", "FM99"), stations()[0]])
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.ACCEPTED]
    assert "unknown_station" in (results[0].error or "")


async def test_wrong_key_missing_speech_and_server_errors(make_adapter: Factory, recorder: Recorder) -> None:
    with pytest.raises(TransientDeliveryError, match="broadcaster key"):
        await make_adapter("radio.key=wrong").send(sample_message("radio"), stations())
    with pytest.raises(TransientDeliveryError, match="install"):
        await make_adapter("radio.espeak=/nonexistent/espeak-ng").send(sample_message("radio"), stations())
    assert recorder.messages() == []

    recorder.faults.update({"error_rate": 1.0, "error_status": 502})
    [result] = await make_adapter().send(sample_message("radio"), stations()[:1])
    assert result.status is DeliveryStatus.TRANSIENT and "HTTP 502" in (result.error or "")


async def test_nothing_listening_raises_transient(make_adapter: Factory) -> None:
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await make_adapter(url=f"http://127.0.0.1:{free_port()}").send(sample_message("radio"), stations())
