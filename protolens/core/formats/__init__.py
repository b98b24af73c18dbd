"""Export and import of label maps in other tools' formats.

Modules
-------
png
    ``<stem>.labels.png``: 8-bit greyscale whose values are the class ids (every PNG reader returns ids);
    ``<stem>.color.png``: the same map as a palette PNG in the class colours, for looking at;
    ``labels.txt`` (``id name``) and ``labels.csv`` (``id,name,r,g,b``). Old palette label PNGs still read.
cleanup
    ``--min-area`` / ``--fill-holes``: specks dropped and small holes filled before polygon formats.
coco
    COCO instance JSON: one annotation per image and class, compressed RLE or polygons along pixel
    edges (RLE for classes with holes).
geojson
    GeoJSON FeatureCollection in pixel coordinates: one Polygon feature per 4-connected region, rings
    along pixel edges (integer corners), holes as interior rings.
labelme
    labelme JSON (version 5.4.1): one polygon shape per region, holes as ``_background_`` shapes, in
    a vertex convention that labelme's own rasteriser draws back exactly.
cover
    Per-image cover table (pixels, cover %, cm²) and its CSV file.
polygons
    Shared geometry: regions of a label map to polygons along pixel edges (``rasterio.features``) and
    back; its docstring states the convention of each format.

A label map is a (height, width) uint8 array of class ids: 0 background, 1..254 classes, 255 ignore.
Pixel coordinates are (x, y), x to the right and y down, origin at the top-left corner of the image;
pixel (x, y) covers [x, x+1) x [y, y+1).
"""

from __future__ import annotations

import numbers

import numpy as np

from protolens.core.errors import ProtolensError
from protolens.core.labels import BACKGROUND, IGNORE, LabelError, LabelSet

#: Names that mean background on import (labelme's ``labelme2voc`` uses ``_background_``).
BACKGROUND_NAMES = ("background", "_background_")


class FormatError(ProtolensError):
    """An input file is malformed; the message names the file part that is wrong and why."""


def check_labelmap(labelmap: np.ndarray, height: int | None = None, width: int | None = None) -> np.ndarray:
    """``labelmap`` as a (height, width) uint8 array.

    Raises
    ------
    ValueError
        It is not two-dimensional uint8, or its shape differs from a given ``height``/``width``.
    """
    array = np.asarray(labelmap)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"a label map is a 2-D uint8 array, not {array.ndim}-D {array.dtype}")
    if height is not None and width is not None and array.shape != (height, width):
        raise ValueError(f"label map shape {array.shape} differs from (height, width) ({height}, {width})")
    return array


def is_size(value: object) -> bool:
    """Whether ``value`` is a positive integer (Python or NumPy, not bool): a valid height or width."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0


def present_classes(labelmap: np.ndarray) -> list[int]:
    """Ids of the classes in ``labelmap``, ascending, without background (0) and ignore (255)."""
    counts = np.bincount(labelmap.ravel(), minlength=256)
    return [int(i) for i in np.flatnonzero(counts) if i not in (BACKGROUND, IGNORE)]


def class_id_for(labels: LabelSet, name: object) -> int:
    """The id an imported class name maps to; unknown names are added to ``labels``.

    A class of ``labels`` with that name wins; otherwise "background"/"_background_" give 0 and
    "ignore" gives 255, and any other name is added with :meth:`LabelSet.ensure`.

    Raises
    ------
    FormatError
        The name is not a non-empty string, or ``labels`` cannot take another class.
    """
    if not isinstance(name, str) or not name.strip():
        raise FormatError(f"class name must be a non-empty string, not {name!r}")
    name = name.strip()
    label = labels.by_name(name)
    if label is not None:
        return label.id
    if name in BACKGROUND_NAMES:
        return BACKGROUND
    if name == "ignore":
        return IGNORE
    try:
        return labels.ensure(name).id
    except LabelError as exc:
        raise FormatError(f"cannot add class {name!r}: {exc}") from None
