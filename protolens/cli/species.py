"""``protolens species``: species lists of quadrats with one epoch of a prototype-ViT run (arXiv 2512.19957).

The classifier, threshold, grid and precision options are the ``prototype-guided`` backend's parameters (help,
defaults and bounds from its ``plugin.toml``). The tiling comes from the run; ``--photo-size``, ``--crop`` and
``--crop-input`` are only checked against it (see :func:`protolens.services.species.run_tiling`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from protolens.cli import app
from protolens.cli.common import backend_specs, registry, with_backend_options
from protolens.cli.executor import ExecutorChoice, RayRun, run_job_on_ray, with_executor_options
from protolens.core.errors import ParamError
from protolens.core.params import make_params
from protolens.services.batch import skipped_text
from protolens.services.segment import Segmenter
from protolens.services.species import BACKEND, SpeciesOptions, run_tiling, species_on_ray, species_paths

_REQUIRED = {"classifier": "--classifier NAME", "class_mapping": "--class-mapping FILE"}


def species(
    quadrats: list[Path] = typer.Argument(..., help="Quadrat photos and folders of photos."),
    *,
    run: Path = typer.Option(..., "--run", help="Training run folder (protolens train prototype-vit --out)."),
    epoch: int = typer.Option(None, "--epoch", min=1, help="Epoch to use; default the run's chosen epoch, else the last."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for masks, heatmaps, sidecars, <stem>.species.json "
                                                     "and submission.csv."),
    photo_size: str = typer.Option(None, "--photo-size", help="WxH; must match the run's tiling (checked only)."),
    crop: int = typer.Option(None, "--crop", min=1, help="Crop side; must match the run's tiling (checked only)."),
    crop_input: int = typer.Option(None, "--crop-input", min=1,
                                   help="Crop input side; must match the run's tiling (checked only)."),
    device: str = typer.Option(None, "--device", help="Torch device (cpu, cuda:0); default: least busy GPU, else CPU."),
    allow_random_weights: bool = typer.Option(False, "--allow-random-weights",
                                              help="Random backbone/classifier weights when none are given "
                                                   "(testing only)."),
    choice: ExecutorChoice = ExecutorChoice(),  # the executor options (with_executor_options)
    **params: Any,
) -> None:
    """Species list per quadrat (arXiv 2512.19957): crop mask from the narrow ViT's received attention, K x K
    grid assembly of every kept crop, classifier, species rule; writes the PlantCLEF submission.csv."""
    missing = [flag for name, flag in _REQUIRED.items() if not params.get(name)]
    if missing:
        raise ParamError(f"protolens species needs {' and '.join(missing)}")
    values = make_params(backend_specs(BACKEND), params)
    tiling = run_tiling(run, photo_size, crop, crop_input)
    options = SpeciesOptions(**{name: getattr(values, name) for name in SpeciesOptions.__dataclass_fields__})
    grid = f"{tiling.grid[0]}x{tiling.grid[1]}"
    if choice.ray:
        _species_on_ray(quadrats, options, run, epoch, out, allow_random_weights, choice, grid)
        return
    console = Console(stderr=True)
    segmenter = Segmenter(registry(), device=device)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("species", total=None)

        def on_file(index: int, total: int, path: Path) -> None:
            bar.update(task, total=total, completed=index, description=f"species: {path.name}")

        def on_error(path: Path, message: str) -> None:
            bar.console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)

        summary = species_paths(quadrats, options, run_dir=run, out_dir=out, segmenter=segmenter, epoch=epoch,
                                allow_random_weights=allow_random_weights, on_file=on_file, on_error=on_error)
        bar.update(task, completed=summary.processed + len(summary.failed))
    listed = sum(len(ids) for ids in summary.species.values())
    line = f"protolens species: processed {summary.processed}, failed {len(summary.failed)}"
    if summary.skipped:
        line += f", {skipped_text(summary.skipped)}"
    typer.echo(f"{line}; {listed} species listed ({grid} crops) -> {summary.submission or out}")
    if summary.processed == 0:
        raise typer.Exit(1)


def _species_on_ray(quadrats: list[Path], options: SpeciesOptions, run: Path, epoch: int | None, out: Path,
                    allow_random_weights: bool, choice: ExecutorChoice, grid: str) -> None:
    """``--executor ray``: one quadrat per unit (resumable, with a manifest); the submission lists every quadrat
    done now or before. Summary as the local path's, plus ``already done`` and ``retried``."""
    runs: list[RayRun] = []

    def run_units(job: Any, units: list[Any]) -> list[Any]:
        runs.append(run_job_on_ray(job, units, choice, out_dir=out))
        return runs[-1].results

    summary = species_on_ray(quadrats, options, run_dir=run, out_dir=out, epoch=epoch,
                             allow_random_weights=allow_random_weights, run_units=run_units)
    for path, message in summary.failed:  # unit errors were printed by the progress bar; these are read-backs
        if not any(r.name == str(path) for r in runs[0].failed):
            typer.echo(f"error: {message}", err=True)
    listed = sum(len(ids) for ids in summary.species.values())
    typer.echo(f"protolens species: {runs[0].line(summary.skipped)}; {listed} species listed ({grid} crops) "
               f"-> {summary.submission or out}")
    if not summary.species:
        raise typer.Exit(1)


app.command("species")(with_backend_options(with_executor_options(species), backend_specs(BACKEND), panel="Prototype-guided options"))
