"""Regions of a label map as polygons, and polygons back to masks.

Convention: rings through pixel centres
---------------------------------------
A ring is an (N, 2) float64 array of (x, y) vertices with integer values, the pixel indices OpenCV's
contour tracer gives: vertex (x, y) is the centre of pixel (x, y), which covers [x, x+1) x [y, y+1).
Rings are open (the last vertex is not repeated) and run through the centres of the outermost pixels
of the region they bound:

* the exterior ring through the boundary pixels of one 8-connected component;
* a hole ring through the boundary pixels of the hole itself (the 4-connected background or
  other-class pixels the component encloses), not through the component pixels around it as
  OpenCV's own hole contours do. Hole rings thus lie strictly inside the exterior.

Pixel (x, y) belongs to a polygon when its centre lies inside or on the exterior ring and neither
inside nor on a hole ring. Ring edges are horizontal, vertical or diagonal, so they pass exactly
through pixel centres and :func:`rasterise` (``cv2.fillPoly``) draws exactly these pixels:
``rasterise(label_polygons(m, c), *m.shape) == (m == c)`` for every label map. A single-pixel
component has a one-vertex ring and a 1-px line a ring along the line and back (zero area); they
rasterise to their pixels. PIL's ``ImageDraw.polygon(..., fill=1, outline=1)`` (labelme) follows the
same convention.

COCO polygons use another frame (pixel (x, y) centred on (x + 0.5, y + 0.5)); :func:`outline_rings`
gives rings for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from protolens.core.formats import FormatError

#: Imported vertices must lie within this distance of the image origin (pixels).
MAX_COORDINATE = 1 << 20


@dataclass
class Polygon:
    """One region: ``exterior`` (N, 2) float64 (x, y) ring and its ``holes``, rings of the same form."""

    exterior: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)


def label_polygons(labelmap: np.ndarray, class_id: int) -> list[Polygon]:
    """Polygons of the pixels of ``labelmap`` equal to ``class_id``, one per 8-connected component.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) array of class ids (any integer dtype).
    class_id : int
        The class to trace.

    Returns
    -------
    list of Polygon
        Rings through pixel centres (see the module docstring), in OpenCV's order. In the rare case
        where a hole's ring would also enclose pixels of the component (a hole that closes around a
        pixel only diagonally), those pixels come as extra polygons after the others, so that
        :func:`rasterise` always reproduces the class mask exactly.

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
    contours, hierarchy = cv2.findContours(mask8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    polygons = []
    for contour, (_, _, first_child, parent) in zip(contours, hierarchy[0], strict=True):
        if parent != -1:
            continue  # an OpenCV hole contour; holes are traced on the hole pixels below
        exterior = contour.reshape(-1, 2)
        holes = _hole_rings(mask8, exterior) if first_child != -1 else []
        polygons.append(Polygon(exterior.astype(np.float64), holes))
    if any(p.holes for p in polygons):
        missing = (mask8 != 0) & ~rasterise(polygons, *mask8.shape)
        if missing.any():
            polygons.extend(mask_polygons(missing))
    return polygons


def _hole_rings(mask8: np.ndarray, exterior: np.ndarray) -> list[np.ndarray]:
    """Rings around the pixels that ``exterior`` encloses but that are not in ``mask8``."""
    x, y, w, h = cv2.boundingRect(exterior.reshape(-1, 1, 2))
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [exterior.reshape(-1, 1, 2)], 1, offset=(-x, -y))
    inside[mask8[y:y + h, x:x + w] != 0] = 0
    rings, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    return [ring.reshape(-1, 2).astype(np.float64) for ring in rings]


def _int_ring(ring: np.ndarray) -> np.ndarray:
    points = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    return np.rint(points).astype(np.int32).reshape(-1, 1, 2)


def rasterise(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask of the union of ``polygons``.

    Each polygon is drawn on its own: ``cv2.fillPoly`` fills the exterior (edges included), then
    fills each hole with 0 (edges included), and the result is or-ed into the mask, so the order of
    the polygons does not matter. Vertices are rounded to the nearest integer; parts outside the
    image are clipped. See the module docstring for the pixel-centre convention.

    Parameters
    ----------
    polygons : list of Polygon
        Rings of (x, y) vertices, at least one vertex each.
    height, width : int
        Size of the mask.
    """
    mask = np.zeros((height, width), bool)
    for polygon in polygons:
        window, patch = polygon_patch(polygon, height, width)
        mask[window] |= patch
    return mask


def paint(labelmap: np.ndarray, polygon: Polygon, value: int) -> None:
    """Set the pixels of ``polygon`` (as :func:`rasterise` draws it) in ``labelmap`` to ``value``, in place."""
    window, patch = polygon_patch(polygon, *labelmap.shape)
    labelmap[window][patch] = value


def polygon_patch(polygon: Polygon, height: int, width: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The pixels of one polygon within a (height, width) image, cropped to its bounding box.

    Returns
    -------
    window : (slice, slice)
        Rows and columns of the image the patch covers (empty when the polygon lies outside).
    patch : np.ndarray
        bool mask of the window's shape; ``rasterise([polygon], height, width)[window] == patch``.
    """
    exterior = _int_ring(polygon.exterior)
    x0, y0 = (int(v) for v in np.clip(exterior.min(axis=(0, 1)), 0, (width, height)))
    x1, y1 = (int(v) for v in np.clip(exterior.max(axis=(0, 1)) + 1, (x0, y0), (width, height)))
    scratch = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if scratch.size:
        cv2.fillPoly(scratch, [exterior], 1, offset=(-x0, -y0))
        holes = [_int_ring(hole) for hole in polygon.holes if len(hole)]
        if holes:
            cv2.fillPoly(scratch, holes, 0, offset=(-x0, -y0))
    return (slice(y0, y1), slice(x0, x1)), scratch.astype(bool)


def ring_area(ring: np.ndarray) -> float:
    """Signed shoelace area of an (N, 2) (x, y) ring: positive when its vertices turn from +x to +y."""
    x, y = np.asarray(ring, dtype=np.float64).reshape(-1, 2).T
    return float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1]) / 2.0


def has_holes(mask: np.ndarray) -> bool:
    """Whether any 8-connected component of the true pixels of ``mask`` encloses other pixels."""
    _, hierarchy = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP,
                                    cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] != -1).any())


def outline_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Exterior rings of the components of ``mask`` in the pixel-corner frame (COCO's).

    In this frame pixel (x, y) covers [x, x+1) x [y, y+1) and its centre is (x + 0.5, y + 0.5). The
    rings are traced on the mask upsampled twice, so they run a quarter pixel inside the pixel edges
    and cut corners only where components touch diagonally; rasterisers that test pixel centres
    (pycocotools' ``frPyObjects``) reproduce each component, holes filled, exactly. Single pixels and
    1-px lines get rings of positive area.

    Returns
    -------
    list of np.ndarray
        (N, 2) float64 (x, y) rings, N >= 4, coordinates multiples of 0.25; one per component.
    """
    big = np.kron(np.ascontiguousarray(mask, dtype=np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0 for contour in contours]


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
