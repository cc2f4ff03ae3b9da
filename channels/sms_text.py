"""SMS text rules: GSM-7 or UCS-2, how many parts a text takes, and how each part is encoded.

A text that uses only the GSM 03.38 default alphabet (and its extension table) is sent in
GSM-7: 160 septets in one SMS, 153 per part when concatenated (the user data header takes
the rest). An extension character (``€ [ ] { } \\ ^ ~ |`` and form feed) is an escape
septet plus a code, so it counts 2 and a part never ends between the two. Any other
character makes the whole text UCS-2: 70 UTF-16 code units in one SMS, 67 per part; a
character outside the Basic Multilingual Plane (an emoji) is a surrogate pair counting 2,
never split either.

Over SMPP (``data_coding`` 0, the SMSC default alphabet) GSM-7 is sent unpacked, one
septet per octet; UCS-2 (``data_coding`` 8) as UTF-16BE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet, indexed by septet value. 0x1B is the escape to the extension table.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
# The extension table (after an escape septet), as used in every language: character -> code.
GSM_EXTENSION: dict[str, int] = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
    "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}
_BASIC_CODE = {char: code for code, char in enumerate(GSM_BASIC) if code != ESCAPE}
_EXTENSION_CHAR = {code: char for char, code in GSM_EXTENSION.items()}

DATA_CODING_GSM7 = 0x00
DATA_CODING_UCS2 = 0x08


@dataclass(frozen=True, slots=True)
class SmsLimits:
    """Units per SMS: one alone, or one part of a concatenated message."""

    single_gsm: int = 160
    part_gsm: int = 153
    single_ucs2: int = 70
    part_ucs2: int = 67

    def __post_init__(self) -> None:
        if not (0 < self.part_gsm <= self.single_gsm and 0 < self.part_ucs2 <= self.single_ucs2):
            raise ValueError("part limits must be positive and at most the single-message limits")
        if self.part_gsm < 2 or self.part_ucs2 < 2:
            raise ValueError("a part must hold at least one 2-unit character")


DEFAULT_LIMITS = SmsLimits()


@dataclass(frozen=True, slots=True)
class SmsSummary:
    """What a preview shows about a text."""

    characters: int  # code points
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int  # SMS parts
    units_per_segment: int  # the limit that applied: 160/153 or 70/67


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM 03.38 default alphabet or its extension table."""
    return all(ch in _BASIC_CODE or ch in GSM_EXTENSION for ch in text)


def encoding(text: str) -> Encoding:
    """``"GSM-7"`` if the text fits the GSM alphabet, else ``"UCS-2"``."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def _char_units(ch: str, enc: Encoding) -> int:
    if enc == "GSM-7":
        return 2 if ch in GSM_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def units(text: str) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) the text takes."""
    enc = encoding(text)
    return sum(_char_units(ch, enc) for ch in text)


def segments(text: str, limits: SmsLimits = DEFAULT_LIMITS) -> list[str]:
    """The text cut into SMS parts, whole characters only.

    One part if the text fits a single SMS (160 septets / 70 units), else parts of at most
    153 septets / 67 units each. An empty text is one empty part.
    """
    enc = encoding(text)
    single, part = (limits.single_gsm, limits.part_gsm) if enc == "GSM-7" else (limits.single_ucs2, limits.part_ucs2)
    costs = [_char_units(ch, enc) for ch in text]
    if sum(costs) <= single:
        return [text]
    parts: list[str] = []
    start, used = 0, 0
    for index, cost in enumerate(costs):
        if used + cost > part:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def summary(text: str, limits: SmsLimits = DEFAULT_LIMITS) -> SmsSummary:
    """Length, encoding and segment count of ``text`` (for a preview)."""
    enc = encoding(text)
    count = len(segments(text, limits))
    if enc == "GSM-7":
        per = limits.single_gsm if count == 1 else limits.part_gsm
    else:
        per = limits.single_ucs2 if count == 1 else limits.part_ucs2
    return SmsSummary(characters=len(text), encoding=enc, units=units(text), segments=count, units_per_segment=per)


def encode_gsm7(text: str) -> bytes:
    """GSM-7 septets, unpacked (one per octet), extension characters as escape + code.

    Raises:
        ValueError: a character outside the GSM alphabet.
    """
    out = bytearray()
    for ch in text:
        code = _BASIC_CODE.get(ch)
        if code is not None:
            out.append(code)
        elif ch in GSM_EXTENSION:
            out += bytes((ESCAPE, GSM_EXTENSION[ch]))
        else:
            raise ValueError(f"{ch!r} is not in the GSM 03.38 alphabet")
    return bytes(out)


def decode_gsm7(data: bytes) -> str:
    """Unpacked GSM-7 septets back to text (an unknown extension code reads as its basic character)."""
    out: list[str] = []
    escaped = False
    for octet in data:
        septet = octet & 0x7F
        if escaped:
            out.append(_EXTENSION_CHAR.get(septet, GSM_BASIC[septet] if septet != ESCAPE else " "))
            escaped = False
        elif septet == ESCAPE:
            escaped = True
        else:
            out.append(GSM_BASIC[septet])
    return "".join(out)


def encode_ucs2(text: str) -> bytes:
    """UTF-16BE (what SMSCs call UCS-2 for ``data_coding`` 8; astral characters as surrogate pairs)."""
    return text.encode("utf-16-be")


def decode_ucs2(data: bytes) -> str:
    return data.decode("utf-16-be", errors="replace")


def encode(text: str) -> tuple[int, bytes]:
    """The SMPP ``data_coding`` and the octets of ``text`` in the encoding it needs."""
    if is_gsm7(text):
        return DATA_CODING_GSM7, encode_gsm7(text)
    return DATA_CODING_UCS2, encode_ucs2(text)


def decode(data_coding: int, data: bytes) -> str:
    """Text of a short message in ``data_coding`` 0 (GSM-7), 3 (Latin-1), 8 (UCS-2) or 1 (ASCII)."""
    if data_coding == DATA_CODING_UCS2:
        return decode_ucs2(data)
    if data_coding == 0x03:
        return data.decode("latin-1")
    if data_coding == 0x01:
        return data.decode("ascii", errors="replace")
    return decode_gsm7(data)
