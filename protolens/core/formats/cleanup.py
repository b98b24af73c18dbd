"""Cleaning a label map before it is traced into polygons: drop specks, fill small holes.

Speckled vegetation masks make polygon exports huge (one polygon, or one hole ring, per 1-pixel speck).
:func:`clean_regions` removes small regions and fills small holes so that GeoJSON, labelme and COCO polygon
exports stay usable. It is applied to polygon formats only: PNG label maps, cover tables and COCO RLE stay
exact copies of the mask.

Regions are 4-connected (pixels touching by an edge, not only a corner), as the polygon tracer
(``rasterio.features.shapes`` with ``connectivity=4``) traces them, so a region dropped here is exactly a
polygon that would have been written. Components are labelled with ``cv2.connectedComponentsWithStats``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from protolens.core.formats import check_labelmap, present_classes
from protolens.core.labels import BACKGROUND, IGNORE


@dataclass
class CleanupReport:
    """What :func:`clean_regions` changed, per class id (only classes with changes are listed).

    Attributes
    ----------
    removed_pixels : dict of int to int
        Class id -> pixels of that class set to background (0) because their region was too small.
    removed_regions : dict of int to int
        Class id -> number of 4-connected regions removed.
    filled_pixels : dict of int to int
        Class id -> background pixels given that class because they formed a small hole inside it.
    filled_holes : dict of int to int
        Class id -> number of holes filled.
    """

    removed_pixels: dict[int, int] = field(default_factory=dict)
    removed_regions: dict[int, int] = field(default_factory=dict)
    filled_pixels: dict[int, int] = field(default_factory=dict)
    filled_holes: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, int]]:
        """The four tables with class ids as strings (JSON object keys), ids ascending."""
        tables = {"removed_pixels": self.removed_pixels, "removed_regions": self.removed_regions,
                  "filled_pixels": self.filled_pixels, "filled_holes": self.filled_holes}
        return {name: {str(k): int(v) for k, v in sorted(table.items())} for name, table in tables.items()}

    @property
    def changed(self) -> bool:
        """Whether any pixel was changed."""
        return bool(self.removed_pixels or self.filled_pixels)


def clean_regions(labelmap: np.ndarray, *, min_area: int = 0, fill_holes: int = 0,
                  ignore: int = IGNORE) -> tuple[np.ndarray, CleanupReport]:
    """Drop class regions smaller than ``min_area`` pixels, then fill holes smaller than ``fill_holes`` pixels.

    Steps, in this order:

    1. **Drop specks.** For each class id (not background 0, not ``ignore``), every 4-connected region
       with fewer than ``min_area`` pixels becomes background (0).
    2. **Fill holes.** A hole is a 4-connected component of background (0) pixels that does not touch the
       image border and whose 4-neighbours outside it are all pixels of one class ``c`` (the pixels
       enclosing it need not form one region: a gap closed by corner-touching regions of ``c`` counts).
       A hole with fewer than ``fill_holes`` pixels becomes ``c``. Background bordered by several classes,
       or by ``ignore`` pixels, is left as it is: no class owns it. Because specks are dropped first, a
       small speck of another class inside a class region becomes part of a hole and is filled with the
       enclosing class.

    ``ignore`` pixels are never changed, never count as a region and never make a hole.
    0 (the default) for ``min_area`` or ``fill_holes`` skips that step; with both 0 the map is returned
    unchanged (a copy).

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) uint8 class ids, rows top to bottom (y), columns left to right (x).
    min_area : int, optional
        Regions with fewer pixels than this are dropped (``min_area=3`` drops 1- and 2-pixel specks).
    fill_holes : int, optional
        Holes with fewer pixels than this are filled.
    ignore : int, optional
        The id of "ignore" pixels (255), left untouched.

    Returns
    -------
    cleaned : np.ndarray
        (height, width) uint8, a new array (``labelmap`` is not modified).
    report : CleanupReport
        Removed pixels and regions and filled pixels and holes per class id.

    Raises
    ------
    ValueError
        ``labelmap`` is not 2-D uint8, or ``min_area``/``fill_holes`` is not a non-negative integer.
    """
    cleaned = np.array(check_labelmap(labelmap), copy=True)
    check_cleanup_options(min_area, fill_holes)
    report = CleanupReport()
    if min_area > 1:
        _drop_small_regions(cleaned, int(min_area), int(ignore), report)
    if fill_holes > 1:
        _fill_small_holes(cleaned, int(fill_holes), int(ignore), report)
    return cleaned, report


def check_cleanup_options(min_area: int, fill_holes: int) -> None:
    """Raise ``ValueError`` unless ``min_area`` and ``fill_holes`` are non-negative integers (pixels)."""
    for name, value in (("min_area", min_area), ("fill_holes", fill_holes)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative number of pixels, not {value!r}")


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """4-connected components of a boolean mask: (count incl. label 0 = outside, labels int32, stats)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=4,
                                                               ltype=cv2.CV_32S)
    return count, labels, stats


def _drop_small_regions(labelmap: np.ndarray, min_area: int, ignore: int, report: CleanupReport) -> None:
    """Set every 4-connected region of each class with fewer than ``min_area`` pixels to 0, in place."""
    for class_id in present_classes(labelmap):
        if class_id == ignore:
            continue
        _, components, stats = _components(labelmap == class_id)
        small = stats[:, cv2.CC_STAT_AREA] < min_area
        small[0] = False  # label 0 is everything that is not this class
        if not small.any():
            continue
        labelmap[small[components]] = BACKGROUND
        report.removed_regions[class_id] = int(small.sum())
        report.removed_pixels[class_id] = int(stats[small, cv2.CC_STAT_AREA].sum())


def _fill_small_holes(labelmap: np.ndarray, fill_holes: int, ignore: int, report: CleanupReport) -> None:
    """Fill holes (see :func:`clean_regions`) with fewer than ``fill_holes`` pixels, in place."""
    height, width = labelmap.shape
    count, components, stats = _components(labelmap == BACKGROUND)
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    inside = (left > 0) & (top > 0) & (left + stats[:, cv2.CC_STAT_WIDTH] < width) & (
        top + stats[:, cv2.CC_STAT_HEIGHT] < height)
    candidate = inside & (stats[:, cv2.CC_STAT_AREA] < fill_holes)
    candidate[0] = False  # label 0 is every pixel that is not background
    if not candidate.any():
        return
    owner = _single_neighbour_class(labelmap, components, candidate, count)
    owner[owner == ignore] = -1
    fill = candidate & (owner >= 0)
    if not fill.any():
        return
    where = fill[components]
    labelmap[where] = owner[components[where]].astype(np.uint8)
    for class_id in np.unique(owner[fill]):
        holes = fill & (owner == class_id)
        report.filled_holes[int(class_id)] = int(holes.sum())
        report.filled_pixels[int(class_id)] = int(stats[holes, cv2.CC_STAT_AREA].sum())


def _single_neighbour_class(labelmap: np.ndarray, components: np.ndarray, candidate: np.ndarray,
                            count: int) -> np.ndarray:
    """For each background component: the one class id all its outside 4-neighbours have, else -1.

    Returns (count,) int64. Only components flagged in ``candidate`` are examined (the others get -1).
    """
    lowest = np.full(count, 256, np.int64)
    highest = np.full(count, -1, np.int64)
    pairs = [(components[:, :-1], labelmap[:, 1:]), (components[:, 1:], labelmap[:, :-1]),
             (components[:-1, :], labelmap[1:, :]), (components[1:, :], labelmap[:-1, :])]
    for comp, neighbour in pairs:
        edge = candidate[comp] & (neighbour != BACKGROUND)
        ids, values = comp[edge], neighbour[edge].astype(np.int64)
        np.minimum.at(lowest, ids, values)
        np.maximum.at(highest, ids, values)
    return np.where(candidate & (lowest == highest), lowest, -1)


def cleanup_options(min_area: int, fill_holes: int) -> dict[str, Any]:
    """The options as recorded in ``provenance.json``: ``{"min_area": px, "fill_holes": px, "connectivity": 4}``."""
    return {"min_area": int(min_area), "fill_holes": int(fill_holes), "connectivity": 4}
