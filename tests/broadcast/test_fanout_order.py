"""Who the public fan-out reaches first: the most severe area of an alert."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import redis

from broadcast.fanout import areas_by_severity, targets_of
from broadcast.model import Area, NamedValue, Severity
from broadcast.records import AlertRecord, Origin, Stamp, State
from tests.conftest import sample_alert


def record_with(infos) -> AlertRecord:  # type: ignore[no-untyped-def]
    alert, _ = sample_alert()
    return AlertRecord(id="A-ORDER", alert=dataclasses.replace(alert, infos=tuple(infos)), state=State.ISSUED,
                       origin=Origin.COMPOSED, created=Stamp("alice", datetime.now(UTC)))


def test_rows_of_the_most_severe_area_come_first(published_targets, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    targets = published_targets.get()
    alert, _ = sample_alert()
    zh = alert.infos[0]
    futian = Area("福田区", geocodes=(NamedValue("GB2260", "440304"),))
    futian_and_luohu = Area("福田区、罗湖区", geocodes=(NamedValue("GB2260", "440304"), NamedValue("GB2260", "440303")))
    # The Severe ring is listed first, the Extreme core (Futian) second: the core still leads.
    ring = dataclasses.replace(zh, severity=Severity.SEVERE, areas=(futian_and_luohu,))
    core = dataclasses.replace(zh, severity=Severity.EXTREME, areas=(futian,))
    mixed = record_with([ring, core])
    assert len(areas_by_severity(mixed, targets)) == 2
    rows, _ = targets_of(redis_client, mixed, "sms", targets, [])
    core_rows, _ = targets_of(redis_client, record_with([core]), "sms", targets, [])
    both_rows, _ = targets_of(redis_client, record_with([dataclasses.replace(ring, severity=Severity.EXTREME)]),
                              "sms", targets, [])
    assert 0 < len(core_rows) < len(both_rows) == len(rows)
    assert np.array_equal(rows[:len(core_rows)], core_rows)  # everyone in the core before anyone in the ring
    assert sorted(rows.tolist()) == sorted(both_rows.tolist())  # and each once
    # One severity: one area, the rows in registry order as before.
    assert len(areas_by_severity(record_with([core]), targets)) == 1
    assert np.all(np.diff(core_rows) > 0)
