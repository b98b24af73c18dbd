"""In-memory and on-disk caches of computed arrays: round trips, LRU eviction, caps, corrupt entries.

The two-process tests of the disk cache are in test_cache_processes.py."""

from __future__ import annotations

import errno
import io
import os
import pickle
import sqlite3
import threading

import diskcache
import numpy as np
import pytest

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


def test_memory_cache_byte_cap_evicts_least_recently_used():
    cache: MemoryCache[bytes] = MemoryCache(capacity=10, max_bytes=100, size_of=len)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.get("a") is not None  # 'b' is now the least recently used
    evicted = cache.put("c", b"x" * 30)  # 110 bytes > 100: one must go
    assert [key for key, _ in evicted] == ["b"]
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.size_bytes == 70


def test_memory_cache_keeps_the_newest_even_when_too_large():
    """cachetools refuses a value larger than its maxsize ("value too large"); the cache keeps it, alone."""
    cache: MemoryCache[bytes] = MemoryCache(capacity=10, max_bytes=100, size_of=len)
    cache.put("small", b"x" * 10)
    cache.put("zero", b"")
    evicted = cache.put("huge", b"x" * 250)
    assert {key for key, _ in evicted} == {"small", "zero"}
    assert len(cache) == 1 and cache.get("huge") == b"x" * 250
    assert cache.size_bytes == 250  # the real size, not the clamped one
    cache.put("next", b"x" * 5)  # the next entry pushes the oversized one out
    assert "huge" not in cache and cache.get("next") == b"x" * 5 and cache.size_bytes == 5


def test_memory_cache_count_and_byte_caps_together():
    cache: MemoryCache[bytes] = MemoryCache(capacity=2, max_bytes=1000, size_of=len)
    for key in "abc":
        cache.put(key, b"x")
    assert len(cache) == 2 and "a" not in cache
    assert cache.capacity == 2 and cache.max_bytes == 1000


def test_memory_cache_zero_capacity_still_keeps_the_newest():
    cache: MemoryCache[int] = MemoryCache(capacity=0)
    cache.put("a", 1)
    cache.put("b", 2)
    assert len(cache) == 1 and cache.get("b") == 2


def test_memory_cache_pop_and_clear():
    cache: MemoryCache[int] = MemoryCache(capacity=5, max_bytes=100, size_of=lambda v: v)
    for i, key in enumerate("abc"):
        cache.put(key, i + 1)
    assert cache.pop("b") == 2 and cache.pop("b") is None
    assert cache.size_bytes == 4
    assert cache.clear() == [1, 3]
    assert len(cache) == 0 and cache.size_bytes == 0


def test_memory_cache_byte_cap_is_thread_safe():
    cache: MemoryCache[bytes] = MemoryCache(capacity=1000, max_bytes=5000, size_of=len)

    def work(offset: int) -> None:
        for i in range(400):
            cache.put(f"{offset}-{i % 60}", b"x" * (10 + (i * 37) % 200))
            cache.get(f"{offset}-{(i * 7) % 60}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < cache.size_bytes <= 5000


# --------------------------------------------------------------------------- DiskCache


def _raw(cache: DiskCache) -> diskcache.Cache:
    """The cache folder opened as a plain diskcache.Cache (default Disk: it would unpickle), to tamper with."""
    return diskcache.Cache(str(cache.folder))


def _value_files(cache: DiskCache) -> list:
    return sorted(cache.folder.rglob("*.val"))


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


@pytest.mark.parametrize("shape", [(23, 37), (518, 518)], ids=["inline", "value-file"])
def test_disk_cache_round_trip(tmp_path, shape):
    cache = DiskCache(tmp_path / "cache")
    key = _key("robin")
    heatmap = np.random.default_rng(0).random(shape).astype(np.float32)
    heads = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    meta = {"backend": "vit-attention", "grid": list(shape), "threshold": 0.5, "note": "émoji ✓"}
    cache.put(key, {"heatmap": heatmap, "heads": heads}, meta)
    assert cache.size_bytes() > heatmap.nbytes

    found = DiskCache(tmp_path / "cache").get(key)  # another instance (another process would do the same)
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
    assert cache.get(_key("nothing")) is None
    assert cache.size_bytes() == 0
    assert not (tmp_path / "cache").exists()  # a read never creates the folder
    key = _key("x")
    cache.put(key, {"a": np.zeros(3)})
    cache.put(key, {"a": np.ones(3)}, {"v": 2})
    arrays, meta = cache.get(key)
    np.testing.assert_array_equal(arrays["a"], np.ones(3))
    assert meta == {"v": 2}
    assert cache.get(key)[1] == {"v": 2}
    assert DiskCache(tmp_path / "cache").get(key) is not None  # persistent across instances


def test_disk_cache_overwrite_of_a_value_file_leaves_one_file(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    key = _key("big")
    for i in range(3):
        cache.put(key, {"a": np.full(20000, i, np.float32)})
    assert len(_value_files(cache)) == 1
    assert cache.get(key)[0]["a"][0] == 2


def test_disk_cache_without_meta(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put(_key("m"), {"a": np.zeros((2, 2))})
    assert cache.get(_key("m"))[1] == {}


def test_disk_cache_pickles_as_its_folder_and_cap(tmp_path):
    cache = DiskCache(tmp_path / "cache", max_bytes=10**6 + 1)
    cache.put(_key("p"), {"a": np.arange(4)})
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.folder == cache.folder and copy.max_bytes == 10**6 + 1
    np.testing.assert_array_equal(copy.get(_key("p"))[0]["a"], np.arange(4))


ENTRY = 16384  # float32 values: 64 KiB per entry, stored in a value file (>= 32 KiB)


def _put(cache: DiskCache, name: str, value: float = 0.0, n: int = ENTRY) -> None:
    cache.put(_key(name), {"v": np.full(n, value, np.float32)}, {"name": name})


def _entry_bytes(tmp_path) -> int:
    probe = DiskCache(tmp_path / "probe")
    _put(probe, "first")
    before = probe.size_bytes()
    _put(probe, "second")
    return probe.size_bytes() - before


def test_disk_cache_evicts_least_recently_used_by_size(tmp_path):
    size = _entry_bytes(tmp_path)
    cache = DiskCache(tmp_path / "cache")
    for i in range(3):
        _put(cache, f"entry{i}", i)
    cache.max_bytes = cache.size_bytes() + size // 2  # room for three entries, not four

    # Reading entry0 (through another instance: recency is shared) makes entry1 the least recently used.
    assert DiskCache(tmp_path / "cache").get(_key("entry0"))[1] == {"name": "entry0"}
    _put(cache, "entry3", 3)

    assert cache.get(_key("entry1")) is None
    assert cache.size_bytes() <= cache.max_bytes
    for i in (0, 2, 3):
        arrays, meta = cache.get(_key(f"entry{i}"))
        assert meta == {"name": f"entry{i}"} and arrays["v"][0] == i


def test_disk_cache_cap_is_respected_after_every_write(tmp_path):
    size = _entry_bytes(tmp_path)
    cache = DiskCache(tmp_path / "cache", max_bytes=10 * size)
    rng = np.random.default_rng(3)
    for i in range(40):
        _put(cache, f"k{i}", i, n=int(rng.integers(ENTRY // 4, 3 * ENTRY)))  # 16 to 192 KiB
        assert cache.size_bytes() <= cache.max_bytes
    assert cache.get(_key("k39")) is not None  # the newest is kept
    assert cache.get(_key("k0")) is None


def test_disk_cache_evicts_the_least_recently_used_first_when_the_cap_drops(tmp_path):
    size = _entry_bytes(tmp_path)
    cache = DiskCache(tmp_path / "cache", max_bytes=100 * size)
    names = [f"k{i}" for i in range(30)]
    for name in names:
        _put(cache, name)
    for name in names[:5]:  # reading refreshes: k0..k4 become the most recently used
        assert cache.get(_key(name)) is not None
    order = names[5:] + names[:5]  # least to most recently used

    cache.max_bytes = 12 * size
    cache.evict()

    assert cache.size_bytes() <= cache.max_bytes
    kept = [cache.get(_key(name)) is not None for name in order]
    assert kept[-1] and sum(kept) >= 1
    assert kept == sorted(kept)  # never an older entry kept while a more recent one went


def test_disk_cache_under_cap_keeps_everything(tmp_path):
    cache = DiskCache(tmp_path / "cache", max_bytes=10**7)
    keys = [_key(str(i)) for i in range(5)]
    for key in keys:
        cache.put(key, {"v": np.zeros(100)})
    assert all(cache.get(k) is not None for k in keys)


def test_entry_larger_than_the_cap_is_not_stored_and_evicts_nothing(tmp_path):
    size = _entry_bytes(tmp_path)
    cache = DiskCache(tmp_path / "cache", max_bytes=4 * size)
    _put(cache, "small")
    _put(cache, "huge", n=8 * ENTRY)
    assert cache.get(_key("huge")) is None
    assert cache.get(_key("small")) is not None


def _damage(blob: bytes, damage: str) -> bytes:
    if damage == "garbage":
        return b"definitely not an npz file" * 10
    if damage == "truncated":
        return blob[: len(blob) // 2]
    if damage == "flipped":
        broken = bytearray(blob)
        broken[200:260] = b"\x00" * 60  # inside the array data: the zip CRC no longer matches
        return bytes(broken)
    return b""


@pytest.mark.parametrize("n", [2000, 20000], ids=["inline", "value-file"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_corrupt_entry_is_a_miss_and_is_deleted(tmp_path, damage, n):
    cache = DiskCache(tmp_path / "cache")
    key = _key("damaged")
    cache.put(key, {"v": np.arange(n, dtype=np.float64)}, {"ok": True})
    raw = _raw(cache)
    raw.set(key, _damage(raw.get(key), damage))
    assert cache.get(key) is None
    assert key not in raw
    # The entry can be computed again and cached afresh.
    cache.put(key, {"v": np.ones(3)}, {"ok": True})
    assert cache.get(key)[1] == {"ok": True}


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "deleted"])
def test_damaged_value_file_is_a_miss_and_is_deleted(tmp_path, damage):
    cache = DiskCache(tmp_path / "cache")
    key, other = _key("damaged"), _key("intact")
    cache.put(key, {"v": np.arange(20000, dtype=np.float64)}, {"ok": True})
    (path,) = _value_files(cache)
    cache.put(other, {"v": np.arange(20000, dtype=np.float64)}, {"ok": True})
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(_damage(path.read_bytes(), damage))
    assert cache.get(key) is None
    assert key not in _raw(cache) and not path.exists()
    assert cache.get(other)[1] == {"ok": True}


def test_entry_without_meta_is_a_miss(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    key = _key("no-meta")
    cache.put(_key("other"), {"v": np.zeros(1)})
    buffer = io.BytesIO()
    np.savez(buffer, v=np.zeros(3))
    _raw(cache).set(key, buffer.getvalue())
    assert cache.get(key) is None
    assert key not in _raw(cache)


class _Evil:
    """Unpickling this creates a directory: a stand-in for arbitrary code in a cache entry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("n", [1, 100000], ids=["inline", "value-file"])
def test_pickled_entries_are_never_unpickled(tmp_path, n):
    cache = DiskCache(tmp_path / "cache")
    cache.put(_key("other"), {"v": np.zeros(1)})
    marker = tmp_path / "code-ran"
    key = _key("pickle")
    _raw(cache).set(key, {"payload": _Evil(str(marker)), "padding": b"x" * n})  # diskcache pickles it
    assert cache.get(key) is None
    assert not marker.exists()
    assert key not in _raw(cache)


def test_object_arrays_are_refused(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    key = _key("object-array")
    cache.put(_key("other"), {"v": np.zeros(1)})
    buffer = io.BytesIO()
    np.savez(buffer, v=np.array([{"evil": 1}], dtype=object), __meta__=np.frombuffer(b"{}", np.uint8))
    _raw(cache).set(key, buffer.getvalue())
    assert cache.get(key) is None
    assert key not in _raw(cache)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   sqlite3.OperationalError("database or disk is full"),
                                   diskcache.Timeout("database is locked")])
def test_failed_write_is_silent(tmp_path, monkeypatch, error):
    cache = DiskCache(tmp_path / "cache")
    key = _key("disk-full")
    cache.put(key, {"v": np.zeros(3)}, {"version": 1})

    def full(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(diskcache.Cache, "set", full)
    cache.put(key, {"v": np.ones(3)}, {"version": 2})  # no exception: the cache is only an optimisation
    monkeypatch.undo()
    assert cache.get(key)[1] == {"version": 1}


def test_failed_value_file_write_is_silent_and_leaves_no_file(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path / "cache")
    cache.put(_key("small"), {"v": np.zeros(3)})

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diskcache.Disk, "_write", full)
    cache.put(_key("big"), {"v": np.zeros(100000)})
    monkeypatch.undo()
    assert cache.get(_key("big")) is None and cache.get(_key("small")) is not None
    assert _value_files(cache) == []


def test_unusable_cache_folder_means_misses_and_silent_writes(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache = DiskCache(blocker)
    cache.put(_key("a"), {"v": np.zeros(3)})
    assert cache.get(_key("a")) is None and cache.size_bytes() == 0
    cache.evict()


def test_corrupt_database_means_misses_and_silent_writes(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "cache.db").write_bytes(b"this is not an SQLite database" * 100)
    cache = DiskCache(folder)
    assert cache.get(_key("a")) is None
    cache.put(_key("a"), {"v": np.zeros(3)})
    assert cache.get(_key("a")) is None


def test_files_of_the_old_cache_layout_are_removed(tmp_path):
    folder = tmp_path / "cache"
    key = _key("legacy")
    legacy = folder / key[:2] / f"{key}.npz"
    legacy.parent.mkdir(parents=True)
    np.savez(legacy, v=np.zeros(3))
    unrelated = folder / "ab" / "notes.npz"
    unrelated.parent.mkdir()
    unrelated.write_bytes(b"not ours")
    cache = DiskCache(folder)
    cache.put(_key("new"), {"v": np.zeros(3)})
    assert not legacy.exists() and unrelated.exists()
    assert cache.get(key) is None


def test_disk_cache_is_thread_safe(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(30):
            name = f"{offset}-{i % 10}"
            cache.put(_key(name), {"v": np.full(5000 + 1000 * offset, i, np.float32)}, {"i": i})
            found = cache.get(_key(name))
            if found is None or found[1]["i"] != found[0]["v"][0]:
                errors.append(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(cache.get(_key(f"{n}-{j}")) is not None for n in range(4) for j in range(10))


def test_spurious_ast_error_of_threaded_numpy_is_retried_and_never_deletes(tmp_path, monkeypatch):
    """CPython 3.11's ast can raise SystemError when threads parse at once (numpy parses .npy headers)."""
    from protolens.core import atomic as atomic_module
    from protolens.core import cache as cache_module

    cache = DiskCache(tmp_path / "cache")
    key = _key("fine")
    cache.put(key, {"v": np.arange(5.0)}, {"ok": True})
    load, calls = np.load, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=36, after=30)")
        return load(*args, **kwargs)

    monkeypatch.setattr(atomic_module.np, "load", flaky)
    assert cache.get(key)[1] == {"ok": True} and len(calls) == 2
    monkeypatch.undo()

    def always(_blob):
        raise SystemError("AST constructor recursion depth mismatch (before=36, after=30)")

    monkeypatch.setattr(cache_module, "_decode", always)
    assert cache.get(key) is None
    monkeypatch.undo()
    assert cache.get(key)[1] == {"ok": True}  # still there
