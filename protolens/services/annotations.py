"""Exporting the masks of the per-photo result store, and importing masks into the editor.

For each photo the exported label map is its edited annotation if it has one, else the current result's
thresholded mask (as the project's first class), whether it came from the editor, the GUI or
``protolens segment``. Photos with neither are skipped and listed.

Files written into the output folder (all atomically, mode ``0o666 & ~umask`` like any new file):

====================  =====================================================================
png                   ``<stem>.labels.png`` 8-bit greyscale, pixel value = class id (what every PNG reader
                      returns), ``<stem>.color.png`` the same map as a palette PNG for viewing (class colours),
                      ``labels.txt`` (``<id> <name>``) and ``labels.csv`` (``id,name,r,g,b``)
coco                  ``annotations.coco.json`` (all photos; RLE or polygons)
geojson               ``<stem>.geojson`` FeatureCollection, pixel coordinates, origin top-left
labelme               ``<stem>.json`` labelme format, ``imagePath`` relative to the output folder
cover                 ``cover.csv`` per photo x class: pixels, cover %, cm² when a scale is set
(always)              ``provenance.json``: per photo, where its mask came from, its edits, its files and
                      what cleaning changed; the export's classes and cleaning options
====================  =====================================================================

``<stem>`` follows ``protolens segment --out`` (:func:`export_stems_for`): the photo's stem, its full file
name when two photos share a stem (``a.jpg`` and ``a.png`` -> ``a.jpg.labels.png``, ``a.png.labels.png``), then
``-2``, ``-3`` (the same name in two folders), so no photo overwrites another's files. Photos are named in
COCO ``file_name``, ``cover.csv`` and ``provenance.json`` by :func:`photo_names`: the file name, or paths
relative to the common parent folder when two exported photos share a file name.

Polygon formats (GeoJSON, labelme, COCO polygons) can be cleaned first (``min_area``, ``fill_holes``:
:mod:`protolens.core.formats.cleanup`); PNG, cover and COCO RLE are always exact.

Several folders: each folder's project (classes, scale) is loaded and the class lists merged; a clash (one
id, two names) stops the export with :class:`~protolens.core.labels.LabelError` naming both folders.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from protolens.core.annotation import load_annotation
from protolens.core.atomic import write_bytes_atomic, write_json_atomic
from protolens.core.errors import ImageReadError, ProtolensError
from protolens.core.formats import FormatError
from protolens.core.formats.cleanup import check_cleanup_options, clean_regions, cleanup_options
from protolens.core.formats.coco import CocoImage, coco_document, labelmap_from_coco
from protolens.core.formats.cover import cover_rows, write_cover_csv
from protolens.core.formats.geojson import geojson_document, labelmap_from_geojson
from protolens.core.formats.labelme import labelmap_from_labelme, labelme_document
from protolens.core.formats.png import (
    labels_txt,
    read_label_png,
    write_id_png,
    write_label_png,
    write_labels_csv,
)
from protolens.core.formats.polygons import labelmap_polygons
from protolens.core.hashing import sha256_file
from protolens.core.imageio import expand_paths, image_size
from protolens.core.labels import LabelSet, Project, load_project, merge_label_sets
from protolens.core.store import ImageMeta, ResultStore, utc_now
from protolens.services.batch import export_stems

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
    def files(self) -> int:
        """Distinct files written (a file is never written twice by one export)."""
        return len(set(self.written))

    @property
    def line(self) -> str:
        """``exported 2, skipped 0 (no mask), failed 1; 11 files written`` plus the notes."""
        line = (f"exported {self.exported}, skipped {len(self.skipped)} (no mask), failed {len(self.failed)}; "
                f"{self.files} files written")
        return "; ".join([line, *self.notes])


def photo_meta(path: Path) -> ImageMeta:
    """Identity of a photo from its header and bytes (no decoding). Raises ImageReadError."""
    height, width = image_size(path)
    try:
        return ImageMeta(path, sha256_file(path), height, width)
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from None


def photo_mask(store: ResultStore, path: Path, project: Project, *,
               labels: LabelSet | None = None) -> PhotoMask | None:
    """The label map to export for ``path``: the edited annotation, else the current result's label map (classes
    matched by name to ``labels``, default ``project.labels``, new ones added), else its thresholded mask (as
    ``project``'s first class); None if it has none."""
    meta = photo_meta(path)
    annotation = load_annotation(store, meta)
    if annotation is not None:
        return PhotoMask(meta, annotation.labels, {"mask": "edited", **annotation.provenance()})
    stored = store.load_result(path, sha256=meta.sha256)
    if stored is not None and stored.layers.label_map is not None:
        ids = (labels if labels is not None else project.labels).ids_from(stored.layers.label_map)
        return PhotoMask(meta, ids, {"mask": "label map of the result", "source": stored.record.to_json()})
    if stored is None or stored.mask is None:
        return None
    class_id = project.labels.classes[0].id if project.labels.classes else 1
    ids = np.where(stored.mask, np.uint8(class_id), np.uint8(0))
    return PhotoMask(meta, ids, {"mask": "thresholded result", "class_id": class_id,
                                 "source": stored.record.to_json()})


def export_masks(paths: Iterable[str | Path], formats: Iterable[str], out_dir: str | Path, *, store: ResultStore,
                 project: Project | None = None, coco_encoding: str = "rle", min_area: int = 0, fill_holes: int = 0,
                 on_photo: Callable[[int, int, Path], None] | None = None) -> ExportSummary:
    """Export every photo of ``paths`` (files and folders, non-recursive) in ``formats`` into ``out_dir``.

    Parameters
    ----------
    paths : iterable of str or Path
        Photos and folders; a photo named twice is exported once.
    formats : iterable of str
        Some of :data:`FORMATS`; files are named as the module docstring says.
    out_dir : str or Path
        The output folder (created if needed).
    store : ResultStore
        Where the masks, results and projects are.
    project : Project, optional
        The classes and scale for every photo (the GUI passes its open project). None loads the project of
        each photo's folder (``load_project(store.project_folder(folder))``) and merges their classes with
        :func:`~protolens.core.labels.merge_label_sets`; each photo's cover areas use its own folder's scale.
    coco_encoding : {"rle", "polygon"}
        COCO segmentation encoding.
    min_area, fill_holes : int
        Pixels; for polygon formats (GeoJSON, labelme, COCO with ``coco_encoding="polygon"``) each label map is
        first cleaned with :func:`~protolens.core.formats.cleanup.clean_regions` (4-connected regions smaller
        than ``min_area`` become background, holes smaller than ``fill_holes`` are filled). PNG, cover and COCO
        RLE stay exact. With COCO polygons, the annotations that must be RLE (regions with holes) come from the
        cleaned map too, so one COCO file is consistent. ``provenance.json`` records the options (``cleanup``)
        and the removed/filled pixels and regions per photo and class id (``photos.<name>.cleanup``).
    on_photo : callable, optional
        Called with (index, total, path) before each photo.

    Returns
    -------
    ExportSummary
        Photos exported, skipped and failed, and the distinct files written.

    Raises
    ------
    FormatError
        An unknown format.
    ValueError
        ``min_area`` or ``fill_holes`` is not a non-negative integer, or an unknown ``coco_encoding``.
    LabelError
        The folders' class lists clash (the message names both folders and the classes), or a project file
        is corrupt.
    StoreWriteError
        The output cannot be written. An unreadable photo or sidecar is listed in ``failed`` instead.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise FormatError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if coco_encoding not in ("rle", "polygon"):
        raise ValueError(f"COCO encoding must be 'rle' or 'polygon', not {coco_encoding!r}")
    check_cleanup_options(min_area, fill_holes)
    started = time.perf_counter()
    files = expand_paths(paths)
    projects, labels = folder_projects(files, store, project)
    run = _Export(Path(out_dir), formats, labels, coco_encoding, min_area, fill_holes, export_stems_for(files),
                  photo_names(files))
    for index, path in enumerate(files):
        if on_photo is not None:
            on_photo(index, len(files), path)
        folder_project = projects[path.parent]
        try:
            mask = photo_mask(store, path, folder_project, labels=labels)
        except ProtolensError as exc:
            run.summary.failed.append((path, str(exc)))
            continue
        if mask is None:
            run.summary.skipped.append((path, "no edited mask and no saved result"))
            continue
        run.photo(index, mask, folder_project.px_per_cm)
    run.finish({folder: p.px_per_cm for folder, p in projects.items()})
    run.summary.seconds = time.perf_counter() - started
    return run.summary


def folder_projects(files: list[Path], store: ResultStore,
                    project: Project | None = None) -> tuple[dict[Path, Project], LabelSet]:
    """Each photo folder's project, and the label set of the whole export.

    With ``project`` every folder uses it and the label set is ``project.labels`` (the same object, so classes
    that label-map results bring are added to it, as the editor expects). Without, each folder's project is
    loaded from the store and the classes are merged (:func:`merge_label_sets`; raises :class:`LabelError` on
    a clash, naming both folders).
    """
    folders = list(dict.fromkeys(path.parent for path in files))
    if project is not None:
        return {folder: project for folder in folders}, project.labels
    projects = {folder: load_project(store.project_folder(folder)) for folder in folders}
    labels = merge_label_sets([(str(folder), p.labels) for folder, p in projects.items()])
    return projects, labels


#: Output names (without suffix) that per-photo files must not take: ``<stem>.json`` would overwrite them.
RESERVED_STEMS = ("provenance", "annotations.coco")


def export_stems_for(files: list[Path]) -> dict[Path, str]:
    """The stem of each photo's files: :func:`protolens.services.batch.export_stems` (the rule of
    ``protolens segment --out``: the stem, the full file name when stems clash case-insensitively, then
    ``-2``, ``-3``), with the export-wide files' stems (``provenance.json``, ``annotations.coco.json``)
    reserved, so a photo ``provenance.jpg`` writes ``provenance.jpg.json``."""
    return export_stems(files, reserved=RESERVED_STEMS)


def photo_names(files: list[Path]) -> dict[Path, str]:
    """How the export names each photo: COCO ``file_name``, the ``cover.csv`` ``image`` column, the GeoJSON
    ``protolens.image`` member and the ``provenance.json`` key.

    The photo's file name (``a.jpg``) when all file names of the export differ (compared case-insensitively);
    otherwise, for every photo, its path relative to the folder that contains all the photos' folders, with
    ``/`` separators (``photos/a.jpg``, ``photos2/a.jpg``), so one image root serves the whole COCO file (and
    ``a.jpg``/``A.jpg`` never meet on a case-insensitive disk). Paths on different drives fall back to
    absolute paths.
    """
    lowered = [path.name.lower() for path in files]
    if len(set(lowered)) == len(lowered):
        return {path: path.name for path in files}
    absolute = [path.absolute() for path in files]
    try:
        root = Path(os.path.commonpath([path.parent for path in absolute]))
    except ValueError:
        return {path: full.as_posix() for path, full in zip(files, absolute, strict=True)}
    return {path: full.relative_to(root).as_posix() for path, full in zip(files, absolute, strict=True)}


class _Export:
    """The state of one :func:`export_masks` run: per-photo files as photos come, export-wide files at the end."""

    def __init__(self, out: Path, formats: list[str], labels: LabelSet, coco_encoding: str, min_area: int,
                 fill_holes: int, stems: dict[Path, str], names: dict[Path, str]) -> None:
        self.out, self.formats, self.labels, self.coco_encoding = out, formats, labels, coco_encoding
        self.min_area, self.fill_holes, self.stems, self.names = int(min_area), int(fill_holes), stems, names
        self.cleaning = bool(self.min_area or self.fill_holes) and bool(self.polygon_formats)
        self.summary = ExportSummary()
        self.coco: dict[str, Any] | None = None
        self.cover: list[dict[str, Any]] = []
        self.provenance: dict[str, Any] = {}

    @property
    def polygon_formats(self) -> list[str]:
        """The formats traced into polygons (cleaned when cleaning is asked for)."""
        return [f for f in self.formats if f in ("geojson", "labelme") or (f == "coco" and self.coco_encoding
                                                                            == "polygon")]

    def photo(self, index: int, mask: PhotoMask, px_per_cm: float | None) -> None:
        """Write one photo's files and collect its COCO, cover and provenance entries."""
        path, name = mask.meta.path, self.names[mask.meta.path]
        polygons, report = mask.labels, None
        if self.cleaning:
            polygons, report = clean_regions(mask.labels, min_area=self.min_area, fill_holes=self.fill_holes)
        written = _write_photo(mask, polygons, self.formats, self.out, self.labels, self.stems[path], name)
        self.summary.written += written
        if "coco" in self.formats:
            source = polygons if self.coco_encoding == "polygon" else mask.labels
            image = CocoImage(index + 1, name, mask.meta.height, mask.meta.width, source)
            self.coco = _merge_coco(self.coco, coco_document([image], self.labels, encoding=self.coco_encoding))
        if "cover" in self.formats:
            self.cover += cover_rows(name, mask.labels, self.labels, px_per_cm)
        entry: dict[str, Any] = {"sha256": mask.meta.sha256, **mask.provenance, "px_per_cm": px_per_cm,
                                 "files": [p.name for p in written]}
        if report is not None:
            entry["cleanup"] = report.to_json()
        self.provenance[name] = entry
        self.summary.exported += 1

    def finish(self, scales: dict[Path, float | None]) -> None:
        """Write ``labels.txt``/``labels.csv``, the COCO file, ``cover.csv`` and ``provenance.json``."""
        out, summary = self.out, self.summary
        if not summary.exported:
            return
        if "png" in self.formats:
            write_bytes_atomic(out / "labels.txt", labels_txt(self.labels).encode("utf-8"))
            write_labels_csv(out / "labels.csv", self.labels)
            summary.written += [out / "labels.txt", out / "labels.csv"]
        if self.coco is not None:
            write_json_atomic(out / "annotations.coco.json", self.coco, indent=None)
            summary.written.append(out / "annotations.coco.json")
            as_rle = sum(isinstance(a["segmentation"], dict) for a in self.coco["annotations"])
            if self.coco_encoding == "polygon" and as_rle:
                summary.notes.append(f"{as_rle} of {len(self.coco['annotations'])} COCO annotations written as RLE "
                                     f"(their regions have holes, which COCO polygons cannot carry)")
        if "cover" in self.formats:
            write_cover_csv(out / "cover.csv", self.cover)
            summary.written.append(out / "cover.csv")
        document: dict[str, Any] = {"schema": "protolens.export/1", "exported": utc_now(),
                                    "classes": self.labels.to_json(),
                                    "px_per_cm": next(iter(scales.values())) if len(set(scales.values())) == 1
                                    else None, "photos": self.provenance}
        if self.cleaning:
            document["cleanup"] = {**cleanup_options(self.min_area, self.fill_holes),
                                   "applies_to": self.polygon_formats}
        write_json_atomic(out / "provenance.json", document)
        summary.written.append(out / "provenance.json")


def _write_photo(mask: PhotoMask, polygons: np.ndarray, formats: list[str], out: Path, labels: LabelSet,
                 stem: str, name: str) -> list[Path]:
    """Write one photo's per-photo files; ``polygons`` is the (cleaned) map the polygon formats trace."""
    meta, written = mask.meta, []
    traced = labelmap_polygons(polygons) if {"geojson", "labelme"} <= set(formats) else None  # trace once
    if "png" in formats:
        written += [out / f"{stem}.labels.png", out / f"{stem}.color.png"]
        write_id_png(written[-2], mask.labels)
        write_label_png(written[-1], mask.labels, labels)
    if "geojson" in formats:
        written.append(out / f"{stem}.geojson")
        write_json_atomic(written[-1], geojson_document(polygons, labels, name, meta.height, meta.width,
                                                            regions=traced), indent=None)
    if "labelme" in formats:
        written.append(out / f"{stem}.json")
        relative = os.path.relpath(meta.path.resolve(), out.resolve())
        write_json_atomic(written[-1], labelme_document(polygons, labels, relative, meta.height, meta.width,
                                                            regions=traced), indent=None)
    return written


def _merge_coco(total: dict[str, Any] | None, one: dict[str, Any]) -> dict[str, Any]:
    """Append one image's COCO document to ``total``: annotation ids renumbered, categories united by id."""
    if total is None:
        return one
    offset = max((a["id"] for a in total["annotations"]), default=0)
    total["images"] += one["images"]
    for annotation in one["annotations"]:
        total["annotations"].append({**annotation, "id": annotation["id"] + offset})
    known = {c["id"] for c in total["categories"]}
    if any(c["id"] not in known for c in one["categories"]):
        merged = {c["id"]: c for c in one["categories"]} | {c["id"]: c for c in total["categories"]}
        total["categories"] = [merged[k] for k in sorted(merged)]
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
            labelmap = labelmap_from_coco(document, _coco_image_of(document["images"], meta.path), labels)
        elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
            fmt, labelmap = "geojson", labelmap_from_geojson(document, meta.height, meta.width, labels)
        else:
            raise FormatError(f"{path}: not a COCO, labelme or GeoJSON document")
    if labelmap.shape != (meta.height, meta.width):
        raise FormatError(f"{path}: the mask is {labelmap.shape[1]}x{labelmap.shape[0]}, the photo "
                          f"{meta.width}x{meta.height}")
    return labelmap, {"kind": "import", "format": fmt, "file": str(path.resolve())}


def _coco_image_of(images: Any, photo: Path) -> int | str:
    """The COCO image (its ``file_name``, or its ``id`` when the file has one image) that is ``photo``.

    ``file_name`` may be the photo's name or a relative path ending with it (:func:`photo_names`); when
    several end with the name, the one whose path is the tail of ``photo``'s path wins. Raises FormatError
    when the document does not say which image it is.
    """
    if not isinstance(images, list):
        raise FormatError("COCO 'images' must be a list")
    names = [str(i.get("file_name", "")) if isinstance(i, dict) else "" for i in images]
    if photo.name in names:
        return photo.name
    tail = photo.absolute().as_posix()
    matches = [n for n in names if PurePosixPath(n).name == photo.name]
    if len(matches) > 1:
        matches = [n for n in matches if tail.endswith("/" + n.lstrip("/"))]
    if len(matches) == 1:
        return matches[0]
    if len(images) == 1 and isinstance(images[0], dict):
        return images[0].get("id")
    raise FormatError(f"the COCO file has no single image {photo.name!r} (file_name)")
