"""``protolens evaluate``: score outputs against a truth file (species lists: PlantCLEF 2025 F1), and the
keypoint-labeling vote against a folder split (``evaluate keypoints``)."""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.core.atomic import write_json_atomic
from protolens.core.segments import SEGMENT_SOURCES
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


@evaluate_app.command("keypoints")
def keypoints(
    bank: Path = typer.Option(..., "--bank", help="A built prototype bank folder (`protolens bank build DIR`)."),
    test: Path = typer.Option(..., "--test", help="Test photos: DIR/<class>/... (the bank folder layout)."),
    k: int = typer.Option(5, "--k", min=1, help="Prototypes retrieved by CLS cosine."),
    segments: str = typer.Option("cosegment", "--segments", metavar="[" + "|".join(SEGMENT_SOURCES) + "]",
                                 help="Segment source (see `protolens explain --help`)."),
    n_segments: int = typer.Option(10, "--n-segments", min=1, help="SLIC superpixels per image."),
    label_consistent: bool = typer.Option(False, "--label-consistent/--no-label-consistent",
                                          help="Vote with only the matches whose part labels agree."),
    csv_path: Path = typer.Option(None, "--csv", help="Write the per-query table to this CSV."),
    json_path: Path = typer.Option(None, "--json", help="Write every figure and the per-query table as JSON."),
    model: str = typer.Option(None, "--model", help="Backbone; must be the bank's (default: the bank's)."),
    weights: Path = typer.Option(None, "--weights", help="Backbone weights file; default: the local cache."),
    precision: str = typer.Option("auto", "--precision", help="auto, float32, bfloat16 or float16."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random backbone weights when none are found (testing only)."),
) -> None:
    """Top-1 accuracy of the keypoint-labeling vote on a folder split: matches per query, zero-match share.

    Each test photo is explained against the bank (a photo identical to a bank image is left out of its own
    retrieval); a query with zero matches has no prediction and counts as wrong. Unreadable photos are skipped
    and named.
    """
    from protolens.cli.common import registry, run_with_bar
    from protolens.services.bank import load_bank
    from protolens.services.explain import evaluate_keypoints
    from protolens.services.segment import Segmenter

    cache = load_bank(bank)
    segmenter = Segmenter(registry(), device=device)
    result = run_with_bar(evaluate_keypoints(segmenter, cache, test, k=k, segments=segments, n_segments=n_segments,
                                             label_consistent=label_consistent, weights_path=weights,
                                             precision=precision, allow_random_weights=allow_random, model=model),
                          "evaluate keypoints")
    for rel, reason in result.skipped:
        typer.echo(f"skipped: {rel}: {reason}", err=True)
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(result.summary_line())
    if csv_path is not None:
        result.write_csv(csv_path)
        typer.echo(f"csv: {csv_path}", err=True)
    if json_path is not None:
        write_json_atomic(json_path, {"schema": "protolens.keypoint-evaluation/1", "bank": str(bank),
                                      "test": str(test), **result.to_json()})
        typer.echo(f"json: {json_path}", err=True)


def _segmentation_classes(classes_file: Path | None, truth: Path, max_id: int) -> list[str]:
    """--classes, else the truth folder's labels.txt / class_names.txt, else background + "class <id>"."""
    from protolens.core.segdata import read_class_list

    for candidate in (classes_file, truth / "labels.txt", truth / "class_names.txt"):
        if candidate is not None and (candidate == classes_file or candidate.is_file()):
            return read_class_list(candidate)
    return ["background", *(f"class {i}" for i in range(1, max_id + 1))]


@evaluate_app.command("segmentation")
def segmentation(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted label PNGs (pixel value = class id)."),
    truth: Path = typer.Option(..., "--truth", help="Folder of true label PNGs, matched by stem (<stem>.png "
                                                    "or <stem>.labels.png); 255 = ignore."),
    classes_file: Path = typer.Option(None, "--classes", help="Class list: labels.txt (\"<id> <name>\") or one "
                                                              "name per line; default: the truth folder's."),
    seen: str = typer.Option(None, "--seen", help="Seen classes, comma-separated names or ids."),
    unseen: str = typer.Option(None, "--unseen", help="Unseen classes (default with --seen: all others but "
                                                      "background)."),
    json_path: Path = typer.Option(None, "--json", help="Write every figure and the confusion matrix as JSON."),
) -> None:
    """Per-class IoU, mIoU, seen/unseen mIoU, hIoU and pixel accuracy of predicted label maps (LDVC §4.1).

    Truth pixels of 255 are not scored; a predicted 255 or unknown id is wrong. A class absent from truth and
    prediction has no IoU and is left out of the means. Background counts in mIoU and pixel accuracy, and in
    the seen/unseen means only when listed. Truths without a prediction and unreadable files are named and
    skipped.
    """
    from protolens.core.errors import ParamError
    from protolens.core.seg_metrics import crop_confusion, evaluate_segmentation
    from protolens.core.segdata import compare_label_folders, parse_class_split

    try:
        compared = compare_label_folders(pred, truth)
    except NotADirectoryError as exc:
        raise ParamError(str(exc)) from None
    for stem, reason in compared.skipped:
        typer.echo(f"skipped: {stem}: {reason}", err=True)
    if compared.extra:
        typer.echo(f"predictions without a truth (ignored): {len(compared.extra)}: "
                   f"{_shown(tuple(compared.extra))}", err=True)
    if not compared.compared:
        raise ParamError(f"no label map of {truth} could be compared with {pred}")
    classes = _segmentation_classes(classes_file, truth, compared.max_id)
    seen_ids = parse_class_split(seen, classes) if seen is not None else None
    unseen_ids = parse_class_split(unseen, classes) if unseen is not None else None
    try:
        result = evaluate_segmentation(crop_confusion(compared.confusion, len(classes)), classes, seen_ids,
                                       unseen_ids)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    typer.echo(f"compared {len(compared.compared)} label maps ({len(compared.skipped)} skipped)")
    for line in result.lines():
        typer.echo(line)
    if json_path is not None:
        write_json_atomic(json_path, {"schema": "protolens.segmentation-evaluation/1", "pred": str(pred),
                                      "truth": str(truth), "compared": compared.compared,
                                      "skipped": [list(s) for s in compared.skipped], **result.to_json()})
        typer.echo(f"json: {json_path}", err=True)
