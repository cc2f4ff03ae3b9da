"""Composing an alert from a request: what the signal fills in, overrides, defaults, policy."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broadcast.compose import Composed, compose, merge_requests, policy_findings
from broadcast.errors import InvalidInput
from broadcast.model import (
    Alert,
    Category,
    Certainty,
    MsgType,
    NamedValue,
    Reference,
    ResponseType,
    Severity,
    Status,
    Urgency,
)
from broadcast.settings import Settings
from broadcast.signals import load_catalogue

SETTINGS = Settings()
CATALOGUE = load_catalogue()
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=TZ)

FUTIAN = {
    "type": "Polygon",
    "coordinates": [[[114.02, 22.52], [114.09, 22.52], [114.09, 22.58], [114.02, 22.58], [114.02, 22.52]]],
}


def futian(desc: str = "福田区") -> dict[str, Any]:
    return {"desc": desc, "geometry": copy.deepcopy(FUTIAN)}


def request(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"signal": {"hazard": "rainstorm", "level": "red"}, "areas": [futian()]}
    doc.update(changes)
    return doc


def run(doc: dict[str, Any], settings: Settings = SETTINGS, **kwargs: Any) -> Composed:
    return compose(doc, settings=settings, catalogue=CATALOGUE, identifier="SZMB-TEST-1", sent=T0, **kwargs)


def refused(doc: dict[str, Any], settings: Settings = SETTINGS) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        run(doc, settings)
    return caught.value


def full_info(language: str, headline: str = "h") -> dict[str, Any]:
    return {"language": language, "categories": ["Safety"], "event": "Drill", "urgency": "Future",
            "severity": "Minor", "certainty": "Possible", "headline": headline}


# ---------------------------------------------------------------- what the signal fills in


def test_the_signal_fills_every_cap_field_in_both_languages() -> None:
    composed = run(request())
    signal = CATALOGUE.get("rainstorm", "red")
    assert composed.signal == signal
    alert = composed.alert
    assert alert.languages == ("zh-CN", "en")
    assert (alert.identifier, alert.sender, alert.sent) == ("SZMB-TEST-1", SETTINGS.sender, T0)
    assert (alert.status, alert.msg_type) == (Status.ACTUAL, MsgType.ALERT)
    for info in alert.infos:
        assert info.categories == (Category.MET,)
        assert info.urgency is Urgency.IMMEDIATE
        assert info.severity is Severity.EXTREME
        assert info.certainty is Certainty.OBSERVED
        assert info.response_types == (ResponseType.SHELTER, ResponseType.AVOID, ResponseType.EVACUATE)
        assert info.event_codes == (NamedValue("CN-MET-SIGNAL", "rainstorm.red"),)
        assert info.description == signal.criteria(info.language)
        assert info.instruction == signal.instruction(info.language)
        assert (info.sender_name, info.contact, info.web) == (SETTINGS.sender_name, SETTINGS.contact, SETTINGS.web)
    zh, en = alert.infos
    assert zh.event == "暴雨红色预警信号"
    assert en.event == "Red Rainstorm Warning"
    assert zh.headline == "深圳市气象台发布福田区暴雨红色预警信号，请立即到安全场所避险"
    assert en.headline == ("Shenzhen Meteorological Observatory issues the Red Rainstorm Warning for 福田区: "
                           "take shelter in a safe place now")
    assert "100毫米" in zh.description  # type: ignore[operator]
    assert "100 mm" in en.description  # type: ignore[operator]


def test_a_weaker_signal_fills_its_own_values() -> None:
    info = run(request(signal={"hazard": "typhoon", "level": "white"})).alert.infos[1]
    assert (info.severity, info.urgency, info.certainty) == (Severity.MINOR, Urgency.FUTURE, Certainty.LIKELY)
    assert info.event_codes == (NamedValue("CN-MET-SIGNAL", "typhoon.white"),)


def test_the_headline_names_several_short_areas() -> None:
    doc = request(areas=[futian("福田区"), futian("南山区")])
    zh, en = run(doc).alert.infos
    assert "福田区、南山区暴雨红色预警信号" in zh.headline  # type: ignore[operator]
    assert "for 福田区, 南山区:" in en.headline  # type: ignore[operator]


def test_areas_too_long_to_name_are_parts_of_the_city_never_the_whole_city() -> None:
    names = [f"District number {i:02d}" for i in range(4)]  # 18 characters each
    zh, en = run(request(areas=[futian(n) for n in names])).alert.infos
    assert "发布部分地区暴雨红色预警信号" in zh.headline  # type: ignore[operator]
    assert "for parts of the city:" in en.headline  # type: ignore[operator]
    assert "全市" not in (zh.headline or "") and "Shenzhen:" not in (en.headline or "")
    assert not any(n in (zh.headline or "") + (en.headline or "") for n in names)


def test_forty_characters_of_area_are_still_named() -> None:
    exactly_40 = "x" * 40
    en = run(request(areas=[futian(exactly_40)])).alert.infos[1]
    assert f"for {exactly_40}:" in en.headline  # type: ignore[operator]
    en = run(request(areas=[futian(exactly_40 + "y")])).alert.infos[1]
    assert "for parts of the city:" in en.headline  # type: ignore[operator]


def test_a_headline_too_long_with_its_area_names_says_parts_of_the_city() -> None:
    # The longest English template (high temperature) with 40 characters of area: past the 160 allowed.
    area = "Guangming District, Longhua District, Fu"
    named = run(request(signal={"hazard": "rainstorm", "level": "red"}, areas=[futian(area)])).alert.infos[1]
    assert f"for {area}:" in named.headline  # type: ignore[operator]
    composed = run(request(signal={"hazard": "high_temperature", "level": "orange"}, areas=[futian(area)]))
    en = composed.alert.infos[1]
    assert "for parts of the city:" in en.headline and len(en.headline) <= 160  # type: ignore[arg-type, operator]


def test_info_overrides_win_over_the_signal() -> None:
    doc = request(info=[
        {"language": "zh-CN", "description": "福田区过去3小时降雨量已超过100毫米。"},
        {"language": "en", "headline": "Red rainstorm: stay indoors", "urgency": "Expected",
         "response_types": ["Monitor"]},
    ])
    zh, en = run(doc).alert.infos
    assert zh.description == "福田区过去3小时降雨量已超过100毫米。"
    assert zh.headline == "深圳市气象台发布福田区暴雨红色预警信号，请立即到安全场所避险"  # not overridden
    assert zh.urgency is Urgency.IMMEDIATE
    assert en.headline == "Red rainstorm: stay indoors"
    assert en.urgency is Urgency.EXPECTED
    assert en.response_types == (ResponseType.MONITOR,)
    assert en.description == CATALOGUE.get("rainstorm", "red").criteria("en")


def test_an_info_override_of_areas_replaces_the_top_level_areas_for_that_language() -> None:
    nanshan = {"desc": "南山区", "geocodes": [{"value_name": "adcode", "value": "440305"}]}
    zh, en = run(request(info=[{"language": "zh-CN"}, {"language": "en", "areas": [nanshan]}])).alert.infos
    assert [a.desc for a in zh.areas] == ["福田区"]
    assert [a.desc for a in en.areas] == ["南山区"]


def test_top_level_areas_and_times_apply_to_every_language() -> None:
    doc = request(effective="2026-07-01T09:00:00+08:00", onset="2026-07-01T10:00:00+08:00",
                  expires="2026-07-01T20:00:00+08:00",
                  areas=[futian(), {"desc": "Shekou", "circles": [{"lon": 113.91, "lat": 22.48, "radius_km": 3}]}])
    zh, en = run(doc).alert.infos
    for info in (zh, en):
        assert info.effective == datetime(2026, 7, 1, 9, tzinfo=TZ)
        assert info.onset == datetime(2026, 7, 1, 10, tzinfo=TZ)
        assert info.expires == datetime(2026, 7, 1, 20, tzinfo=TZ)
    assert zh.areas == en.areas
    assert [a.desc for a in zh.areas] == ["福田区", "Shekou"]
    assert zh.areas[0].polygons[0].points[0] == (114.02, 22.52)
    assert zh.areas[1].circles[0].radius_km == 3.0


def test_default_expiry_is_default_validity_hours_after_effective() -> None:
    info = run(request()).alert.infos[0]
    assert info.effective == T0
    assert info.onset is None
    assert info.expires == T0 + timedelta(hours=6)
    shorter = run(request(), Settings(default_validity_hours=1.5)).alert.infos[0]
    assert shorter.expires == T0 + timedelta(hours=1, minutes=30)


def test_default_expiry_counts_from_onset_when_given() -> None:
    info = run(request(onset="2026-07-01T12:00:00+08:00")).alert.infos[0]
    assert info.expires == datetime(2026, 7, 1, 18, tzinfo=TZ)


def test_expires_before_effective_is_refused() -> None:
    err = refused(request(effective="2026-07-01T12:00:00+08:00", expires="2026-07-01T11:00:00+08:00"))
    assert err.field == "expires"
    assert "effective" in err.message


def test_expires_before_onset_is_refused() -> None:
    err = refused(request(onset="2026-07-01T12:00:00+08:00", expires="2026-07-01T11:00:00+08:00"))
    assert err.field == "expires"
    assert "onset" in err.message


def test_expires_already_past_is_refused() -> None:
    err = refused(request(effective="2026-07-01T05:00:00+08:00", expires="2026-07-01T07:00:00+08:00"))
    assert err.field == "expires"
    assert "past" in err.message


def test_time_without_offset_is_refused() -> None:
    assert refused(request(expires="2026-07-01T20:00:00")).field == "expires"


# ---------------------------------------------------------------- languages


def test_languages_list_sets_the_languages_and_their_order() -> None:
    assert run(request(languages=["en", "zh-CN"])).alert.languages == ("en", "zh-CN")


def test_only_the_required_languages_by_default() -> None:
    assert run(request()).alert.languages == ("zh-CN", "en")
    settings = Settings(languages=("zh-CN", "en"), required_languages=("zh-CN",))
    assert run(request(), settings).alert.languages == ("zh-CN",)
    assert run(request(languages=["zh-CN", "en"]), settings).alert.languages == ("zh-CN", "en")


def test_the_info_languages_are_the_languages_when_no_list_is_given() -> None:
    settings = Settings(required_languages=("zh-CN",))
    alert = run(request(info=[{"language": "zh-CN", "description": "只有中文"}]), settings).alert
    assert alert.languages == ("zh-CN",)
    assert alert.infos[0].description == "只有中文"


def test_a_language_the_service_does_not_send_in_is_refused() -> None:
    err = refused(request(languages=["zh-CN", "fr"]))
    assert err.field == "languages[1]"
    assert "fr" in err.message


def test_a_language_given_twice_is_refused() -> None:
    assert refused(request(languages=["zh-CN", "en", "zh-CN"])).field == "languages[2]"


def test_an_info_in_an_unsupported_language_is_refused() -> None:
    err = refused(request(info=[{"language": "zh-CN"}, {"language": "en"}, {"language": "de"}]))
    assert err.field == "info[2].language"


def test_leaving_out_a_required_language_is_refused() -> None:
    err = refused(request(languages=["zh-CN"]))
    assert err.field == "info"
    assert "en" in err.message


def test_an_info_override_outside_the_languages_list_is_refused() -> None:
    doc = request(languages=["zh-CN", "en"], info=[{"language": "EN", "description": "Our own text."}])
    err = refused(doc)
    assert err.field == "info[0].language"


def test_a_language_the_catalogue_lacks_is_refused_naming_the_request_field() -> None:
    settings = Settings(languages=("zh-CN", "en", "fr"))
    err = refused(request(languages=["zh-CN", "en", "fr"]), settings)
    assert err.field == "languages[2]"


# ---------------------------------------------------------------- other request fields


def test_request_is_kept_with_the_alert() -> None:
    doc = request(note="drill", status="Exercise", codes=["IPAWSv1.0"])
    composed = run(doc)
    assert composed.request == doc
    assert composed.request is not doc
    assert composed.alert.status is Status.EXERCISE
    assert composed.alert.note == "drill"
    assert composed.alert.codes == ("IPAWSv1.0",)


def test_msg_type_and_references_are_passed_through() -> None:
    ref = Reference("alerts@szmb.example", "SZMB-0", T0 - timedelta(hours=1))
    alert = run(request(), msg_type=MsgType.UPDATE, references=(ref,)).alert
    assert alert.msg_type is MsgType.UPDATE
    assert alert.references == (ref,)


def test_without_a_signal_info_must_supply_the_cap_fields() -> None:
    doc = {"areas": [futian()], "info": [full_info("zh-CN", "演习"), full_info("en", "Drill")]}
    composed = run(doc)
    assert composed.signal is None
    assert [i.headline for i in composed.alert.infos] == ["演习", "Drill"]
    assert composed.alert.infos[0].event_codes == ()
    missing = {"areas": [futian()], "info": [{"language": "zh-CN", "event": "x"}, {"language": "en"}]}
    assert refused(missing).field == "info[0].urgency"


@pytest.mark.parametrize(("doc", "field"), [
    (request(colour="red"), "colour"),
    (request(signal={"hazard": "rainstorm", "level": "purple"}), "signal.level"),
    (request(signal={"hazard": "meteor"}), "signal.level"),
    (request(signal={"hazard": "meteor", "level": "red"}), "signal.hazard"),
    (request(signal={"hazard": "rainstorm", "level": "red", "x": 1}), "signal.x"),
    (request(areas=[]), "areas"),
    (request(areas=[{"desc": "bad", "geometry": {"type": "Point", "coordinates": [114, 22]}}]),
     "areas[0].geometry.type"),
    (request(areas=[{"desc": "hole", "geometry": {"type": "Polygon", "coordinates": [
        FUTIAN["coordinates"][0], FUTIAN["coordinates"][0]]}}]), "areas[0].geometry.coordinates[1]"),
    (request(status="Rumour"), "status"),
    (request(codes=["ok", 3]), "codes"),
    (request(info=[{"language": "zh-CN", "headline": "x" * 161}, {"language": "en"}]), "info[0].headline"),
    (request(info=[{"language": "zh-CN"}, {"language": "en", "instruction": "y" * 4001}]), "info[1].instruction"),
])
def test_bad_requests_name_the_field(doc: dict[str, Any], field: str) -> None:
    assert refused(doc).field == field


# ---------------------------------------------------------------- merge_requests


def test_merge_replaces_top_level_keys() -> None:
    base = request(expires="2026-07-01T20:00:00+08:00", note="first")
    merged = merge_requests(base, {"signal": {"hazard": "rainstorm", "level": "orange"}, "areas": [futian("南山区")]})
    assert merged["signal"] == {"hazard": "rainstorm", "level": "orange"}
    assert merged["areas"] == [futian("南山区")]
    assert merged["expires"] == "2026-07-01T20:00:00+08:00"
    assert merged["note"] == "first"


def test_merge_none_deletes_a_top_level_key() -> None:
    merged = merge_requests(request(note="first", expires="2026-07-01T20:00:00+08:00"), {"note": None})
    assert "note" not in merged
    assert merged["expires"] == "2026-07-01T20:00:00+08:00"
    assert merge_requests(request(), {"absent": None}) == request()


def test_merge_info_per_language() -> None:
    base = request(info=[{"language": "zh-CN", "description": "中文", "headline": "标题"},
                         {"language": "en", "description": "English"}])
    merged = merge_requests(base, {"info": [{"language": "en", "description": "Changed"},
                                            {"language": "zh-CN", "headline": "新标题"}]})
    assert merged["info"] == [{"language": "zh-CN", "description": "中文", "headline": "新标题"},
                              {"language": "en", "description": "Changed"}]
    zh, en = run(merged).alert.infos
    assert (zh.headline, zh.description) == ("新标题", "中文")
    assert en.description == "Changed"


def test_merge_none_inside_an_info_entry_deletes_that_override() -> None:
    base = request(info=[{"language": "zh-CN", "description": "中文", "headline": "标题"},
                         {"language": "en"}])
    merged = merge_requests(base, {"info": [{"language": "zh-CN", "headline": None}]})
    assert merged["info"][0] == {"language": "zh-CN", "description": "中文"}
    zh = run(merged).alert.infos[0]
    assert zh.headline == "深圳市气象台发布福田区暴雨红色预警信号，请立即到安全场所避险"


def test_merge_info_adds_a_new_language() -> None:
    base = request(info=[{"language": "zh-CN", "description": "中文"}])
    merged = merge_requests(base, {"info": [{"language": "en", "description": "English"}]})
    assert merged["info"] == [{"language": "zh-CN", "description": "中文"},
                              {"language": "en", "description": "English"}]


def test_merge_info_into_a_request_without_info_replaces() -> None:
    merged = merge_requests(request(), {"info": [{"language": "en", "description": "x"}]})
    assert merged["info"] == [{"language": "en", "description": "x"}]


def test_merge_info_none_deletes_every_override() -> None:
    assert "info" not in merge_requests(request(info=[{"language": "en", "description": "x"}]), {"info": None})


def test_merge_leaves_its_inputs_alone() -> None:
    base = request(info=[{"language": "en", "description": "English"}])
    change = {"info": [{"language": "en", "description": "Changed"}], "note": "n"}
    snapshot_base, snapshot_change = copy.deepcopy(base), copy.deepcopy(change)
    merge_requests(base, change)
    assert base == snapshot_base and change == snapshot_change


# ---------------------------------------------------------------- policy_findings


def issued_alert() -> Alert:
    return run(request()).alert


def replace_info(alert: Alert, index: int, **changes: Any) -> Alert:
    infos = list(alert.infos)
    infos[index] = dataclasses.replace(infos[index], **changes)
    return dataclasses.replace(alert, infos=tuple(infos))


def codes_and_fields(alert: Alert, settings: Settings = SETTINGS) -> list[tuple[str, str]]:
    return [(f.code, f.field) for f in policy_findings(alert, settings)]


def test_a_composed_alert_has_no_findings() -> None:
    assert policy_findings(issued_alert(), SETTINGS) == []


def test_finding_missing_language() -> None:
    alert = issued_alert()
    only_chinese = dataclasses.replace(alert, infos=alert.infos[:1])
    findings = policy_findings(only_chinese, SETTINGS)
    assert [(f.code, f.field) for f in findings] == [("missing_language", "info")]
    assert "'en'" in findings[0].message


def test_finding_unsupported_language() -> None:
    alert = replace_info(issued_alert(), 1, language="de")
    assert codes_and_fields(alert) == [("missing_language", "info"), ("unsupported_language", "info[1].language")]


def test_finding_too_long_headline() -> None:
    alert = replace_info(issued_alert(), 0, headline="长" * 161)
    assert codes_and_fields(alert) == [("too_long", "info[0].headline")]
    assert codes_and_fields(replace_info(issued_alert(), 0, headline="长" * 160)) == []
    assert codes_and_fields(alert, Settings(max_headline_length=200)) == []


@pytest.mark.parametrize("key", ["description", "instruction"])
def test_finding_too_long_text(key: str) -> None:
    alert = replace_info(issued_alert(), 1, **{key: "w" * 4001})
    findings = policy_findings(alert, SETTINGS)
    assert [(f.code, f.field) for f in findings] == [("too_long", f"info[1].{key}")]
    assert "4001" in findings[0].message and "4000" in findings[0].message


def test_finding_missing_headline_and_area() -> None:
    alert = replace_info(issued_alert(), 1, headline=None, areas=())
    assert codes_and_fields(alert) == [("missing_headline", "info[1].headline"), ("missing_area", "info[1].areas")]
