"""The approval workflow's rules as pure functions over AlertRecord (no Redis)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broadcast import workflow
from broadcast.compose import compose
from broadcast.errors import Conflict, Forbidden, InvalidInput
from broadcast.model import Alert, MsgType
from broadcast.records import AlertRecord, Finding, Origin, Rejection, Stamp, State
from broadcast.settings import Settings
from broadcast.signals import load_catalogue
from broadcast.users import Role, User

SETTINGS = Settings()
CATALOGUE = load_catalogue()
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

ALICE = User("alice", frozenset({Role.FORECASTER}))
FIONA = User("fiona", frozenset({Role.FORECASTER}))
BOB = User("bob", frozenset({Role.APPROVER}))
CAROL = User("carol", frozenset({Role.APPROVER}))
DUAL = User("dual", frozenset({Role.FORECASTER, Role.APPROVER}))
DAVE = User("dave", frozenset({Role.OFFICER}))
ERIN = User("erin", frozenset({Role.OPS}))

FUTIAN = {
    "type": "Polygon",
    "coordinates": [[[114.02, 22.52], [114.09, 22.52], [114.09, 22.58], [114.02, 22.58], [114.02, 22.52]]],
}


def make_alert(sent: datetime = T0, *, msg_type: MsgType = MsgType.ALERT, references: tuple = (),
               identifier: str = "SZMB-1", **changes: Any) -> Alert:
    request: dict[str, Any] = {
        "signal": {"hazard": "rainstorm", "level": "red"},
        "areas": [{"desc": "福田区", "geometry": copy.deepcopy(FUTIAN)}],
        **changes,
    }
    return compose(request, settings=SETTINGS, catalogue=CATALOGUE, identifier=identifier, sent=sent,
                   msg_type=msg_type, references=references).alert


def make_draft(record_id: str = "a1", by: str = "alice", *, alert: Alert | None = None,
               origin: Origin = Origin.COMPOSED, **changes: Any) -> AlertRecord:
    return AlertRecord(id=record_id, alert=alert or make_alert(), state=State.DRAFT, origin=origin,
                       created=Stamp(by, T0), signal="rainstorm.red", **changes)


def submitted(record: AlertRecord | None = None, by: User = ALICE) -> AlertRecord:
    return workflow.submit(record or make_draft(), by, [], T0 + timedelta(minutes=1))


def issued(record: AlertRecord | None = None, by: User = BOB) -> AlertRecord:
    result, closed = workflow.approve(submitted(record), by, T0 + timedelta(minutes=2))
    assert closed is None
    return result


def successor(original: AlertRecord, msg_type: MsgType, *, by: str = "fiona", urgent: bool = False,
              record_id: str = "a2") -> AlertRecord:
    """An Update or Cancel of ``original``, submitted as alerts.request_update/request_cancel builds it."""
    at = T0 + timedelta(minutes=10)
    alert = make_alert(at, msg_type=msg_type, references=(original.alert.reference,), identifier="SZMB-2")
    return AlertRecord(id=record_id, alert=alert, state=State.SUBMITTED, origin=Origin.COMPOSED,
                       created=Stamp(by, at), submitted=Stamp(by, at), replaces=original.id, urgent=urgent,
                       signal="rainstorm.red")


def in_state(state: State) -> AlertRecord:
    return dataclasses.replace(make_draft(), state=state)


OTHER_THAN = {s: [x for x in State if x is not s] for s in State}


# ---------------------------------------------------------------- edit


def test_edit_of_a_draft_replaces_the_alert_and_bumps_the_version() -> None:
    draft = make_draft()
    new_alert = make_alert(note="edited")
    finding = Finding("outside_jurisdiction", "info[0].areas[0]", "outside")
    edited = workflow.edit(draft, FIONA, new_alert, {"note": "edited"}, "rainstorm.orange", (finding,))
    assert edited.state is State.DRAFT
    assert edited.alert == new_alert and edited.alert.note == "edited"
    assert edited.composition == {"note": "edited"}
    assert edited.signal == "rainstorm.orange"
    assert edited.findings == (finding,)
    assert edited.version == draft.version + 1
    assert draft.version == 1 and draft.alert.note is None  # pure: the input is untouched


@pytest.mark.parametrize("state", OTHER_THAN[State.DRAFT])
def test_edit_is_refused_outside_draft(state: State) -> None:
    with pytest.raises(Conflict) as caught:
        workflow.edit(in_state(state), ALICE, make_alert(), None, None, ())
    assert caught.value.field == "state"
    assert state.value in caught.value.message


def test_edit_needs_the_forecaster_role() -> None:
    with pytest.raises(Forbidden) as caught:
        workflow.edit(make_draft(), BOB, make_alert(), None, None, ())
    assert caught.value.field == "role"


# ---------------------------------------------------------------- submit


def test_submit_moves_a_draft_to_submitted() -> None:
    draft = make_draft(rejection=Rejection(Stamp("bob", T0), "area too wide"))
    now = T0 + timedelta(minutes=1)
    result = workflow.submit(draft, FIONA, [], now)
    assert result.state is State.SUBMITTED
    assert result.submitted == Stamp("fiona", now)
    assert result.rejection is None
    assert result.version == 2
    assert draft.state is State.DRAFT


@pytest.mark.parametrize("state", OTHER_THAN[State.DRAFT])
def test_submit_is_refused_outside_draft(state: State) -> None:
    with pytest.raises(Conflict) as caught:
        workflow.submit(in_state(state), ALICE, [], T0)
    assert caught.value.field == "state"


def test_submit_is_refused_while_there_are_findings_naming_the_first() -> None:
    findings = [Finding("outside_jurisdiction", "info[0].areas[1]", "area 'Kowloon' lies outside"),
                Finding("missing_language", "info", "needs en")]
    with pytest.raises(Conflict) as caught:
        workflow.submit(make_draft(), ALICE, findings, T0)
    assert caught.value.field == "info[0].areas[1]"
    assert "Kowloon" in caught.value.message


@pytest.mark.parametrize("actor", [BOB, DAVE, ERIN])
def test_submit_needs_the_forecaster_role(actor: User) -> None:
    with pytest.raises(Forbidden) as caught:
        workflow.submit(make_draft(), actor, [], T0)
    assert caught.value.field == "role"


# ---------------------------------------------------------------- approve


def test_approve_issues_a_submitted_alert_with_sent_set_to_the_approval_time() -> None:
    record = submitted()
    assert record.alert.sent == T0  # a draft carries its creation time
    now = T0 + timedelta(minutes=5)
    result, closed = workflow.approve(record, BOB, now)
    assert closed is None
    assert result.state is State.ISSUED
    assert result.approved == Stamp("bob", now)
    assert result.alert.sent == now
    assert result.alert.infos == record.alert.infos
    assert result.version == record.version + 1 == 3


def test_approve_keeps_sent_of_an_imported_alert() -> None:
    their_sent = T0 - timedelta(hours=1)
    record = submitted(make_draft(alert=make_alert(their_sent), origin=Origin.IMPORTED))
    result, _ = workflow.approve(record, BOB, T0 + timedelta(minutes=5))
    assert result.state is State.ISSUED
    assert result.alert.sent == their_sent
    assert result.alert == record.alert


@pytest.mark.parametrize("state", OTHER_THAN[State.SUBMITTED])
def test_approve_is_refused_outside_submitted(state: State) -> None:
    record = dataclasses.replace(in_state(state), submitted=Stamp("alice", T0))
    with pytest.raises(Conflict) as caught:
        workflow.approve(record, BOB, T0)
    assert caught.value.field == "state"


@pytest.mark.parametrize("actor", [ALICE, DAVE, ERIN, User("root", frozenset({Role.ADMIN}))])
def test_approve_needs_the_approver_role(actor: User) -> None:
    with pytest.raises(Forbidden) as caught:
        workflow.approve(submitted(), actor, T0)
    assert caught.value.field == "role"


def test_two_person_rule_the_drafter_cannot_approve() -> None:
    record = submitted(make_draft(by="dual"), by=DUAL)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(record, DUAL, T0)
    assert caught.value.field == "approver"
    assert workflow.approve(record, BOB, T0)[0].state is State.ISSUED


def test_two_person_rule_the_drafter_cannot_approve_what_a_colleague_submitted() -> None:
    record = submitted(make_draft(by="dual"), by=ALICE)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(record, DUAL, T0)
    assert caught.value.field == "approver"


def test_two_person_rule_the_submitter_cannot_approve() -> None:
    record = submitted(make_draft(by="alice"), by=DUAL)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(record, DUAL, T0)
    assert caught.value.field == "approver"


def test_two_person_rule_an_uninvolved_dual_role_user_may_approve() -> None:
    record = submitted(make_draft(by="alice"), by=ALICE)
    assert workflow.approve(record, DUAL, T0)[0].approved == Stamp("dual", T0)


def test_two_person_rule_an_editor_of_the_draft_cannot_approve_it() -> None:
    draft = make_draft(by="alice")
    edited = workflow.edit(draft, DUAL, make_alert(note="dual rewrote it"), None, "rainstorm.red", ())
    record = submitted(edited, by=ALICE)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(record, DUAL, T0)
    assert caught.value.field == "approver"


def test_urgent_cancel_may_be_approved_by_its_requester() -> None:
    original = issued()
    cancel = successor(original, MsgType.CANCEL, by="bob", urgent=True)
    now = T0 + timedelta(minutes=11)
    result, closed = workflow.approve(cancel, BOB, now, original)
    assert result.state is State.ISSUED and result.approved == Stamp("bob", now)
    assert closed is not None and closed.state is State.CANCELLED


def test_a_non_urgent_cancel_is_not_approved_by_its_requester() -> None:
    original = issued()
    cancel = successor(original, MsgType.CANCEL, by="bob", urgent=False)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(cancel, BOB, T0 + timedelta(minutes=11), original)
    assert caught.value.field == "approver"
    assert workflow.approve(cancel, CAROL, T0 + timedelta(minutes=11), original)[0].state is State.ISSUED


def test_the_urgent_exception_is_for_cancels_only() -> None:
    original = issued()
    update = successor(original, MsgType.UPDATE, by="dual", urgent=True)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(update, DUAL, T0 + timedelta(minutes=11), original)
    assert caught.value.field == "approver"


def test_urgent_cancel_still_needs_the_approver_role() -> None:
    original = issued()
    cancel = successor(original, MsgType.CANCEL, by="alice", urgent=True)
    with pytest.raises(Forbidden) as caught:
        workflow.approve(cancel, ALICE, T0 + timedelta(minutes=11), original)
    assert caught.value.field == "role"


def test_approving_an_update_closes_the_original_as_updated() -> None:
    original = issued()
    update = successor(original, MsgType.UPDATE)
    now = T0 + timedelta(minutes=12)
    result, closed = workflow.approve(update, CAROL, now, original)
    assert result.state is State.ISSUED and result.alert.msg_type is MsgType.UPDATE
    assert result.alert.sent == now
    assert closed is not None
    assert closed.id == original.id
    assert closed.state is State.UPDATED
    assert closed.replaced_by == update.id
    assert closed.closed == Stamp("carol", now)
    assert closed.version == original.version + 1
    assert closed.alert == original.alert
    assert original.state is State.ISSUED


def test_approving_a_cancel_closes_the_original_as_cancelled() -> None:
    original = issued()
    cancel = successor(original, MsgType.CANCEL)
    now = T0 + timedelta(minutes=12)
    _, closed = workflow.approve(cancel, BOB, now, original)
    assert closed is not None
    assert (closed.state, closed.replaced_by, closed.closed) == (State.CANCELLED, cancel.id, Stamp("bob", now))


def test_approving_a_replacement_whose_original_is_missing_is_a_conflict() -> None:
    update = successor(issued(), MsgType.UPDATE)
    with pytest.raises(Conflict) as caught:
        workflow.approve(update, CAROL, T0, None)
    assert caught.value.field == "replaces"


@pytest.mark.parametrize("state", [State.UPDATED, State.CANCELLED, State.EXPIRED, State.DRAFT, State.SUBMITTED])
@pytest.mark.parametrize("msg_type", [MsgType.UPDATE, MsgType.CANCEL])
def test_approving_a_replacement_when_the_original_is_no_longer_issued_is_a_conflict(
        state: State, msg_type: MsgType) -> None:
    original = issued()
    replacement = successor(original, msg_type)
    gone = dataclasses.replace(original, state=state)
    with pytest.raises(Conflict) as caught:
        workflow.approve(replacement, CAROL, T0 + timedelta(minutes=12), gone)
    assert caught.value.field == "state"


def test_the_second_of_two_updates_cannot_be_approved() -> None:
    original = issued()
    first = successor(original, MsgType.UPDATE, record_id="a2")
    second = successor(original, MsgType.UPDATE, record_id="a3")
    _, closed = workflow.approve(first, CAROL, T0 + timedelta(minutes=12), original)
    with pytest.raises(Conflict) as caught:
        workflow.approve(second, CAROL, T0 + timedelta(minutes=13), closed)
    assert caught.value.field == "state"
    assert "updated" in caught.value.message


# ---------------------------------------------------------------- reject


def test_reject_returns_a_submitted_alert_to_draft_with_the_reason() -> None:
    record = submitted()
    now = T0 + timedelta(minutes=3)
    result = workflow.reject(record, BOB, "  area too wide  ", now)
    assert result.state is State.DRAFT
    assert result.rejection == Rejection(Stamp("bob", now), "area too wide")
    assert result.submitted is None
    assert result.version == record.version + 1
    again = workflow.submit(result, ALICE, [], now)
    assert again.state is State.SUBMITTED and again.rejection is None


@pytest.mark.parametrize("reason", [None, "", "   \n"])
def test_reject_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        workflow.reject(submitted(), BOB, reason, T0)
    assert caught.value.field == "reason"


def test_reject_caps_the_reason_length() -> None:
    longest = "x" * workflow.MAX_REASON_LENGTH
    assert workflow.reject(submitted(), BOB, longest, T0).rejection.reason == longest  # type: ignore[union-attr]
    with pytest.raises(InvalidInput) as caught:
        workflow.reject(submitted(), BOB, longest + "x", T0)
    assert caught.value.field == "reason"
    assert str(workflow.MAX_REASON_LENGTH) in caught.value.message


@pytest.mark.parametrize("state", OTHER_THAN[State.SUBMITTED])
def test_reject_is_refused_outside_submitted(state: State) -> None:
    with pytest.raises(Conflict) as caught:
        workflow.reject(in_state(state), BOB, "no", T0)
    assert caught.value.field == "state"


def test_reject_needs_the_approver_role() -> None:
    with pytest.raises(Forbidden) as caught:
        workflow.reject(submitted(), ALICE, "no", T0)
    assert caught.value.field == "role"


# ---------------------------------------------------------------- update and cancel requests


def test_check_replaceable_of_an_issued_alert() -> None:
    original = issued()
    workflow.check_replaceable(original, ALICE, cancel=False)
    workflow.check_replaceable(original, ALICE, cancel=True)
    workflow.check_replaceable(original, BOB, cancel=True)
    with pytest.raises(Forbidden) as caught:
        workflow.check_replaceable(original, BOB, cancel=False)
    assert caught.value.field == "role"
    for bystander in (DAVE, ERIN):
        with pytest.raises(Forbidden):
            workflow.check_replaceable(original, bystander, cancel=True)


@pytest.mark.parametrize("state", OTHER_THAN[State.ISSUED])
@pytest.mark.parametrize("cancel", [False, True])
def test_only_an_issued_alert_can_be_updated_or_cancelled(state: State, cancel: bool) -> None:
    with pytest.raises(Conflict) as caught:
        workflow.check_replaceable(in_state(state), ALICE, cancel=cancel)
    assert caught.value.field == "state"


# ---------------------------------------------------------------- expire


def test_expire_an_issued_alert_past_its_expiry() -> None:
    record = issued()
    expires = record.alert.expires
    assert expires == T0 + timedelta(hours=SETTINGS.default_validity_hours)
    assert workflow.expire(record, expires - timedelta(seconds=1)) is None
    result = workflow.expire(record, expires)
    assert result is not None
    assert result.state is State.EXPIRED
    assert result.closed == Stamp("system", expires)
    assert result.version == record.version + 1
    later = workflow.expire(record, expires + timedelta(days=1))
    assert later is not None and later.state is State.EXPIRED


@pytest.mark.parametrize("state", OTHER_THAN[State.ISSUED])
def test_expire_only_an_issued_alert(state: State) -> None:
    record = in_state(state)
    assert workflow.expire(record, T0 + timedelta(days=30)) is None


def test_an_alert_without_expiry_never_expires() -> None:
    alert = make_alert()
    endless = dataclasses.replace(alert, infos=tuple(dataclasses.replace(i, expires=None) for i in alert.infos))
    record = issued(make_draft(alert=endless, origin=Origin.IMPORTED))
    assert workflow.expire(record, T0 + timedelta(days=3650)) is None


# ---------------------------------------------------------------- versions


def test_every_transition_increments_the_version_by_one() -> None:
    draft = make_draft()
    versions = [draft.version]
    record = workflow.submit(draft, ALICE, [], T0)
    versions.append(record.version)
    record = workflow.reject(record, BOB, "wrong area", T0)
    versions.append(record.version)
    record = workflow.edit(record, ALICE, make_alert(note="fixed"), None, None, ())
    versions.append(record.version)
    record = workflow.submit(record, ALICE, [], T0)
    versions.append(record.version)
    record, _ = workflow.approve(record, BOB, T0)
    versions.append(record.version)
    record = workflow.expire(record, T0 + timedelta(days=1))  # type: ignore[assignment]
    versions.append(record.version)
    assert versions == [1, 2, 3, 4, 5, 6, 7]
