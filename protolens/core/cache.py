"""Size-capped caches for computed arrays: in memory (LRU by entry count) and on disk (LRU by bytes).

Keys are hex strings (use :func:`protolens.core.hashing.sha256_json` over the identifying parts:
image sha256, backend id and version, weights sha256, parameters).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from protolens.core.atomic import write_bytes_atomic
from protolens.core.errors import StoreWriteError

T = TypeVar("T")

DEFAULT_DISK_CACHE_BYTES = 2 * 1024**3


def default_cache_dir() -> Path:
    """``PROTOLENS_CACHE_DIR`` if set, else the platform's user cache folder for protolens."""
    env = os.environ.get("PROTOLENS_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("protolens", appauthor=False))


class MemoryCache(Generic[T]):
    """A thread-safe LRU mapping holding at most ``capacity`` entries and, if ``max_bytes`` is given,
    at most that many bytes as measured by ``size_of(value)`` (the newest entry is always kept)."""

    def __init__(self, capacity: int = 64, *, max_bytes: int | None = None,
                 size_of: Callable[[T], int] | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._size_of = size_of or (lambda _value: 0)
        self._items: OrderedDict[str, T] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, value: T) -> None:
        size = self._size_of(value)
        with self._lock:
            self._items[key] = value
            self._sizes[key] = size
            self._items.move_to_end(key)
            while len(self._items) > 1 and (len(self._items) > self.capacity or (
                    self.max_bytes is not None and sum(self._sizes.values()) > self.max_bytes)):
                oldest, _ = self._items.popitem(last=False)
                self._sizes.pop(oldest, None)

    @property
    def size_bytes(self) -> int:
        """Total measured size of the entries."""
        with self._lock:
            return sum(self._sizes.values())

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class DiskCache:
    """Arrays plus JSON metadata per key, one ``.npz`` file each, evicted least-recently-used by size.

    Parameters
    ----------
    folder : Path
        Cache folder (created on first write).
    max_bytes : int
        Size cap; after each write the oldest-used files are deleted until the total fits.

    Reads refresh an entry's modification time (its recency). A corrupt entry reads as a miss and is
    deleted. A failed write (disk full) is silent: the cache is an optimisation, never a source of truth.
    """

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_DISK_CACHE_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and metadata stored under ``key``, or None."""
        path = self._path(key)
        try:
            raw = path.read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "__meta__"}
                meta = json.loads(bytes(data["__meta__"]).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
            return None
        now = time.time()
        try:
            os.utime(path, (now, now))
        except OSError:
            pass
        return arrays, meta

    def put(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
        """Store arrays and JSON-serialisable metadata under ``key``, then evict to fit the cap."""
        buffer = io.BytesIO()
        payload = dict(arrays)
        payload["__meta__"] = np.frombuffer(json.dumps(dict(meta or {}), default=str).encode("utf-8"), np.uint8)
        np.savez(buffer, **payload)
        try:
            write_bytes_atomic(self._path(key), buffer.getvalue())
        except StoreWriteError:
            return
        self.evict()

    def size_bytes(self) -> int:
        """Total size of the cache's files in bytes."""
        return sum(p.stat().st_size for p in self.folder.glob("*/*.npz"))

    def evict(self) -> None:
        """Delete least-recently-used entries until the cache fits ``max_bytes``."""
        with self._lock:
            entries = []
            for path in self.folder.glob("*/*.npz"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((stat.st_mtime, stat.st_size, path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
