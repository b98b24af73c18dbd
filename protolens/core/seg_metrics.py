"""Semantic segmentation metrics: per-class IoU, mIoU, seen/unseen mIoU, hIoU and pixel accuracy.

The metrics of zero-shot semantic segmentation as LDVC reports them (arXiv 2403.08426 §4.1 "Evaluation
metrics", following ZegFormer/ZegCLIP): the mean intersection over union over the seen classes (mIoU(S)),
over the unseen classes (mIoU(U)), and their harmonic mean hIoU = 2 mIoU(S) mIoU(U) / (mIoU(S) + mIoU(U)).

Conventions
-----------
- Label maps are (height, width) integer arrays of class ids; ``ignore`` (255) in the truth marks pixels
  that are not scored at all.
- A predicted id that is not a class (255, or any id >= the number of classes) is a "no class" prediction:
  it is wrong (a false negative of the true class, a false positive of no class). The confusion matrix
  keeps those pixels in an extra last column, so its shape is ``(n, n + 1)``.
- Background (id 0) is a class like any other in the per-class IoU, in mIoU and in pixel accuracy (the
  PASCAL VOC convention). It counts in the seen or unseen mean only when the caller lists it there; when
  only one of ``seen`` / ``unseen`` is given, the other is every remaining class except background.
- A class absent from both the truth and the prediction has IoU NaN and is left out of every mean. A class
  absent from the truth but predicted somewhere has IoU 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IGNORE = 255


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n: int, ignore: int = IGNORE) -> np.ndarray:
    """Pixel counts of (true class, predicted class) for one pair of label maps.

    Parameters
    ----------
    pred, truth : np.ndarray
        (height, width) integer class ids of the same shape, row 0 at the top.
    n : int
        Number of classes (ids 0..n-1), 1..255.
    ignore : int
        Truth pixels of this id are not counted (default 255).

    Returns
    -------
    np.ndarray
        (n, n + 1) int64: ``C[t, p]`` = pixels of true class ``t`` predicted as ``p``; column ``n`` counts
        pixels predicted as no class (``ignore`` or an id outside 0..n-1). Sum matrices of several images to
        evaluate a data set.

    Raises
    ------
    ValueError
        Shapes differ, ``n`` is out of range, or the truth holds an id that is neither a class nor ``ignore``
        (the message lists the offending ids).
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if not 1 <= n <= 255:
        raise ValueError(f"the number of classes must be in 1..255, not {n}")
    t = truth.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    valid = t != ignore
    t, p = t[valid], p[valid]
    bad = (t < 0) | (t >= n)
    if bad.any():
        ids = sorted(int(i) for i in np.unique(t[bad]))[:10]
        raise ValueError(f"the truth holds ids {ids} that are not classes 0..{n - 1} nor ignore {ignore}")
    p = np.where((p < 0) | (p >= n), n, p)
    return np.bincount(t * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1).astype(np.int64)


def crop_confusion(confusion: np.ndarray, n: int) -> np.ndarray:
    """A confusion matrix of more classes reduced to the first ``n``.

    Predictions of ids >= ``n`` move to the no-class column. ``confusion`` is (m, m + 1) or (m, m) with
    m >= n. Returns (n, n + 1) int64. Raises ValueError when the truth holds pixels of a class >= ``n``.
    """
    confusion = _with_none_column(confusion)
    m = confusion.shape[0]
    if n > m:
        raise ValueError(f"cannot crop {m} classes to {n}")
    extra = confusion[n:].sum(axis=1)
    if extra.any():
        ids = [int(i) + n for i in np.flatnonzero(extra)][:10]
        raise ValueError(f"the truth holds ids {ids} that are not among the {n} classes")
    out = np.zeros((n, n + 1), np.int64)
    out[:, :n] = confusion[:n, :n]
    out[:, n] = confusion[:n, n:].sum(axis=1)
    return out


def _with_none_column(confusion: np.ndarray) -> np.ndarray:
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 2 or confusion.shape[1] not in (confusion.shape[0], confusion.shape[0] + 1):
        raise ValueError(f"a confusion matrix is (n, n) or (n, n + 1), not {confusion.shape}")
    if confusion.shape[1] == confusion.shape[0]:
        confusion = np.concatenate([confusion, np.zeros((confusion.shape[0], 1), np.int64)], axis=1)
    return confusion


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN when there are none (no warning)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _harmonic(seen: float | None, unseen: float | None) -> float | None:
    if seen is None or unseen is None:
        return None
    if math.isnan(seen) or math.isnan(unseen):
        return math.nan
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass
class SegEvaluation:
    """Segmentation scores of one data set.

    Attributes
    ----------
    classes : list of str
        Class names, index = id.
    iou : np.ndarray
        (n,) float64 per-class IoU = TP / (TP + FP + FN); NaN for a class absent from truth and prediction.
    miou : float
        NaN-mean of ``iou`` over all classes, background included.
    miou_seen, miou_unseen, hiou : float or None
        Means over ``seen`` / ``unseen`` ids and their harmonic mean; None when no split was given, NaN when
        every listed class is absent.
    pixel_accuracy : float
        Correct pixels / scored pixels (truth not ignore); NaN when nothing was scored.
    confusion : np.ndarray
        (n, n + 1) int64, see :func:`confusion_matrix`.
    seen, unseen : list of int
        The ids of the split (empty without one).
    """

    classes: list[str]
    iou: np.ndarray
    miou: float
    miou_seen: float | None
    miou_unseen: float | None
    hiou: float | None
    pixel_accuracy: float
    confusion: np.ndarray
    seen: list[int]
    unseen: list[int]

    def _mark(self, class_id: int) -> str:
        return "seen" if class_id in self.seen else "unseen" if class_id in self.unseen else ""

    def lines(self) -> list[str]:
        """Report lines: one per class (id, name, IoU or "absent", split, truth pixels), then the means."""
        width = max([len(c) for c in self.classes] + [5])
        truth_pixels = self.confusion.sum(axis=1)
        lines = [f"{'id':>3}  {'class':<{width}}  {'IoU':>7}  {'split':<6}  truth pixels"]
        for i, name in enumerate(self.classes):
            value = "absent" if math.isnan(self.iou[i]) else f"{self.iou[i]:.4f}"
            lines.append(f"{i:>3}  {name:<{width}}  {value:>7}  {self._mark(i):<6}  {int(truth_pixels[i])}")
        lines.append(f"mIoU            {_fmt(self.miou)}  (over {int(np.sum(~np.isnan(self.iou)))} present "
                     f"classes, background included)")
        if self.miou_seen is not None:
            lines += [f"mIoU seen       {_fmt(self.miou_seen)}  ({len(self.seen)} listed)",
                      f"mIoU unseen     {_fmt(self.miou_unseen)}  ({len(self.unseen)} listed)",
                      f"hIoU            {_fmt(self.hiou)}  (harmonic mean of seen and unseen mIoU)"]
        lines.append(f"pixel accuracy  {_fmt(self.pixel_accuracy)}  (ignore label excluded)")
        return lines

    def to_json(self) -> dict[str, Any]:
        """Every figure as JSON values (NaN as null); the confusion matrix as nested lists."""
        return {"classes": list(self.classes), "iou": [_clean(float(v)) for v in self.iou],
                "miou": _clean(self.miou), "miou_seen": _clean(self.miou_seen),
                "miou_unseen": _clean(self.miou_unseen), "hiou": _clean(self.hiou),
                "pixel_accuracy": _clean(self.pixel_accuracy), "seen": list(self.seen),
                "unseen": list(self.unseen), "confusion": self.confusion.tolist(),
                "confusion_columns": "predicted class ids 0..n-1, then no class (255 or unknown id)"}

    def indicators(self) -> dict[str, float | None]:
        """The scalar figures (miou, miou_seen, miou_unseen, hiou, pixel_accuracy), NaN as None."""
        return {"miou": _clean(self.miou), "miou_seen": _clean(self.miou_seen),
                "miou_unseen": _clean(self.miou_unseen), "hiou": _clean(self.hiou),
                "pixel_accuracy": _clean(self.pixel_accuracy)}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _split_ids(seen: Sequence[int] | None, unseen: Sequence[int] | None, n: int) -> tuple[list[int], list[int]]:
    """Validated seen/unseen ids; a missing side is every other class but background."""
    if seen is None and unseen is None:
        return [], []
    given = [int(i) for i in (seen or [])] + [int(i) for i in (unseen or [])]
    bad = [i for i in given if not 0 <= i < n]
    if bad:
        raise ValueError(f"class ids {bad} of the split are not classes 0..{n - 1}")
    seen_ids = list(dict.fromkeys(int(i) for i in seen)) if seen is not None else None
    unseen_ids = list(dict.fromkeys(int(i) for i in unseen)) if unseen is not None else None
    if seen_ids is None:
        seen_ids = [i for i in range(1, n) if i not in unseen_ids]
    if unseen_ids is None:
        unseen_ids = [i for i in range(1, n) if i not in seen_ids]
    both = sorted(set(seen_ids) & set(unseen_ids))
    if both:
        raise ValueError(f"class ids {both} are both seen and unseen")
    return seen_ids, unseen_ids


def evaluate_segmentation(confusion: np.ndarray, classes: Sequence[str], seen: Sequence[int] | None = None,
                          unseen: Sequence[int] | None = None) -> SegEvaluation:
    """Scores from a (summed) confusion matrix (LDVC arXiv 2403.08426 §4.1 metrics).

    Parameters
    ----------
    confusion : np.ndarray
        (n, n + 1) from :func:`confusion_matrix` (or (n, n) without a no-class column), rows = truth.
    classes : sequence of str
        n class names, index = id.
    seen, unseen : sequence of int, optional
        Class ids of the zero-shot split. Neither: no seen/unseen figures. One: the other is every other
        class except background (0). Background counts in a split only when listed.

    Returns
    -------
    SegEvaluation
        IoU_c = C[c, c] / (row_c + col_c - C[c, c]) where row_c counts the truth pixels of c (no-class
        predictions included, they are false negatives) and col_c the pixels predicted as c; mIoU = NaN-mean;
        hIoU = 2 s u / (s + u) (0 when s + u = 0); pixel accuracy = trace / all scored pixels.

    Raises
    ------
    ValueError
        Wrong matrix shape, ``len(classes) != n``, split ids out of range or in both seen and unseen.
    """
    confusion = _with_none_column(confusion)
    n = confusion.shape[0]
    if len(classes) != n:
        raise ValueError(f"{len(classes)} class names for a {n}-class confusion matrix")
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    union = confusion.sum(axis=1) + confusion[:, :n].sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    seen_ids, unseen_ids = _split_ids(seen, unseen, n)
    split = seen is not None or unseen is not None
    miou_seen = _nanmean(iou[seen_ids]) if split else None
    miou_unseen = _nanmean(iou[unseen_ids]) if split else None
    total = int(confusion.sum())
    accuracy = float(tp.sum() / total) if total else math.nan
    return SegEvaluation(list(classes), iou, _nanmean(iou), miou_seen, miou_unseen,
                         _harmonic(miou_seen, miou_unseen), accuracy, confusion, seen_ids, unseen_ids)
