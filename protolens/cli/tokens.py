"""``protolens tokens``: tile tokens of prototype guidance (one CLS token per crop) for photos.

``--model`` and ``--precision`` are the vit-attention backend's parameters (help and choices from its
``plugin.toml``; only the default backbone differs, :data:`protolens.services.tokens.DEFAULT_MODEL`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from protolens.cli import app
from protolens.cli.common import backend_specs, registry, with_backend_options
from protolens.cli.executor import ExecutorChoice, finish_line, run_job_on_ray, with_executor_options
from protolens.core.errors import ImageReadError, StoreWriteError
from protolens.core.imageio import expand_paths
from protolens.services.batch_jobs import photo_units
from protolens.services.segment import Segmenter, drain, load_image
from protolens.services.shard_jobs import TokensJob
from protolens.services.tokens import BACKEND, DEFAULT_MODEL, crop_tokens


def tokens(
    paths: list[Path] = typer.Argument(..., help="Photos and folders of photos."),
    *,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <stem>.tokens.npy and <stem>.tokens.json."),
    weights: Path = typer.Option(None, "--weights", help="Weights file or snapshot folder; default: local cache."),
    rows: int = typer.Option(32, "--rows", min=1, help="Crop rows (photo height / crop after resizing)."),
    cols: int = typer.Option(48, "--cols", min=1, help="Crop columns."),
    crop: int = typer.Option(64, "--crop", min=8, help="Crop side in pixels."),
    input_size: int = typer.Option(518, "--input-size", min=14, help="Each crop is upsampled to this side."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Crops per forward pass (bounds memory)."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    random_weights: bool = typer.Option(False, "--random-weights", hidden=True, help="Testing only."),
    choice: ExecutorChoice = ExecutorChoice(),  # the executor options (with_executor_options)
    **backbone: Any,
) -> None:
    """CLS token per crop of each photo (arXiv 2512.19957, step 3), written as (rows, cols, dim) float32 .npy."""
    if choice.ray:  # one unit per photo (its crops are the unit's batches), resumable, with a manifest
        units, scan = photo_units(paths)
        job = TokensJob(backbone.get("model", DEFAULT_MODEL), backbone.get("precision", "auto"),
                        weights.resolve() if weights is not None else None, (rows, cols), crop, input_size,
                        batch_size, random_weights, out.resolve())
        finish_line("tokens", run_job_on_ray(job, units, choice, out_dir=out), scan.skipped, f" -> {out}")
        return
    segmenter = Segmenter(registry(), device=device)
    done = failed = 0
    for path in expand_paths(paths):
        try:
            image = load_image(path)
            grid = drain(crop_tokens(segmenter, image, weights_path=weights, grid=(rows, cols), crop=crop,
                                     input_size=input_size, batch_size=batch_size,
                                     allow_random_weights=random_weights, **backbone))
            grid.save(out, image)
            done += 1
        except (ImageReadError, StoreWriteError) as exc:
            typer.echo(f"error: {exc}", err=True)
            failed += 1
    typer.echo(f"protolens tokens: processed {done}, failed {failed} -> {out}")
    if done == 0:
        raise typer.Exit(1)


def _backbone_specs() -> list[Any]:
    """The backend's ``model`` (with the tile-token default backbone) and ``precision`` parameters."""
    defaults = {"model": DEFAULT_MODEL}
    return [dataclasses.replace(s, default=defaults.get(s.name, s.default)) for s in backend_specs(BACKEND)
            if s.name in ("model", "precision")]


app.command("tokens")(with_backend_options(with_executor_options(tokens), _backbone_specs(), aliases={"model": ("-m",)}))
