"""Offline text-to-speech for the spoken channels (radio, loudspeakers), with eSpeak NG.

eSpeak NG (Debian package ``espeak-ng``) runs locally, needs no network and no model
download, and speaks Mandarin (voice ``cmn``) and English (voice ``en``). Its voice is
robotic but intelligible, which is what an automatic emergency bulletin needs; a station
may re-voice the script it also receives as text.

:func:`synthesize` runs ``espeak-ng --stdout`` as an asyncio subprocess (the text goes in
on stdin, so a text starting with ``-`` or a long one is never mistaken for options) and
returns a WAV file: RIFF/WAVE, PCM 16-bit mono at 22,050 Hz. eSpeak NG writes a *streaming*
header whose size fields say "unknown" (0x7FFFF000-ish) when it writes to a pipe; they are
rewritten here from the real length, so strict readers (Python's :mod:`wave`, broadcast
playout systems) see the true duration.

:func:`cap_resource` describes a WAV as a CAP 1.2 ``<resource>``: ``mimeType`` audio/x-wav,
``size`` in bytes and ``digest`` the SHA-1 hex of the bytes (CAP 1.2 3.2.3 names SHA-1). By
default the audio is *embedded* as ``derefUri`` (base64): CAP 1.2 provides it for one-way
links where fetching a URI is not feasible, and a broadcaster's intake must be able to air
the alert even when it cannot reach us. Passing ``uri`` instead *references* the file (no
``derefUri``), for receivers that fetch resources; then the bytes must be served at that URI.

Errors: a missing ``espeak-ng`` binary, a timeout or a failing run raise
:class:`~broadcast.errors.TransientDeliveryError` (the whole spoken batch cannot be sent
now; the message says what to fix). Bad input (empty text, a language without a voice)
raises :class:`~broadcast.errors.InvalidInput`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import shutil
import struct
from dataclasses import dataclass

from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.model import Resource

ESPEAK_BINARY = "espeak-ng"
DEFAULT_TIMEOUT_SECONDS = 30.0
WAV_MIME_TYPE = "audio/x-wav"

# Primary language subtag -> eSpeak NG voice. "cmn" is Mandarin (Putonghua); Cantonese would be "yue".
VOICES: dict[str, str] = {"zh": "cmn", "en": "en"}


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What a PCM WAV header says."""

    channels: int
    sample_rate: int
    bits_per_sample: int
    data_bytes: int

    @property
    def duration_seconds(self) -> float:
        frame = self.channels * self.bits_per_sample // 8
        return self.data_bytes / (frame * self.sample_rate) if frame and self.sample_rate else 0.0


def voice_for(language: str) -> str:
    """The eSpeak NG voice speaking ``language`` (an RFC 3066 tag such as ``zh-CN``).

    Raises:
        InvalidInput: no voice is configured for the language (field ``language``).
    """
    primary = language.split("-")[0].lower()
    try:
        return VOICES[primary]
    except KeyError:
        raise InvalidInput(f"no speech voice for language {language!r} (voices: {', '.join(VOICES)})",
                           field="language") from None


async def synthesize(text: str, language: str, *, binary: str = ESPEAK_BINARY,
                     timeout: float = DEFAULT_TIMEOUT_SECONDS, words_per_minute: int | None = None) -> bytes:
    """Speak ``text`` in ``language`` and return the WAV file.

    Args:
        text: What to say (UTF-8; punctuation sets the pauses).
        language: ``zh-CN`` (Mandarin voice ``cmn``), ``en`` ... see :data:`VOICES`.
        binary: The espeak-ng executable, a name looked up on PATH or a path.
        timeout: Seconds before the run is abandoned (and the process killed).
        words_per_minute: Speaking rate; eSpeak NG's default (175) when None.

    Returns:
        A RIFF/WAVE file, PCM 16-bit mono 22,050 Hz, with correct size fields.

    Raises:
        InvalidInput: ``text`` is empty, or the language has no voice.
        TransientDeliveryError: espeak-ng is not installed, timed out or failed.
    """
    if not text or not text.strip():
        raise InvalidInput("nothing to speak: the text is empty", field="text")
    voice = voice_for(language)
    executable = shutil.which(binary)
    if executable is None:
        raise TransientDeliveryError(
            f"text-to-speech is not available: {binary!r} was not found; install it "
            "(Debian/Ubuntu: apt-get install espeak-ng) or set the speech binary path")
    args = [executable, "-v", voice, "-b", "1", "--stdout", "--stdin"]
    if words_per_minute is not None:
        args += ["-s", str(words_per_minute)]
    try:
        process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise TransientDeliveryError(f"text-to-speech could not start {executable}: {exc}") from exc
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(text.encode("utf-8")), timeout)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise TransientDeliveryError(f"text-to-speech timed out after {timeout:g} s ({len(text)} characters)") from exc
    if process.returncode != 0:
        reason = stderr.decode("utf-8", "replace").strip() or f"exit status {process.returncode}"
        raise TransientDeliveryError(f"text-to-speech failed (voice {voice}): {reason}")
    try:
        return fix_wav_sizes(stdout)
    except ValueError as exc:
        raise TransientDeliveryError(f"text-to-speech produced no usable WAV: {exc}") from exc


def fix_wav_sizes(wav: bytes) -> bytes:
    """Rewrite the RIFF and ``data`` chunk sizes of a streamed WAV from its real length.

    Raises:
        ValueError: not a RIFF/WAVE file with a ``data`` chunk.
    """
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    out = bytearray(wav)
    struct.pack_into("<I", out, 4, len(out) - 8)
    offset = 12
    while offset + 8 <= len(out):
        chunk_id = bytes(out[offset:offset + 4])
        size = struct.unpack_from("<I", out, offset + 4)[0]
        if chunk_id == b"data":
            struct.pack_into("<I", out, offset + 4, len(out) - offset - 8)
            return bytes(out)
        offset += 8 + size + (size & 1)
    raise ValueError("no data chunk")


def wav_info(wav: bytes) -> WavInfo:
    """Read the ``fmt `` and ``data`` chunks of a PCM WAV.

    Raises:
        ValueError: not a PCM RIFF/WAVE file.
    """
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(wav):
        chunk_id = wav[offset:offset + 4]
        size = struct.unpack_from("<I", wav, offset + 4)[0]
        if chunk_id == b"fmt " and size >= 16:
            audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", wav, offset + 8)
            fmt = (audio_format, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("data chunk before the fmt chunk")
            if fmt[0] != 1:
                raise ValueError(f"audio format {fmt[0]} is not PCM")
            return WavInfo(fmt[1], fmt[2], fmt[3], min(size, len(wav) - offset - 8))
        offset += 8 + size + (size & 1)
    raise ValueError("no data chunk")


def cap_resource(wav: bytes, desc: str, uri: str | None = None) -> Resource:
    """A CAP ``<resource>`` for a WAV file.

    Args:
        wav: The audio bytes.
        desc: ``resourceDesc``, e.g. "语音播报 Spoken alert (zh-CN)".
        uri: Where receivers can fetch the file. When None (the default) the audio is
            embedded as ``derefUri`` (base64) instead, for one-way links.

    Returns:
        The resource with mime type audio/x-wav, ``size`` in bytes and ``digest`` the
        SHA-1 hex digest of the bytes.
    """
    return Resource(
        desc=desc,
        mime_type=WAV_MIME_TYPE,
        size=len(wav),
        uri=uri,
        deref_uri=None if uri is not None else base64.b64encode(wav).decode("ascii"),
        digest=hashlib.sha1(wav).hexdigest(),  # CAP 1.2 prescribes SHA-1 for <digest>
    )
