"""Exporting one result as files other tools read: mask PNG, heatmap .npy and a provenance JSON.

``DIR/<stem>.mask.png`` (uint8 0/255, photo size), ``DIR/<stem>.heatmap.npy`` (float32 (height, width)
in [0, 1], photo size) and ``DIR/<stem>.json`` (schema protolens.result/1: image path and sha256,
backend id and version, weights id and sha256 or "none", parameters, threshold and its semantics, time).
All coordinates are (row, col) = (y, x) with the origin at the photo's top-left. Every write is atomic.

A result with typed layers also gets their files, named as in the result store with the photo's stem in front
(``<stem>.heatmaps.npz`` named heatmaps, ``<stem>.labelmap.npy``, ``<stem>.regions.npz``,
``<stem>.keypoints.npz``; the JSON's ``layers`` section describes them as the sidecar does) and, for a label
map, ``<stem>.labels.png``: its class ids at the photo size (uint8, nearest; 0 = background) with the class
names in the JSON (``label_map.classes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_bytes_atomic, write_json_atomic, write_npy_atomic, write_png_atomic
from protolens.core.errors import StoreWriteError
from protolens.core.records import ImageMeta, ResultRecord, result_mask, utc_now
from protolens.core.thresholds import mask_to_png_array
from protolens.core.types import Heatmap

RESULT_SCHEMA = "protolens.result/1"


def export_result(out_dir: str | Path, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap,
                  mask: np.ndarray | None = None, probability: Heatmap | None = None, *,
                  stem: str | None = None, layers: Any = None) -> list[Path]:
    """Write the export trio for one photo into ``out_dir`` (see the module docstring).

    ``stem`` names the files (``<stem>.mask.png`` ...); default the photo's stem. A batch whose photos share a
    stem (``photo.bmp``, ``photo.webp``) passes distinct stems (see ``protolens.services.batch.export_stems``).

    The heatmap is written at the photo's resolution; the mask defaults to :func:`result_mask`. A probability
    map, when given, is written too (``<stem>.probability.npy``, float32, photo size).
    ``layers`` (:class:`~protolens.core.layers.ResultLayers`), when given, adds the layer files (see the
    module docstring). Returns the written paths [mask, heatmap, sidecar(, probability)(, layer files)].
    Raises :class:`StoreWriteError`.
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
    if layers:
        paths += _write_layers(out_dir, stem, layers, document)
    write_json_atomic(paths[2], document)
    return paths


def _write_layers(out_dir: Path, stem: str, layers: Any, document: dict[str, Any]) -> list[Path]:
    """Write ``layers``' files as ``<stem>.<suffix>`` (+ ``<stem>.labels.png``) and describe them in ``document``."""
    entries, files = layers.to_files()
    written = []
    for suffix, data in files.items():
        written.append(out_dir / f"{stem}.{suffix}")
        write_bytes_atomic(written[-1], data)
    for entry in entries.values():
        if isinstance(entry, dict) and "file" in entry:
            entry["file"] = f"{stem}.{entry['file']}"
    document["layers"] = entries
    label_map = layers.label_map
    if label_map is not None and len(label_map.classes) <= 256:
        written.append(out_dir / f"{stem}.labels.png")
        write_png_atomic(written[-1], np.clip(label_map.full_resolution(), 0, 255).astype(np.uint8))
        document["label_map"] = {"file": written[-1].name, "encoding": "uint8 class id, 0 = background",
                                 "classes": list(label_map.classes)}
    return written


def exported_files(document: dict[str, Any]) -> list[str]:
    """The file names (relative to the document's folder) an export document of :func:`export_result` names:
    mask, heatmap, probability, layer files and the label-map PNG."""
    entries = [document.get(name) for name in ("mask", "heatmap", "probability", "label_map")]
    entries += list((document.get("layers") or {}).values())
    return [str(entry["file"]) for entry in entries if isinstance(entry, dict) and "file" in entry]
