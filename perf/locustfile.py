"""Load test of the API: forecasters compose and preview warnings, duty officers poll progress.

    BROADCAST_URL=http://127.0.0.1:8080 FORECASTER_TOKEN=... OFFICER_TOKEN=... \\
      .venv/bin/locust -f perf/locustfile.py --headless -u 20 -r 5 -t 60s --host $BROADCAST_URL

perf/run_locust.sh brings up Redis and the API on free loopback ports, creates the users,
runs this headless and writes perf/results/locust-*.csv and a summary. Requests go to
127.0.0.1 only; the run stops by itself after -t.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

DISTRICTS = ["440303", "440304", "440305", "440306", "440307", "440309", "440310", "440311", "440308"]
HAZARDS = [("rainstorm", "yellow"), ("rainstorm", "orange"), ("typhoon", "blue"), ("high_temperature", "yellow"),
           ("gale", "blue"), ("fog", "yellow")]


class Forecaster(HttpUser):
    """Drafts a warning, previews every channel's text, reads it back."""

    weight = 1
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {os.environ['FORECASTER_TOKEN']}"
        self.drafts: list[str] = []

    @task(2)
    def compose(self) -> None:
        hazard, level = random.choice(HAZARDS)
        body = {"signal": {"hazard": hazard, "level": level},
                "areas": [{"geocodes": random.sample(DISTRICTS, k=random.randint(1, 3))}]}
        with self.client.post("/api/alerts", json=body, name="POST /api/alerts", catch_response=True) as response:
            if response.status_code == 201:
                self.drafts.append(response.json()["id"])
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(3)
    def preview(self) -> None:
        if self.drafts:
            self.client.get(f"/api/alerts/{random.choice(self.drafts)}/preview", name="GET /api/alerts/{id}/preview")

    @task(1)
    def targeting(self) -> None:
        self.client.post("/api/targeting/resolve", json={"areas": [{"geocodes": [random.choice(DISTRICTS)]}]},
                         name="POST /api/targeting/resolve")


class DutyOfficer(HttpUser):
    """Lists alerts and polls the progress of the newest ones, as a supervisor's screen does."""

    weight = 3
    wait_time = between(0.2, 1)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {os.environ['OFFICER_TOKEN']}"

    @task(1)
    def listing(self) -> None:
        self.client.get("/api/alerts?limit=20", name="GET /api/alerts")

    @task(4)
    def progress(self) -> None:
        response = self.client.get("/api/alerts?limit=5", name="GET /api/alerts")
        if response.status_code == 200 and response.json()["alerts"]:
            alert = random.choice(response.json()["alerts"])
            self.client.get(f"/api/alerts/{alert['id']}/progress", name="GET /api/alerts/{id}/progress")
