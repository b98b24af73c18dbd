"""Size-capped caches for computed arrays: in memory (LRU by count and bytes) and on disk (LRU by bytes).

Keys are hex strings (use :func:`protolens.core.hashing.sha256_json` over the identifying parts:
image sha256, backend id and version, weights sha256, parameters).

The memory cache is a ``cachetools.LRUCache`` behind a lock; the disk cache is a ``diskcache.Cache``
(SQLite index + value files), which several processes (the GUI and a CLI batch, say) may read and write
at the same time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import cachetools
import diskcache
import numpy as np
from diskcache.core import DBNAME, MODE_BINARY, MODE_RAW

from protolens.core.atomic import load_npz_arrays

T = TypeVar("T")

DEFAULT_DISK_CACHE_BYTES = 2 * 1024**3
DISK_CACHE_TIMEOUT_S = 10.0
"""How long a disk-cache operation waits for another process's write before giving up (a miss, or no write)."""

_log = logging.getLogger(__name__)
_LEGACY_ENTRY = re.compile(r"[0-9a-f]{64}\.npz")


def default_cache_dir() -> Path:
    """``PROTOLENS_CACHE_DIR`` if set, else the platform's user cache folder for protolens."""
    env = os.environ.get("PROTOLENS_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("protolens", appauthor=False))


class _EvictionLog(cachetools.LRUCache):
    """A ``cachetools.LRUCache`` that remembers what it evicted (``popitem`` is its only way to evict)."""

    def __init__(self, maxsize: int, getsizeof: Callable[[Any], int] | None = None) -> None:
        super().__init__(maxsize, getsizeof)
        self.evicted: list[tuple[Any, Any]] = []

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self.evicted.append((key, value))
        return key, value


class MemoryCache(Generic[T]):
    """A thread-safe LRU mapping holding at most ``capacity`` entries and, if ``max_bytes`` is given,
    at most that many bytes as measured by ``size_of(value)``.

    Parameters
    ----------
    capacity : int
        Most entries kept (at least one is always kept).
    max_bytes : int, optional
        Most bytes kept, as summed over ``size_of``; None: no byte cap.
    size_of : callable, optional
        Size of a value in bytes (default: 0 for every value).

    Notes
    -----
    The newest entry is always kept, even when it alone is larger than ``max_bytes`` (it then evicts every
    other entry). ``cachetools`` itself refuses such a value (``ValueError("value too large")``), so its
    size is counted as ``max_bytes`` there; :attr:`size_bytes` reports the real sizes. Both caps are fixed
    at construction.
    """

    def __init__(self, capacity: int = 64, *, max_bytes: int | None = None,
                 size_of: Callable[[T], int] | None = None) -> None:
        self._capacity = max(int(capacity), 1)
        self._max_bytes = None if max_bytes is None else max(int(max_bytes), 0)
        self._size_of = size_of or (lambda _value: 0)
        # Entries are (value, size) pairs; cachetools weighs them by size (clamped), or by 1 without a byte cap.
        if self._max_bytes is None:
            self._items = _EvictionLog(self._capacity)
        else:
            cap = self._max_bytes
            self._items = _EvictionLog(cap, getsizeof=lambda item: min(item[1], cap))
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """Most entries kept."""
        return self._capacity

    @property
    def max_bytes(self) -> int | None:
        """Most bytes kept (None: no byte cap)."""
        return self._max_bytes

    def get(self, key: Hashable) -> T | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: Hashable, value: T) -> list[tuple[Hashable, T]]:
        """Store ``value`` under ``key`` as the most recently used entry.

        Returns
        -------
        list of (key, value)
            The entries evicted to make room, oldest first (a caller may release what they hold).
        """
        size = int(self._size_of(value))
        with self._lock:
            self._items.evicted = []
            if self._max_bytes is not None and size > self._max_bytes:
                while self._items:  # the newest is kept, alone
                    self._items.popitem()
            self._items[key] = (value, size)
            while len(self._items) > self._capacity:
                self._items.popitem()
            evicted, self._items.evicted = self._items.evicted, []
        return [(k, item[0]) for k, item in evicted]

    def pop(self, key: Hashable) -> T | None:
        """Remove and return the value under ``key``, or None."""
        with self._lock:
            item = self._items.pop(key, None)
        return None if item is None else item[0]

    def clear(self) -> list[T]:
        """Remove every entry; returns their values, least recently used first."""
        with self._lock:
            while self._items:
                self._items.popitem()
            evicted, self._items.evicted = self._items.evicted, []
        return [item[0] for _, item in evicted]

    def keys(self) -> list[Hashable]:
        """The keys held now (not in recency order; reading them does not refresh anything)."""
        with self._lock:
            return list(self._items.keys())

    @property
    def size_bytes(self) -> int:
        """Total measured size of the entries."""
        with self._lock:
            return sum(size for _, size in self._items.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class _UnreadableEntry(Exception):
    """A stored value that is not plain bytes, or whose value file is gone."""


_UNREADABLE = object()


class _BytesOnlyDisk(diskcache.Disk):
    """diskcache's storage narrowed to ``bytes`` values: nothing is ever pickled or unpickled."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if type(value) is not bytes:
            raise TypeError(f"the disk cache stores bytes, not {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if read or mode not in (MODE_RAW, MODE_BINARY):
            raise _UnreadableEntry(f"stored in mode {mode}, not as bytes")
        try:
            return super().fetch(mode, filename, value, read)
        except FileNotFoundError as exc:  # the row is committed only after its file is written: damage
            raise _UnreadableEntry(str(exc)) from None


_STORE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)


def _encode(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None) -> bytes:
    buffer = io.BytesIO()
    payload = dict(arrays)
    payload["__meta__"] = np.frombuffer(json.dumps(dict(meta or {}), default=str).encode("utf-8"), np.uint8)
    np.savez(buffer, **payload)
    return buffer.getvalue()


def _decode(blob: object) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of an entry; raises ValueError (or whatever zipfile/numpy raise) if corrupt."""
    if not isinstance(blob, bytes) or not blob.startswith(b"PK\x03\x04"):
        raise ValueError("not an npz archive")
    arrays = load_npz_arrays(blob)
    meta = json.loads(bytes(arrays.pop("__meta__")).decode("utf-8"))
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    return arrays, meta


class DiskCache:
    """Arrays plus JSON metadata per key in a ``diskcache.Cache``, evicted least-recently-used by size.

    Parameters
    ----------
    folder : Path
        Cache folder (created on first write): ``cache.db`` (SQLite index; small entries inline) and
        ``??/??/*.val`` value files (entries of 32 KiB or more).
    max_bytes : int
        Size cap in bytes (index plus value files, ``diskcache``'s ``volume()``).

    Notes
    -----
    - Each entry is one ``.npz`` archive (the arrays plus ``__meta__``, UTF-8 JSON) stored as ``bytes``;
      it is read with ``allow_pickle=False`` and a value stored any other way (a pickle) is never unpickled.
    - Safe to share between threads and between processes (the GUI and a CLI batch on one folder): SQLite
      transactions make every entry appear whole or not at all.
    - Eviction is ``diskcache``'s least-recently-used policy (a read refreshes an entry): a write that takes
      the cache over the cap evicts the least recently used entry; if that is not enough, ``diskcache``
      culls ten least-recently-used entries at a time until the cache fits, so the cache may end a little
      under the cap. An entry larger than the whole cap is not stored.
    - The last process to open a folder sets its cap for everyone (diskcache keeps it in the folder).
    - A corrupt entry reads as a miss and is deleted. A failed write (disk full, a locked or damaged
      database) is silent: the cache is an optimisation, never a source of truth.
    """

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_DISK_CACHE_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._cache: diskcache.Cache | None = None
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"], state["max_bytes"])

    def _open(self, *, create: bool) -> diskcache.Cache | None:
        """The open ``diskcache.Cache`` (None if it does not exist and ``create`` is false, or cannot open)."""
        with self._lock:
            if self._cache is None:
                fresh = not (self.folder / DBNAME).exists()
                if fresh and not create:
                    return None
                try:
                    self._cache = diskcache.Cache(
                        str(self.folder), disk=_BytesOnlyDisk, timeout=DISK_CACHE_TIMEOUT_S,
                        size_limit=int(self.max_bytes), eviction_policy="least-recently-used", cull_limit=1)
                except (*_STORE_ERRORS, ValueError) as exc:
                    if not self._warned:
                        _log.warning("disk cache %s unusable, caching disabled for now: %s", self.folder, exc)
                        self._warned = True
                    return None
                if fresh:
                    self._remove_legacy_entries()
            elif self._cache.size_limit != self.max_bytes:
                self._cache.reset("size_limit", int(self.max_bytes))
            return self._cache

    def _remove_legacy_entries(self) -> None:
        """Delete ``<2 hex>/<sha256>.npz`` files of the cache layout before diskcache (never read again)."""
        for path in self.folder.glob("??/*.npz"):
            if _LEGACY_ENTRY.fullmatch(path.name) and path.parent.name == path.name[:2]:
                path.unlink(missing_ok=True)

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and metadata stored under ``key`` (now the most recently used), or None."""
        cache = self._open(create=False)
        if cache is None:
            return None
        try:
            blob = cache.get(str(key))
        except _UnreadableEntry:
            self._discard(cache, key, _UNREADABLE)
            return None
        except _STORE_ERRORS:
            return None
        if blob is None:
            return None
        try:
            return _decode(blob)
        except SystemError:
            # Still the spurious thread-parsing error after load_npz_arrays' retries
            # (python/cpython#106905): not damage, so never delete for it.
            return None
        except Exception:  # noqa: BLE001 - a damaged archive makes zipfile/numpy/json raise many types
            self._discard(cache, key, blob)
            return None

    def _discard(self, cache: diskcache.Cache, key: str, seen: object) -> None:
        """Delete ``key`` if it still holds the damaged value ``seen`` (another process may have rewritten it)."""
        try:
            with cache.transact():
                try:
                    current: object = cache.get(str(key))
                except _UnreadableEntry:
                    current = _UNREADABLE
                if current is seen or (current is not None and current == seen):
                    cache.delete(str(key))
        except _STORE_ERRORS:
            pass

    def put(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
        """Store arrays and JSON-serialisable metadata under ``key``, evicting least-recently-used entries.

        Arrays must not be object arrays (they could not be read back without pickle). Never raises for a
        failed write.
        """
        blob = _encode(arrays, meta)
        if len(blob) > self.max_bytes:
            return  # could never fit: storing it would only evict everything else
        cache = self._open(create=True)
        if cache is None:
            return
        try:
            cache.set(str(key), blob)
            if cache.volume() > self.max_bytes:
                cache.cull()
        except _STORE_ERRORS as exc:
            _log.debug("disk cache %s: write of %s failed: %s", self.folder, key, exc)

    def size_bytes(self) -> int:
        """Bytes the cache occupies on disk (SQLite index plus value files); 0 before the first write."""
        cache = self._open(create=False)
        if cache is None:
            return 0
        try:
            return int(cache.volume())
        except _STORE_ERRORS:
            return 0

    def evict(self) -> None:
        """Delete least-recently-used entries until the cache fits ``max_bytes`` (after lowering it, say)."""
        cache = self._open(create=False)
        if cache is None:
            return
        try:
            cache.cull()
        except _STORE_ERRORS:
            pass

    def close(self) -> None:
        """Close this process's database connection (reopened on next use)."""
        with self._lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
