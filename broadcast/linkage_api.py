"""Acknowledging linkage tasks, four ways, all recorded by :class:`Acknowledging` with the same checks.

    GET  /ack/{token}                                  the officer's page: the warning, the task, a form
    POST /ack/{token}                                  status, note (form or JSON): records it (via link)
    GET  /api/alerts/{id}/linkage/{unit}               one task (bearer token; officers: their own subtree)
    POST /api/alerts/{id}/linkage/{unit}/acknowledge   {"status", "note"} by an officer bound to the unit (via api)
    POST /api/callbacks/twilio/sms                     an SMS reply from an officer's phone (via sms)
    voice keypress "1" on an officer's notice call     channels/twilio_callbacks.py hook (via voice)

``/ack/`` is public (the signed token is the credential, broadcast/ack_links.py); the callbacks
are checked by Twilio's signature. Every way records who (the roster officer id, or
``user:<name>`` for an API user with no roster entry), when, how and a status (received,
linkage_started, cannot_comply with a reason); the same answer twice changes nothing.

SMS replies (the notice text says so): ``1`` or ``ok`` / ``收到`` = received; ``2 <text>`` =
linkage started, the text as the note; ``3 <reason>`` = cannot comply, the reason required.
The sending phone is looked up in the roster (SMS or voice number); each officer with that
number acknowledges their unit's task of the alert they were last notified of. Anything
else gets a reply explaining the codes and changes nothing.

An Update that kept the level carried its predecessor's tasks over; answering the old
alert's link (or id) answers the carried task on the update. A task of an alert that was
cancelled, expired or updated with a new task is closed: 409, nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis
from aiohttp import web

from broadcast import ack_links, keys, workflow
from broadcast.alerts import Actor, AlertService
from broadcast.errors import BroadcastError, Conflict, Forbidden, InvalidInput, MalformedInput, NotFound
from broadcast.linkage import (
    CAS_SCRIPT,
    MAX_NOTE_LENGTH,
    Acknowledgement,
    AckStatus,
    AckVia,
    LinkageStore,
    Task,
    TaskState,
    acknowledge,
    cas_call,
    check_note,
)
from broadcast.linkage_jobs import parse_recipient_id
from broadcast.records import AlertRecord, AlertStatus, State
from broadcast.redis_pipelined import PipelinedRedis, Script
from broadcast.render import environment
from broadcast.roster import Officer, RosterStore, units_from, units_of_user
from broadcast.users import Role, User
from channels import twilio_callbacks
from geotarget.gazetteer import Gazetteer

log = logging.getLogger(__name__)

STATUS_NAMES = {AckStatus.RECEIVED: ("收到", "received"), AckStatus.LINKAGE_STARTED: ("已启动联动", "linkage started"),
                AckStatus.CANNOT_COMPLY: ("无法执行", "cannot comply")}
ENDED_NAMES = {"cancelled": "解除", "updated": "更新", "expired": "过期"}
SUPERVISING_ROLES = frozenset({Role.FORECASTER, Role.APPROVER, Role.OPS, Role.ADMIN})
MAX_CARRIED_HOPS = 20
# Held in each API process, not read per answer: a newly published gazetteer shows this much later,
# a deleted link secret (voiding every link) takes this long to void them here.
GAZETTEER_MAX_AGE_SECONDS = 1.0
LINK_SECRET_MAX_AGE_SECONDS = 60.0
_REPLY = re.compile(r"^([123])(?:\s*[.,:;，。：；、]\s*|\s+|$)(.*)$", re.S)
_RECEIVED_WORDS = frozenset({"ok", "okay", "yes", "y", "收到", "好", "确认"})


# ---------------------------------------------------------------- the use case


@dataclass(frozen=True, slots=True)
class Answered:
    """The task after an acknowledgement, the alert it belongs to, and whether anything changed."""

    task: Task
    alert: AlertStatus
    changed: bool


@dataclass(frozen=True, slots=True)
class _Seen:
    """What one pipelined read found about an (alert, unit) and, when asked, the API user or the officer."""

    alert: AlertStatus | None  # None: no such alert, or a record stored before statuses were kept
    task: bytes | None  # the task's JSON
    user_units: frozenset[str] = frozenset()
    roster: bytes | None = None  # when the roster was imported: the version of its officers
    officer: bytes | None = None  # the officer's JSON


# Everything an answer about (alert, unit) checks, in one script call (one command to pack and parse,
# where a pipeline of four costs four): the alert's status fields, the task, and the API user's units
# and the roster version, or the link's officer.
# KEYS: alert status hash, the alert's tasks hash, USER_UNITS, ROSTER_META, ROSTER_OFFICERS
# ARGV: unit, API user name or "", officer id or "", the status fields...
# Returns {status values, task or false, user's units or false, roster imported_at or false, officer or false}.
READ_SCRIPT = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local user_units, roster, officer = false, false, false
if ARGV[2] ~= '' then
    user_units = redis.call('HGET', KEYS[3], ARGV[2])
    roster = redis.call('HGET', KEYS[4], 'imported_at')
end
if ARGV[3] ~= '' then
    officer = redis.call('HGET', KEYS[5], ARGV[3])
end
return {redis.call('HMGET', KEYS[1], unpack(fields)), redis.call('HGET', KEYS[2], ARGV[1]), user_units, roster, officer}
"""


READ_ON_LOOP = Script.of(READ_SCRIPT)
CAS_ON_LOOP = Script.of(CAS_SCRIPT)


def _read_call(alert_id: str, unit: str, user: str | None, officer: str | None) -> tuple[list[str], list[str]]:
    return ([keys.alert_status(alert_id), keys.linkage_tasks(alert_id), keys.USER_UNITS, keys.ROSTER_META,
             keys.ROSTER_OFFICERS], [unit, user or "", officer or "", *AlertStatus.FIELDS])


def _seen(alert_id: str, reply: list[Any], *, user: str | None) -> _Seen:
    status, task, user_units, roster, officer = reply
    alert = AlertStatus.from_fields(alert_id, status)
    if user is not None:
        return _Seen(alert, task, units_from(user_units), roster)
    return _Seen(alert, task, officer=officer)


class Acknowledging:
    """Record an officer's answer to a unit's task, whichever way it came.

    One per API process (threads share it). An answer costs two Redis round trips: one scripted
    read of everything checked (the alert's status hash, not its record; the task; the user's units
    or the link's officer) and the compare-and-set. API answers make both on the event loop over
    one auto-pipelined connection (:mod:`broadcast.redis_pipelined`). The gazetteer, the link secret and which
    officer an API user is are held in the process (see the constants above).
    """

    def __init__(self, service: AlertService, on_loop: PipelinedRedis) -> None:
        self.service = service
        self.redis: redis.Redis = service.store.redis
        self.on_loop = on_loop  # for by_api_on_loop, on the API's event loop
        self._read_script = self.redis.register_script(READ_SCRIPT)
        self.tasks = LinkageStore(self.redis)
        self.roster = RosterStore(self.redis, service.settings.timezone)
        self._lock = threading.Lock()
        self._secret: tuple[float, bytes] | None = None
        self._officers_roster: bytes | None = None  # the roster import _officers_of_users is from
        self._officers_of_users: dict[tuple[str, str], str | None] = {}

    @property
    def gazetteer(self) -> Gazetteer:
        return self.service.targets.recent(GAZETTEER_MAX_AGE_SECONDS).gazetteer

    def _read(self, alert_id: str, unit: str, *, user: str | None = None, officer: str | None = None) -> _Seen:
        read_keys, read_args = _read_call(alert_id, unit, user, officer)
        return _seen(alert_id, self._read_script(keys=read_keys, args=read_args), user=user)

    def _alert(self, seen: _Seen, alert_id: str) -> AlertStatus:
        """Raises NotFound (field ``id``) for no such alert."""
        return seen.alert if seen.alert is not None else self.service.store.status_of_record(alert_id)

    def _current(self, seen: _Seen, alert_id: str, unit: str) -> tuple[AlertStatus, bytes]:
        """The alert and the task JSON an answer about (alert_id, unit) goes to: the task itself, or the
        one an Update that kept the level carried it over to.

        Raises:
            NotFound: no such alert (field ``id``) or no task for the unit (field ``unit``).
        """
        alert = self._alert(seen, alert_id)
        if unit not in self.gazetteer:
            raise NotFound(f"no unit {unit} in the gazetteer", field="unit")
        raw = seen.task
        if raw is None:
            raise NotFound(f"alert {alert_id} has no linkage task for unit {unit}", field="unit")
        task: Task | None = None
        for _ in range(MAX_CARRIED_HOPS):
            if alert.state is not State.UPDATED or not alert.replaced_by:
                break
            successor = self._read(alert.replaced_by, unit)
            if successor.task is None:
                break
            task = task or Task.from_json(raw)
            carried = Task.from_json(successor.task)
            if carried.opened_at != task.opened_at:
                break  # the update raised the level: a new task, which this answer is not about
            alert, raw, task = self._alert(successor, alert.replaced_by), successor.task, carried
        return alert, raw

    def current(self, alert_id: str, unit: str) -> tuple[AlertRecord, Task]:
        """The alert (its whole record) and the task an answer about (alert_id, unit) goes to.

        Raises:
            NotFound: no such alert (field ``id``) or no task for the unit (field ``unit``).
        """
        alert, raw = self._current(self._read(alert_id, unit), alert_id, unit)
        return self.service.store.get(alert.id), Task.from_json(raw)

    def acknowledge(self, alert_id: str, unit: str, officer: str, via: AckVia, status: AckStatus, note: str,
                    now: float | None = None) -> Answered:
        """Record the answer; the same answer again changes nothing.

        Raises:
            NotFound: unknown alert or unit, or the alert has no task for the unit.
            InvalidInput: the note is too long, or missing for cannot_comply (field ``note``).
            Conflict: the alert was cancelled, updated or has expired (its tasks are closed).
        """
        return self._record(self._read(alert_id, unit), alert_id, unit, officer, via, status, note, now)

    def _record(self, seen: _Seen, alert_id: str, unit: str, officer: str, via: AckVia, status: AckStatus,
                note: str, now: float | None = None) -> Answered:
        alert, raw, ack = self._answer(seen, alert_id, unit, officer, via, status, note, now)
        updated, changed = self.tasks.change(alert.id, unit, "acknowledged", lambda t: acknowledge(t, ack),
                                             raw=raw)
        return Answered(updated, alert, changed)

    def _answer(self, seen: _Seen, alert_id: str, unit: str, officer: str, via: AckVia, status: AckStatus,
                note: str, now: float | None = None) -> tuple[AlertStatus, bytes, Acknowledgement]:
        """The checks every answer passes: the alert and task JSON it goes to, and the acknowledgement.

        Raises:
            NotFound, InvalidInput (field ``note``), Conflict (the alert has ended).
        """
        note = check_note(note, status)
        alert, raw = self._current(seen, alert_id, unit)
        ended = alert.ended(self.service.now())
        if ended is not None:
            raise Conflict(f"alert {alert.id} is {ended}; the linkage task of unit {unit} is closed", field="state")
        return alert, raw, Acknowledgement(officer, time.time() if now is None else now, via, status, note)

    # ------------------------------------------------------------ the four ways

    def by_link(self, token: str, status: AckStatus, note: str) -> Answered:
        claim = self._verify(token)
        seen = self._read(claim.alert_id, claim.unit, officer=claim.officer)
        self._check_officer(claim, seen.officer)
        return self._record(seen, claim.alert_id, claim.unit, claim.officer, AckVia.LINK, status, note)

    def claim(self, token: str) -> ack_links.AckClaim:
        """The claim of a genuine, unexpired link whose officer still answers for its unit.

        Raises:
            Forbidden: forged or altered, or the officer no longer answers for the unit (403).
            LinkExpired: past the alert's expiry (410).
        """
        claim = self._verify(token)
        self._check_officer(claim, self.redis.hget(keys.ROSTER_OFFICERS, claim.officer))
        return claim

    def _verify(self, token: str) -> ack_links.AckClaim:
        with self._lock:
            held = self._secret
        if held is None or time.monotonic() - held[0] >= LINK_SECRET_MAX_AGE_SECONDS:
            held = time.monotonic(), ack_links.secret_of(self.service.settings, self.redis)
            with self._lock:
                self._secret = held
        return ack_links.verify(held[1], token, time.time())

    @staticmethod
    def _check_officer(claim: ack_links.AckClaim, officer: bytes | None) -> None:
        if officer is None or json.loads(officer)["unit"] != claim.unit:
            raise Forbidden(f"officer {claim.officer} does not answer for unit {claim.unit} on the current roster",
                            field="token")

    def by_api(self, user: User, alert_id: str, unit: str, status: AckStatus, note: str) -> Answered:
        seen = self._read(alert_id, unit, user=user.name)
        seen = replace(seen, alert=self._alert(seen, alert_id))
        self._check_api_user(user, unit, seen)
        officer = self._officer_of_user(user.name, unit, seen.roster)
        return self._record(seen, alert_id, unit, officer or f"user:{user.name}", AckVia.API, status, note)

    async def by_api_on_loop(self, user: User, alert_id: str, unit: str, status: AckStatus, note: str) -> Answered:
        """:meth:`by_api` on the API's event loop with the async client, for the common case.

        Under a flood of acknowledgements a thread per answer costs more than the answer: the threads
        and the loop take turns at the GIL. Anything uncommon (an alert without a status hash, an
        Update that may have carried the task, a task that changed between the read and the
        compare-and-set) goes to :meth:`by_api` in a thread.
        """
        read_keys, read_args = _read_call(alert_id, unit, user.name, None)
        try:
            reply = await self.on_loop.evalsha(READ_ON_LOOP, read_keys, read_args)
        except ConnectionError:  # a dropped connection (Redis restarted): the read changes nothing, ask again
            reply = await self.on_loop.evalsha(READ_ON_LOOP, read_keys, read_args)
        seen = _seen(alert_id, reply, user=user.name)
        if seen.alert is None or seen.alert.state is State.UPDATED:
            return await asyncio.to_thread(self.by_api, user, alert_id, unit, status, note)
        self._check_api_user(user, unit, seen)
        mapped, officer = self._mapped_officer(user.name, unit, seen.roster)
        if not mapped:  # the first answer after a roster import maps its officers (~50 ms, once)
            officer = await asyncio.to_thread(self._officer_of_user, user.name, unit, seen.roster)
        # No further reads: an UPDATED alert (whose task may have been carried) went to by_api above.
        alert, raw, ack = self._answer(seen, alert_id, unit, officer or f"user:{user.name}", AckVia.API, status, note)
        current = Task.from_json(raw)
        updated = acknowledge(current, ack)
        if updated is None:
            return Answered(current, alert, False)
        cas_keys, cas_args = cas_call(alert.id, unit, raw, updated, "acknowledged")
        try:
            if await self.on_loop.evalsha(CAS_ON_LOOP, cas_keys, cas_args):
                return Answered(updated, alert, True)
        except ConnectionError:
            pass  # applied or not, unknown: the threaded path reads again and records the answer once
        return await asyncio.to_thread(self.by_api, user, alert_id, unit, status, note)

    def _check_api_user(self, user: User, unit: str, seen: _Seen) -> None:
        if unit not in self.gazetteer:
            raise NotFound(f"no unit {unit} in the gazetteer", field="unit")
        if Role.OFFICER not in user.roles or unit not in seen.user_units:
            raise Forbidden(f"{user.name} does not act for unit {unit}; officers acknowledge their own units only",
                            field="unit")

    def _mapped_officer(self, user: str, unit: str, roster: bytes | None) -> tuple[bool, str | None]:
        """Whether the officers of the roster imported at ``roster`` are mapped here, and if so the one
        API user ``user`` is for ``unit``."""
        with self._lock:
            if self._officers_roster != roster:
                return False, None
            return True, self._officers_of_users.get((user, unit))

    def _officer_of_user(self, user: str, unit: str, roster: bytes | None) -> str | None:
        """The id of the officer of ``unit`` API user ``user`` is on the roster imported at ``roster``."""
        mapped, officer = self._mapped_officer(user, unit, roster)
        if mapped:
            return officer
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(keys.ROSTER_META, "imported_at")
            pipe.hgetall(keys.ROSTER_UNITS)
            pipe.hgetall(keys.ROSTER_OFFICERS)
            imported, units, officers = pipe.execute()
        # JSON only, not Officer.from_json: checking every contact of 1,750 officers again costs ~100 ms.
        users = {officer_id: json.loads(raw).get("user") for officer_id, raw in officers.items()}
        acting: dict[tuple[str, str], str | None] = {}
        for code, ids in units.items():
            for officer_id in json.loads(ids):  # primaries first, as RosterStore.of_unit
                name = users.get(officer_id.encode())
                if name is not None:
                    acting.setdefault((name, code.decode()), officer_id)
        with self._lock:
            self._officers_roster, self._officers_of_users = imported, acting
        return acting.get((user, unit))

    def by_voice(self, alert_id: str, recipient_id: str) -> Answered | None:
        parsed = parse_recipient_id(recipient_id)
        if parsed is None:
            return None  # a public alert call, or a supervisor's overdue call: nothing to acknowledge
        officer, unit = parsed
        return self.acknowledge(alert_id, unit, officer, AckVia.VOICE, AckStatus.RECEIVED, "")

    def by_sms(self, phone: str, body: str) -> str:
        """Acknowledge from an SMS reply; returns the reply text."""
        officers = self.roster.by_phone(phone)
        zh = not officers or officers[0].language.startswith("zh")
        if not officers:
            return "本号码不在值班名册中。This number is not on the duty roster."
        parsed = parse_reply(body)
        if parsed is None:
            return ("回复 1 收到；2 已启动联动（可附说明）；3 无法执行（附原因）。" if zh else
                    "Reply 1 received; 2 linkage started (+ note); 3 cannot comply (+ reason).")
        status, note = parsed
        lines = []
        for officer in officers:
            raw = self.redis.hget(keys.LINKAGE_LATEST_NOTICE, officer.id)
            if raw is None:
                continue
            lines.append(self._sms_answer(officer, raw.decode(), status, note, zh))
        if not lines:
            return "没有待确认的联动任务。" if zh else "No linkage task to confirm."
        return " ".join(lines)

    def _sms_answer(self, officer: Officer, alert_id: str, status: AckStatus, note: str, zh: bool) -> str:
        unit = _unit_names(self.gazetteer, officer.unit)[0 if zh else 1]
        try:
            self.acknowledge(alert_id, officer.unit, officer.id, AckVia.SMS, status, note)
        except InvalidInput as err:
            if err.field == "note" and len(note) > MAX_NOTE_LENGTH:
                return (f"{unit}：说明过长（最多{MAX_NOTE_LENGTH}字），未记录。" if zh else
                        f"{unit}: note too long (at most {MAX_NOTE_LENGTH} characters); not recorded.")
            return (f"{unit}：请附原因，如“3 道路中断”。未记录。" if zh else
                    f"{unit}: say why, e.g. '3 road cut'. Not recorded.")
        except Conflict:
            return f"{unit}：该预警已结束，无需确认。" if zh else f"{unit}: the warning has ended; nothing to confirm."
        except NotFound:
            return f"{unit}：没有待确认的任务。" if zh else f"{unit}: no task to confirm."
        name = STATUS_NAMES[status][0 if zh else 1]
        return f"{unit}：已记录“{name}”。" if zh else f"{unit}: recorded '{name}'."


def parse_reply(body: str) -> tuple[AckStatus, str] | None:
    """An SMS reply as (status, note): "1"/"ok" received, "2 text" linkage started, "3 reason" cannot comply."""
    text = body.strip()
    if text.lower() in _RECEIVED_WORDS:
        return AckStatus.RECEIVED, ""
    match = _REPLY.match(text)
    if match is None:
        return None
    code, note = match.groups()
    return {"1": AckStatus.RECEIVED, "2": AckStatus.LINKAGE_STARTED, "3": AckStatus.CANNOT_COMPLY}[code], note.strip()


def _unit_names(gazetteer: Gazetteer, code: str) -> tuple[str, str]:
    if code not in gazetteer:
        return code, code
    unit = gazetteer.unit(code)
    return unit.name_zh, unit.name_en or unit.name_zh


def parse_status(value: Any) -> AckStatus:
    if not isinstance(value, str) or value not in {s.value for s in AckStatus}:
        raise InvalidInput(f"status is one of {', '.join(s.value for s in AckStatus)}", field="status")
    return AckStatus(value)


def parse_note(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput("must be a string", field="note")
    return value


def can_see(user: User, unit: str, units: frozenset[str], gazetteer: Gazetteer) -> bool:
    """Supervisors see every task; an officer the tasks of their units and of the units below them."""
    if user.roles & SUPERVISING_ROLES:
        return True
    return unit in units or any(a.code in units for a in gazetteer.ancestors(unit))


# ---------------------------------------------------------------- HTTP

ACKNOWLEDGING = web.AppKey("acknowledging", Acknowledging)


def add_routes(app: web.Application, service_key: web.AppKey[AlertService],
               user_key: web.RequestKey[User]) -> None:
    """Serve acknowledgements from ``app`` and hook the Twilio callbacks (registered by the API).

    Args:
        app: The application.
        service_key: Where ``app`` keeps its AlertService (its Redis client, settings, gazetteer).
        user_key: Where the auth middleware puts the authenticated user of an API request.
    """

    async def start(app: web.Application) -> None:  # after the API's cleanup_ctx has made the service
        service = app[service_key]
        app[ACKNOWLEDGING] = Acknowledging(service, PipelinedRedis(service.settings.effective_redis_url))

    async def stop(app: web.Application) -> None:
        await app[ACKNOWLEDGING].on_loop.close()

    def acknowledging(request: web.Request) -> Acknowledging:
        return request.app[ACKNOWLEDGING]

    async def get_task(request: web.Request) -> web.Response:
        alert_id, unit = request.match_info["id"], request.match_info["unit"]
        user = request[user_key]
        ack = acknowledging(request)

        def run() -> dict[str, Any]:
            record = ack.service.get(Actor(user, request.remote or ""), alert_id)
            if unit not in ack.gazetteer:
                raise NotFound(f"no unit {unit} in the gazetteer", field="unit")
            if not can_see(user, unit, units_of_user(ack.redis, user.name), ack.gazetteer):
                raise Forbidden(f"{user.name} may see the tasks of their own units and those below only",
                                field="unit")
            return task_json(ack.tasks.task(record.id, unit), ack.gazetteer)

        return _json(await asyncio.to_thread(run))

    async def acknowledge_task(request: web.Request) -> web.Response:
        doc = await _read_object(request)
        unknown = set(doc) - {"status", "note"}
        if unknown:
            raise InvalidInput("unknown field", field=sorted(unknown)[0])
        ack = acknowledging(request)
        answered = await ack.by_api_on_loop(request[user_key], request.match_info["id"], request.match_info["unit"],
                                            parse_status(doc.get("status")), parse_note(doc.get("note")))
        return _json({**task_json(answered.task, ack.gazetteer), "changed": answered.changed})

    async def ack_page(request: web.Request) -> web.Response:
        ack = acknowledging(request)
        token = request.match_info["token"]
        try:
            claim = await asyncio.to_thread(ack.claim, token)
            page = await asyncio.to_thread(_page, ack, claim)
        except BroadcastError as err:
            return _error_page(err)
        return _html(page)

    async def ack_submit(request: web.Request) -> web.StreamResponse:
        ack = acknowledging(request)
        token = request.match_info["token"]
        wants_json = request.content_type == "application/json" or "application/json" in request.headers.get(
            "Accept", "")
        try:
            if request.content_type == "application/json":
                doc = await _read_object(request)
            else:
                doc = dict(await request.post())
            status, note = parse_status(doc.get("status")), parse_note(doc.get("note"))
            answered = await asyncio.to_thread(ack.by_link, token, status, note)
        except BroadcastError as err:
            if wants_json:
                raise
            return _error_page(err)
        if wants_json:
            return _json({**task_json(answered.task, ack.gazetteer), "changed": answered.changed})
        claim = await asyncio.to_thread(ack.claim, token)
        return _html(await asyncio.to_thread(_page, ack, claim, recorded=True))

    async def voice_ack(alert_id: str, recipient_id: str, _: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(app[ACKNOWLEDGING].by_voice, alert_id, recipient_id)
        except BroadcastError as err:  # the caller hears "thank you" either way; the log says why it did not count
            log.warning("voice keypress for %s / %s not recorded: %s", alert_id, recipient_id, err.message)

    async def sms_reply(phone: str, body: str) -> str | None:
        return await asyncio.to_thread(app[ACKNOWLEDGING].by_sms, phone, body)

    # Not "stream": GET /api/alerts/{id}/linkage/stream is the supervision stream's (broadcast/supervision_api.py).
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    unit_path = "/api/alerts/{id}/linkage/{unit:(?!stream$)[^/]+}"
    app.router.add_get(unit_path, get_task)
    app.router.add_post(unit_path + "/acknowledge", acknowledge_task)
    app.router.add_get(ack_links.ACK_PATH + "{token}", ack_page)
    app.router.add_post(ack_links.ACK_PATH + "{token}", ack_submit)
    twilio_callbacks.on_voice_ack(app, voice_ack)
    twilio_callbacks.on_inbound_sms(app, sms_reply)


def task_json(task: Task, gazetteer: Gazetteer) -> dict[str, Any]:
    name_zh, name_en = _unit_names(gazetteer, task.unit)
    return {**task.as_dict(), "name": name_zh, "name_en": name_en,
            "status": task.status.value if task.status else None, "overdue": task.overdue(time.time())}


def _page(ack: Acknowledging, claim: ack_links.AckClaim, *, recorded: bool = False) -> str:
    record, task = ack.current(claim.alert_id, claim.unit)
    settings = ack.service.settings
    zone = ZoneInfo(settings.timezone)
    officer = ack.roster.officer(claim.officer)
    zh, en = record.alert.info_for("zh-CN") or record.alert.infos[0], record.alert.info_for("en")
    signal = ack.service.signal_of(record)
    unit_zh, unit_en = _unit_names(ack.gazetteer, task.unit)
    ended = record.state is not State.ISSUED or workflow.expire(record, ack.service.now()) is not None
    state = record.state.value if record.state is not State.ISSUED or not ended else "expired"
    if task.state is TaskState.CLOSED or ended:
        task_state = ("已关闭", "closed")
    elif task.status is not None:
        task_state = STATUS_NAMES[task.status]
    else:
        task_state = ("待确认", "waiting for confirmation")
    return environment().get_template("linkage/ack_page.html").render(
        error=None, colour=signal.colour if signal else "#1a5fb4", zh=zh, en=en if en is not zh else None,
        unit_zh=unit_zh, unit_en=unit_en if unit_en != unit_zh else "",
        officer=officer.name if officer else claim.officer,
        deadline=datetime.fromtimestamp(task.deadline, zone).strftime("%Y-%m-%d %H:%M"),
        overdue=task.overdue(time.time()), state_zh=task_state[0], state_en=task_state[1],
        acknowledgements=[{"at": datetime.fromtimestamp(a.at, zone).strftime("%H:%M"), "officer": a.officer,
                           "status": STATUS_NAMES[a.status][0], "via": a.via.value, "note": a.note}
                          for a in task.acknowledgements],
        can_answer=not ended and task.state is not TaskState.CLOSED, max_note=MAX_NOTE_LENGTH,
        closed_zh=f"该预警已{ENDED_NAMES.get(state, '结束')}，无需确认。",
        closed_en=f"This warning is {state}; nothing to confirm.", recorded=recorded)


_ERROR_TITLES = {403: ("链接无效", "This link is not valid"), 404: ("未找到", "Not found"),
                 409: ("无法确认", "Cannot be confirmed"), 410: ("链接已过期", "This link has expired"),
                 422: ("输入有误", "Please check your input")}


def _error_page(err: BroadcastError) -> web.Response:
    zh, en = _ERROR_TITLES.get(err.status, ("出错了", "Something went wrong"))
    page = environment().get_template("linkage/ack_page.html").render(
        error={"title_zh": zh, "title_en": en, "message": err.message, "status": err.status, "field": err.field},
        colour="#555555")
    return _html(page, status=err.status)


def _html(page: str, status: int = 200) -> web.Response:
    response = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"  # the page shows a live state
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    return response


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", charset="utf-8")


async def _read_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        doc = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedInput(f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body must be a JSON object", field="body")
    return doc
