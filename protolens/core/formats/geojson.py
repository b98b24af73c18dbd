"""GeoJSON (RFC 7946) FeatureCollection of label-map regions, in pixel coordinates.

Each region (4-connected component) of each class is one Feature with a Polygon geometry
``[exterior, *holes]`` and properties ``class_id``, ``class_name`` and ``area_px`` (its pixel count).
Positions are pixel (x, y) with the origin at the top-left corner of the photo and y down; rings run
along pixel edges, so every position is an integer pixel corner and pixel (x, y) covers
[x, x+1) x [y, y+1) (see :mod:`protolens.core.formats.polygons`). There is no CRS; the collection's
``protolens`` member says so. Ignore (255) and background (0) pixels are not exported (they lie in
holes or outside every feature).

The geometry is valid (OGC simple features: shapely ``is_valid``; the features of one class can be
unioned) and rasterising it back, a pixel set when its centre lies inside (GDAL / rasterio
``rasterize`` with an identity transform, or :func:`labelmap_from_geojson`), gives exactly the label
map, ignore pixels as background. Regions are 4-connected: pixels of a class touching only at a
corner are separate features that touch at a vertex. A hole may touch its exterior at one vertex.

Rings are closed (first position repeated last) and hold at least five positions. Winding follows
RFC 7946's right-hand rule applied to the (x, y) numbers as written: an exterior's signed (shoelace)
area is positive, a hole's negative. Drawn over the image, with y pointing down, an exterior
therefore turns clockwise on screen. GIS tools check and display it as counter-clockwise.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from protolens.core.formats import FormatError, check_labelmap, class_id_for, is_size
from protolens.core.formats.polygons import (
    Polygon,
    bulk_allocation,
    labelmap_polygons,
    paint_polygons,
    parse_ring,
    position_lists,
    ring_areas,
)
from protolens.core.labels import LabelSet

COORDINATES = "pixel (x, y), origin top-left, y down"
VERTICES = "pixel corners"
"""Written in the ``protolens`` member: vertices at pixel corners (rings along pixel edges). protolens files
without it (written before sidecar/2) put vertices at pixel centres; they are read in that convention."""


def geojson_document(labelmap: np.ndarray, labels: LabelSet, image_name: str,
                     height: int, width: int, *, regions: list[tuple[int, Any]] | None = None) -> dict[str, Any]:
    """A FeatureCollection (a dict ready for ``json.dump``) of the regions of ``labelmap``.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) uint8 class ids.
    labels : LabelSet
        Names the classes (ids missing from it are named "class <id>").
    image_name : str
        Recorded in the collection's ``protolens`` member with ``height``, ``width`` and the
        coordinate convention.
    height, width : int
        The image size; must match ``labelmap``.
    regions : list of (int, Polygon), optional
        ``labelmap_polygons(labelmap)`` when the caller has traced it already (one tracing for every
        polygon format of an export).

    Raises
    ------
    ValueError
        ``labelmap`` is not (height, width) uint8.
    """
    labelmap = check_labelmap(labelmap, height, width)
    height, width = int(height), int(width)
    regions = labelmap_polygons(labelmap) if regions is None else regions
    with bulk_allocation():
        features = _features(regions, labels)
    return {
        "type": "FeatureCollection",
        "protolens": {"image": image_name, "height": height, "width": width, "coordinates": COORDINATES,
                      "vertices": VERTICES},
        "features": features,
    }


def _features(regions: list[tuple[int, Polygon]], labels: LabelSet) -> list[dict[str, Any]]:
    """One Feature per (class id, polygon), rings closed with integer positions (converted at once)."""
    if not regions:
        return []
    rings = [ring for _, polygon in regions for ring in (polygon.exterior, *polygon.holes)]
    positions = position_lists(rings, np.int64)
    counts = [1 + len(polygon.holes) for _, polygon in regions]
    starts = np.cumsum([0] + counts[:-1])
    # Exteriors have positive and holes negative areas: a polygon's sum is its pixel count.
    areas = np.rint(np.add.reduceat(ring_areas(rings), starts)).astype(np.int64).tolist()
    names = {class_id: labels.name_of(class_id) for class_id in {class_id for class_id, _ in regions}}
    features = []
    for (class_id, _), start, count, area in zip(regions, starts.tolist(), counts, areas, strict=True):
        coordinates = [ring + ring[:1] for ring in positions[start:start + count]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coordinates},
                         "properties": {"class_id": class_id, "class_name": names[class_id], "area_px": area}})
    return features


def labelmap_from_geojson(document: dict[str, Any], height: int, width: int, labels: LabelSet) -> np.ndarray:
    """Paint the features of a FeatureCollection into a new (height, width) uint8 label map.

    Positions are pixel (x, y), origin at the top-left corner, y down, as the module docstring says.
    Files of earlier protolens versions (a ``protolens`` member without ``vertices``) put vertices at pixel
    centres and are read in that convention, exactly as they were written.
    Features are painted in order (later on top) by ``rasterio.features.rasterize`` with an identity
    transform: pixel (x, y) takes a feature's class when its centre (x + 0.5, y + 0.5) lies inside a
    Polygon (or a part of a MultiPolygon) and outside its holes; pixels under a hole keep what earlier
    features painted. Files written by :func:`geojson_document` read back exactly (ignore pixels as
    background). Rings need not be closed; rings of fewer than three positions cover nothing. The
    class comes from ``properties.class_name`` (matched by name; unknown names are added to
    ``labels``), else from ``properties.class_id`` (0..255, used as is).

    Parameters
    ----------
    document : dict
        A parsed GeoJSON FeatureCollection.
    height, width : int
        Size of the label map.
    labels : LabelSet
        Matched and extended by class name.

    Returns
    -------
    np.ndarray
        (height, width) uint8 class ids.

    Raises
    ------
    FormatError
        Not a FeatureCollection, a geometry that is not a Polygon or MultiPolygon, malformed
        coordinates, or a feature without a class name or id.
    ValueError
        ``height`` or ``width`` is not a positive integer.
    """
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection" \
            or not isinstance(document.get("features"), list):
        raise FormatError("not a GeoJSON FeatureCollection with a 'features' list")
    if not (is_size(height) and is_size(width)):
        raise ValueError(f"height and width must be positive integers, not {height!r} and {width!r}")
    shapes: list[tuple[Polygon, int]] = []
    for number, feature in enumerate(document["features"]):
        where = f"GeoJSON feature #{number}"
        if not isinstance(feature, dict):
            raise FormatError(f"{where} is not an object")
        class_id = _feature_class(feature.get("properties"), labels, where)
        shapes += [(polygon, class_id) for polygon in _feature_polygons(feature.get("geometry"), where)]
    labelmap = np.zeros((int(height), int(width)), np.uint8)
    if _centre_vertices(document):
        for polygon, class_id in shapes:
            _paint_centre_polygon(labelmap, polygon, class_id)
        return labelmap
    paint_polygons(labelmap, shapes)
    return labelmap


def _centre_vertices(document: dict[str, Any]) -> bool:
    """A file of an earlier protolens, whose vertices are pixel centres (see :data:`VERTICES`)."""
    member = document.get("protolens")
    return isinstance(member, dict) and "image" in member and "vertices" not in member


def _paint_centre_polygon(labelmap: np.ndarray, polygon: Polygon, value: int) -> None:
    """Paint a polygon of an earlier protolens file: vertex (x, y) was the centre of pixel (x, y); a pixel was
    the polygon's when its centre lay inside or on the exterior and neither inside nor on a hole ring, which
    ``cv2.fillPoly`` draws exactly (single-vertex rings and zero-area lines included)."""
    def fill(ring: np.ndarray) -> np.ndarray:
        mask = np.zeros(labelmap.shape, np.uint8)
        points = np.rint(np.asarray(ring, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [points], 1)
        return mask.astype(bool)

    inside = fill(polygon.exterior)
    for hole in polygon.holes:
        inside &= ~fill(hole)
    labelmap[inside] = value


def _feature_class(properties: Any, labels: LabelSet, where: str) -> int:
    properties = properties if isinstance(properties, dict) else {}
    if properties.get("class_name") is not None:
        return class_id_for(labels, properties["class_name"])
    class_id = properties.get("class_id")
    if isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id <= 255:
        return class_id
    raise FormatError(f"{where}: properties need a 'class_name' or a 'class_id' in 0..255")


def _feature_polygons(geometry: Any, where: str) -> list[Polygon]:
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if kind == "Polygon":
        parts = [coordinates]
    elif kind == "MultiPolygon":
        parts = coordinates if isinstance(coordinates, list) else None
    else:
        raise FormatError(f"{where}: geometry type {kind!r} is not Polygon or MultiPolygon")
    if not parts or not all(isinstance(part, list) and part for part in parts):
        raise FormatError(f"{where}: {kind} needs a non-empty list of rings")
    return [Polygon(parse_ring(part[0], where), [parse_ring(r, where) for r in part[1:]]) for part in parts]

