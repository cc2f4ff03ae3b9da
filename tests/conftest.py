"""Shared fixtures: one real redis-server per test session, flushed before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from broadcast.redis_pipelined import PipelinedRedis
from broadcast.redis_server import RedisServerConfig, free_port, start_redis, stop_redis
from broadcast.settings import Settings, load_settings
from broadcast.users import UserDirectory, parse_roles

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = start_redis(RedisServerConfig(port=port, data_dir=tmp_path_factory.mktemp("redis")))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_redis(process)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def pipe(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[PipelinedRedis]:
    """A pipelined connection to the flushed test Redis (``redis_client`` does the flushing)."""
    connection = PipelinedRedis(redis_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data folder {SHARED_DATA} is absent (it lies beside the repository)")
    return SHARED_DATA


# ---------------------------------------------------------------- the service

PEOPLE: dict[str, tuple[str, ...]] = {
    "alice": ("forecaster",),
    "fiona": ("forecaster",),
    "bob": ("approver",),
    "carol": ("approver",),
    "dual": ("forecaster", "approver"),
    "dave": ("officer",),
    "erin": ("ops",),
    "root": ("admin",),
}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the tests: registry snapshots are content-addressed and immutable, so they can be."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def settings(redis_url: str, data_dir: Path) -> Settings:
    return load_settings({"REDIS_URL": redis_url, "BROADCAST_DATA_DIR": str(data_dir)})


@pytest.fixture
def tokens(redis_client: redis.Redis) -> dict[str, str]:
    """One user per role (and two forecasters, two approvers, one with both roles): name -> token."""
    directory = UserDirectory(redis_client)
    return {name: directory.add(name, parse_roles(list(roles))) for name, roles in PEOPLE.items()}


@pytest.fixture
def auth(tokens: dict[str, str]) -> dict[str, dict[str, str]]:
    """name -> request headers carrying that user's bearer token."""
    return {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}


@pytest.fixture
async def client(settings: Settings, tokens: dict[str, str], aiohttp_client):  # type: ignore[no-untyped-def]
    from broadcast.api import create_app

    return await aiohttp_client(create_app(settings))



# ---------------------------------------------------------------- target registries

DEMO_SUBSCRIBERS = 30_000


@pytest.fixture(scope="session")
def demo_registry_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Demo subscribers and facilities over the demo gazetteer, generated once per test session."""
    from geotarget import build_demo_gazetteer
    from geotarget.facilities import generate_facilities
    from geotarget.subscribers import generate_subscribers

    root = tmp_path_factory.mktemp("registries")
    gazetteer = build_demo_gazetteer()
    generate_facilities(gazetteer).save(root / "facilities")
    generate_subscribers(gazetteer, DEMO_SUBSCRIBERS, root / "subscribers", seed=7)
    return {"facilities": root / "facilities", "subscribers": root / "subscribers"}


@pytest.fixture
def published_targets(settings: Settings, redis_client: redis.Redis, demo_registry_dirs: dict[str, Path]):  # type: ignore[no-untyped-def]
    """The demo registries published as current snapshots for this test's service."""
    import shutil

    from geotarget.registry import RegistryStore, TargetCache

    store = RegistryStore(redis_client, settings.data_dir)
    for kind, source in demo_registry_dirs.items():
        store.publish(kind, lambda d, s=source: shutil.copytree(s, d, dirs_exist_ok=True))
    return TargetCache(store)


# ---------------------------------------------------------------- channels


@pytest.fixture
async def channel_context(settings: Settings, redis_url: str):  # type: ignore[no-untyped-def]
    """A ChannelContext with a real aiohttp session and a real (async) Redis client."""
    import aiohttp
    import redis.asyncio

    from channels.base import ChannelContext

    async with aiohttp.ClientSession() as http:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            yield ChannelContext(settings, http, client)
        finally:
            await client.aclose()


def sample_alert(level: str = "red", hazard: str = "rainstorm"):  # type: ignore[no-untyped-def]
    """A composed zh-CN + en alert over Futian, and its signal (for channel tests)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from broadcast.compose import compose
    from broadcast.signals import load_catalogue

    composed = compose({"signal": {"hazard": hazard, "level": level},
                        "areas": [{"desc": {"zh-CN": "福田区", "en": "Futian"}, "geocodes": ["440304"]}]},
                       settings=Settings(), catalogue=load_catalogue(), identifier="SZMB-TEST-1",
                       sent=datetime.now(ZoneInfo("Asia/Shanghai")).replace(microsecond=0))
    return composed.alert, composed.signal


def sample_message(channel: str, **kwargs):  # type: ignore[no-untyped-def]
    """sample_alert() rendered for ``channel`` in zh-CN and en (templates/<channel>/)."""
    from broadcast.cap import to_xml
    from broadcast.render import build_message

    alert, signal = sample_alert(**kwargs)
    return build_message(channel, "20260701-080000-abcdef", alert, signal=signal, timezone="Asia/Shanghai",
                         cap_xml=to_xml(alert))
