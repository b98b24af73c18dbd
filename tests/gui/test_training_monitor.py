"""The training monitor follows a run folder another writer appends to, as the CLI's trainer does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from protolens.core.runs import RunFolder
from protolens.gui.training_monitor import TrainingMonitor


def _step(step: int, epoch: int = 1, loss: float | None = None) -> dict:
    return {"type": "step", "epoch": epoch, "step": step, "loss": loss if loss is not None else 1.0 / step,
            "lr": 1e-4, "time": 0.0}


def _epoch(epoch: int, steps: int, **indicators: float | None) -> dict:
    return {"type": "epoch", "epoch": epoch, "loss": 0.5 / epoch, "steps": steps,
            "indicators": {"loss": 0.5 / epoch, "entropy": 0.9, "border_share": 0.2, "iou_previous": None,
                           **indicators}}


@pytest.fixture
def monitor(qtbot):
    widget = TrainingMonitor(interval_ms=20)
    qtbot.addWidget(widget)
    widget.resize(700, 500)
    widget.show()
    yield widget
    widget.stop()


def test_plots_every_complete_line_while_the_writer_appends(qtbot, monitor, tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_config({"model": "prototype-vit", "train": {"epochs": 3}})
    monitor.set_run(run.path)
    qtbot.waitUntil(lambda: monitor.total_epochs == 3, timeout=5000)
    assert monitor.step_count == 0 and "no metrics yet" in monitor.status.text()
    run.append_metrics(*[_step(s) for s in range(1, 5)])
    qtbot.waitUntil(lambda: monitor.step_count == 4, timeout=5000)
    run.append_metrics(*[_step(s) for s in range(5, 9)], _epoch(1, 8))
    qtbot.waitUntil(lambda: monitor.epoch_count == 1, timeout=5000)
    steps, losses = monitor.step_data()
    np.testing.assert_array_equal(steps, np.arange(1, 9))
    np.testing.assert_allclose(losses, 1.0 / np.arange(1, 9))
    x, y = monitor.step_curve.getData()
    assert len(x) == 8 and list(x) == list(range(1, 9))  # plotted points = step lines
    x, y = monitor.indicator_curves["entropy"].getData()
    assert list(x) == [1] and y[0] == pytest.approx(0.9)
    assert math.isnan(monitor.epoch_data("iou_previous")[1][0])  # null in the log = undefined (first epoch)
    assert monitor.epoch_loss_curve.getData()[1][0] == pytest.approx(0.5)
    assert "epoch 1/3 (1 done)" in monitor.status.text() and "step 8" in monitor.status.text()


def test_a_partial_last_line_waits_for_its_end(qtbot, monitor, tmp_path):
    run = RunFolder(tmp_path / "run")
    run.append_metrics(_step(1), _step(2))
    line = json.dumps(_step(3))
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        handle.write(line[:10])  # the trainer is half-way through writing this line
    monitor.set_run(run.path)
    qtbot.waitUntil(lambda: monitor.step_count == 2, timeout=5000)
    updates = []
    monitor.updated.connect(lambda steps, epochs: updates.append(steps))
    for _ in range(3):  # polls while the line is incomplete read nothing new
        qtbot.wait(40)
    assert monitor.step_count == 2 and updates == []
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        handle.write(line[10:] + "\n")
    qtbot.waitUntil(lambda: monitor.step_count == 3, timeout=5000)
    assert list(monitor.step_data()[0]) == [1, 2, 3]


def test_a_resumed_run_replaces_the_redone_steps(qtbot, monitor, tmp_path):
    run = RunFolder(tmp_path / "run")
    run.append_metrics(*[_step(s, loss=1.0) for s in range(1, 7)])
    monitor.set_run(run.path)
    qtbot.waitUntil(lambda: monitor.step_count == 6, timeout=5000)
    run.truncate_metrics(after_step=4)  # resume from the checkpoint after step 4 rewrites the log
    qtbot.waitUntil(lambda: monitor.step_count == 4, timeout=5000)
    run.append_metrics(_step(5, loss=0.25))
    qtbot.waitUntil(lambda: monitor.step_count == 5, timeout=5000)
    steps, losses = monitor.step_data()
    assert list(steps) == [1, 2, 3, 4, 5] and losses[-1] == 0.25


def test_switching_runs_and_log_axis(qtbot, monitor, tmp_path):
    first, second = RunFolder(tmp_path / "a"), RunFolder(tmp_path / "b")
    first.append_metrics(*[_step(s) for s in range(1, 4)])
    second.append_metrics(_step(1), _epoch(1, 1), _epoch(2, 1, iou_previous=0.75))
    monitor.set_run(first.path)
    qtbot.waitUntil(lambda: monitor.step_count == 3, timeout=5000)
    monitor.set_run(second.path)
    qtbot.waitUntil(lambda: monitor.epoch_count == 2, timeout=5000)
    assert monitor.step_count == 1
    assert list(monitor.epoch_data("iou_previous")[1][1:]) == [0.75]
    monitor.log_y.setChecked(True)
    assert monitor.loss_plot.getPlotItem().ctrl.logYCheck.isChecked()
    monitor.set_run(None)
    assert monitor.step_count == 0 and not monitor.timer.isActive()
