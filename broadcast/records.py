"""The stored alert record: a CAP message plus where it stands in the approval workflow.

States (see :mod:`broadcast.workflow` for who may move an alert between them)::

    draft ──submit──> submitted ──approve──> issued ──(its Update approved)──> updated
      ^                   │                    ├────(its Cancel approved)──> cancelled
      └────reject─────────┘                    └────(expires passes)───────> expired
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from broadcast.codec import alert_from_json, alert_to_json
from broadcast.model import Alert


class State(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    ISSUED = "issued"
    UPDATED = "updated"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# States after which nothing but reading is allowed.
FINAL_STATES = frozenset({State.UPDATED, State.CANCELLED, State.EXPIRED})


class Origin(StrEnum):
    COMPOSED = "composed"
    IMPORTED = "imported"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something about an alert that blocks submission (outside jurisdiction, missing language...)."""

    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who did something, and when."""

    by: str
    at: datetime

    def as_dict(self) -> dict[str, str]:
        return {"by": self.by, "at": self.at.isoformat()}

    @classmethod
    def from_dict(cls, doc: dict[str, str] | None) -> Stamp | None:
        return None if doc is None else cls(doc["by"], datetime.fromisoformat(doc["at"]))


@dataclass(frozen=True, slots=True)
class Rejection:
    stamp: Stamp
    reason: str


@dataclass(frozen=True, slots=True)
class Dissemination:
    """What the dissemination stage has done with an issued alert."""

    job_id: str
    queue: str
    enqueued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    outcome: str = "queued"

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"job_id": self.job_id, "queue": self.queue, "outcome": self.outcome,
                               "enqueued_at": self.enqueued_at.isoformat()}
        for key in ("started_at", "finished_at"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value.isoformat()
        if self.worker is not None:
            doc["worker"] = self.worker
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> Dissemination | None:
        if doc is None:
            return None
        times = {k: datetime.fromisoformat(doc[k]) if doc.get(k) else None for k in ("started_at", "finished_at")}
        return cls(doc["job_id"], doc["queue"], datetime.fromisoformat(doc["enqueued_at"]),
                   worker=doc.get("worker"), outcome=doc.get("outcome", "queued"), **times)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: str
    alert: Alert
    state: State
    origin: Origin
    created: Stamp
    # The composition request this alert was built from (None for imported alerts);
    # PATCH and Update merge into it, so the forecaster's choices (signal, areas) survive.
    composition: dict[str, Any] | None = None
    signal: str | None = None  # "rainstorm.red"
    findings: tuple[Finding, ...] = ()
    # What the service did to the areas that the forecaster should know (e.g. clipped to the city).
    notices: tuple[Finding, ...] = ()
    edited_by: tuple[str, ...] = ()  # everyone who changed the draft: none of them may approve it
    submitted: Stamp | None = None
    approved: Stamp | None = None
    rejection: Rejection | None = None
    replaces: str | None = None  # the alert id an Update or Cancel supersedes
    replaced_by: str | None = None
    urgent: bool = False
    closed: Stamp | None = None  # when it became updated / cancelled / expired
    dissemination: Dissemination | None = None
    # Resolved at approval: units per level, counts per channel, registry versions (geotarget.resolve).
    targets: dict[str, Any] | None = None
    version: int = 1

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "origin": self.origin.value,
            "created": self.created.as_dict(),
            "alert": alert_to_json(self.alert),
            "composition": self.composition,
            "signal": self.signal,
            "findings": [f.as_dict() for f in self.findings],
            "notices": [n.as_dict() for n in self.notices],
            "edited_by": list(self.edited_by),
            "submitted": self.submitted.as_dict() if self.submitted else None,
            "approved": self.approved.as_dict() if self.approved else None,
            "rejection": {**self.rejection.stamp.as_dict(), "reason": self.rejection.reason}
            if self.rejection else None,
            "replaces": self.replaces,
            "replaced_by": self.replaced_by,
            "urgent": self.urgent,
            "closed": self.closed.as_dict() if self.closed else None,
            "dissemination": self.dissemination.as_dict() if self.dissemination else None,
            "targets": self.targets,
            "version": self.version,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> AlertRecord:
        doc = json.loads(raw)
        rejection = doc.get("rejection")
        return cls(
            id=doc["id"],
            alert=alert_from_json(doc["alert"]),
            state=State(doc["state"]),
            origin=Origin(doc["origin"]),
            created=Stamp.from_dict(doc["created"]),  # type: ignore[arg-type]
            composition=doc.get("composition"),
            signal=doc.get("signal"),
            findings=tuple(Finding(**f) for f in doc.get("findings", ())),
            notices=tuple(Finding(**f) for f in doc.get("notices", ())),
            edited_by=tuple(doc.get("edited_by", ())),
            submitted=Stamp.from_dict(doc.get("submitted")),
            approved=Stamp.from_dict(doc.get("approved")),
            rejection=Rejection(Stamp(rejection["by"], datetime.fromisoformat(rejection["at"])), rejection["reason"])
            if rejection else None,
            replaces=doc.get("replaces"),
            replaced_by=doc.get("replaced_by"),
            urgent=bool(doc.get("urgent")),
            closed=Stamp.from_dict(doc.get("closed")),
            dissemination=Dissemination.from_dict(doc.get("dissemination")),
            targets=doc.get("targets"),
            version=int(doc.get("version", 1)),
        )

    def summary(self) -> dict[str, Any]:
        """The listing form: enough to pick an alert from a list."""
        first = self.alert.infos[0] if self.alert.infos else None
        return {
            "id": self.id,
            "state": self.state.value,
            "msg_type": self.alert.msg_type.value,
            "status": self.alert.status.value,
            "identifier": self.alert.identifier,
            "sent": self.alert.sent.isoformat(),
            "signal": self.signal,
            "severity": self.alert.severity.value,
            "headline": first.headline if first else None,
            "created": self.created.as_dict(),
        }

    def to_api(self) -> dict[str, Any]:
        return json.loads(self.to_json())


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """The few facts of a record that an acknowledgement checks, kept beside it in a small hash.

    Parsing a city-wide alert's record (~17 KB) costs more than the rest of an acknowledgement;
    the store writes this with the record in the same transaction, so it is never behind.
    """

    id: str
    state: State
    expires: datetime | None
    replaced_by: str | None
    version: int

    FIELDS = ("state", "expires", "replaced_by", "version")

    @classmethod
    def of(cls, record: AlertRecord) -> AlertStatus:
        return cls(record.id, record.state, record.alert.expires, record.replaced_by, record.version)

    def as_fields(self) -> dict[str, str]:
        """The hash fields; every one is written ("" for none), so the hash is all there or absent."""
        return {"state": self.state.value, "expires": self.expires.isoformat() if self.expires else "",
                "replaced_by": self.replaced_by or "", "version": str(self.version)}

    @classmethod
    def from_fields(cls, alert_id: str, values: list[bytes | None]) -> AlertStatus | None:
        """From an HMGET of :attr:`FIELDS`; None when the hash is absent."""
        state, expires, replaced_by, version = values
        if state is None or version is None:
            return None
        return cls(alert_id, State(state.decode()), datetime.fromisoformat(expires.decode()) if expires else None,
                   replaced_by.decode() if replaced_by else None, int(version))

    def ended(self, now: datetime) -> str | None:
        """Why the alert's linkage tasks are closed ("cancelled", "updated", "expired", or a state before
        issue), or None while it is issued and unexpired (as :func:`broadcast.workflow.expire` decides)."""
        if self.state is not State.ISSUED:
            return self.state.value
        return "expired" if self.expires is not None and self.expires <= now else None
