"""Registry snapshots: published atomically, content-addressed, checked, and picked up by every process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis

from broadcast import keys
from broadcast.errors import InvalidInput
from geotarget import build_demo_gazetteer
from geotarget.importer import import_file
from geotarget.registry import RegistryStore, TargetCache, publish_gazetteer


@pytest.fixture
def store(redis_client: redis.Redis, tmp_path: Path) -> RegistryStore:
    return RegistryStore(redis_client, tmp_path / "data")


def test_without_snapshots_the_demo_gazetteer_is_current_and_registries_are_empty(store) -> None:
    targets = TargetCache(store).get()
    assert targets.gazetteer is build_demo_gazetteer()
    assert targets.subscribers is None and targets.facilities is None and targets.versions == {}


def test_publishing_is_content_addressed_and_idempotent(store, demo_registry_dirs) -> None:
    def copy(directory: Path) -> None:
        shutil.copytree(demo_registry_dirs["facilities"], directory, dirs_exist_ok=True)

    first = store.publish("facilities", copy)
    second = store.publish("facilities", copy)
    assert first == second
    assert store.current_versions() == {"facilities": first}
    assert sorted(p.name for p in (store.root / "facilities").iterdir()) == [first]


def test_a_failed_publish_changes_nothing(store) -> None:
    def broken(directory: Path) -> None:
        (directory / "half-written").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.publish("subscribers", broken)
    assert store.current_versions() == {}
    assert list((store.root / "subscribers").iterdir()) == []


def test_unknown_kind_is_refused(store) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.publish("pigeons", lambda d: None)
    assert caught.value.field == "kind"


def test_every_process_picks_up_a_new_gazetteer_without_restart(store, redis_client, shared_data) -> None:
    api_side, worker_side = TargetCache(store), TargetCache(RegistryStore(redis_client, store.root.parent))
    assert len(api_side.get().gazetteer.units_at("district")) == 10
    result = import_file(build_demo_gazetteer(), shared_data / "shenzhen-districts.geojson", "district")
    version = publish_gazetteer(store, result.gazetteer)
    for cache in (api_side, worker_side):
        targets = cache.get()
        assert targets.versions == {"gazetteer": version}
        assert len(targets.gazetteer.units_at("district")) == 9
        assert targets.gazetteer.locate(114.0579, 22.5431, "district").code == "440304"
    store.reset("gazetteer")
    assert len(api_side.get().gazetteer.units_at("district")) == 10


def test_a_snapshot_that_differs_from_its_manifest_is_refused(store, redis_client, demo_registry_dirs) -> None:
    version = store.publish("facilities", lambda d: shutil.copytree(demo_registry_dirs["facilities"], d,
                                                                    dirs_exist_ok=True))
    directory = store.directory("facilities", version)
    assert store.locate("facilities", version, full_check=True) == directory
    # A changed byte passes the quick check (sizes and manifest) but not the full one.
    path = directory / "stations.geojson"
    data = bytearray(path.read_bytes())
    data[-2] = ord(" ") if data[-2] != ord(" ") else ord("\n")
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="sha256"):
        store.locate("facilities", version, full_check=True)
    # A missing file, or a manifest that is not the one published, fails even the quick check.
    (directory / "screens.geojson").unlink()
    with pytest.raises(InvalidInput, match="differs from its manifest"):
        store.locate("facilities", version)
    manifest = json.loads(redis_client.hget(keys.REGISTRY_MANIFESTS, f"facilities:{version}"))
    assert "screens.geojson" in manifest["files"]


def test_recent_targets_skip_the_version_read_within_max_age(store, redis_client: redis.Redis,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache, reads = TargetCache(store), []
    real = store.current_versions
    monkeypatch.setattr(store, "current_versions", lambda: reads.append(1) or real())
    first = cache.recent(60.0)
    assert cache.recent(60.0) is first and len(reads) == 1
    assert cache.recent(0.0) is first and len(reads) == 2
