"""SMS text rules: encoding choice, septet/unit counting, segment boundaries, GSM-7 codec."""

from __future__ import annotations

import pytest

from channels.sms_text import (
    GSM_BASIC,
    GSM_EXTENSION,
    SmsLimits,
    decode_gsm7,
    decode_ucs2,
    encode,
    encode_gsm7,
    encoding,
    segments,
    summary,
    units,
)


def test_encoding_choice() -> None:
    assert encoding("Take shelter now @ £5 ÄÖ") == "GSM-7"
    assert encoding("Price €5 [x] {y} ~|^\\") == "GSM-7"
    assert encoding("暴雨红色预警") == "UCS-2"
    assert encoding("café") == "GSM-7"  # é is in the default alphabet
    assert encoding("olá") == "UCS-2"  # á is not
    assert encoding("naïve") == "UCS-2"  # ï is not in the default alphabet
    assert encoding("tab\there") == "UCS-2"
    assert encoding("esc\x1bape") == "UCS-2"  # a literal escape is not a character of the alphabet
    assert encoding("") == "GSM-7"


def test_the_default_alphabet_has_128_positions_and_ten_extension_characters() -> None:
    assert len(GSM_BASIC) == 128
    assert GSM_BASIC[0x00] == "@" and GSM_BASIC[0x11] == "_" and GSM_BASIC[0x5F] == "§" and GSM_BASIC[0x7F] == "à"
    assert set(GSM_EXTENSION) == set("\f^{}\\[~]|€")


def test_gsm_single_message_boundary_160_161() -> None:
    assert segments("a" * 160) == ["a" * 160]
    parts = segments("a" * 161)
    assert [len(p) for p in parts] == [153, 8]
    assert summary("a" * 160).segments == 1 and summary("a" * 160).units_per_segment == 160
    assert summary("a" * 161).segments == 2 and summary("a" * 161).units_per_segment == 153


def test_extension_characters_count_two_septets() -> None:
    assert units("€") == 2 and units("[") == 2 and units("a€b") == 4
    assert segments("€" * 80) == ["€" * 80]  # exactly 160 septets
    assert len(segments("€" * 80 + "a")) == 2  # 161 septets
    assert len(segments("a" * 158 + "[")) == 1
    assert len(segments("a" * 159 + "[")) == 2
    s = summary("€" * 10)
    assert (s.characters, s.encoding, s.units, s.segments) == (10, "GSM-7", 20, 1)


def test_a_153_septet_part_never_ends_in_an_escape() -> None:
    # 152 plain septets then "€": the escape would be septet 153 and its code septet 154.
    text = "a" * 152 + "€" + "b" * 20
    parts = segments(text)
    assert parts[0] == "a" * 152
    assert parts[1].startswith("€")
    assert "".join(parts) == text
    for part in parts:
        octets = encode_gsm7(part)
        assert len(octets) <= 153
        assert octets[-1] != 0x1B
        assert decode_gsm7(octets) == part


def test_every_gsm_part_fills_up_to_153_septets() -> None:
    text = "".join("x[" if i % 3 == 0 else "y" for i in range(400))
    parts = segments(text)
    assert "".join(parts) == text
    assert all(units(p) <= 153 for p in parts)
    assert all(units(p) >= 152 for p in parts[:-1])  # only a 2-septet character can leave one free


def test_ucs2_boundaries_70_71() -> None:
    assert segments("雨" * 70) == ["雨" * 70]
    parts = segments("雨" * 71)
    assert [len(p) for p in parts] == [67, 4]
    assert summary("雨" * 71).units_per_segment == 67
    assert summary("雨" * 135).segments == 3  # 67 + 67 + 1


def test_surrogate_pairs_count_two_and_are_never_split() -> None:
    assert units("⚠") == 1  # in the BMP
    assert units("🌀") == 2
    assert len(segments("🌀" * 35)) == 1  # 70 units
    text = "雨" * 66 + "🌀" + "雨" * 10
    parts = segments(text)
    assert parts[0] == "雨" * 66 and parts[1].startswith("🌀")
    for part in parts:
        octets = part.encode("utf-16-be")
        assert len(octets) <= 134
        assert decode_ucs2(octets) == part  # no lone surrogate at either end


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    text = "a" * 100 + "雨"
    assert encoding(text) == "UCS-2"
    assert [len(p) for p in segments(text)] == [67, 34]


def test_gsm7_codec_round_trip_and_bytes() -> None:
    assert encode_gsm7("@A€[") == bytes((0x00, 0x41, 0x1B, 0x65, 0x1B, 0x3C))
    text = "".join(ch for ch in GSM_BASIC if ch != "\x1b") + "".join(GSM_EXTENSION)
    assert decode_gsm7(encode_gsm7(text)) == text
    with pytest.raises(ValueError):
        encode_gsm7("雨")
    assert encode("Hi") == (0, b"Hi")
    assert encode("雨") == (8, "雨".encode("utf-16-be"))


def test_limits_are_configurable_and_checked() -> None:
    small = SmsLimits(single_gsm=10, part_gsm=5, single_ucs2=4, part_ucs2=3)
    assert [len(p) for p in segments("a" * 11, small)] == [5, 5, 1]
    with pytest.raises(ValueError):
        SmsLimits(part_gsm=200)
