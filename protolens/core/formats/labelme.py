"""labelme JSON (the format of labelme 5.4.1).

labelme polygons have no holes. Each connected component of each class becomes a polygon shape
labelled with the class name, followed immediately by one ``_background_`` shape per hole (the name
``labelme2voc`` paints as background). Rings run through pixel centres
(:mod:`protolens.core.formats.polygons`), the convention of labelme's own rasteriser (PIL's
``ImageDraw.polygon`` with outline), so painting the shapes in order reproduces the label map
exactly. Shapes are ordered by decreasing polygon area, which puts every region before the regions
inside its holes; the few pixels no order paints right (regions of two classes that cross into
each other's holes diagonally) are repainted at the end by 1-px row shapes. Rings of fewer than
three vertices (single pixels, 1-px lines) repeat their last vertex, as labelme wants three points
per polygon. Ignore (255) and background are not exported: ignore pixels come back as background.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from protolens.core.formats import FormatError, check_labelmap, class_id_for, is_size, present_classes
from protolens.core.formats.polygons import Polygon, label_polygons, paint, parse_ring, ring_area
from protolens.core.labels import BACKGROUND, IGNORE, LabelSet

LABELME_VERSION = "5.4.1"
BACKGROUND_LABEL = "_background_"
#: Shape types that mark points or lines, not areas; they are skipped on import.
SKIPPED_SHAPES = ("point", "line", "linestrip", "points")


def labelme_document(labelmap: np.ndarray, labels: LabelSet, image_path: str,
                     height: int, width: int) -> dict[str, Any]:
    """A labelme document (a dict ready for ``json.dump``) of the regions of ``labelmap``.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) uint8 class ids.
    labels : LabelSet
        Names the classes (ids missing from it are named "class <id>").
    image_path : str
        ``imagePath``: the photo's path relative to the JSON file, as labelme stores it.
    height, width : int
        The image size; must match ``labelmap``.

    Returns
    -------
    dict
        ``version``, ``flags``, ``shapes``, ``imagePath``, ``imageData`` (None: the photo is not
        embedded), ``imageHeight``, ``imageWidth``.

    Raises
    ------
    ValueError
        ``labelmap`` is not (height, width) uint8.
    """
    labelmap = check_labelmap(labelmap, height, width)
    height, width = int(height), int(width)
    regions = [(class_id, polygon)
               for class_id in present_classes(labelmap) for polygon in label_polygons(labelmap, class_id)]
    regions.sort(key=lambda region: -abs(ring_area(region[1].exterior)))
    painting = []
    for class_id, polygon in regions:
        painting.append((class_id, polygon.exterior))
        painting += [(BACKGROUND, hole) for hole in polygon.holes]
    target = np.where(labelmap == IGNORE, BACKGROUND, labelmap).astype(np.uint8)
    painting += _fixes(painting, target)
    shapes = [_shape(BACKGROUND_LABEL if value == BACKGROUND else labels.name_of(value), ring)
              for value, ring in painting]
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None, "imageHeight": height, "imageWidth": width}


def _fixes(painting: list[tuple[int, np.ndarray]], target: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Row runs (1-px line rings) that repaint the pixels ``painting`` gets wrong.

    With 8-connected regions of every class, a region can pass diagonally into another's hole while
    that other lies partly in its own hole; no order of exteriors and holes then paints every pixel
    right. Such pixels are rare; they are painted last, one run of equal target pixels per row.
    """
    painted = np.zeros_like(target)
    for value, ring in painting:
        paint(painted, Polygon(ring), value)
    ys, xs = np.nonzero(painted != target)
    values = target[ys, xs]
    breaks = np.flatnonzero((np.diff(ys) != 0) | (np.diff(xs) != 1) | (np.diff(values) != 0)) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(xs)] - 1
    return [(int(values[a]), np.array([[xs[a], ys[a]], [xs[b], ys[b]]], np.float64))
            for a, b in zip(starts, ends, strict=True) if len(xs)]


def _shape(label: str, ring: np.ndarray) -> dict[str, Any]:
    points = np.asarray(ring, dtype=np.float64).tolist()
    while len(points) < 3:
        points.append(points[-1])
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": "polygon",
            "flags": {}, "mask": None}


def labelmap_from_labelme(document: dict[str, Any], labels: LabelSet, height: int | None = None,
                          width: int | None = None) -> np.ndarray:
    """Paint the shapes of a labelme document, in order, into a new uint8 label map.

    "polygon" shapes (and shapes without a type) are filled in the pixel-centre convention,
    "rectangle" from two corner points, "circle" from its centre and a point on the rim; "point",
    "line" and "linestrip" shapes are skipped. ``_background_`` (and "background") paints 0, other
    labels their class in ``labels``, added if unknown.

    Parameters
    ----------
    document : dict
        A parsed labelme JSON document.
    labels : LabelSet
        Matched and extended by label name.
    height, width : int, optional
        Map size; by default ``imageHeight`` and ``imageWidth`` of the document.

    Returns
    -------
    np.ndarray
        (height, width) uint8 class ids.

    Raises
    ------
    FormatError
        No size, no ``shapes`` list, an unsupported shape type, or a shape with a missing label or
        malformed points.
    """
    if not isinstance(document, dict) or not isinstance(document.get("shapes"), list):
        raise FormatError("not a labelme document: no 'shapes' list")
    height = document.get("imageHeight") if height is None else height
    width = document.get("imageWidth") if width is None else width
    if not (is_size(height) and is_size(width)):
        raise FormatError(f"labelme document: imageHeight and imageWidth must be positive integers, "
                          f"not {height!r} and {width!r}")
    height, width = int(height), int(width)
    labelmap = np.zeros((height, width), np.uint8)
    for number, shape in enumerate(document["shapes"]):
        where = f"labelme shape #{number}"
        if not isinstance(shape, dict):
            raise FormatError(f"{where} is not an object")
        kind = shape.get("shape_type") or "polygon"
        if kind in SKIPPED_SHAPES:
            continue
        class_id = class_id_for(labels, shape.get("label"))
        _paint_shape(labelmap, kind, parse_ring(shape.get("points"), where), class_id, where)
    return labelmap


def _paint_shape(labelmap: np.ndarray, kind: str, points: np.ndarray, value: int, where: str) -> None:
    """Paint one area shape (polygon, rectangle or circle) into ``labelmap`` in place."""
    if kind == "polygon":
        return paint(labelmap, Polygon(points), value)
    if kind not in ("rectangle", "circle"):
        raise FormatError(f"{where}: unsupported shape type {kind!r}")
    if len(points) != 2:
        raise FormatError(f"{where}: a {kind} needs exactly two points, not {len(points)}")
    if kind == "rectangle":
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return paint(labelmap, Polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])), value)
    centre = np.rint(points[0]).astype(int)
    radius = int(round(float(np.hypot(*(points[1] - points[0])))))
    cv2.circle(labelmap, (int(centre[0]), int(centre[1])), radius, int(value), thickness=-1)
