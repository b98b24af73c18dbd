"""``protolens prototypes build``: prototypes P (K x D) from a folder of training photos (arXiv 2512.19957, step 2).

``--backbone`` is the vit-attention backend's ``model`` parameter and ``--precision`` its ``precision``
(help and choices from its ``plugin.toml``); the work is :func:`protolens.services.prototypes.build_prototypes`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from protolens.cli import app
from protolens.cli.common import backend_specs, registry, run_with_bar, with_backend_options
from protolens.cli.executor import ExecutorChoice, RayRun, run_job_on_ray, with_executor_options
from protolens.models.kmeans import LIBRARIES
from protolens.services.prototypes import (
    PrototypeSummary,
    build_prototypes,
    build_prototypes_with,
    shards_path,
)
from protolens.services.segment import Segmenter
from protolens.services.tokens import BACKEND

prototypes_app = typer.Typer(name="prototypes", no_args_is_help=True, add_completion=False,
                             help="Prototypes P (K x D) for prototype-guided segmentation (arXiv 2512.19957).")
app.add_typer(prototypes_app, name="prototypes")


def summary_line(summary: PrototypeSummary) -> str:
    """One line: images used (new / reused), skipped, K x D, library, inertia and, with classes, purity / ARI."""
    line = (f"protolens prototypes: {summary.n_images} images ({summary.embedded} embedded, {summary.reused} reused), "
            f"{len(summary.unreadable)} skipped, K {summary.k}, D {summary.dim}, {summary.library} k-means, "
            f"inertia {summary.inertia:.6g}")
    if summary.classes is not None:
        line += (f", {len(summary.classes)} classes: purity {summary.purity:.3f}, "
                 f"adjusted Rand index {summary.ari:.3f}")
    return f"{line} -> {summary.out_file}"


def build(
    *,
    images: Path = typer.Option(..., "--images", help="Folder of training photos, searched recursively; class "
                                                       "subfolders (DIR/<class>/...) give purity and ARI."),
    weights: Path = typer.Option(None, "--weights", help="Backbone weights file; default: the local cache."),
    k: int = typer.Option(..., "--k", min=1, help="Number of prototypes (K-Means clusters); at most the images."),
    out: Path = typer.Option(..., "--out", "-o", help="Prototypes file (.safetensors); <stem>.json (provenance) "
                                                      "and <stem>.shards/ (resumable embeddings) go beside it."),
    input_size: int = typer.Option(518, "--input", min=14, help="Model input side (short side resized, "
                                                                "centre-cropped); a patch multiple."),
    seed: int = typer.Option(0, "--seed", help="K-Means seed."),
    niter: int = typer.Option(350, "--niter", min=1, help="K-Means iterations per restart."),
    nredo: int = typer.Option(30, "--nredo", min=1, help="K-Means restarts (the best is kept)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass (halved on OOM)."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Images per embeddings shard (resume unit)."),
    library: str = typer.Option("auto", "--kmeans", metavar="[" + "|".join(LIBRARIES) + "]",
                                help="K-Means library: auto = faiss when installed, else scikit-learn."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random backbone weights when none are found (testing only)."),
    choice: ExecutorChoice = ExecutorChoice(),  # the executor options (with_executor_options)
    **backbone: Any,
) -> None:
    """Embed every photo (CLS, short side resized, centre crop) and cluster the embeddings into K prototypes.

    A rerun with the same --out embeds only new or changed photos. Unreadable photos are skipped and listed.
    With --executor ray the shards (--shard-size photos each) are embedded by Ray workers; K-Means runs here.
    """
    backbone.setdefault("backbone", "")  # no manifest: the service reports the unavailable backend
    settings = dict(weights_path=weights, k=k, input_size=input_size, seed=seed, niter=niter, nredo=nredo,
                    batch_size=batch_size, shard_size=shard_size, allow_random_weights=allow_random,
                    library=library, **backbone)
    if choice.ray:
        runs: list[RayRun] = []

        def run_units(job: Any, units: list[Any]) -> list[Any]:
            runs.append(run_job_on_ray(job, units, choice, out_dir=out.resolve().parent,
                                       write_dirs=[shards_path(out.resolve())]))
            return runs[-1].results

        summary = build_prototypes_with(run_units, Segmenter(registry(), disk_cache=None), images, out,
                                        **settings)
    else:
        segmenter = Segmenter(registry(), device=device)
        summary = run_with_bar(build_prototypes(segmenter, images, out, **settings), "prototypes")
    for _, reason in summary.unreadable:
        typer.echo(f"skipped: {reason}", err=True)
    for message in summary.warnings:
        typer.echo(f"warning: {message}", err=True)
    typer.echo(summary_line(summary))


def _backbone_specs() -> list[Any]:
    """The backend's ``model`` parameter as a required ``--backbone``, and its ``precision``."""
    specs = {s.name: s for s in backend_specs(BACKEND)}
    chosen = [dataclasses.replace(specs["model"], name="backbone", default=...)] if "model" in specs else []
    return chosen + ([specs["precision"]] if "precision" in specs else [])


prototypes_app.command("build")(with_backend_options(with_executor_options(build), _backbone_specs()))
