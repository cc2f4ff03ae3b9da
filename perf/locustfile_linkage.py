"""Load test of four-level linkage: every unit acknowledges while supervisors poll the tree and follow the stream.

    LINKAGE_SETUP=/tmp/linkage-setup.json ACK_RATE=1000 ACK_USERS=50 POLLERS=5 FOLLOWERS=10 \\
      .venv/bin/locust -f perf/locustfile_linkage.py --headless -u 65 -r 65 -t 180s --host http://127.0.0.1:8080

perf/run_locust_linkage.sh starts Redis and the API on free loopback ports, runs perf/linkage_setup.py
(users, officers bound to their units, city-wide red warnings issued, every unit's task) and then
this, and stops everything. Requests go to 127.0.0.1 only; the run stops by itself once every
acknowledgement is in (or at -t).

The work: for each of the setup's alerts, every unit of the demo gazetteer (875) acknowledges
once through ``POST /api/alerts/{id}/linkage/{unit}/acknowledge`` as its own officer user, in a
shuffled order, so each alert's 875 acknowledgements are spread over the whole run (well within
a minute) and all alerts together are offered at ACK_RATE per second (0: as fast as the users
go). Meanwhile

- POLLERS supervisors each fetch ``GET /api/alerts/{id}/linkage`` (the whole tree) of a random alert
  once a second;
- FOLLOWERS supervisors each follow ``GET /api/alerts/{id}/linkage/stream`` of one alert for the whole
  run; every change event is recorded as a pseudo-request "SSE change delivered" whose response time is
  the delay from the acknowledgement (its ``acknowledged_at``) to its arrival, and at the end each
  follower's count (acknowledged in its snapshot + change events) is checked against the acknowledgements
  that succeeded for its alert.

At the end it writes ``$RESULTS_PREFIX.json`` and ``.md``: acknowledgements per second sustained (between
the 5th and 95th percentile of completion times), exact p50/p95/p99/max latency of the acknowledgements,
of the tree polls and of the stream's delivery, failures by status, and whether every change reached
every follower.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

SETUP = json.loads(Path(os.environ.get("LINKAGE_SETUP", "perf/data/linkage-setup.json")).read_text())
ACK_RATE = float(os.environ.get("ACK_RATE", "1000"))
ACK_USERS = int(os.environ.get("ACK_USERS", "50"))
POLLERS = int(os.environ.get("POLLERS", "5"))
FOLLOWERS = int(os.environ.get("FOLLOWERS", "10"))
RESULTS_PREFIX = os.environ.get("RESULTS_PREFIX", "perf/results/linkage")
STATUSES = ["received", "linkage_started"]
ACK_NAME = "POST /api/alerts/{id}/linkage/{unit}/acknowledge"
TREE_NAME = "GET /api/alerts/{id}/linkage"
SSE_NAME = "SSE change delivered"

# Several API processes (perf/run_locust_linkage.sh API_PROCS): each user sticks to one, round robin.
API_URLS = [u for u in os.environ.get("API_URLS", "").split(",") if u]
_tokens = {o["unit"]: o["token"] for o in SETUP["officers"]}
_work = [(alert, unit) for alert in SETUP["alerts"] for unit in _tokens]
random.Random(7).shuffle(_work)
WORK = iter(_work)


@dataclass
class Record:
    """Everything measured, in this one (gevent) process."""

    ack_times: list[float] = field(default_factory=list)  # completion times of successful acknowledgements
    ack_ms: list[float] = field(default_factory=list)
    ack_failures: Counter[str] = field(default_factory=Counter)
    acked_per_alert: Counter[str] = field(default_factory=Counter)
    tree_ms: list[float] = field(default_factory=list)
    sse_lag_ms: list[float] = field(default_factory=list)
    followers: dict[int, dict[str, Any]] = field(default_factory=dict)
    officers_done: int = 0


RECORD = Record()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 1)}


_spread = itertools.count()


def paced(per_second: float) -> Callable[[Any], float]:
    """A wait_time: ``per_second`` tasks a second, each user keeping its own phase.

    locust's constant_throughput lines every user up with its spawn time, so users spawned together
    send in bursts (50 at once every few seconds): the latency measured is then the queue of the
    burst, not the service's. With a random first delay (on_start) and this, arrivals spread out.
    """
    period = 1 / per_second

    def wait(user: Any) -> float:
        now = time.monotonic()
        user.due = max(getattr(user, "due", now) + period, now)  # after a slow spell: no catch-up burst
        return user.due - now

    return wait


def base_url() -> str:
    """The API process of the next user ("" : locust's --host)."""
    return API_URLS[next(_spread) % len(API_URLS)] if API_URLS else ""


class Officer(FastHttpUser):
    """Takes the next (alert, unit) of the shared work list and acknowledges it as that unit's officer."""

    fixed_count = ACK_USERS
    wait_time = paced(ACK_RATE / ACK_USERS) if ACK_RATE else constant(0)

    def on_start(self) -> None:
        self.base = base_url()
        # Users spawned together would otherwise answer in lockstep bursts at low rates.
        gevent.sleep(random.uniform(0, ACK_USERS / ACK_RATE if ACK_RATE else 0))

    @task
    def acknowledge(self) -> None:
        try:
            alert, unit = next(WORK)
        except StopIteration:
            RECORD.officers_done += 1
            if RECORD.officers_done == ACK_USERS:  # the last one out lets the followers catch up, then stops
                gevent.spawn_later(3, self.environment.runner.quit)
            raise StopUser() from None
        status = random.choice(STATUSES)
        body = {"status": status, "note": "应急队伍已出动 teams out" if status == "linkage_started" else ""}
        start = time.perf_counter()
        with self.client.post(f"{self.base}/api/alerts/{alert}/linkage/{unit}/acknowledge", json=body, name=ACK_NAME,
                              headers={"Authorization": f"Bearer {_tokens[unit]}"},
                              catch_response=True) as response:
            elapsed = (time.perf_counter() - start) * 1000
            if 200 <= response.status_code < 300:
                response.success()
                RECORD.ack_times.append(time.time())
                RECORD.ack_ms.append(elapsed)
                RECORD.acked_per_alert[alert] += 1
            else:
                RECORD.ack_failures[str(response.status_code)] += 1
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")


class TreePoller(FastHttpUser):
    """A supervisor's screen polling the whole tree of one of the alerts, once a second."""

    fixed_count = POLLERS
    wait_time = paced(1)

    def on_start(self) -> None:
        self.base = base_url()
        gevent.sleep(random.uniform(0, 1))

    @task
    def poll(self) -> None:
        alert = random.choice(SETUP["alerts"])
        start = time.perf_counter()
        with self.client.get(f"{self.base}/api/alerts/{alert}/linkage", name=TREE_NAME, catch_response=True,
                             headers={"Authorization": f"Bearer {SETUP['supervisor_token']}"}) as response:
            if response.status_code == 200 and response.json()["rollups"]["all"]["total"] == SETUP["units"]:
                response.success()
                RECORD.tree_ms.append((time.perf_counter() - start) * 1000)
            else:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")


class StreamFollower(HttpUser):
    """A supervisor following one alert's stream for the whole run (requests, streamed)."""

    fixed_count = FOLLOWERS
    wait_time = constant(1)
    _next = 0

    def on_start(self) -> None:
        StreamFollower._next += 1
        self.number = StreamFollower._next
        self.base = base_url()
        self.alert = SETUP["alerts"][(self.number - 1) % len(SETUP["alerts"])]

    @task
    def follow(self) -> None:
        state = RECORD.followers.setdefault(self.number, {"alert": self.alert, "snapshot_acknowledged": 0,
                                                          "changes": 0, "connections": 0})
        headers = {"Authorization": f"Bearer {SETUP['supervisor_token']}"}
        if state.get("last_id"):
            headers["Last-Event-ID"] = state["last_id"]
        state["connections"] += 1
        with self.client.get(f"{self.base}/api/alerts/{self.alert}/linkage/stream", headers=headers, stream=True,
                             name="GET /api/alerts/{id}/linkage/stream (open)", timeout=60,
                             catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return
            response.success()
            kind, event_id, data = "message", None, []
            for raw in response.iter_lines(chunk_size=None):
                line = raw.decode() if isinstance(raw, bytes) else raw
                if line:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        kind = value
                    elif name == "id":
                        event_id = value
                    elif name == "data":
                        data.append(value)
                    continue
                if data:
                    self._event(state, kind, json.loads("\n".join(data)))
                if event_id:
                    state["last_id"] = event_id
                kind, event_id, data = "message", None, []

    def _event(self, state: dict[str, Any], kind: str, doc: dict[str, Any]) -> None:
        if kind == "snapshot":
            state["snapshot_acknowledged"] = doc["rollups"]["all"]["acknowledged"]
            state["changes"] = 0
        elif kind == "change" and doc["type"] == "acknowledged":
            state["changes"] += 1
            lag_ms = (time.time() - doc["node"]["task"]["acknowledged_at"]) * 1000
            RECORD.sse_lag_ms.append(lag_ms)
            self.environment.events.request.fire(request_type="SSE", name=SSE_NAME, response_time=lag_ms,
                                                 response_length=0, exception=None, context={})


@events.test_stop.add_listener
def write_results(environment: Any, **_: Any) -> None:
    times = sorted(RECORD.ack_times)
    sustained = None
    if len(times) >= 20:
        lo, hi = times[int(0.05 * len(times))], times[int(0.95 * len(times))]
        sustained = round((int(0.95 * len(times)) - int(0.05 * len(times))) / (hi - lo), 1) if hi > lo else None
    per_second = Counter(int(t) for t in times)
    full_seconds = sorted(per_second.values())[1:-1] or sorted(per_second.values())
    followers = []
    for number, state in sorted(RECORD.followers.items()):
        expected = RECORD.acked_per_alert[state["alert"]]
        seen = state["snapshot_acknowledged"] + state["changes"]
        followers.append({"follower": number, "alert": state["alert"], "acknowledged": expected, "seen": seen,
                          "connections": state["connections"], "complete": seen == expected})
    result = {
        "setup": {k: v for k, v in SETUP.items() if k in ("alerts", "units", "tasks")} | {
            "alerts": len(SETUP["alerts"])},
        "offered_rate": ACK_RATE or "unpaced", "api_processes": max(1, len(API_URLS)), "ack_users": ACK_USERS,
        "pollers": POLLERS, "followers": FOLLOWERS,
        "acknowledgements": {
            "planned": len(_work), "ok": len(times), "failed": sum(RECORD.ack_failures.values()),
            "failures_by_status": dict(RECORD.ack_failures),
            "span_s": round(times[-1] - times[0], 2) if times else None,
            "sustained_per_s": sustained,
            "per_second_min": min(full_seconds) if full_seconds else None,
            "per_second_max": max(full_seconds) if full_seconds else None,
            "latency_ms": _percentiles(RECORD.ack_ms),
        },
        "tree_polls": {"count": len(RECORD.tree_ms), "latency_ms": _percentiles(RECORD.tree_ms)},
        "stream": {"changes": len(RECORD.sse_lag_ms), "delivery_lag_ms": _percentiles(RECORD.sse_lag_ms),
                   "followers": followers, "every_change_seen": all(f["complete"] for f in followers)},
    }
    Path(RESULTS_PREFIX + ".json").write_text(json.dumps(result, indent=2))
    Path(RESULTS_PREFIX + ".md").write_text(_markdown(result))
    print(_markdown(result))


def _markdown(result: dict[str, Any]) -> str:
    acks, tree, stream = result["acknowledgements"], result["tree_polls"], result["stream"]

    def row(name: str, count: int, lat: dict[str, Any]) -> str:
        return f"| {name} | {count} | {lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']} |"

    return "\n".join([
        f"# Linkage load test: {result['setup']['alerts']} city-wide alerts x {result['setup']['units']} units",
        "",
        f"Offered {result['offered_rate']} acknowledgements/s by {result['ack_users']} officer users to "
        f"{result['api_processes']} API process(es); "
        f"{result['pollers']} supervisors polling the tree each second, {result['followers']} following streams.",
        "",
        f"- acknowledgements: {acks['ok']} of {acks['planned']} ok, {acks['failed']} failed "
        f"{acks['failures_by_status'] or ''} in {acks['span_s']} s",
        f"- **sustained {acks['sustained_per_s']} acknowledgements/s** (5th-95th percentile of completion times; "
        f"whole seconds between {acks['per_second_min']} and {acks['per_second_max']})",
        f"- stream: {stream['changes']} change events delivered; every change reached every follower: "
        f"{stream['every_change_seen']}",
        f"- tasks: {result['setup']['tasks']}",
        "",
        "| what | count | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        row("acknowledge (POST)", acks["ok"], acks["latency_ms"]),
        row("tree poll (GET, 875 units)", tree["count"], tree["latency_ms"]),
        row("stream delivery lag (ack -> follower)", stream["changes"], stream["delivery_lag_ms"]),
        "",
    ])
