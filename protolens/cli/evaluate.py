"""``protolens evaluate``: score outputs against a truth file (species lists: PlantCLEF 2025 F1)."""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.core.atomic import write_json_atomic
from protolens.core.species import SpeciesEvaluation, evaluate_species, read_species_csv, write_per_quadrat

evaluate_app = typer.Typer(name="evaluate", no_args_is_help=True, add_completion=False,
                           help="Score outputs against a truth file.")
app.add_typer(evaluate_app, name="evaluate")


def _shown(ids: tuple[str, ...], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def summary_lines(result: SpeciesEvaluation) -> list[str]:
    """The lines ``evaluate species`` prints for ``result``."""
    lines = [f"macro F1      {result.f1:.5f}  (mean over {result.n_quadrats} quadrats)"]
    if result.f1_transect is not None:
        lines.append(f"transect F1   {result.f1_transect:.5f}  (mean within each of {result.n_transects} "
                     f"transects, then across them: the PlantCLEF 2025 score)")
    lines += [f"precision     {result.precision:.5f}",
              f"recall        {result.recall:.5f}",
              f"mean list length  predicted {result.mean_predicted:.2f}, truth {result.mean_truth:.2f}"]
    if result.missing:
        lines.append(f"missing from the prediction (scored as empty): {len(result.missing)}: {_shown(result.missing)}")
    if result.extra:
        lines.append(f"predicted but not in the truth (ignored): {len(result.extra)}: {_shown(result.extra)}")
    return lines


@evaluate_app.command("species")
def species(
    pred: Path = typer.Option(..., "--pred", help="Prediction CSV quadrat_id,species_ids (e.g. from "
                                                  "`protolens species`); ',' or ';' delimited."),
    truth: Path = typer.Option(..., "--truth", help="Truth CSV quadrat_id,species_ids[,transect]."),
    per_quadrat: Path = typer.Option(None, "--per-quadrat", help="Write the per-quadrat table to this CSV."),
    json_path: Path = typer.Option(None, "--json", help="Write every figure and the per-quadrat table as JSON."),
) -> None:
    """Score species lists against a truth file: set F1, precision, recall (PlantCLEF 2025).

    Per-quadrat set F1 = 2|P∩G| / (|P|+|G|) averaged over the truth's quadrats, and, when the truth has a
    transect column, averaged within transects then across them (arXiv 2509.17602).

    A truth quadrat missing from the prediction scores as an empty list; predicted quadrats not in the truth
    are ignored. Both lists empty scores 1.
    """
    truth_table = read_species_csv(truth)
    result = evaluate_species(read_species_csv(pred), truth_table)
    for line in summary_lines(result):
        typer.echo(line)
    if per_quadrat is not None:
        write_per_quadrat(per_quadrat, result)
        typer.echo(f"per-quadrat table: {per_quadrat}", err=True)
    if json_path is not None:
        write_json_atomic(json_path, {"schema": "protolens.species-evaluation/1", "pred": str(pred),
                                      "truth": str(truth), **result.to_json()})
        typer.echo(f"json: {json_path}", err=True)
