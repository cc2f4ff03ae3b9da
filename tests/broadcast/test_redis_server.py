"""Our own redis-server (broadcast.redis_server): it outlives a terminal's Ctrl-C to its starter's
process group, so the processes using it can stop first, and it does not outlive a starter killed outright."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import redis

from broadcast.redis_server import free_port, free_port_run

ROOT = Path(__file__).resolve().parents[2]
STARTER = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from broadcast.redis_server import RedisServerConfig, start_redis
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the starter handles Ctrl-C itself, as `broadcast up` does
    process = start_redis(RedisServerConfig(port=int(sys.argv[1]), data_dir=Path(sys.argv[2])))
    print(process.pid, flush=True)
    time.sleep(120)
""")


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_redis_outlives_ctrl_c_to_the_group_and_ends_with_its_starter(tmp_path: Path) -> None:
    port = free_port()
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(port), str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert starter.stdout is not None
        redis_pid = int(starter.stdout.readline())
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        os.killpg(starter.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        time.sleep(0.5)
        assert client.ping()
        client.close()
        starter.kill()
        starter.wait(5)
        assert _gone(redis_pid, 5), "redis-server outlived the process that started it"
    finally:
        if starter.poll() is None:
            starter.kill()


def test_a_free_run_of_ports_lies_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    base = free_port_run(16)
    assert base >= 10_000 and base + 16 < low, (base, low)
    taken = socket.socket()
    taken.bind(("127.0.0.1", base + 16))  # each of them can be listened on now
    taken.close()
