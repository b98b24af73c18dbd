"""Run folders, the LR schedule and the collapse indicators (core, no torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protolens.core.errors import CheckpointError
from protolens.core.indicators import (
    attention_entropy,
    border_share,
    crop_mask,
    epoch_indicators,
    normalise_received,
)
from protolens.core.runs import RunFolder, resolve_checkpoint
from protolens.core.schedule import warmup_cosine_lr


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor() -> None:
    lrs = [warmup_cosine_lr(s, base_lr=1.0, total_steps=10, warmup_steps=4, min_lr=0.1) for s in range(10)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    # halfway through the decay (step 4 + 2.5): the mean of peak and floor
    assert warmup_cosine_lr(4, base_lr=1.0, total_steps=10, warmup_steps=4, min_lr=0.1) > lrs[5] > lrs[6]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 / 5))
    assert lrs[6] == pytest.approx(mid)
    with pytest.raises(ValueError):
        warmup_cosine_lr(-1, base_lr=1.0, total_steps=10, warmup_steps=4)


def test_normalised_received_attention_and_crop_mask_follow_the_reference_epsilon() -> None:
    received = np.array([[1.0, 2.0], [3.0, 5.0]])
    expected = (received - 1.0) / (4.0 + 1e-6)
    assert np.allclose(normalise_received(received), expected)
    # (3 - 1) / (4 + 1e-6) falls just below 0.5: the epsilon decides a crop exactly at the threshold
    assert crop_mask(received, 0.5).tolist() == [[False, False], [False, True]]
    assert crop_mask(received, 0.49).tolist() == [[False, False], [True, True]]
    assert crop_mask(np.ones((2, 2)), 0.0).all()  # a flat map keeps everything at t = 0
    with pytest.raises(ValueError):
        crop_mask(received, 1.5)


def test_entropy_is_one_when_uniform_and_zero_on_one_crop() -> None:
    assert attention_entropy(np.ones((4, 6))) == pytest.approx(1.0)
    one = np.zeros((4, 6))
    one[2, 3] = 7.0
    assert attention_entropy(one) == pytest.approx(0.0)
    half = np.zeros(4)
    half[:2] = 1.0
    assert attention_entropy(half) == pytest.approx(math.log(2) / math.log(4))


def test_border_share_counts_the_outer_ring() -> None:
    grid = np.zeros((4, 5))
    grid[0, 0] = 3.0
    grid[1, 2] = 1.0
    assert border_share(grid) == pytest.approx(0.75)
    assert border_share(np.ones((4, 5))) == pytest.approx(14 / 20)
    assert border_share(np.ones((2, 2))) == pytest.approx(1.0)


def test_epoch_indicators_iou_with_previous_epoch() -> None:
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    first, masks = epoch_indicators([a], None, 0.5, loss=0.3)
    assert math.isnan(first["iou_previous"]) and first["loss"] == pytest.approx(0.3)
    b = np.array([[0.0, 1.0], [0.0, 0.0]])
    second, _ = epoch_indicators([b], masks, 0.5)
    assert second["iou_previous"] == pytest.approx(0.5)
    assert math.isnan(second["loss"])


def _epoch(run: RunFolder, epoch: int, loss: float) -> None:
    run.checkpoint_path(epoch).write_bytes(f"weights {epoch}".encode())
    run.write_epoch(epoch, {"loss": loss, "steps": epoch * 3, "indicators": {"entropy": 0.5, "iou_previous": float("nan")}})


def test_run_folder_lists_epochs_resolves_and_records_the_chosen_one(tmp_path) -> None:
    run = RunFolder(tmp_path / "run")
    run.write_config({"model": "prototype-vit"})
    for epoch, loss in ((1, 0.5), (2, 0.25), (3, 0.2)):
        _epoch(run, epoch, loss)
    (run.path / "epoch_004.json").write_text("{}")  # metadata without weights: an interrupted write, ignored
    records = run.epochs()
    assert [r.epoch for r in records] == [1, 2, 3] and records[1].loss == 0.25 and records[2].steps == 9
    assert math.isnan(records[0].indicators["iou_previous"])
    assert run.active().epoch == 3
    run.choose(2)
    assert run.chosen() == 2 and resolve_checkpoint(run.path)[1].epoch == 2
    assert resolve_checkpoint(run.checkpoint_path(1))[1].epoch == 1
    with pytest.raises(CheckpointError, match="epochs: 1, 2, 3"):
        run.choose(7)
    with pytest.raises(CheckpointError):
        resolve_checkpoint(tmp_path / "nothing")


def test_metrics_tail_reads_complete_lines_only_and_truncates_on_resume(tmp_path) -> None:
    run = RunFolder(tmp_path)
    run.append_metrics({"type": "step", "step": 1, "loss": 1.0}, {"type": "step", "step": 2, "loss": float("nan")})
    records, offset = run.read_metrics()
    assert [r["step"] for r in records] == [1, 2] and records[1]["loss"] is None
    with open(run.metrics_path, "a") as handle:
        handle.write('{"type": "step", "step": 3')  # being written
    more, offset2 = run.read_metrics(offset)
    assert more == [] and offset2 == offset
    with open(run.metrics_path, "a") as handle:
        handle.write(', "loss": 0.5}\n')
    more, _ = run.read_metrics(offset2)
    assert [r["step"] for r in more] == [3]
    run.truncate_metrics(after_step=1)
    assert [r["step"] for r in run.read_metrics()[0]] == [1]
