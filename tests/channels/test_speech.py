"""Offline text-to-speech with espeak-ng: valid WAV files in both languages, CAP resources, errors."""

from __future__ import annotations

import base64
import hashlib
import io
import wave

import pytest

from broadcast.errors import InvalidInput, TransientDeliveryError
from channels.speech import cap_resource, synthesize, voice_for, wav_info


@pytest.mark.parametrize(("text", "language"), [("深圳市发布暴雨红色预警，请立即避险。", "zh-CN"),
                                                ("Red rainstorm warning. Take shelter now.", "en")])
async def test_speech_is_a_valid_wav_of_real_length(text: str, language: str) -> None:
    wav = await synthesize(text, language)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    # The header's sizes are the real ones (espeak-ng streams "unknown" sizes to a pipe).
    assert int.from_bytes(wav[4:8], "little") == len(wav) - 8
    with wave.open(io.BytesIO(wav)) as reader:
        frames = reader.getnframes()
        assert reader.getframerate() == 22050 and reader.getsampwidth() == 2 and reader.getnchannels() == 1
        assert len(reader.readframes(frames)) == frames * 2
    seconds = frames / 22050
    assert 1.5 < seconds < 20
    assert wav_info(wav).duration_seconds == pytest.approx(seconds)


async def test_languages_pick_their_voice() -> None:
    assert voice_for("zh-CN") == "cmn" and voice_for("en-US") == "en"
    chinese = await synthesize("预警", "zh-CN")
    english = await synthesize("预警", "en")  # the English voice spells out unknown characters differently
    assert chinese != english


async def test_bad_input_and_missing_binary() -> None:
    with pytest.raises(InvalidInput):
        await synthesize("  ", "en")
    with pytest.raises(InvalidInput, match="no speech voice"):
        await synthesize("bonjour", "fr-FR")
    with pytest.raises(TransientDeliveryError, match="apt-get install espeak-ng"):
        await synthesize("hello", "en", binary="/nonexistent/espeak-ng")


def test_cap_resource_embeds_or_references() -> None:
    wav = b"RIFF" + bytes(40)
    embedded = cap_resource(wav, "bulletin")
    assert embedded.mime_type == "audio/x-wav" and embedded.size == 44
    assert embedded.digest == hashlib.sha1(wav).hexdigest()
    assert base64.b64decode(embedded.deref_uri or "") == wav and embedded.uri is None
    referenced = cap_resource(wav, "bulletin", uri="https://alerts.example/a.wav")
    assert referenced.uri == "https://alerts.example/a.wav" and referenced.deref_uri is None
    assert referenced.digest == embedded.digest
