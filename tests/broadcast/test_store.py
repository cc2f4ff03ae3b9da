"""Persistence: kill Redis and the API after an alert was issued, start both again, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis

from broadcast.redis_server import RedisServerConfig, free_port, start_redis
from broadcast.settings import load_settings
from broadcast.users import UserDirectory, parse_roles
from broadcast.worker import run_worker

BIN = Path(sys.executable).parent
FUTIAN = [[[114.02, 22.52], [114.09, 22.52], [114.09, 22.58], [114.02, 22.58], [114.02, 22.52]]]


def call(base: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def start_api(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BROADCAST_PORT": str(port), "REDIS_URL": redis_url}
    process = subprocess.Popen([str(BIN / "broadcast"), "serve"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("API did not come up")


def test_issued_alert_audit_trail_and_queued_job_survive_kill_9_of_redis_and_api(tmp_path: Path) -> None:
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    base = f"http://127.0.0.1:{api_port}"
    config = RedisServerConfig(port=redis_port, data_dir=tmp_path / "redis")
    redis_process = start_redis(config)
    api = start_api(api_port, redis_url)
    try:
        directory = UserDirectory(redis.Redis.from_url(redis_url))
        alice = directory.add("alice", parse_roles(["forecaster"]))
        bob = directory.add("bob", parse_roles(["approver"]))
        status, draft = call(base, "POST", "/api/alerts", alice, {
            "signal": {"hazard": "typhoon", "level": "red"},
            "areas": [{"desc": "福田区", "geometry": {"type": "Polygon", "coordinates": FUTIAN}}]})
        assert status == 201
        assert call(base, "POST", f"/api/alerts/{draft['id']}/submit", alice)[0] == 200
        assert call(base, "POST", f"/api/alerts/{draft['id']}/approve", alice)[0] == 403  # refused, audited
        status, issued = call(base, "POST", f"/api/alerts/{draft['id']}/approve", bob)
        assert status == 200 and issued["state"] == "issued"
        _, audit_before = call(base, "GET", f"/api/alerts/{draft['id']}/audit", bob)
        assert [e["action"] for e in audit_before["entries"]] == ["create", "submit", "approve", "approve"]

        # No graceful shutdown: both die at once, as in a power cut of the processes.
        os.kill(api.pid, signal.SIGKILL)
        os.kill(redis_process.pid, signal.SIGKILL)
        api.wait()
        redis_process.wait()

        redis_process = start_redis(config)
        api = start_api(api_port, redis_url)
        status, after = call(base, "GET", f"/api/alerts/{draft['id']}", bob)
        assert status == 200
        assert after == issued
        _, audit_after = call(base, "GET", f"/api/alerts/{draft['id']}/audit", bob)
        assert audit_after == audit_before
        # Tokens survived too (alice's still works), and the dissemination job queued at approval is still
        # there for a worker started after the restart.
        assert call(base, "GET", "/api/alerts", alice)[0] == 200
        assert run_worker(load_settings({"REDIS_URL": redis_url}), burst=True) is True
        _, disseminated = call(base, "GET", f"/api/alerts/{draft['id']}", bob)
        assert disseminated["dissemination"]["outcome"] == "ran"
    finally:
        for process in (api, redis_process):
            if process.poll() is None:
                process.kill()
                process.wait()
