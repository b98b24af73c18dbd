"""``protolens explain QUERY --bank DIR``: why a photo resembles its nearest prototypes (keypoint labeling).

The work is :func:`protolens.services.explain.explain` (Key-point Labeling Classifiers, seed 002: retrieval,
segments, best-buddy matches, soft vote; pixel correspondences of Amir et al., arXiv 2112.05814, with
``--pixels``); the picture and JSON are :func:`protolens.services.explain_render.write_explanation`. The
backbone is the bank's (``protolens bank build DIR``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.cli.common import run_with_bar
from protolens.core.explanation import FACETS, Explanation
from protolens.core.segments import SEGMENT_SOURCES
from protolens.services.segment import Segmenter

SEGMENTS_METAVAR = "[" + "|".join(SEGMENT_SOURCES) + "]"
SEGMENTS_HELP = ("Segments: cosegment = part co-segmentation with the bank's part centroids; slic = SLIC "
                 "superpixels inside the object mask; bank = annotated parts (query: <stem>.parts.png beside it).")


def summary_line(explanation: Explanation, paths: list[Path], label_consistent: bool | None = None) -> str:
    """One line: the prediction (or "no best buddies: no prediction"), matches, prototypes and files written."""
    vote = explanation.vote(label_consistent)
    lc = explanation.label_consistent if label_consistent is None else label_consistent
    headline = f"prediction {vote.message()}" if vote.prediction is not None else vote.message()
    line = (f"protolens explain: {Path(explanation.query.path).name}: {headline}; "
            f"{len(explanation.kept(label_consistent))} of {len(explanation.matches)} matches kept"
            f"{' (label-consistent)' if lc else ''} with {len(explanation.prototypes)} prototypes "
            f"({explanation.segments_source} segments)")
    if explanation.correspondences is not None:
        line += f", {sum(len(c.query_xy) for c in explanation.correspondences)} pixel correspondences"
    return f"{line} -> {', '.join(str(p) for p in paths)}"


@app.command("explain")
def explain_command(
    query: Path = typer.Argument(..., help="The query photo."),
    bank: Path = typer.Option(..., "--bank", help="A built prototype bank folder (`protolens bank build DIR`)."),
    k: int = typer.Option(5, "--k", min=1, help="Prototypes retrieved by CLS cosine."),
    segments: str = typer.Option("cosegment", "--segments", metavar=SEGMENTS_METAVAR, help=SEGMENTS_HELP),
    n_segments: int = typer.Option(10, "--n-segments", min=1, help="SLIC superpixels per image (8..12 in KLC)."),
    label_consistent: bool = typer.Option(False, "--label-consistent/--no-label-consistent",
                                          help="Keep only matches whose part labels agree."),
    pixels: bool = typer.Option(False, "--pixels", help="Draw pixel correspondences (Amir et al.) instead of "
                                                        "segment matches."),
    n_pairs: int = typer.Option(10, "--n-pairs", min=1, help="Pixel correspondences per prototype."),
    layer: int = typer.Option(9, "--layer", help="Pixel mode: block whose facet gives the descriptors (Amir: 9)."),
    facet: str = typer.Option("key", "--facet", metavar="[" + "|".join(FACETS) + "]",
                              help="Pixel mode: key, query, value (the attention projections, heads concatenated) "
                                   "or token (the block's output)."),
    log_bin: bool = typer.Option(True, "--bin/--no-bin", help="Pixel mode: log-binned descriptors (17 bins)."),
    stride: int = typer.Option(0, "--stride", min=0, help="Pixel mode: patch-embedding stride (0 = half the "
                                                          "patch; timm models only)."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder for <stem>.explanation.png and .json."),
    model: str = typer.Option(None, "--model", help="Backbone; must be the bank's (default: the bank's)."),
    weights: Path = typer.Option(None, "--weights", help="Backbone weights file; default: the local cache."),
    precision: str = typer.Option("auto", "--precision", help="auto (bfloat16 on CUDA, float32 on the CPU), "
                                                              "float32, bfloat16 or float16."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random backbone weights when none are found (testing only)."),
) -> None:
    """Match the query's parts with its top-k prototypes' parts, vote for a class, and draw it (PNG + JSON).

    Keypoints in the JSON are (x, y) photo pixels of the image they lie in (origin top-left).
    """
    from protolens.cli.common import registry
    from protolens.services.bank import load_bank
    from protolens.services.explain import explain
    from protolens.services.explain_render import write_explanation
    from protolens.services.segment import load_image

    cache = load_bank(bank)
    photo = load_image(query)
    segmenter = Segmenter(registry(), device=device)
    explanation = run_with_bar(explain(segmenter, photo, cache, k=k, segments=segments, n_segments=n_segments,
                                       label_consistent=label_consistent, pixels=pixels, n_pairs=n_pairs,
                                       layer=layer, facet=facet, bin=log_bin, stride=stride,
                                       weights_path=weights, precision=precision,
                                       allow_random_weights=allow_random, model=model), "explain")
    for note in explanation.notes:
        typer.echo(f"warning: {note}", err=True)
    paths = write_explanation(explanation, out, images={"query": photo.rgb})
    typer.echo(summary_line(explanation, paths))
