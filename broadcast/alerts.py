"""The alert use cases: compose, import, edit, submit, approve, reject, update, cancel, expire.

Each use case checks the actor's role, runs the workflow rule inside a store
transaction, and writes the new records, their audit entries and any RQ jobs together.
A refused attempt on an existing alert writes only an audit entry marked ``refused``;
a refused composition or import writes only such an entry to the service stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis

from broadcast import audit, cap, keys, workflow
from broadcast.audit import REFUSED, AuditEntry
from broadcast.codec import alert_to_json
from broadcast.compose import Composed, compose, merge_requests, new_alert_id, policy_findings
from broadcast.errors import BroadcastError, Conflict, InvalidInput
from broadcast.jurisdiction import Jurisdiction
from broadcast.model import Alert, Info, MsgType, ResponseType
from broadcast.preview import Fit, preview
from broadcast.queues import HOUSEKEEPING_QUEUE, QUEUE_BY_SEVERITY, JobRequest
from broadcast.records import AlertRecord, Dissemination, Finding, Origin, Stamp, State
from broadcast.settings import Settings
from broadcast.signals import Signal, SignalCatalogue
from broadcast.store import AlertStore, Change
from broadcast.users import Permission, User
from channels.base import registered
from geotarget.areas import check_area
from geotarget.registry import TargetCache
from geotarget.resolve import resolve_alert

CANCEL_HEADLINE_PREFIX = {"zh": "【解除】", "en": "CANCELLED: "}
CANCEL_INSTRUCTION = {
    "zh": "该预警已解除。请留意后续天气信息。",
    "en": "This warning has been cancelled. Stay tuned for further weather information.",
}


@dataclass(frozen=True, slots=True)
class Actor:
    """A user acting through some channel (``remote`` is their address, for the audit trail)."""

    user: User
    remote: str = ""


def dissemination_job(record: AlertRecord) -> JobRequest:
    return JobRequest("broadcast.jobs.disseminate", (record.id,), QUEUE_BY_SEVERITY[record.alert.severity],
                      job_id=f"disseminate-{record.id}")


def expiry_job(record: AlertRecord) -> JobRequest | None:
    expires = record.alert.expires
    if expires is None or record.alert.msg_type is MsgType.CANCEL:
        return None
    return JobRequest("broadcast.jobs.expire", (record.id,), HOUSEKEEPING_QUEUE,
                      job_id=f"expire-{record.id}-v{record.version}", at=expires)


class AlertService:
    def __init__(self, client: redis.Redis, settings: Settings, catalogue: SignalCatalogue, targets: TargetCache,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.store = AlertStore(client, settings.job_timeout_seconds)
        self.catalogue = catalogue
        self.targets = targets
        zone = ZoneInfo(settings.timezone)
        self._clock = clock or (lambda: datetime.now(zone).replace(microsecond=0))

    def now(self) -> datetime:
        return self._clock()

    # ------------------------------------------------------------ reading

    def get(self, actor: Actor, alert_id: str) -> AlertRecord:
        """One alert; an issued alert past its expiry is moved to expired first, so reads never lag."""
        actor.user.require(Permission.READ_ALERTS)
        record = self.store.get(alert_id)
        if workflow.expire(record, self.now()) is not None:
            record = self.expire(alert_id)
        return record

    def list(self, actor: Actor, *, limit: int = 50, offset: int = 0) -> list[AlertRecord]:
        actor.user.require(Permission.READ_ALERTS)
        return self.store.list(limit=limit, offset=offset)

    def audit_trail(self, actor: Actor, alert_id: str) -> list[AuditEntry]:
        actor.user.require(Permission.READ_AUDIT)
        self.store.get(alert_id)
        return audit.read(self.store.redis, alert_id)

    # ------------------------------------------------------------ creating

    def _entry(self, actor: Actor, action: str, **fields: Any) -> AuditEntry:
        return AuditEntry(at=self.now(), actor=actor.user.name, action=action, remote=actor.remote, **fields)

    def _refuse_unbound(self, actor: Actor, action: str, err: BroadcastError) -> None:
        detail = f"{err.field}: {err.message}" if err.field else err.message
        audit.append(self.store.redis, self._entry(actor, action, outcome=REFUSED, detail=detail))

    def _findings(self, alert: Alert) -> tuple[Finding, ...]:
        jurisdiction = Jurisdiction(self.targets.get().gazetteer)
        return tuple(policy_findings(alert, self.settings) + jurisdiction.findings(alert))

    def _compose(self, request: Mapping[str, Any], **fields: Any) -> tuple[Composed, tuple[Finding, ...]]:
        """Compose and apply the geometry rules to the drawn areas; returns the notices they produce.

        Raises:
            InvalidInput: the request, or an area breaking a geometry rule (named by its request path).
        """
        gazetteer = self.targets.get().gazetteer

        def name_units(codes: list[str], language: str) -> str | None:
            units = gazetteer.fewest(codes)  # every district named is the city, named once
            if not units:
                return None
            zh = language.lower().startswith("zh")
            return ("、" if zh else ", ").join(u.name_zh if zh else u.name_en for u in units)

        composed = compose(request, settings=self.settings, catalogue=self.catalogue, name_units=name_units,
                           known_channels=tuple(registered()), **fields)
        top_level = bool(request.get("areas"))
        notices: list[Finding] = []
        for i, info in enumerate(composed.alert.infos[:1] if top_level else composed.alert.infos):
            for j, area in enumerate(info.areas):
                path = f"areas[{j}]" if top_level else f"info[{i}].areas[{j}]"
                checked = check_area(area, path, gazetteer, max_vertices=self.settings.max_area_vertices)
                notices += checked.notices
        return composed, tuple(notices)

    def create(self, actor: Actor, request: Mapping[str, Any]) -> AlertRecord:
        """Compose a new draft from a composition request (see :mod:`broadcast.compose`)."""
        try:
            actor.user.require(Permission.COMPOSE)
            now = self.now()
            alert_id = new_alert_id(now)
            composed, notices = self._compose(request, identifier=f"{self.settings.identifier_prefix}-{alert_id}",
                                              sent=now)
        except BroadcastError as err:
            self._refuse_unbound(actor, "create", err)
            raise
        record = AlertRecord(
            id=alert_id, alert=composed.alert, state=State.DRAFT, origin=Origin.COMPOSED,
            created=Stamp(actor.user.name, now), composition=composed.request,
            signal=composed.signal.event_code.value if composed.signal else None,
            findings=self._findings(composed.alert), notices=notices,
        )
        return self._store_new(actor, record, "create")

    def import_cap(self, actor: Actor, document: bytes) -> AlertRecord:
        """Store a CAP 1.2 message from another agency as a draft, keeping its identifier, sender and sent.

        What keeps it from being sent under our rules (outside our jurisdiction, not in our
        languages) is stored as findings; it cannot be submitted until they are resolved.
        """
        try:
            actor.user.require(Permission.COMPOSE)
            alert = cap.from_xml(document, max_bytes=self.settings.max_body_bytes)
            existing = self.store.find_by_cap(alert)
            if existing is not None:
                raise Conflict(f"this CAP message is stored already as alert {existing}", field="identifier")
        except BroadcastError as err:
            self._refuse_unbound(actor, "import", err)
            raise
        now = self.now()
        findings = list(self._findings(alert))
        replaces = None
        for reference in alert.references:
            replaces = self.store.find_by_reference(reference.sender, reference.identifier,
                                                    reference.sent.isoformat()) or replaces
        if alert.msg_type is not MsgType.ALERT and replaces is None:
            findings.append(Finding("unknown_reference", "references",
                                    "none of the messages it references is stored here"))
        signal = self.catalogue.from_event_codes(code for info in alert.infos for code in info.event_codes)
        record = AlertRecord(
            id=new_alert_id(now), alert=alert, state=State.DRAFT, origin=Origin.IMPORTED,
            created=Stamp(actor.user.name, now), findings=tuple(findings), replaces=replaces,
            signal=signal.event_code.value if signal else None,
        )
        return self._store_new(actor, record, "import")

    def _store_new(self, actor: Actor, record: AlertRecord, action: str, **audit_fields: Any) -> AlertRecord:
        entries = [self._entry(actor, action, alert_id=record.id, to_state=record.state.value, **audit_fields)]
        if record.replaces and action in ("update", "cancel"):
            entries.append(self._entry(actor, f"{action} requested", alert_id=record.replaces,
                                       detail=f"by alert {record.id}"))
        self.store.transact([], lambda _: Change(records=[record], audit=entries))
        return record

    # ------------------------------------------------------------ acting on one alert

    def act(self, actor: Actor, alert_id: str, action: str,
             decide: Callable[[AlertRecord, dict[str, AlertRecord]], Change[AlertRecord]],
             also: Callable[[AlertRecord], list[str]] | None = None) -> AlertRecord:
        """Run ``decide`` on a fresh copy of the alert (and of the records ``also`` names), atomically.

        Due expiries are applied first; a refused action is written as a refused audit entry.
        """
        ids = [alert_id]
        if also is not None:
            ids += [i for i in also(self.store.get(alert_id)) if i not in ids]

        def run(records: dict[str, AlertRecord]) -> Change[AlertRecord]:
            now = self.now()
            expired, entries = [], []
            for record_id, record in list(records.items()):
                done = workflow.expire(record, now)
                if done is not None:
                    records[record_id] = done
                    expired.append(done)
                    entries.append(AuditEntry(at=now, actor="system", action="expire", alert_id=record_id,
                                              from_state=State.ISSUED.value, to_state=State.EXPIRED.value))
            record = records[alert_id]
            try:
                change = decide(record, records)
            except BroadcastError as err:
                detail = f"{err.field}: {err.message}" if err.field else err.message
                entries.append(self._entry(actor, action, alert_id=alert_id, outcome=REFUSED,
                                           from_state=record.state.value, detail=detail))
                return Change(records=expired, audit=entries, error=err)
            changed_ids = {r.id for r in change.records}
            return dataclasses.replace(
                change,
                records=[*[r for r in expired if r.id not in changed_ids], *change.records],
                audit=[*entries, *change.audit],
            )

        result = self.store.transact(ids, run)
        assert result is not None
        return result

    def edit(self, actor: Actor, alert_id: str, change: Mapping[str, Any]) -> AlertRecord:
        def decide(record: AlertRecord, _: dict[str, AlertRecord]) -> Change[AlertRecord]:
            actor.user.require(Permission.COMPOSE)
            if record.composition is None:
                raise Conflict("an imported alert is changed by importing a corrected CAP message", field="id")
            request = merge_requests(record.composition, change)
            composed, notices = self._compose(request, identifier=record.alert.identifier, sent=self.now(),
                                              msg_type=record.alert.msg_type, references=record.alert.references)
            edited = workflow.edit(record, actor.user, composed.alert, composed.request,
                                   composed.signal.event_code.value if composed.signal else None,
                                   self._findings(composed.alert))
            edited = dataclasses.replace(edited, notices=notices)
            entry = self._entry(actor, "edit", alert_id=record.id, from_state=record.state.value,
                                to_state=edited.state.value, detail=", ".join(sorted(change)))
            return Change(result=edited, records=[edited], audit=[entry])

        return self.act(actor, alert_id, "edit", decide)

    def signal_of(self, record: AlertRecord) -> Signal | None:
        return self.catalogue.from_event_codes(code for info in record.alert.infos for code in info.event_codes)

    def preview(self, actor: Actor, alert_id: str) -> tuple[AlertRecord, dict[str, list[Fit]]]:
        """Every channel's rendering of the alert, and whether it fits (the record, channel -> fits)."""
        record = self.get(actor, alert_id)
        return record, preview(record.alert, None, signal=self.signal_of(record), settings=self.settings)

    def _channel_findings(self, record: AlertRecord) -> list[Finding]:
        selected = (record.composition or {}).get("channels") or None
        fits = preview(record.alert, selected, signal=self.signal_of(record), settings=self.settings)
        return [Finding("does_not_fit", f"channels.{fit.channel}",
                        fit.note or f"the {fit.language} text for {fit.channel} takes {fit.count} {fit.unit}; "
                                    f"at most {fit.limit} fit")
                for fits_ in fits.values() for fit in fits_ if not fit.fits]

    def submit(self, actor: Actor, alert_id: str) -> AlertRecord:
        def decide(record: AlertRecord, _: dict[str, AlertRecord]) -> Change[AlertRecord]:
            findings = list(self._findings(record.alert)) or self._channel_findings(record)
            submitted = workflow.submit(record, actor.user, findings, self.now())
            entry = self._entry(actor, "submit", alert_id=record.id, from_state=record.state.value,
                                to_state=submitted.state.value)
            return Change(result=submitted, records=[submitted], audit=[entry])

        return self.act(actor, alert_id, "submit", decide)

    def approve(self, actor: Actor, alert_id: str) -> AlertRecord:
        def decide(record: AlertRecord, records: dict[str, AlertRecord]) -> Change[AlertRecord]:
            original = records.get(record.replaces) if record.replaces else None
            issued, closed = workflow.approve(record, actor.user, self.now(), original)
            summary = resolve_alert(issued.alert, self.targets.get(), self.settings).summary()
            issued = dataclasses.replace(issued, targets=summary)
            entries = [self._entry(actor, "approve", alert_id=record.id, from_state=record.state.value,
                                   to_state=issued.state.value,
                                   detail="urgent cancel" if issued.urgent else "")]
            job = dissemination_job(issued)
            issued = dataclasses.replace(issued, dissemination=Dissemination(job.job_id, job.queue, self.now()))
            jobs = [job]
            expiry = expiry_job(issued)
            if expiry is not None:
                jobs.append(expiry)
            written = [issued]
            if closed is not None and original is not None:
                written.append(closed)
                entries.append(self._entry(actor, closed.state.value, alert_id=closed.id,
                                           from_state=original.state.value, to_state=closed.state.value,
                                           detail=f"by alert {issued.id}"))
            return Change(result=issued, records=written, audit=entries, jobs=jobs)

        return self.act(actor, alert_id, "approve", decide,
                         also=lambda r: [r.replaces] if r.replaces else [])

    def reject(self, actor: Actor, alert_id: str, reason: str | None) -> AlertRecord:
        def decide(record: AlertRecord, _: dict[str, AlertRecord]) -> Change[AlertRecord]:
            rejected = workflow.reject(record, actor.user, reason, self.now())
            entry = self._entry(actor, "reject", alert_id=record.id, from_state=record.state.value,
                                to_state=rejected.state.value, detail=reason or "")
            return Change(result=rejected, records=[rejected], audit=[entry])

        return self.act(actor, alert_id, "reject", decide)

    def expire(self, alert_id: str) -> AlertRecord:
        """Move an issued alert past its expiry to expired (run by the scheduled RQ job)."""
        return self.act(Actor(User("system", frozenset())), alert_id, "expire",
                         lambda record, _: Change(result=record))

    # ------------------------------------------------------------ update and cancel

    def _successor(self, actor: Actor, original: AlertRecord, new_id: str, alert: Alert, *,
                   composition: dict[str, Any] | None, signal: str | None, urgent: bool = False) -> AlertRecord:
        findings = list(self._findings(alert))
        if findings:
            raise Conflict(f"cannot be submitted: {findings[0].message}", field=findings[0].field)
        now = self.now()
        return AlertRecord(
            id=new_id,
            alert=alert, state=State.SUBMITTED, origin=Origin.COMPOSED,
            created=Stamp(actor.user.name, now), submitted=Stamp(actor.user.name, now),
            composition=composition, signal=signal, replaces=original.id, urgent=urgent,
        )

    def request_update(self, actor: Actor, alert_id: str, change: Mapping[str, Any]) -> AlertRecord:
        """Compose an Update of an issued alert; it is submitted for approval at once."""
        try:
            original = self.store.get(alert_id)
            workflow.check_replaceable(original, actor.user, cancel=False)
            now = self.now()
            new_id = new_alert_id(now)
            base = original.composition if original.composition is not None else _composition_of(original.alert)
            composed, notices = self._compose(merge_requests(base, change),
                                              identifier=f"{self.settings.identifier_prefix}-{new_id}", sent=now,
                                              msg_type=MsgType.UPDATE,
                                              references=(*original.alert.references, original.alert.reference))
            record = self._successor(actor, original, new_id, composed.alert,
                                     composition=composed.request,
                                     signal=composed.signal.event_code.value if composed.signal else None)
            record = dataclasses.replace(record, notices=notices)
        except BroadcastError as err:
            self._refuse_bound(actor, alert_id, "update", err)
            raise
        return self._store_new(actor, record, "update", detail=f"updates alert {alert_id}")

    def request_cancel(self, actor: Actor, alert_id: str, reason: str | None, urgent: bool) -> AlertRecord:
        """Compose a Cancel of an issued alert, submitted for approval at once.

        An urgent cancel may be approved by any approver, its requester included.
        """
        try:
            original = self.store.get(alert_id)
            workflow.check_replaceable(original, actor.user, cancel=True)
            if not reason or not reason.strip():
                raise InvalidInput("a cancel needs a reason", field="reason")
            if len(reason) > workflow.MAX_REASON_LENGTH:
                raise InvalidInput(f"at most {workflow.MAX_REASON_LENGTH} characters", field="reason")
            now = self.now()
            new_id = new_alert_id(now)
            alert = dataclasses.replace(
                original.alert,
                identifier=f"{self.settings.identifier_prefix}-{new_id}",
                sender=self.settings.sender,
                sent=now,
                msg_type=MsgType.CANCEL,
                note=reason.strip(),
                references=(*original.alert.references, original.alert.reference),
                infos=tuple(_cancelled_info(info, now) for info in original.alert.infos),
            )
            record = self._successor(actor, original, new_id, alert, composition=None,
                                     signal=original.signal, urgent=urgent)
        except BroadcastError as err:
            self._refuse_bound(actor, alert_id, "cancel", err)
            raise
        return self._store_new(actor, record, "cancel", detail=f"cancels alert {alert_id}" + (
            " (urgent)" if urgent else ""))

    def _refuse_bound(self, actor: Actor, alert_id: str, action: str, err: BroadcastError) -> None:
        if self.store.redis.exists(keys.alert(alert_id)) == 0:
            return  # nothing to attach the refusal to: an unknown id
        detail = f"{err.field}: {err.message}" if err.field else err.message
        audit.append(self.store.redis, self._entry(actor, action, alert_id=alert_id, outcome=REFUSED, detail=detail))


def _composition_of(alert: Alert) -> dict[str, Any]:
    """A composition request that reproduces an imported alert, so it can be updated like ours."""
    doc = alert_to_json(alert)
    return {key: doc[key] for key in ("status", "scope", "source", "restriction", "addresses", "codes", "note",
                                      "incidents", "info") if key in doc}


def _cancelled_info(info: Info, now: datetime) -> Info:
    primary = info.language.split("-")[0].lower()
    prefix = CANCEL_HEADLINE_PREFIX.get(primary, CANCEL_HEADLINE_PREFIX["en"])
    instruction = CANCEL_INSTRUCTION.get(primary, CANCEL_INSTRUCTION["en"])
    effective = info.effective if info.effective and info.effective < now else now
    return dataclasses.replace(info, headline=f"{prefix}{info.headline or info.event}",
                               instruction=instruction, response_types=(ResponseType.ALL_CLEAR,),
                               effective=effective, onset=None)
