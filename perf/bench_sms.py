"""End-to-end SMS fan-out benchmark: approval -> RQ batches -> SMPP/Twilio simulator, counted at the simulator.

    .venv/bin/python perf/bench_sms.py --provider smpp --recipients 20000 --rate 5000 --workers 2
    .venv/bin/python perf/bench_sms.py --provider twilio --recipients 20000 --rate 100000 --latency-ms 150

Everything runs on 127.0.0.1 in a temporary directory with free ports and is stopped at the end:
its own redis-server, ``broadcast serve``, K ``broadcast worker`` processes and ``broadcast sim``.
It publishes a registry of N generated subscribers (the SMS channel reaches every subscriber),
issues a city-wide red rainstorm alert on ``sms`` only through the HTTP API (two users), and
watches the sender-side progress until every recipient is final (or a timeout); then it fetches
the simulator's record ONCE (``/_sim/messages`` holds every PDU, which is heavy to serve while
sending) and counts at the simulator: distinct destinations received, duplicates (part 1 of a
concatenated message, or the Twilio message, seen more than once for one destination), lost,
first message after approval, the sustained rate (between the 5th and 95th percentile receive
times), the highest rate in any sliding one-second window, and Redis peak memory. For SMPP those
times are when each text went on the wire, from a packet capture on the loopback
(perf/wire_capture.py, needs root; the simulator's own read times are reported beside them). It
also records CPU seconds of every process during the run and per-batch RQ job durations.

Prints one JSON line; writes perf/results/sms-<provider>-<N>-w<K>-r<R>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import mmap
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import rq  # noqa: E402

from broadcast.redis_server import RedisServerConfig, free_port, free_port_run, start_redis, stop_redis  # noqa: E402
from perf.wire_capture import WireCapture  # noqa: E402

CITY = ["440304", "440303", "440305", "440308", "440306", "440307", "440309", "440310", "440311", "440399"]
SMPP_OFFSET = 2
SMPP_INSPECT_OFFSET = 12
TWILIO_OFFSET = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- helpers

def http(method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 30) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: {exc.code} {exc.read()[:500]!r}") from None
    return json.loads(raw) if raw else {}


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds (all cores) the whole machine has spent busy since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def child_pids(parents: set[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents:
                found.append(int(entry.name))
    return found


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP retransmission counters (Linux), to tell real losses from tail-loss probes."""
    counters: dict[str, int] = {}
    for path, prefix, wanted in (("/proc/net/snmp", "Tcp:", ("RetransSegs",)),
                                 ("/proc/net/netstat", "TcpExt:", ("TCPLossProbes", "TCPSpuriousRTOs",
                                                                   "TCPDSACKRecv", "TCPBacklogDrop"))):
        with contextlib.suppress(OSError):
            lines = [line.split() for line in Path(path).read_text().splitlines() if line.startswith(prefix)]
            for names, values in zip(lines[::2], lines[1::2], strict=False):
                counters.update({n: int(v) for n, v in zip(names[1:], values[1:], strict=False) if n in wanted})
    return counters


def sliding_max(times: list[float], window: float = 1.0) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def per_second(times: list[float], t0: float) -> list[int]:
    """Texts received in each whole second after approval (to see dips, not only the mean)."""
    counts: list[int] = []
    for t in times:
        second = int(t - t0)
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


# ---------------------------------------------------------------- the stack

class Stack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-sms-"))
        self.redis_port = free_port()
        self.api_port = free_port()
        self.sim_base = free_port_run()
        self.redis_process: subprocess.Popen | None = None
        self.children: dict[str, subprocess.Popen] = {}
        options = [f"sms.provider={args.provider}"]
        if args.window:
            options.append(f"sms.window={args.window}")
        options += args.option
        self.env = {
            **os.environ,
            "BROADCAST_PORT": str(self.api_port),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "BROADCAST_DATA_DIR": str(self.tmp / "data"),
            "BROADCAST_SIM_BASE_PORT": str(self.sim_base),
            "BROADCAST_CHANNEL_RATES": f"sms={args.rate}",
            "BROADCAST_CHANNEL_OPTIONS": ",".join(options),
            "BROADCAST_BATCH_SIZE": str(args.batch_size),
            # The SMPP simulator keeps (time, number) per completed text instead of every PDU.
            "BROADCAST_SIM_RECORD": "compact",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("BROADCAST_CONFIG", None)
        self.redis = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def sim_url(self, offset: int) -> str:
        return f"http://127.0.0.1:{self.sim_base + offset}"

    def start_redis(self) -> None:
        self.redis_process = start_redis(RedisServerConfig(port=self.redis_port, data_dir=self.tmp / "redis"))
        self.redis = redis.Redis(host="127.0.0.1", port=self.redis_port)

    def spawn(self, name: str, *argv: str, nice: int = 0) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115
        prefix = ["nice", "-n", str(nice)] if nice else []
        self.children[name] = subprocess.Popen([*prefix, str(ROOT / ".venv/bin/broadcast"), *argv], env=self.env,
                                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def cli(self, *argv: str) -> str:
        return subprocess.run([str(ROOT / ".venv/bin/broadcast"), *argv], env=self.env, cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()

    def start_processes(self, workers: int, worker_nice: int = 0, sim_nice: int = 0) -> None:
        self.spawn("sim", "sim", nice=sim_nice)
        self.spawn("api", "serve")
        for i in range(workers):
            extra = [] if i == 0 else ["--no-scheduler"]
            self.spawn(f"worker-{i + 1}", "worker", "--name", f"bench-{os.getpid()}-{i + 1}", *extra,
                       nice=worker_nice)
        wait_for(f"{self.api}/healthz", 60)
        wait_for(f"{self.sim_url(SMPP_INSPECT_OFFSET)}/_sim/faults", 60)
        wait_for(f"{self.sim_url(TWILIO_OFFSET)}/_sim/faults", 60)
        # A worker registers with RQ once it has warmed up (registries loaded, adapters open), as it
        # would be long before a warning in service: wait for all of them.
        deadline = time.monotonic() + 120
        while rq.Worker.count(connection=self.redis) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not come up")
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.children.items()}
        if self.redis_process is not None:
            pids["redis"] = self.redis_process.pid
        return pids

    def stop(self) -> None:
        # RQ's scheduler is a process forked by the first worker: stop it too, by its pid.
        grandchildren = child_pids({p.pid for p in self.children.values()})
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.children.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in grandchildren:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.redis_process is not None:
            stop_redis(self.redis_process)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def publish_subscribers(stack: Stack, count: int) -> float:
    from geotarget import build_demo_gazetteer
    from geotarget.registry import RegistryStore
    from geotarget.subscribers import generate_subscribers

    started = time.perf_counter()
    gazetteer = build_demo_gazetteer()
    store = RegistryStore(stack.redis, stack.tmp / "data")
    store.publish("subscribers", lambda d: generate_subscribers(gazetteer, count, d, overwrite=True),
                  note=f"bench: {count} generated")
    return time.perf_counter() - started


# ---------------------------------------------------------------- counting at the simulator

SMPP_RE = re.compile(rb'"received_at": ([0-9.e+-]+), "system_id": "[^"]*", "source": "[^"]*", '
                     rb'"destination": "([^"]*)".*?"part": (\d+), "parts": (\d+)', re.DOTALL)
TWILIO_RE = re.compile(rb'"received_at": ([0-9.e+-]+), "sid": "[^"]*", "account_sid": "[^"]*", "to": "([^"]*)"')


def fetch_sim(stack: Stack, provider: str, path: Path) -> tuple[list[tuple[float, str, int, int]], float, int]:
    """(received_at, destination, part, parts) of every protocol message the simulator accepted.

    SMPP: one entry per completed text (the simulator runs with sim_record=compact: it reassembles
    the parts and notes when the last one arrived), as part 1 of 1.
    """
    if provider == "smpp":
        started = time.perf_counter()
        with urllib.request.urlopen(f"{stack.sim_url(SMPP_INSPECT_OFFSET)}/_sim/texts", timeout=1800) as response:
            raw = response.read()
        fetch_seconds = time.perf_counter() - started
        path.write_bytes(raw)
        doc = json.loads(raw)
        stack.sim_pdus = doc["pdus"]
        return [(t, d, 1, 1) for t, d in zip(doc["times"], doc["destinations"], strict=True)], fetch_seconds, len(raw)
    if provider == "smpp":
        url, pattern = f"{stack.sim_url(SMPP_INSPECT_OFFSET)}/_sim/messages?kind=submit_sm", SMPP_RE
    else:
        url, pattern = f"{stack.sim_url(TWILIO_OFFSET)}/_sim/messages?kind=message", TWILIO_RE
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=1800) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    fetch_seconds = time.perf_counter() - started
    size = path.stat().st_size
    entries: list[tuple[float, str, int, int]] = []
    if size:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for m in pattern.finditer(data):
                if provider == "smpp":
                    entries.append((float(m[1]), m[2].decode(), int(m[3]), int(m[4])))
                else:
                    entries.append((float(m[1]), m[2].decode(), 1, 1))
    if not entries and size > 20:  # the record layout changed: fall back to a full parse
        doc = json.loads(path.read_bytes())
        for e in doc["messages"]:
            if provider == "smpp":
                entries.append((e["received_at"], e["destination"], e.get("part", 1), e.get("parts", 1)))
            else:
                entries.append((e["received_at"], e["to"], 1, 1))
    return entries, fetch_seconds, size


def job_times(client: redis.Redis, job_ids: list[str], t0: float) -> dict:
    """When each RQ job was enqueued, started and ended, in seconds after ``t0``."""
    out = {}
    for job_id in job_ids:
        fields = client.hmget(f"rq:job:{job_id}", ["enqueued_at", "started_at", "ended_at"])
        out[job_id.split("-")[0] + ("-notify" if "notify" in job_id else "")] = {
            name: round(datetime.fromisoformat(v.decode().replace("Z", "+00:00")).timestamp() - t0, 3)
            for name, v in zip(("enqueued", "started", "ended"), fields, strict=True) if v}
    return out


def batch_stats(client: redis.Redis, alert_id: str) -> dict:
    """Durations of the alert's send_batch RQ jobs (kept result_ttl=3600)."""
    durations, starts, ends = [], [], []
    for key in client.scan_iter(match=f"rq:job:send-{alert_id}-*", count=1000):
        started, ended = client.hmget(key, ["started_at", "ended_at"])
        if not started or not ended:
            continue
        s = datetime.fromisoformat(started.decode().replace("Z", "+00:00")).timestamp()
        e = datetime.fromisoformat(ended.decode().replace("Z", "+00:00")).timestamp()
        starts.append(s)
        ends.append(e)
        durations.append(e - s)
    if not durations:
        return {"batches": 0}
    durations.sort()
    return {"batches": len(durations), "median_s": round(statistics.median(durations), 3),
            "p95_s": round(percentile(durations, 0.95), 3), "max_s": round(durations[-1], 3),
            "sum_s": round(sum(durations), 1), "first_start": min(starts), "last_end": max(ends)}


# ---------------------------------------------------------------- one run

def run_once(args: argparse.Namespace) -> dict:
    stack = Stack(args)
    result: dict = {"provider": args.provider, "recipients": args.recipients, "rate_cap": args.rate,
                    "workers": args.workers, "latency_ms": args.latency_ms if args.provider == "twilio" else 0,
                    "batch_size": args.batch_size, "channel_options": [f"sms.provider={args.provider}", *args.option]}
    if args.tag:
        result["tag"] = args.tag
    capture: WireCapture | None = None
    wire_texts: list[tuple[float, str]] = []
    try:
        stack.start_redis()
        result["generate_publish_s"] = round(publish_subscribers(stack, args.recipients), 2)
        forecaster = stack.cli("user", "add", "bench-forecaster", "--role", "forecaster")
        approver = stack.cli("user", "add", "bench-approver", "--role", "approver")
        stack.start_processes(args.workers, args.worker_nice, args.sim_nice)
        if args.provider == "twilio":
            http("PUT", f"{stack.sim_url(TWILIO_OFFSET)}/_sim/faults", {"latency_ms": args.latency_ms})
        alert = http("POST", f"{stack.api}/api/alerts",
                     {"signal": {"hazard": "rainstorm", "level": "red"}, "areas": [{"geocodes": CITY}],
                      "channels": ["sms"]}, forecaster)
        alert_id = alert["id"]
        http("POST", f"{stack.api}/api/alerts/{alert_id}/submit", {}, forecaster)
        try:
            preview = http("GET", f"{stack.api}/api/alerts/{alert_id}/preview", token=approver)
            result["sms_text"] = {lang: {k: v for k, v in fit.items() if k in ("length", "segments", "encoding")}
                                  for lang, fit in preview["channels"]["sms"]["languages"].items()}
        except (RuntimeError, KeyError, AttributeError) as exc:
            result["sms_text"] = f"preview unavailable: {exc}"
        if args.provider == "smpp" and args.wire_capture:
            capture = WireCapture(stack.sim_base + SMPP_OFFSET)
            try:
                capture.start()
            except OSError as exc:  # PermissionError without root
                result["wire_capture"] = f"unavailable ({exc}): times are the simulator's"
                capture = None
        pids = stack.pids()
        tcp0 = tcp_counters()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        busy0 = machine_busy_seconds()
        result["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
        t_request = time.time()
        http("POST", f"{stack.api}/api/alerts/{alert_id}/approve", {}, approver)
        t_approved = time.time()
        result["approve_call_s"] = round(t_approved - t_request, 3)

        # Watch the sender-side progress (cheap) until every recipient is final, or the timeout.
        timeout = args.timeout or max(120.0, 3 * args.recipients / min(args.rate, 5000) + 120)
        deadline = time.monotonic() + timeout
        samples: list[tuple[float, int]] = []
        targeted = None
        last_print = 0.0
        while True:
            body = http("GET", f"{stack.api}/api/alerts/{alert_id}/progress", token=approver)
            sms = body["channels"].get("sms")
            now = time.time()
            if sms:
                targeted = sms["targeted"]
                samples.append((now, sms["sent"]))
                if now - last_print > 10:
                    print(f"  [{now - t_approved:6.1f}s] sent {sms['sent']}/{targeted} queued {sms['queued']} "
                          f"failed {sms['failed']} rate {sms['rate_per_second']}/s", file=sys.stderr, flush=True)
                    last_print = now
                if sms["pending"] == 0 and sms["queued"] == 0:
                    break
            if time.monotonic() > deadline:
                result["timed_out"] = True
                break
            for name, process in stack.children.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {stack.tmp}/{name}.log")
            time.sleep(0.5)
        t_done = time.time()
        cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result["tcp_counters"] = {name: value - tcp0.get(name, 0) for name, value in tcp_counters().items()}
        busy1 = machine_busy_seconds()
        result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
        if args.provider == "twilio":
            time.sleep(min(5.0, args.latency_ms / 1000 + 1))  # let the last status callbacks land
        result["sender"] = {k: sms.get(k) for k in ("targeted", "sent", "failed", "suppressed", "delivered",
                                                     "undelivered")} if sms else {}
        result["sender_done_s"] = round(t_done - t_approved, 2)
        result["cpu_seconds"] = {name: round(cpu1[name] - cpu0[name], 1) for name in pids}
        wall = t_done - t_request
        result["cpu_share_of_one_core"] = {name: round((cpu1[name] - cpu0[name]) / wall, 2) for name in pids}
        ours = sum(cpu1[name] - cpu0[name] for name in pids)
        result["machine_busy_cores"] = round((busy1 - busy0) / wall, 2)
        result["other_processes_busy_cores"] = round((busy1 - busy0 - ours) / wall, 2)

        entries, fetch_s, size = fetch_sim(stack, args.provider, stack.tmp / "sim-messages.json")
        if capture is not None:
            captured = capture.stop()
            wire_texts, counts = capture.texts()
            result["wire_capture"] = {**captured, **counts, "texts": len(wire_texts)}
        result["sim_fetch"] = {"seconds": round(fetch_s, 1), "bytes": size, "records": len(entries)}
        info = stack.redis.info("memory")
        result["redis_peak_memory"] = info["used_memory_peak_human"]
        result["redis_used_memory_end"] = info["used_memory_human"]
        result["redis_keys_end"] = stack.redis.dbsize()
        result["batch_jobs"] = batch_stats(stack.redis, alert_id)
        result["jobs_after_approval_s"] = job_times(
            stack.redis, [f"disseminate-{alert_id}", f"linkage-notify-{alert_id}"], t_approved)
        if "first_start" in result["batch_jobs"]:
            bj = result["batch_jobs"]
            bj["first_batch_start_after_approval_s"] = round(bj.pop("first_start") - t_approved, 3)
            bj["last_batch_end_after_approval_s"] = round(bj.pop("last_end") - t_approved, 3)
    finally:
        if capture is not None:
            capture.stop()  # stopped already unless the run failed; stopping again does nothing
        stack.stop()

    # Count at the simulator.
    firsts = sorted(e for e in entries if e[2] == 1)  # part 1 of each message (or the Twilio message)
    seen: dict[str, int] = {}
    for _, dest, _, _ in firsts:
        seen[dest] = seen.get(dest, 0) + 1
    received = len(seen)
    duplicates = sum(1 for n in seen.values() if n > 1)
    times = [e[0] for e in firsts]
    if wire_texts:
        # The rates from when each text went on the wire (see perf/wire_capture.py); the simulator's
        # own read times are kept beside them.
        # Only when the capture saw every text the simulator accepted (it also sees refused ones).
        if isinstance(result.get("wire_capture"), dict) and not result["wire_capture"]["dropped"] \
                and {d for _, d in wire_texts} >= set(seen):
            result["timed_on_the_wire"] = True
            result["max_1s_rate_sim_read"] = sliding_max(times)
            sim_t5, sim_t95 = percentile(times, 0.05), percentile(times, 0.95)
            result["sustained_rate_sim_read"] = round(sum(1 for t in times if sim_t5 <= t <= sim_t95)
                                                      / (sim_t95 - sim_t5), 1) if sim_t95 > sim_t5 else None
            times = [t for t, _ in wire_texts]
        else:
            result["wire_capture_unused"] = "the capture missed packets: times are the simulator's"
    targeted = targeted if targeted is not None else args.recipients
    result.update({
        "targeted": targeted,
        "received": received,
        "duplicates": duplicates,
        "duplicate_messages": sum(n - 1 for n in seen.values() if n > 1),
        "lost": targeted - received,
        "pdus": getattr(stack, "sim_pdus", {}).get("submit_sm", len(entries)),
    })
    if firsts:
        result["parts_per_message"] = round(result["pdus"] / len(firsts), 3)
    if times:
        t5, t95 = percentile(times, 0.05), percentile(times, 0.95)
        middle = sum(1 for t in times if t5 <= t <= t95)
        result["first_message_s"] = round(times[0] - t_approved, 3)
        result["last_message_s"] = round(times[-1] - t_approved, 3)
        result["sustained_rate"] = round(middle / (t95 - t5), 1) if t95 > t5 else None
        result["overall_rate"] = round(len(times) / (times[-1] - t_approved), 1)
        result["max_1s_rate"] = sliding_max(times)
        result["per_second"] = per_second(times, t_approved)
    else:
        result.update(first_message_s=None, sustained_rate=0, max_1s_rate=0)
    result["_series"] = {"t_approved": t_approved, "times": times, "samples": samples}
    return result


# ---------------------------------------------------------------- output

KEY_FIELDS = ("provider", "recipients", "rate_cap", "workers", "latency_ms", "sustained_rate", "max_1s_rate",
              "max_1s_rate_sim_read", "first_message_s", "received", "duplicates", "lost", "redis_peak_memory")


def write_plot(result: dict, path: Path) -> str:
    series = result["_series"]
    t0, times = series["t_approved"], series["times"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed; no plot"
    if not times:
        return "nothing received; no plot"
    seconds = int(times[-1] - t0) + 1
    counts = [0] * (seconds + 1)
    for t in times:
        counts[max(0, int(t - t0))] += 1
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.step(range(len(counts)), counts, where="post",
            label="on the wire to the simulator (per 1 s)" if result.get("timed_on_the_wire")
            else "received at the simulator (per 1 s)")
    samples = series["samples"]
    if len(samples) > 1:
        pairs = list(itertools.pairwise(samples))
        xs = [(a[0] + b[0]) / 2 - t0 for a, b in pairs]
        ys = [(b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0 for a, b in pairs]
        ax.plot(xs, ys, alpha=0.6, label="sender-side 'sent' (progress API)")
    ax.axhline(result["rate_cap"], color="red", linestyle="--", linewidth=1, label=f"rate cap {result['rate_cap']}/s")
    ax.set_ylim(0, max(max(counts), 1) * 1.15 if result["rate_cap"] > 3 * max(counts) else
                max(max(counts), result["rate_cap"]) * 1.15)
    ax.set_xlabel("seconds after approval")
    ax.set_ylabel("messages per second")
    ax.set_title(f"SMS {result['provider']}: {result['recipients']:,} recipients, {result['workers']} workers, "
                 f"cap {result['rate_cap']}/s")
    ax.legend(loc="lower center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_results(result: dict, results_dir: Path, command: str) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sms-{result['provider']}-{result['recipients']}-w{result['workers']}-r{int(result['rate_cap'])}"
    if result.get("tag"):
        stem += f"-{result['tag']}"
    result["plot"] = write_plot(result, results_dir / f"{stem}.png")
    result["command"] = command
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (results_dir / f"{stem}.json").write_text(json.dumps(public, indent=2, ensure_ascii=False) + "\n")
    lines = [f"# SMS fan-out: {result['provider']}, {result['recipients']:,} recipients, "
             f"{result['workers']} workers, cap {result['rate_cap']}/s", "", f"`{command}`", "",
             "| figure | value |", "|---|---|"]
    for key, value in public.items():
        if key not in ("command",):
            lines.append(f"| {key} | {json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value} |")
    (results_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", choices=("smpp", "twilio"), default="smpp")
    parser.add_argument("--recipients", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=150.0, help="Twilio simulator latency")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--window", type=int, default=0, help="sms.window (SMPP); 0 = the adapter's default")
    parser.add_argument("--option", action="append", default=[],
                        help="extra channel option, e.g. sms.bind_mode=transmitter (repeatable)")
    parser.add_argument("--worker-nice", type=int, default=0,
                        help="run the workers at this nice value, below the simulator (which stands in for a "
                             "carrier's SMSC on its own machine)")
    parser.add_argument("--sim-nice", type=int, default=0,
                        help="run the simulators at this nice value (below 0 needs root): a carrier's SMSC on its "
                             "own machine reads what arrives at once, and TCP gives bytes left unread the time of "
                             "the next ones to arrive, so a simulator slow to read blurs the wire times it records")
    parser.add_argument("--no-wire-capture", dest="wire_capture", action="store_false",
                        help="SMPP: time texts by the simulator's reads, not by a packet capture on the loopback "
                             "(perf/wire_capture.py; the capture needs root)")
    parser.add_argument("--tag", default="", help="suffix of the result files (for variants)")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds to wait for completion")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "perf" / "results")
    args = parser.parse_args()
    command = ".venv/bin/python perf/bench_sms.py " + " ".join(sys.argv[1:])
    results = []
    for run in range(args.runs):
        result = run_once(args)
        result["run"] = run + 1
        results.append(result)
        write_results(result, args.results_dir, command)
        print(json.dumps({k: v for k, v in result.items() if not k.startswith("_") and k in (
            *KEY_FIELDS, "pdus", "sender_done_s", "overall_rate", "timed_out", "run")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
