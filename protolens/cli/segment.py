"""``protolens segment``: the headless twin of Run + Export in the GUI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from protolens.cli import app
from protolens.cli.common import params_help, registry
from protolens.cli.executor import ExecutorChoice, finish_line, run_job_on_ray, with_executor_options
from protolens.core.errors import ParamError
from protolens.core.job_manifest import FILE_NAME
from protolens.core.params import make_params, params_to_dict, parse_cli_args
from protolens.core.store import ResultStore
from protolens.services.batch import segment_paths
from protolens.services.batch_jobs import SegmentJob, photo_units
from protolens.services.segment import Segmenter

MANIFEST_STEM = Path(FILE_NAME).stem
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def split_args(specs: list, tokens: list[str]) -> tuple[list[str], list[str]]:
    """Separate photo paths from backend options (``--flag value`` pairs) in the extra arguments."""
    bool_flags = {s.cli_flag for s in specs if s.type == "bool"} | {
        "--no-" + s.cli_flag[2:] for s in specs if s.type == "bool"}
    paths, options, i = [], [], 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            takes_value = "=" not in token and token not in bool_flags
            options.extend(tokens[i:i + 2] if takes_value else [token])
            i += 2 if takes_value else 1
        else:
            paths.append(token)
            i += 1
    return paths, options


@app.command("segment", context_settings=_EXTRA, options_metavar="PATH... [OPTIONS] [BACKEND OPTIONS]")
@with_executor_options
def segment(
    ctx: typer.Context,
    backend: str = typer.Option(..., "--backend", "-b", help="Backend id (see `protolens backends`)."),
    weights: Path = typer.Option(None, "--weights", help="Weights file (.safetensors/.pth) or snapshot folder."),
    threshold: float = typer.Option(None, "--threshold", "-t", min=0.0, max=1.0,
                                    help="Mask threshold in [0, 1]; default: the backend's suggestion (Otsu)."),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Write <stem>.mask.png/.heatmap.npy/.json here; default: the per-photo store. "
                                  "<stem> is the photo's name without extension; photos of the batch that share "
                                  "a stem (photo.bmp, photo.webp) keep their extension (photo.bmp.mask.png)."),
    semantics: str = typer.Option("value", "--threshold-semantics",
                                  help="value: score >= t. mass: smallest set of cells holding t of the mass."),
    device: str = typer.Option(None, "--device", help="Torch device (cpu, cuda:0); default: least busy GPU, else CPU."),
    random_weights: bool = typer.Option(False, "--random-weights", hidden=True,
                                        help="Use random weights when none are found (testing only)."),
    choice: ExecutorChoice = ExecutorChoice(),  # the executor options (with_executor_options)
) -> None:
    """Segment photos and folders: PATH... plus backend options, e.g.

    protolens segment resources/samples/quadrats --backend vegetation-index --out /tmp/x
    """
    manifest = registry().manifest(backend)
    paths, options = split_args(list(manifest.params), list(ctx.args))
    params = parse_cli_args(manifest.params, options)
    run_segment(paths, backend, params, weights=weights, threshold=threshold, semantics=semantics, out=out,
                device=device, random_weights=random_weights, choice=choice)


def run_segment(paths: list[str], backend: str, params: dict[str, Any], *, weights: Path | None,
                threshold: float | None, semantics: str, out: Path | None, device: str | None,
                random_weights: bool, choice: ExecutorChoice | None = None) -> None:
    """Segment ``paths`` with a progress bar, one line per failed file and a summary; exit 1 if none worked.

    With ``choice.ray`` the photos run on Ray (:func:`protolens.cli.executor.run_job_on_ray`): resumable, with a
    manifest; ``device`` is then each worker's choice.
    """
    if not paths:
        raise ParamError("give at least one photo or folder (PATH...)")
    if semantics not in ("value", "mass"):
        raise ParamError(f"--threshold-semantics must be value or mass, not {semantics!r}")
    manifest = registry().manifest(backend)
    params = params_to_dict(make_params(manifest.params, params))
    command = "attention" if backend == "vit-attention" else "segment"
    where = f" -> {out}" if out else " -> per-photo store (.protolens/ next to each photo)"
    if choice is not None and choice.ray:
        if device:
            raise ParamError("--device is not taken with --executor ray: each worker uses its own GPU (else the CPU)")
        units, scan = photo_units(paths, reserved_stems=[MANIFEST_STEM] if out else ())
        job = SegmentJob(backend, params, threshold, out, weights, semantics,
                         allow_random_weights=random_weights, command=command)
        finish_line(command, run_job_on_ray(job, units, choice, out_dir=out), scan.skipped, where)
        return
    console = Console(stderr=True)
    segmenter = Segmenter(registry(), device=device)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"{backend}", total=None)

        def on_file(index: int, total: int, path: Path) -> None:
            bar.update(task, total=total, completed=index, description=f"{backend}: {path.name}")

        def on_progress(report: Any) -> None:
            if report.text and "out of memory" in report.text:
                bar.console.print(f"warning: {report.text}", markup=False, highlight=False, soft_wrap=True)

        def on_error(path: Path, message: str) -> None:
            bar.console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)

        summary = segment_paths(paths, backend, params, segmenter=segmenter, threshold=threshold, out_dir=out,
                                store=ResultStore.from_environment(), weights_path=weights, semantics=semantics,
                                allow_random_weights=random_weights, on_file=on_file, on_error=on_error,
                                on_progress=on_progress)
        bar.update(task, completed=summary.processed + len(summary.failed))
    typer.echo(f"protolens {command}: {summary.line}{where}")
    if summary.processed == 0:
        raise typer.Exit(1)


segment.__doc__ = (segment.__doc__ or "") + "\n\n" + (
    "PATH... are photos or folders of photos (JPEG, PNG, TIFF, BMP, WebP, GIF; folders are not read "
    "recursively). The summary names the folder entries it skipped and why.\n\n")


def _add_backend_help() -> None:
    """Append every backend's options to the command's help (manifests only; no plugin import)."""
    command = next(c for c in app.registered_commands if c.name == "segment")
    command.epilog = params_help()


_add_backend_help()
