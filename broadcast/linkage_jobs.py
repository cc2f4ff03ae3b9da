"""Linkage use cases run by the RQ workers: open an alert's tasks, notify, remind, escalate, close.

One alert's tasks, from issue to end (every later step scheduled with RQ's own scheduler,
``enqueue_at`` on the housekeeping queue, never a timer loop of ours)::

    issue        the dissemination job calls on_issue() before it starts the public fan-out:
                 one task per unit hit at every level (codes per level plus edge units), the
                 deadline by colour (else CAP severity) from settings.linkage_deadline_minutes;
                 the replaced alert's open tasks are closed (Update, Cancel); then notify is
                 queued and remind / overdue are scheduled
    notify       every on-duty officer of each unit, on their first preferred channel (the next
                 one if that fails), with a personal signed link (broadcast/ack_links.py)
    remind       at linkage_reminder_fraction of the way to the deadline, open tasks only: each
                 officer on the channel after the one that reached them (voice once the order is used up)
    overdue      at the deadline, open tasks only: the unit's deputies by voice call (escalation 1),
                 and supervise is scheduled linkage_parent_delay_fraction of a deadline later
    supervise    still open then: the on-duty officers of the supervising unit (the parent, or the
                 nearest ancestor with officers) get one message naming their overdue units (escalation 2)
    end          a Cancel or an Update closes the replaced alert's open tasks (on_issue of the
                 new record), the expiry job closes the alert's own

An Update that raises the level (colour, else CAP severity) gets fresh tasks with the new
deadline and fresh notices; one that does not carries the old tasks over as they stand
(acknowledged, contacted, same deadline), and only units new to the update get fresh tasks.

Why notify is a job of its own rather than part of the dissemination job: sending ~1,750
personal notices (875 units x 2 officers for a city-wide warning: rendering, SMPP and HTTP round
trips) takes a second or more, and done inline it would delay the first public SMS by as much.
Queued at the front of the alert's severity queue it is what the next free worker takes, ahead
of every batch of the fan-out (batches go to the back of that queue), and with two or more
workers the public batches start alongside it. The notices take tokens from the same per-channel
token buckets as the fan-out, so together they never exceed a provider's rate, and since they
ask first, officers are served first. The scheduled steps scan the alert's tasks, so there are
a handful of jobs per alert, not one per task.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
import redis.asyncio
from rq import Queue, Retry, get_current_job
from rq.exceptions import DuplicateJobError

from broadcast import ack_links, cap, keys, sender
from broadcast.errors import TransientDeliveryError
from broadcast.linkage import Contact, LinkageStore, Task, TaskState, carried, close, contacted_all, escalate
from broadcast.model import MsgType, Severity
from broadcast.queues import HOUSEKEEPING_QUEUE, QUEUE_BY_SEVERITY
from broadcast.records import AlertRecord, State
from broadcast.render import TEMPLATES_DIR, render
from broadcast.roster import Officer, Rank, Roster, RosterStore
from broadcast.settings import Settings, load_settings
from broadcast.signals import Level as Colour
from broadcast.signals import Signal, load_catalogue
from broadcast.store import AlertStore
from channels.base import (
    DeliveryStatus,
    Message,
    Recipient,
    RenderedText,
)
from geotarget.gazetteer import Gazetteer
from geotarget.registry import RegistryStore, TargetCache

log = logging.getLogger(__name__)

LINKAGE_TEMPLATES = TEMPLATES_DIR / "linkage"
DEFAULT_DEADLINE_MINUTES = 60.0
LINK_LIFETIME_WITHOUT_EXPIRY = 86400.0  # an alert without <expires>: links last a day
CHUNK = 100  # notices sent (and tokens taken) at once per channel
CONCURRENCY = 50  # sends in flight per channel
UNITS_NAMED = 10  # a supervisor's message names this many overdue units, then "and N more"
SLACK_SECONDS = 0.5  # a scheduled step also handles what falls due this soon after it runs
SEVERITY_RANK = {Severity.UNKNOWN: 0, Severity.MINOR: 1, Severity.MODERATE: 2, Severity.SEVERE: 3,
                 Severity.EXTREME: 4}


# ---------------------------------------------------------------- deadlines and levels


def colour_of(record: AlertRecord) -> Colour | None:
    """The warning's colour ("rainstorm.red" -> red), None for an alert without a signal."""
    level = (record.signal or "").rpartition(".")[2]
    return Colour(level) if level in Colour.__members__.values() else None


def deadline_minutes(settings: Settings, record: AlertRecord) -> float:
    """Minutes each unit has to acknowledge: by colour, else by CAP severity, else 60."""
    table = settings.linkage_deadlines
    colour = colour_of(record)
    if colour is not None and colour.value in table:
        return table[colour.value]
    return table.get(record.alert.severity.value, DEFAULT_DEADLINE_MINUTES)


def raises_level(update: AlertRecord, original: AlertRecord) -> bool:
    """Whether an Update is more severe than what it replaces (colours if both have one, else CAP severity)."""
    new, old = colour_of(update), colour_of(original)
    if new is not None and old is not None:
        return new.rank > old.rank
    return SEVERITY_RANK[update.alert.severity] > SEVERITY_RANK[original.alert.severity]


def units_hit(record: AlertRecord, gazetteer: Gazetteer) -> list[str]:
    """Every unit the alert's targeting hit, at every level (edge units too), from the top down."""
    summary = record.targets or {}
    codes = [c for level_codes in summary.get("codes", {}).values() for c in level_codes]
    codes += summary.get("edge", [])
    known = {c for c in codes if c in gazetteer}
    return sorted(known, key=lambda c: (gazetteer.unit(c).level.depth, c))


def build_tasks(record: AlertRecord, gazetteer: Gazetteer, opened_at: float, minutes: float) -> list[Task]:
    deadline = opened_at + minutes * 60
    units = [gazetteer.unit(code) for code in units_hit(record, gazetteer)]
    return [Task(alert_id=record.id, unit=unit.code, level=unit.level.value, parent=unit.parent,
                 opened_at=opened_at, deadline=deadline) for unit in units]


def reminder_at(task: Task, settings: Settings) -> float:
    return task.opened_at + (task.deadline - task.opened_at) * settings.linkage_reminder_fraction


def supervise_at(task: Task, settings: Settings) -> float:
    return task.deadline + (task.deadline - task.opened_at) * settings.linkage_parent_delay_fraction


# ---------------------------------------------------------------- issue and end


def on_issue(client: redis.Redis, record: AlertRecord, gazetteer: Gazetteer, settings: Settings,
             *, now: float | None = None) -> int:
    """Open the tasks of a just-issued alert, queue its officers' notices and schedule its deadlines;
    close the open tasks of the alert it replaces. Idempotent (a re-run opens nothing twice).

    Returns:
        How many tasks were opened.
    """
    now = time.time() if now is None else now
    store = LinkageStore(client)
    original = AlertStore(client).get(record.replaces) if record.replaces else None
    if record.alert.msg_type is MsgType.CANCEL:
        if original is not None:
            close_tasks(client, original.id, f"cancelled by alert {record.id}")
        return 0
    tasks = build_tasks(record, gazetteer, now, deadline_minutes(settings, record))
    if original is not None and not raises_level(record, original):
        previous = store.tasks(original.id)
        tasks = [carried(previous[t.unit], record.id) if t.unit in previous else t for t in tasks]
    opened = store.open(tasks)
    if original is not None:
        close_tasks(client, original.id, f"updated by alert {record.id}")
    _enqueue(Queue(QUEUE_BY_SEVERITY[record.alert.severity], connection=client), "notify", record.id,
             settings, at_front=True)
    schedule(client, record, tasks, settings)
    return opened


def close_tasks(client: redis.Redis, alert_id: str, reason: str) -> int:
    """Close every open task of an alert (acknowledged ones stay); returns how many were closed."""
    store = LinkageStore(client)
    closed = 0
    for unit, task in store.tasks(alert_id).items():
        if task.state is TaskState.OPEN:
            closed += store.change(alert_id, unit, "closed", lambda t: close(t, reason))[1]
    return closed


def schedule(client: redis.Redis, record: AlertRecord, tasks: Iterable[Task], settings: Settings) -> None:
    """Schedule the steps still ahead of each open task (one job per distinct second, per step); a task
    carried over from the alert an Update replaced may be past some of them. Nothing is scheduled
    after the alert expires: its tasks close then."""
    due: dict[str, set[int]] = defaultdict(set)
    for task in tasks:
        if task.state is not TaskState.OPEN:
            continue
        if not any(c.kind == "reminder" for c in task.contacts):
            due["remind"].add(math.ceil(reminder_at(task, settings)))
        if task.escalation == 0:
            due["overdue"].add(math.ceil(task.deadline))
        elif task.escalation == 1:
            due["supervise"].add(math.ceil(supervise_at(task, settings)))
    _schedule(client, record, due, settings)


def _schedule(client: redis.Redis, record: AlertRecord, due: dict[str, set[int]], settings: Settings) -> None:
    expires = record.alert.expires.timestamp() if record.alert.expires else math.inf
    queue = Queue(HOUSEKEEPING_QUEUE, connection=client)
    for step, stamps in due.items():
        for stamp in sorted(stamps):
            if stamp < expires:
                _enqueue(queue, step, record.id, settings, at=stamp)


def _enqueue(queue: Queue, step: str, alert_id: str, settings: Settings, *, at: int | None = None,
             at_front: bool = False) -> None:
    job_id = f"linkage-{step}-{alert_id}" + (f"-{at}" if at is not None else "")
    options: dict[str, Any] = {"job_id": job_id, "job_timeout": settings.job_timeout_seconds, "result_ttl": 86400,
                               "failure_ttl": 7 * 86400, "retry": Retry(max=2, interval=[5, 30]), "unique": True}
    try:
        if at is None:
            queue.enqueue(f"broadcast.linkage_jobs.{step}", alert_id, at_front=at_front, **options)
        else:
            when = datetime.fromtimestamp(at, UTC)
            queue.enqueue_at(when, f"broadcast.linkage_jobs.{step}", alert_id, **options)
    except DuplicateJobError:
        pass  # queued already (a re-run of the dissemination job)


# ---------------------------------------------------------------- the steps


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to one officer: about their unit's task, or (``overdue``) about units below theirs."""

    kind: str  # notice | reminder | escalation (deputy of an overdue unit) | overdue (supervising unit)
    officer: Officer
    channel: str
    unit: str  # the task's unit; for "overdue", the supervising unit
    deadline: float  # the task's (for "overdue", the earliest of the overdue units')
    about: tuple[str, ...] = ()  # for "overdue": the overdue units

    @property
    def contact_kind(self) -> str:
        return "escalation" if self.kind == "overdue" else self.kind

    @property
    def recipient_id(self) -> str:
        # The voice keypress callback gets this back (signed by Twilio) and acknowledges the task of
        # "officer:..." ids; kinds differ so that providers' dedupe (WeChat client_msg_id) lets a reminder through.
        if self.kind == "overdue":  # one per set of overdue units: a later set is another message
            digest = hashlib.sha256(",".join(self.about).encode()).hexdigest()[:8]
            return f"supervisor:overdue-{digest}:{self.officer.id}:{self.unit}"
        return f"officer:{self.kind}:{self.officer.id}:{self.unit}"


def parse_recipient_id(recipient_id: str) -> tuple[str, str] | None:
    """(officer id, unit) of an officer's notice recipient id, None for anything else."""
    parts = recipient_id.split(":", 3)
    if len(parts) != 4 or parts[0] != "officer":
        return None
    return parts[2], parts[3]


@dataclass
class _Round:
    """What one step needs: Redis, settings, the alert, the roster and the gazetteer."""

    client: redis.Redis
    settings: Settings
    record: AlertRecord
    roster: Roster
    gazetteer: Gazetteer
    now: float

    @classmethod
    def load(cls, client: redis.Redis, settings: Settings, alert_id: str, now: float | None) -> _Round | None:
        """None when the alert is no longer issued (its tasks are closed or about to be)."""
        record = AlertStore(client).get(alert_id)
        if record.state is not State.ISSUED:
            return None
        gazetteer = TargetCache(RegistryStore(client, settings.data_dir)).get().gazetteer
        roster = RosterStore(client, settings.timezone).load()
        return cls(client, settings, record, roster, gazetteer, time.time() if now is None else now)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def reachable(self, unit: str) -> list[Officer]:
        """The unit's officers on duty; if nobody is on shift, all of them (better than no one)."""
        return self.roster.on_duty(unit, self.at) or self.roster.of_unit(unit)

    def open_tasks(self) -> list[Task]:
        tasks = LinkageStore(self.client).tasks(self.record.id).values()
        return [t for t in tasks if t.state is TaskState.OPEN]


def notify_officers(client: redis.Redis, settings: Settings, alert_id: str, *, now: float | None = None) -> int:
    """Notify every on-duty officer of every open task not yet notified; returns notices sent."""
    step = _Round.load(client, settings, alert_id, now)
    if step is None:
        return 0
    notices = []
    for task in step.open_tasks():
        done = {c.officer for c in task.contacts if c.kind == "notice"}
        notices += [Notice("notice", o, o.order[0], task.unit, task.deadline) for o in step.reachable(task.unit)
                    if o.id not in done]
    sent = deliver(step, notices)
    _record(step, sent, "notified", contacted_all)
    return len(sent)


def send_reminders(client: redis.Redis, settings: Settings, alert_id: str, *, now: float | None = None) -> int:
    """Remind the officers of open tasks whose reminder is due and not yet sent; returns reminders sent."""
    step = _Round.load(client, settings, alert_id, now)
    if step is None:
        return 0
    notices = []
    for task in step.open_tasks():
        if reminder_at(task, settings) > step.now + SLACK_SECONDS or any(c.kind == "reminder" for c in task.contacts):
            continue
        reached = {c.officer: c.channel for c in task.contacts if c.kind == "notice" and c.officer}
        for officer in step.reachable(task.unit):
            channel = officer.channel_after(reached[officer.id]) if officer.id in reached else officer.order[0]
            notices.append(Notice("reminder", officer, channel, task.unit, task.deadline))
    sent = deliver(step, notices)
    _record(step, sent, "reminded", contacted_all)
    return len(sent)


def escalate_overdue(client: redis.Redis, settings: Settings, alert_id: str, *, now: float | None = None) -> int:
    """Tasks open past their deadline: call their deputies (escalation 1) and schedule the supervising
    unit's notice; returns how many tasks were escalated."""
    step = _Round.load(client, settings, alert_id, now)
    if step is None:
        return 0
    due = [t for t in step.open_tasks() if t.deadline <= step.now + SLACK_SECONDS and t.escalation == 0]
    notices = []
    for task in due:
        for deputy in (o for o in step.reachable(task.unit) if o.rank is Rank.DEPUTY):
            notices.append(Notice("escalation", deputy, "voice" if "voice" in deputy.contacts else deputy.order[0],
                                  task.unit, task.deadline))
    sent = deliver(step, notices)
    _record(step, sent, "escalated", _escalation(1), every=[t.unit for t in due])
    _schedule(client, step.record, {"supervise": {math.ceil(supervise_at(t, settings)) for t in due}}, settings)
    return len(due)


def notify_supervisors(client: redis.Redis, settings: Settings, alert_id: str, *, now: float | None = None) -> int:
    """Tasks still open after the deputy: tell the supervising unit which of its units are overdue
    (escalation 2); returns how many tasks were escalated."""
    step = _Round.load(client, settings, alert_id, now)
    if step is None:
        return 0
    due = [t for t in step.open_tasks()
           if t.escalation == 1 and t.parent and supervise_at(t, settings) <= step.now + SLACK_SECONDS]
    overdue_below: dict[str, list[Task]] = defaultdict(list)
    for task in due:
        supervisor = _supervising_unit(step, task.unit)
        if supervisor is not None:
            overdue_below[supervisor].append(task)
    notices = [Notice("overdue", officer, officer.order[0], supervisor, min(t.deadline for t in tasks),
                      tuple(t.unit for t in tasks))
               for supervisor, tasks in overdue_below.items() for officer in step.reachable(supervisor)]
    sent = deliver(step, notices)
    _record(step, sent, "escalated", _escalation(2), every=[t.unit for t in due])
    return len(due)


def _escalation(level: int) -> Callable[[Task, list[Contact]], Task | None]:
    """Record escalation ``level`` with its contacts; contacts alone if the task moved on meanwhile."""
    return lambda task, contacts: escalate(task, level, contacts) or contacted_all(task, contacts)


def _supervising_unit(step: _Round, unit: str) -> str | None:
    """The parent, or the nearest ancestor with officers on the roster."""
    for ancestor in step.gazetteer.ancestors(unit):  # nearest first
        if step.roster.of_unit(ancestor.code):
            return ancestor.code
    return None


def _record(step: _Round, sent: Sequence[tuple[Notice, str]], event: str,
            rule: Callable[[Task, list[Contact]], Task | None], every: Iterable[str] = ()) -> None:
    """Record each accepted notice on its task(s) with ``rule(task, contacts)`` (also for tasks in
    ``every`` that got none), and remember each officer's latest notice for SMS replies."""
    by_unit: dict[str, list[Contact]] = {unit: [] for unit in every}
    latest = {}
    for notice, channel in sent:
        contact = Contact(notice.contact_kind, step.now, notice.officer.id, channel, notice.unit)
        for unit in notice.about or (notice.unit,):
            by_unit.setdefault(unit, []).append(contact)
        if notice.kind != "overdue":
            latest[notice.officer.id] = step.record.id
    store = LinkageStore(step.client)
    for unit, contacts in by_unit.items():
        store.change(step.record.id, unit, event, lambda task, c=contacts: rule(task, c))
    if latest:
        with step.client.pipeline() as pipe:
            pipe.hset(keys.LINKAGE_LATEST_NOTICE, mapping=latest)
            pipe.expire(keys.LINKAGE_LATEST_NOTICE, keys.LATEST_NOTICE_TTL_SECONDS)
            pipe.execute()


# ---------------------------------------------------------------- sending


def deliver(step: _Round, notices: Sequence[Notice]) -> list[tuple[Notice, str]]:
    """Send each notice on its channel, falling back to the officer's other channels when one fails.

    Returns:
        (notice, the channel that took it) for every notice some channel accepted.
    """
    if not notices:
        return []
    catalogue = load_catalogue()
    signal = catalogue.from_event_codes(code for info in step.record.alert.infos for code in info.event_codes)
    secret = ack_links.secret_of(step.settings, step.client)
    # The worker's sender runtime: the same open adapters (a bound SMPP session) and token buckets
    # as the public fan-out, so notices and public messages share each account's rate.
    runtime = sender.runtime(step.settings)
    return runtime.run(_deliver(step, list(notices), signal, secret, runtime.pool))


async def _deliver(step: _Round, notices: list[Notice], signal: Signal | None, secret: bytes,
                   pool: sender.ChannelPool) -> list[tuple[Notice, str]]:
    cap_xml = cap.to_xml(step.record.alert)
    texts = NoticeTexts(step, signal)
    accepted: list[tuple[Notice, str]] = []
    tried: dict[int, set[str]] = {id(n): {n.channel} for n in notices}
    pending = [(n, n.channel) for n in notices]
    while pending:
        by_channel: dict[str, list[Notice]] = defaultdict(list)
        for notice, channel in pending:
            by_channel[channel].append(notice)
        outcomes = await asyncio.gather(*(
            _send_channel(step, pool, channel, listed, texts, secret, cap_xml)
            for channel, listed in by_channel.items()))
        pending = []
        for channel, results in zip(by_channel, outcomes, strict=True):
            for notice, ok in results:
                if ok:
                    accepted.append((notice, channel))
                    continue
                fallback = _next_untried(notice.officer, tried[id(notice)])
                if fallback is not None:
                    tried[id(notice)].add(fallback)
                    pending.append((notice, fallback))
                else:
                    log.warning("could not reach officer %s about %s on any channel", notice.officer.id,
                                notice.unit)
    return accepted


def _next_untried(officer: Officer, tried: set[str]) -> str | None:
    candidates = [*officer.order, *(["voice"] if "voice" in officer.contacts else [])]
    return next((c for c in candidates if c not in tried and c in officer.contacts), None)


async def _send_channel(step: _Round, pool: sender.ChannelPool, channel: str, notices: list[Notice],
                        texts: NoticeTexts, secret: bytes, cap_xml: bytes) -> list[tuple[Notice, bool]]:
    """Send ``notices`` on one channel, a chunk at a time after taking that many tokens from its bucket."""
    adapter = await pool.adapter(channel)
    bucket = await pool.bucket(channel)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(notice: Notice) -> bool:
        message, recipient = build_notice(step, notice, channel, texts, secret, cap_xml)
        async with limit:
            try:
                [result] = await adapter.send(message, [recipient])
            except TransientDeliveryError as err:
                log.warning("%s is down for officer %s: %s", channel, notice.officer.id, err.message)
                return False
        if result.status is not DeliveryStatus.ACCEPTED:
            log.warning("%s did not take the notice to officer %s: %s", channel, notice.officer.id, result.error)
        return result.status is DeliveryStatus.ACCEPTED

    results: list[tuple[Notice, bool]] = []
    for start in range(0, len(notices), CHUNK):
        chunk = notices[start:start + CHUNK]
        await bucket.take(len(chunk))
        outcomes = await asyncio.gather(*(one(n) for n in chunk))
        results += zip(chunk, outcomes, strict=True)
    return results


class NoticeTexts:
    """Officer notices rendered from templates/linkage/<channel>/<language>.j2.

    Rendering 1,750 notices one by one costs about a second of CPU, so each (channel, language,
    kind) is rendered once with markers where the personal values go (officer, unit, link,
    deadline), which are then filled in by string replacement. Supervisors' "overdue" notices,
    which list units, are rendered one by one.
    """

    PERSONAL = ("officer", "unit", "unit_code", "link", "deadline")

    def __init__(self, step: _Round, signal: Signal | None) -> None:
        self.step = step
        self.signal = signal
        self._templates: dict[tuple[str, str, str], RenderedText] = {}

    def text(self, channel: str, language: str, kind: str, values: dict[str, Any]) -> RenderedText:
        if kind == "overdue":
            return self._render(channel, language, {"kind": kind, **values})
        key = (channel, language, kind)
        template = self._templates.get(key)
        if template is None:
            markers = {name: f"\ue000{name}\ue001" for name in self.PERSONAL}  # private-use: in no real text
            template = self._templates[key] = self._render(channel, language,
                                                           {"kind": kind, "units": [], "more": 0, **markers})

        def fill(text: str | None) -> str | None:
            if text is None:
                return None
            for name in self.PERSONAL:
                text = text.replace(f"\ue000{name}\ue001", str(values[name]))
            return text

        return RenderedText(language, fill(template.body) or "", fill(template.subject), fill(template.html),
                            {name: fill(part) or "" for name, part in template.parts.items()})

    def _render(self, channel: str, language: str, extra: dict[str, Any]) -> RenderedText:
        return render(channel, self.step.record.alert, language, signal=self.signal,
                      timezone=self.step.settings.timezone, extra=extra, templates_dir=LINKAGE_TEMPLATES)


def build_notice(step: _Round, notice: Notice, channel: str, texts: NoticeTexts, secret: bytes,
                 cap_xml: bytes) -> tuple[Message, Recipient]:
    """The personal message (link included) and the recipient of one notice on ``channel``."""
    record, officer, settings, signal = step.record, notice.officer, step.settings, texts.signal
    zh = officer.language.lower().startswith("zh")
    task_link = ""
    if notice.kind != "overdue":
        expires = record.alert.expires.timestamp() if record.alert.expires else step.now + LINK_LIFETIME_WITHOUT_EXPIRY
        token = ack_links.sign(secret, ack_links.AckClaim(record.id, notice.unit, officer.id, int(expires)))
        task_link = ack_links.link(settings, token)
    values = {
        "officer": officer.name,
        "unit": _unit_name(step.gazetteer, notice.unit, zh),
        "unit_code": notice.unit,
        "link": task_link,
        "deadline": datetime.fromtimestamp(notice.deadline, ZoneInfo(settings.timezone)).strftime("%H:%M"),
        "units": [_unit_name(step.gazetteer, u, zh) for u in notice.about[:UNITS_NAMED]],
        "more": max(0, len(notice.about) - UNITS_NAMED),
    }
    text = texts.text(channel, officer.language, notice.kind, values)
    message = Message(alert_id=record.id, alert=record.alert, texts={officer.language: text}, cap_xml=cap_xml,
                      signal=signal.code if signal else None, colour=signal.colour if signal else None)
    attributes = {"link": task_link} if task_link else {}
    return message, Recipient(notice.recipient_id, officer.contacts[channel], officer.language, attributes)


def _unit_name(gazetteer: Gazetteer, code: str, zh: bool) -> str:
    if code not in gazetteer:
        return code
    unit = gazetteer.unit(code)
    return unit.name_zh if zh or not unit.name_en else unit.name_en


# ---------------------------------------------------------------- RQ entry points


def _job_context() -> tuple[redis.Redis, Settings]:
    job = get_current_job()
    if job is None:
        raise RuntimeError("broadcast.linkage_jobs job functions run inside an RQ worker")
    return job.connection, load_settings()


def notify(alert_id: str) -> int:
    """Queued at issue, ahead of the fan-out: the officers' first notices."""
    return notify_officers(*_job_context(), alert_id)


def remind(alert_id: str) -> int:
    """Scheduled at the reminder time of the alert's tasks."""
    return send_reminders(*_job_context(), alert_id)


def overdue(alert_id: str) -> int:
    """Scheduled at the deadline of the alert's tasks."""
    return escalate_overdue(*_job_context(), alert_id)


def supervise(alert_id: str) -> int:
    """Scheduled by ``overdue``: the supervising units of tasks still open."""
    return notify_supervisors(*_job_context(), alert_id)
