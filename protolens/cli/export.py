"""``protolens export``: the store's masks of photos and folders in the formats annotation pipelines read."""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.core.errors import ProtolensError
from protolens.core.imageio import scan_paths
from protolens.core.store import ResultStore
from protolens.services.annotations import FORMATS, export_masks
from protolens.services.batch import skipped_text


class ExportUsageError(ProtolensError):
    """The command line of ``protolens export`` is wrong (an unknown format, a format name given as a photo)."""


def parse_formats(values: list[str] | None) -> list[str]:
    """The formats of ``--format`` options: each value may list several, comma-separated (``png,geojson``).

    Parameters
    ----------
    values : list of str or None
        The ``--format`` values as given (repeated flags give several); None or empty means all formats.

    Returns
    -------
    list of str
        Distinct format names in the order given (lower-cased, spaces stripped).

    Raises
    ------
    ExportUsageError
        A name is not one of :data:`FORMATS`.
    """
    names = [part.strip().lower() for value in values or [] for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ExportUsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)} "
                               f"(several: --format png,geojson)")
    return list(dict.fromkeys(names)) or list(FORMATS)


def check_paths(paths: list[Path], formats: list[str] | None) -> None:
    """Refuse a path that does not exist and is a format name (``--format png geojson`` reads ``geojson`` as a
    photo). Raises :class:`ExportUsageError` suggesting the comma-separated form."""
    stray = [p for p in paths if not p.exists() and all(n.strip().lower() in FORMATS for n in str(p).split(","))]
    if stray:
        given = [part.strip() for value in formats or [] for part in value.split(",") if part.strip()]
        suggestion = ",".join(dict.fromkeys([*given, *(n.strip().lower() for p in stray for n in str(p).split(","))]))
        what = "is a format name" if len(stray) == 1 else "are format names"
        raise ExportUsageError(f"{', '.join(map(str, stray))} {what}, not a photo: use --format {suggestion}")


@app.command("export")
def export(
    paths: list[Path] = typer.Argument(..., help="Folders (or photos) whose masks to export."),
    formats: list[str] = typer.Option(None, "--format", "-f", metavar="FORMAT[,FORMAT...]",
                                      help=f"Comma-separated or repeated: {', '.join(FORMATS)} (default: all)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    coco_encoding: str = typer.Option("rle", "--coco-encoding", help="rle (exact) or polygon."),
    min_area: int = typer.Option(0, "--min-area", min=0, metavar="PX",
                                 help="Polygon formats (geojson, labelme, coco polygon): drop regions smaller "
                                      "than PX pixels (4-connected). PNG, cover and COCO RLE stay exact."),
    fill_holes: int = typer.Option(0, "--fill-holes", min=0, metavar="PX",
                                   help="Polygon formats: fill holes smaller than PX pixels inside one class."),
) -> None:
    """Export edited masks (else thresholded results) with each folder's classes and scale; a summary line."""
    check_paths(paths, formats)
    chosen = parse_formats(formats)
    if coco_encoding not in ("rle", "polygon"):
        raise ExportUsageError(f"--coco-encoding must be rle or polygon, not {coco_encoding!r}")
    store = ResultStore.from_environment()

    def on_photo(index: int, total: int, path: Path) -> None:
        typer.echo(f"[{index + 1}/{total}] {path.name}", err=True)

    summary = export_masks(paths, chosen, out, store=store, project=None, coco_encoding=coco_encoding,
                           min_area=min_area, fill_holes=fill_holes, on_photo=on_photo)
    for path, reason in summary.failed:
        typer.echo(f"error: {path}: {reason}", err=True)
    for path, reason in summary.skipped:
        typer.echo(f"skipped: {path.name}: {reason}", err=True)
    not_photos = scan_paths(paths).skipped  # folder entries export_masks never saw (other types, sub-folders)
    extra = f", {skipped_text(not_photos, 'not photos')}" if not_photos else ""
    typer.echo(f"protolens export: {summary.line}{extra} -> {out} ({summary.seconds:.1f} s)")
    if summary.exported == 0:
        raise typer.Exit(1)
