"""Twilio Messages API: the official ``twilio`` client (as the SMS adapter uses it) beside a bare aiohttp client.

    .venv/bin/python perf/bench_twilio_client.py --messages 3000 --concurrency 200 --latency-ms 150 --runs 3

Both send the same form (To, From, Body, StatusCallback) with the same Basic auth to the same
Twilio simulator (its own process on 127.0.0.1, answering after ``latency-ms``), over one
aiohttp session with the same number of requests in flight; runs alternate between the two so
the machine's noise falls on both. Prints one JSON line (medians) and writes
perf/results/twilio-client-<concurrency>.json. The simulator process stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from broadcast.redis_server import free_port  # noqa: E402
from channels.twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_FROM, TwilioConfig, make_client  # noqa: E402

BODY = "【深圳市气象台】深圳市暴雨红色预警信号生效中，请立即停课停业（必要岗位除外），远离危险区域。"
SIMULATOR = """
import asyncio, sys
from aiohttp import web
from ops.simulators.twilio import create_app
web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def drive(send: Callable[[int], Awaitable[None]], count: int, concurrency: int) -> tuple[float, float]:
    """Send ``count`` messages with ``concurrency`` in flight: (messages per second, this process's CPU
    milliseconds per message, which is the client's own cost whatever the simulator does)."""
    numbers = iter(range(count))

    async def lane() -> None:
        for n in numbers:
            await send(n)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return count / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / count


async def run(args: argparse.Namespace, base: str) -> dict:
    messages_url = f"{base}/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages.json"
    callback = "http://127.0.0.1:9/api/callbacks/twilio/status"  # never called back: nothing listens there
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        config = TwilioConfig(url=base, account_sid=DEMO_ACCOUNT_SID, auth_token=DEMO_AUTH_TOKEN,
                              from_number=DEMO_FROM, status_callback=callback, concurrency=args.concurrency,
                              timeout=30.0)
        client = make_client(config, session)
        auth = {"Authorization": aiohttp.encode_basic_auth(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)}

        async def official(n: int) -> None:
            message = await client.messages.create_async(to=f"+86138{n:08d}", from_=DEMO_FROM, body=BODY,
                                                         status_callback=callback)
            assert message.sid

        async def bare(n: int) -> None:
            form = {"To": f"+86139{n:08d}", "From": DEMO_FROM, "Body": BODY, "StatusCallback": callback}
            async with session.post(messages_url, data=form, headers=auth) as response:
                assert response.status == 201, await response.text()
                assert (await response.json())["sid"]

        await drive(bare, min(200, args.messages), args.concurrency)  # warm the connection pool
        rates: dict[str, list[float]] = {"official": [], "bare_aiohttp": []}
        cpu: dict[str, list[float]] = {"official": [], "bare_aiohttp": []}
        for _ in range(args.runs):
            for name, send in (("official", official), ("bare_aiohttp", bare)):
                rate, cpu_ms = await drive(send, args.messages, args.concurrency)
                rates[name].append(rate)
                cpu[name].append(cpu_ms)
    rate_of = {name: statistics.median(values) for name, values in rates.items()}
    cpu_of = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "messages_per_run": args.messages, "concurrency": args.concurrency, "latency_ms": args.latency_ms,
        "runs": args.runs, "ceiling_per_second": round(args.concurrency / (args.latency_ms / 1000), 1),
        "official_per_second": round(rate_of["official"], 1),
        "bare_aiohttp_per_second": round(rate_of["bare_aiohttp"], 1),
        "official_over_bare": round(rate_of["official"] / rate_of["bare_aiohttp"], 3),
        "client_cpu_ms_per_message": {name: round(v, 3) for name, v in cpu_of.items()},
        "client_cpu_official_over_bare": round(cpu_of["official"] / cpu_of["bare_aiohttp"], 2),
        "all_runs": {name: [round(v, 1) for v in values] for name, values in rates.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "perf" / "results")
    args = parser.parse_args()
    port = free_port()
    simulator = subprocess.Popen([sys.executable, "-c", SIMULATOR, str(port)], cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/_sim/faults", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or simulator.poll() is not None:
                    raise RuntimeError("the Twilio simulator did not start") from None
                time.sleep(0.2)
        request = urllib.request.Request(f"{base}/_sim/faults", method="PUT",
                                         data=json.dumps({"latency_ms": args.latency_ms}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()
        result = asyncio.run(run(args, base))
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    print(json.dumps(result))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"twilio-client-c{args.concurrency}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
