"""``protolens bank build DIR``: the prototype bank of keypoint-labeling explanations (KLC step 1).

``--model`` is the vit-attention backend's ``model`` parameter and ``--precision`` its ``precision`` (help and
choices from its ``plugin.toml``); the work is :func:`protolens.services.bank.build_bank`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from protolens.cli import app
from protolens.cli.common import backend_specs, registry, run_with_bar, with_backend_options
from protolens.models.kmeans import LIBRARIES
from protolens.services.bank import BankSummary, build_bank
from protolens.services.segment import Segmenter
from protolens.services.tokens import BACKEND

bank_app = typer.Typer(name="bank", no_args_is_help=True, add_completion=False,
                       help="Prototype banks for keypoint-labeling explanations (protolens explain).")
app.add_typer(bank_app, name="bank")


def summary_line(summary: BankSummary) -> str:
    """One line: images (embedded / reused), skipped, classes, parts, model and the cache folder."""
    return (f"protolens bank: {summary.images} images ({summary.embedded} embedded, {summary.reused} reused), "
            f"{len(summary.unreadable)} skipped, {len(summary.classes)} classes, {summary.parts} parts, "
            f"{summary.model} ({summary.weights_id}) -> {summary.cache_dir}")


def build(
    folder: Path = typer.Argument(..., help="Bank folder: class subfolders (DIR/<class>/...), or images that are "
                                            "each their own class; optional *.mask.png, *.parts.png, parts.txt, "
                                            "images.txt + part_locs.txt, part_names.txt."),
    *,
    weights: Path = typer.Option(None, "--weights", help="Backbone weights file; default: the local cache."),
    input_size: int = typer.Option(224, "--input", min=14, help="Model input side (photo resized, aspect "
                                                                "ignored); a patch multiple."),
    parts: int = typer.Option(4, "--parts", min=1, help="Co-segmentation parts (K-Means on foreground tokens)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass (halved on OOM)."),
    seed: int = typer.Option(0, "--seed", help="K-Means seed."),
    library: str = typer.Option("auto", "--kmeans", metavar="[" + "|".join(LIBRARIES) + "]",
                                help="K-Means library: auto = faiss when installed, else scikit-learn."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random backbone weights when none are found (testing only)."),
    **backbone: Any,
) -> None:
    """Compute and cache every bank image's features (CLS, patch tokens, saliency) and the part centroids.

    A rebuild embeds only new or changed images. Unreadable images are skipped and listed.
    """
    backbone.setdefault("model", "")  # no manifest: the service reports the unavailable backend
    segmenter = Segmenter(registry(), device=device, disk_cache=None)
    summary = run_with_bar(build_bank(segmenter, folder, weights_path=weights, input_size=input_size, parts=parts,
                                      batch_size=batch_size, allow_random_weights=allow_random, seed=seed,
                                      library=library, **backbone), "bank")
    for rel, reason in summary.unreadable:
        typer.echo(f"skipped: {rel}: {reason}", err=True)
    for message in summary.warnings:
        typer.echo(f"warning: {message}", err=True)
    typer.echo(summary_line(summary))


def _backbone_specs() -> list[Any]:
    """The backend's ``model`` and ``precision`` parameters (``--model``, ``--precision``)."""
    specs = {s.name: s for s in backend_specs(BACKEND)}
    return [specs[name] for name in ("model", "precision") if name in specs]


bank_app.command("build")(with_backend_options(build, _backbone_specs()))
