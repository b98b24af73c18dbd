"""labelme JSON (the format of labelme 5.4.1, read by labelme 6 too).

labelme polygons have no holes. Each region (4-connected component, see
:mod:`protolens.core.formats.polygons`) of each class becomes a polygon shape labelled with the class
name, followed immediately by one ``_background_`` shape per hole (the name ``labelme2voc`` paints as
background). Shapes are ordered by decreasing exterior area, which puts every region before the
regions inside its holes, so painting the shapes in order, as labelme's ``shapes_to_label`` does,
reproduces the label map exactly. Ignore (255) and background are not exported: ignore pixels come
back as background.

Vertex convention
-----------------
Points are (x, y), origin top-left, y down, in labelme's pixel frame: the centre of pixel (x, y) is at
the integer point (x, y). labelme rasterises a polygon with PIL (``ImageDraw.polygon(points, fill=1,
outline=1)``), which converts vertices to integers before drawing, fills the integer points inside
and draws the outline through integer points. Each ring is therefore the region's pixel-edge ring
moved 3/8 px into the area it bounds (:func:`~protolens.core.formats.polygons.inset_ring`) and then
by (-3/8, -3/8): every coordinate is p or p + 1/4 where p is the pixel at that corner of the ring.
Truncating (current Pillow), flooring or rounding it gives p, so PIL draws the ring through the
centres of the region's boundary pixels, and its outline and fill cover exactly the region's pixels
(for a hole ring, the hole's). Read as exact geometry, the ring holds the centres of exactly those
pixels too (inside it or on its top and left edges).

Every ring keeps the 4 or more distinct vertices of the edge-traced ring (single pixels and 1-px lines
included) and no later vertex equals the first; labelme rings are implicitly closed, so the first
vertex is not repeated. Opening and saving a file in labelme 5.4.1, which drops points equal to the
first of a shape, thus changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from protolens.core.formats import FormatError, check_labelmap, class_id_for, is_size
from protolens.core.formats.polygons import (
    bulk_allocation,
    inset_rings,
    labelmap_polygons,
    parse_ring,
    position_lists,
    ring_areas,
)
from protolens.core.labels import LabelSet

LABELME_VERSION = "5.4.1"
BACKGROUND_LABEL = "_background_"
#: Shape types that mark points or lines, not areas; they are skipped on import.
SKIPPED_SHAPES = ("point", "line", "linestrip", "points")
#: How far labelme rings run inside the pixel edges, before the shift (see the module docstring).
INSET = 0.375


def labelme_document(labelmap: np.ndarray, labels: LabelSet, image_path: str,
                     height: int, width: int, *, regions: list[tuple[int, Any]] | None = None) -> dict[str, Any]:
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
    regions : list of (int, Polygon), optional
        ``labelmap_polygons(labelmap)`` when the caller has traced it already.

    Returns
    -------
    dict
        ``version``, ``flags``, ``shapes`` (polygons in the vertex convention of the module
        docstring), ``imagePath``, ``imageData`` (None: the photo is not embedded), ``imageHeight``,
        ``imageWidth``.

    Raises
    ------
    ValueError
        ``labelmap`` is not (height, width) uint8.
    """
    labelmap = check_labelmap(labelmap, height, width)
    regions = labelmap_polygons(labelmap) if regions is None else regions
    order = np.argsort(-ring_areas([polygon.exterior for _, polygon in regions]), kind="stable")
    with bulk_allocation():
        painting = []
        for index in order.tolist():
            class_id, polygon = regions[index]
            painting.append((labels.name_of(class_id), polygon.exterior))
            painting += [(BACKGROUND_LABEL, hole) for hole in polygon.holes]
        points = position_lists(labelme_points_of([ring for _, ring in painting]))
        shapes = [{"label": label, "points": ring, "group_id": None, "description": "", "shape_type": "polygon",
                   "flags": {}, "mask": None} for (label, _), ring in zip(painting, points, strict=True)]
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}


def labelme_points(ring: np.ndarray) -> np.ndarray:
    """labelme points (N, 2) float64 (x, y) of an edge-traced (N, 2) ring; see the module docstring."""
    return labelme_points_of([ring])[0]


def labelme_points_of(rings: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`labelme_points` of many rings, computed at once."""
    return [ring - INSET for ring in inset_rings(rings, INSET)]


def labelmap_from_labelme(document: dict[str, Any], labels: LabelSet, height: int | None = None,
                          width: int | None = None) -> np.ndarray:
    """Paint the shapes of a labelme document, in order, into a new uint8 label map.

    Shapes are drawn as labelme's ``shape_to_mask`` draws them, with PIL and ``outline=1, fill=1``
    (pixel centres at integer (x, y) points, origin top-left, y down): "polygon" shapes (and shapes
    without a type) with ``ImageDraw.polygon``, "rectangle" from two corner points with
    ``ImageDraw.rectangle``, "circle" from its centre and a point on the rim with
    ``ImageDraw.ellipse``; "point", "line" and "linestrip" shapes are skipped. Unlike labelme,
    polygons of one or two points are accepted (drawn as a point or a line). ``_background_`` (and
    "background") paints 0, other labels their class in ``labels``, added if unknown. Documents
    written by :func:`labelme_document` read back exactly (ignore pixels as background).

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
    """Paint one area shape (polygon, rectangle or circle) into ``labelmap`` in place, as labelme does."""
    if kind not in ("polygon", "rectangle", "circle"):
        raise FormatError(f"{where}: unsupported shape type {kind!r}")
    if kind != "polygon" and len(points) != 2:
        raise FormatError(f"{where}: a {kind} needs exactly two points, not {len(points)}")
    if kind == "polygon":
        box = np.concatenate([points, points[:1]]) if len(points) == 1 else points
    elif kind == "rectangle":
        box = np.array([points.min(axis=0), points.max(axis=0)])
    else:
        radius = math.hypot(*(points[1] - points[0]))
        box = np.array([points[0] - radius, points[0] + radius])
    height, width = labelmap.shape
    # Draw on the window around the shape only. Shifting by whole pixels from a non-negative origin
    # keeps what PIL draws, however it turns coordinates into integers.
    x0, y0 = (max(0, math.floor(v)) for v in box.min(axis=0))
    x1, y1 = (min(size, math.floor(v) + 2) for v, size in zip(box.max(axis=0), (width, height), strict=True))
    if x1 <= x0 or y1 <= y0:
        return
    mask = Image.new("1", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(mask)
    xy = [(float(x), float(y)) for x, y in box - (x0, y0)]
    if kind == "polygon":
        draw.polygon(xy, outline=1, fill=1)
    elif kind == "rectangle":
        draw.rectangle(xy, outline=1, fill=1)
    else:
        draw.ellipse(xy, outline=1, fill=1)
    labelmap[y0:y1, x0:x1][np.asarray(mask)] = value
