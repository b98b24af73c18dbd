"""Exporting one result as files other tools read: mask PNG, heatmap .npy and a provenance JSON.

``DIR/<stem>.mask.png`` (uint8 0/255, photo size), ``DIR/<stem>.heatmap.npy`` (float32 (height, width)
in [0, 1], photo size) and ``DIR/<stem>.json`` (schema protolens.result/1: image path and sha256,
backend id and version, weights id and sha256 or "none", parameters, threshold and its semantics, time).
All coordinates are (row, col) = (y, x) with the origin at the photo's top-left. Every write is atomic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protolens.core.atomic import write_json_atomic, write_npy_atomic, write_png_atomic
from protolens.core.errors import StoreWriteError
from protolens.core.records import ImageMeta, ResultRecord, result_mask, utc_now
from protolens.core.thresholds import mask_to_png_array
from protolens.core.types import Heatmap

RESULT_SCHEMA = "protolens.result/1"


def export_result(out_dir: str | Path, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap,
                  mask: np.ndarray | None = None, probability: Heatmap | None = None, *,
                  stem: str | None = None) -> list[Path]:
    """Write the export trio for one photo into ``out_dir`` (see the module docstring).

    ``stem`` names the files (``<stem>.mask.png`` ...); default the photo's stem. A batch whose photos share a
    stem (``photo.bmp``, ``photo.webp``) passes distinct stems (see ``protolens.services.batch.export_stems``).

    The heatmap is written at the photo's resolution; the mask defaults to :func:`result_mask`. A probability
    map, when given, is written too (``<stem>.probability.npy``, float32, photo size).
    Returns the written paths [mask, heatmap, sidecar(, probability)]. Raises :class:`StoreWriteError`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreWriteError(f"{out_dir}: exists and is not a folder")
    full = heatmap.full_resolution()
    probability_full = probability.full_resolution() if probability is not None else None
    if mask is None:
        mask = result_mask(full, record, probability_full)
    stem = stem or meta.path.stem
    paths = [out_dir / f"{stem}.mask.png", out_dir / f"{stem}.heatmap.npy", out_dir / f"{stem}.json"]
    write_png_atomic(paths[0], mask_to_png_array(mask))
    write_npy_atomic(paths[1], full.astype(np.float32, copy=False))
    document = {"schema": RESULT_SCHEMA, "image": meta.to_json(), **record.to_json(),
                "mask": {"file": paths[0].name, "encoding": "uint8 0=background 255=foreground"},
                "heatmap": {"file": paths[1].name, "dtype": "float32", "shape": [meta.height, meta.width],
                            "range": [0.0, 1.0]},
                "coordinates": "row, col (y, x); origin top-left", "exported": utc_now()}
    if probability_full is not None:
        paths.append(out_dir / f"{stem}.probability.npy")
        write_npy_atomic(paths[3], probability_full.astype(np.float32, copy=False))
        document["probability"] = {"file": paths[3].name, "dtype": "float32", "shape": [meta.height, meta.width]}
    write_json_atomic(paths[2], document)
    return paths
