"""``broadcast up``: the whole local stack in the foreground, stopped together on Ctrl-C.

It starts its own redis-server when ``REDIS_URL`` is unset (data under
``<data_dir>/redis``, AOF on), then the API and the workers as child processes, restarts
a child that dies, and on SIGINT/SIGTERM stops the children before Redis so that
nothing is left running. The channel simulators (``broadcast sim``) run as one more child
unless ``--no-sim``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from broadcast.redis_server import RedisServerConfig, start_redis, stop_redis
from broadcast.settings import Settings

RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env)


def _children(settings: Settings, workers: int, simulators: bool) -> list[Child]:
    base = [sys.executable, "-m", "broadcast"]
    children = [Child("api", [*base, "serve"])]
    if simulators:
        children.append(Child("simulators", [*base, "sim"]))
    for index in range(workers):
        argv = [*base, "worker", "--name", f"{os.uname().nodename}-worker-{index + 1}-{os.getpid()}"]
        if index > 0:
            argv.append("--no-scheduler")
        children.append(Child(f"worker-{index + 1}", argv))
    return children


def wait_healthy(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def ensure_demo_registries(settings: Settings) -> None:
    """Publish demo subscribers and facilities over the current gazetteer, a demo duty roster, and a demo
    webhook partner pointing at the webhook simulator, unless some exist."""
    import redis

    from broadcast import keys
    from broadcast.roster import RosterStore, demo_roster
    from channels.webhook import demo_partner
    from geotarget.facilities import generate_facilities
    from geotarget.registry import RegistryStore, TargetCache
    from geotarget.subscribers import generate_subscribers

    store = RegistryStore(redis.Redis.from_url(settings.effective_redis_url), settings.data_dir)
    current = store.current_versions()
    gazetteer = TargetCache(store).get().gazetteer
    if "facilities" not in current:
        store.publish("facilities", lambda d: generate_facilities(gazetteer).save(d), note="demo")
        print("generated the demo facilities (cells, screens, stations, loudspeakers)", flush=True)
    if "subscribers" not in current:
        count = settings.demo_subscribers
        store.publish("subscribers", lambda d: generate_subscribers(gazetteer, count, d, overwrite=True),
                      note=f"demo: {count} generated")
        print(f"generated {count} demo subscribers", flush=True)
    roster = RosterStore(store.redis, settings.timezone)
    if not roster.exists():
        count = roster.replace(demo_roster(gazetteer), source="demo")
        print(f"generated the demo duty roster ({count} officers)", flush=True)
    if not store.redis.hlen(keys.WEBHOOK_PARTNERS):
        partner = demo_partner(settings)
        store.redis.hset(keys.WEBHOOK_PARTNERS, partner.id, partner.to_json())
        print(f"registered the demo webhook partner {partner.id} ({partner.url})", flush=True)


def run_stack(settings: Settings, workers: int | None = None, *, simulators: bool = True) -> int:
    """Start everything, supervise until a stop signal, stop everything. Returns the exit code."""
    stop = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    redis_process = None
    if settings.redis_url is None:
        data_dir = settings.data_dir / "redis"
        redis_process = start_redis(RedisServerConfig(port=settings.local_redis_port, data_dir=data_dir))
        print(f"redis-server on 127.0.0.1:{settings.local_redis_port}, data in {data_dir}", flush=True)
    ensure_demo_registries(settings)
    env = {**os.environ, "REDIS_URL": settings.effective_redis_url}
    children = _children(settings, workers or settings.workers, simulators)
    try:
        for child in children:
            child.start(env)
        if wait_healthy(settings.base_url, 30):
            count = sum(1 for c in children if c.name.startswith("worker"))
            sims = f", simulators from port {settings.sim_base_port + 1}" if simulators else ""
            print(f"broadcast service ready at {settings.base_url} ({count} workers{sims}); "
                  "Ctrl-C stops everything", flush=True)
        else:
            print(f"the API did not become healthy at {settings.base_url}/healthz", file=sys.stderr, flush=True)
        while not stop:
            _supervise(children, env)
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if redis_process is not None:
            stop_redis(redis_process)
        print("stopped", flush=True)
    return 0


def _supervise(children: list[Child], env: dict[str, str]) -> None:
    now = time.monotonic()
    for child in children:
        process = child.process
        if process is None or process.poll() is None:
            if process is None and now >= child.next_start:
                child.start(env)
            continue
        delay = RESTART_BACKOFF_SECONDS[min(child.restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
        print(f"{child.name} exited with {process.returncode}; restarting in {delay}s", file=sys.stderr, flush=True)
        child.restarts += 1
        child.process = None
        child.next_start = now + delay


def _stop_children(children: list[Child]) -> None:
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
