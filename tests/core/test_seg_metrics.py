"""Segmentation metrics on hand-made label maps: ignore label, absent classes, seen/unseen split, hIoU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protolens.core.seg_metrics import confusion_matrix, crop_confusion, evaluate_segmentation

CLASSES = ["background", "cat", "dog"]
# truth (1, 3) is ignore: the prediction there (dog) is not scored.
TRUTH = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 255]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 255, 2]], np.uint8)


def test_confusion_counts_by_hand():
    confusion = confusion_matrix(PRED, TRUTH, 3)
    # rows truth 0..2, columns predicted 0..2 then "no class" (the 255 prediction at (1, 2))
    expected = np.array([[3, 1, 0, 0],
                         [0, 2, 0, 1],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.dtype == np.int64


def test_iou_miou_and_pixel_accuracy_by_hand():
    result = evaluate_segmentation(confusion_matrix(PRED, TRUTH, 3), CLASSES)
    # background: TP 3, FP 0, FN 1 -> 3/4; cat: TP 2, FP 1, FN 1 (predicted 255) -> 2/4; dog absent -> NaN
    np.testing.assert_allclose(result.iou[:2], [0.75, 0.5])
    assert math.isnan(result.iou[2])
    assert result.miou == pytest.approx(0.625)  # NaN left out of the mean
    assert result.pixel_accuracy == pytest.approx(5 / 7)  # 7 scored pixels, the 255 prediction is wrong
    assert result.miou_seen is None and result.miou_unseen is None and result.hiou is None
    data = result.to_json()
    assert data["iou"][2] is None and data["hiou"] is None


def test_a_class_predicted_but_absent_from_the_truth_scores_zero():
    pred = PRED.copy()
    pred[0, 0] = 2  # one background pixel predicted as dog
    result = evaluate_segmentation(confusion_matrix(pred, TRUTH, 3), CLASSES)
    assert result.iou[2] == 0.0
    assert result.iou[0] == pytest.approx(2 / 4)
    assert result.miou == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_seen_unseen_and_harmonic_mean():
    classes = ["background", "a", "b", "c", "d"]
    # a diagonal-dominant confusion made so that IoU = [1, 1/2, 1/2, 1/4, NaN]
    confusion = np.zeros((5, 6), np.int64)
    confusion[0, 0] = 10
    confusion[1, 1], confusion[1, 2] = 2, 2     # a: TP 2, FN 2 -> 2/4 (b gets FP 2)
    confusion[2, 2] = 2                        # b: TP 2, FP 2 -> 2/4
    confusion[3, 3], confusion[3, 5] = 1, 3    # c: TP 1, FN 3 (no class) -> 1/4
    result = evaluate_segmentation(confusion, classes, seen=[1, 2], unseen=[3, 4])
    np.testing.assert_allclose(result.iou[:4], [1, 0.5, 0.5, 0.25])
    assert math.isnan(result.iou[4])
    assert result.miou_seen == pytest.approx(0.5)
    assert result.miou_unseen == pytest.approx(0.25)  # d absent: left out
    assert result.hiou == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert result.miou == pytest.approx(2.25 / 4)
    assert result.pixel_accuracy == pytest.approx(15 / 20)
    text = "\n".join(result.lines())
    assert "hIoU" in text and "absent" in text and "0.3333" in text


def test_one_side_of_the_split_implies_the_other_without_background():
    confusion = np.diag([5, 4, 3, 2]).astype(np.int64)
    result = evaluate_segmentation(confusion, ["background", "a", "b", "c"], seen=[1])
    assert result.seen == [1] and result.unseen == [2, 3]
    with_background = evaluate_segmentation(confusion, ["background", "a", "b", "c"], seen=[0, 1])
    assert with_background.unseen == [2, 3]
    assert result.hiou == pytest.approx(1.0)


def test_all_unseen_absent_gives_nan_hiou_and_bad_splits_are_refused():
    confusion = np.zeros((3, 4), np.int64)
    confusion[1, 1] = 3
    result = evaluate_segmentation(confusion, CLASSES, seen=[1], unseen=[2])
    assert result.miou_seen == 1.0 and math.isnan(result.miou_unseen) and math.isnan(result.hiou)
    with pytest.raises(ValueError, match="both seen and unseen"):
        evaluate_segmentation(confusion, CLASSES, seen=[1, 2], unseen=[2])
    with pytest.raises(ValueError, match="not classes"):
        evaluate_segmentation(confusion, CLASSES, seen=[7])
    with pytest.raises(ValueError, match="class names"):
        evaluate_segmentation(confusion, ["x"])


def test_truth_ids_beyond_the_classes_are_an_error_but_predictions_count_as_wrong():
    truth = np.array([[0, 4]], np.uint8)
    with pytest.raises(ValueError, match=r"\[4\]"):
        confusion_matrix(truth, truth, 3)
    confusion = confusion_matrix(np.array([[7, 1]]), np.array([[0, 1]]), 3)
    assert confusion[0, 3] == 1 and confusion[1, 1] == 1
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_matches_a_plain_per_class_reference_on_random_maps():
    rng = np.random.default_rng(0)
    n = 5
    truths = [rng.integers(0, n, (13, 17)) for _ in range(3)]
    preds = [rng.integers(0, n + 1, (13, 17)) for _ in range(3)]  # n = a no-class prediction
    for t in truths:
        t[rng.random(t.shape) < 0.1] = 255
    confusion = sum(confusion_matrix(p, t, n) for p, t in zip(preds, truths, strict=True))
    result = evaluate_segmentation(confusion, [str(i) for i in range(n)])
    t_all = np.concatenate([t.ravel() for t in truths])
    p_all = np.concatenate([p.ravel() for p in preds])
    scored = t_all != 255
    for c in range(n):
        inter = np.sum((t_all == c) & (p_all == c) & scored)
        union = np.sum(((t_all == c) | (p_all == c)) & scored)
        assert result.iou[c] == pytest.approx(inter / union)
    assert result.pixel_accuracy == pytest.approx(np.mean(t_all[scored] == p_all[scored]))


def test_crop_folds_unknown_predictions_into_no_class():
    full = confusion_matrix(np.array([[0, 9, 1]]), np.array([[0, 1, 1]]), 255)
    cropped = crop_confusion(full, 2)
    np.testing.assert_array_equal(cropped, [[1, 0, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match=r"\[9\]"):
        crop_confusion(confusion_matrix(np.array([[9]]), np.array([[9]]), 255), 2)
