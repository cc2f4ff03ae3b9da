"""The warning-signal catalogue: completeness, CAP mapping rules, lookups and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broadcast import signals
from broadcast.errors import InvalidInput
from broadcast.model import (
    SEVERITY_RANK,
    Category,
    Certainty,
    Info,
    NamedValue,
    ResponseType,
    Severity,
    Urgency,
)
from broadcast.settings import Settings
from broadcast.signals import (
    SIGNAL_VALUE_NAME,
    CatalogueError,
    Level,
    Signal,
    SignalCatalogue,
    load_catalogue,
    read_catalogue,
)

WHITE, BLUE, YELLOW, ORANGE, RED = Level.WHITE, Level.BLUE, Level.YELLOW, Level.ORANGE, Level.RED

REQUIRED = {
    "typhoon": (WHITE, BLUE, YELLOW, ORANGE, RED),
    "rainstorm": (YELLOW, ORANGE, RED),
    "high_temperature": (YELLOW, ORANGE, RED),
    "cold_wave": (YELLOW, ORANGE, RED),
    "gale": (BLUE, YELLOW, ORANGE, RED),
    "fog": (YELLOW, ORANGE, RED),
    "haze": (YELLOW, ORANGE),
    "hail": (ORANGE, RED),
    "thunderstorm_gale": (YELLOW, ORANGE, RED),
    "road_icing": (YELLOW, ORANGE, RED),
    "fire_danger": (YELLOW, ORANGE, RED),
    "drought": (ORANGE, RED),
    "lightning": (YELLOW, ORANGE, RED),
    "frost": (BLUE, YELLOW, ORANGE),
    "snowstorm": (BLUE, YELLOW, ORANGE, RED),
    "sandstorm": (YELLOW, ORANGE, RED),
}
URGENCY_RANK = {Urgency.FUTURE: 1, Urgency.EXPECTED: 2, Urgency.IMMEDIATE: 3}
CJK = re.compile(r"[\u4e00-\u9fff]")
PACKAGED = Path(signals.__file__).with_name(signals.CATALOGUE_RESOURCE)


@pytest.fixture(scope="module")
def catalogue() -> SignalCatalogue:
    return load_catalogue()


def every_signal() -> list[Signal]:
    return list(load_catalogue().signals())


def test_every_required_hazard_has_exactly_its_levels(catalogue: SignalCatalogue) -> None:
    found = {hazard.code: hazard.levels for hazard in catalogue.hazards()}
    assert found == REQUIRED
    assert len(catalogue) == sum(len(levels) for levels in REQUIRED.values())


def test_load_catalogue_is_cached() -> None:
    assert load_catalogue() is load_catalogue()


def test_rainstorm_red_fills_every_cap_field(catalogue: SignalCatalogue) -> None:
    signal = catalogue.get("rainstorm", "red")
    assert signal.severity is Severity.EXTREME
    assert signal.urgency is Urgency.IMMEDIATE
    assert signal.certainty is Certainty.OBSERVED  # defined on the past 3 hours' measured rain
    assert signal.categories == (Category.MET,)
    assert signal.event("zh-CN") == "暴雨红色预警信号"
    assert signal.event("en") == "Red Rainstorm Warning"
    assert ResponseType.SHELTER in signal.response_types
    assert signal.instruction("zh-CN").strip() and CJK.search(signal.instruction("zh-CN"))
    assert signal.instruction("en").strip() and not CJK.search(signal.instruction("en"))
    assert "100" in signal.criteria("zh-CN") and "100 mm" in signal.criteria("en")
    assert signal.event_code == NamedValue(value_name="CN-MET-SIGNAL", value="rainstorm.red")
    assert re.fullmatch(r"#[0-9A-F]{6}", signal.colour)
    assert signal.headline("zh-CN") == "深圳市气象台发布全市暴雨红色预警信号，请立即到安全场所避险"


def test_typhoon_white_is_minor_future(catalogue: SignalCatalogue) -> None:
    signal = catalogue.get("typhoon", Level.WHITE)
    assert signal.severity is Severity.MINOR
    assert signal.urgency is Urgency.FUTURE
    assert signal.event("zh-CN") == "台风白色预警信号"
    assert "48" in signal.criteria("zh-CN") and "48 hours" in signal.criteria("en")


@pytest.mark.parametrize("hazard", sorted(REQUIRED))
def test_severity_and_urgency_rise_with_colour(catalogue: SignalCatalogue, hazard: str) -> None:
    chain = [catalogue.get(hazard, level) for level in catalogue.hazard(hazard).levels]
    # Severity strictly rises across the coloured levels blue..red ...
    coloured = [SEVERITY_RANK[s.severity] for s in chain if s.level is not Level.WHITE]
    assert coloured == sorted(set(coloured)), [s.code for s in chain]
    # ... and white (Minor like blue, by the Shenzhen definition) is the less urgent of the two.
    ranks = [(SEVERITY_RANK[s.severity], URGENCY_RANK[s.urgency]) for s in chain]
    assert ranks == sorted(set(ranks))


@pytest.mark.parametrize(
    ("level", "severity", "urgency"),
    [
        (WHITE, Severity.MINOR, Urgency.FUTURE),
        (BLUE, Severity.MINOR, Urgency.EXPECTED),
        (YELLOW, Severity.MODERATE, Urgency.EXPECTED),
        (ORANGE, Severity.SEVERE, Urgency.IMMEDIATE),
        (RED, Severity.EXTREME, Urgency.IMMEDIATE),
    ],
)
def test_severity_and_urgency_follow_the_colour_alone(
    catalogue: SignalCatalogue, level: Level, severity: Severity, urgency: Urgency
) -> None:
    matching = [s for s in catalogue.signals() if s.level is level]
    assert matching
    assert {(s.severity, s.urgency) for s in matching} == {(severity, urgency)}


def test_certainty_is_likely_except_observed_rainstorm(catalogue: SignalCatalogue) -> None:
    observed = {s.code for s in catalogue.signals() if s.certainty is Certainty.OBSERVED}
    assert observed == {"rainstorm.orange", "rainstorm.red"}
    others = {s.certainty for s in catalogue.signals() if s.code not in observed}
    assert others == {Certainty.LIKELY}


def test_categories(catalogue: SignalCatalogue) -> None:
    for hazard in catalogue.hazards():
        expected = (Category.FIRE,) if hazard.code == "fire_danger" else (Category.MET,)
        assert hazard.categories == expected, hazard.code


@pytest.mark.parametrize("signal", every_signal(), ids=lambda s: s.code)
def test_event_code_round_trip(catalogue: SignalCatalogue, signal: Signal) -> None:
    codes = [NamedValue("SAME", "SVR"), signal.event_code]
    assert catalogue.from_event_codes(codes) is signal
    assert catalogue.from_event_codes([NamedValue("cn-met-signal", signal.code.upper())]) is signal


@pytest.mark.parametrize("signal", every_signal(), ids=lambda s: s.code)
def test_texts_are_complete_and_make_a_valid_cap_info(signal: Signal) -> None:
    limit = Settings().max_headline_length
    zh_level, en_level = signal.level_name("zh-CN"), signal.level_name("en")
    assert signal.hazard.name("zh-CN") in signal.event("zh-CN") and zh_level in signal.event("zh-CN")
    assert signal.event("en").startswith(en_level) and signal.event("en").endswith("Warning")
    assert signal.response_types
    for language in ("zh-CN", "en"):
        for text in (signal.headline(language), signal.criteria(language), signal.instruction(language)):
            assert text.strip()
            assert bool(CJK.search(text)) is (language == "zh-CN"), (language, text)
        assert len(signal.headline(language)) <= limit
        sentences = signal.instruction(language).count("。" if language == "zh-CN" else ". ") + (language == "en")
        assert 2 <= sentences <= 5, (signal.code, language, sentences)
        Info(
            language=language,
            categories=signal.categories,
            event=signal.event(language),
            urgency=signal.urgency,
            severity=signal.severity,
            certainty=signal.certainty,
            response_types=signal.response_types,
            event_codes=(signal.event_code,),
            headline=signal.headline(language),
            description=signal.criteria(language),
            instruction=signal.instruction(language),
        )


def test_headline_takes_area_and_issuer(catalogue: SignalCatalogue) -> None:
    signal = catalogue.get("typhoon", "orange")
    assert signal.headline("zh-CN", area="福田区、南山区").startswith("深圳市气象台发布福田区、南山区台风橙色")
    assert signal.headline("en", issuer="SZMB", area="Futian").startswith(
        "SZMB issues the Orange Typhoon Warning for Futian"
    )


def test_lookup_is_case_insensitive(catalogue: SignalCatalogue) -> None:
    assert catalogue.get(" Rainstorm ", "RED") is catalogue.get("rainstorm", Level.RED)


def test_unknown_hazard(catalogue: SignalCatalogue) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalogue.get("tsunami", "red")
    assert caught.value.field == "signal.hazard"
    assert "typhoon" in caught.value.message and "rainstorm" in caught.value.message


@pytest.mark.parametrize(("hazard", "level"), [("hail", "yellow"), ("typhoon", "purple"), ("rainstorm", "white")])
def test_level_the_hazard_does_not_have(catalogue: SignalCatalogue, hazard: str, level: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalogue.get(hazard, level)
    assert caught.value.field == "signal.level"
    levels = ", ".join(lvl.value for lvl in catalogue.hazard(hazard).levels)
    assert levels in caught.value.message


@pytest.mark.parametrize(
    ("requested", "served"),
    [("zh-CN", "zh-CN"), ("ZH-cn", "zh-CN"), ("zh", "zh-CN"), ("zh-Hans", "zh-CN"), ("en", "en"), ("en-US", "en")],
)
def test_language_fallback(catalogue: SignalCatalogue, requested: str, served: str) -> None:
    signal = catalogue.get("rainstorm", "red")
    assert signal.event(requested) == signal.event(served)
    assert signal.instruction(requested) == signal.instruction(served)


@pytest.mark.parametrize("language", ["fr", "ja-JP", "zh-HK", "zh-TW", "zh-Hant", "", "en US", "e1"])
def test_unknown_language(catalogue: SignalCatalogue, language: str) -> None:
    signal = catalogue.get("rainstorm", "red")
    for method in (signal.event, signal.headline, signal.instruction, signal.criteria):
        with pytest.raises(InvalidInput) as caught:
            method(language)
        assert caught.value.field == "language"


def test_from_event_codes_without_a_signal(catalogue: SignalCatalogue) -> None:
    assert catalogue.from_event_codes([]) is None
    assert catalogue.from_event_codes([NamedValue("SAME", "FFW")]) is None


@pytest.mark.parametrize(
    ("codes", "field"),
    [
        ([NamedValue("SAME", "FFW"), NamedValue(SIGNAL_VALUE_NAME, "rainstorm")], "event_codes[1]"),
        ([NamedValue(SIGNAL_VALUE_NAME, "tsunami.red")], "event_codes[0]"),
        ([NamedValue(SIGNAL_VALUE_NAME, "hail.blue")], "event_codes[0]"),
        ([NamedValue(SIGNAL_VALUE_NAME, "hail.red"), NamedValue(SIGNAL_VALUE_NAME, "hail.orange")], "event_codes[1]"),
    ],
)
def test_from_event_codes_rejects_bad_signal_codes(
    catalogue: SignalCatalogue, codes: list[NamedValue], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalogue.from_event_codes(codes)
    assert caught.value.field == field


def test_packaged_file_reads_the_same_through_the_path_loader() -> None:
    again = read_catalogue(PACKAGED)
    assert again.signals() == load_catalogue().signals()


def _break(tmp_path: Path, section: str, old: str, new: str) -> Path:
    """Copy the packaged catalogue, replacing ``old`` by ``new`` inside one [section]."""
    text = PACKAGED.read_text(encoding="utf-8")
    start = text.index(f"[{section}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end == -1 else end
    block = text[start:end]
    assert old in block, (section, old)
    path = tmp_path / "signals.toml"
    path.write_text(text[:start] + block.replace(old, new, 1) + text[end:], encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("section", "old", "new", "entry"),
    [
        (
            "hazards.rainstorm.levels.red",
            'instruction.en = "',
            'instruction.fr = "',
            "hazards.rainstorm.levels.red.instruction",
        ),
        (
            "hazards.rainstorm.levels.red",
            'event = { "zh-CN" = "暴雨红色预警信号", ',
            'event = { "zh-CN" = "  ", ',
            "hazards.rainstorm.levels.red.event.zh-CN",
        ),
        (
            "hazards.rainstorm.levels.red",
            'certainty = "Observed"',
            'certainty = "Certain"',
            "hazards.rainstorm.levels.red.certainty",
        ),
        (
            "hazards.hail.levels.red",
            '"Shelter", "Avoid"',
            '"Shelter", "Panic"',
            "hazards.hail.levels.red.response_types[1]",
        ),
        ("hazards.fog.levels.red", "{issuer}发布", "{issuer}于{time}发布", "hazards.fog.levels.red.headline.zh-CN"),
        ("hazards.gale.levels.blue", 'criteria."zh-CN"', 'critera."zh-CN"', "hazards.gale.levels.blue"),
        (
            "hazards.fire_danger",
            'categories = ["Fire"]',
            'categories = ["Forest"]',
            "hazards.fire_danger.categories[0]",
        ),
        ("levels.red", 'severity = "Extreme"', 'severity = "Catastrophic"', "levels.red.severity"),
        ("levels.orange", 'severity = "Severe"', 'severity = "Minor"', "levels.orange"),
        ("levels.blue", 'colour = "#1E6FD9"', 'colour = "blue"', "levels.blue.colour"),
    ],
)
def test_broken_entry_is_rejected_naming_it(tmp_path: Path, section: str, old: str, new: str, entry: str) -> None:
    path = _break(tmp_path, section, old, new)
    with pytest.raises(CatalogueError) as caught:
        read_catalogue(path)
    assert caught.value.field == entry
    assert entry in str(caught.value)
    assert str(path) in str(caught.value)


def test_unknown_colour_is_rejected_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "signals.toml"
    text = PACKAGED.read_text(encoding="utf-8")
    path.write_text(text.replace("[hazards.hail.levels.red]", "[hazards.hail.levels.purple]"), encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        read_catalogue(path)
    assert caught.value.field == "hazards.hail.levels.purple"
    assert "white, blue, yellow, orange, red" in caught.value.message


def test_not_toml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "signals.toml"
    path.write_text("[hazards.rainstorm\nname = 1\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid UTF-8 TOML"):
        read_catalogue(path)


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot be read"):
        read_catalogue(tmp_path / "absent.toml")


def test_level_scale() -> None:
    assert [level.value for level in Level] == ["white", "blue", "yellow", "orange", "red"]
    assert [level.rank for level in Level] == [0, 1, 2, 3, 4]
