"""Duty officers of the four levels: who answers for each unit, how to reach them, when they are on duty.

An :class:`Officer` belongs to one unit (a gazetteer code) as its ``primary`` or a ``deputy``,
has contacts on several channels (SMS and voice phones, WeChat openid, app push token,
email), a preferred order of those channels (the first gets the notice, the next one the
reminder, voice last), and shifts in the service time zone (none: always on duty).

The roster lives in Redis (``keys.ROSTER_*``) and is replaced as a whole, in one MULTI/EXEC,
by :meth:`RosterStore.replace`: from a CSV file (:func:`parse_csv`, which checks every row
and names the line and column of each problem, storing nothing if there is one) or from
:func:`demo_roster`, two officers for every unit of a gazetteer.

It also binds API users (role officer) to the units they act for (:func:`bind_user`,
:func:`units_of_user`); acknowledgements through the API and the supervision views use
that binding for authorisation. Officers with a ``user`` in the roster are bound by the
import; users bound by hand keep their binding.

CSV format (UTF-8, header row, one officer per row; see the README)::

    unit,officer_id,name,role,user,language,sms,voice,wechat,app_push,email,order,shifts
    440304,440304-1,王伟,primary,duty-440304,zh-CN,+8619200000001,+8619200000001,,,,sms>voice,
    440304,440304-2,李娜,deputy,,zh-CN,+8619200000002,,,,,sms,"Mon-Fri 08:00-18:00; Sat,Sun 09:00-13:00"

Errors::

    InvalidInput
     └── RosterFileError   every problem of a CSV file: (line, column, message)
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import redis

from broadcast import keys
from broadcast.errors import InvalidInput
from channels.email import valid_address
from channels.sms import phone_problem
from channels.twilio import check_phone
from channels.wechat import OPENID
from geotarget.gazetteer import Gazetteer

OFFICER_CHANNELS: tuple[str, ...] = ("sms", "voice", "wechat", "app_push", "email")
LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
CSV_COLUMNS: tuple[str, ...] = ("unit", "officer_id", "name", "role", "user", "language", *OFFICER_CHANNELS,
                                "order", "shifts")
REQUIRED_COLUMNS = frozenset({"unit", "officer_id", "name", "role", "order"})
MAX_NAME_LENGTH = 64
MAX_PROBLEMS_SHOWN = 20

_OFFICER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no ":" or ".": ids ride in voice callback ids and links
_USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # as broadcast.users
_DEVICE_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")  # an FCM registration token (channels/app_push.py)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_EXTRA = "\x00extra"  # where csv puts the values of a row longer than the header


class Rank(StrEnum):
    PRIMARY = "primary"
    DEPUTY = "deputy"


class RosterFileError(InvalidInput):
    """A roster file with problems; ``problems`` lists every one as (line, column, message)."""

    def __init__(self, problems: Sequence[tuple[int, str, str]], source: str = "roster") -> None:
        self.problems = list(problems)
        shown = [f"  line {line}, column {column}: {message}" for line, column, message in
                 self.problems[:MAX_PROBLEMS_SHOWN]]
        more = len(self.problems) - len(shown)
        if more:
            shown.append(f"  ... and {more} more")
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in {source}; nothing imported:\n"
                         + "\n".join(shown))


# ---------------------------------------------------------------- shifts


@dataclass(frozen=True, slots=True)
class Shift:
    """On duty on ``weekdays`` (0 Monday .. 6 Sunday) from ``start`` to ``end``, minutes after midnight.

    ``end`` before ``start`` runs past midnight into the next day ("Fri 18:00-08:00" ends on Saturday).
    """

    weekdays: frozenset[int]
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise InvalidInput("weekdays are 0 (Monday) to 6 (Sunday), at least one", field="shifts")
        if not (0 <= self.start < 1440 and 0 < self.end <= 1440) or self.start == self.end:
            raise InvalidInput("a shift runs from 00:00-23:59 to a different time up to 24:00", field="shifts")

    def covers(self, local: datetime) -> bool:
        """Whether the officer is on this shift at ``local`` (a time in the service zone)."""
        minute, day = local.hour * 60 + local.minute, local.weekday()
        if self.start < self.end:
            return day in self.weekdays and self.start <= minute < self.end
        return (day in self.weekdays and minute >= self.start) or ((day - 1) % 7 in self.weekdays
                                                                   and minute < self.end)

    def __str__(self) -> str:
        days = "daily" if len(self.weekdays) == 7 else ",".join(_DAYS[d].title() for d in sorted(self.weekdays))
        return f"{days} {self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def _minutes(text: str, *, end: bool) -> int:
    match = _CLOCK.match(text)
    if not match or (match.group(1) == "24" and (not end or match.group(2) != "00")):
        raise InvalidInput(f"{text!r} is not a time HH:MM (24:00 only as an end)", field="shifts")
    return int(match.group(1)) * 60 + int(match.group(2))


def _weekdays(text: str) -> frozenset[int]:
    if text.lower() in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().lower().partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise InvalidInput(f"{part.strip()!r} is not a weekday (Mon..Sun), a range (Mon-Fri) or daily",
                               field="shifts")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def parse_shifts(text: str) -> tuple[Shift, ...]:
    """``"Mon-Fri 08:00-18:00; Sat,Sun 09:00-13:00"`` -> shifts; empty -> () (always on duty).

    Raises:
        InvalidInput: a part that is not ``DAYS HH:MM-HH:MM`` (field ``shifts``).
    """
    shifts = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        days, _, hours = part.rpartition(" ")
        start, _, end = hours.partition("-")
        if not days.strip() or not end:
            raise InvalidInput(f"{part!r} is not DAYS HH:MM-HH:MM (e.g. Mon-Fri 08:00-18:00)", field="shifts")
        shifts.append(Shift(_weekdays(days.strip()), _minutes(start, end=False), _minutes(end, end=True)))
    return tuple(shifts)


# ---------------------------------------------------------------- officers


def contact_problem(channel: str, address: str) -> str | None:
    """Why ``address`` cannot reach an officer on ``channel``, or None."""
    if channel == "sms":
        return phone_problem(address) if address.startswith("+") else f"{address!r} must start with + (E.164)"
    if channel == "voice":
        return check_phone(address)
    if channel == "wechat":
        return None if OPENID.match(address) else f"{address!r} is not a WeChat openid"
    if channel == "app_push":
        return None if _DEVICE_TOKEN.match(address) else f"{address!r} is not an app push registration token"
    if channel == "email":
        return None if valid_address(address) else f"{address!r} is not an email address"
    return f"unknown channel {channel!r}; officers are reached by {', '.join(OFFICER_CHANNELS)}"


@dataclass(frozen=True, slots=True)
class Officer:
    """One duty officer of one unit."""

    id: str
    unit: str  # gazetteer code
    name: str
    rank: Rank
    contacts: Mapping[str, str]  # channel -> address, channels from OFFICER_CHANNELS
    order: tuple[str, ...]  # preferred channels: the notice goes on the first
    shifts: tuple[Shift, ...] = ()  # empty: always on duty
    user: str | None = None  # the API user (role officer) acting as this officer
    language: str = "zh-CN"

    def __post_init__(self) -> None:
        if not _OFFICER_ID.match(self.id):
            raise InvalidInput(f"{self.id!r}: 1-64 letters, digits, _ or -", field="officer_id")
        if not self.unit:
            raise InvalidInput("a unit code is needed", field="unit")
        if not self.name.strip() or len(self.name) > MAX_NAME_LENGTH:
            raise InvalidInput(f"a name of 1-{MAX_NAME_LENGTH} characters is needed", field="name")
        if self.user is not None and not _USER_NAME.match(self.user):
            raise InvalidInput(f"{self.user!r} is not a user name", field="user")
        if self.language not in LANGUAGES:
            raise InvalidInput(f"{self.language!r}: officers read {' or '.join(LANGUAGES)}", field="language")
        for channel, address in self.contacts.items():
            problem = contact_problem(channel, address)
            if problem:
                raise InvalidInput(problem, field=channel if channel in OFFICER_CHANNELS else "contacts")
        if not self.order:
            raise InvalidInput("name at least one channel, e.g. sms>voice", field="order")
        if len(set(self.order)) != len(self.order):
            raise InvalidInput("a channel appears twice", field="order")
        for channel in self.order:
            if channel not in OFFICER_CHANNELS:
                raise InvalidInput(f"unknown channel {channel!r}; channels are {', '.join(OFFICER_CHANNELS)}",
                                   field="order")
            if channel not in self.contacts:
                raise InvalidInput(f"{channel} is in the order but the officer has no {channel} contact",
                                   field="order")

    def on_shift(self, local: datetime) -> bool:
        return not self.shifts or any(s.covers(local) for s in self.shifts)

    def channel_after(self, channel: str) -> str:
        """The channel of the next contact after one on ``channel``: the next in the order; when the
        order is used up, a voice call if the officer has a phone for it, else ``channel`` again."""
        if channel in self.order:
            index = self.order.index(channel)
            if index + 1 < len(self.order):
                return self.order[index + 1]
        return "voice" if "voice" in self.contacts else channel

    @property
    def phones(self) -> frozenset[str]:
        return frozenset(self.contacts[c] for c in ("sms", "voice") if c in self.contacts)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "unit": self.unit, "name": self.name, "rank": self.rank.value,
                "contacts": dict(self.contacts), "order": list(self.order), "shifts": [str(s) for s in self.shifts],
                "user": self.user, "language": self.language}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Officer:
        return cls(id=doc["id"], unit=doc["unit"], name=doc["name"], rank=Rank(doc["rank"]),
                   contacts=dict(doc["contacts"]), order=tuple(doc["order"]),
                   shifts=parse_shifts("; ".join(doc.get("shifts", ()))), user=doc.get("user"),
                   language=doc.get("language", "zh-CN"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Officer:
        return cls.from_dict(json.loads(raw))


def _in_unit_order(officers: Iterable[Officer]) -> list[Officer]:
    """Primaries first, then deputies, each in the given order."""
    listed = list(officers)
    return [o for o in listed if o.rank is Rank.PRIMARY] + [o for o in listed if o.rank is Rank.DEPUTY]


@dataclass(frozen=True, slots=True)
class Roster:
    """A loaded roster: every officer, by unit in rank order, by phone and by API user."""

    officers: Mapping[str, Officer]
    units: Mapping[str, tuple[str, ...]]
    timezone: str = "Asia/Shanghai"
    _by_phone: dict[str, list[Officer]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, officers: Iterable[Officer], timezone: str = "Asia/Shanghai") -> Roster:
        listed = list(officers)
        units: dict[str, list[str]] = {}
        for officer in _in_unit_order(listed):
            units.setdefault(officer.unit, []).append(officer.id)
        by_phone: dict[str, list[Officer]] = {}
        for officer in listed:
            for phone in officer.phones:
                by_phone.setdefault(phone, []).append(officer)
        return cls({o.id: o for o in listed}, {u: tuple(ids) for u, ids in units.items()}, timezone, by_phone)

    def __len__(self) -> int:
        return len(self.officers)

    def of_unit(self, unit: str) -> list[Officer]:
        return [self.officers[i] for i in self.units.get(unit, ())]

    def on_duty(self, unit: str, at: datetime) -> list[Officer]:
        """The unit's officers on shift at ``at``: primaries first, then deputies."""
        local = at.astimezone(ZoneInfo(self.timezone))
        return [o for o in self.of_unit(unit) if o.on_shift(local)]

    def by_phone(self, phone: str) -> list[Officer]:
        return list(self._by_phone.get(phone, ()))

    def phones(self) -> dict[str, list[Officer]]:
        """Phone (SMS or voice) -> the officers with that number."""
        return {phone: list(listed) for phone, listed in self._by_phone.items()}


# ---------------------------------------------------------------- the store


class RosterStore:
    """The current roster in Redis; replaced as a whole."""

    def __init__(self, client: redis.Redis, timezone: str = "Asia/Shanghai") -> None:
        self.redis = client
        self.timezone = timezone

    def replace(self, officers: Sequence[Officer], *, source: str) -> int:
        """Make ``officers`` the roster, atomically (readers see the old one or the new one); returns how many.

        Users named by officers are bound to their officers' units; users the previous roster bound
        and this one does not name are unbound.
        """
        roster = Roster.of(officers, self.timezone)
        bindings: dict[str, set[str]] = {}
        for officer in officers:
            if officer.user:
                bindings.setdefault(officer.user, set()).add(officer.unit)
        phones = {phone: ",".join(o.id for o in listed) for phone, listed in roster.phones().items()}
        previous_users = {u.decode() for u in self.redis.smembers(keys.ROSTER_USERS)}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.ROSTER_OFFICERS, keys.ROSTER_UNITS, keys.ROSTER_PHONES, keys.ROSTER_USERS,
                        keys.ROSTER_META)
            if officers:
                pipe.hset(keys.ROSTER_OFFICERS, mapping={o.id: o.to_json() for o in officers})
                pipe.hset(keys.ROSTER_UNITS, mapping={u: json.dumps(ids) for u, ids in roster.units.items()})
            if phones:
                pipe.hset(keys.ROSTER_PHONES, mapping=phones)
            for user in previous_users - set(bindings):
                pipe.hdel(keys.USER_UNITS, user)
            for user, units in bindings.items():
                pipe.hset(keys.USER_UNITS, user, ",".join(sorted(units)))
            if bindings:
                pipe.sadd(keys.ROSTER_USERS, *bindings)
            pipe.hset(keys.ROSTER_META, mapping={"source": source, "imported_at": datetime.now(UTC).isoformat(),
                                                  "officers": len(officers), "units": len(roster.units)})
            pipe.execute()
        return len(officers)

    def exists(self) -> bool:
        return bool(self.redis.exists(keys.ROSTER_META))

    def meta(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.ROSTER_META).items()}

    def load(self) -> Roster:
        """The whole roster (about 1,750 officers for the demo gazetteer: one HGETALL)."""
        raw = self.redis.hgetall(keys.ROSTER_OFFICERS)
        return Roster.of((Officer.from_json(v) for v in raw.values()), self.timezone)

    def officer(self, officer_id: str) -> Officer | None:
        raw = self.redis.hget(keys.ROSTER_OFFICERS, officer_id)
        return Officer.from_json(raw) if raw is not None else None

    def of_unit(self, unit: str) -> list[Officer]:
        raw = self.redis.hget(keys.ROSTER_UNITS, unit)
        ids = json.loads(raw) if raw else []
        found = self.redis.hmget(keys.ROSTER_OFFICERS, ids) if ids else []
        return [Officer.from_json(r) for r in found if r is not None]

    def on_duty(self, unit: str, at: datetime) -> list[Officer]:
        """The unit's officers on shift at ``at``: primaries first, then deputies."""
        local = at.astimezone(ZoneInfo(self.timezone))
        return [o for o in self.of_unit(unit) if o.on_shift(local)]

    def by_phone(self, phone: str) -> list[Officer]:
        raw = self.redis.hget(keys.ROSTER_PHONES, phone)
        ids = raw.decode().split(",") if raw else []
        found = self.redis.hmget(keys.ROSTER_OFFICERS, ids) if ids else []
        return [Officer.from_json(r) for r in found if r is not None]


# ---------------------------------------------------------------- CSV


def parse_csv(text: str, gazetteer: Gazetteer, *, source: str = "roster") -> list[Officer]:
    """Every officer of a roster CSV file, checked against ``gazetteer``.

    Raises:
        RosterFileError: with every problem found (line and column each), if there is any.
    """
    problems: list[tuple[int, str, str]] = []
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")), restkey=_EXTRA)
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        raise RosterFileError([(1, "-", "the file is empty; the first line names the columns")], source)
    for name in header:
        if name not in CSV_COLUMNS:
            problems.append((1, name or "(blank)", f"unknown column; columns are {', '.join(CSV_COLUMNS)}"))
    for name in sorted(REQUIRED_COLUMNS - set(header)):
        problems.append((1, name, "required column missing"))
    if problems:
        raise RosterFileError(problems, source)
    reader.fieldnames = header
    officers: list[Officer] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if _EXTRA in row:
            problems.append((line, "-", f"{len(header) + len(row[_EXTRA])} values for {len(header)} columns"))
            continue
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()):
            continue  # a blank line
        officer = _officer_from_row(values, line, gazetteer, problems)
        if officer is None:
            continue
        if officer.id in seen:
            problems.append((line, "officer_id", f"{officer.id} is also on line {seen[officer.id]}"))
            continue
        seen[officer.id] = line
        officers.append(officer)
    if not officers and not problems:
        problems.append((1, "-", "no officers in the file"))
    if problems:
        raise RosterFileError(problems, source)
    return officers


def _officer_from_row(values: Mapping[str, str], line: int, gazetteer: Gazetteer,
                      problems: list[tuple[int, str, str]]) -> Officer | None:
    """The officer of one row, or None after adding its problems (every bad column is reported)."""
    before = len(problems)

    def bad(column: str, message: str) -> None:
        problems.append((line, column, message))

    unit = values.get("unit", "")
    if unit not in gazetteer:
        bad("unit", f"{unit!r} is not a unit of the current gazetteer" if unit else "a unit code is needed")
    officer_id = values.get("officer_id", "")
    if not _OFFICER_ID.match(officer_id):
        bad("officer_id", f"{officer_id!r}: 1-64 letters, digits, _ or -")
    name = values.get("name", "")
    if not name or len(name) > MAX_NAME_LENGTH:
        bad("name", f"a name of 1-{MAX_NAME_LENGTH} characters is needed")
    role = values.get("role", "").lower()
    if role not in (Rank.PRIMARY, Rank.DEPUTY):
        bad("role", f"{values.get('role', '')!r}: primary or deputy")
    user = values.get("user") or None
    if user is not None and not _USER_NAME.match(user):
        bad("user", f"{user!r} is not a user name (lower case letters, digits, . _ -)")
    language = values.get("language") or "zh-CN"
    if language not in LANGUAGES:
        bad("language", f"{language!r}: {' or '.join(LANGUAGES)}")
    contacts = {}
    for channel in OFFICER_CHANNELS:
        address = values.get(channel, "")
        if not address:
            continue
        problem = contact_problem(channel, address)
        if problem:
            bad(channel, problem)
        contacts[channel] = address
    order = tuple(c.strip() for c in values.get("order", "").split(">") if c.strip())
    if not order:
        bad("order", "name the channels in order of preference, e.g. sms>wechat>voice")
    for channel in order:
        if channel not in OFFICER_CHANNELS:
            bad("order", f"unknown channel {channel!r}; channels are {', '.join(OFFICER_CHANNELS)}")
        elif channel not in contacts:
            bad("order", f"{channel} is in the order but column {channel} is empty")
    if len(set(order)) != len(order):
        bad("order", "a channel appears twice")
    shifts: tuple[Shift, ...] = ()
    try:
        shifts = parse_shifts(values.get("shifts", ""))
    except InvalidInput as err:
        bad("shifts", err.message)
    if len(problems) > before:
        return None
    try:
        return Officer(officer_id, unit, name, Rank(role), contacts, order, shifts, user, language)
    except InvalidInput as err:  # a rule the row checks above do not repeat
        bad(err.field or "-", err.message)
        return None


def to_csv(officers: Iterable[Officer]) -> str:
    """The roster as a CSV file that :func:`parse_csv` reads back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for o in officers:
        writer.writerow([o.unit, o.id, o.name, o.rank.value, o.user or "", o.language,
                         *(o.contacts.get(c, "") for c in OFFICER_CHANNELS), ">".join(o.order),
                         "; ".join(str(s) for s in o.shifts)])
    return out.getvalue()


# ---------------------------------------------------------------- the demo roster

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰", "军", "强", "丽", "涛",
          "明", "超", "秀英", "建华", "志强", "海燕")
# The primary's preferred channels, by unit position: every channel but voice comes first somewhere.
DEMO_ORDERS: tuple[tuple[str, ...], ...] = (
    ("sms", "wechat", "voice"),
    ("wechat", "sms", "voice"),
    ("email", "sms", "voice"),
    ("app_push", "sms", "voice"),
)
DEMO_DEPUTY_ORDER = ("sms", "voice")


def demo_phone(number: int) -> str:
    """The demo officers' phones: +86 192 0000 0001 on (a prefix the demo subscribers do not use)."""
    return f"+86192{number:08d}"


def demo_roster(gazetteer: Gazetteer) -> list[Officer]:
    """A primary and a deputy for every unit, always on duty, with contacts every simulator accepts.

    Deterministic: the same gazetteer gives the same roster. The primaries of the city and the
    districts act as API users ``duty-<code>``; every tenth primary reads English.
    """
    officers = []
    for index, unit in enumerate(gazetteer):
        for rank_index, rank in enumerate((Rank.PRIMARY, Rank.DEPUTY)):
            number = index * 2 + rank_index + 1
            seed = hashlib.sha256(f"{unit.code}-{rank_index}".encode()).digest()
            phone = demo_phone(number)
            name = _SURNAMES[number % len(_SURNAMES)] + _GIVEN[(number * 7) % len(_GIVEN)]
            contacts = {"sms": phone, "voice": phone,
                        "wechat": "o" + _b64(seed)[:27],
                        "app_push": seed.hex()[:32],
                        "email": f"duty-{unit.code}-{rank_index + 1}@linkage.sz.example"}
            primary = rank is Rank.PRIMARY
            order = DEMO_ORDERS[index % len(DEMO_ORDERS)] if primary else DEMO_DEPUTY_ORDER
            user = f"duty-{unit.code}" if primary and unit.level.value in ("city", "district") else None
            language = "en" if primary and index % 10 == 9 else "zh-CN"
            officers.append(Officer(f"{unit.code}-{rank_index + 1}", unit.code, name, rank, contacts, order,
                                    (), user, language))
    return officers


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# ---------------------------------------------------------------- API users acting for units


def bind_user(client: redis.Redis, user: str, units: Iterable[str]) -> None:
    """Let API user ``user`` act for ``units`` (replaces what it had)."""
    codes = sorted(set(units))
    if codes:
        client.hset(keys.USER_UNITS, user, ",".join(codes))
    else:
        client.hdel(keys.USER_UNITS, user)


def units_of_user(client: redis.Redis, user: str) -> frozenset[str]:
    """The units API user ``user`` acts for (empty when none)."""
    return units_from(client.hget(keys.USER_UNITS, user))


def units_from(raw: bytes | None) -> frozenset[str]:
    """The units of a user's ``keys.USER_UNITS`` field, as read (for callers that read it in a pipeline)."""
    return frozenset(raw.decode().split(",")) if raw else frozenset()
