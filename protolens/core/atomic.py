"""Atomic file writes: a temporary file in the same folder, fsync, then rename over the target.

A reader never sees a half-written file, and a failed write (disk full, permission denied) leaves
the previous file untouched and raises :class:`~protolens.core.errors.StoreWriteError`.

File mode: ``tempfile.mkstemp`` creates the temporary file private (0600); before the rename it is given the
mode a plain ``open(path, "w")`` would give a new file, ``0o666 & ~umask`` (0644 under the usual umask 022),
so colleagues can read exports in a shared folder; a file that already exists keeps its mode (a 0640 file
stays 0640). The umask is read from ``/proc/self/status`` (Linux, the current value, no side effect). Where
that is not available it was read once when this module was imported, with ``os.umask`` set-and-restore:
``os.umask`` is process-wide and not thread-safe, so it is never called again while threads may be writing
(a later umask change by the process is then not seen).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from protolens.core.errors import StoreWriteError


def _umask_at_import() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process umask: the ``Umask:`` line of ``/proc/self/status`` (Linux >= 4.7), else the value read
    when this module was imported (see the module docstring)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def _final_mode(path: Path) -> int:
    """Permission bits for ``path``: those of the existing file, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    The new file gets the mode of the file it replaces, or ``0o666 & ~umask`` when there was none (see the
    module docstring).

    Raises
    ------
    StoreWriteError
        The folder cannot be created or written, or the disk is full. The temporary file is removed
        and an existing ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise StoreWriteError(f"cannot write {path}: {why}; nothing was overwritten") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: str | Path, value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as UTF-8 JSON atomically, indented unless ``indent`` is None.

    Compact documents (polygon exports of tens of megabytes) are encoded with ``orjson``, about six times
    faster than the standard library; it writes the same JSON (non-finite floats as ``null``, which the
    standard library would write as the invalid ``NaN``). Values JSON cannot hold are written as ``str``.
    """
    if indent is None:
        import orjson

        data = orjson.dumps(value, default=str, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)
        write_bytes_atomic(path, data)
        return
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` as an uncompressed NumPy ``.npz`` archive (one member per keyword) atomically."""
    with atomic_writer(path, "wb") as handle:
        np.savez(handle, **arrays)


def write_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` in NumPy ``.npy`` format atomically."""
    with atomic_writer(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a (rows, cols) uint8/uint16 or (rows, cols, 3|4) uint8 RGB(A) array (OpenCV encoder)."""
    data = np.asarray(array)
    if data.ndim == 3:
        data = cv2.cvtColor(data, cv2.COLOR_RGB2BGR if data.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(".png", data)
    if not ok:
        raise ValueError(f"cannot encode array of shape {data.shape} and dtype {data.dtype} as PNG")
    return buffer.tobytes()


def write_png_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write an array as PNG atomically (see :func:`encode_png` for accepted layouts)."""
    write_bytes_atomic(path, encode_png(array))


def load_array_bytes(data: bytes) -> Any:
    """``np.load`` of ``.npy`` bytes (an array) or ``.npz`` bytes (an ``NpzFile``), never unpickling objects.

    numpy parses array headers with ``ast.literal_eval``, which CPython 3.11 can fail spuriously with
    ``SystemError`` when several threads parse at once (python/cpython#106905); that is not damage, so the
    load is retried. Raises ``ValueError``/``OSError`` for damaged data.
    """
    for attempt in range(5):
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except SystemError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def load_npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Every array of ``.npz`` bytes, never unpickling objects; member headers are parsed lazily, so the
    spurious ``SystemError`` of :func:`load_array_bytes` is retried here too. Raises ``ValueError``,
    ``OSError`` or ``zipfile.BadZipFile`` for damaged data."""
    for attempt in range(5):
        try:
            with load_array_bytes(data) as archive:
                return {name: archive[name] for name in archive.files}
        except SystemError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def read_npy(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` file without unpickling objects (see :func:`load_array_bytes`)."""
    with open(path, "rb") as handle:
        return load_array_bytes(handle.read())


def stale_temporaries(folder: str | Path, since: float) -> list[Path]:
    """Temporary files of :func:`atomic_writer` in ``folder`` left by writers that died (SIGKILL, lost node).

    A temporary file ``.<name>.<random>.tmp`` is stale when it was made at or after ``since`` (POSIX seconds,
    e.g. a job's start) and ``<name>`` has since been written completely (it exists and is newer): the write
    was redone. Others (another program's write in progress) are never listed.
    """
    stale = []
    for tmp in Path(folder).glob(".*.tmp"):
        name = tmp.name[1:-len(".tmp")].rsplit(".", 1)[0]
        final = tmp.with_name(name)
        try:
            made = tmp.stat().st_mtime
            if made >= since and final.exists() and final.stat().st_mtime >= made:
                stale.append(tmp)
        except OSError:
            continue
    return stale
