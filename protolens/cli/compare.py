"""``protolens compare``: the headless twin of the Compare view's export (same PNG and JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from protolens.cli import app
from protolens.cli.results import resolve_key
from protolens.core.errors import ParamError
from protolens.core.store import ResultStore
from protolens.services.compare import COLORMAPS, DIFFERENCE_MODES, compare_grid, export_compare, pane_data
from protolens.services.results import load_found
from protolens.services.segment import load_image

MIN_RESULTS, MAX_RESULTS = 2, 9


def parse_difference(text: str | None, panes: int) -> tuple[int, int] | None:
    """``"A,B"`` (1-based pane indices) as a 0-based pair; None for None. Raises :class:`ParamError`."""
    if text is None:
        return None
    try:
        a, b = (int(part) for part in text.split(","))
    except ValueError:
        raise ParamError(f"--difference takes two pane numbers like 1,2, not {text!r}") from None
    if a == b or not (1 <= a <= panes and 1 <= b <= panes):
        raise ParamError(f"--difference needs two different panes among 1..{panes}, got {text}")
    return a - 1, b - 1


def _format(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


@app.command("compare")
def compare(
    photo: Path = typer.Argument(..., help="The photo whose stored results to compare."),
    results: list[str] = typer.Option(..., "--result", "-r",
                                      help="Result key or unique prefix (>= 6 hex), 2 to 9 times; "
                                           "see `protolens results list`."),
    difference: str = typer.Option(None, "--difference", help="Add a difference pane of panes A,B (1-based)."),
    difference_mode: str = typer.Option("map", "--difference-mode", help="map: A - B. xor: the masks' XOR."),
    threshold: float = typer.Option(None, "--threshold", "-t", min=0.0, max=1.0,
                                    help="One threshold for every pane; default: each result's saved one."),
    semantics: str = typer.Option(None, "--threshold-semantics",
                                  help="value or mass, how --threshold is read (default value)."),
    colormap: str = typer.Option("inferno", "--colormap", help=f"One of {', '.join(COLORMAPS)}."),
    opacity: float = typer.Option(0.5, "--opacity", min=0.0, max=1.0, help="Weight of the heatmap over the photo."),
    columns: int = typer.Option(None, "--columns", min=1, max=9, help="Grid columns; default by the pane count."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <stem>.compare.png and .compare.json."),
) -> None:
    """Compare stored results of one photo: a grid PNG and a JSON with the pairwise agreement (IoU of the
    masks, Pearson and Spearman correlation of the maps on a common grid), as the GUI's Compare view exports.
    """
    if not MIN_RESULTS <= len(results) <= MAX_RESULTS:
        raise ParamError(f"give {MIN_RESULTS} to {MAX_RESULTS} results (--result KEY), not {len(results)}")
    if semantics is not None and threshold is None:
        raise ParamError("--threshold-semantics needs --threshold")
    if semantics not in (None, "value", "mass"):
        raise ParamError(f"--threshold-semantics must be value or mass, not {semantics!r}")
    if difference_mode not in DIFFERENCE_MODES:
        raise ParamError(f"--difference-mode must be one of {', '.join(DIFFERENCE_MODES)}, not {difference_mode!r}")
    if colormap not in COLORMAPS:
        raise ParamError(f"unknown colormap {colormap!r}; one of {', '.join(COLORMAPS)}")
    pair = parse_difference(difference, len(results))
    store = ResultStore.from_environment()
    image = load_image(photo)
    entries = store.list_results(photo, sha256=image.meta.sha256)
    if not entries:
        raise ParamError(f"{photo.name} has no stored results (run `protolens segment` on it first)")
    grid = compare_grid((image.meta.height, image.meta.width))
    panes = []
    for given in results:
        key = resolve_key(entries, given, photo.name)
        found = load_found(store, image, key)
        if found is None:
            raise ParamError(f"{photo.name}: the files of result {key} are missing or unreadable")
        panes.append(pane_data(found, grid, threshold=threshold,
                               semantics=(semantics or "value") if threshold is not None else None))
    written = export_compare(out, image, panes, columns=columns, difference=pair, difference_mode=difference_mode,
                             colormap=colormap, opacity=opacity)
    for index, pane in enumerate(panes):
        typer.echo(f"{index + 1}\t{pane.key}\t{pane.title}\t{pane.semantics} {pane.level:.3f}")
    for pair_entry in json.loads(written[1].read_text(encoding="utf-8"))["agreement"]:  # as written
        typer.echo(f"{pair_entry['a']}-{pair_entry['b']}\tiou {_format(pair_entry['iou'])}"
                   f"\tpearson {_format(pair_entry['pearson'])}\tspearman {_format(pair_entry['spearman'])}")
    for path in written:
        typer.echo(f"wrote {path}")
