"""Running our own ``redis-server`` process: for ``broadcast up`` without ``REDIS_URL`` and for tests.

The server listens on loopback only, keeps its data under one folder and has AOF
persistence on, so an issued alert and its audit trail survive a restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

PR_SET_PDEATHSIG = 1


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


@dataclass(frozen=True, slots=True)
class RedisServerConfig:
    port: int
    data_dir: Path
    appendfsync: str = "everysec"
    maxmemory: str | None = None

    def lines(self) -> list[str]:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.data_dir.resolve()}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            "protected-mode yes",
            "daemonize no",
            "save 900 1 300 100 60 10000",
            f"logfile {(self.data_dir / 'redis.log').resolve()}",
        ]
        if self.maxmemory:
            lines.append(f"maxmemory {self.maxmemory}")
        return lines


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int = 16) -> int:
    """A base port ``b`` with ``b + 1`` .. ``b + count`` all free on 127.0.0.1 (the simulators'
    ports), below the kernel's range of ephemeral ports: there, only another listener can take
    one of them before they are used, never the local end of some outgoing connection.

    Raises:
        RuntimeError: no such run was found.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = low - count - 1 if low - count - 1 > 10_000 else 60_000
    for _ in range(200):
        base = random.randrange(10_000, top)
        try:
            for offset in range(1, count + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no run of {count} free ports on 127.0.0.1")


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up here, not in the child: loading a library between fork and exec can deadlock.
_PRCTL = _libc_prctl()


def _end_with(parent: int) -> None:
    """In the child before exec: SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG),
    or at once if the parent has ended already."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def start_redis(config: RedisServerConfig, *, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start redis-server with ``config`` and wait until it answers PING.

    Raises:
        RedisServerError: the binary is missing, or the server did not answer in time.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerError("redis-server is not installed (Debian package redis-server; run ops/setup)")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    conf_path = config.data_dir / "redis.conf"
    conf_path.write_text("\n".join(config.lines()) + "\n", encoding="utf-8")
    # In a session of its own, so a terminal's Ctrl-C (sent to the whole foreground group) does not
    # stop it under the processes still using it: whoever started it stops it last (stop_redis). Tied
    # to its starter's life instead (call this from the main thread: the tie is to the calling thread),
    # so a starter killed outright does not leave it running.
    process = subprocess.Popen([binary, str(conf_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True, preexec_fn=functools.partial(_end_with, os.getpid()))
    client = redis.Redis(host="127.0.0.1", port=config.port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RedisServerError(f"redis-server exited with {process.returncode}: {err.strip()}")
            try:
                if client.ping():
                    return process
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.05)
    finally:
        client.close()
    process.kill()
    raise RedisServerError(f"redis-server did not answer on port {config.port} within {timeout}s")


def stop_redis(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """Stop gracefully (SIGTERM makes redis flush its AOF), killing it if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
