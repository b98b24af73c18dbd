"""Regions of a label map as polygons along pixel edges, and polygons back to masks.

Convention: rings along pixel edges, corners at integer coordinates
-------------------------------------------------------------------
Coordinates are (x, y), x to the right and y down, origin at the top-left corner of the photo.
Pixel (x, y) (row y, column x) covers [x, x+1) x [y, y+1); its centre is (x + 0.5, y + 0.5) and its
corners have integer coordinates. This is the frame of the README, of COCO and of GeoJSON exports.

* A region is one 4-connected component of one class: pixels that share an edge, not only a corner.
  Pixels of a class that touch only diagonally are separate regions (separate polygons that touch at a
  vertex). 4-connectivity is chosen because it gives valid polygons (OGC simple features, shapely
  ``is_valid``) by construction; 8-connected regions joined at a corner would need rings that touch
  themselves, which are invalid.
* The exterior ring runs along the outer pixel edges of the region; each hole ring along the edges of
  an area the region encloses (pixels of any other value: background, other classes, ignore). A hole
  may touch the exterior or another hole at one vertex (a diagonal pinch), as OGC allows.
* Rings are traced by ``rasterio.features.shapes`` (GDAL's polygonize, ``connectivity=4``) and held
  as open (N, 2) float64 arrays of (x, y) vertices (the first vertex is not repeated), N >= 4, with
  integer values, no repeated and no collinear vertices. An exterior's signed shoelace area
  (:func:`ring_area`, on the numbers as written) is positive, a hole's negative; exterior area minus
  hole areas is the region's pixel count.
* A pixel belongs to a polygon when its centre lies inside it (centres are never on an edge), which
  is what ``rasterio.features.rasterize`` draws (:func:`rasterise`, :func:`paint`), so
  ``rasterise(label_polygons(m, c), *m.shape) == (m == c)`` for every label map.

Per format
----------
GeoJSON
    These rings as they are, closed, positions as integers.
COCO
    The exterior rings as they are: COCO's frame is this one, and pycocotools (``frPyObjects``,
    ``annToMask``) fills exactly the pixels of such a ring. COCO polygons cannot carry holes, so a
    class with holes is written as RLE.
labelme
    labelme's rasteriser (``labelme.utils.shape_to_mask``: PIL ``ImageDraw.polygon`` with
    ``fill=1, outline=1``) puts pixel centres at integer coordinates and converts vertices to integers
    before drawing, so an edge ring would also cover the pixels right of and below it. labelme rings
    are the edge rings moved 3/8 px into the region (:func:`inset_ring`) and then by (-3/8, -3/8):
    each coordinate is p or p + 1/4 for the pixel p at that corner, which truncating, flooring and
    rounding all take to p, so PIL draws the ring through the centres of the region's boundary
    pixels and fills the pixels inside it. See :mod:`protolens.core.formats.labelme`.
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import rasterio.features

from protolens.core.formats import FormatError
from protolens.core.labels import BACKGROUND, IGNORE

#: Imported vertices must lie within this distance of the image origin (pixels).
MAX_COORDINATE = 1 << 20
#: Pixel connectivity of a region (see the module docstring).
CONNECTIVITY = 4


@dataclass
class Polygon:
    """One region: ``exterior`` (N, 2) float64 (x, y) ring and its ``holes``, rings of the same form.

    Traced polygons follow the module docstring: open rings along pixel edges, the exterior's signed
    area positive and the holes' negative. Rings may be views into one array shared by many polygons.
    """

    exterior: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many small containers.

    An export of a speckled map builds millions of small lists that all stay alive, and every
    collection walks all of them again (2 to 3 times the build time for 220,000 regions). What is built
    here holds no reference cycles, so reference counting frees it all the same. The collector is
    enabled again on exit if it was enabled on entry.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def labelmap_polygons(labelmap: np.ndarray) -> list[tuple[int, Polygon]]:
    """(class id, polygon) for every region of every class of ``labelmap``, in one tracing pass.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) uint8 class ids; background (0) and ignore (255) pixels are not traced.

    Returns
    -------
    list of (int, Polygon)
        One polygon per 4-connected region, in the pixel-edge convention of the module docstring,
        ordered by class id (GDAL's scan order within a class).

    Raises
    ------
    ValueError
        ``labelmap`` is not two-dimensional uint8.
    """
    labelmap = np.asarray(labelmap)
    if labelmap.ndim != 2 or labelmap.dtype != np.uint8:
        raise ValueError(f"a label map is a 2-D uint8 array, not {labelmap.ndim}-D {labelmap.dtype}")
    with bulk_allocation():
        regions = _trace(labelmap, (labelmap != BACKGROUND) & (labelmap != IGNORE))
    regions.sort(key=lambda region: region[0])
    return regions


def label_polygons(labelmap: np.ndarray, class_id: int) -> list[Polygon]:
    """Polygons of the pixels of ``labelmap`` equal to ``class_id``, one per 4-connected region.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) array of class ids (any integer dtype).
    class_id : int
        The class to trace.

    Returns
    -------
    list of Polygon
        Rings along pixel edges (see the module docstring).

    Raises
    ------
    ValueError
        ``labelmap`` is not two-dimensional.
    """
    labelmap = np.asarray(labelmap)
    if labelmap.ndim != 2:
        raise ValueError(f"a label map is two-dimensional, not {labelmap.ndim}-D")
    return mask_polygons(labelmap == class_id)


def mask_polygons(mask: np.ndarray) -> list[Polygon]:
    """Polygons of the true pixels of a (height, width) mask; see :func:`label_polygons`."""
    mask8 = np.ascontiguousarray(mask, dtype=np.uint8)
    with bulk_allocation():
        return [polygon for _, polygon in _trace(mask8, mask8 != 0)]


def _trace(source: np.ndarray, mask: np.ndarray) -> list[tuple[int, Polygon]]:
    """(value, polygon) of the 4-connected regions of equal ``source`` values where ``mask`` is set.

    ``rasterio.features.shapes`` traces the regions. Its rings are streamed into one flat array (not
    kept as millions of tuples, which the garbage collector would walk again and again), then opened
    and oriented (exterior area positive, holes negative) all at once; each ring is a view into it.
    """
    values, counts, lengths, flat = [], [], [], array("d")
    for geometry, value in rasterio.features.shapes(source, mask=mask, connectivity=CONNECTIVITY):
        values.append(int(value))
        counts.append(len(geometry["coordinates"]))
        for ring in geometry["coordinates"]:
            lengths.append(len(ring))
            flat.extend(chain.from_iterable(ring))
    if not values:
        return []
    ends = np.cumsum(lengths)
    points = np.delete(np.frombuffer(flat, np.float64).reshape(-1, 2), ends - 1, axis=0)  # open the rings
    offsets = np.concatenate([[0], ends - np.arange(1, len(ends) + 1)])
    exterior = np.zeros(len(lengths), bool)
    exterior[np.cumsum([0] + counts[:-1])] = True
    flip = (_ring_areas(points, offsets) > 0) != exterior
    if flip.any():  # reverse those rings: vertex i of a ring of n vertices from s goes to 2s + n - 1 - i
        sizes = np.diff(offsets)
        index = np.arange(len(points))
        mirrored = 2 * np.repeat(offsets[:-1], sizes) + np.repeat(sizes, sizes) - 1 - index
        reverse = np.repeat(flip, sizes)
        index[reverse] = mirrored[reverse]
        points = points[index]
    rings = np.split(points, offsets[1:-1])
    regions, first = [], 0
    for value, count in zip(values, counts, strict=True):
        regions.append((value, Polygon(rings[first], rings[first + 1:first + count])))
        first += count
    return regions


def _offsets(rings: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All vertices of ``rings`` (M, 2) float64 and the (K + 1,) offsets where each ring starts."""
    points = [np.asarray(ring, dtype=np.float64).reshape(-1, 2) for ring in rings]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in points])]).astype(np.int64)
    return (np.concatenate(points) if points else np.empty((0, 2))), offsets


def _neighbours(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the next and of the previous vertex of every vertex, within its own ring."""
    count = int(offsets[-1])
    following, preceding = np.arange(1, count + 1), np.arange(-1, count - 1)
    starts, ends = offsets[:-1], offsets[1:]
    nonempty = ends > starts
    following[ends[nonempty] - 1] = starts[nonempty]
    preceding[starts[nonempty]] = ends[nonempty] - 1
    return following, preceding


def _ring_areas(points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    following, _ = _neighbours(offsets)
    x, y = points[:, 0], points[:, 1]
    cross = np.concatenate([x * y[following] - x[following] * y, [0.0]])
    sums = np.add.reduceat(cross, offsets[:-1]) if len(offsets) > 1 else np.empty(0)
    return np.where(offsets[1:] > offsets[:-1], sums, 0.0) / 2.0


def ring_areas(rings: Sequence[np.ndarray]) -> np.ndarray:
    """(K,) float64 signed shoelace areas of K (N, 2) (x, y) rings; see :func:`ring_area`."""
    return _ring_areas(*_offsets(rings))


def ring_area(ring: np.ndarray) -> float:
    """Signed shoelace area of an (N, 2) (x, y) ring: positive when its vertices turn from +x to +y."""
    x, y = np.asarray(ring, dtype=np.float64).reshape(-1, 2).T
    return float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1]) / 2.0


def polygon_area(polygon: Polygon) -> float:
    """Area of ``polygon`` (exterior minus holes), in px²; the pixel count of a traced region."""
    return abs(ring_area(polygon.exterior)) - sum(abs(ring_area(hole)) for hole in polygon.holes)


def inset_ring(ring: np.ndarray, distance: float) -> np.ndarray:
    """Each vertex of an edge-traced ring moved ``distance`` px into the area the ring bounds.

    The ring's edges are offset inward by ``distance`` (the region side for an exterior, the hole
    side for a hole); each vertex goes to where its two offset edges meet. For ``0 < distance < 0.5``
    the result keeps the ring's shape and vertex count and its vertices stay distinct.

    Parameters
    ----------
    ring : np.ndarray
        (N, 2) (x, y) open ring with axis-parallel edges and no repeated vertex, as traced here.
    distance : float
        Offset in pixels.

    Returns
    -------
    np.ndarray
        (N, 2) float64 (x, y) ring, same order.
    """
    return inset_rings([ring], distance)[0]


def inset_rings(rings: Sequence[np.ndarray], distance: float) -> list[np.ndarray]:
    """:func:`inset_ring` of every ring of ``rings``, computed on all vertices at once."""
    if not len(rings):
        return []
    points, offsets = _offsets(rings)
    following, preceding = _neighbours(offsets)
    edges = points[following] - points  # edge i runs from vertex i to the next one
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / np.abs(edges).sum(axis=1, keepdims=True)
    inward = np.where(_ring_areas(points, offsets) < 0, -1.0, 1.0)
    normals *= np.repeat(inward, np.diff(offsets))[:, None]  # now pointing into each ring's inside
    incoming = normals[preceding]
    straight = (normals == incoming).all(axis=1, keepdims=True)
    return np.split(points + distance * np.where(straight, normals, normals + incoming), offsets[1:-1])


def rasterise(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask of the union of ``polygons``.

    A pixel is set when its centre lies inside a polygon (inside its exterior, outside its holes),
    as ``rasterio.features.rasterize`` draws with an identity transform; parts outside the image are
    clipped. See the module docstring for the pixel-edge convention.

    Parameters
    ----------
    polygons : list of Polygon
        Rings of (x, y) vertices; rings with fewer than three vertices cover nothing.
    height, width : int
        Size of the mask.
    """
    mask = np.zeros((height, width), np.uint8)
    paint_polygons(mask, ((polygon, 1) for polygon in polygons))
    return mask.astype(bool)


def paint(labelmap: np.ndarray, polygon: Polygon, value: int) -> None:
    """Set the pixels of ``polygon`` (as :func:`rasterise` draws it) in ``labelmap`` to ``value``, in place."""
    paint_polygons(labelmap, [(polygon, value)])


def paint_polygons(labelmap: np.ndarray, shapes: Iterable[tuple[Polygon, int]]) -> None:
    """Paint (polygon, value) pairs into a (height, width) uint8 ``labelmap`` in place, later ones on top.

    One ``rasterio.features.rasterize`` call (identity transform: pixel (x, y) is set when its
    centre (x + 0.5, y + 0.5) lies inside the polygon); holes leave the pixels under them unchanged.
    Rings may be given open or closed; an exterior with fewer than three vertices paints nothing and
    a hole with fewer than three vertices is ignored.
    """
    shapes = list(shapes)
    rings, sizes = _closed_rings([ring for polygon, _ in shapes for ring in (polygon.exterior, *polygon.holes)])
    geometries, first = [], 0
    for polygon, value in shapes:
        last = first + 1 + len(polygon.holes)
        if sizes[first] >= 3:
            coordinates = [rings[first]] + [rings[i] for i in range(first + 1, last) if sizes[i] >= 3]
            geometries.append(({"type": "Polygon", "coordinates": coordinates}, int(value)))
        first = last
    if geometries:
        rasterio.features.rasterize(geometries, out=labelmap)


def _closed_rings(rings: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Each ring closed (its first vertex repeated last unless it is already), and its vertex count
    without that closing vertex; all rings at once."""
    if not len(rings):
        return [], []
    points, offsets = _offsets(rings)
    starts, ends = offsets[:-1], offsets[1:]
    sizes = ends - starts
    nonempty = sizes > 0
    closed = np.zeros(len(sizes), bool)
    closed[nonempty] = (points[starts[nonempty]] == points[ends[nonempty] - 1]).all(axis=1)
    opened = nonempty & ~closed
    points = np.insert(points, ends[opened], points[starts[opened]], axis=0)
    offsets = offsets + np.concatenate([[0], np.cumsum(opened)])
    return np.split(points, offsets[1:-1]), (sizes - closed).tolist()


def position_lists(rings: Sequence[np.ndarray], dtype: type = np.float64) -> list[list[list[float]]]:
    """Rings as lists of [x, y] lists of ``dtype`` numbers (``np.int64`` gives Python ints), as given.

    Converts all vertices in one pass, much faster than ring by ring for many small rings.
    """
    if not len(rings):
        return []
    points, offsets = _offsets(rings)
    flat = points.astype(dtype).tolist()
    return [flat[start:end] for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


def polygon_patch(polygon: Polygon, height: int, width: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The pixels of one polygon within a (height, width) image, cropped to its bounding box.

    Returns
    -------
    window : (slice, slice)
        Rows and columns of the image the patch covers (empty when the polygon lies outside).
    patch : np.ndarray
        bool mask of the window's shape; ``rasterise([polygon], height, width)[window] == patch``.
    """
    exterior = np.asarray(polygon.exterior, dtype=np.float64).reshape(-1, 2)
    x0, y0 = (int(v) for v in np.clip(np.floor(exterior.min(axis=0)), 0, (width, height)))
    x1, y1 = (int(v) for v in np.clip(np.ceil(exterior.max(axis=0)), (x0, y0), (width, height)))
    patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if patch.size:
        shifted = Polygon(exterior - (x0, y0), [np.asarray(h, np.float64).reshape(-1, 2) - (x0, y0)
                                                for h in polygon.holes])
        paint(patch, shifted, 1)
    return (slice(y0, y1), slice(x0, x1)), patch.astype(bool)


def has_holes(mask: np.ndarray) -> bool:
    """Whether any 4-connected region of the true pixels of ``mask`` encloses other pixels."""
    return any(polygon.holes for polygon in mask_polygons(mask))


def outline_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Exterior rings of the 4-connected regions of ``mask``, along pixel edges (COCO's frame too).

    Holes are left out: each ring encloses its region with its holes filled. pycocotools'
    ``frPyObjects`` fills exactly the pixels inside such a ring.

    Returns
    -------
    list of np.ndarray
        (N, 2) float64 (x, y) open rings, N >= 4, integer coordinates; one per region.
    """
    return [polygon.exterior for polygon in mask_polygons(mask)]


def parse_ring(value: object, where: str) -> np.ndarray:
    """An imported ring (a list of [x, y, ...] positions) as an (N, 2) float64 array, N >= 1.

    Raises
    ------
    FormatError
        ``value`` is not such a list of finite numbers within ``MAX_COORDINATE``; ``where`` starts
        the message.
    """
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        points = np.empty((0,))
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 2 or not np.isfinite(points).all():
        raise FormatError(f"{where}: a ring must be a list of [x, y] number positions")
    if np.abs(points[:, :2]).max() > MAX_COORDINATE:
        raise FormatError(f"{where}: a coordinate is beyond {MAX_COORDINATE} pixels")
    return points[:, :2]
