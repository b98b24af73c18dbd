"""Cover table: pixels, cover % and area per class and image, and its CSV file.

Cover % is relative to the pixels that are not ignore (255), so the rows of one image (background
included) sum to 100; an image whose pixels are all ignore has 0 % everywhere. Areas in cm² need the
scale in pixels per centimetre; without it the ``area_cm2`` cell is empty.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_bytes_atomic
from protolens.core.formats import check_labelmap, present_classes
from protolens.core.labels import BACKGROUND, IGNORE, LabelSet

CSV_COLUMNS = ("image", "class_id", "class_name", "pixels", "cover_percent", "area_cm2")


def cover_rows(image_name: str, labelmap: np.ndarray, labels: LabelSet,
               px_per_cm: float | None = None) -> list[dict[str, Any]]:
    """Cover of each class in one image.

    Parameters
    ----------
    image_name : str
        Written in the ``image`` column.
    labelmap : np.ndarray
        (height, width) uint8 class ids.
    labels : LabelSet
        One row per class, in its order, after a "background" row (class_id 0). Ids present in
        the map but not in ``labels`` get a row too (named "class <id>"), so no pixels go missing.
    px_per_cm : float, optional
        Scale; ``area_cm2`` = pixels / px_per_cm², or None when not given.

    Returns
    -------
    list of dict
        Keys ``image``, ``class_id``, ``class_name``, ``pixels`` (int), ``cover_percent`` (float),
        ``area_cm2`` (float or None).

    Raises
    ------
    ValueError
        ``labelmap`` is not 2-D uint8, or ``px_per_cm`` is not positive.
    """
    labelmap = check_labelmap(labelmap)
    if px_per_cm is not None and not px_per_cm > 0:
        raise ValueError(f"px_per_cm must be positive, not {px_per_cm!r}")
    counts = np.bincount(labelmap.ravel(), minlength=256)
    counted = int(labelmap.size - counts[IGNORE])
    ids = [BACKGROUND] + [c.id for c in labels.classes]
    ids += [i for i in present_classes(labelmap) if i not in ids]
    rows = []
    for class_id in ids:
        pixels = int(counts[class_id])
        rows.append({
            "image": image_name,
            "class_id": class_id,
            "class_name": labels.name_of(class_id),
            "pixels": pixels,
            "cover_percent": 100.0 * pixels / counted if counted else 0.0,
            "area_cm2": pixels / px_per_cm ** 2 if px_per_cm is not None else None,
        })
    return rows


def cover_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of cover rows: header ``image,class_id,class_name,pixels,cover_percent,area_cm2``.

    ``cover_percent`` has four decimals, ``area_cm2`` six, or is empty when None.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        area = row.get("area_cm2")
        writer.writerow([row["image"], row["class_id"], row["class_name"], row["pixels"],
                         f"{row['cover_percent']:.4f}", "" if area is None else f"{area:.6f}"])
    return buffer.getvalue()


def write_cover_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write :func:`cover_csv` of ``rows`` to ``path`` as UTF-8, atomically (raises ``StoreWriteError``)."""
    write_bytes_atomic(path, cover_csv(rows).encode("utf-8"))
