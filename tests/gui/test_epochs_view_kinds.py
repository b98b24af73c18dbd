"""The checkpoint comparison view on runs of every kind (qtbot): an LDVC run and a patch-selector run computed by
the stub ``ldvc`` and ``patch-selection`` backends (tests/fixtures/plugins/test_run_kinds), an unknown kind and
a kind whose backend is missing reported in the message bar."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.services.test_epochs_kinds import KIND_PLUGINS, LDVC_INDICATORS, PATCH_INDICATORS, make_kind_run

LDVC_NAMES = ["loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy"]


@pytest.fixture
def registry():
    """The stubs first (they win over real plugins of the same ids), then the fixtures and the real plugins."""
    from protolens.models.registry import Registry, default_plugin_dirs
    from tests.conftest import FIXTURE_PLUGINS

    return Registry.discover([KIND_PLUGINS, FIXTURE_PLUGINS, *default_plugin_dirs()], entry_points=False)


@pytest.fixture
def shown(qtbot, window, tmp_path, samples):
    """The window on one photo, with no automatic runs."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "meadow.jpg")
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=15000)
    return window


def open_run(qtbot, window, run, epochs=3):
    window.open_training_run(run.path)
    view = window.epochs_view
    qtbot.waitUntil(lambda: len(view.keys_by_epoch) == epochs and all(i in view.data for i in range(epochs)),
                    timeout=30000)
    return view


def test_an_ldvc_run_opens_with_its_metrics_and_label_maps(qtbot, shown, tmp_path):
    run = make_kind_run(tmp_path / "ldvc_run", "ldvc", LDVC_INDICATORS, chosen=3)
    view = open_run(qtbot, shown, run)
    assert view.epochs == [1, 2, 3] and "(ldvc)" in view.run_label.text()
    titles = [view.panes[i].title.text() for i in range(3)]
    assert [t.split(" ·")[0] for t in titles] == ["epoch 1", "epoch 2", "epoch 3"] and "chosen" in titles[2]
    keys = [view.data[i].pane.key for i in range(3)]
    assert len(set(keys)) == 3 and all(view.data[i].found.record.backend_id == "ldvc" for i in range(3))
    plot = view.plot
    assert list(plot.curves) == LDVC_NAMES and "mIoU unseen" in plot.legend.text()
    assert "entropy" not in plot.curves and plot.points("entropy") == []
    assert plot.points("miou_seen") == [(1, pytest.approx(0.3)), (2, pytest.approx(0.7)), (3, pytest.approx(0.8))]
    assert [e for e, _ in plot.points("loss")] == [1, 2, 3]
    assert plot.chosen_line.isVisible() and plot.chosen_line.value() == 3
    assert view.layers_box.isVisible() and view.layers_box.text() == "Label map"
    overlay = view.layer_overlay(1)
    image = overlay.label_item.image
    assert image is not None and image.shape[2] == 4 and image[..., 3].max() > 0  # the labels are drawn
    assert not view.panes[1].canvas.heatmap_item.isVisible()  # the label map replaces the max-prob map
    view.layers_box.setChecked(False)
    assert view.panes[1].canvas.heatmap_item.isVisible() and overlay.label_item.image is None
    view.show_epoch(2)
    with qtbot.waitSignal(view.epoch_chosen, timeout=5000) as signal:
        view.use_button.click()
    assert signal.args == [str(run.checkpoint_path(2)), 2]
    panel = shown.backend_panel  # the window made it the ldvc weights
    assert panel.current_id() == "ldvc" and panel.weights_path() == str(run.checkpoint_path(2))
    assert "ldvc" in view.use_button.toolTip()


def test_a_patch_selector_run_shows_kept_patches_and_uses_the_epoch_as_selector(qtbot, shown, tmp_path):
    run = make_kind_run(tmp_path / "patch_run", "patch-selector", PATCH_INDICATORS)
    view = open_run(qtbot, shown, run)
    assert list(view.plot.curves) == ["loss", "agreement_iou"]
    assert [v for _, v in view.plot.points("agreement_iou")] == pytest.approx([0.4, 0.75, 0.7])
    assert view.layers_box.text() == "Kept / dropped"
    found = view.data[0].found
    assert found.record.backend_id == "patch-selection" and found.record.params["selector"] == str(
        run.checkpoint_path(1))
    outlines = view.layer_overlay(0).region_item.image
    assert outlines is not None and np.count_nonzero(outlines[..., 3]) > 0
    assert view.panes[0].canvas.heatmap_item.isVisible()  # the ranks stay under the outlines
    view.show_epoch(3)
    with qtbot.waitSignal(view.epoch_chosen, timeout=5000):
        view.use_button.click()
    panel = shown.backend_panel
    assert panel.current_id() == "patch-selection"
    assert panel.form.values()["selector"] == str(run.checkpoint_path(3))
    assert shown._params["patch-selection"]["selector"] == str(run.checkpoint_path(3))  # the next run's input


def test_an_unknown_kind_is_reported_and_changes_nothing(qtbot, shown, tmp_path):
    run = make_kind_run(tmp_path / "odd_run", "diffusion", {})
    shown.open_training_run(run.path)
    qtbot.waitUntil(lambda: "kind 'diffusion'" in shown.messages.label.text(), timeout=5000)
    assert shown.messages.level == "error" and shown.epochs_view.run is None
    assert shown.jobs.active("epochs") == []


def test_a_kind_whose_backend_is_missing_is_reported(qtbot, shown, tmp_path, monkeypatch):
    from protolens.services import epochs as ep

    monkeypatch.setitem(ep.RUN_KINDS, "mystery", ep.RunKind("mystery", "no-such-backend", ("loss", "agreement_iou")))
    run = make_kind_run(tmp_path / "mystery_run", "mystery", PATCH_INDICATORS)
    shown.open_training_run(run.path)
    view = shown.epochs_view
    qtbot.waitUntil(lambda: "needs the 'no-such-backend' backend" in shown.messages.label.text(), timeout=5000)
    assert shown.jobs.active("epochs") == [] and view.keys_by_epoch == {}
    assert [e for e, _ in view.plot.points("agreement_iou")] == [1, 2, 3]  # the indicators are still shown
    assert view.panes[0].title.text() == "epoch 1: no no-such-backend backend"
    shown.use_checkpoint(str(run.checkpoint_path(1)), 1)
    assert "no-such-backend backend is not installed" in shown.messages.label.text()


def test_the_training_monitor_plots_an_ldvc_runs_metrics(qtbot, tmp_path):
    from protolens.core.runs import RunFolder
    from protolens.gui.training_monitor import TrainingMonitor

    monitor = TrainingMonitor(interval_ms=20)
    qtbot.addWidget(monitor)
    run = RunFolder(tmp_path / "ldvc_run")
    run.write_config({"model": "ldvc", "train": {"epochs": 2}})
    monitor.set_run(run.path)
    monitor.show()
    metrics = [{"type": "epoch", "epoch": e, "loss": 1.0 / e, "steps": 4 * e,
                "indicators": {name: series[e - 1] for name, series in LDVC_INDICATORS.items()}} for e in (1, 2)]
    run.append_metrics({"type": "step", "epoch": 1, "step": 1, "loss": 1.0, "lr": 1e-4}, *metrics)
    qtbot.waitUntil(lambda: monitor.epoch_count == 2, timeout=5000)
    for name, series in LDVC_INDICATORS.items():
        x, y = monitor.indicator_curves[name].getData()
        assert list(x) == [1, 2] and list(y) == pytest.approx(series[:2])
    assert monitor.epoch_loss_curve.getData()[1][1] == pytest.approx(0.5)
    monitor.stop()
