"""Where the gazetteer and the target registries live, and how every process gets the current ones.

Each registry kind (``gazetteer``, ``subscribers``, ``facilities``) is published as an
immutable *snapshot*: a directory ``<data_dir>/registry/<kind>/<version>/`` written once
(to a temporary directory, then renamed) with a ``published.json`` giving the sha256 of
every file. Redis holds which version of each kind is current (hash
``bc:registry:current``) and each version's manifest, so:

- **the snapshot files are authoritative** for the data (17.8 million subscribers do not
  belong in Redis memory), and Redis is authoritative for *which* snapshot is current;
- a process (API or worker) loads the current snapshots once and, on each use, checks the
  version hash in Redis (one HGETALL) and reloads a kind only when a new version appears;
- workers on other machines read the same ``data_dir`` from shared storage, or copy a
  snapshot directory before it is published there (snapshots never change, so a copy
  checked against the manifest in Redis is as good as the original).

With no gazetteer published, the built-in demo gazetteer of Shenzhen is current.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from broadcast import keys
from broadcast.errors import InvalidInput
from geotarget.demo import build_demo_gazetteer
from geotarget.facilities import FacilityRegistry
from geotarget.gazetteer import Gazetteer
from geotarget.subscribers import SubscriberSnapshot

KINDS = ("gazetteer", "subscribers", "facilities")
GAZETTEER_FILE = "gazetteer.geojson"
MANIFEST = "published.json"


def file_digests(directory: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
            digests[str(path.relative_to(directory))] = digest.hexdigest()
    return digests


class RegistryStore:
    """Publishes snapshots and says which ones are current."""

    def __init__(self, client: redis.Redis, data_dir: Path) -> None:
        self.redis = client
        self.root = data_dir / "registry"

    def publish(self, kind: str, write: Callable[[Path], Any], *, note: str = "") -> str:
        """Write a new snapshot of ``kind`` with ``write(directory)`` and make it current.

        Nothing becomes current if ``write`` raises: the temporary directory is removed.
        """
        if kind not in KINDS:
            raise InvalidInput(f"unknown registry {kind!r}; registries are {', '.join(KINDS)}", field="kind")
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root / kind))
        try:
            write(staging)
            digests = file_digests(staging)
            # Content-addressed: publishing the same data twice yields the same version.
            version = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
            manifest = {"kind": kind, "version": version, "files": digests}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            final = self.root / kind / version
            if final.exists():
                shutil.rmtree(staging)
            else:
                staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        with self.redis.pipeline() as pipe:
            pipe.hset(keys.REGISTRY_MANIFESTS, f"{kind}:{version}", json.dumps(manifest))
            pipe.hset(keys.REGISTRY_HISTORY, f"{kind}:{version}",
                      json.dumps({"published": datetime.now(UTC).isoformat(), "note": note}))
            pipe.hset(keys.REGISTRY_CURRENT, kind, version)
            pipe.execute()
        return version

    def reset(self, kind: str) -> None:
        """Make no snapshot of ``kind`` current (the demo gazetteer, or no registry); files stay."""
        self.redis.hdel(keys.REGISTRY_CURRENT, kind)

    def current_versions(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.REGISTRY_CURRENT).items()}

    def directory(self, kind: str, version: str) -> Path:
        return self.root / kind / version

    def locate(self, kind: str, version: str, *, full_check: bool = False) -> Path:
        """The snapshot directory, checked against the manifest published in Redis.

        The quick check (every load) compares the manifest file and the file sizes; the full
        check (``broadcast registry verify``) recomputes every sha256, which for 17.8 million
        subscribers reads a few GB.

        Raises:
            InvalidInput: the snapshot is missing here or differs from what was published.
        """
        directory = self.directory(kind, version)
        raw = self.redis.hget(keys.REGISTRY_MANIFESTS, f"{kind}:{version}")
        if raw is None or not (directory / MANIFEST).is_file():
            raise InvalidInput(f"snapshot {kind}/{version} is not available under {self.root}", field=kind)
        published = json.loads(raw)
        local = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()} - {MANIFEST}
        if local != published or present != set(published["files"]):
            raise InvalidInput(f"snapshot {kind}/{version} under {self.root} differs from its manifest", field=kind)
        if full_check and file_digests(directory) != published["files"]:
            raise InvalidInput(f"snapshot {kind}/{version} under {self.root} fails its sha256 check", field=kind)
        return directory


@dataclass(frozen=True, slots=True)
class Targets:
    """Everything resolution needs, as of one set of snapshot versions (None: not published yet)."""

    gazetteer: Gazetteer
    subscribers: SubscriberSnapshot | None
    facilities: FacilityRegistry | None
    versions: dict[str, str]


class TargetCache:
    """The current Targets for this process, reloaded when a new snapshot is published."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._targets: Targets | None = None
        self._checked_at = float("-inf")  # time.monotonic() of the last look at the current versions

    def get(self) -> Targets:
        versions = self.store.current_versions()
        with self._lock:
            if self._targets is None or self._targets.versions != versions:
                self._targets = self._load(versions)
            self._checked_at = time.monotonic()
            return self._targets

    def recent(self, max_age: float) -> Targets:
        """The current Targets as of at most ``max_age`` seconds ago: no Redis read when checked since.

        For hot request paths that only look units up (a publish is rare and may show a second late).
        """
        with self._lock:
            if self._targets is not None and time.monotonic() - self._checked_at < max_age:
                return self._targets
        return self.get()

    def at(self, versions: dict[str, str]) -> Targets:
        """The Targets of given snapshot versions (a fan-out pins the versions it started with)."""
        current = self.get()
        return current if current.versions == versions else self._load(versions)

    def _load(self, versions: dict[str, str]) -> Targets:
        previous = self._targets

        def unchanged(kind: str) -> bool:
            return previous is not None and previous.versions.get(kind) == versions.get(kind)

        def directory(kind: str) -> Path:
            return self.store.locate(kind, versions[kind])

        if unchanged("gazetteer") and previous is not None:
            gazetteer = previous.gazetteer
        elif "gazetteer" in versions:
            gazetteer = _read_gazetteer(directory("gazetteer"))
        else:
            gazetteer = build_demo_gazetteer()
        if unchanged("subscribers") and previous is not None:
            subscribers = previous.subscribers
        else:
            subscribers = _open_subscribers(directory("subscribers")) if "subscribers" in versions else None
        if unchanged("facilities") and previous is not None:
            facilities = previous.facilities
        else:
            facilities = _read_facilities(directory("facilities")) if "facilities" in versions else None
        return Targets(gazetteer, subscribers, facilities, versions)


# Snapshots never change once published, so a process may keep what it read of one; the
# caches are keyed by the snapshot's directory and hold only the last few.
@functools.lru_cache(maxsize=4)
def _read_gazetteer(directory: Path) -> Gazetteer:
    return Gazetteer.read_geojson(directory / GAZETTEER_FILE)


@functools.lru_cache(maxsize=4)
def _open_subscribers(directory: Path) -> SubscriberSnapshot:
    return SubscriberSnapshot.open(directory, verify=False)


@functools.lru_cache(maxsize=4)
def _read_facilities(directory: Path) -> FacilityRegistry:
    return FacilityRegistry.load(directory)


def publish_gazetteer(store: RegistryStore, gazetteer: Gazetteer, note: str = "") -> str:
    return store.publish("gazetteer", lambda d: gazetteer.write_geojson(d / GAZETTEER_FILE), note=note)
