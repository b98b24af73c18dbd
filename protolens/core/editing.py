"""Editing a label map in place, touching only the affected region, with an undo history of deltas.

A label map is (height, width) uint8: 0 background, 1..254 classes, 255 ignore. Points are (x, y) in
pixel coordinates (x to the right, y down, origin at the top-left pixel's centre). Every operation returns
the touched region as a :class:`Region` (or None if nothing changed) so a viewer can redraw only that.

The history stores, per step, the region's pixels before and after (zlib-compressed), never whole maps,
and drops its oldest steps beyond a byte cap.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """A rectangle of the label map: rows [top, bottom), columns [left, right)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def union(self, other: Region | None) -> Region:
        if other is None:
            return self
        return Region(min(self.top, other.top), min(self.left, other.left), max(self.bottom, other.bottom),
                      max(self.right, other.right))

    @property
    def area(self) -> int:
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)


def _clip(shape: tuple[int, ...], top: float, left: float, bottom: float, right: float) -> Region | None:
    height, width = shape[:2]
    region = Region(max(0, int(np.floor(top))), max(0, int(np.floor(left))), min(height, int(np.ceil(bottom))),
                    min(width, int(np.ceil(right))))
    return region if region.area > 0 else None


def paint_segment(labels: np.ndarray, start: Sequence[float], end: Sequence[float], radius: float,
                  value: int) -> Region | None:
    """Paint a round brush of ``radius`` pixels along the segment start -> end with ``value`` (eraser: 0).

    Only the segment's bounding box (grown by the radius) is touched. Returns that region, clipped.
    """
    (x0, y0), (x1, y1) = start, end
    r = max(0.5, float(radius))
    region = _clip(labels.shape, min(y0, y1) - r - 1, min(x0, x1) - r - 1, max(y0, y1) + r + 2, max(x0, x1) + r + 2)
    if region is None:
        return None
    view = labels[region.slices]
    shift = 4  # sub-pixel precision of OpenCV's drawing: coordinates * 16
    scale = 1 << shift
    p0 = (int(round((x0 - region.left) * scale)), int(round((y0 - region.top) * scale)))
    p1 = (int(round((x1 - region.left) * scale)), int(round((y1 - region.top) * scale)))
    if p0 == p1:
        cv2.circle(view, p0, int(round(r * scale)), int(value), -1, cv2.LINE_8, shift)
    else:
        thickness = max(1, int(round(2 * r)))
        cv2.line(view, p0, p1, int(value), thickness, cv2.LINE_8, shift)
        cv2.circle(view, p0, int(round(r * scale)), int(value), -1, cv2.LINE_8, shift)
        cv2.circle(view, p1, int(round(r * scale)), int(value), -1, cv2.LINE_8, shift)
    return region


def fill_polygon(labels: np.ndarray, points: Sequence[Sequence[float]], value: int) -> Region | None:
    """Fill the polygon (or lasso path) through ``points`` [(x, y), ...] with ``value``; at least 3 points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    region = _clip(labels.shape, pts[:, 1].min() - 1, pts[:, 0].min() - 1, pts[:, 1].max() + 2, pts[:, 0].max() + 2)
    if region is None:
        return None
    local = np.round((pts - (region.left, region.top)) * 16).astype(np.int32)
    cv2.fillPoly(labels[region.slices], [local], int(value), cv2.LINE_8, 4)
    return region


def flood_fill(labels: np.ndarray, seed: Sequence[float], value: int) -> Region | None:
    """Replace the 4-connected region of equal labels containing ``seed`` (x, y) with ``value``."""
    x, y = int(round(seed[0])), int(round(seed[1]))
    height, width = labels.shape
    if not (0 <= x < width and 0 <= y < height) or labels[y, x] == value:
        return None
    count, _, _, rect = cv2.floodFill(labels, None, (x, y), int(value), 0, 0, 4)
    if count == 0:
        return None
    left, top, w, h = rect
    return Region(top, left, top + h, left + w)


def replace_class(labels: np.ndarray, old: int, new: int) -> Region | None:
    """Relabel every pixel of class ``old`` as ``new`` (e.g. when a class is deleted)."""
    hit = labels == old
    if not hit.any():
        return None
    rows, cols = np.nonzero(hit.any(axis=1))[0], np.nonzero(hit.any(axis=0))[0]
    labels[hit] = new
    return Region(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


@dataclass
class Edit:
    """One undo step: the region's pixels before and after, zlib-compressed, with a label for the history list."""

    label: str
    region: Region
    before: bytes
    after: bytes

    @property
    def nbytes(self) -> int:
        return len(self.before) + len(self.after)

    def _restore(self, labels: np.ndarray, data: bytes) -> None:
        h, w = self.region.bottom - self.region.top, self.region.right - self.region.left
        labels[self.region.slices] = np.frombuffer(zlib.decompress(data), np.uint8).reshape(h, w)


class EditHistory:
    """Undo/redo of label-map edits, holding at most ``max_bytes`` of compressed deltas (oldest dropped).

    Use :meth:`begin` before an edit and :meth:`commit` after it; ``commit`` records only the changed region.
    """

    def __init__(self, max_bytes: int = 256 * 1024**2) -> None:
        self.max_bytes = int(max_bytes)
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self._snapshot: np.ndarray | None = None
        self.dropped = 0

    def begin(self, labels: np.ndarray) -> None:
        """Remember the map before an edit (one copy; cheap next to redrawing)."""
        self._snapshot = labels.copy()

    def commit(self, labels: np.ndarray, region: Region | None, label: str) -> Edit | None:
        """Record the edit since :meth:`begin` within ``region``; None (and nothing recorded) if no pixel changed."""
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None or region is None:
            return None
        before, after = snapshot[region.slices], labels[region.slices]
        changed = before != after
        if not changed.any():
            return None
        rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        tight = Region(region.top + int(rows[0]), region.left + int(cols[0]), region.top + int(rows[-1]) + 1,
                       region.left + int(cols[-1]) + 1)
        edit = Edit(label, tight, zlib.compress(np.ascontiguousarray(snapshot[tight.slices]).tobytes(), 1),
                    zlib.compress(np.ascontiguousarray(labels[tight.slices]).tobytes(), 1))
        return self.push(edit)

    def push(self, edit: Edit) -> Edit:
        """Record an edit made elsewhere as the newest undo step (the redo steps are dropped; the oldest steps
        go when the history is over ``max_bytes``). Returns ``edit``."""
        self._undo.append(edit)
        self._redo.clear()
        self._trim()
        return edit

    def _trim(self) -> None:
        while len(self._undo) > 1 and self.nbytes > self.max_bytes:
            self._undo.pop(0)
            self.dropped += 1

    def undo(self, labels: np.ndarray) -> Edit | None:
        """Undo the last step in place; returns it (its region needs redrawing) or None."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        edit._restore(labels, edit.before)
        self._redo.append(edit)
        return edit

    def redo(self, labels: np.ndarray) -> Edit | None:
        """Redo the last undone step in place; returns it or None."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        edit._restore(labels, edit.after)
        self._undo.append(edit)
        return edit

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._snapshot = None

    @property
    def nbytes(self) -> int:
        """Memory held by the history (compressed deltas), in bytes."""
        return sum(e.nbytes for e in self._undo) + sum(e.nbytes for e in self._redo)

    @property
    def labels(self) -> list[str]:
        """Labels of the undoable steps, oldest first (for an edit-history list)."""
        return [e.label for e in self._undo]

    @property
    def redo_labels(self) -> list[str]:
        """Labels of the redoable steps, next first."""
        return [e.label for e in reversed(self._redo)]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)
