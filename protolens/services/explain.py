"""Keypoint-labeling explanations of a query photo against a prototype bank, and their evaluation.

Method: Key-point Labeling Classifiers (seed 002, METHODS.md §4) on dense ViT features, with the pixel-level
correspondences of Amir et al. (arXiv 2112.05814 §4.1) as an alternative view:

1. CLS embedding of the query; the top-k bank images by cosine are its prototypes (KLC step 1).
2. Segments of the query and of each prototype (part co-segmentation, SLIC superpixels inside the object mask,
   or annotated parts); descriptor = mean of the bilinearly upsampled patch tokens over the segment;
   keypoint = segment centroid (KLC step 2).
3. Best buddies (mutual nearest neighbours by cosine) between the query's segments and the pooled segments of
   the prototypes, optionally only pairs whose part labels agree (KLC step 3).
4. Soft vote: matches on class-c prototypes / all matches, argmax; zero matches give no prediction (KLC step 4).

The engine is :func:`protolens.models.keypoint_labeling.explain_image`; this module loads the bank's backbone
on the segmenter's device pool (as tile tokens and prototypes do: :mod:`protolens.services.tokens`), checks
that the bank was built with the same weights, finds the query's object mask and runs the engine in a pool
job. The prototypes' segments and descriptors are memoised by the engine, so the next query reuses them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Generator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_bytes_atomic
from protolens.core.bank_files import BankCache, build_command, find_object_mask, scan_bank
from protolens.core.errors import ImageReadError, ParamError
from protolens.core.explanation import Explanation
from protolens.core.jobs import CancelToken, Progress, rescaled
from protolens.core.segments import SEGMENT_SOURCES, Segments
from protolens.services.segment import LoadedImage, Segmenter, load_image
from protolens.services.tokens import _backbone


def query_object_mask(path: str | Path, image_size: tuple[int, int]) -> np.ndarray | None:
    """The object mask of a query photo, or None when it has none (then the engine uses the saliency mask).

    The bank's priority (:func:`protolens.core.bank_files.find_object_mask`): ``<stem>.mask.png`` beside the
    photo (> 127 = object; another size is resized, nearest), else the photo's alpha channel; an empty mask
    falls through to the next source.

    Parameters
    ----------
    path : path
        The query photo.
    image_size : (int, int)
        (height, width) of the decoded photo.

    Returns
    -------
    numpy.ndarray or None
        (height, width) bool, row 0 at the top.

    Raises
    ------
    ImageReadError
        An unreadable mask file.
    """
    mask, _ = find_object_mask(path, (int(image_size[0]), int(image_size[1])))
    return mask


def query_part_segments(path: str | Path, image_size: tuple[int, int], bank: BankCache) -> Segments | None:
    """The query's annotated parts for ``segments="bank"``: ``<stem>.parts.png`` beside the photo, or None.

    An indexed part mask (0 = none, v = part v of the bank's ``parts.txt``; ids beyond it are named
    ``part v``), read as for bank images (:meth:`BankCache.part_mask_segments`). Raises ImageReadError.
    """
    return bank.part_mask_segments(path, (int(image_size[0]), int(image_size[1])))


def check_bank_model(bank: BankCache, model: str | None) -> None:
    """Raise ParamError when ``model`` is given and is not the backbone the bank was built with."""
    if model and model != bank.model:
        raise ParamError(f"--model {model}: the bank {bank.root} was built with {bank.model}; "
                         f"explanations use the bank's model (drop --model or rebuild the bank with {model})")


def _check_weights(bank: BankCache, weights_id: str, sha: str) -> None:
    if sha != bank.weights_sha256:
        raise ParamError(f"the bank {bank.root} was built with weights {bank.weights_id} "
                         f"(sha256 {bank.weights_sha256[:16]}), but the weights found now are {weights_id} "
                         f"(sha256 {sha[:16]}); pass the bank's weights with --weights or rebuild the bank "
                         f"({build_command(bank.root)})")


def _check_options(segments: str, k: int, n_segments: int, n_pairs: int) -> None:
    if segments not in SEGMENT_SOURCES:
        raise ParamError(f"--segments: {segments!r} is not one of {', '.join(SEGMENT_SOURCES)}")
    if k < 1 or n_segments < 1 or n_pairs < 1:
        raise ParamError("--k, --n-segments and --n-pairs must be at least 1")


def explain(segmenter: Segmenter, query: LoadedImage, bank: BankCache, *, k: int = 5, segments: str = "cosegment",
            n_segments: int = 10, label_consistent: bool = False, pixels: bool = False, n_pairs: int = 10,
            layer: int = 9, facet: str = "key", bin: bool = True, stride: int = 0,
            query_mask: np.ndarray | None = None, query_segments: Segments | None = None,
            weights_path: str | Path | None = None, precision: str = "auto", allow_random_weights: bool = False,
            model: str | None = None, cancel: CancelToken | None = None,
            memo: MutableMapping[Any, Any] | None = None) -> Generator[Progress, None, Explanation]:
    """Explain ``query`` by its best-buddy segment matches with its top-k prototypes in ``bank`` (KLC).

    Parameters
    ----------
    segmenter : Segmenter
        Gives the vit-attention backend (the bank's ``model``, its weights look-up and dtype rule) and the
        device pool the work runs on.
    query : LoadedImage
        The query photo ((h, w, 3) uint8 RGB) and its identity; a bank image with the same sha256 is never
        one of its prototypes (leave-one-out).
    bank : BankCache
        A built bank (:func:`protolens.services.bank.load_bank`).
    k : int
        Prototypes retrieved by CLS cosine (KLC step 1; 5 in the reference code).
    segments : {"cosegment", "slic", "bank"}
        Segment source (KLC step 2): part co-segmentation with the bank's part centroids, SLIC superpixels
        inside the object mask (``n_segments`` of them), or the bank's annotated parts (the query's from
        ``query_segments``, else co-segmentation with a note in ``Explanation.notes``).
    label_consistent : bool
        The default of the returned explanation's :meth:`~Explanation.kept` / :meth:`~Explanation.vote`: keep
        only pairs whose part labels agree (KLC step 3, paper only). It never changes the matches computed.
    pixels : bool
        Also compute pixel correspondences (Amir et al. §4.1): ``n_pairs`` per prototype from descriptors of
        block ``layer``, facet ``facet`` (key/query/value/token), log-binned when ``bin``, patch stride
        ``stride`` (0 = patch // 2).
    query_mask : numpy.ndarray, optional
        (h, w) bool object mask of the query; default :func:`query_object_mask` of its file, else the
        saliency mask.
    query_segments : Segments, optional
        The user's drawn parts of the query (for ``segments="bank"``); default :func:`query_part_segments`.
    weights_path, precision, allow_random_weights
        Backbone weights file (default: the local cache), precision of the vit-attention backend, and random
        weights when none are found (tests, benchmarks; the bank must have been built with random weights too).
    model : str, optional
        When given, must equal the bank's model (else ParamError naming both).
    cancel : CancelToken, optional
        Checked between steps.
    memo : mutable mapping, optional
        The engine's memo of prototype work; default its module-level bounded LRU (shared across queries).

    Yields
    ------
    Progress

    Returns
    -------
    Explanation
        Keypoints are (x, y) in photo pixels of the image they lie in, origin top-left.

    Raises
    ------
    ParamError
        Bad options, a model other than the bank's, or weights whose sha256 differs from the bank's (the
        message names both).
    BackendUnavailableError, WeightsNotFoundError, CheckpointError, ImageReadError, Cancelled
    """
    cancel = cancel or CancelToken()
    _check_options(segments, k, n_segments, n_pairs)
    check_bank_model(bank, model)
    backend, params, ctx = _backbone(segmenter, bank.model, precision, weights_path, allow_random_weights, cancel)
    weights_id, sha = backend.weights_identity(params, ctx)
    _check_weights(bank, weights_id, sha)
    if query_mask is None:
        query_mask = query_object_mask(query.meta.path, query.rgb.shape[:2])
    if query_segments is None and segments == "bank":
        query_segments = query_part_segments(query.meta.path, query.rgb.shape[:2], bank)
    options = {"k": k, "segments": segments, "n_segments": n_segments, "pixels": pixels, "n_pairs": n_pairs,
               "layer": layer, "facet": facet, "bin": bin, "stride": stride, "query_mask": query_mask,
               "query_segments": query_segments, "query_sha256": query.meta.sha256,
               "query_path": str(query.meta.path), "weights_sha256": sha, "label_consistent": bool(label_consistent)}
    if memo is not None:
        options["memo"] = memo
    warnings: list[str] = []

    def job(device: str) -> Generator[Progress, None, Explanation]:
        from protolens.models.keypoint_labeling import explain_image

        device_ctx = dataclasses.replace(ctx, device=device)
        network = backend.load_model(params, device_ctx)  # type: ignore[attr-defined]
        return (yield from explain_image(network, query.rgb, bank, device=device, dtype=device_ctx.resolved_dtype(),
                                         cancel=cancel, **options))

    explanation = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device, warnings=warnings)
    explanation.notes.extend(w for w in warnings if w not in explanation.notes)
    return explanation


@dataclass
class KeypointEvaluation:
    """What :func:`evaluate_keypoints` measured on a test folder.

    Attributes
    ----------
    top1 : float
        Share of the (readable) test queries whose vote prediction is their class, in [0, 1]; a query with
        zero matches has no prediction and counts as wrong.
    matches_per_query : float
        Mean number of kept best-buddy matches per query.
    zero_match_share : float
        Share of queries with zero kept matches, in [0, 1].
    per_class : dict
        class -> {"queries", "correct", "top1", "matches_per_query", "zero_matches"}.
    rows : list of dict
        One per query, in scan order: {"path" (relative to the test folder), "class", "prediction" ("" for
        none), "correct", "matches", "votes_for_class", "prediction_share"}.
    skipped : list of (str, str)
        (path relative to the test folder, reason) of unreadable images, which are not scored.
    k, segments, label_consistent
        The settings used.
    notes : list of str
        What the user should know, e.g. test classes the bank has no prototype of (never predicted).
    """

    top1: float
    matches_per_query: float
    zero_match_share: float
    per_class: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    k: int = 5
    segments: str = "cosegment"
    label_consistent: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        """Queries scored."""
        return len(self.rows)

    @property
    def correct(self) -> int:
        """Queries predicted right."""
        return sum(bool(r["correct"]) for r in self.rows)

    def write_csv(self, path: str | Path) -> Path:
        """Write :attr:`rows` as CSV (header row, ',' delimited) atomically; returns the path."""
        buffer = io.StringIO()
        columns = ["path", "class", "prediction", "correct", "matches", "votes_for_class", "prediction_share"]
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({**row, "correct": int(row["correct"]),
                             "prediction_share": f"{row['prediction_share']:.6f}"})
        write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
        return Path(path)

    def summary_line(self) -> str:
        """One line: top-1 accuracy, matches per query, zero-match share, settings and skipped images."""
        filters = ", label-consistent" if self.label_consistent else ""
        return (f"keypoints: top-1 accuracy {self.top1:.4f} ({self.correct}/{self.n_queries} queries), "
                f"{self.matches_per_query:.2f} matches per query, {100 * self.zero_match_share:.1f} % with zero "
                f"matches (k {self.k}, {self.segments}{filters}, {len(self.per_class)} classes), "
                f"{len(self.skipped)} skipped")

    def to_json(self) -> dict[str, Any]:
        """Every figure and the per-query rows, JSON-ready."""
        return {"top1": self.top1, "matches_per_query": self.matches_per_query,
                "zero_match_share": self.zero_match_share, "queries": self.n_queries, "correct": self.correct,
                "k": self.k, "segments": self.segments, "label_consistent": self.label_consistent,
                "per_class": self.per_class, "rows": self.rows,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "notes": list(self.notes)}


def _row(rel: str, label: str, explanation: Explanation) -> dict[str, Any]:
    vote = explanation.vote()
    counts = dict(zip(vote.classes, np.asarray(vote.counts).tolist(), strict=True))
    prediction = vote.prediction or ""
    share = counts.get(prediction, 0) / vote.total if vote.total else 0.0
    return {"path": rel, "class": label, "prediction": prediction, "correct": bool(prediction == label),
            "matches": int(vote.total), "votes_for_class": int(counts.get(label, 0)), "prediction_share": share}


def _per_class(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(row["class"], {"queries": 0, "correct": 0, "matches": 0, "zero_matches": 0})
        entry["queries"] += 1
        entry["correct"] += int(row["correct"])
        entry["matches"] += row["matches"]
        entry["zero_matches"] += int(row["matches"] == 0)
    return {name: {"queries": e["queries"], "correct": e["correct"], "top1": e["correct"] / e["queries"],
                   "matches_per_query": e["matches"] / e["queries"], "zero_matches": e["zero_matches"]}
            for name, e in sorted(table.items())}


def evaluate_keypoints(segmenter: Segmenter, bank: BankCache, test_dir: str | Path, *,
                       cancel: CancelToken | None = None,
                       **options: Any) -> Generator[Progress, None, KeypointEvaluation]:
    """Top-1 accuracy of the KLC soft vote (KLC step 4) on a folder split of test photos.

    Parameters
    ----------
    segmenter : Segmenter
    bank : BankCache
        The prototype bank; a test photo identical to a bank image (same sha256) is left out of its own
        retrieval.
    test_dir : path
        ``test_dir/<class>/...`` photos (the bank folder layout, :func:`protolens.core.bank_files.scan_bank`;
        photos directly in ``test_dir`` are each their own class, named by their stem).
    cancel : CancelToken, optional
    **options
        Passed to :func:`explain` (``k``, ``segments``, ``n_segments``, ``label_consistent``, ``weights_path``,
        ``precision``, ``allow_random_weights``, ``model``, ``memo`` ...).

    Yields
    ------
    Progress
        One step per test photo.

    Returns
    -------
    KeypointEvaluation
        Zero-match queries count as wrong; unreadable photos are listed in ``skipped`` by name, not scored.

    Raises
    ------
    ParamError
        ``test_dir`` is not a folder, holds no photos, or none of them could be read; bad options.
    BackendUnavailableError, WeightsNotFoundError, CheckpointError, Cancelled
    """
    cancel = cancel or CancelToken()
    root = Path(test_dir)
    if not root.is_dir():
        raise ParamError(f"--test {root}: not a folder")
    found, _ = scan_bank(root)
    if not found:
        raise ParamError(f"--test {root}: no photos found (DIR/<class>/photos)")
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for number, (path, rel, label) in enumerate(found):
        cancel.raise_if_set()
        yield Progress(number / len(found), f"query {number + 1}/{len(found)}: {rel}")
        try:
            query = load_image(path)
        except ImageReadError as exc:
            skipped.append((rel, exc.reason))
            continue
        explanation = yield from rescaled(explain(segmenter, query, bank, cancel=cancel, **options),
                                          number / len(found), 1 / len(found),
                                          lambda r, n=number, rel=rel: f"query {n + 1}/{len(found)} {rel}: {r.text}")
        rows.append(_row(rel, label, explanation))
    if not rows:
        raise ParamError(f"--test {root}: none of the {len(found)} photos could be read")
    yield Progress(1.0, f"{len(rows)} queries scored")
    matches = np.array([r["matches"] for r in rows], np.float64)
    unknown = sorted({r["class"] for r in rows} - set(bank.classes))
    notes = [f"{len(unknown)} test classes have no prototype in the bank and are never predicted: "
             f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"] if unknown else []
    return KeypointEvaluation(
        top1=sum(r["correct"] for r in rows) / len(rows), matches_per_query=float(matches.mean()),
        zero_match_share=float((matches == 0).mean()), per_class=_per_class(rows), rows=rows, skipped=skipped,
        k=int(options.get("k", 5)), segments=str(options.get("segments", "cosegment")),
        label_consistent=bool(options.get("label_consistent", False)), notes=notes)
