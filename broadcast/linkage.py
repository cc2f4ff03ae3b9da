"""Four-level linkage: the tasks an issued alert opens at every unit it hits, and their acknowledgements.

"One level issues, two levels supervise, four levels act": every unit (city, district,
street, community) the targeting hit gets one task with a deadline set by severity. Its
duty officers acknowledge it (by link, API, SMS reply or voice keypress); reminders and
escalation are scheduled by RQ (see :mod:`broadcast.linkage_jobs`).

This module holds the model, the pure rules that change a task, and the Redis store:

- one hash per alert (``keys.linkage_tasks``): unit code -> task JSON;
- one stream per alert (``keys.linkage_events``): every change, in order, with the task as
  it became (the supervision stream replays it from any event id);
- changes are compare-and-set in one Lua script (the field still holds the JSON the change
  was computed from), so concurrent acknowledgements of different units never contend and
  two of the same unit never overwrite each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import redis

from broadcast import keys
from broadcast.errors import Conflict, InvalidInput, NotFound

MAX_NOTE_LENGTH = 500
EVENTS_KEPT = 20_000  # per alert: a city-wide warning makes ~875 tasks and a few events each


class TaskState(StrEnum):
    OPEN = "open"  # waiting for an acknowledgement (overdue once past its deadline)
    ACKNOWLEDGED = "acknowledged"  # an officer of the unit answered
    CLOSED = "closed"  # the alert was cancelled, updated or expired before anyone answered


class AckStatus(StrEnum):
    RECEIVED = "received"
    LINKAGE_STARTED = "linkage_started"
    CANNOT_COMPLY = "cannot_comply"


class AckVia(StrEnum):
    LINK = "link"
    API = "api"
    SMS = "sms"
    VOICE = "voice"


# How far an acknowledgement says the unit has got; a later acknowledgement never goes back.
_PROGRESS = {AckStatus.RECEIVED: 1, AckStatus.CANNOT_COMPLY: 2, AckStatus.LINKAGE_STARTED: 3}


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    officer: str  # roster officer id
    at: float  # epoch seconds
    via: AckVia
    status: AckStatus
    note: str = ""  # what was started, or why the unit cannot comply

    def as_dict(self) -> dict[str, Any]:
        return {"officer": self.officer, "at": self.at, "via": self.via.value, "status": self.status.value,
                "note": self.note}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Acknowledgement:
        return cls(doc["officer"], doc["at"], AckVia(doc["via"]), AckStatus(doc["status"]), doc.get("note", ""))


@dataclass(frozen=True, slots=True)
class Contact:
    """A notification sent about a task: the first notice, a reminder or an escalation."""

    kind: str  # "notice" | "reminder" | "escalation"
    at: float
    officer: str | None  # roster officer id, or None when the notice went to a supervising unit
    channel: str
    unit: str  # the unit whose officer was contacted (the parent's, for escalation)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": self.at, "officer": self.officer, "channel": self.channel,
                "unit": self.unit}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Contact:
        return cls(doc["kind"], doc["at"], doc.get("officer"), doc["channel"], doc["unit"])


@dataclass(frozen=True, slots=True)
class Task:
    alert_id: str
    unit: str  # gazetteer code
    level: str  # city | district | street | community
    parent: str | None  # the supervising unit's code
    opened_at: float
    deadline: float
    state: TaskState = TaskState.OPEN
    acknowledgements: tuple[Acknowledgement, ...] = ()
    contacts: tuple[Contact, ...] = ()
    escalation: int = 0  # 0 none, 1 deputy notified, 2 supervising unit notified
    closed_reason: str = ""
    version: int = 1

    @property
    def acknowledged_at(self) -> float | None:
        return self.acknowledgements[0].at if self.acknowledgements else None

    @property
    def status(self) -> AckStatus | None:
        """The furthest status any acknowledgement reported."""
        if not self.acknowledgements:
            return None
        return max((a.status for a in self.acknowledgements), key=_PROGRESS.__getitem__)

    def overdue(self, now: float) -> bool:
        """Not answered by its deadline (an answer after the deadline leaves the task late, not overdue)."""
        return self.state is TaskState.OPEN and now >= self.deadline

    def late(self) -> bool:
        at = self.acknowledged_at
        return at is not None and at > self.deadline

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "unit": self.unit, "level": self.level, "parent": self.parent,
            "opened_at": self.opened_at, "deadline": self.deadline, "state": self.state.value,
            "acknowledgements": [a.as_dict() for a in self.acknowledgements],
            "contacts": [c.as_dict() for c in self.contacts],
            "escalation": self.escalation, "closed_reason": self.closed_reason, "version": self.version,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Task:
        return cls(
            alert_id=doc["alert_id"], unit=doc["unit"], level=doc["level"], parent=doc.get("parent"),
            opened_at=doc["opened_at"], deadline=doc["deadline"], state=TaskState(doc["state"]),
            acknowledgements=tuple(Acknowledgement.from_dict(a) for a in doc.get("acknowledgements", ())),
            contacts=tuple(Contact.from_dict(c) for c in doc.get("contacts", ())),
            escalation=doc.get("escalation", 0), closed_reason=doc.get("closed_reason", ""),
            version=doc.get("version", 1),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Task:
        return cls.from_dict(json.loads(raw))


# ---------------------------------------------------------------- pure rules


def check_note(note: str, status: AckStatus) -> str:
    note = note.strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidInput(f"note is {len(note)} characters; at most {MAX_NOTE_LENGTH}", field="note")
    if status is AckStatus.CANNOT_COMPLY and not note:
        raise InvalidInput("say why the unit cannot comply", field="note")
    return note


def acknowledge(task: Task, ack: Acknowledgement) -> Task | None:
    """The task after ``ack``, or None when it changes nothing (the same answer again is harmless).

    Raises Conflict when the task was closed (its alert cancelled, updated or expired).
    """
    if task.state is TaskState.CLOSED:
        raise Conflict(f"the task of unit {task.unit} is closed ({task.closed_reason}); nothing to acknowledge")
    same = [a for a in task.acknowledgements if a.officer == ack.officer]
    if any(a.status is ack.status and a.note == ack.note for a in same):
        return None
    if task.status is not None and _PROGRESS[ack.status] < _PROGRESS[task.status] and not ack.note:
        return None  # "received" after "linkage started" says nothing new
    return replace(task, state=TaskState.ACKNOWLEDGED, acknowledgements=(*task.acknowledgements, ack),
                   version=task.version + 1)


def close(task: Task, reason: str) -> Task | None:
    """Close an open task (the alert ended before anyone answered); acknowledged tasks stay as they are."""
    if task.state is not TaskState.OPEN:
        return None
    return replace(task, state=TaskState.CLOSED, closed_reason=reason, version=task.version + 1)


def contacted(task: Task, contact: Contact, *, escalation: int | None = None) -> Task:
    return replace(task, contacts=(*task.contacts, contact),
                   escalation=task.escalation if escalation is None else escalation, version=task.version + 1)


def contacted_all(task: Task, contacts: Iterable[Contact]) -> Task | None:
    """Several notifications sent about the task (None when there are none)."""
    added = tuple(contacts)
    if not added:
        return None
    return replace(task, contacts=(*task.contacts, *added), version=task.version + 1)


def escalate(task: Task, step: int, contacts: Iterable[Contact] = ()) -> Task | None:
    """Escalation ``step`` (1: the deputy, 2: the supervising unit) of a task still open, with the
    notifications it sent; None when the task was answered or closed meanwhile, or is past that step."""
    if task.state is not TaskState.OPEN or task.escalation >= step:
        return None
    return replace(task, contacts=(*task.contacts, *contacts), escalation=step, version=task.version + 1)


def carried(task: Task, alert_id: str) -> Task:
    """The task as an Update that does not raise the level takes it over: same unit, deadline and history."""
    return replace(task, alert_id=alert_id)


# ---------------------------------------------------------------- the store

# Replace a task only if it still is what the change was computed from, and log the change.
CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'type', ARGV[4], 'unit', ARGV[1], 'task', ARGV[3])
return 1
"""


def cas_call(alert_id: str, unit: str, raw: bytes, updated: Task, event: str) -> tuple[list[str], list[Any]]:
    """Keys and arguments of the compare-and-set script (``CAS_SCRIPT``): replace ``raw`` by ``updated``."""
    return [keys.linkage_tasks(alert_id), keys.linkage_events(alert_id)], [unit, raw, updated.to_json(), event,
                                                                           EVENTS_KEPT]


class LinkageStore:
    """The tasks of every alert, in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._cas = client.register_script(CAS_SCRIPT)

    def open(self, tasks: Iterable[Task]) -> int:
        """Store new tasks; a unit that already has a task for the alert keeps it. Returns how many were new."""
        tasks = list(tasks)
        if not tasks:
            return 0
        alert_id = tasks[0].alert_id
        with self.redis.pipeline(transaction=True) as pipe:
            for task in tasks:
                pipe.hsetnx(keys.linkage_tasks(alert_id), task.unit, task.to_json())
            created = pipe.execute()
        new = [t for t, ok in zip(tasks, created, strict=True) if ok]
        if new:
            with self.redis.pipeline(transaction=False) as pipe:
                for task in new:
                    pipe.xadd(keys.linkage_events(alert_id), {"type": "opened", "unit": task.unit,
                                                               "task": task.to_json()},
                              maxlen=EVENTS_KEPT, approximate=True)
                pipe.sadd(keys.LINKAGE_ALERTS, alert_id)
                pipe.execute()
        return len(new)

    def tasks(self, alert_id: str) -> dict[str, Task]:
        return {k.decode(): Task.from_json(v) for k, v in self.redis.hgetall(keys.linkage_tasks(alert_id)).items()}

    def task(self, alert_id: str, unit: str) -> Task:
        raw = self.redis.hget(keys.linkage_tasks(alert_id), unit)
        if raw is None:
            raise NotFound(f"alert {alert_id} has no linkage task for unit {unit}", field="unit")
        return Task.from_json(raw)

    def change(self, alert_id: str, unit: str, event: str, rule: Callable[[Task], Task | None],
               *, attempts: int = 20, raw: bytes | None = None) -> tuple[Task, bool]:
        """Apply ``rule`` to the stored task atomically; returns (task as it is now, whether it changed).

        ``rule`` is pure: it gets the current task and returns the new one, or None for no change.
        Its errors (Conflict, InvalidInput) propagate and nothing is written. ``raw``: the task's JSON
        as the caller has just read it, which saves the first read (the compare-and-set still checks it).
        """
        for attempt in range(attempts):
            if attempt or raw is None:
                raw = self.redis.hget(keys.linkage_tasks(alert_id), unit)
            if raw is None:
                raise NotFound(f"alert {alert_id} has no linkage task for unit {unit}", field="unit")
            current = Task.from_json(raw)
            updated = rule(current)
            if updated is None:
                return current, False
            cas_keys, cas_args = cas_call(alert_id, unit, raw, updated, event)
            if self._cas(keys=cas_keys, args=cas_args):
                return updated, True
        raise Conflict(f"the task of unit {unit} kept changing; try again")

    def events(self, alert_id: str, after: str = "0-0", *, count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Changes after stream id ``after`` (``"$"`` = only new ones), oldest first: (event id, event)."""
        reply = self.redis.xread({keys.linkage_events(alert_id): after}, count=count)
        out = []
        for _, entries in reply or ():
            for event_id, fields in entries:
                out.append((event_id.decode(), {"type": fields[b"type"].decode(), "unit": fields[b"unit"].decode(),
                                                "task": json.loads(fields[b"task"])}))
        return out


__all__ = ["CAS_SCRIPT", "AckStatus", "AckVia", "Acknowledgement", "Contact", "LinkageStore", "Task", "TaskState",
           "acknowledge", "carried", "cas_call", "check_note", "close", "contacted", "contacted_all", "escalate"]
