"""Prometheus metrics (broadcast/metrics.py) against a real Redis."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import redis
import redis.asyncio
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from broadcast import accounting, keys
from broadcast.metrics import CONTENT_TYPE, recent_alert_ids, render_metrics
from broadcast.queues import WORKER_QUEUES
from broadcast.ratelimit import TokenBucket

DUMMY_JOB = "tests.broadcast.test_metrics.never_runs"

# ---------------------------------------------------------------- a tiny parser of the text format

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Labels = frozenset[tuple[str, str]]


def parse_labels(text: str) -> Labels:
    labels, position = [], 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match, f"bad labels at {text[position:]!r}"
        value = re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group(0)], match.group(2))
        labels.append((match.group(1), value))
        position = match.end()
    names = [name for name, _ in labels]
    assert len(names) == len(set(names)), text
    return frozenset(labels)


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """name -> labels -> value; checks HELP/TYPE come first, once, and each family is contiguous."""
    assert text.endswith("\n")
    families: dict[str, dict[Labels, float]] = {}
    helped: set[str] = set()
    typed: dict[str, str] = {}
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped and name not in families, line
            helped.add(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and name not in typed and kind in {"gauge", "counter"}, line
            typed[name] = kind
            families[name] = {}
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.group(1), parse_labels(match.group(2) or ""), match.group(3)
            assert name == current and name in typed, f"{name} outside its family"
            assert labels not in families[name], f"duplicate sample {line!r}"
            families[name][labels] = float(value)
    return families


def lab(**labels: str) -> Labels:
    return frozenset(labels.items())


def metrics(client: redis.Redis, *alert_ids: str) -> dict[str, dict[Labels, float]]:
    return parse(render_metrics(client, alert_ids=alert_ids))


# ---------------------------------------------------------------- tests


def test_recipient_counts_rate_and_eta_of_each_channel(redis_client: redis.Redis) -> None:
    alert = "20260701-080000-abcdef"
    accounting.add(redis_client, alert, "sms", targeted=1000, queued=300)
    assert accounting.finalize(redis_client, alert, "sms", [(1, "sent"), (2, "sent"), (3, "sent"),
                                                            (4, "failed"), (5, "suppressed")], ttl_seconds=600) == 5
    accounting.finalize(redis_client, alert, "sms", [(1, "sent")], ttl_seconds=600)  # counted once only
    accounting.add(redis_client, alert, "sms", delivered=2, undelivered=1)
    accounting.add(redis_client, alert, "email", targeted=40)
    accounting.finalize(redis_client, alert, "email", [(17, "sent")], ttl_seconds=600)
    accounting.add(redis_client, alert, "webhook", targeted=1)
    accounting.finalize(redis_client, alert, "webhook", [("partner-1", "sent")], ttl_seconds=600)
    # 250 sent over the last three whole seconds: 50 per second over the 5-second window.
    now = int(time.time())
    redis_client.hset(keys.sent_per_second(alert, "sms"), mapping={str(now - 1): 100, str(now - 2): 100,
                                                                   str(now - 3): 50})
    parsed = metrics(redis_client, alert)

    expected = {"targeted": 1000, "queued": 300, "sent": 3, "failed": 1, "suppressed": 1, "pending": 995,
                "delivered": 2, "undelivered": 1}
    recipients = parsed["broadcast_recipients"]
    for state, value in expected.items():
        assert recipients[lab(alert=alert, channel="sms", state=state)] == value, state
    assert recipients[lab(alert=alert, channel="email", state="pending")] == 39
    assert recipients[lab(alert=alert, channel="webhook", state="sent")] == 1
    assert len(recipients) == 3 * 8  # three channels, eight states
    assert parsed["broadcast_send_rate"][lab(alert=alert, channel="sms")] == 50.0
    assert parsed["broadcast_send_rate"][lab(alert=alert, channel="email")] == 0.0
    # sms: 995 pending at 50/s; webhook: complete; email: pending with no rate, so no sample.
    assert parsed["broadcast_eta_seconds"] == {lab(alert=alert, channel="sms"): pytest.approx(19.9),
                                               lab(alert=alert, channel="webhook"): 0.0}


def test_only_the_alerts_asked_for_and_each_once(redis_client: redis.Redis) -> None:
    for alert in ("a1", "a2", "a3"):
        accounting.add(redis_client, alert, "sms", targeted=5)
    parsed = metrics(redis_client, "a1", "a3", "a1", "no-such-alert")
    alerts = sorted(dict(labels)["alert"] for labels in parsed["broadcast_recipients"])
    assert alerts == ["a1"] * 8 + ["a3"] * 8
    assert metrics(redis_client)["broadcast_recipients"] == {}


def test_every_family_has_help_and_type(redis_client: redis.Redis) -> None:
    accounting.add(redis_client, "a1", "sms", targeted=5)
    text = render_metrics(redis_client, alert_ids=["a1"])
    names = ["broadcast_recipients", "broadcast_send_rate", "broadcast_eta_seconds", "broadcast_queue_jobs",
             "broadcast_queue_started_jobs", "broadcast_queue_failed_jobs", "broadcast_queue_scheduled_jobs",
             "broadcast_rate_limit_current", "broadcast_rate_limit_cap"]
    for name in names:
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge\n" in text, name
    assert list(parse(text)) == names
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_label_values_are_escaped(redis_client: redis.Redis) -> None:
    alert = 'odd"id\\with\nnewline'
    channel = 'we"b\\hook'
    accounting.add(redis_client, alert, channel, targeted=7, sent=2)
    text = render_metrics(redis_client, alert_ids=[alert])
    assert 'alert="odd\\"id\\\\with\\nnewline",channel="we\\"b\\\\hook",state="targeted"} 7\n' in text
    parsed = parse(text)  # every line still parses: no raw newline or quote broke one
    assert parsed["broadcast_recipients"][lab(alert=alert, channel=channel, state="pending")] == 5


def test_queue_lengths_and_registry_sizes(redis_client: redis.Redis) -> None:
    extreme = Queue("alerts-extreme", connection=redis_client)
    for i in range(3):
        extreme.enqueue(DUMMY_JOB, i, job_id=f"extreme-{i}")
    Queue("housekeeping", connection=redis_client).enqueue(DUMMY_JOB, job_id="hk-1")
    minor = Queue("alerts-minor", connection=redis_client)
    job = minor.enqueue(DUMMY_JOB, job_id="minor-1")
    # Registries as a worker leaves them: one job running (heartbeat well ahead), two failed.
    redis_client.zadd(StartedJobRegistry("alerts-minor", connection=redis_client).key,
                      {f"{job.id}:execution-1": time.time() + 300})
    failed = FailedJobRegistry("alerts-severe", connection=redis_client)
    redis_client.zadd(failed.key, {"severe-1": time.time() + 3600, "severe-2": time.time() + 3600})
    minor.enqueue_in(timedelta(hours=1), DUMMY_JOB, job_id="later-1")

    parsed = metrics(redis_client)
    jobs = {dict(labels)["queue"]: value for labels, value in parsed["broadcast_queue_jobs"].items()}
    assert jobs == {name: 0 for name in WORKER_QUEUES} | {"alerts-extreme": 3, "housekeeping": 1,
                                                           "alerts-minor": 1}
    started = {dict(labels)["queue"]: v for labels, v in parsed["broadcast_queue_started_jobs"].items()}
    assert started == {name: 0 for name in WORKER_QUEUES} | {"alerts-minor": 1}
    failures = {dict(labels)["queue"]: v for labels, v in parsed["broadcast_queue_failed_jobs"].items()}
    assert failures == {name: 0 for name in WORKER_QUEUES} | {"alerts-severe": 2}
    scheduled = {dict(labels)["queue"]: v for labels, v in parsed["broadcast_queue_scheduled_jobs"].items()}
    assert scheduled == {name: 0 for name in WORKER_QUEUES} | {"alerts-minor": 1}


def test_reading_the_registries_changes_nothing(redis_client: redis.Redis) -> None:
    started = StartedJobRegistry("alerts-extreme", connection=redis_client)
    failed = FailedJobRegistry("alerts-extreme", connection=redis_client)
    redis_client.zadd(started.key, {"abandoned:execution-1": time.time() - 600})  # heartbeat long expired
    redis_client.zadd(failed.key, {"old": time.time() - 600})  # past its failure TTL
    parsed = metrics(redis_client)
    assert parsed["broadcast_queue_started_jobs"][lab(queue="alerts-extreme")] == 1
    assert parsed["broadcast_queue_failed_jobs"][lab(queue="alerts-extreme")] == 1
    assert redis_client.zcard(started.key) == 1 and redis_client.zcard(failed.key) == 1


async def test_the_rate_of_a_throttled_account(redis_url: str, redis_client: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        throttled = TokenBucket(client, "sms:smpp:szalert", 200.0, holdoff=0)
        at_cap = TokenBucket(client, "email:default", 500.0)
        await throttled.try_acquire(5)
        await at_cap.try_acquire(5)  # a GCRA bucket but no AIMD hash
        assert await throttled.throttled() == 100.0
        assert await throttled.throttled() == 50.0
        accounting.add(redis_client, "a1", "sms", targeted=1)
        redis_client.hset(keys.sent_per_second("a1", "sms"), "1", 1)  # bc:rate:... but not an AIMD hash
        parsed = metrics(redis_client, "a1")
        assert parsed["broadcast_rate_limit_current"] == {lab(account="sms:smpp:szalert"): 50.0}
        assert parsed["broadcast_rate_limit_cap"] == {lab(account="sms:smpp:szalert"): 200.0}
        # Recovered to the cap: the AIMD hash is gone, and so is the sample.
        assert await throttled.recovered(100_000) == 200.0
        parsed = metrics(redis_client, "a1")
        assert parsed["broadcast_rate_limit_current"] == {} and parsed["broadcast_rate_limit_cap"] == {}
    finally:
        await client.aclose()


def test_account_names_with_glob_characters(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.rate_aimd("sms:a*b?[c]"), mapping={"cap": "10", "current": "2.5"})
    redis_client.hset(keys.rate_aimd("voice:x"), mapping={"cap": "10", "current": "40"})  # above cap: cap rules
    parsed = metrics(redis_client)
    assert parsed["broadcast_rate_limit_current"] == {lab(account="sms:a*b?[c]"): 2.5,
                                                      lab(account="voice:x"): 10.0}


def test_recent_alert_ids_are_those_created_in_the_window(redis_client: redis.Redis) -> None:
    now = 1_800_000_000.0
    redis_client.zadd(keys.ALERTS_BY_CREATION, {"old": now - 25 * 3600, "edge": now - 24 * 3600 + 1,
                                                "hour-ago": now - 3600, "new": now - 1})
    assert recent_alert_ids(redis_client, now=now) == ["new", "hour-ago", "edge"]
    assert recent_alert_ids(redis_client, hours=2, now=now) == ["new", "hour-ago"]
    assert recent_alert_ids(redis_client, hours=26, now=now) == ["new", "hour-ago", "edge", "old"]
    redis_client.zadd(keys.ALERTS_BY_CREATION, {"just-now": time.time()})
    assert "just-now" in recent_alert_ids(redis_client)
    with pytest.raises(ValueError):
        recent_alert_ids(redis_client, hours=0)
