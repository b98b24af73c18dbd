"""``protolens weights``: list the catalogue and download weights on request."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from protolens.cli import app
from protolens.cli.common import registry
from protolens.services import weights as weights_service

weights_app = typer.Typer(help="Model weights: list what is known and cached, download on request.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def list_weights() -> None:
    """Known weights, their size and licence, and whether they are in the local cache."""
    for backend_id, spec in weights_service.catalogue(registry()):
        cached = weights_service.cached_path(spec)
        size = f"{spec.size_bytes / 1e6:.0f} MB" if spec.size_bytes else "size unknown"
        state = f"cached at {cached}" if cached else "not downloaded"
        typer.echo(f"{spec.name}  ({backend_id}, {size}, {spec.licence}, {spec.hf_repo})  {state}")


@weights_app.command("pull")
def pull(name: str = typer.Argument(..., help="Weights name, e.g. vit_small_patch14_dinov2.lvd142m.")) -> None:
    """Download weights from the Hugging Face Hub into the local cache (needs a network)."""
    spec = weights_service.find_spec(registry(), name)
    cached = weights_service.cached_path(spec)
    if cached:
        typer.echo(f"{name} is already cached at {cached}")
        return
    size = f"{spec.size_bytes / 1e6:.0f} MB" if spec.size_bytes else "unknown size"
    typer.echo(f"downloading {name} ({size}, licence {spec.licence}) from {spec.hf_repo}")
    with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(name, total=spec.size_bytes)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total or spec.size_bytes)

        path = weights_service.pull(spec, progress=progress)
    typer.echo(f"saved {path}")
