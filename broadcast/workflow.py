"""The approval workflow's rules, as pure functions from records to new records.

Nothing here touches Redis: :mod:`broadcast.alerts` loads records, calls these inside a
transaction and writes what they return. Each function raises a BroadcastError when the
action is not allowed (wrong role, wrong state, the two-person rule), and the caller
records the refusal in the audit trail.

The two-person rule: nobody approves an alert they drafted, edited or submitted. The one
exception is an urgent Cancel, which any approver may approve, the requester included,
so that a false alert can be withdrawn in seconds.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from broadcast.errors import Conflict, Forbidden, InvalidInput
from broadcast.model import Alert, MsgType
from broadcast.records import FINAL_STATES, AlertRecord, Finding, Origin, Rejection, Stamp, State
from broadcast.users import Permission, User

MAX_REASON_LENGTH = 1000


def _require_state(record: AlertRecord, *allowed: State, action: str) -> None:
    if record.state in allowed:
        return
    if record.state in FINAL_STATES:
        raise Conflict(f"alert {record.id} is {record.state.value}; it cannot be {action}", field="state")
    wanted = " or ".join(s.value for s in allowed)
    raise Conflict(f"alert {record.id} is {record.state.value}; only a {wanted} alert can be {action}", field="state")


def _bump(record: AlertRecord, **changes: object) -> AlertRecord:
    return dataclasses.replace(record, version=record.version + 1, **changes)  # type: ignore[arg-type]


def edit(record: AlertRecord, actor: User, alert: Alert, composition: dict | None, signal: str | None,
         findings: tuple[Finding, ...]) -> AlertRecord:
    actor.require(Permission.COMPOSE)
    _require_state(record, State.DRAFT, action="edited")
    editors = record.edited_by if actor.name in record.edited_by else (*record.edited_by, actor.name)
    return _bump(record, alert=alert, composition=composition, signal=signal, findings=findings, edited_by=editors)


def submit(record: AlertRecord, actor: User, findings: list[Finding], now: datetime) -> AlertRecord:
    actor.require(Permission.COMPOSE)
    _require_state(record, State.DRAFT, action="submitted")
    if findings:
        first = findings[0]
        raise Conflict(f"cannot be submitted: {first.message}", field=first.field)
    return _bump(record, state=State.SUBMITTED, submitted=Stamp(actor.name, now), findings=(), rejection=None)


def check_two_person_rule(record: AlertRecord, actor: User) -> None:
    if record.urgent and record.alert.msg_type is MsgType.CANCEL:
        return
    involved = {record.created.by, *record.edited_by, record.submitted.by if record.submitted else record.created.by}
    if actor.name in involved:
        raise Forbidden(
            f"{actor.name} drafted, edited or submitted alert {record.id}; a second person must approve it",
            field="approver",
        )


def approve(record: AlertRecord, actor: User, now: datetime,
            original: AlertRecord | None = None) -> tuple[AlertRecord, AlertRecord | None]:
    """Issue a submitted alert; an Update or Cancel also closes the alert it replaces.

    Returns:
        The issued record and the replaced one (None for a new Alert).
    """
    actor.require(Permission.APPROVE)
    _require_state(record, State.SUBMITTED, action="approved")
    check_two_person_rule(record, actor)
    closed = None
    if record.replaces is not None:
        if original is None:
            raise Conflict(f"the alert it replaces ({record.replaces}) is missing", field="replaces")
        _require_state(original, State.ISSUED, action="updated or cancelled")
        final = State.CANCELLED if record.alert.msg_type is MsgType.CANCEL else State.UPDATED
        closed = _bump(original, state=final, replaced_by=record.id, closed=Stamp(actor.name, now))
    alert = record.alert
    if record.origin is Origin.COMPOSED:
        # CAP <sent> is when the message went out; our drafts carry their creation time until now.
        alert = dataclasses.replace(alert, sent=now)
    issued = _bump(record, state=State.ISSUED, approved=Stamp(actor.name, now), alert=alert)
    return issued, closed


def reject(record: AlertRecord, actor: User, reason: str | None, now: datetime) -> AlertRecord:
    actor.require(Permission.APPROVE)
    if not reason or not reason.strip():
        raise InvalidInput("a rejection needs a reason", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"at most {MAX_REASON_LENGTH} characters", field="reason")
    _require_state(record, State.SUBMITTED, action="rejected")
    return _bump(record, state=State.DRAFT, rejection=Rejection(Stamp(actor.name, now), reason.strip()),
                 submitted=None)


def check_replaceable(original: AlertRecord, actor: User, *, cancel: bool) -> None:
    """May ``actor`` request an Update (or a Cancel) of ``original``?"""
    actor.require(Permission.REQUEST_CANCEL if cancel else Permission.COMPOSE)
    _require_state(original, State.ISSUED, action="cancelled" if cancel else "updated")


def expire(record: AlertRecord, now: datetime) -> AlertRecord | None:
    """The record moved to expired when it is issued and past its expiry, else None."""
    expires = record.alert.expires
    if record.state is not State.ISSUED or expires is None or expires > now:
        return None
    return _bump(record, state=State.EXPIRED, closed=Stamp("system", now))
