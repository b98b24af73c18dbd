"""Object regions from self-supervised patch features: partition, edge-aware refinement, look-up.

Source: OC-ZSS (seed 004, ICLR 2026; METHODS.md §3), step 1: frozen DINO ViT-B/16 patch features are
partitioned into n_o regions by "Voronoi clustering" (n_o = 6 for VOC/COCO, 8 for Pascal Context). The paper
publishes no code and gives no procedure. **protolens's documented assumption** (METHODS.md §3): k-means++
seeds in feature space, then every patch is assigned to the seed of highest cosine similarity: one Voronoi
partition of (cosine) feature space. Optional spherical Lloyd steps (``iterations`` > 0: seeds replaced by the
L2-normalised means of their regions, patches reassigned) are our addition, off by default.

The refinement to photo pixels is ours too (the paper uses the regions only as attention masks on the patch
grid): a guided filter (He et al., "Guided Image Filtering", TPAMI 2013; ``cv2.ximgproc.guidedFilter`` of
opencv-contrib) of each region's bilinearly upsampled one-hot mask with the photo as guide, then argmax,
re-deciding only a band of one grid cell around the coarse borders.

Arrays: id maps are (rows, cols) int32, row = y, col = x, origin top-left. numpy + OpenCV only (no torch).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from protolens.core.errors import ParamError
from protolens.core.layers import Regions
from protolens.core.types import fit_grid

MAX_REGIONS = 256
"""Most regions :func:`partition` and :func:`refine` accept (``cv2.resize`` handles up to 512 channels)."""


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _kmeans_pp(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` distinct greedy k-means++ seeds of L2-normalised rows ``x``.

    k-means++ (Arthur & Vassilvitskii 2007) in its greedy form, as scikit-learn's ``kmeans_plusplus``: the
    first seed is uniform; for each next one, ``2 + floor(ln n)`` candidates are drawn with probability
    proportional to the squared L2 distance to the nearest chosen seed (for unit vectors 2 - 2 cos, so "far"
    = low cosine) and the candidate leaving the smallest total distance is kept. When every remaining
    distance is zero (duplicate features), the next seed is uniform among the unchosen rows.
    """
    count = x.shape[0]
    trials = 2 + int(math.log(n)) if n > 1 else 1
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = rng.integers(count)
    nearest = np.maximum(2.0 - 2.0 * (x @ x[chosen[0]]), 0.0).astype(np.float64)
    nearest[chosen[0]] = 0.0
    for i in range(1, n):
        total = nearest.sum()
        if total > 0:
            picks = np.searchsorted(np.cumsum(nearest), rng.random(trials) * total, side="right")
            picks = np.minimum(picks, count - 1)
            picks[nearest[picks] == 0] = np.flatnonzero(nearest)[-1]  # rounding at the end of the sum
            distances = np.maximum(2.0 - 2.0 * (x[picks] @ x.T), 0.0)  # (trials, count)
            merged = np.minimum(nearest[None, :], distances)
            best = int(np.argmin(merged.sum(axis=1)))
            pick, nearest = int(picks[best]), merged[best]
        else:
            free = np.setdiff1d(np.arange(count), chosen[:i])
            pick = int(free[rng.integers(len(free))])
        chosen[i] = pick
        nearest[chosen[: i + 1]] = 0.0
    return chosen


def _assign(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centre by cosine, its similarity) per row; ties go to the lower centre index."""
    similarity = x @ centres.T
    ids = np.argmax(similarity, axis=1)
    return ids, similarity[np.arange(len(ids)), ids]


def _fill_empty(ids: np.ndarray, best: np.ndarray, n: int) -> np.ndarray:
    """Give every empty region the row least similar to its own centre among regions of two or more rows."""
    counts = np.bincount(ids, minlength=n)
    for region in np.flatnonzero(counts == 0):
        movable = counts[ids] > 1
        candidates = np.flatnonzero(movable)
        row = int(candidates[np.argmin(best[candidates])])
        counts[ids[row]] -= 1
        ids[row], best[row] = region, 1.0
        counts[region] = 1
    return ids


def partition(features: np.ndarray, n_regions: int, *, seed: int = 0, spatial: float = 0.0,
              iterations: int = 0) -> np.ndarray:
    """Partition a patch-feature grid into ``n_regions`` regions (OC-ZSS step 1, our documented procedure).

    Parameters
    ----------
    features : numpy.ndarray
        (rows, cols, d) float patch tokens (any scale: every token is L2-normalised first, so only
        directions count).
    n_regions : int
        n_o, the number of regions (OC-ZSS: 6 for VOC/COCO, 8 for Pascal Context).
    seed : int
        Seed of the k-means++ draw (``numpy.random.default_rng(seed)``); the result is a pure function of
        (features, n_regions, seed, spatial, iterations).
    spatial : float
        Weight of the patch position: ``spatial * ((row + 0.5) / rows, (col + 0.5) / cols)`` is appended to
        each normalised token, which is normalised again (0 = features only; larger = more compact regions).
    iterations : int
        Spherical Lloyd steps after the Voronoi assignment (0 = none, the plain assumption of METHODS.md §3):
        each step moves every seed to the L2-normalised mean of its region and reassigns by cosine.

    Returns
    -------
    numpy.ndarray
        (rows, cols) int32 region ids in 0..n_regions-1; every patch is assigned and every id occurs.

    Raises
    ------
    ParamError
        Not a (rows, cols, d) array, non-finite values, n_regions < 1 or > min(patches, MAX_REGIONS),
        negative spatial weight or iterations.

    Notes
    -----
    Steps: (1) tokens L2-normalised (plus the optional spatial coordinates, normalised again); (2) greedy
    k-means++ seeding on them (scikit-learn's variant: 2 + ln n candidates per seed, written in numpy;
    squared L2 = 2 - 2 cos on unit vectors); (3) each patch assigned to the seed of highest
    cosine similarity (ties: lower id), a Voronoi partition of feature space; a seed's own patch always joins
    it, and a region left empty by duplicate features or a Lloyd step takes the patch least similar to its
    own centre; (4) optional Lloyd steps.
    """
    features = np.asarray(features)
    if features.ndim != 3 or features.shape[2] < 1 or features.shape[0] * features.shape[1] < 1:
        raise ParamError(f"partition needs (rows, cols, d) features, got shape {features.shape}")
    rows, cols, _ = features.shape
    count = rows * cols
    n = int(n_regions)
    if n < 1 or n > min(count, MAX_REGIONS):
        raise ParamError(f"--regions {n}: give 1..{min(count, MAX_REGIONS)} regions for a {rows}x{cols} patch grid")
    if spatial < 0 or iterations < 0:
        raise ParamError("--spatial and --iterations must not be negative")
    x = features.reshape(count, -1).astype(np.float32)
    if not np.isfinite(x).all():
        raise ParamError("partition: the features hold NaN or infinite values")
    x = _normalised(x)
    if spatial > 0:
        r, c = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
        x = _normalised(np.concatenate([x, spatial * np.stack([r.ravel(), c.ravel()], 1)], 1).astype(np.float32))
    seeds = _kmeans_pp(x, n, np.random.default_rng(seed))
    ids, best = _assign(x, x[seeds])
    ids[seeds] = np.arange(n)  # a seed's own patch is its region's, even under ties with duplicate features
    best[seeds] = 1.0
    ids = _fill_empty(ids, best, n)
    for _ in range(int(iterations)):
        members = (ids[:, None] == np.arange(n)).astype(np.float32)
        centres = _normalised(members.T @ x)
        new, best = _assign(x, centres)
        new = _fill_empty(new, best, n)
        if np.array_equal(new, ids):
            break
        ids = new
    return ids.reshape(rows, cols).astype(np.int32)


def upsample_nearest(ids: np.ndarray, height: int, width: int) -> np.ndarray:
    """(rows, cols) int32 ids -> (height, width) by nearest neighbour (``cv2.INTER_NEAREST``, as the layers do)."""
    if ids.shape == (height, width):
        return ids.astype(np.int32, copy=False)
    return cv2.resize(ids.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST)


def border_band(ids: np.ndarray, width: float) -> np.ndarray:
    """(h, w) bool: pixels within Euclidean distance ``width`` (pixels) of a region border of id map ``ids``.

    A border pixel is one whose right or lower neighbour has another id (both pixels of the pair count).
    """
    edge = np.zeros(ids.shape, dtype=bool)
    horizontal = ids[:, 1:] != ids[:, :-1]
    vertical = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    if not edge.any():
        return edge
    distance = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= width


@dataclass
class RefineGuide:
    """The photo prepared as a guided-filter guide, reusable across :func:`refine` calls on one photo.

    Building it (downscale, float conversion, the filter's per-pixel guide statistics) is about a third of a
    refinement at 1024 px; a live n_o slider builds it once per photo (:func:`refine_guide`).

    Attributes
    ----------
    image_size : tuple of int
        (height, width) of the photo.
    size : tuple of int
        (height, width) of the working size (:func:`~protolens.core.types.fit_grid` of the photo and
        ``max_side``).
    guide : numpy.ndarray
        (h', w', 3) float32 RGB in [0, 1].
    """

    image_size: tuple[int, int]
    size: tuple[int, int]
    guide: np.ndarray
    _filters: dict[tuple[int, float], object] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def filter(self, plane: np.ndarray, radius: int, eps: float) -> np.ndarray:
        """``cv2.ximgproc.guidedFilter`` of one (h', w') float32 plane with this guide (same shape out)."""
        with self._lock:  # one OpenCV filter object per (radius, eps), not shared between threads
            flt = self._filters.get((radius, eps))
            if flt is None:
                flt = self._filters[(radius, eps)] = cv2.ximgproc.createGuidedFilter(self.guide, radius, eps)
            return flt.filter(np.ascontiguousarray(plane, dtype=np.float32))


def refine_guide(image: np.ndarray, max_side: int = 1024) -> RefineGuide:
    """Prepare (h, w, 3) uint8 RGB ``image`` as the guide of :func:`refine` at the working size for ``max_side``.

    Raises :class:`ParamError` for a photo that is not (h, w, 3) or a non-positive ``max_side``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ParamError(f"refine needs an (h, w, 3) photo, got shape {image.shape}")
    if max_side < 1:
        raise ParamError("refine: max_side must be positive")
    height, width = fit_grid(image.shape[:2], max_side)
    small = image if image.shape[:2] == (height, width) else cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA)
    guide = small.astype(np.float32) * np.float32(1.0 / 255.0)
    return RefineGuide((int(image.shape[0]), int(image.shape[1])), (height, width), guide)


def refine(ids: np.ndarray, image: np.ndarray, n_regions: int, *, radius: int | None = None, eps: float = 1e-2,
           max_side: int = 1024, guide: RefineGuide | None = None) -> np.ndarray:
    """Edge-aware upsampling of a coarse region map to (a downscaled copy of) the photo.

    Parameters
    ----------
    ids : numpy.ndarray
        (rows, cols) int region ids in 0..n_regions-1 on a patch grid covering the photo.
    image : numpy.ndarray
        (height, width, 3) uint8 RGB photo, the guide (ignored when ``guide`` is given).
    n_regions : int
        Number of regions (the one-hot depth).
    radius : int, optional
        Guided-filter window radius in working pixels; default: half a grid cell (the larger cell side / 2,
        rounded; of radius 1/2, 1 and 1/4 cell it agreed best with pixel colour on the sample quadrats).
    eps : float
        Guided-filter regularisation on the guide scaled to [0, 1] (variance units; smaller = follows photo
        edges more closely, larger = smoother; 1e-2 did best of 1e-2..1e-4 on the sample quadrats).
    max_side : int
        Longer side of the working size (photo downscaled, aspect kept; never upscaled).
    guide : RefineGuide, optional
        The photo already prepared by :func:`refine_guide` (its working size wins over ``max_side``).

    Returns
    -------
    numpy.ndarray
        (h', w') int32 ids at the working size (``fit_grid(photo size, max_side)``).

    Raises
    ------
    ParamError
        Bad shapes, ids out of range, or a non-positive radius / eps / max_side.

    Notes
    -----
    Steps (ours; guided filter: He et al., TPAMI 2013, ``cv2.ximgproc.guidedFilter``): (1) the photo is
    downscaled to the working size (``INTER_AREA``), RGB in [0, 1] is the guide; (2) each region's one-hot
    mask is upsampled bilinearly (``cv2.resize``) and guided-filtered (the last as one minus the others:
    the filter is linear and keeps constants); (3) per pixel the region of the largest filtered value wins
    among the regions of the 3 x 3 grid cells around the pixel's cell, but only within one grid cell (the
    smaller cell side, Euclidean) of a border of the nearest-upsampled coarse map; elsewhere the coarse id
    stays; (4) a region of the coarse map that no pixel won gets its coarse pixels back. So refinement moves borders by at most one cell, keeps
    every region and never creates one away from them.
    """
    ids = np.asarray(ids)
    n = int(n_regions)
    if ids.ndim != 2 or ids.size == 0:
        raise ParamError(f"refine needs (rows, cols) ids, got shape {ids.shape}")
    if not 1 <= n <= MAX_REGIONS or ids.min() < 0 or ids.max() >= n:
        raise ParamError(f"refine: ids must lie in 0..{n - 1} (1..{MAX_REGIONS} regions)")
    if eps <= 0 or (radius is not None and radius < 1):
        raise ParamError("refine: radius and eps must be positive")
    guide = guide if guide is not None else refine_guide(image, max_side)
    height, width = guide.size
    rows, cols = ids.shape
    coarse = upsample_nearest(ids, height, width)
    if n == 1 or np.all(ids == ids.flat[0]):
        return coarse
    band = border_band(coarse, min(height / rows, width / cols))
    r = int(radius) if radius is not None else max(1, round(max(height / rows, width / cols) / 2))
    ring = np.ones((3, 3), np.uint8)
    # The filter is linear in its input and keeps constants, and the soft masks sum to one: the last
    # region's filtered mask is one minus the others' (one filter pass fewer). Planes are kept separate
    # (contiguous); the argmax is a running comparison (ties: lower id) over the regions of the pixel's
    # 3 x 3 neighbouring grid cells.
    total = np.zeros((height, width), np.float32)
    best_value = np.full((height, width), -np.inf, np.float32)
    best = coarse.copy()
    for region in range(n):
        cells = (ids == region).astype(np.uint8)
        if region < n - 1:
            plane = cv2.resize(cells.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            value = guide.filter(plane, r, float(eps))
            total += value
        else:
            value = 1.0 - total
        near = upsample_nearest(cv2.dilate(cells, ring), height, width).astype(bool)
        better = (value > best_value) & near
        best[better] = region
        np.copyto(best_value, value, where=better)
    out = np.where(band, best, coarse)
    present = np.bincount(out.ravel(), minlength=n) > 0
    for region in np.flatnonzero(~present):  # a thin region the filter swallowed keeps its coarse pixels
        out[coarse == region] = region
    return out


def region_at(ids: np.ndarray, image_size: tuple[int, int], x: float, y: float) -> int:
    """The region id under photo pixel (x, y), or -1 outside the photo.

    Parameters
    ----------
    ids : numpy.ndarray
        (rows, cols) int id map on a grid covering the photo (coarse or refined).
    image_size : tuple of int
        (height, width) of the photo in pixels.
    x, y : float
        Column and row in photo pixels (origin top-left; pixel (i, j) covers [i, i + 1) x [j, j + 1)).

    Returns
    -------
    int
        ``ids[floor(y * rows / height), floor(x * cols / width)]`` (the cell ``cv2.INTER_NEAREST`` upsampling
        gives that pixel), or -1 when (x, y) lies outside the photo.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if not (0 <= x < width and 0 <= y < height):
        return -1
    rows, cols = ids.shape
    row = min(rows - 1, int(math.floor(y * rows / height)))
    col = min(cols - 1, int(math.floor(x * cols / width)))
    return int(ids[row, col])


def region_labels(n_regions: int) -> list[str]:
    """``["region 1", ..., "region n"]``: the labels of an unlabelled object-regions layer."""
    return [f"region {i + 1}" for i in range(int(n_regions))]


def regions_layer(ids: np.ndarray, n_regions: int, image_size: tuple[int, int]) -> Regions:
    """A :class:`~protolens.core.layers.Regions` layer from an id map: one mask per id, labels
    ``"region i"`` (1-based), scores 1.

    Parameters
    ----------
    ids : numpy.ndarray
        (rows, cols) int ids in 0..n_regions-1 on a grid covering the photo.
    n_regions : int
        Number of masks (an id that does not occur gives an empty mask).
    image_size : tuple of int
        (height, width) of the photo.
    """
    ids = np.asarray(ids)
    masks = ids[None, :, :] == np.arange(int(n_regions), dtype=ids.dtype)[:, None, None]
    return Regions(masks, region_labels(n_regions), np.ones(int(n_regions), np.float32), image_size)
