"""Simulator of the community emergency-broadcast terminal system (public-address loudspeakers).

    POST /api/v1/groups/{community}/play          Authorization: Bearer demo-loudspeaker-token
        multipart/form-data: a "playlist" part (application/json)
            {"alert": "...", "priority": "emergency" | "normal", "repeat": 1..10,
             "segments": [{"language": "zh-CN", "text": "...", "audio": "<part name>"}, ...]}
        and one audio/wav part per segment, named as the segment's "audio" says.
    202 {"id": "P-000001", "community": "...", "terminals": ["LS00001", ...]}

401 {"error": {"code": "unauthorized", ...}} without the token; 404 ``unknown_group`` for a
community without terminals; 415 if not multipart; 400 {"error": {"code": "invalid_playlist"
| "missing_audio" | "bad_wav", "message", "field"}} when the playlist or an audio part is
wrong (every WAV is read with the standard library's reader; its header must agree with its
data). Recorded (kind ``play``): community, terminals, repeat, and per segment its language,
text, audio bytes and duration from the WAV header. The inventory (terminal id ->
community) defaults to the demo facility registry's loudspeakers, generated on first use.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ops.simulators.base import Recorder, http_simulator
from ops.simulators.radio import decode_wav

DEMO_TOKEN = "demo-loudspeaker-token"
MAX_SEGMENTS = 8


@functools.cache
def demo_inventory() -> dict[str, str]:
    """Terminal id -> community code of the demo facility registry."""
    from geotarget import build_demo_gazetteer
    from geotarget.facilities import generate_loudspeakers

    return {t.id: t.community for t in generate_loudspeakers(build_demo_gazetteer())}


class BadPlay(Exception):
    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


def _playlist(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPlay("invalid_playlist", f"the playlist is not JSON: {exc}", "playlist") from exc
    if not isinstance(doc, dict):
        raise BadPlay("invalid_playlist", "the playlist must be an object", "playlist")
    repeat = doc.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 10:
        raise BadPlay("invalid_playlist", "repeat must be a whole number 1..10", "playlist.repeat")
    if doc.get("priority", "normal") not in ("emergency", "normal"):
        raise BadPlay("invalid_playlist", "priority is emergency or normal", "playlist.priority")
    segments = doc.get("segments")
    if not isinstance(segments, list) or not 1 <= len(segments) <= MAX_SEGMENTS:
        raise BadPlay("invalid_playlist", f"segments must be a list of 1..{MAX_SEGMENTS}", "playlist.segments")
    for i, segment in enumerate(segments):
        if not isinstance(segment, dict) or not all(isinstance(segment.get(k), str) and segment.get(k)
                                                    for k in ("language", "text", "audio")):
            raise BadPlay("invalid_playlist", "a segment needs language, text and audio (a part name)",
                          f"playlist.segments[{i}]")
    return doc


def create_app(recorder: Recorder | None = None, *, token: str = DEMO_TOKEN,
               terminals: Mapping[str, str] | None = None) -> web.Application:
    """The terminal-system simulator; ``terminals`` maps terminal id -> community (default: the demo registry's)."""
    counter = itertools.count(1)

    def groups() -> dict[str, list[str]]:
        inventory = terminals if terminals is not None else demo_inventory()
        by_community: dict[str, list[str]] = {}
        for terminal, community in sorted(inventory.items()):
            by_community.setdefault(community, []).append(terminal)
        return by_community

    def routes(app: web.Application, rec: Recorder) -> None:
        async def play(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {token}":
                return _error(401, "unauthorized", "missing or wrong bearer token")
            community = request.match_info["community"]
            members = groups().get(community)
            if not members:
                return _error(404, "unknown_group", f"no terminals in community group {community!r}")
            if request.content_type != "multipart/form-data":
                return _error(415, "unsupported_media_type", "send multipart/form-data (playlist + audio parts)")
            parts: dict[str, tuple[str, bytes]] = {}
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name:
                    parts[part.name] = (part.headers.get("Content-Type", ""), bytes(await part.read()))  # type: ignore[union-attr]
            try:
                if "playlist" not in parts:
                    raise BadPlay("invalid_playlist", "the playlist part is missing", "playlist")
                playlist = _playlist(parts["playlist"][1])
                segments = []
                for i, segment in enumerate(playlist["segments"]):
                    field = f"playlist.segments[{i}].audio"
                    if segment["audio"] not in parts:
                        raise BadPlay("missing_audio", f"no part named {segment['audio']!r}", field)
                    content_type, data = parts[segment["audio"]]
                    if content_type.split(";")[0].strip().lower() not in ("audio/wav", "audio/x-wav", "audio/wave"):
                        raise BadPlay("bad_wav", f"audio parts are audio/wav, not {content_type!r}", field)
                    try:
                        facts = decode_wav(data)
                    except ValueError as exc:
                        raise BadPlay("bad_wav", str(exc), field) from exc
                    segments.append({"language": segment["language"], "text": segment["text"],
                                     "audio_bytes": len(data), "riff": data[:4].decode("latin-1"), **facts})
            except BadPlay as exc:
                return _error(400, exc.code, exc.message, exc.field)
            reference = f"P-{next(counter):06d}"
            rec.record("play", id=reference, community=community, terminals=members, alert=playlist.get("alert"),
                       priority=playlist.get("priority", "normal"), repeat=playlist.get("repeat", 1),
                       segments=segments)
            return web.json_response({"id": reference, "community": community, "terminals": members}, status=202)

        app.router.add_post("/api/v1/groups/{community}/play", play)

    return http_simulator("loudspeakers", routes, recorder=recorder)
