"""A Cell Broadcast Centre with osmo-cbc's ECBE REST interface.

    POST   /api/ecbe/v1/message                -> 201 "Created" | 400 <reason> | 409 "Could not allocate"
    DELETE /api/ecbe/v1/message/{message_id}   -> 200 "OK" | 404 (no active message) | 400 (bad id)

Bodies are validated the way osmo-cbc's ``rest_api.c`` does, with its plain-text reasons
(``CBCMSG 'cbe_name' is mandatory``, ``'pages' array size out of range``...). Two additions
that osmo-cbc lacks: HTTP basic authentication (401 with ``WWW-Authenticate``) and the
``"scope_cell_list": {"cell_list": [<sector id>, ...]}`` scope beside ``scope_plmn``.

A created message is decoded page by page (GSM-7 unpacked independently of the adapter's
encoder, or UCS-2) and recorded as kind ``message`` with its message id, serial number
(encoded and decoded), cells, category, repetition, DCS, language, encoding, page texts and
their concatenation; a withdrawal is recorded as kind ``withdrawal``. Messages stay active
(keyed by message id, as in osmo-cbc) until withdrawn.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from ops.simulators.base import Recorder, http_simulator

PREFIX = "/api/ecbe/v1"
DEMO_USERNAME = "szmb"
DEMO_PASSWORD = "demo-cbc-secret"

GEO_SCOPES = {"cell_wide_immediate": 0, "plmn_wide": 1, "lac_sac_tac_wide": 2, "cell_wide": 3}
CATEGORIES = ("normal", "high_priority", "background")
_GSM7 = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
         "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~", 0x3E: "]",
             0x40: "|", 0x65: "€"}
_LANGUAGES_GROUP0 = ["de", "en", "it", "fr", "es", "nl", "sv", "da", "pt", "fi", "no", "el", "tr", "hu", "pl"]

ACTIVE = web.AppKey("active", dict)


class BadRequest(Exception):
    """osmo-cbc's 400 with a plain-text reason."""


def _integer(doc: dict[str, Any], key: str, low: int, high: int, missing: str, bad: str) -> int | None:
    if key not in doc:
        if missing:
            raise BadRequest(missing)
        return None
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(bad)
    return value


def decode_gsm7_page(data: bytes) -> str:
    """Unpack 7-bit septets (LSB first) from one page and map them through the GSM alphabet."""
    count = len(data) * 8 // 7
    septets = [(int.from_bytes(data, "little") >> (7 * i)) & 0x7F for i in range(count)]
    out, escape = [], False
    for septet in septets:
        if escape:
            out.append(_GSM7_EXT.get(septet, " "))
            escape = False
        elif septet == 0x1B:
            escape = True
        else:
            out.append(_GSM7[septet])
    return "".join(out).rstrip("\r")


def decode_page(dcs: int, data: bytes) -> tuple[str, str]:
    """(encoding, text) of one page under ``dcs`` (TS 23.038 section 5); <CR> padding removed."""
    group = dcs >> 4
    if dcs == 0x11:  # UCS-2 preceded by a two-octet (GSM-7) language indication
        return "ucs2", data[2:].decode("utf-16-be", errors="replace").rstrip("\r")
    alphabet = (dcs >> 2) & 3 if group in (0x4, 0x5, 0x6, 0x7) else (1 if group == 0xF and dcs & 0x04 else 0)
    if alphabet == 2:
        return "ucs2", data.decode("utf-16-be", errors="replace").rstrip("\r")
    if alphabet == 1:
        return "8bit", data.hex()
    return "gsm7", decode_gsm7_page(data)


def _language(dcs: int) -> str | None:
    if dcs >> 4 == 0 and (dcs & 0x0F) < len(_LANGUAGES_GROUP0):
        return _LANGUAGES_GROUP0[dcs & 0x0F]
    return None


def parse_message(doc: Any) -> dict[str, Any]:
    """Check a CBCMSG like osmo-cbc's json2cbc_message and return what to record.

    Raises:
        BadRequest: with osmo-cbc's reason.
    """
    if not isinstance(doc, dict):
        raise BadRequest("CBCMSG must be JSON object")
    cbe_name = doc.get("cbe_name")
    if not isinstance(cbe_name, str):
        raise BadRequest("CBCMSG 'cbe_name' is mandatory")
    category = doc.get("category", "normal")
    if category not in CATEGORIES:
        raise BadRequest("CBCMSG 'category' unknown")
    repetition = _integer(doc, "repetition_period", 0, 4095, "CBCMSG 'repetiton_period' is mandatory",
                          "CBCMSG 'repetiton_period' out of range")
    broadcasts = _integer(doc, "num_of_bcast", 0, 65535, "", "CBCMSG 'num_of_bcast' out of range") or 0
    _integer(doc, "warning_period_sec", 0, 65535, "", "CBCMSG 'warning_period_sec' out of range")
    scope = doc.get("scope")
    if scope is None:
        raise BadRequest("CBCMSG 'scope' is mandatory")
    if isinstance(scope, dict) and "scope_plmn" in scope:
        cells: list[str] | None = None
    elif isinstance(scope, dict) and isinstance(scope.get("scope_cell_list"), dict):
        cells = scope["scope_cell_list"].get("cell_list")
        if not isinstance(cells, list) or not cells or not all(isinstance(c, str) and c for c in cells):
            raise BadRequest("CBCMSG 'cell_list' must be a non-empty array of cell names")
    else:
        raise BadRequest("CBCMSG only 'scope_plmn' or 'scope_cell_list' supported")

    smscb = doc.get("smscb_message")
    if smscb is None:
        raise BadRequest("CBCMSG 'smscb_message' is mandatory")
    if not isinstance(smscb, dict):
        raise BadRequest("not a JSON object")
    serial = _serial(smscb.get("serial_nr"))
    message_id = _integer(smscb, "message_id", 0, 65535, "message_id out of range", "message_id out of range")
    payload = _payload(smscb.get("payload"))
    return {"cbe_name": cbe_name, "category": category, "repetition_period": repetition,
            "num_of_bcast": broadcasts, "scope": "plmn" if cells is None else "cell_list", "cells": cells or [],
            "message_id": message_id, **serial, **payload}


def _serial(value: Any) -> dict[str, Any]:
    if value is None:
        raise BadRequest("serial_nr is mandatory")
    if not isinstance(value, dict):
        raise BadRequest("'serial_nr' must be present and an object")
    if "serial_nr_encoded" in value:
        encoded = _integer(value, "serial_nr_encoded", 0, 65535, "", "Either 'serial_nr_encoded' or "
                                                                        "'serial_nr_decoded' are mandatory")
        assert encoded is not None
    elif isinstance(value.get("serial_nr_decoded"), dict):
        decoded = value["serial_nr_decoded"]
        geo = decoded.get("geo_scope")
        if not isinstance(geo, str):
            raise BadRequest("'geo_scope' is mandatory")
        if geo not in GEO_SCOPES:
            raise BadRequest("'geo_scope' is invalid")
        code = _integer(decoded, "msg_code", 0, 1023, "'msg_code' is out of range", "'msg_code' is out of range")
        update = _integer(decoded, "update_nr", 0, 15, "'update_nr' is out of range", "'update_nr' is out of range")
        assert code is not None and update is not None
        encoded = (GEO_SCOPES[geo] << 14) | (code << 4) | update
    else:
        raise BadRequest("Either 'serial_nr_encoded' or 'serial_nr_decoded' are mandatory")
    geo_name = next(name for name, number in GEO_SCOPES.items() if number == encoded >> 14)
    return {"serial_nr": encoded, "geo_scope": geo_name, "msg_code": (encoded >> 4) & 0x3FF,
            "update_nr": encoded & 0xF}


def _payload(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("'payload' must be JSON object")
    if "payload_encoded" in value:
        encoded = value["payload_encoded"]
        if not isinstance(encoded, dict):
            raise BadRequest("'dcs' out of range")
        dcs = _integer(encoded, "dcs", 0, 255, "'dcs' out of range", "'dcs' out of range")
        assert dcs is not None
        pages = encoded.get("pages")
        if not isinstance(pages, list):
            raise BadRequest("'pages' absent or not an array")
        if not 1 <= len(pages) <= 15:
            raise BadRequest("'pages' array size out of range")
        texts, octets, encoding = [], [], "gsm7"
        for page in pages:
            if not isinstance(page, str):
                raise BadRequest("'pages' array must contain strings")
            if len(page) > 88 * 2:
                raise BadRequest("'pages' array must contain strings up to 88 hex nibbles")
            try:
                data = binascii.unhexlify(page)
            except (binascii.Error, ValueError):
                raise BadRequest("'pages' array must contain hex strings") from None
            encoding, text = decode_page(dcs, data)
            texts.append(text)
            octets.append(len(data))
        return {"dcs": dcs, "encoding": encoding, "language": _language(dcs), "pages": texts,
                "page_octets": octets, "text": "".join(texts)}
    if "payload_decoded" in value:
        decoded = value["payload_decoded"]
        charset = decoded.get("character_set") if isinstance(decoded, dict) else None
        if not isinstance(charset, str):
            raise BadRequest("Currently 'character_set' is mandatory")
        language = decoded.get("language")
        if isinstance(language, str) and len(language) > 2:
            raise BadRequest("Only two-digit 'language' code is supported")
        data = decoded.get("data_utf8")
        if not isinstance(data, str):
            raise BadRequest("'data_utf8' is mandatory")
        if charset not in ("gsm", "8bit", "ucs2"):
            raise BadRequest("Invalid 'character_set'")
        per_page = {"gsm": 93, "ucs2": 41, "8bit": 82}[charset]
        pages = [data[i:i + per_page] for i in range(0, len(data), per_page)] or [""]
        if len(pages) > 15:
            raise BadRequest("'data_utf8' is too long for 15 pages")
        return {"dcs": None, "encoding": {"gsm": "gsm7"}.get(charset, charset), "language": language,
                "pages": pages, "page_octets": [], "text": data}
    if "payload_etws" in value:
        raise BadRequest("'payload_etws' is not accepted by this CBC (CMAS only)")
    raise BadRequest("'payload_type_encoded', 'payload_type_decoded' or 'payload_etws' must be present")


def _authorized(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return user == DEMO_USERNAME and password == DEMO_PASSWORD


def _unauthorized() -> web.Response:
    return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": 'Basic realm="ECBE"'})


def _routes(app: web.Application, recorder: Recorder) -> None:
    app[ACTIVE] = {}

    async def create(request: web.Request) -> web.Response:
        if not _authorized(request):
            return _unauthorized()
        try:
            doc = json.loads(await request.text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=400, text="REST: No JSON Body")
        try:
            parsed = parse_message(doc)
        except BadRequest as exc:
            return web.Response(status=400, text=str(exc))
        active: dict[int, dict[str, Any]] = request.app[ACTIVE]
        if parsed["message_id"] in active:
            return web.Response(status=409, text="Could not allocate")
        active[parsed["message_id"]] = parsed
        recorder.record("message", **parsed)
        return web.Response(status=201, text="Created")

    async def delete(request: web.Request) -> web.Response:
        if not _authorized(request):
            return _unauthorized()
        raw = request.match_info["message_id"]
        if not raw.isdigit() or int(raw) > 65535:
            return web.Response(status=400)
        withdrawn = request.app[ACTIVE].pop(int(raw), None)
        if withdrawn is None:
            return web.Response(status=404)
        recorder.record("withdrawal", message_id=int(raw), serial_nr=withdrawn["serial_nr"],
                        msg_code=withdrawn["msg_code"], update_nr=withdrawn["update_nr"],
                        cells=withdrawn["cells"])
        return web.Response(status=200, text="OK")

    app.router.add_post(f"{PREFIX}/message", create)
    app.router.add_delete(f"{PREFIX}/message/{{message_id}}", delete)


def create_app(recorder: Recorder | None = None) -> web.Application:
    """The CBC simulator: the ECBE API, faults, and the /_sim/ inspection API."""
    return http_simulator("cbc", _routes, recorder=recorder)
