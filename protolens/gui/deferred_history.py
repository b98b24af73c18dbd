"""The editor's undo history, with region accepts that stay fast on big photos.

An accepted object region may span most of a 2560x1600 label map: recording it as
:meth:`EditHistory.begin` / :meth:`EditHistory.commit` do (a copy of the whole map, then the box's pixels
before and after zlib-compressed on the UI thread) costs some 20-40 ms per click. :meth:`DeferredHistory.
push_region` instead keeps the box's pixels raw (two memory copies), paints the region, and compresses the
pair on a worker thread (zlib releases the GIL); the compressed bytes replace the raw ones on the UI thread at
the next use of the history. Undo and redo work the same on raw and compressed steps.
"""

from __future__ import annotations

import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from protolens.core.editing import Edit, EditHistory, Region

_COMPRESSOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="protolens-undo")


def _compress(before: bytes, after: bytes) -> tuple[bytes, bytes]:
    return zlib.compress(before, 1), zlib.compress(after, 1)


@dataclass
class DeferredEdit(Edit):
    """An undo step whose ``before`` / ``after`` are raw uint8 bytes of its region until ``compressed``."""

    compressed: bool = False

    def _restore(self, labels: np.ndarray, data: bytes) -> None:
        if self.compressed:
            super()._restore(labels, data)
            return
        h, w = self.region.bottom - self.region.top, self.region.right - self.region.left
        labels[self.region.slices] = np.frombuffer(data, np.uint8).reshape(h, w)


class DeferredHistory(EditHistory):
    """:class:`EditHistory` plus :meth:`push_region` (compression off the UI thread)."""

    def __init__(self, max_bytes: int = 256 * 1024**2) -> None:
        super().__init__(max_bytes)
        self._pending: list[tuple[DeferredEdit, Future]] = []

    def push_region(self, labels: np.ndarray, region: Region, mask: np.ndarray, value: int,
                    label: str) -> Edit | None:
        """Set the pixels of ``labels[region]`` where ``mask`` ((h, w) bool, the region's shape) is True to
        ``value``, recorded as one undo step; None (nothing recorded or changed) when they all had it already."""
        view = labels[region.slices]
        if not (mask & (view != value)).any():
            return None
        self.settle()
        before = view.tobytes()
        np.copyto(view, np.uint8(value), where=mask)
        edit = DeferredEdit(label, region, before, view.tobytes())
        self._pending.append((edit, _COMPRESSOR.submit(_compress, edit.before, edit.after)))
        return self.push(edit)

    def settle(self, wait: bool = False) -> None:
        """Swap in the compressed bytes of finished steps (all of them, waiting, with ``wait``)."""
        still: list[tuple[DeferredEdit, Future]] = []
        for edit, future in self._pending:
            if wait or future.done():
                edit.before, edit.after = future.result()
                edit.compressed = True
            else:
                still.append((edit, future))
        self._pending = still

    def commit(self, labels: np.ndarray, region: Region | None, label: str) -> Edit | None:
        self.settle()
        return super().commit(labels, region, label)

    def undo(self, labels: np.ndarray) -> Edit | None:
        self.settle()
        return super().undo(labels)

    def redo(self, labels: np.ndarray) -> Edit | None:
        self.settle()
        return super().redo(labels)

    def clear(self) -> None:
        self._pending.clear()
        super().clear()
