"""The Train prototype ViT… dialog: validation, a tiny real training on the worker pool, cancel and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from protolens.core.runs import RunFolder
from protolens.gui.train_dialog import DEFAULT_ACCUMULATION, DEFAULT_LR, TrainDialog

BACKBONE = "vit_small_patch14_dinov2.lvd142m"
DIM = 384  # ViT-S token width


@pytest.fixture
def inputs(tmp_path, samples):
    """Two sample quadrats and K = 3 random prototypes of the backbone's width."""
    from safetensors.numpy import save_file

    quadrats = tmp_path / "quadrats"
    quadrats.mkdir()
    for path in sorted((samples / "quadrats").glob("*.jpg"))[:2]:
        shutil.copy(path, quadrats / path.name)
    prototypes = tmp_path / "prototypes.safetensors"
    save_file({"prototypes": np.random.default_rng(0).normal(size=(3, DIM)).astype(np.float32)}, str(prototypes))
    return quadrats, prototypes


@pytest.fixture
def dialog(qtbot, window):
    window.open_train_dialog()
    dialog = window.train_dialog
    qtbot.waitExposed(dialog)
    yield dialog
    dialog.cancel()
    qtbot.waitUntil(lambda: not dialog.running, timeout=30000)


def _fill(dialog: TrainDialog, quadrats, prototypes, run_dir, epochs: int = 2) -> None:
    """The tiny setup: 256x128 photos, 32-px crops (4 x 8 grid) at 28 px, depth 1, one quadrat per update."""
    dialog.quadrats.setText(str(quadrats))
    dialog.prototypes.setText(str(prototypes))
    dialog.run_dir.setText(str(run_dir))
    dialog.epochs.setValue(epochs)
    dialog.photo_size.setText("256x128")
    dialog.crop.setValue(32)
    dialog.crop_input.setValue(28)
    dialog.backbone.setCurrentText(BACKBONE)
    dialog.depth.setValue(1)
    dialog.heads.setValue(6)
    dialog.accumulation.setValue(1)
    dialog.probe.setValue(1)


def _wait_done(qtbot, dialog) -> None:
    qtbot.waitUntil(lambda: not dialog.running, timeout=60000)


def test_defaults_are_the_training_loops(dialog):
    from protolens.models.training import TrainConfig

    config = TrainConfig(epochs=1)
    assert (DEFAULT_LR, DEFAULT_ACCUMULATION) == (config.lr, config.accumulation)
    assert float(dialog.lr.text()) == config.lr and dialog.accumulation.value() == config.accumulation
    assert BACKBONE in [dialog.backbone.itemText(i) for i in range(dialog.backbone.count())]


def test_fields_are_validated_before_anything_runs(dialog, inputs, tmp_path):
    quadrats, prototypes = inputs
    assert dialog.start() is None and not dialog.running
    text = dialog.status.text()
    assert "quadrat photos" in text and "prototypes file" in text and "run folder" in text
    _fill(dialog, quadrats, prototypes, tmp_path / "run")
    dialog.photo_size.setText("250x128")
    dialog.width.setValue(100)
    dialog.lr.setText("fast")
    assert dialog.validate() is None
    text = dialog.status.text()
    assert "not a multiple of the crop size 32" in text and "width 100 is not a multiple of heads 6" in text
    assert "lr must be a number > 0" in text
    _fill(dialog, quadrats, prototypes, tmp_path / "run")
    dialog.width.setValue(0)
    dialog.lr.setText("2e-4")
    options = dialog.validate()
    assert options is not None and options["tiling"].grid == (4, 8) and options["lr"] == 2e-4
    assert options["warmup_steps"] is None and options["allow_random_weights"] is True
    assert not dialog.resume_button.isEnabled()  # no checkpoints there
    assert dialog.start(resume=True) is None and "no checkpoint to resume" in dialog.status.text()


def test_a_tiny_training_runs_watched_and_its_settings_are_kept(qtbot, window, dialog, inputs, tmp_path):
    quadrats, prototypes = inputs
    run_dir = tmp_path / "run"
    _fill(dialog, quadrats, prototypes, run_dir)
    finished = []
    dialog.finished_training.connect(finished.append)
    assert dialog.start() is not None and dialog.running and not dialog.start_button.isEnabled()
    _wait_done(qtbot, dialog)
    assert finished and dialog.summary.epoch == 2, dialog.status.text()
    assert "Done: trained epochs 1–2" in dialog.status.text()
    run = RunFolder(run_dir)
    assert [r.epoch for r in run.epochs()] == [1, 2]
    steps = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    step_lines = [r for r in steps if r["type"] == "step"]
    monitor = dialog.monitor
    qtbot.waitUntil(lambda: monitor.epoch_count == 2, timeout=5000)
    assert monitor.step_count == len(step_lines) == 4  # 2 quadrats per epoch, one per update
    assert monitor.total_epochs == 2 and "epoch 2/2" in monitor.status.text()
    assert dialog.compare_button.isEnabled() and dialog.resume_button.isEnabled()
    dialog.compare_button.click()  # the run opens in the checkpoint comparison
    assert window.views.currentWidget() is window.epochs_view and window.epochs_view.run.path == run_dir
    assert window.epochs_view.epochs == [1, 2]
    dialog.save_settings()
    again = TrainDialog(window.segmenter, window.jobs, window.settings)
    qtbot.addWidget(again)
    assert again.quadrats.text() == str(quadrats) and again.prototypes.text() == str(prototypes)
    assert again.run_dir.text() == str(run_dir) and again.photo_size.text() == "256x128"
    assert (again.crop.value(), again.crop_input.value(), again.depth.value()) == (32, 28, 1)
    assert again.backbone.currentText() == BACKBONE
    again.run_dir.setText(str(run_dir))
    assert again.start() is None and "Resume continues it" in again.status.text()  # never overwrites a run


def test_cancel_stops_and_resume_continues(qtbot, dialog, inputs, tmp_path):
    quadrats, prototypes = inputs
    run_dir = tmp_path / "run"
    _fill(dialog, quadrats, prototypes, run_dir, epochs=1)
    dialog.start()
    _wait_done(qtbot, dialog)
    assert dialog.summary.epoch == 1
    _fill(dialog, quadrats, prototypes, run_dir, epochs=2)
    dialog.depth.setValue(3)  # a resume takes the run's own settings, whatever the fields say
    dialog.start(resume=True)
    assert dialog.depth.value() == 1
    _wait_done(qtbot, dialog)
    assert dialog.summary.resumed_from == 1 and dialog.summary.trained == (2,), dialog.status.text()
    long_run = tmp_path / "long"
    _fill(dialog, quadrats, prototypes, long_run, epochs=500)
    job = dialog.start()
    job.worker.yielded.connect(lambda _report: dialog.cancel())  # cancel at the first progress report
    _wait_done(qtbot, dialog)
    assert dialog.summary is None and "cancelled" in dialog.status.text()
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()
    completed = RunFolder(long_run).latest()
    assert completed is None or completed.epoch < 500
