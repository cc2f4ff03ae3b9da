"""Simulator of the radio broadcasters' CAP intake: a script to read and the bulletin to air.

Same protocol as the TV intake (ops/simulators/tv.py): ``POST /intake/cap`` with
``X-Broadcaster-Key: demo-radio-key`` and ``X-Station-Id`` (FM01..FM08 by default), answering
202 {"id": "FMI-000001", ...}. Every ``<info>`` must carry:

- ``<parameter>`` ``script`` (the text read out);
- at least one audio ``<resource>`` (mimeType audio/x-wav or audio/wav) embedded as
  ``derefUri`` (this intake does not fetch URIs), with ``size`` and ``digest``; the base64
  must decode, its length equal ``size``, its SHA-1 equal ``digest``, and it must be a PCM
  WAV whose header agrees with the data.

Violations answer 400 {"error": {"code": "missing_audio" | "not_embedded" | "bad_base64" |
"size_mismatch" | "digest_mismatch" | "bad_wav" | ..., "message", "field"}}. Recorded per
info: language, script, and the audio's bytes, digest, sample rate, channels and duration
(from the WAV header, checked against the data).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import wave
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from broadcast.model import Info
from ops.simulators.base import Recorder, http_simulator
from ops.simulators.tv import IntakeRejection, cap_intake_routes, parameter

DEMO_KEY = "demo-radio-key"
DEMO_STATIONS = ("FM01", "FM02", "FM03", "FM04", "FM05", "FM06", "FM07", "FM08")  # the demo registry's radio stations
AUDIO_TYPES = ("audio/x-wav", "audio/wav", "audio/wave")


def decode_wav(data: bytes) -> dict[str, Any]:
    """Check a WAV with the standard library's reader; its header must match the data it holds.

    Raises:
        ValueError: not a PCM WAV, or the header's length disagrees with the data.
    """
    try:
        with wave.open(io.BytesIO(data)) as reader:
            params = reader.getparams()
            frames = reader.readframes(params.nframes)
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc
    if len(frames) != params.nframes * params.sampwidth * params.nchannels:
        raise ValueError(f"the header announces {params.nframes} frames but the data holds fewer")
    if params.nframes == 0:
        raise ValueError("the WAV holds no audio")
    return {"sample_rate": params.framerate, "channels": params.nchannels, "sample_bits": params.sampwidth * 8,
            "audio_seconds": round(params.nframes / params.framerate, 3)}


def check_bulletin(info: Info, index: int) -> dict[str, Any]:
    script = parameter(info, "script", index)
    if not script.strip():
        raise IntakeRejection("invalid_script", "the script is empty", f"info[{index}].parameter")
    audio = [(i, r) for i, r in enumerate(info.resources) if r.mime_type.lower() in AUDIO_TYPES]
    if not audio:
        raise IntakeRejection("missing_audio", "every <info> needs an audio/x-wav <resource>",
                              f"info[{index}].resource")
    position, resource = audio[0]
    field = f"info[{index}].resource[{position}]"
    if not resource.deref_uri:
        raise IntakeRejection("not_embedded", "this intake cannot fetch <uri>; embed the audio as <derefUri>",
                              f"{field}.derefUri")
    if resource.size is None or not resource.digest:
        raise IntakeRejection("missing_integrity", "<size> and <digest> are required", field)
    try:
        data = base64.b64decode("".join(resource.deref_uri.split()), validate=True)
    except binascii.Error as exc:
        raise IntakeRejection("bad_base64", f"derefUri is not base64: {exc}", f"{field}.derefUri") from exc
    if len(data) != resource.size:
        raise IntakeRejection("size_mismatch", f"<size> says {resource.size} bytes, derefUri holds {len(data)}",
                              f"{field}.size")
    digest = hashlib.sha1(data).hexdigest()
    if digest != resource.digest.lower():
        raise IntakeRejection("digest_mismatch", f"SHA-1 of the audio is {digest}, <digest> says {resource.digest}",
                              f"{field}.digest")
    try:
        audio_facts = decode_wav(data)
    except ValueError as exc:
        raise IntakeRejection("bad_wav", str(exc), f"{field}.derefUri") from exc
    return {"language": info.language, "headline": info.headline, "script": script,
            "audio_seconds_parameter": next((p.value for p in info.parameters if p.value_name == "audioSeconds"), None),
            "resource": {"desc": resource.desc, "mime_type": resource.mime_type, "size": resource.size,
                         "digest": resource.digest, "digest_verified": True, **audio_facts}}


def create_app(recorder: Recorder | None = None, *, key: str = DEMO_KEY,
               stations: Iterable[str] = DEMO_STATIONS) -> web.Application:
    """The radio intake simulator (see the module docstring)."""
    return http_simulator("radio", cap_intake_routes(key, stations, "FMI", check_bulletin), recorder=recorder)
