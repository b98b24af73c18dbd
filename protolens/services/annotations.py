"""Exporting the masks of the per-photo result store, and importing masks into the editor.

For each photo the exported label map is its edited annotation if it has one, else the current result's
thresholded mask (as the project's first class), whether it came from the editor, the GUI or
``protolens segment``. Photos with neither are skipped and listed.

Files written into the output folder (all atomically):

====================  =====================================================================
png                   ``<stem>.labels.png`` indexed PNG (palette = class colours) + ``labels.txt``
coco                  ``annotations.coco.json`` (all photos; RLE or polygons)
geojson               ``<stem>.geojson`` FeatureCollection, pixel coordinates, origin top-left
labelme               ``<stem>.json`` labelme format, ``imagePath`` relative to the output folder
cover                 ``cover.csv`` per photo x class: pixels, cover %, cm² when a scale is set
(always)              ``provenance.json``: per photo, where its mask came from and its edits
====================  =====================================================================
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.annotation import load_annotation
from protolens.core.atomic import write_bytes_atomic, write_json_atomic
from protolens.core.errors import ImageReadError, ProtolensError
from protolens.core.formats import FormatError
from protolens.core.formats.coco import CocoImage, coco_document, labelmap_from_coco
from protolens.core.formats.cover import cover_rows, write_cover_csv
from protolens.core.formats.geojson import geojson_document, labelmap_from_geojson
from protolens.core.formats.labelme import labelmap_from_labelme, labelme_document
from protolens.core.formats.png import labels_txt, read_label_png, write_label_png
from protolens.core.hashing import sha256_file
from protolens.core.imageio import expand_paths, image_size
from protolens.core.labels import LabelSet, Project
from protolens.core.store import ImageMeta, ResultStore, utc_now

FORMATS = ("png", "coco", "geojson", "labelme", "cover")


@dataclass
class PhotoMask:
    """A photo's label map to export, with its provenance."""

    meta: ImageMeta
    labels: np.ndarray
    provenance: dict[str, Any]


@dataclass
class ExportSummary:
    """Counts and files of an export; ``skipped``/``failed`` hold (photo, reason); ``notes`` what the user
    should know about the files written (e.g. COCO polygons that had to be RLE)."""

    exported: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        line = f"exported {self.exported}, skipped {len(self.skipped)} (no mask), failed {len(self.failed)}"
        return "; ".join([line, *self.notes])


def photo_meta(path: Path) -> ImageMeta:
    """Identity of a photo from its header and bytes (no decoding). Raises ImageReadError."""
    height, width = image_size(path)
    try:
        return ImageMeta(path, sha256_file(path), height, width)
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from None


def photo_mask(store: ResultStore, path: Path, project: Project) -> PhotoMask | None:
    """The label map to export for ``path``: the edited annotation, else the current result's label map (classes
    matched to the project's by name, new ones added), else its thresholded mask; None if it has none."""
    meta = photo_meta(path)
    annotation = load_annotation(store, meta)
    if annotation is not None:
        return PhotoMask(meta, annotation.labels, {"mask": "edited", **annotation.provenance()})
    stored = store.load_result(path, sha256=meta.sha256)
    if stored is not None and stored.layers.label_map is not None:
        labels = project.labels.ids_from(stored.layers.label_map)
        return PhotoMask(meta, labels, {"mask": "label map of the result", "source": stored.record.to_json()})
    if stored is None or stored.mask is None:
        return None
    class_id = project.labels.classes[0].id if project.labels.classes else 1
    labels = np.where(stored.mask, np.uint8(class_id), np.uint8(0))
    return PhotoMask(meta, labels, {"mask": "thresholded result", "class_id": class_id,
                                    "source": stored.record.to_json()})


def export_masks(paths: Iterable[str | Path], formats: Iterable[str], out_dir: str | Path, *, store: ResultStore,
                 project: Project, coco_encoding: str = "rle",
                 on_photo: Callable[[int, int, Path], None] | None = None) -> ExportSummary:
    """Export every photo of ``paths`` (files or folders) in ``formats`` into ``out_dir``.

    Raises FormatError/ValueError for an unknown format and StoreWriteError when the output cannot be written;
    an unreadable photo or sidecar is listed in ``failed`` and the others are exported.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise FormatError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    started = time.perf_counter()
    out = Path(out_dir)
    labels = project.labels
    files = expand_paths(paths)
    summary = ExportSummary()
    coco: dict[str, Any] | None = None
    cover: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    for index, path in enumerate(files):
        if on_photo is not None:
            on_photo(index, len(files), path)
        try:
            mask = photo_mask(store, path, project)
        except ProtolensError as exc:
            summary.failed.append((path, str(exc)))
            continue
        if mask is None:
            summary.skipped.append((path, "no edited mask and no saved result"))
            continue
        summary.written += _write_photo(mask, formats, out, labels)
        if "coco" in formats:
            coco = _merge_coco(coco, coco_document([CocoImage(index + 1, path.name, mask.meta.height, mask.meta.width,
                                                              mask.labels)], labels, encoding=coco_encoding))
        if "cover" in formats:
            cover += cover_rows(path.name, mask.labels, labels, project.px_per_cm)
        provenance[path.name] = {"sha256": mask.meta.sha256, **mask.provenance}
        summary.exported += 1
    if "png" in formats and summary.exported:
        write_bytes_atomic(out / "labels.txt", labels_txt(labels).encode("utf-8"))
        summary.written.append(out / "labels.txt")
    if coco is not None:
        write_json_atomic(out / "annotations.coco.json", coco, indent=None)
        summary.written.append(out / "annotations.coco.json")
        as_rle = sum(isinstance(a["segmentation"], dict) for a in coco["annotations"])
        if coco_encoding == "polygon" and as_rle:
            summary.notes.append(f"{as_rle} of {len(coco['annotations'])} COCO annotations written as RLE "
                                 f"(their regions have holes, which COCO polygons cannot carry)")
    if "cover" in formats and summary.exported:
        write_cover_csv(out / "cover.csv", cover)
        summary.written.append(out / "cover.csv")
    if summary.exported:
        write_json_atomic(out / "provenance.json", {"schema": "protolens.export/1", "exported": utc_now(),
                                                    "classes": labels.to_json(), "px_per_cm": project.px_per_cm,
                                                    "photos": provenance})
        summary.written.append(out / "provenance.json")
    summary.seconds = time.perf_counter() - started
    return summary


def _write_photo(mask: PhotoMask, formats: list[str], out: Path, labels: LabelSet) -> list[Path]:
    stem, meta, written = mask.meta.path.stem, mask.meta, []
    if "png" in formats:
        written.append(out / f"{stem}.labels.png")
        write_label_png(written[-1], mask.labels, labels)
    if "geojson" in formats:
        written.append(out / f"{stem}.geojson")
        write_json_atomic(written[-1], geojson_document(mask.labels, labels, meta.path.name, meta.height, meta.width),
                          indent=None)
    if "labelme" in formats:
        written.append(out / f"{stem}.json")
        relative = os.path.relpath(meta.path.resolve(), out.resolve())
        write_json_atomic(written[-1], labelme_document(mask.labels, labels, relative, meta.height, meta.width),
                          indent=None)
    return written


def _merge_coco(total: dict[str, Any] | None, one: dict[str, Any]) -> dict[str, Any]:
    if total is None:
        return one
    offset = max((a["id"] for a in total["annotations"]), default=0)
    total["images"] += one["images"]
    for annotation in one["annotations"]:
        total["annotations"].append({**annotation, "id": annotation["id"] + offset})
    return total


def import_labelmap(path: Path, meta: ImageMeta, labels: LabelSet) -> tuple[np.ndarray, dict[str, Any]]:
    """A label map for photo ``meta`` from a PNG label map, COCO JSON, labelme JSON or GeoJSON file.

    Unknown class names are added to ``labels``. Raises FormatError (unrecognised or malformed file, or a
    map of another size than the photo) and ImageReadError.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        fmt, labelmap = "png", read_label_png(path, labels)
    else:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not a readable JSON file ({exc})") from None
        if isinstance(document, dict) and "shapes" in document:
            fmt = "labelme"
            labelmap = labelmap_from_labelme(document, labels)
        elif isinstance(document, dict) and "annotations" in document and "images" in document:
            fmt = "coco"
            images = document["images"]
            wanted = meta.path.name if any(i.get("file_name") == meta.path.name for i in images) else (
                images[0]["id"] if len(images) == 1 else meta.path.name)
            labelmap = labelmap_from_coco(document, wanted, labels)
        elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
            fmt, labelmap = "geojson", labelmap_from_geojson(document, meta.height, meta.width, labels)
        else:
            raise FormatError(f"{path}: not a COCO, labelme or GeoJSON document")
    if labelmap.shape != (meta.height, meta.width):
        raise FormatError(f"{path}: the mask is {labelmap.shape[1]}x{labelmap.shape[0]}, the photo "
                          f"{meta.width}x{meta.height}")
    return labelmap, {"kind": "import", "format": fmt, "file": str(path.resolve())}
