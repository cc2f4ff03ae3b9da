"""Prepares a linkage load test against a running service: users, officers, issued alerts and their tasks.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python perf/linkage_setup.py \\
        --url http://127.0.0.1:8080 --alerts 60 --out /tmp/linkage-setup.json

Run by perf/run_locust_linkage.sh against a fresh Redis. It

1. creates the users (with the service's own UserDirectory, straight in Redis): a forecaster, an
   approver, a supervisor (role ops) and one officer user ``duty-<code>`` for every unit of the
   demo gazetteer (875), and imports the demo roster with each unit's primary acting as that user
   (so ``units_of_user`` binds every officer to their unit);
2. issues ``--alerts`` city-wide red rainstorm warnings through the API (draft, submit, approve
   by a second person) and times, for the first, how long after approval every unit has its task
   (the issue's worst case: a city-wide red warning, all tasks within 1 s);
3. opens the tasks itself (``LinkageStore.open``, keeps any the service opened) where the service
   has not opened them within ``--wait-tasks`` seconds, so the load test runs either way;
4. writes the alerts, the officers' tokens and the timings as JSON for perf/locustfile_linkage.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from broadcast import keys
from broadcast.linkage import LinkageStore, Task
from broadcast.roster import RosterStore, bind_user, demo_roster
from broadcast.users import UserDirectory, parse_roles
from geotarget import build_demo_gazetteer

DISTRICTS = ["440303", "440304", "440305", "440306", "440307", "440308", "440309", "440310", "440311", "440399"]
RED_DEADLINE_SECONDS = 600.0


def call(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def make_users(client: redis.Redis) -> tuple[dict[str, str], dict[str, str]]:
    """(role name -> token for the forecaster, approver and supervisor; unit code -> officer token)."""
    directory = UserDirectory(client)
    staff = {"forecaster": directory.add("load-forecaster", parse_roles(["forecaster"])),
             "approver": directory.add("load-approver", parse_roles(["approver"])),
             "supervisor": directory.add("load-supervisor", parse_roles(["ops"]))}
    gazetteer = build_demo_gazetteer()
    officers = {unit.code: directory.add(f"duty-{unit.code}", parse_roles(["officer"])) for unit in gazetteer}
    roster = [dataclasses.replace(o, user=f"duty-{o.unit}") if o.id.endswith("-1") else o
              for o in demo_roster(gazetteer)]
    RosterStore(client).replace(roster, source="perf/linkage_setup.py")
    for unit in officers:  # the import binds them; make sure, whatever the roster does with users
        bind_user(client, f"duty-{unit}", [unit])
    return staff, officers


def issue(base: str, staff: dict[str, str], number: int) -> tuple[str, float]:
    """A city-wide red rainstorm warning, issued; returns its id and when approval answered."""
    draft = call(f"{base}/api/alerts", staff["forecaster"], "POST", {
        "signal": {"hazard": "rainstorm", "level": "red"},
        "areas": [{"desc": {"zh-CN": "全市", "en": "Whole city"}, "geocodes": DISTRICTS}],
        "note": f"linkage load test {number}"})
    call(f"{base}/api/alerts/{draft['id']}/submit", staff["forecaster"], "POST", {})
    call(f"{base}/api/alerts/{draft['id']}/approve", staff["approver"], "POST", {})
    return draft["id"], time.time()


def wait_for_tasks(store: LinkageStore, alert_id: str, expected: int, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until the alert has ``expected`` tasks (None: not within ``timeout``)."""
    while time.time() - since < timeout:
        if store.redis.hlen(keys.linkage_tasks(alert_id)) >= expected:
            return time.time() - since
        time.sleep(0.01)
    return None


def open_tasks(store: LinkageStore, alert_id: str) -> tuple[int, float]:
    """Open a task for every unit (those the service opened stay); (how many were new, seconds taken)."""
    gazetteer = build_demo_gazetteer()
    start = time.time()
    tasks = [Task(alert_id, u.code, u.level.value, u.parent, start, start + RED_DEADLINE_SECONDS) for u in gazetteer]
    return store.open(tasks), time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8080")
    parser.add_argument("--alerts", type=int, default=60)
    parser.add_argument("--wait-tasks", type=float, default=5.0,
                        help="how long to wait for the service to open the first alert's tasks")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    store = LinkageStore(client)
    units = len(build_demo_gazetteer())
    staff, officers = make_users(client)

    alerts, opened_by_service, opened_here = [], 0, 0
    first_tasks_seconds = None
    open_seconds = []
    for number in range(args.alerts):
        alert_id, approved_at = issue(args.url, staff, number)
        if number == 0:
            first_tasks_seconds = wait_for_tasks(store, alert_id, units, approved_at, args.wait_tasks)
        present = client.hlen(keys.linkage_tasks(alert_id))
        new, seconds = open_tasks(store, alert_id)
        opened_by_service += present
        opened_here += new
        if new == units:
            open_seconds.append(seconds)
        alerts.append(alert_id)
    setup = {
        "url": args.url, "alerts": alerts, "units": units,
        "officers": [{"unit": unit, "token": token} for unit, token in officers.items()],
        "supervisor_token": staff["supervisor"],
        "tasks": {"opened_by_service": opened_by_service, "opened_by_setup": opened_here,
                  "first_alert_all_tasks_after_approval_s": first_tasks_seconds,
                  "store_open_875_tasks_s_median": sorted(open_seconds)[len(open_seconds) // 2] if open_seconds
                  else None},
    }
    args.out.write_text(json.dumps(setup))
    print(json.dumps(setup["tasks"]))


if __name__ == "__main__":
    main()
