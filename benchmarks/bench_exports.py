"""Figures of the mask exports (issue 9), measured side by side in one run.

    .venv/bin/python benchmarks/bench_exports.py

1. Folder export of the 4 sample quadrats (vegetation-index masks, Otsu threshold), each format on its own:
   seconds and megabytes; then the ratio (GeoJSON + labelme) / (PNG + COCO RLE) at ``--min-area 0``
   (target <= 3).
2. forest_floor.jpg alone at ``--min-area`` 0 / 16 / 64 (with ``--fill-holes`` the same): GeoJSON features,
   labelme shapes, megabytes and seconds of the polygon formats.

Runs on older code too (options it lacks are left out), so the same script gives the "before" figures.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

SCRATCH = Path(tempfile.mkdtemp(prefix="protolens-bench-exports-"))
os.environ["PROTOLENS_STORE"] = str(SCRATCH / "store")
os.environ["PROTOLENS_CACHE_DIR"] = str(SCRATCH / "cache")
ROOT = Path(__file__).resolve().parents[1]
QUADRATS = ROOT / "resources" / "samples" / "quadrats"
FORMATS = ["png", "coco", "geojson", "labelme", "cover"]


def prepare() -> Path:
    from protolens.core.store import ResultStore
    from protolens.services.batch import segment_paths
    from protolens.services.segment import Segmenter

    folder = SCRATCH / "quadrats"
    shutil.copytree(QUADRATS, folder)
    segment_paths([folder], "vegetation-index", {"index": "exg-exr"}, segmenter=Segmenter(disk_cache=None),
                  store=ResultStore())
    return folder


def export(paths: list[Path], fmt: str, out: Path, **options) -> tuple[float, float, object]:
    """(seconds, megabytes written, summary) of one export."""
    from protolens.core.labels import Project
    from protolens.core.store import ResultStore
    from protolens.services.annotations import export_masks

    accepted = inspect.signature(export_masks).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    summary = export_masks(paths, [fmt], out, store=ResultStore(), project=Project(), **options)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return seconds, size, summary


def export_many(paths: list[Path], formats: list[str], out: Path) -> tuple[float, float, object]:
    """(seconds, megabytes, summary) of one export in several formats at once (work shared between them)."""
    from protolens.core.labels import Project
    from protolens.core.store import ResultStore
    from protolens.services.annotations import export_masks

    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    summary = export_masks(paths, formats, out, store=ResultStore(), project=Project())
    total_s = time.perf_counter() - started
    total_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return total_s, total_mb, summary


def folder_figures(folder: Path) -> None:
    paths = sorted(folder.glob("*.jpg"))
    print(f"1. folder export, {len(paths)} quadrats, each format alone:")
    times = {}
    for fmt, options in (("png", {}), ("coco", {"coco_encoding": "rle"}), ("coco", {"coco_encoding": "polygon"}),
                         ("geojson", {}), ("labelme", {}), ("cover", {})):
        name = fmt + (f" ({options['coco_encoding']})" if options else "")
        seconds, size, _summary = export(paths, fmt, SCRATCH / "out" / name.replace(" ", "_"), **options)
        times[name] = seconds
        print(f"   {name:15s} {seconds:7.2f} s  {size:8.2f} MB")
    polygons = times["geojson"] + times["labelme"]
    rasters = times["png"] + times["coco (rle)"]
    print(f"   each alone: (GeoJSON + labelme) / (PNG + COCO RLE) = {polygons:.2f} / {rasters:.2f} s = "
          f"{polygons / rasters:.2f}")
    both, _size, _ = export_many(paths, ["png", "coco"], SCRATCH / "out" / "rasters")
    every, size, _ = export_many(paths, FORMATS, SCRATCH / "out" / "all")
    print(f"   one export in all formats: {every:.2f} s, {size:.2f} MB; PNG + COCO alone {both:.2f} s; the "
          f"polygon formats' share (all - PNG - COCO - cover) / (PNG + COCO) = "
          f"{(every - both - times['cover']) / both:.2f}   target <= 3")


def forest_figures(folder: Path) -> None:
    photo = folder / "forest_floor.jpg"
    print("2. forest_floor.jpg, polygon formats by --min-area (and --fill-holes):")
    for area in (0, 16, 64):
        row = []
        for fmt in ("geojson", "labelme"):
            out = SCRATCH / "forest" / f"{fmt}-{area}"
            seconds, size, _summary = export([photo], fmt, out, min_area=area, fill_holes=area)
            if fmt == "geojson":
                document = json.loads(next(out.glob("*.geojson")).read_text())
                count = len(document["features"])
            else:
                document = json.loads(next(p for p in out.glob("*.json") if p.name != "provenance.json").read_text())
                count = len(document["shapes"])
            row.append(f"{fmt} {count:6d} {'features' if fmt == 'geojson' else 'shapes  '} {size:6.2f} MB "
                       f"{seconds:6.2f} s")
        print(f"   --min-area {area:2d}: " + "   ".join(row))


def main() -> None:
    folder = prepare()
    folder_figures(folder)
    forest_figures(folder)


if __name__ == "__main__":
    main()
