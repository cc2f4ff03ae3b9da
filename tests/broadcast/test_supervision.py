"""Supervision views: the unit tree of an alert's linkage tasks, rollups and who sees what (pure functions)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from broadcast.errors import Forbidden
from broadcast.linkage import Acknowledgement, AckStatus, AckVia, Contact, Task, TaskState, acknowledge, close
from broadcast.supervision import Scope, rollups, scope_for, supervision_view
from broadcast.users import Role, User
from geotarget import build_demo_gazetteer
from geotarget.gazetteer import Gazetteer, Level

T0 = 1_767_225_600.0  # when the tasks open
DEADLINE = 600.0  # red: 10 minutes


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return build_demo_gazetteer()


def task(gazetteer: Gazetteer, code: str, *, deadline: float = DEADLINE) -> Task:
    unit = gazetteer.unit(code)
    return Task("A1", code, unit.level.value, unit.parent, T0, T0 + deadline)


def acked(t: Task, after: float, status: AckStatus = AckStatus.RECEIVED, note: str = "", officer: str = "o1") -> Task:
    changed = acknowledge(t, Acknowledgement(officer, T0 + after, AckVia.API, status, note))
    assert changed is not None
    return changed


def find(nodes: list[dict[str, Any]], code: str) -> dict[str, Any]:
    for node in nodes:
        if node["code"] == code:
            return node
        try:
            return find(node["children"], code)
        except KeyError:
            pass
    raise KeyError(code)


def codes(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["code"] for n in nodes} | {c for n in nodes for c in codes(n["children"])}


@pytest.fixture(scope="module")
def futian(gazetteer: Gazetteer) -> dict[str, Any]:
    """Futian (440304) with its first two streets and the first three communities of each."""
    streets = [s.code for s in gazetteer.children("440304")[:2]]
    communities = {s: [c.code for c in gazetteer.children(s)[:3]] for s in streets}
    return {"district": "440304", "streets": streets, "communities": communities}


@pytest.fixture
def tasks(gazetteer: Gazetteer, futian: dict[str, Any]) -> dict[str, Task]:
    """A hand-counted picture at T0 + 700 s (deadline T0 + 600 s):

    city 440300          acknowledged linkage_started at +60
    district 440304      acknowledged received at +30
    street S1            open -> overdue
      C1a                acknowledged linkage_started at +100
      C1b                acknowledged cannot_comply at +650 -> late
      C1c                open, own deadline +900 -> not overdue
    street S2            (no task: structure only)
      C2a                closed (alert cancelled)
      C2b                open -> overdue
      C2c                acknowledged received at +200, later linkage_started at +400
    Nanshan 440305       open -> overdue
    """
    (s1, s2), c = futian["streets"], futian["communities"]
    c1a, c1b, c1c = c[s1]
    c2a, c2b, c2c = c[s2]
    return {
        "440300": acked(task(gazetteer, "440300"), 60, AckStatus.LINKAGE_STARTED, "command post open"),
        "440304": acked(task(gazetteer, "440304"), 30),
        s1: task(gazetteer, s1),
        c1a: acked(task(gazetteer, c1a), 100, AckStatus.LINKAGE_STARTED),
        c1b: acked(task(gazetteer, c1b), 650, AckStatus.CANNOT_COMPLY, "road flooded"),
        c1c: task(gazetteer, c1c, deadline=900),
        c2a: close(task(gazetteer, c2a), "cancelled"),
        c2b: task(gazetteer, c2b),
        c2c: acked(acked(task(gazetteer, c2c), 200), 400, AckStatus.LINKAGE_STARTED, "sandbags out", "o2"),
        "440305": task(gazetteer, "440305"),
    }


NOW = T0 + 700


def test_rollups_match_the_hand_count(tasks: dict[str, Task]) -> None:
    view = supervision_view(tasks, build_demo_gazetteer(), now=NOW)
    levels = view.rollups["levels"]
    assert levels["city"] == {"total": 1, "acknowledged": 1, "received": 0, "linkage_started": 1, "cannot_comply": 0,
                              "open": 0, "overdue": 0, "closed": 0, "late": 0, "percent_confirmed": 100.0,
                              "median_seconds_to_acknowledge": 60.0}
    assert levels["district"] == {"total": 2, "acknowledged": 1, "received": 1, "linkage_started": 0,
                                  "cannot_comply": 0, "open": 1, "overdue": 1, "closed": 0, "late": 0,
                                  "percent_confirmed": 50.0, "median_seconds_to_acknowledge": 30.0}
    assert levels["street"] == {"total": 1, "acknowledged": 0, "received": 0, "linkage_started": 0,
                                "cannot_comply": 0, "open": 1, "overdue": 1, "closed": 0, "late": 0,
                                "percent_confirmed": 0.0, "median_seconds_to_acknowledge": None}
    # communities: acknowledged at +100, +650 (late), +200 (first answer counts); c1c open, c2b overdue, c2a closed
    assert levels["community"] == {"total": 6, "acknowledged": 3, "received": 0, "linkage_started": 2,
                                   "cannot_comply": 1, "open": 2, "overdue": 1, "closed": 1, "late": 1,
                                   "percent_confirmed": 50.0, "median_seconds_to_acknowledge": 200.0}
    assert view.rollups["all"]["total"] == 10
    assert view.rollups["all"]["acknowledged"] == 5
    assert view.rollups["all"]["overdue"] == 3
    assert view.rollups["all"]["median_seconds_to_acknowledge"] == 100.0  # of 30, 60, 100, 200, 650
    assert rollups(tasks.values(), NOW) == view.rollups


def test_tree_holds_units_with_tasks_and_their_ancestors_as_structure(gazetteer: Gazetteer, tasks: dict[str, Task],
                                                                      futian: dict[str, Any]) -> None:
    view = supervision_view(tasks, gazetteer, now=NOW)
    assert [root["code"] for root in view.tree] == ["440300"]
    city = view.tree[0]
    assert [d["code"] for d in city["children"]] == ["440304", "440305"]
    assert codes(view.tree) == set(tasks) | {futian["streets"][1]}
    s2 = find(view.tree, futian["streets"][1])
    assert s2["task"] is None and s2["level"] == "street"
    assert s2["name_zh"] == gazetteer.unit(s2["code"]).name_zh and s2["name_en"]
    assert [c["code"] for c in s2["children"]] == futian["communities"][futian["streets"][1]]
    # a structure node's rollup is its subtree's: C2a closed, C2b overdue, C2c acknowledged
    assert s2["rollup"]["all"]["total"] == 3 and s2["rollup"]["all"]["acknowledged"] == 1
    assert s2["rollup"]["all"]["overdue"] == 1 and s2["rollup"]["all"]["closed"] == 1
    assert "rollup" not in find(view.tree, futian["communities"][futian["streets"][0]][0])


def test_subtree_rollups_count_the_node_and_everything_below(tasks: dict[str, Task], gazetteer: Gazetteer) -> None:
    district = find(supervision_view(tasks, gazetteer, now=NOW).tree, "440304")
    rollup = district["rollup"]
    assert rollup["all"]["total"] == 8  # itself, one street task, six communities
    assert rollup["all"]["acknowledged"] == 4
    assert rollup["all"]["percent_confirmed"] == 50.0
    assert set(rollup["levels"]) == {"district", "street", "community"}
    assert rollup["levels"]["community"]["total"] == 6 and rollup["levels"]["community"]["late"] == 1
    whole = supervision_view(tasks, gazetteer, now=NOW)
    assert whole.tree[0]["rollup"] == whole.rollups  # the city's subtree is everything


def test_node_carries_state_times_and_flags(tasks: dict[str, Task], gazetteer: Gazetteer,
                                            futian: dict[str, Any]) -> None:
    view = supervision_view(tasks, gazetteer, now=NOW)
    (s1, s2), c = futian["streets"], futian["communities"]
    late = find(view.tree, c[s1][1])["task"]
    assert late["state"] == "acknowledged" and late["status"] == "cannot_comply"
    assert late["late"] is True and late["overdue"] is False
    assert late["seconds_to_acknowledge"] == 650.0 and late["acknowledged_at"] == T0 + 650
    assert late["note"] == "road flooded" and late["deadline"] == T0 + DEADLINE
    assert find(view.tree, s1)["task"]["overdue"] is True
    waiting = find(view.tree, c[s1][2])["task"]
    assert waiting["state"] == "open" and waiting["overdue"] is False and waiting["status"] is None
    twice = find(view.tree, c[s2][2])["task"]
    assert twice["status"] == "linkage_started" and twice["seconds_to_acknowledge"] == 200.0
    assert twice["acknowledged_by"] == ["o1", "o2"]
    closed = find(view.tree, c[s2][0])["task"]
    assert closed["state"] == "closed" and closed["overdue"] is False and closed["closed_reason"] == "cancelled"


def test_overdue_starts_at_the_deadline(tasks: dict[str, Task], gazetteer: Gazetteer) -> None:
    before = supervision_view(tasks, gazetteer, now=T0 + DEADLINE - 1)
    at = supervision_view(tasks, gazetteer, now=T0 + DEADLINE)
    assert before.rollups["all"]["overdue"] == 0
    assert at.rollups["all"]["overdue"] == 3
    assert find(at.tree, "440305")["task"]["overdue"] is True


def test_escalation_and_last_contact(gazetteer: Gazetteer) -> None:
    from broadcast.linkage import contacted

    t = task(gazetteer, "440305")
    t = contacted(t, Contact("notice", T0 + 1, "o9", "sms", "440305"))
    t = contacted(t, Contact("escalation", T0 + 600, None, "voice", "440300"), escalation=2)
    node = find(supervision_view({"440305": t}, gazetteer, now=NOW).tree, "440305")
    assert node["task"]["escalation"] == 2
    assert node["task"]["last_contact"] == {"kind": "escalation", "at": T0 + 600, "officer": None,
                                            "channel": "voice", "unit": "440300"}


# ---------------------------------------------------------------- who sees what


def test_officer_sees_only_the_subtrees_of_their_units(tasks: dict[str, Task], gazetteer: Gazetteer,
                                                       futian: dict[str, Any]) -> None:
    view = supervision_view(tasks, gazetteer, now=NOW, scope=Scope(frozenset({"440304"})))
    assert [root["code"] for root in view.tree] == ["440304"]
    assert "440300" not in codes(view.tree) and "440305" not in codes(view.tree)
    assert view.rollups["all"]["total"] == 8
    assert view.rollups["levels"]["city"]["total"] == 0

    s2 = futian["streets"][1]
    street = supervision_view(tasks, gazetteer, now=NOW, scope=Scope(frozenset({s2})))
    assert [root["code"] for root in street.tree] == [s2]
    assert street.tree[0]["task"] is None  # no task of its own, still the root of what it supervises
    assert codes(street.tree) == {s2, *futian["communities"][s2]}
    assert street.rollups["all"]["total"] == 3

    both = supervision_view(tasks, gazetteer, now=NOW, scope=Scope(frozenset({"440305", s2})))
    assert [root["code"] for root in both.tree] == [s2, "440305"]
    assert both.rollups["all"]["total"] == 4


def test_officer_of_a_unit_without_tasks_sees_an_empty_tree(tasks: dict[str, Task], gazetteer: Gazetteer) -> None:
    view = supervision_view(tasks, gazetteer, now=NOW, scope=Scope(frozenset({"440306"})))
    assert view.tree == [] and view.rollups["all"]["total"] == 0
    assert view.rollups["all"]["percent_confirmed"] is None


def test_scope_follows_the_roles() -> None:
    for role in (Role.FORECASTER, Role.APPROVER, Role.OPS, Role.ADMIN):
        assert scope_for(User("x", frozenset({role})), frozenset()) == Scope()
    both = User("x", frozenset({Role.OFFICER, Role.APPROVER}))
    assert scope_for(both, frozenset({"440304"})) == Scope()
    officer = User("dave", frozenset({Role.OFFICER}))
    assert scope_for(officer, frozenset({"440304"})) == Scope(frozenset({"440304"}))
    with pytest.raises(Forbidden):
        scope_for(officer, frozenset())


def test_unit_unknown_to_the_gazetteer_still_shows(gazetteer: Gazetteer) -> None:
    ghost = Task("A1", "440304999", Level.STREET.value, "440304", T0, T0 + DEADLINE)
    view = supervision_view({"440304999": ghost}, gazetteer, now=NOW)
    node = find(view.tree, "440304999")
    assert node["name_zh"] == "440304999" and node["task"]["state"] == TaskState.OPEN.value
    assert [r["code"] for r in view.tree] == ["440300"]


def test_whole_demo_city_is_fast(gazetteer: Gazetteer) -> None:
    """Every unit of the demo gazetteer (875) with a task, two thirds acknowledged: a few ms."""
    tasks = {}
    for i, unit in enumerate(gazetteer):
        t = Task("A1", unit.code, unit.level.value, unit.parent, T0, T0 + DEADLINE)
        tasks[unit.code] = acked(t, i % 500, AckStatus.RECEIVED) if i % 3 else t
    assert len(tasks) == 875
    view = supervision_view(tasks, gazetteer, now=NOW)
    assert view.rollups["all"]["total"] == 875 and view.rollups["all"]["acknowledged"] == 583
    assert codes(view.tree) == set(tasks)
    runs = []
    for _ in range(15):
        start = time.perf_counter()
        supervision_view(tasks, gazetteer, now=NOW)
        runs.append(time.perf_counter() - start)
    assert min(runs) < 0.05  # ~6 ms on an idle core of this machine; generous for a shared one
