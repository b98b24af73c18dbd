"""COCO instance-segmentation JSON.

Each (image, class present) pair is one annotation whose segmentation covers every pixel of that
class in the image; background (0) and ignore (255) are not annotated, so ignore pixels come back
as background. Category ids are the class ids and names the class names.

Segmentation encodings:

``"rle"``
    Compressed RLE from ``pycocotools.mask.encode``, ``counts`` as an ASCII string. Lossless.
``"polygon"``
    One flat ``[x1, y1, x2, y2, ...]`` ring per region (4-connected component) of the class, along
    the pixel edges: (x, y) with the origin at the photo's top-left corner, y down, pixel (x, y)
    covering [x, x+1) x [y, y+1), so every vertex is an integer pixel corner (the rings of
    :mod:`protolens.core.formats.polygons`, the same as the GeoJSON export's exteriors). Rings are
    open (COCO closes them) and hold at least 4 vertices. pycocotools (``frPyObjects``,
    ``annToMask``) fills exactly the pixels of such rings, so they read back exactly. COCO polygons
    cannot carry holes, so an annotation whose class has a region enclosing other pixels (any other
    value, background, another class or ignore) is written as RLE instead. Lossless too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from protolens.core.formats import FormatError, check_labelmap, class_id_for, is_size, present_classes
from protolens.core.formats.polygons import mask_polygons
from protolens.core.labels import LabelSet


@dataclass
class CocoImage:
    """One image to export: COCO ``id``, ``file_name``, size and its (height, width) uint8 label map."""

    id: int
    file_name: str
    height: int
    width: int
    labelmap: np.ndarray


def coco_document(images: list[CocoImage], labels: LabelSet, encoding: str = "rle") -> dict[str, Any]:
    """A COCO JSON document (a dict ready for ``json.dump``) for ``images``.

    Parameters
    ----------
    images : list of CocoImage
        Images with distinct ids; each label map must be (height, width) uint8.
    labels : LabelSet
        One category per class. Ids found in a map but missing from ``labels`` get a category named
        ``labels.name_of(id)`` ("class <id>") rather than being dropped.
    encoding : {"rle", "polygon"}
        Segmentation encoding; see the module docstring.

    Returns
    -------
    dict
        ``info``, ``images`` ({id, file_name, height, width}), ``categories`` ({id, name,
        supercategory "label"}) and ``annotations`` ({id (1-based), image_id, category_id,
        segmentation, area (pixel count), bbox [x, y, w, h] floats, iscrowd 0}).

    Raises
    ------
    ValueError
        Unknown ``encoding``, duplicate image ids, or a label map of the wrong shape or dtype.
    """
    if encoding not in ("rle", "polygon"):
        raise ValueError(f"COCO encoding must be 'rle' or 'polygon', not {encoding!r}")
    if len({image.id for image in images}) != len(images):
        raise ValueError("COCO image ids must be distinct")
    category_ids = {c.id for c in labels.classes}
    annotations: list[dict[str, Any]] = []
    for image in images:
        labelmap = check_labelmap(image.labelmap, image.height, image.width)
        for class_id in present_classes(labelmap):
            category_ids.add(class_id)
            annotation = _annotation(labelmap == class_id, encoding)
            annotations.append({"id": len(annotations) + 1, "image_id": int(image.id), "category_id": class_id,
                                **annotation, "iscrowd": 0})
    return {
        "info": {"description": "protolens label maps", "version": "1.0",
                 "date_created": datetime.now(UTC).isoformat(timespec="seconds")},
        "images": [{"id": int(i.id), "file_name": str(i.file_name), "height": int(i.height), "width": int(i.width)}
                   for i in images],
        "categories": [{"id": cid, "name": labels.name_of(cid), "supercategory": "label"}
                       for cid in sorted(category_ids)],
        "annotations": annotations,
    }


def _annotation(mask: np.ndarray, encoding: str) -> dict[str, Any]:
    """``segmentation``, ``area`` and ``bbox`` of one non-empty bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    polygons = mask_polygons(mask) if encoding == "polygon" else []
    segmentation: Any
    if polygons and not any(polygon.holes for polygon in polygons):
        segmentation = [polygon.exterior.ravel().tolist() for polygon in polygons]
    else:
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {"segmentation": segmentation, "area": int(np.count_nonzero(mask)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


def labelmap_from_coco(document: dict[str, Any], image: int | str, labels: LabelSet) -> np.ndarray:
    """The label map of one image of a COCO document.

    Parameters
    ----------
    document : dict
        A parsed COCO JSON document.
    image : int or str
        The image's ``id`` (int) or ``file_name`` (str).
    labels : LabelSet
        Categories are matched by name; unknown names are added (:meth:`LabelSet.ensure`) and the
        map holds ``labels``' ids, not COCO's category ids. "background" paints 0.

    Returns
    -------
    np.ndarray
        (height, width) uint8; annotations are painted in document order, later ones on top.

    Raises
    ------
    FormatError
        The document lacks images or categories, the image is not in it, or an annotation is
        malformed (unknown category, bad RLE or polygon, size differing from the image's).
    """
    entry = _find_image(document, image)
    height, width = entry.get("height"), entry.get("width")
    if not (is_size(height) and is_size(width)):
        raise FormatError(f"COCO image {image!r}: height and width must be positive integers")
    names = _category_names(document)
    labelmap = np.zeros((height, width), np.uint8)
    annotations = document.get("annotations", [])
    if not isinstance(annotations, list):
        raise FormatError("COCO 'annotations' must be a list")
    for number, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise FormatError(f"COCO annotation #{number} is not an object")
        if annotation.get("image_id") != entry.get("id"):
            continue
        where = f"COCO annotation {annotation.get('id', f'#{number}')!r}"
        if annotation.get("category_id") not in names:
            raise FormatError(f"{where}: unknown category_id {annotation.get('category_id')!r}")
        class_id = class_id_for(labels, names[annotation["category_id"]])
        mask = _decode(annotation.get("segmentation"), height, width, where)
        labelmap[mask] = class_id
    return labelmap


def _find_image(document: Any, image: int | str) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise FormatError("not a COCO document: no 'images' list")
    key = "file_name" if isinstance(image, str) else "id"
    for entry in document["images"]:
        if isinstance(entry, dict) and entry.get(key) == image:
            return entry
    raise FormatError(f"no image with {key} {image!r} in the COCO document")


def _category_names(document: dict[str, Any]) -> dict[Any, str]:
    categories = document.get("categories")
    if not isinstance(categories, list):
        raise FormatError("not a COCO document: no 'categories' list")
    try:
        return {c["id"]: c["name"] for c in categories}
    except (KeyError, TypeError):
        raise FormatError("COCO categories must be objects with 'id' and 'name'") from None


def _decode(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """The (height, width) bool mask of a COCO segmentation (RLE dict or polygon list)."""
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
            raise FormatError(f"{where}: RLE size {size!r} differs from the image's [{height}, {width}]")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise FormatError(f"{where}: RLE counts must be non-negative integers summing to {height * width}")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, (str, bytes)):
            counts = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
            if sum(_rle_runs(counts, where)) != height * width:
                raise FormatError(f"{where}: compressed RLE does not cover the {height}x{width} image")
            rle = {"size": [height, width], "counts": counts}
        else:
            raise FormatError(f"{where}: RLE 'counts' must be a string or a list of integers")
    elif isinstance(segmentation, list) and segmentation:
        for ring in segmentation:
            if (not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2
                    or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in ring)):
                raise FormatError(f"{where}: a polygon must be a flat list of at least 3 (x, y) number pairs")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        raise FormatError(f"{where}: segmentation must be an RLE object or a non-empty list of polygons")
    return mask_utils.decode(rle).astype(bool)


def _rle_runs(counts: bytes, where: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (the format of pycocotools' ``rleToString``)."""
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        code = char - 48
        if not 0 <= code < 64:
            raise FormatError(f"{where}: compressed RLE has an invalid character {chr(char)!r}")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise FormatError(f"{where}: compressed RLE has a negative run")
        runs.append(value)
        value = shift = 0
    if shift:
        raise FormatError(f"{where}: compressed RLE ends in the middle of a number")
    return runs
