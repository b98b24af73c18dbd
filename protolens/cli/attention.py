"""``protolens attention``: ViT attention heatmaps (the vit-attention backend) with named options.

The backend options (``--model``, ``--mode``, ``--block``, ``--head``, ``--head-fusion``, ``--discard-ratio``,
``--long-side``, ``--tile-size``, ``--overlap``, ``--batch-size``, ``--precision``) are made from the
parameters of ``plugins/vit_attention/plugin.toml`` (:func:`protolens.cli.common.with_backend_options`):
their flags, help, defaults, bounds and choices are declared there only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from protolens.cli import app
from protolens.cli.common import backend_specs, with_backend_options
from protolens.cli.executor import ExecutorChoice, with_executor_options
from protolens.cli.segment import run_segment

BACKEND = "vit-attention"
ALIASES = {"model": ("-m",)}
PANEL = f"Backend options ({BACKEND}, from its plugin.toml)"


def attention(
    paths: list[Path] = typer.Argument(..., help="Photos and folders of photos."),
    *,
    weights: Path = typer.Option(None, "--weights", help="Weights file or snapshot folder; default: local cache."),
    threshold: float = typer.Option(None, "--threshold", "-t", min=0.0, max=1.0,
                                    help="Mask threshold; default Otsu (value) or 0.6 (mass)."),
    semantics: str = typer.Option("value", "--threshold-semantics",
                                  help="value: score >= t. mass: smallest set of patches holding t of the mass."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder; default: the per-photo result store."),
    device: str = typer.Option(None, "--device", help="Torch device (cpu, cuda:0); default: least busy GPU, else CPU."),
    random_weights: bool = typer.Option(False, "--random-weights", hidden=True, help="Testing only."),
    choice: ExecutorChoice = ExecutorChoice(),  # the executor options (with_executor_options)
    **params: Any,
) -> None:
    """Attention heatmaps, masks and provenance for photos: CLS attention, received attention or rollout."""
    run_segment([str(p) for p in paths], BACKEND, params, weights=weights, threshold=threshold, semantics=semantics,
                out=out, device=device, random_weights=random_weights, choice=choice)


app.command("attention")(with_backend_options(with_executor_options(attention), backend_specs(BACKEND), aliases=ALIASES, panel=PANEL))
