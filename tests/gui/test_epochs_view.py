"""The checkpoint comparison view with qtbot: a 3-epoch run over a quadrat photo, computed on the worker pool
by the prototype-guided backend (random backbone, tiny narrow ViTs)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from protolens.core.store import ResultStore
from tests.services.test_epochs import make_run


@pytest.fixture
def quadrat_folder(tmp_path, samples):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "meadow.jpg")
    return folder


@pytest.fixture
def opened(qtbot, window, quadrat_folder, tmp_path):
    """The window on a quadrat with the 3-epoch run open in the epochs view, every pane loaded."""
    run = make_run(tmp_path / "run", epochs=3)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(quadrat_folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=15000)
    window.open_training_run(run.path)
    view = window.epochs_view
    qtbot.waitUntil(lambda: len(view.keys_by_epoch) == 3 and all(i in view.data for i in range(3)), timeout=30000)
    return window, view, run


def test_a_three_epoch_run_opens_in_synced_panes(qtbot, opened):
    window, view, run = opened
    assert view.epochs == [1, 2, 3] and view.page_count == 1
    assert view.layout_combo.currentText() == "2×2" and view.diff_on.isChecked()  # 3 epochs + the difference
    titles = [view.panes[i].title.text() for i in range(3)]
    assert [t.split(" ·")[0] for t in titles] == ["epoch 1", "epoch 2", "epoch 3"]
    assert "first epoch" in titles[0]
    qtbot.waitUntil(lambda: not view.progress.isVisible(), timeout=5000)  # progress and Cancel only while computing
    qtbot.waitUntil(lambda: "IoU" in view.panes[2].title.text(), timeout=10000)
    assert "vs epoch 2: IoU" in view.panes[2].title.text()
    keys = [view.data[i].pane.key for i in range(3)]
    assert len(set(keys)) == 3 and keys == [view.keys_by_epoch[e] for e in (1, 2, 3)]
    entries = ResultStore().list_results(window.image.meta.path, sha256=window.image.meta.sha256)
    assert {e.key for e in entries} >= set(keys)  # the Results panel and the Compare view see every epoch
    assert all(view.panes[i].canvas.has_heatmap for i in range(3))
    view.panes[1].canvas.view.setRange(xRange=(100, 400), yRange=(100, 300), padding=0)
    qtbot.wait(50)
    ranges = [view.panes[i].canvas.view.viewRange()[0] for i in range(3)]
    assert ranges[0] == pytest.approx(ranges[1], abs=1.0) == ranges[2]
    view.threshold.setValue(0.3)  # one shared threshold for every epoch pane
    level = int(np.ceil(0.3 * 255 - 1e-6))
    assert [view.panes[i].canvas.mask_item.threshold_level for i in range(3)] == [level] * 3


def test_indicator_plot_has_a_point_per_epoch_and_a_click_opens_it(qtbot, opened):
    _, view, run = opened
    plot = view.plot
    for name in ("loss", "entropy", "border_share"):
        assert [e for e, _ in plot.points(name)] == [1, 2, 3]
    assert [e for e, _ in plot.points("iou_previous")] == [2, 3]  # undefined for the first epoch
    assert plot.points("loss")[1][1] == pytest.approx(run.epoch(2).loss)
    assert not plot.chosen_line.isVisible()
    with qtbot.waitSignal(plot.epoch_clicked, timeout=2000) as signal:
        _click_plot(qtbot, plot, 3.1, 0.5)
    assert signal.args == [3]
    assert view.focus == 3 and view.scrubber.value() == 2 and plot.current_line.value() == 3
    assert "7a5200" in view.panes[2].title.styleSheet()  # the opened epoch's pane is highlighted
    assert plot.nearest_epoch(8.0) is None


def _click_plot(qtbot, plot, x, y):
    from PySide6.QtCore import QPointF, Qt

    box = plot.plot.getPlotItem().vb
    scene = box.mapViewToScene(QPointF(x, y))
    point = plot.plot.mapFromScene(scene)
    qtbot.mouseClick(plot.plot.viewport(), Qt.MouseButton.LeftButton, pos=point)


def test_difference_of_an_epoch_with_itself_is_zero(qtbot, opened):
    _, view, _ = opened
    view.epoch_a.setCurrentIndex(view.epoch_a.findData(2))
    view.epoch_b.setCurrentIndex(view.epoch_b.findData(2))
    qtbot.waitUntil(lambda: view.difference_values is not None, timeout=10000)
    assert np.count_nonzero(view.difference_values) == 0
    assert "epoch 2 − epoch 2" in view.difference_pane.title.text()
    view.epoch_b.setCurrentIndex(view.epoch_b.findData(1))
    a, b = view._loaded(2).pane.values, view._loaded(1).pane.values
    np.testing.assert_allclose(view.difference_values, np.clip(a - b, -1, 1), atol=1e-6)
    assert np.abs(view.difference_values).max() > 0


def test_choosing_an_epoch_writes_chosen_json_and_emits(qtbot, opened):
    window, view, run = opened
    view.show_epoch(2)
    assert view.focus == 2
    with qtbot.waitSignal(view.epoch_chosen, timeout=5000) as signal:
        view.use_button.click()
    assert signal.args == [str(run.checkpoint_path(2)), 2]
    chosen = json.loads((run.path / "chosen.json").read_text(encoding="utf-8"))
    assert chosen["epoch"] == 2 and chosen["checkpoint"] == "epoch_002.safetensors"
    assert view.plot.chosen_line.isVisible() and view.plot.chosen_line.value() == 2
    assert "epoch 2 · chosen" in view.panes[1].title.text()
    panel = window.backend_panel  # the window made it the prototype-guided weights
    assert panel.current_id() == "prototype-guided"


def test_more_epochs_than_panes_are_paged_and_switching_reruns_nothing(qtbot, window, quadrat_folder, tmp_path,
                                                                         monkeypatch):
    run = make_run(tmp_path / "run5", epochs=5)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(quadrat_folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=15000)
    window.open_training_run(run.path)
    view = window.epochs_view
    qtbot.waitUntil(lambda: len(view.keys_by_epoch) == 5 and 0 in view.data, timeout=30000)
    view.set_layout("1×2")  # one epoch pane and the difference pane: five pages
    assert view.page_count == 5 and view.next_page.isVisible()
    runs = []
    monkeypatch.setattr(window.controller.segmenter, "run", lambda *a, **k: runs.append(a))
    for epoch in (4, 2, 5):
        view.show_epoch(epoch)
        qtbot.waitUntil(lambda: 0 in view.data, timeout=10000)
        assert view.page_epochs[0] == epoch and view.panes[0].title.text().startswith(f"epoch {epoch} ·")
    view.next_page.click()
    assert view.page == 4 and view.focus == 5  # the last page (already there) keeps epoch 5
    view.previous_page.click()
    assert view.page == 3 and view.focus == 4 and view.scrubber.value() == 3
    assert runs == []


def test_export_writes_the_same_files_as_the_cli(qtbot, opened, tmp_path):
    window, view, _ = opened
    out = tmp_path / "exported"
    with qtbot.waitSignal(window.controller.message, timeout=30000,
                          check_params_cb=lambda text, level: text.startswith("exported")):
        view.export(out)
    names = {p.name for p in out.iterdir()}
    assert {"meadow.epoch_001.png", "meadow.epochs.png", "meadow.epochs.csv", "meadow.epochs.json",
            "meadow.diff_003-002.png"} <= names
    document = json.loads((out / "meadow.epochs.json").read_text(encoding="utf-8"))
    assert [e["key"] for e in document["epochs"]] == [view.keys_by_epoch[e] for e in (1, 2, 3)]


def test_another_photo_is_computed_when_the_view_is_shown_again(qtbot, opened, quadrat_folder, samples):
    window, view, _ = opened
    shutil.copy(samples / "quadrats" / "forget_me_not.jpg", quadrat_folder / "next.jpg")
    first_keys = dict(view.keys_by_epoch)
    window.toggle_epochs(False)  # back to the main view
    window.open_path(quadrat_folder)
    window.controller.show_index(1)
    qtbot.waitUntil(lambda: window.image is not None and window.image.meta.path.name == "next.jpg", timeout=15000)
    qtbot.wait(100)
    assert window.jobs.active("epochs") == []  # hidden: browsing runs nothing
    window.toggle_epochs(True)
    qtbot.waitUntil(lambda: view._computed_for is window.image and all(i in view.data for i in range(3)),
                    timeout=30000)
    assert view.keys_by_epoch == first_keys  # a result's key does not depend on the photo
    entries = ResultStore().list_results(window.image.meta.path, sha256=window.image.meta.sha256)
    assert set(first_keys.values()) <= {e.key for e in entries}
