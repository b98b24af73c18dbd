"""GeoJSON (RFC 7946) FeatureCollection of label-map regions, in pixel coordinates.

Each connected component of each class is one Feature with a Polygon geometry
``[exterior, *holes]`` and properties ``class_id``, ``class_name`` and ``area_px`` (its pixel count).
Positions are pixel (x, y) with the origin at the top-left and y down, rings through pixel centres
(see :mod:`protolens.core.formats.polygons`); there is no CRS, the collection's ``protolens`` member
says so. Ignore (255) and background are not exported.

Rings are closed (first position repeated last) and hold at least four positions: the one-vertex
ring of a single pixel is written as that position four times, a 1-px line as a there-and-back ring.
Winding follows RFC 7946's right-hand rule applied to the (x, y) numbers as written: an exterior's
signed (shoelace) area is positive, a hole's negative. Drawn over the image, with y pointing down,
an exterior therefore turns clockwise on screen. GIS tools check and display it as counter-clockwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protolens.core.formats import FormatError, check_labelmap, class_id_for, is_size, present_classes
from protolens.core.formats.polygons import (
    Polygon,
    label_polygons,
    paint,
    parse_ring,
    polygon_patch,
    ring_area,
)
from protolens.core.labels import LabelSet

COORDINATES = "pixel (x, y), origin top-left, y down"


def geojson_document(labelmap: np.ndarray, labels: LabelSet, image_name: str,
                     height: int, width: int) -> dict[str, Any]:
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

    Raises
    ------
    ValueError
        ``labelmap`` is not (height, width) uint8.
    """
    labelmap = check_labelmap(labelmap, height, width)
    height, width = int(height), int(width)
    features = []
    for class_id in present_classes(labelmap):
        for polygon in label_polygons(labelmap, class_id):
            rings = [_ring(polygon.exterior, exterior=True)] + [_ring(h, exterior=False) for h in polygon.holes]
            area = int(np.count_nonzero(polygon_patch(polygon, height, width)[1]))
            features.append({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {"class_id": class_id, "class_name": labels.name_of(class_id), "area_px": area},
            })
    return {
        "type": "FeatureCollection",
        "protolens": {"image": image_name, "height": height, "width": width, "coordinates": COORDINATES},
        "features": features,
    }


def _ring(points: np.ndarray, exterior: bool) -> list[list[float]]:
    """A closed GeoJSON ring of at least four positions, wound as the module docstring says."""
    area = ring_area(points)
    if (area < 0) if exterior else (area > 0):
        points = points[::-1]
    positions = np.asarray(points, dtype=np.float64).tolist()
    while len(positions) < 3:
        positions.append(positions[-1])
    return positions + [positions[0]]


def labelmap_from_geojson(document: dict[str, Any], height: int, width: int, labels: LabelSet) -> np.ndarray:
    """Paint the features of a FeatureCollection into a new (height, width) uint8 label map.

    Features are painted in order (later on top); each Polygon or MultiPolygon is rasterised with
    :func:`~protolens.core.formats.polygons.rasterise` (exterior filled, holes cleared, pixel-centre
    convention). The class comes from ``properties.class_name`` (matched by name; unknown names are
    added to ``labels``), else from ``properties.class_id`` (0..255, used as is).

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
    labelmap = np.zeros((int(height), int(width)), np.uint8)
    for number, feature in enumerate(document["features"]):
        where = f"GeoJSON feature #{number}"
        if not isinstance(feature, dict):
            raise FormatError(f"{where} is not an object")
        class_id = _feature_class(feature.get("properties"), labels, where)
        for polygon in _feature_polygons(feature.get("geometry"), where):
            paint(labelmap, polygon, class_id)
    return labelmap


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

