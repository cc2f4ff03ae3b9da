"""The append-only audit trail: who did what to which alert, when, from where, and whether it was refused.

Each alert has its own Redis stream (never trimmed); entries not tied to one alert
(a refused composition, user management) go to the service stream. Entries are only
ever added, in the same transaction as the change they describe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import redis

from broadcast import keys

OK = "ok"
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    outcome: str = OK
    remote: str = ""
    alert_id: str = ""
    from_state: str = ""
    to_state: str = ""
    detail: str = ""

    def fields(self) -> dict[str, str]:
        doc = asdict(self)
        doc["at"] = self.at.isoformat()
        return doc

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> AuditEntry:
        doc = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(**{**doc, "at": datetime.fromisoformat(doc["at"])})

    def as_dict(self) -> dict[str, Any]:
        return self.fields()


def stream_for(entry: AuditEntry) -> str:
    return keys.alert_audit(entry.alert_id) if entry.alert_id else keys.SERVICE_AUDIT


def append(conn: redis.Redis | redis.client.Pipeline, entry: AuditEntry) -> None:
    """Queue (on a pipeline) or write one entry."""
    conn.xadd(stream_for(entry), entry.fields())


def read(client: redis.Redis, alert_id: str | None) -> list[AuditEntry]:
    """All entries of one alert (or of the service stream when ``alert_id`` is None), oldest first."""
    key = keys.alert_audit(alert_id) if alert_id else keys.SERVICE_AUDIT
    return [AuditEntry.from_fields(fields) for _, fields in client.xrange(key)]
