"""In-memory and on-disk caches of computed arrays: round trips, LRU eviction, corrupt entries."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from protolens.core import cache as cache_module
from protolens.core.cache import DiskCache, MemoryCache, default_cache_dir
from protolens.core.hashing import sha256_json


def _key(name: str) -> str:
    return sha256_json({"name": name})


# --------------------------------------------------------------------------- MemoryCache


def test_memory_cache_get_put():
    cache: MemoryCache[np.ndarray] = MemoryCache(capacity=4)
    value = np.arange(6.0)
    cache.put("a", value)
    assert cache.get("a") is value
    assert cache.get("missing") is None
    assert "a" in cache and "missing" not in cache
    assert len(cache) == 1


def test_memory_cache_evicts_least_recently_used():
    cache: MemoryCache[int] = MemoryCache(capacity=3)
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert cache.get("a") == 0  # 'a' is now the most recently used, 'b' the least
    cache.put("d", 3)
    assert len(cache) == 3
    assert "b" not in cache
    assert [cache.get(k) for k in "acd"] == [0, 2, 3]
    cache.put("e", 4)  # after the reads above, 'a' is the least recently used
    assert "a" not in cache and {"c", "d", "e"} == {k for k in "abcde" if k in cache}


def test_memory_cache_put_existing_key_refreshes_and_replaces():
    cache: MemoryCache[str] = MemoryCache(capacity=2)
    cache.put("a", "old")
    cache.put("b", "b")
    cache.put("a", "new")  # 'a' becomes most recent
    cache.put("c", "c")
    assert cache.get("a") == "new" and "b" not in cache and len(cache) == 2


def test_memory_cache_is_thread_safe():
    cache: MemoryCache[int] = MemoryCache(capacity=50)

    def work(offset: int) -> None:
        for i in range(500):
            cache.put(f"{offset}-{i % 80}", i)
            cache.get(f"{offset}-{(i * 7) % 80}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


# --------------------------------------------------------------------------- DiskCache


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


def test_disk_cache_round_trip(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    key = _key("robin")
    heatmap = np.random.default_rng(0).random((23, 37)).astype(np.float32)
    heads = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    meta = {"backend": "vit-attention", "grid": [23, 37], "threshold": 0.5, "note": "émoji ✓"}
    cache.put(key, {"heatmap": heatmap, "heads": heads}, meta)
    assert (tmp_path / "cache" / key[:2] / f"{key}.npz").is_file()

    found = cache.get(key)
    assert found is not None
    arrays, got_meta = found
    assert set(arrays) == {"heatmap", "heads"}
    np.testing.assert_array_equal(arrays["heatmap"], heatmap)
    assert arrays["heatmap"].dtype == np.float32
    np.testing.assert_array_equal(arrays["heads"], heads)
    assert arrays["heads"].dtype == np.int16 and arrays["heads"].shape == (2, 3, 4)
    assert got_meta == meta


def test_disk_cache_miss_and_overwrite(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    assert cache.get(_key("nothing")) is None  # folder does not even exist yet
    key = _key("x")
    cache.put(key, {"a": np.zeros(3)})
    cache.put(key, {"a": np.ones(3)}, {"v": 2})
    arrays, meta = cache.get(key)
    np.testing.assert_array_equal(arrays["a"], np.ones(3))
    assert meta == {"v": 2}
    assert cache.get(key)[1] == {"v": 2}
    assert DiskCache(tmp_path / "cache").get(key) is not None  # persistent across instances


def test_disk_cache_without_meta(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put(_key("m"), {"a": np.zeros((2, 2))})
    assert cache.get(_key("m"))[1] == {}


def _entry_size(tmp_path: Path) -> int:
    probe = DiskCache(tmp_path / "probe")
    probe.put(_key("probe"), {"v": np.zeros(4096, np.float32)}, {"i": 0})
    return probe.size_bytes()


def test_disk_cache_evicts_least_recently_used_by_size(tmp_path):
    size = _entry_size(tmp_path)
    cache = DiskCache(tmp_path / "cache", max_bytes=3 * size + size // 2)  # room for three entries
    keys = [_key(f"entry{i}") for i in range(4)]
    now = time.time()
    for i, key in enumerate(keys[:3]):
        cache.put(key, {"v": np.full(4096, i, np.float32)}, {"i": i})
        path = cache._path(key)
        os.utime(path, (now - 1000 + 100 * i, now - 1000 + 100 * i))  # entry0 oldest ... entry2 newest
    assert cache.size_bytes() == 3 * size

    # Reading entry0 makes it the most recently used, so entry1 is now the oldest.
    assert cache.get(keys[0])[1] == {"i": 0}
    cache.put(keys[3], {"v": np.full(4096, 3, np.float32)}, {"i": 3})

    assert cache.get(keys[1]) is None
    assert cache.size_bytes() <= cache.max_bytes
    for i in (0, 2, 3):
        arrays, meta = cache.get(keys[i])
        assert meta == {"i": i} and arrays["v"][0] == i


def test_disk_cache_evicts_several_oldest_when_needed(tmp_path):
    size = _entry_size(tmp_path)
    cache = DiskCache(tmp_path / "cache", max_bytes=10 * size)
    keys = [_key(f"k{i}") for i in range(5)]
    now = time.time()
    for i, key in enumerate(keys):
        cache.put(key, {"v": np.zeros(4096, np.float32)}, {"i": i})
        os.utime(cache._path(key), (now - 500 + 10 * i, now - 500 + 10 * i))
    cache.max_bytes = 2 * size
    cache.evict()
    assert [cache.get(k) is not None for k in keys] == [False, False, False, True, True]


def test_disk_cache_under_cap_keeps_everything(tmp_path):
    cache = DiskCache(tmp_path / "cache", max_bytes=10**7)
    keys = [_key(str(i)) for i in range(5)]
    for key in keys:
        cache.put(key, {"v": np.zeros(100)})
    assert all(cache.get(k) is not None for k in keys)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_corrupt_entry_is_a_miss_and_is_deleted(tmp_path, damage):
    cache = DiskCache(tmp_path / "cache")
    key = _key("damaged")
    cache.put(key, {"v": np.arange(2000, dtype=np.float64)}, {"ok": True})
    path = cache._path(key)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"definitely not an npz file" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        broken = bytearray(data)
        broken[200:260] = b"\x00" * 60  # inside the array data: the zip CRC no longer matches
        path.write_bytes(bytes(broken))
    else:
        path.write_bytes(b"")
    assert cache.get(key) is None
    assert not path.exists()
    # The entry can be computed again and cached afresh.
    cache.put(key, {"v": np.ones(3)}, {"ok": True})
    assert cache.get(key)[1] == {"ok": True}


def test_entry_without_meta_is_a_miss(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    key = _key("no-meta")
    path = cache._path(key)
    path.parent.mkdir(parents=True)
    np.savez(path, v=np.zeros(3))
    assert cache.get(key) is None
    assert not path.exists()


def test_failed_write_is_silent(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path / "cache")
    key = _key("disk-full")
    cache.put(key, {"v": np.zeros(3)}, {"version": 1})

    def full(*_args, **_kwargs):
        from protolens.core.errors import StoreWriteError

        raise StoreWriteError("cannot write: the disk is full")

    monkeypatch.setattr(cache_module, "write_bytes_atomic", full)
    cache.put(key, {"v": np.ones(3)}, {"version": 2})  # no exception: the cache is only an optimisation
    assert cache.get(key)[1] == {"version": 1}


def test_pickled_objects_are_refused(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    key = _key("pickle")
    path = cache._path(key)
    path.parent.mkdir(parents=True)
    np.savez(path, v=np.array([{"evil": 1}], dtype=object),
             __meta__=np.frombuffer(b"{}", np.uint8))
    assert cache.get(key) is None
