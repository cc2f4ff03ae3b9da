"""Supervision views of an alert's linkage: the unit tree with each task's state, and rollups.

Pure functions over an alert's tasks (:mod:`broadcast.linkage`) and the gazetteer; the HTTP
side is :mod:`broadcast.supervision_api`.

The tree runs city -> districts -> streets -> communities and holds the units that have a
task, with their ancestors as structure (a street whose communities were hit but which has
no task of its own still appears, ``task: null``). Every node with children carries the
rollup of its subtree (itself included), overall and per level, so a district row shows how
far its streets and communities have got.

Who sees what (:class:`Scope`): supervisors (forecaster, approver, ops, admin) see the whole
tree; an officer sees only the subtrees rooted at the units they act for
(:func:`broadcast.roster.units_of_user`), each subtree a root of the returned forest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from broadcast.errors import Forbidden
from broadcast.linkage import AckStatus, Task, TaskState
from broadcast.users import Role, User
from geotarget.gazetteer import Gazetteer, Level

LEVELS: tuple[str, ...] = tuple(level.value for level in Level)
SUPERVISING_ROLES = frozenset({Role.FORECASTER, Role.APPROVER, Role.OPS, Role.ADMIN})

ParentOf = Callable[[str], "str | None"]


@dataclass(frozen=True, slots=True)
class Scope:
    """The units a caller may see: everything (``roots`` None) or the subtrees rooted at ``roots``."""

    roots: frozenset[str] | None = None

    def covers(self, code: str, parent_of: ParentOf) -> bool:
        if self.roots is None:
            return True
        unit: str | None = code
        while unit is not None:
            if unit in self.roots:
                return True
            unit = parent_of(unit)
        return False


def scope_for(user: User, units: frozenset[str]) -> Scope:
    """What ``user`` may supervise, given the units they act for.

    Raises:
        Forbidden: an officer (and nothing more) who acts for no unit.
    """
    if user.roles & SUPERVISING_ROLES:
        return Scope()
    if not units:
        raise Forbidden(f"{user.name} acts for no unit, so has no linkage to supervise", field="unit")
    return Scope(units)


def parent_lookup(tasks: Mapping[str, Task], gazetteer: Gazetteer) -> ParentOf:
    """A unit's supervising unit: as its task recorded it, else as the gazetteer has it."""

    def parent_of(code: str) -> str | None:
        task = tasks.get(code)
        if task is not None:
            return task.parent
        # a unit the gazetteer no longer has (a newer snapshot) ends the chain
        return gazetteer.unit(code).parent if code in gazetteer else None

    return parent_of


# ---------------------------------------------------------------- one task


def task_view(task: Task, now: float) -> dict[str, Any]:
    """What a supervisor needs of one task (JSON-ready)."""
    acks = task.acknowledgements
    at = acks[0].at if acks else None
    status = task.status if acks else None
    return {
        "state": task.state.value,
        "status": status.value if status is not None else None,
        "opened_at": task.opened_at,
        "deadline": task.deadline,
        "acknowledged_at": at,
        "seconds_to_acknowledge": round(at - task.opened_at, 3) if at is not None else None,
        "acknowledged_by": sorted({a.officer for a in acks}) if len(acks) > 1 else [a.officer for a in acks],
        "note": acks[-1].note if acks else "",
        "overdue": task.state is TaskState.OPEN and now >= task.deadline,
        "late": at is not None and at > task.deadline,
        "escalation": task.escalation,
        "last_contact": task.contacts[-1].as_dict() if task.contacts else None,
        "closed_reason": task.closed_reason,
        "version": task.version,  # a client holding two views of a task keeps the higher
    }


def unit_view(code: str, level: str, gazetteer: Gazetteer) -> dict[str, Any]:
    """A node's identity: code, level, names (the code stands in for a unit the gazetteer lacks)."""
    if code not in gazetteer:
        return {"code": code, "level": level, "name_zh": code, "name_en": code}
    unit = gazetteer.unit(code)
    return {"code": code, "level": unit.level.value, "name_zh": unit.name_zh, "name_en": unit.name_en}


def node_view(task: Task, gazetteer: Gazetteer, now: float) -> dict[str, Any]:
    """One unit with its task, as it appears in the tree (without children or rollups)."""
    return {**unit_view(task.unit, task.level, gazetteer), "parent": task.parent, "task": task_view(task, now)}


# ---------------------------------------------------------------- rollups


_COUNTERS = ("total", "acknowledged", "received", "linkage_started", "cannot_comply", "open", "overdue", "closed",
             "late")
_INDEX = {name: i for i, name in enumerate(_COUNTERS)}


@dataclass(frozen=True, slots=True)
class _Facts:
    """What one task adds to a tally, worked out once however many tallies it goes into."""

    counters: tuple[int, ...]  # indexes into _COUNTERS
    seconds: float | None  # to the first acknowledgement


@functools.cache
def _counters(state: TaskState, overdue: bool, status: AckStatus | None, late: bool) -> tuple[int, ...]:
    names = ["total"]
    if state is TaskState.OPEN:
        names += ["open", "overdue"] if overdue else ["open"]
    elif state is TaskState.CLOSED:
        names.append("closed")
    if status is not None:
        names += ["acknowledged", status.value]
        if late:
            names.append("late")
    return tuple(_INDEX[name] for name in names)


def _facts(task: Task, now: float) -> _Facts:
    acks = task.acknowledgements
    if not acks:
        return _Facts(_counters(task.state, now >= task.deadline, None, False), None)
    at = acks[0].at
    return _Facts(_counters(task.state, now >= task.deadline, task.status, at > task.deadline), at - task.opened_at)


@dataclass(slots=True)
class Tally:
    """Counts over a set of tasks; :meth:`as_dict` adds percent confirmed and the median time."""

    counts: list[int] = field(default_factory=lambda: [0] * len(_COUNTERS))
    seconds: list[float] = field(default_factory=list)

    def add(self, facts: _Facts) -> None:
        counts = self.counts
        for i in facts.counters:
            counts[i] += 1
        if facts.seconds is not None:
            self.seconds.append(facts.seconds)

    def merge(self, other: Tally) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.seconds.extend(other.seconds)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(_COUNTERS, self.counts, strict=True))
        total, acknowledged = out["total"], out["acknowledged"]
        # confirmed = acknowledged in any status: the unit answered (even "cannot comply")
        out["percent_confirmed"] = round(100 * acknowledged / total, 1) if total else None
        out["median_seconds_to_acknowledge"] = round(median(self.seconds), 3) if self.seconds else None
        return out


@dataclass(slots=True)
class _Rollups:
    """A tally overall and one per level."""

    all: Tally = field(default_factory=Tally)
    levels: dict[str, Tally] = field(default_factory=dict)

    def add(self, level: str, facts: _Facts) -> None:
        self.all.add(facts)
        tally = self.levels.get(level)
        if tally is None:
            tally = self.levels[level] = Tally()
        tally.add(facts)

    def merge(self, other: _Rollups) -> None:
        self.all.merge(other.all)
        for level, theirs in other.levels.items():
            ours = self.levels.get(level)
            if ours is None:
                ours = self.levels[level] = Tally()
            ours.merge(theirs)

    def as_dict(self) -> dict[str, Any]:
        return {"all": self.all.as_dict(),
                "levels": {level: self.levels[level].as_dict() for level in LEVELS if level in self.levels}}


def rollups(tasks: Iterable[Task], now: float) -> dict[str, Any]:
    """``{"all": {...}, "levels": {level: {...}}}`` over ``tasks`` (every level listed, empty ones zero)."""
    totals = _Rollups(levels={level: Tally() for level in LEVELS})
    for task in tasks:
        totals.add(task.level, _facts(task, now))
    return totals.as_dict()


# ---------------------------------------------------------------- the tree


@dataclass(slots=True)
class _Node:
    code: str
    task: Task | None
    children: list[_Node] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SupervisionView:
    tree: list[dict[str, Any]]  # the roots: the city for a supervisor, the officer's units otherwise
    rollups: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"tree": self.tree, "rollups": self.rollups}


def in_scope(tasks: Mapping[str, Task], gazetteer: Gazetteer, scope: Scope) -> dict[str, Task]:
    """The tasks ``scope`` covers."""
    if scope.roots is None:
        return dict(tasks)
    parent_of = parent_lookup(tasks, gazetteer)
    return {code: task for code, task in tasks.items() if scope.covers(code, parent_of)}


def supervision_view(tasks: Mapping[str, Task], gazetteer: Gazetteer, *, now: float,
                     scope: Scope | None = None) -> SupervisionView:
    """The tree and rollups of an alert's ``tasks`` (unit code -> task) that ``scope`` covers, at ``now``.

    Args:
        tasks: The alert's tasks, as :meth:`broadcast.linkage.LinkageStore.tasks` returns them.
        gazetteer: For names and for the ancestors of units whose supervising unit has no task.
        now: Epoch seconds; a task still open at or past its deadline is overdue.
        scope: Whose view: everything (the default), or the subtrees rooted at an officer's units.

    Returns:
        The forest (one root per top unit of the scope that has tasks below it, children ordered by
        code) and the rollups over every task in scope.
    """
    scope = scope or Scope()
    visible = in_scope(tasks, gazetteer, scope)
    parent_of = parent_lookup(tasks, gazetteer)
    roots = scope.roots
    nodes: dict[str, _Node] = {}
    top: list[_Node] = []

    def node_of(code: str) -> _Node:
        node = nodes.get(code)
        if node is not None:
            return node
        node = nodes[code] = _Node(code, visible.get(code))
        parent = None if roots is not None and code in roots else parent_of(code)
        if parent is None:
            top.append(node)
        else:
            node_of(parent).children.append(node)
        return node

    facts = {code: _facts(task, now) for code, task in visible.items()}
    for code in visible:
        node_of(code)

    # Bottom up: a node's subtree rollup is its own task plus its children's (leaves add their task).
    def render(node: _Node) -> tuple[dict[str, Any], _Rollups | None]:
        task = node.task
        if task is not None:
            out = node_view(task, gazetteer, now)
        else:
            level = _level_of(node.code, gazetteer)
            out = {**unit_view(node.code, level, gazetteer), "parent": parent_of(node.code), "task": None}
        if not node.children:
            out["children"] = []
            return out, None
        subtree = _Rollups()
        if task is not None:
            subtree.add(task.level, facts[node.code])
        node.children.sort(key=lambda child: child.code)
        children = []
        for child in node.children:
            rendered, below = render(child)
            children.append(rendered)
            if below is None:
                subtree.add(child.task.level, facts[child.code])  # type: ignore[union-attr]  # leaves have tasks
            else:
                subtree.merge(below)
        out["rollup"] = subtree.as_dict()
        out["children"] = children
        return out, subtree

    top.sort(key=lambda node: node.code)
    tree = [render(node)[0] for node in top]
    total = _Rollups(levels={level: Tally() for level in LEVELS})
    for code, task in visible.items():
        total.add(task.level, facts[code])
    return SupervisionView(tree, total.as_dict())


def _level_of(code: str, gazetteer: Gazetteer) -> str:
    return gazetteer.unit(code).level.value if code in gazetteer else ""


__all__ = ["LEVELS", "SUPERVISING_ROLES", "Scope", "SupervisionView", "Tally", "in_scope", "node_view",
           "parent_lookup", "rollups", "scope_for", "supervision_view", "task_view"]
