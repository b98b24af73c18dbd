"""``protolens export``: the store's masks of photos and folders in the formats annotation pipelines read."""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.core.imageio import scan_paths
from protolens.core.labels import load_project
from protolens.core.store import ResultStore
from protolens.services.annotations import FORMATS, export_masks
from protolens.services.batch import skipped_text


@app.command("export")
def export(
    paths: list[Path] = typer.Argument(..., help="Folders (or photos) whose masks to export."),
    formats: list[str] = typer.Option(list(FORMATS), "--format", "-f",
                                      help=f"Repeat for several: {', '.join(FORMATS)} (default: all)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    coco_encoding: str = typer.Option("rle", "--coco-encoding", help="rle (exact) or polygon."),
) -> None:
    """Export edited masks (else thresholded results) with the folder's classes and scale; a summary line."""
    store = ResultStore.from_environment()
    first = paths[0] if paths[0].is_dir() else paths[0].parent
    project = load_project(store.project_folder(first))

    def on_photo(index: int, total: int, path: Path) -> None:
        typer.echo(f"[{index + 1}/{total}] {path.name}", err=True)

    summary = export_masks(paths, formats, out, store=store, project=project, coco_encoding=coco_encoding,
                           on_photo=on_photo)
    for path, reason in summary.failed:
        typer.echo(f"error: {path}: {reason}", err=True)
    for path, reason in summary.skipped:
        typer.echo(f"skipped: {path.name}: {reason}", err=True)
    not_photos = scan_paths(paths).skipped  # folder entries export_masks never saw (other types, sub-folders)
    extra = f", {skipped_text(not_photos, 'not photos')}" if not_photos else ""
    typer.echo(f"protolens export: {summary.line}{extra} -> {out} ({summary.seconds:.1f} s)")
    if summary.exported == 0:
        raise typer.Exit(1)
