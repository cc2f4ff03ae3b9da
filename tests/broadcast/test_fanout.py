"""The fan-out at small scale: real Redis, real RQ workers, real simulators (``broadcast sim`` in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from broadcast import accounting
from broadcast.queues import WORKER_QUEUES
from broadcast.redis_server import free_port_run
from tests.broadcast.test_api import create, post, red_rainstorm

BIN = Path(sys.executable).parent


def inspect(base: int, offset: int, kind: str | None = None) -> list[dict]:
    url = f"http://127.0.0.1:{base + offset}/_sim/messages" + (f"?kind={kind}" if kind else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["messages"]


def clear(base: int, offset: int) -> None:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{base + offset}/_sim/messages",
                                                  method="DELETE"), timeout=10).read()


def set_faults(base: int, offset: int, **faults: object) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{base + offset}/_sim/faults", method="PUT",
                                     data=json.dumps(faults).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


SMPP, SMPP_INSPECT = 2, 12


@pytest.fixture(scope="module")
def sim_base(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = free_port_run()
    env = {**os.environ, "BROADCAST_SIM_BASE_PORT": str(base)}
    process = subprocess.Popen([str(BIN / "broadcast"), "sim"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=tmp_path_factory.mktemp("sim"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            inspect(base, SMPP_INSPECT)
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError(process.stdout.read().decode() if process.stdout else "no simulators")
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)


@pytest.fixture
def fanout_env(monkeypatch, settings, sim_base, published_targets):  # type: ignore[no-untyped-def]
    """Jobs read their settings from the environment: point them at this test's Redis, data and simulators."""
    monkeypatch.setenv("REDIS_URL", settings.effective_redis_url)
    monkeypatch.setenv("BROADCAST_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BROADCAST_SIM_BASE_PORT", str(sim_base))
    clear(sim_base, SMPP_INSPECT)
    set_faults(sim_base, SMPP_INSPECT, latency_ms=0, throttle_rate=0, error_rate=0, down=False)
    return sim_base


def work(max_jobs: int | None = None) -> None:
    """A real worker process (``broadcast worker --burst``), with this test's environment."""
    argv = [str(BIN / "broadcast"), "worker", "--burst"] + (["--max-jobs", str(max_jobs)] if max_jobs else [])
    result = subprocess.run(argv, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def sms_progress(client: redis.Redis, alert_id: str) -> accounting.ChannelProgress:
    found = [p for p in accounting.read(client, alert_id) if p.channel == "sms"]
    return found[0] if found else accounting.ChannelProgress("sms", dict.fromkeys(accounting.COUNTERS, 0), 0.0)


async def issue_sms_alert(client, auth, **changes):  # type: ignore[no-untyped-def]
    draft = await create(client, auth, request=red_rainstorm(channels=["sms", "cap_feed"], **changes))
    await post(client, auth, "alice", draft["id"], "submit")
    return await post(client, auth, "bob", draft["id"], "approve")


async def test_every_recipient_gets_the_sms_exactly_once(client, auth, settings, fanout_env, redis_client) -> None:
    issued = await issue_sms_alert(client, auth)
    work()
    progress = sms_progress(redis_client, issued["id"])
    assert progress.counts["targeted"] == issued["targets"]["counts"]["sms"] > 1000
    assert progress.counts["sent"] == progress.counts["targeted"]
    assert progress.pending == 0 and progress.counts["queued"] == 0 and progress.counts["failed"] == 0
    received = Counter(m["destination"] for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["part"] == 1)
    assert len(received) == progress.counts["targeted"]
    assert max(received.values()) == 1  # nobody twice
    # Every text's delivery receipt came back and was counted against this alert, once.
    assert progress.counts["delivered"] == progress.counts["sent"]
    assert progress.counts["undelivered"] == 0
    assert not list(redis_client.scan_iter(match="bc:receipt-owner:*"))
    feed = next(p for p in accounting.read(redis_client, issued["id"]) if p.channel == "cap_feed")
    assert feed.counts["sent"] == feed.counts["targeted"] == 1
    # Batches were cut at batch_size: several RQ jobs, all finished.
    assert Queue("alerts-extreme", connection=redis_client).count == 0


async def test_throttling_backs_off_and_recovers_without_failures(client, auth, settings, fanout_env,
                                                                  redis_client, monkeypatch) -> None:
    monkeypatch.setenv("BROADCAST_CHANNEL_OPTIONS", "sms.throttle_retry_after=0.05")
    set_faults(fanout_env, SMPP_INSPECT, throttle_rate=0.1)
    issued = await issue_sms_alert(client, auth)
    work()
    progress = sms_progress(redis_client, issued["id"])
    assert progress.counts["sent"] == progress.counts["targeted"] and progress.counts["failed"] == 0
    received = Counter(m["destination"] for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["part"] == 1)
    assert len(received) == progress.counts["targeted"] and max(received.values()) == 1


async def test_a_cancel_stops_the_fan_out_within_one_batch_and_reaches_those_reached(
        client, auth, settings, fanout_env, redis_client, monkeypatch) -> None:
    monkeypatch.setenv("BROADCAST_BATCH_SIZE", "200")
    issued = await issue_sms_alert(client, auth)
    # A worker takes a few jobs (two batches go out), then the cancel is approved.
    work(max_jobs=6)  # disseminate, plan sms, plan cap_feed, the officers' notices (linkage), two batches
    reached = sms_progress(redis_client, issued["id"]).counts["sent"]
    assert 0 < reached < issued["targets"]["counts"]["sms"]
    cancel = await post(client, auth, "bob", issued["id"], "cancel", {"reason": "issued in error", "urgent": True},
                        status=201)
    await post(client, auth, "bob", cancel["id"], "approve")
    work()
    original = sms_progress(redis_client, issued["id"])
    assert original.counts["sent"] == reached  # nothing more went out after the cancel
    assert original.counts["suppressed"] == original.counts["targeted"] - reached and original.pending == 0
    cancelled = sms_progress(redis_client, cancel["id"])
    assert cancelled.counts["targeted"] == cancelled.counts["sent"] == reached
    texts = [m for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["full_text"]]
    cancel_texts = [m for m in texts if "解除" in m["full_text"] or "CANCELLED" in m["full_text"]]
    first_wave = {m["destination"] for m in texts if m not in cancel_texts}
    assert {m["destination"] for m in cancel_texts} == first_wave and len(first_wave) == reached


async def test_a_red_warning_overtakes_a_yellow_ones_queued_batches(client, auth, settings, fanout_env,
                                                                    redis_client, monkeypatch) -> None:
    monkeypatch.setenv("BROADCAST_BATCH_SIZE", "100")
    yellow = await issue_sms_alert(client, auth, signal={"hazard": "rainstorm", "level": "yellow"})
    work(max_jobs=5)  # disseminate, two planning jobs, the officers' notices (linkage), one yellow batch
    red = await issue_sms_alert(client, auth)
    work()
    order = [m["destination"] for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["part"] == 1]
    texts = [m["full_text"] or m["text"] for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["part"] == 1]
    kinds = ["red" if ("红色" in t or "Red" in t) else "yellow" for t in texts]
    first_red, last_red = kinds.index("red"), len(kinds) - 1 - kinds[::-1].index("red")
    # Once the red warning started, every red message went out before the yellow one continued.
    assert "yellow" not in kinds[first_red:last_red + 1]
    assert kinds[last_red + 1:] and set(kinds[last_red + 1:]) == {"yellow"}
    for alert in (yellow, red):
        progress = sms_progress(redis_client, alert["id"])
        assert progress.counts["sent"] == progress.counts["targeted"]
    assert len(order) == sum(sms_progress(redis_client, a["id"]).counts["sent"] for a in (yellow, red))


RATES = "sms=300,cap_feed=1000,cell_broadcast=50,voice=100,email=500,wechat=2000,weibo=1,app_push=10000,tv=1," \
        "radio=1,display_screen=200,loudspeaker=100,webhook=50"


async def test_the_rate_cap_holds_across_two_worker_processes(client, auth, settings, fanout_env, redis_client,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("BROADCAST_CHANNEL_RATES", RATES)
    monkeypatch.setenv("BROADCAST_BATCH_SIZE", "100")
    issued = await issue_sms_alert(client, auth)
    workers = [subprocess.Popen([str(BIN / "broadcast"), "worker", "--burst"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(2)]
    samples = []
    while any(w.poll() is None for w in workers):
        samples.append(sms_progress(redis_client, issued["id"]).counts)
        time.sleep(0.05)
    work()  # whatever planning the two left behind
    final = sms_progress(redis_client, issued["id"])
    assert final.counts["sent"] == final.counts["targeted"] and final.pending == 0
    # The accounting invariant held at every moment we looked.
    for counts in samples:
        assert counts["sent"] + counts["failed"] + counts["suppressed"] <= counts["targeted"]
        assert counts["queued"] >= 0
    times = sorted(m["received_at"] for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["part"] == 1)
    assert len(times) == final.counts["targeted"]
    chunk = 100  # the sender takes tokens in chunks of at most 100
    worst = max(sum(1 for t in times[i:i + 400 + chunk] if t < start + 1.0) for i, start in enumerate(times))
    assert worst <= 300 + chunk, worst
    sustained = (len(times) - 1) / (times[-1] - times[0])
    assert sustained > 0.5 * 300, sustained  # the sustained figure itself is measured by the benchmark


async def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(client, auth, settings, fanout_env,
                                                                               redis_client, monkeypatch) -> None:
    monkeypatch.setenv("BROADCAST_CHANNEL_RATES", RATES.replace("sms=300", "sms=60"))
    monkeypatch.setenv("BROADCAST_BATCH_SIZE", "400")
    issued = await issue_sms_alert(client, auth)
    worker = subprocess.Popen([str(BIN / "broadcast"), "worker"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # Kill it right after a chunk was recorded, in the middle of its first batch of 400.
    previous, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        sent = sms_progress(redis_client, issued["id"]).counts["sent"]
        if 100 <= sent < 400 and sent != previous:
            break
        previous = sent
        time.sleep(0.002)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = sms_progress(redis_client, issued["id"]).counts["sent"]
    assert 100 <= killed_at < 400
    # RQ finds the abandoned batch when its heartbeat expires (about batch_timeout + 60 s later in
    # production); here we let its maintenance run as if that time had passed, then a new worker drains.
    for name in WORKER_QUEUES:
        StartedJobRegistry(name, connection=redis_client).cleanup(timestamp=time.time() + 3600)
    for _ in range(3):  # the re-run batch is queued at once (Retry interval 0); allow for a slow machine
        work()
        if sms_progress(redis_client, issued["id"]).pending == 0:
            break
        time.sleep(2)
    final = sms_progress(redis_client, issued["id"])
    assert final.counts["sent"] == final.counts["targeted"] and final.pending == 0 and final.counts["failed"] == 0
    received = Counter(m["destination"] for m in inspect(fanout_env, SMPP_INSPECT, "submit_sm") if m["part"] == 1)
    assert len(received) == final.counts["targeted"]  # nobody lost
    assert max(received.values()) == 1  # nobody twice


async def test_progress_is_served_per_channel(client, auth, settings, fanout_env) -> None:
    issued = await issue_sms_alert(client, auth)
    work()
    response = await client.get(f"/api/alerts/{issued['id']}/progress", headers=auth["dave"])
    assert response.status == 200
    body = await response.json()
    sms = body["channels"]["sms"]
    assert sms["targeted"] == sms["sent"] == issued["targets"]["counts"]["sms"]
    assert sms["pending"] == 0 and sms["eta_seconds"] == 0.0 and sms["failed"] == 0
    assert body["totals"]["targeted"] == sum(c["targeted"] for c in body["channels"].values())
    assert (await client.get("/api/alerts/nope/progress", headers=auth["dave"])).status == 404


async def test_metrics_and_the_cli_progress_view_show_the_fan_out(client, auth, settings, fanout_env,
                                                                  redis_client) -> None:
    issued = await issue_sms_alert(client, auth)
    work()
    response = await client.get("/metrics", headers=auth["erin"])
    assert response.status == 200 and response.content_type == "text/plain"
    text = await response.text()
    targeted = issued["targets"]["counts"]["sms"]
    assert f'broadcast_recipients{{alert="{issued["id"]}",channel="sms",state="sent"}} {targeted}' in text
    assert f'broadcast_recipients{{alert="{issued["id"]}",channel="sms",state="pending"}} 0' in text
    assert (await client.get("/metrics")).status == 401
    # The CLI's progress display, against the same service over HTTP.
    server_url = str(client.make_url("")).rstrip("/")
    token = auth["erin"]["Authorization"].split()[1]
    # Asynchronously: the test server answering it runs on this test's event loop.
    process = await asyncio.create_subprocess_exec(str(BIN / "broadcast"), "alert", "--url", server_url, "--token",
                                                   token, "progress", issued["id"], stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    out = stdout.decode()
    assert process.returncode == 0, stderr
    sms_line = next(line for line in out.splitlines() if line.lstrip().startswith("sms"))
    assert "#" * 40 in sms_line and f"{targeted:,}" in sms_line and "100.0%" in sms_line
