"""``protolens compare-epochs``: the headless twin of the checkpoint comparison view (same service, same files).

Any run kind of :data:`protolens.services.run_kinds.RUN_KINDS` (``config.json`` ``"model"``: prototype-vit, ldvc,
patch-selector); the table lists that kind's indicators. A prototype-ViT run's ``config.json`` fixes the tiling
(photo size, crop, crop input) and the backbone: the narrow ViT's token mixing is sized to its crop grid, so this
command takes no tiling options. An unknown kind or a missing backend ends with an error line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from protolens.cli import app
from protolens.cli.common import registry, run_with_bar
from protolens.core.errors import ParamError
from protolens.core.store import ResultStore
from protolens.services.compare import COLORMAPS
from protolens.services.epochs import compare_epochs
from protolens.services.run_kinds import run_kind
from protolens.services.segment import Segmenter, load_image

HEADER = ("epoch", "loss", "entropy", "border_share", "iou_previous", "photo_iou_prev", "photo_pearson_prev", "key")
"""The table header of a prototype-ViT run (another kind: epoch, its indicators, then the photo columns)."""
PHOTO_HEADER = ("photo_iou_prev", "photo_pearson_prev", "key")


def header(indicators: tuple[str, ...]) -> tuple[str, ...]:
    """The printed table's header for a run kind's indicators."""
    return ("epoch", *indicators, *PHOTO_HEADER)


def parse_epochs(text: str | None) -> list[int] | None:
    """``"1,3,5"`` (or ranges ``"2-6"``) as epoch numbers; None for None. Raises :class:`ParamError`."""
    if text is None:
        return None
    epochs: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-")
            epochs.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ParamError(f"--epochs takes epoch numbers like 1,3,5 or 2-6, not {text!r}") from None
    if not epochs or min(epochs) < 1:
        raise ParamError(f"--epochs takes epoch numbers >= 1, not {text!r}")
    return epochs


def parse_pair(text: str | None) -> tuple[int, int] | None:
    """``"A,B"`` (two epoch numbers) as a pair; None for None. Raises :class:`ParamError`."""
    if text is None:
        return None
    try:
        a, b = (int(part) for part in text.split(","))
    except ValueError:
        raise ParamError(f"--pair takes two epoch numbers like 3,12, not {text!r}") from None
    return a, b


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("compare-epochs")
def compare_epochs_command(
    photo: Path = typer.Argument(..., help="The photo (quadrat) to look at under every epoch."),
    run: Path = typer.Option(..., "--run", help="Training run folder (config.json, epoch_###.safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the PNGs, CSV and JSON."),
    epochs: str = typer.Option(None, "--epochs", help="Epochs to compare, e.g. 1,3,5 or 2-6; default all."),
    threshold: float = typer.Option(None, "--threshold", "-t", min=0.0, max=1.0,
                                    help="Crop threshold t of the masks (backend default 0.6)."),
    pair: str = typer.Option(None, "--pair", help="One difference map A - B of epochs A,B instead of every "
                                                  "consecutive pair."),
    colormap: str = typer.Option("inferno", "--colormap", help=f"One of {', '.join(COLORMAPS)}."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Crops per backbone forward pass."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random_weights: bool = typer.Option(False, "--allow-random-weights",
                                              help="Accept a run whose backbone had random weights (testing)."),
) -> None:
    """The photo under each epoch of a training run: received attention of a prototype-ViT run (arXiv
    2512.19957), the ldvc map of an LDVC run, the patch-selection ranks of a patch selector (its ``selector``).
    One PNG per epoch, a grid, difference maps, and the run kind's indicators with this photo's IoU and
    correlation between consecutive epochs (CSV and JSON). Results are kept in the photo's store, so a rerun
    computes nothing.
    """
    if colormap not in COLORMAPS:
        raise ParamError(f"unknown colormap {colormap!r}; one of {', '.join(COLORMAPS)}")
    params: dict[str, Any] = {}
    if threshold is not None:
        params["threshold"] = threshold
    if batch_size is not None:
        params["batch_size"] = batch_size
    selected, chosen_pair = parse_epochs(epochs), parse_pair(pair)
    image = load_image(photo)
    segmenter = Segmenter(registry(), device=device)
    result = run_with_bar(compare_epochs(segmenter, ResultStore.from_environment(), image, run, out,
                                         epochs=selected, params=params, pair=chosen_pair, colormap=colormap,
                                         allow_random_weights=allow_random_weights), "compare-epochs")
    indicators = run_kind(run).indicators
    typer.echo("\t".join(header(indicators)))
    for row in result.rows:
        cells = [row["epoch"], *(row[name] for name in indicators), row["photo_iou_previous"],
                 row["photo_pearson_previous"], row["key"]]
        typer.echo("\t".join(_cell(c) for c in cells) + ("\tchosen" if row["chosen"] else ""))
    typer.echo(f"protolens compare-epochs: {len(result.maps)} epochs of {run} on {photo.name}, "
               f"{len(result.files)} files -> {out}")
    for path in result.files:
        typer.echo(f"wrote {path}")
