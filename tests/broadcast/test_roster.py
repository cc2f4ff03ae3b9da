"""The duty roster: officers, shifts, CSV import (every bad row named, nothing stored), the demo roster, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from broadcast import keys
from broadcast.errors import InvalidInput
from broadcast.roster import (
    CSV_COLUMNS,
    Officer,
    Rank,
    RosterFileError,
    RosterStore,
    bind_user,
    demo_roster,
    parse_csv,
    parse_shifts,
    to_csv,
    units_of_user,
)
from broadcast.settings import Settings
from geotarget import build_demo_gazetteer

BIN = Path(sys.executable).parent
ZONE = ZoneInfo("Asia/Shanghai")
HEADER = ",".join(CSV_COLUMNS)
GOOD_ROWS = [
    "440304,futian-1,王伟,primary,duty-futian,zh-CN,+8619200000001,+8619200000001,,,,sms>voice,",
    "440304,futian-2,李娜,deputy,,en,+8619200000002,,,,li.na@example.org,email>sms,"
    '"Mon-Fri 08:00-18:00; Sat,Sun 22:00-06:00"',
    "440304001,gang-1,张敏,primary,,zh-CN,,,oSZMB0000000000000000000001,,,wechat,",
]


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.fixture(scope="module")
def gazetteer():  # type: ignore[no-untyped-def]
    return build_demo_gazetteer()


@pytest.fixture
def store(redis_client: redis.Redis) -> RosterStore:
    return RosterStore(redis_client)


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every roster key and the user bindings, to prove a refused import changed nothing."""
    return {key: client.hgetall(key) for key in (keys.ROSTER_OFFICERS, keys.ROSTER_UNITS, keys.ROSTER_PHONES,
                                                 keys.ROSTER_META, keys.USER_UNITS)} | {
        "users": client.smembers(keys.ROSTER_USERS)}


# ---------------------------------------------------------------- shifts and officers


def test_shifts_cover_their_days_and_hours_overnight_included() -> None:
    office, night = parse_shifts("Mon-Fri 08:00-18:00; Sat,Sun 22:00-06:00")
    assert office.covers(datetime(2026, 7, 1, 8, 0, tzinfo=ZONE))  # a Wednesday
    assert not office.covers(datetime(2026, 7, 1, 18, 0, tzinfo=ZONE))
    assert not office.covers(datetime(2026, 7, 4, 10, 0, tzinfo=ZONE))  # Saturday
    assert night.covers(datetime(2026, 7, 4, 23, 0, tzinfo=ZONE))  # Saturday night
    assert night.covers(datetime(2026, 7, 6, 5, 59, tzinfo=ZONE))  # Monday morning, from Sunday's shift
    assert not night.covers(datetime(2026, 7, 4, 5, 0, tzinfo=ZONE))  # Saturday morning: Friday has no night
    assert str(office) == "Mon,Tue,Wed,Thu,Fri 08:00-18:00"
    [always] = parse_shifts("daily 00:00-24:00")
    assert always.covers(datetime(2026, 7, 5, 23, 59, tzinfo=ZONE))
    assert parse_shifts("") == ()


@pytest.mark.parametrize("text", ["Mon-Fri", "Someday 08:00-18:00", "Mon 8:00-18:00", "Mon 08:00-08:00",
                                  "Mon 24:00-08:00", "Mon 08:00-25:00", "Mon 08:00"])
def test_bad_shifts_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_shifts(text)
    assert caught.value.field == "shifts"


def test_the_next_channel_is_the_next_in_the_order_then_voice() -> None:
    officer = Officer("a-1", "440304", "王伟", Rank.PRIMARY, {"sms": "+8619200000001", "wechat":
                      "oSZMB0000000000000000000001", "voice": "+8619200000001"}, ("wechat", "sms"))
    assert officer.channel_after("wechat") == "sms"
    assert officer.channel_after("sms") == "voice"  # the order is used up: a call
    silent = Officer("a-2", "440304", "李娜", Rank.DEPUTY, {"email": "li@example.org"}, ("email",))
    assert silent.channel_after("email") == "email"


# ---------------------------------------------------------------- CSV


def test_a_good_file_is_imported_with_users_bound_and_on_duty_in_rank_order(store: RosterStore, gazetteer,
                                                                           redis_client: redis.Redis) -> None:
    officers = parse_csv(csv_text(GOOD_ROWS[1], GOOD_ROWS[0], GOOD_ROWS[2]), gazetteer)
    assert store.replace(officers, source="test.csv") == 3
    wednesday_noon = datetime(2026, 7, 1, 12, 0, tzinfo=ZONE)
    saturday_noon = datetime(2026, 7, 4, 12, 0, tzinfo=ZONE)
    assert [o.id for o in store.on_duty("440304", wednesday_noon)] == ["futian-1", "futian-2"]  # primary first
    assert [o.id for o in store.on_duty("440304", saturday_noon)] == ["futian-1"]
    assert [o.id for o in store.load().on_duty("440304", saturday_noon)] == ["futian-1"]
    deputy = store.officer("futian-2")
    assert deputy is not None and deputy.language == "en" and deputy.order == ("email", "sms")
    assert [o.id for o in store.by_phone("+8619200000001")] == ["futian-1"]
    assert units_of_user(redis_client, "duty-futian") == {"440304"}
    assert store.meta()["source"] == "test.csv" and store.meta()["officers"] == "3"
    assert parse_csv(to_csv(officers), gazetteer) == officers  # the CSV round-trips


def test_an_import_replaces_the_roster_and_unbinds_users_it_drops(store: RosterStore, gazetteer,
                                                                   redis_client: redis.Redis) -> None:
    bind_user(redis_client, "dave", ["440303"])  # bound by hand: the roster leaves it alone
    store.replace(parse_csv(csv_text(*GOOD_ROWS), gazetteer), source="first")
    store.replace(parse_csv(csv_text(GOOD_ROWS[2]), gazetteer), source="second")
    assert store.of_unit("440304") == [] and store.by_phone("+8619200000001") == []
    assert [o.id for o in store.of_unit("440304001")] == ["gang-1"]
    assert units_of_user(redis_client, "duty-futian") == frozenset()
    assert units_of_user(redis_client, "dave") == {"440303"}


BAD_ROWS = [
    # (row, column named, words in the message)
    ("999999,x-1,王伟,primary,,zh-CN,+8619200000001,,,,,sms,", "unit", "not a unit"),
    ("440304,x-1,王伟,primary,,zh-CN,+86123,,,,,sms,", "sms", "phone"),
    ("440304,x-1,王伟,primary,,zh-CN,+8675512345678,,,,,sms,", "sms", "mobile"),
    ("440304,x-1,王伟,primary,,zh-CN,,12345,,,,voice,", "voice", "E.164"),
    ("440304,x-1,王伟,primary,,zh-CN,+8619200000001,,,,,sms>fax,", "order", "unknown channel 'fax'"),
    ("440304,x-1,王伟,primary,,zh-CN,+8619200000001,,,,,sms>email,", "order", "column email is empty"),
    ("440304,x-1,王伟,primary,,zh-CN,+8619200000001,,,,,,", "order", "order of preference"),
    ("440304,x-1,王伟,primary,,zh-CN,+8619200000001,,,,,sms,Mon-Fri 8-18", "shifts", "HH:MM"),
    ("440304,x-1,王伟,chief,,zh-CN,+8619200000001,,,,,sms,", "role", "primary or deputy"),
    ("440304,x 1,王伟,primary,,zh-CN,+8619200000001,,,,,sms,", "officer_id", "letters"),
    ("440304,x-1,,primary,,zh-CN,+8619200000001,,,,,sms,", "name", "name"),
    ("440304,x-1,王伟,primary,Dave!,zh-CN,+8619200000001,,,,,sms,", "user", "user name"),
    ("440304,x-1,王伟,primary,,fr,+8619200000001,,,,,sms,", "language", "zh-CN or en"),
    ("440304,x-1,王伟,primary,,zh-CN,,,not-an-openid!,,,wechat,", "wechat", "openid"),
    ("440304,x-1,王伟,primary,,zh-CN,,,,short,,app_push,", "app_push", "token"),
    ("440304,x-1,王伟,primary,,zh-CN,,,,,nobody,email,", "email", "email address"),
]


@pytest.mark.parametrize(("row", "column", "words"), BAD_ROWS, ids=[c for _, c, _ in BAD_ROWS])
def test_a_bad_row_is_named_by_line_and_column_and_nothing_is_stored(store: RosterStore, gazetteer, row: str,
                                                                     column: str, words: str,
                                                                     redis_client: redis.Redis) -> None:
    store.replace(parse_csv(csv_text(GOOD_ROWS[2]), gazetteer), source="before")
    before = snapshot(redis_client)
    with pytest.raises(RosterFileError) as caught:
        store.replace(parse_csv(csv_text(GOOD_ROWS[0], row, GOOD_ROWS[1]), gazetteer), source="bad")
    assert [(line, col) for line, col, _ in caught.value.problems] == [(3, column)]
    assert words in caught.value.problems[0][2]
    assert f"line 3, column {column}:" in caught.value.message and caught.value.status == 422
    assert snapshot(redis_client) == before


def test_every_problem_of_a_file_is_reported_at_once(gazetteer) -> None:
    text = csv_text(GOOD_ROWS[0], "999999,x-1,王伟,primary,,zh-CN,+86123,,,,,sms>fax,", GOOD_ROWS[0])
    with pytest.raises(RosterFileError) as caught:
        parse_csv(text, gazetteer)
    assert [(line, column) for line, column, _ in caught.value.problems] == [
        (3, "unit"), (3, "sms"), (3, "order"), (4, "officer_id")]
    assert "also on line 2" in caught.value.problems[-1][2]


@pytest.mark.parametrize(("text", "expected"), [
    ("", [(1, "-")]),
    (HEADER + "\n", [(1, "-")]),
    ("unit,officer_id,name,role,order,rank\n", [(1, "rank")]),
    ("unit,name,role,order\n", [(1, "officer_id")]),
    (csv_text(GOOD_ROWS[0] + ",extra"), [(2, "-")]),
])
def test_a_bad_file_shape_is_refused(gazetteer, text: str, expected: list[tuple[int, str]]) -> None:
    with pytest.raises(RosterFileError) as caught:
        parse_csv(text, gazetteer)
    assert [(line, column) for line, column, _ in caught.value.problems] == expected


# ---------------------------------------------------------------- the demo roster


def test_the_demo_roster_has_a_primary_and_a_deputy_for_every_unit(gazetteer) -> None:
    officers = demo_roster(gazetteer)
    assert len(officers) == 2 * len(gazetteer) == 1750
    assert demo_roster(gazetteer) == officers  # deterministic
    by_unit: dict[str, list[Officer]] = {}
    for officer in officers:
        by_unit.setdefault(officer.unit, []).append(officer)
    assert set(by_unit) == {u.code for u in gazetteer}
    assert all([o.rank for o in listed] == [Rank.PRIMARY, Rank.DEPUTY] for listed in by_unit.values())
    assert {o.order[0] for o in officers} == {"sms", "wechat", "email", "app_push"}
    assert all(o.order[-1] == "voice" for o in officers)
    assert len({o.contacts["sms"] for o in officers}) == 1750  # one phone each: SMS replies find their sender
    assert {o.language for o in officers} == {"zh-CN", "en"}
    assert sorted(o.user for o in officers if o.user)[:2] == ["duty-440300", "duty-440303"]
    assert parse_csv(to_csv(officers), gazetteer) == officers


# ---------------------------------------------------------------- the CLI


def run_cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": settings.effective_redis_url, "BROADCAST_DATA_DIR": str(settings.data_dir)}
    return subprocess.run([str(BIN / "broadcast"), "roster", *argv], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_imports_shows_and_refuses_bad_files(settings: Settings, redis_client: redis.Redis,
                                                 tmp_path: Path) -> None:
    good = tmp_path / "roster.csv"
    good.write_text(csv_text(*GOOD_ROWS), encoding="utf-8")
    result = run_cli(settings, "import", str(good))
    assert result.returncode == 0 and "imported 3 officers" in result.stdout, result.stderr
    shown = run_cli(settings, "show", "440304")
    assert shown.returncode == 0
    assert [o["id"] for o in json.loads(shown.stdout)] == ["futian-1", "futian-2"]

    before = snapshot(redis_client)
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(GOOD_ROWS[0], "440304,x-1,王伟,primary,,zh-CN,+86123,,,,,sms,"), encoding="utf-8")
    refused = run_cli(settings, "import", str(bad))
    assert refused.returncode == 2
    assert "line 3, column sms:" in refused.stderr and "nothing imported" in refused.stderr
    assert snapshot(redis_client) == before

    missing = run_cli(settings, "import", str(tmp_path / "absent.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    unknown = run_cli(settings, "show", "999999")
    assert unknown.returncode != 0 and "999999" in unknown.stderr
    nobody = run_cli(settings, "show", "440303")
    assert nobody.returncode == 1 and "nobody answers" in nobody.stderr

    demo = run_cli(settings, "generate-demo")
    assert demo.returncode == 0 and "1750 officers" in demo.stdout
    assert redis_client.hlen(keys.ROSTER_OFFICERS) == 1750
