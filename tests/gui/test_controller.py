"""The view controller driven without MainWindow: browse, look up, run, threshold, save, pick and delete results;
and the main window's defects: a stale heatmap under a new backend's name, typed layers shown and edited."""

from __future__ import annotations

import numpy as np

from protolens.core.store import ResultStore
from protolens.gui.controller import PhotoController
from protolens.gui.workers import JobRunner
from protolens.services.segment import Segmenter
from tests.gui.conftest import select_backend


class Recorder:
    def __init__(self, controller: PhotoController) -> None:
        self.results, self.entries, self.thresholds, self.messages = [], [], [], []
        controller.result_changed.connect(self.results.append)
        controller.results_listed.connect(self.entries.append)
        controller.value_threshold_changed.connect(self.thresholds.append)
        controller.message.connect(lambda text, level: self.messages.append((level, text)))


def _controller(qtbot, registry):
    jobs = JobRunner()
    controller = PhotoController(registry, Segmenter(registry, disk_cache=None), ResultStore(), jobs,
                                 allow_random_weights=True)
    return controller, jobs, Recorder(controller)


def test_controller_runs_thresholds_saves_and_lists_without_a_window(qtbot, registry, photo_folder, gradient_runs):
    controller, jobs, seen = _controller(qtbot, registry)
    controller.set_inputs("test-gradient", {"steps": 2}, None, look_up=False)
    photos = sorted(p for p in photo_folder.iterdir() if p.suffix == ".jpg")
    controller.set_paths(photos)
    qtbot.waitUntil(lambda: controller.result is not None, timeout=15000)
    assert controller.result.record.backend_id == "test-gradient" and len(gradient_runs) == 1
    assert seen.thresholds[-1] == 0.5  # the backend's suggestion
    controller.set_threshold(0.3)
    assert seen.thresholds[-1] == 0.3 and controller.result.record.threshold == 0.3
    controller.save()
    qtbot.waitUntil(lambda: bool(seen.entries) and len(seen.entries[-1]) == 1, timeout=10000)
    first_key = seen.entries[-1][0].key

    controller.set_inputs("test-gradient", {"steps": 3}, None)  # other parameters: a second result
    qtbot.waitUntil(lambda: controller.result is not None and controller.result.key != first_key, timeout=15000)
    controller.save()
    qtbot.waitUntil(lambda: len(seen.entries[-1]) == 2, timeout=10000)
    assert len(gradient_runs) == 2

    controller.show_key(first_key)  # pick the first one again: its saved threshold comes back
    qtbot.waitUntil(lambda: controller.result.key == first_key, timeout=10000)
    assert controller.result.record.threshold == 0.3 and controller.result.source == "store"
    qtbot.waitUntil(lambda: [e.current for e in seen.entries[-1] if e.key == first_key] == [True], timeout=10000)
    controller.delete_key(first_key)
    qtbot.waitUntil(lambda: bool(seen.entries[-1]) and first_key not in [e.key for e in seen.entries[-1]],
                    timeout=10000)
    # The deleted result is no longer shown: the remaining (now current) one is, and nothing was recomputed.
    qtbot.waitUntil(lambda: controller.result is not None, timeout=10000)
    assert controller.result.key != first_key and controller.result.source == "store"
    assert len(gradient_runs) == 2
    jobs.cancel_all()
    jobs.wait(5000)


def test_failed_run_of_another_backend_never_shows_the_previous_heatmap(qtbot, window, photo_folder):
    select_backend(window, "vegetation-index")
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=15000)
    assert window.canvas.has_heatmap and "vegetation-index" in window.canvas_title.text()
    window.controller.allow_random_weights = False
    panel = window.backend_panel
    panel.weights_edit.setText(str(photo_folder / "missing.safetensors"))
    select_backend(window, "vit-attention")  # its run fails: the weights file does not exist
    qtbot.waitUntil(lambda: window.messages.level == "error", timeout=30000)
    assert window.result is None
    assert not window.canvas.has_heatmap
    assert "no result of vit-attention" in window.canvas_title.text()


def test_typed_layers_are_shown_and_the_label_map_starts_the_editor(qtbot, window, photo_folder):
    select_backend(window, "test-layers")
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None and window.result.layers.label_map is not None,
                    timeout=15000)
    panel = window.results_panel
    assert [panel.layer.itemData(i) for i in range(panel.layer.count())] == ["", "class 1", "class 2"]
    assert window.layers.label_item.image is not None and window.layers.points.data.size == 2
    assert not panel.scores.isHidden() and "class 1: 0.900" in panel.scores.text()
    panel.layer.setCurrentIndex(2)  # a named heatmap replaces the main one on the canvas
    assert window.canvas.has_heatmap
    window.edit.panel.from_threshold.click()
    qtbot.waitUntil(lambda: window.edit.editor.active, timeout=10000)
    labels = window.edit.editor.annotation.labels
    label_map = window.result.layers.label_map.full_resolution()
    project = window.edit.project.labels
    for index, name in enumerate(window.result.layers.label_map.classes[1:], start=1):
        assert (labels[label_map == index] == project.by_name(name).id).all()
    assert (labels[label_map == 0] == 0).all()
    assert np.unique(labels).size == 3
