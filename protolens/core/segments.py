"""Segments of a photo (parts or superpixels), their centroids and their descriptors.

One interface for the three segment sources of the keypoint-labeling classifier (KLC, seed 002, step 2):
part co-segmentation from ViT features (:func:`cluster_parts`; Amir et al., arXiv 2112.05814 §4.2), SLIC
superpixels inside the object mask (:func:`slic_segments`) and part annotations supplied with the bank or
drawn by the user (:func:`part_map_segments`, :func:`part_location_segments`). A segment's descriptor is the
mean of the bilinearly upsampled patch tokens over it (:func:`segment_descriptors`) and its keypoint is its
centroid (:meth:`Segments.centroids`). METHODS.md §4.

Coordinates: arrays are indexed (row, col); points and centroids are (x, y) in pixel index coordinates of
the photo (origin top-left, the centre of pixel (row 0, col 0) is (0, 0)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protolens.core.errors import ParamError
from protolens.core.thresholds import mass_to_value_threshold

SEGMENT_SOURCES = ("cosegment", "slic", "bank")
"""Segment sources a user can choose; ``Segments.source`` may also be ``"user"`` (drawn parts)."""
_ALL_SOURCES = (*SEGMENT_SOURCES, "user")


@dataclass
class Segments:
    """Segments of one photo as an id map.

    Attributes
    ----------
    ids : numpy.ndarray
        (height, width) int32 at the photo size, indexed (row, col); -1 = in no segment, else 0..n-1.
    names : list of str
        n part labels, one per segment ("" = unlabelled).
    source : str
        ``"cosegment"``, ``"slic"``, ``"bank"`` or ``"user"``.

    A segment id with no pixel is allowed (an empty part, e.g. a part not visible in this photo).

    Raises
    ------
    ParamError
        ``ids`` not 2-D, an id below -1 or not below ``len(names)``, or an unknown source.
    """

    ids: np.ndarray
    names: list[str]
    source: str

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.ndim != 2:
            raise ParamError(f"segments: ids must be a (height, width) map, got shape {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ParamError(f"segments: ids must be integers, got {ids.dtype}")
        self.ids = ids.astype(np.int32, copy=False)
        self.names = [str(name) for name in self.names]
        if self.source not in _ALL_SOURCES:
            raise ParamError(f"segments: unknown source {self.source!r} (one of {', '.join(_ALL_SOURCES)})")
        if self.ids.size and (self.ids.min() < -1 or self.ids.max() >= len(self.names)):
            raise ParamError(
                f"segments: ids span {int(self.ids.min())}..{int(self.ids.max())} but there are "
                f"{len(self.names)} names (ids must be -1..{len(self.names) - 1})"
            )

    @property
    def count(self) -> int:
        """Number of segments n (including empty ones)."""
        return len(self.names)

    def areas(self) -> np.ndarray:
        """(n,) int64 pixel count of each segment."""
        inside = self.ids[self.ids >= 0]
        return np.bincount(inside, minlength=self.count).astype(np.int64)

    def centroids(self) -> np.ndarray:
        """(n, 2) float32 (x, y) mean pixel index of each segment (the keypoint); NaN for an empty segment."""
        rows, cols = np.nonzero(self.ids >= 0)
        labels = self.ids[rows, cols]
        area = np.bincount(labels, minlength=self.count).astype(np.float64)
        sum_x = np.bincount(labels, weights=cols.astype(np.float64), minlength=self.count)
        sum_y = np.bincount(labels, weights=rows.astype(np.float64), minlength=self.count)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.stack([sum_x / area, sum_y / area], axis=1)
        out[area == 0] = np.nan
        return out.astype(np.float32).reshape(self.count, 2)

    def mask(self, i: int) -> np.ndarray:
        """(height, width) bool mask of segment ``i``; ParamError if ``i`` is not in 0..n-1."""
        if not 0 <= int(i) < self.count:
            raise ParamError(f"segments: no segment {i} (there are {self.count})")
        return self.ids == int(i)

    def present(self) -> np.ndarray:
        """(k,) int64 ids of the non-empty segments, ascending."""
        return np.flatnonzero(self.areas() > 0).astype(np.int64)


def object_mask_from_alpha(alpha: np.ndarray, level: int = 128) -> np.ndarray:
    """(height, width) bool object mask ``alpha >= level`` from an alpha channel ((height, width) uint8).

    Raises ParamError when ``alpha`` is not 2-D.
    """
    alpha = np.asarray(alpha)
    if alpha.ndim != 2:
        raise ParamError(f"alpha must be a (height, width) channel, got shape {alpha.shape}")
    return alpha >= level


def saliency_mask(saliency: np.ndarray, image_size: tuple[int, int], mass: float = 0.6) -> np.ndarray:
    """Object mask from a token saliency map: the cells holding the top ``mass`` share of attention.

    The (rows, cols) map is upsampled bilinearly to the photo (``cv2.resize`` INTER_LINEAR, half-pixel
    centres) and thresholded with :func:`protolens.core.thresholds.mass_to_value_threshold` (DINO's
    attention-mass rule, arXiv 2104.14294; Amir et al. saliency, METHODS.md §4).

    Parameters
    ----------
    saliency : numpy.ndarray
        (rows, cols) non-negative float saliency (e.g. min-max normalised CLS attention).
    image_size : (int, int)
        (height, width) of the photo.
    mass : float
        Share of the total saliency to keep, in (0, 1].

    Returns
    -------
    numpy.ndarray
        (height, width) bool; empty when the map is all zero.

    Raises
    ------
    ParamError
        ``saliency`` not 2-D, a non-positive size, or ``mass`` outside (0, 1].
    """
    import cv2

    saliency = np.asarray(saliency, dtype=np.float32)
    height, width = (int(v) for v in image_size)
    if saliency.ndim != 2 or saliency.size == 0:
        raise ParamError(f"saliency must be a non-empty (rows, cols) map, got shape {saliency.shape}")
    if height <= 0 or width <= 0:
        raise ParamError(f"image size must be positive (height, width), got {image_size}")
    if not 0.0 < mass <= 1.0:
        raise ParamError(f"saliency mass must be in (0, 1], got {mass}")
    up = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
    threshold = mass_to_value_threshold(up, mass)
    return up >= threshold


def _renumber(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels >= 0 renumbered 0..n-1 in ascending order of their value; others -> -1."""
    ids = np.full(labels.shape, -1, dtype=np.int32)
    inside = labels >= 0
    values, inverse = np.unique(labels[inside], return_inverse=True)
    ids[inside] = inverse.astype(np.int32)
    return ids, int(values.size)


def slic_segments(
    image: np.ndarray,
    mask: np.ndarray | None,
    n_segments: int = 10,
    *,
    compactness: float = 10.0,
    names: Sequence[str] | None = None,
) -> Segments:
    """SLIC superpixels inside the object mask (KLC step 2, n = 8..12).

    ``skimage.segmentation.slic(image, n_segments, compactness, mask=mask, start_label=1, channel_axis=-1)``;
    ids = label - 1, -1 outside the mask, renumbered 0..n-1 consecutively (SLIC may return fewer segments
    than asked).

    Parameters
    ----------
    image : numpy.ndarray
        (height, width, 3) RGB photo (uint8 or float).
    mask : numpy.ndarray or None
        (height, width) bool object mask; None = the whole photo.
    n_segments : int
        Approximate number of superpixels (>= 1).
    compactness : float
        SLIC colour/space trade-off (> 0).
    names : sequence of str, optional
        One label per resulting segment; default all "".

    Returns
    -------
    Segments
        Source ``"slic"``.

    Raises
    ------
    ParamError
        Bad shapes, ``n_segments < 1``, ``ParamError("object mask is empty")``, or ``names`` whose length
        differs from the number of segments.
    """
    from skimage.segmentation import slic

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ParamError(f"slic_segments: image must be (height, width, 3) RGB, got shape {image.shape}")
    if n_segments < 1:
        raise ParamError(f"slic_segments: n_segments must be >= 1, got {n_segments}")
    if mask is None:
        mask = np.ones(image.shape[:2], dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ParamError(f"slic_segments: mask shape {mask.shape} differs from the image's {image.shape[:2]}")
    if not mask.any():
        raise ParamError("object mask is empty")
    labels = slic(
        image,
        n_segments=int(n_segments),
        compactness=float(compactness),
        mask=mask,
        start_label=1,
        channel_axis=-1,
    )
    labels = np.where(mask, labels.astype(np.int64) - 1, -1)
    ids, count = _renumber(labels)
    names = [""] * count if names is None else list(names)
    if len(names) != count:
        raise ParamError(f"slic_segments: {len(names)} names for {count} superpixels")
    return Segments(ids=ids, names=names, source="slic")


def part_map_segments(part_ids: np.ndarray, part_names: Sequence[str], source: str = "bank") -> Segments:
    """Segments from an indexed part mask (a bank ``<stem>.parts.png`` or a user drawing).

    Parameters
    ----------
    part_ids : numpy.ndarray
        (height, width) int, indexed (row, col): 0 = no part, v >= 1 = part v (1-based, as in CUB parts.txt).
    part_names : sequence of str
        Name of part v at position v-1.
    source : str
        ``"bank"`` or ``"user"``.

    Returns
    -------
    Segments
        One segment per name (segment v-1 = part v, possibly empty); values outside 1..len(names) -> -1.
    """
    part_ids = np.asarray(part_ids)
    if part_ids.ndim != 2:
        raise ParamError(f"part map must be (height, width), got shape {part_ids.shape}")
    values = part_ids.astype(np.int64)
    ids = np.where((values >= 1) & (values <= len(part_names)), values - 1, -1).astype(np.int32)
    return Segments(ids=ids, names=list(part_names), source=source)


def label_map_segments(labels: np.ndarray, classes: Sequence[tuple[int, str]]) -> Segments | None:
    """Segments from a label map drawn with the mask editor: each class present is one part, named by the class.

    Parameters
    ----------
    labels : numpy.ndarray
        (height, width) uint8 class ids (0 background, 255 ignore), indexed (row, col).
    classes : sequence of (int, str)
        (class id, name) of the project's classes; ids without a name are ignored.

    Returns
    -------
    Segments or None
        ``source="user"``, one segment per named class id present (in id order, renumbered 0..n-1), the rest -1;
        None when no named class is drawn.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ParamError(f"label map must be (height, width), got shape {labels.shape}")
    names = {int(i): str(n) for i, n in classes if 1 <= int(i) <= 254}
    present = [int(v) for v in np.unique(labels) if int(v) in names]
    if not present:
        return None
    lookup = np.full(256, -1, np.int32)
    lookup[present] = np.arange(len(present), dtype=np.int32)
    return Segments(ids=lookup[labels.astype(np.uint8)], names=[names[v] for v in present], source="user")


def part_location_segments(mask: np.ndarray, points: np.ndarray, names: Sequence[str]) -> Segments:
    """Segments from part locations (CUB ``part_locs.txt``): a Voronoi partition of the object mask.

    Each object-mask pixel goes to the nearest point by Euclidean distance in pixel index coordinates
    (ties -> the lowest point index); pixels outside the mask are -1.

    Parameters
    ----------
    mask : numpy.ndarray
        (height, width) bool object mask.
    points : numpy.ndarray
        (p, 2) float (x, y) photo pixels of the VISIBLE parts.
    names : sequence of str
        p part names; segment i is named ``names[i]``.

    Returns
    -------
    Segments
        Source ``"bank"``; with p = 0 every pixel is -1.

    Raises
    ------
    ParamError
        Bad shapes or ``len(names) != p``.
    """
    mask = np.asarray(mask, dtype=bool)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2) if np.size(points) else np.zeros((0, 2))
    if mask.ndim != 2:
        raise ParamError(f"part locations: mask must be (height, width), got shape {mask.shape}")
    if len(names) != points.shape[0]:
        raise ParamError(f"part locations: {len(names)} names for {points.shape[0]} points")
    ids = np.full(mask.shape, -1, dtype=np.int32)
    rows, cols = np.nonzero(mask)
    if points.shape[0] and rows.size:
        best = np.full(rows.size, np.inf)
        owner = np.zeros(rows.size, dtype=np.int32)
        for index, (x, y) in enumerate(points):
            distance = (cols - x) ** 2 + (rows - y) ** 2
            closer = distance < best
            best[closer] = distance[closer]
            owner[closer] = index
        ids[rows, cols] = owner
    return Segments(ids=ids, names=list(names), source="bank")


def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """1-D bilinear resampling matrix with ``align_corners=False`` (torch ``F.interpolate`` semantics).

    Output sample o reads source position ``(o + 0.5) * n_in / n_out - 0.5`` clamped below at 0, between
    the two nearest inputs (the upper clamped to n_in - 1). Applying it along rows and columns
    (``M_r @ X @ M_c.T``) equals ``F.interpolate(mode="bilinear", align_corners=False)``.

    Returns
    -------
    numpy.ndarray
        (n_out, n_in) float32, each row summing to 1.

    Raises
    ------
    ParamError
        A size below 1.
    """
    if n_out < 1 or n_in < 1:
        raise ParamError(f"bilinear_matrix: sizes must be >= 1, got ({n_out}, {n_in})")
    source = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    source = np.maximum(source, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(matrix, (np.arange(n_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(n_out), high), frac)
    return matrix.astype(np.float32)


def _nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Nearest-neighbour source index of each of n_out samples: the source pixel under the sample's centre."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_nearest(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(rows, cols) map resized to ``size`` = (height, width): value under each output centre."""
    return ids[np.ix_(_nearest_indices(size[0], ids.shape[0]), _nearest_indices(size[1], ids.shape[1]))]


def segment_descriptors(
    features: np.ndarray, segments: Segments, grid: tuple[int, int] = (64, 64)
) -> np.ndarray:
    """One descriptor per segment: the mean of the bilinearly upsampled patch tokens over it (KLC step 2).

    The tokens are upsampled to ``grid`` with separable :func:`bilinear_matrix` (torch bilinear,
    ``align_corners=False``); the segment map is resized to ``grid`` by nearest neighbour (the photo pixel
    under each grid cell's centre); descriptor = mean of the upsampled tokens over the segment's cells. The
    upsampled grid is never materialised: the mean is a weighted sum of tokens with weights
    ``M_r.T @ onehot @ M_c / cells``. A non-empty segment with no cell at the grid uses the cell under its
    centroid.

    Parameters
    ----------
    features : numpy.ndarray
        (rows, cols, d) patch tokens, indexed (row, col), any float dtype.
    segments : Segments
        Segments at the photo size.
    grid : (int, int)
        (rows, cols) of the upsampled token grid.

    Returns
    -------
    numpy.ndarray
        (n, d) float32; all-zero rows for empty segments.

    Raises
    ------
    ParamError
        ``features`` not 3-D or a grid size below 1.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3:
        raise ParamError(f"segment_descriptors: features must be (rows, cols, d), got shape {features.shape}")
    rows, cols, dim = features.shape
    grid_rows, grid_cols = (int(v) for v in grid)
    m_r = bilinear_matrix(grid_rows, rows).astype(np.float64)
    m_c = bilinear_matrix(grid_cols, cols).astype(np.float64)
    n = segments.count
    cells = resize_nearest(segments.ids, (grid_rows, grid_cols))
    onehot = np.zeros((n, grid_rows, grid_cols), dtype=np.float64)
    inside = cells >= 0
    gr, gc = np.nonzero(inside)
    onehot[cells[inside], gr, gc] = 1.0
    counts = onehot.sum(axis=(1, 2))
    missing = np.flatnonzero((counts == 0) & (segments.areas() > 0))
    if missing.size:
        height, width = segments.ids.shape
        xy = segments.centroids()[missing].astype(np.float64)
        cell_r = np.clip(((xy[:, 1] + 0.5) * grid_rows / height).astype(np.int64), 0, grid_rows - 1)
        cell_c = np.clip(((xy[:, 0] + 0.5) * grid_cols / width).astype(np.int64), 0, grid_cols - 1)
        onehot[missing, cell_r, cell_c] = 1.0
        counts[missing] = 1.0
    weights = np.matmul(m_r.T, np.matmul(onehot, m_c))  # (n, rows, cols)
    weights /= np.maximum(counts, 1.0)[:, None, None]
    out = weights.reshape(n, rows * cols).astype(np.float32) @ features.reshape(rows * cols, dim)
    return np.ascontiguousarray(out, dtype=np.float32)


def cluster_parts(
    features: np.ndarray,
    fg: np.ndarray,
    centroids: np.ndarray,
    image_size: tuple[int, int],
    names: Sequence[str],
) -> Segments:
    """Part co-segmentation assignment: each foreground token to its nearest part centroid by cosine.

    Amir et al. (arXiv 2112.05814) §4.2 part co-segmentation, with the part centroids from the bank's
    K-Means on foreground descriptors: label = argmax of the dot product of L2-normalised token and
    centroids (ties -> lowest centroid index); background tokens -> -1. The (rows, cols) part map is resized
    to the photo by nearest neighbour (the token under each pixel's centre).

    Parameters
    ----------
    features : numpy.ndarray
        (rows, cols, d) patch tokens.
    fg : numpy.ndarray
        (rows, cols) bool foreground tokens.
    centroids : numpy.ndarray
        (k, d) part centroids.
    image_size : (int, int)
        (height, width) of the photo.
    names : sequence of str
        k part names; segment i is named ``names[i]``.

    Returns
    -------
    Segments
        Source ``"cosegment"``, k segments (some possibly empty).

    Raises
    ------
    ParamError
        Shape mismatches or ``len(names) != k``.
    """
    from protolens.core.matching import l2_normalise

    features = np.asarray(features, dtype=np.float32)
    centroids = np.asarray(centroids, dtype=np.float32)
    fg = np.asarray(fg, dtype=bool)
    if features.ndim != 3 or centroids.ndim != 2 or centroids.shape[1] != features.shape[2]:
        raise ParamError(
            f"cluster_parts: features (rows, cols, d) {features.shape} do not fit "
            f"centroids (k, d) {centroids.shape}"
        )
    if fg.shape != features.shape[:2]:
        raise ParamError(
            f"cluster_parts: foreground shape {fg.shape} differs from the token grid {features.shape[:2]}"
        )
    if len(names) != centroids.shape[0]:
        raise ParamError(f"cluster_parts: {len(names)} names for {centroids.shape[0]} centroids")
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ParamError(f"cluster_parts: image size must be positive (height, width), got {image_size}")
    part_map = np.full(fg.shape, -1, dtype=np.int32)
    if centroids.shape[0] and fg.any():
        similarity = l2_normalise(features[fg]) @ l2_normalise(centroids).T
        part_map[fg] = similarity.argmax(axis=1).astype(np.int32)
    return Segments(ids=resize_nearest(part_map, (height, width)), names=list(names), source="cosegment")
