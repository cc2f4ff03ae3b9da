"""API CPU per acknowledgement: 875 units acknowledge each alert of a linkage setup in turn, one API process.

    perf/run_bench_acknowledge.sh [alerts=3] [repo=.]    # repo: another checkout to compare with

Alert 1: every officer's token is new to the API; alert 2: seen (the API holds checked tokens 10 s);
from alert 3 on, 8 requests at a time. Prints, per alert, the API process's CPU milliseconds (from
/proc, user + system) and the wall milliseconds per acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def acknowledge_all(session: aiohttp.ClientSession, base: str, alert: str, officers: list[dict[str, str]],
                          concurrency: int) -> int:
    waiting, ok = list(officers), 0

    async def officer() -> None:
        nonlocal ok
        while waiting:
            entry = waiting.pop()
            unit, token = entry["unit"], entry["token"]
            async with session.post(f"{base}/api/alerts/{alert}/linkage/{unit}/acknowledge",
                                    json={"status": "received", "note": ""},
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                ok += response.status == 200

    await asyncio.gather(*(officer() for _ in range(concurrency)))
    return ok


async def run(setup: dict[str, Any], api_pid: int, base: str) -> None:
    officers = setup["officers"]
    async with aiohttp.ClientSession() as session:
        for number, alert in enumerate(setup["alerts"], start=1):
            concurrency = 1 if number < 3 else 8
            cpu, start = cpu_seconds(api_pid), time.perf_counter()
            ok = await acknowledge_all(session, base, alert, officers, concurrency)
            cpu, wall = cpu_seconds(api_pid) - cpu, time.perf_counter() - start
            tokens = "tokens new" if number == 1 else "tokens seen"
            print(f"alert {number} ({tokens}, {concurrency} at a time): {ok}/{len(officers)} ok, "
                  f"API CPU {1000 * cpu / len(officers):.2f} ms/ack, wall {1000 * wall / len(officers):.2f} ms/ack, "
                  f"{len(officers) / wall:.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", type=Path, required=True, help="perf/linkage_setup.py's output")
    parser.add_argument("--api-pid", type=int, required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    asyncio.run(run(json.loads(args.setup.read_text()), args.api_pid, args.url))


if __name__ == "__main__":
    main()
