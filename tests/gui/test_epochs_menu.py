"""File ▸ Open training run… shows the checkpoint comparison; choosing an epoch makes it the prototype-guided
backend's weights, recorded in the next result's provenance."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PySide6.QtWidgets import QFileDialog

from protolens.core.hashing import sha256_file
from protolens.core.runs import RunFolder
from tests.gui.conftest import select_backend

BACKBONE = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, samples):
    """A 3-epoch tiny run on one quadrat (256x128 photos, 32-px crops at 28 px, depth 1, K = 3, random backbone), trained once."""
    from safetensors.numpy import save_file

    from protolens.models.registry import Registry
    from protolens.services.pipeline import Tiling
    from protolens.services.segment import Segmenter, drain
    from protolens.services.training import train_prototype_vit

    tmp_path = tmp_path_factory.mktemp("epochs_menu")
    quadrats = tmp_path / "quadrats"
    quadrats.mkdir()
    for path in sorted((samples / "quadrats").glob("*.jpg"))[:1]:
        shutil.copy(path, quadrats / path.name)
    prototypes = tmp_path / "prototypes.safetensors"
    save_file({"prototypes": np.random.default_rng(1).normal(size=(3, 384)).astype(np.float32)}, str(prototypes))
    run = tmp_path / "run"
    drain(train_prototype_vit(Segmenter(Registry.discover(), disk_cache=None), quadrats, prototypes, run, epochs=3,
                              tiling=Tiling((256, 128), 32, 28), backbone=BACKBONE, depth=1, heads=6,
                              accumulation=1, probe=1, allow_random_weights=True))
    return run


@pytest.fixture
def run_dir(trained, tmp_path):
    """A copy of the trained run for one test (choosing an epoch writes chosen.json into it)."""
    return shutil.copytree(trained, tmp_path / "run")


def _open_from_menu(window, monkeypatch, folder) -> None:
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(folder))
    action = next(a for a in window.menuBar().actions()[0].menu().actions() if a.text() == "Open training run…")
    action.trigger()


def test_the_menu_opens_the_run_in_the_epochs_view(qtbot, window, run_dir, monkeypatch):
    _open_from_menu(window, monkeypatch, run_dir)
    view = window.epochs_view
    assert view is not None and window.views.currentWidget() is view
    assert window.epochs_action.isChecked() and not window.compare_action.isChecked()
    assert window.settings.value("last_run_folder") == str(run_dir)
    window.toggle_compare()  # Compare replaces it; the epochs view stays for later
    assert window.views.currentWidget() is window.compare and not window.epochs_action.isChecked()
    window.toggle_epochs()
    assert window.views.currentWidget() is view
    window.toggle_epochs()
    assert window.views.currentWidget() is window.views.widget(0)


def test_a_folder_that_is_no_run_is_refused(qtbot, window, tmp_path, monkeypatch):
    _open_from_menu(window, monkeypatch, tmp_path)
    assert window.epochs_view is None and window.views.currentWidget() is window.views.widget(0)
    assert window.messages.level == "error" and "not a training run folder" in window.messages.label.text()


def test_choosing_an_epoch_makes_it_the_prototype_guided_weights(qtbot, window, run_dir, photo_folder, monkeypatch):
    select_backend(window, "vit-attention")
    window.backend_panel.weights_edit.setText("/some/vit.safetensors")
    window.backend_panel.auto_run.setChecked(False)
    _open_from_menu(window, monkeypatch, run_dir)
    checkpoint = RunFolder(run_dir).checkpoint_path(2)
    window.epochs_view.use_epoch(2)  # the view's "Use this epoch" for epoch 2
    panel = window.backend_panel
    qtbot.waitUntil(lambda: panel.current_id() == "prototype-guided", timeout=10000)
    assert RunFolder(run_dir).chosen() == 2
    assert panel.current_id() == "prototype-guided" and panel.weights_path() == str(checkpoint)
    assert not panel.weights_row.isHidden() and not panel.download_button.isVisibleTo(panel)
    assert panel.weights_edit.placeholderText().startswith("Training checkpoint")
    assert window.controller.inputs.backend == "prototype-guided"
    assert window.controller.inputs.weights == str(checkpoint)
    select_backend(window, "vit-attention")  # the catalogue backends keep their own path
    assert panel.weights_path() == "/some/vit.safetensors"
    select_backend(window, "prototype-guided")
    assert panel.weights_path() == str(checkpoint)
    window.toggle_epochs(False)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=15000)
    window.run_current()
    qtbot.waitUntil(lambda: window.result is not None, timeout=60000)
    record = window.result.record
    assert record.backend_id == "prototype-guided" and record.weights_sha256 == sha256_file(checkpoint)


def test_the_chosen_checkpoint_is_kept_for_the_next_session(qtbot, window, registry, tmp_path):
    from protolens.core.store import ResultStore
    from protolens.gui.main_window import MainWindow
    from protolens.services.segment import Segmenter

    checkpoint = str(tmp_path / "run" / "epoch_004.safetensors")
    window.use_checkpoint(checkpoint, 4)
    window.close()
    again = MainWindow(registry, Segmenter(registry, disk_cache=None), ResultStore(), allow_random_weights=True)
    qtbot.addWidget(again)
    assert again.backend_panel.current_id() == "prototype-guided"
    assert again.backend_panel.weights_path() == checkpoint
    select_backend(again, "vegetation-index")
    assert again.backend_panel.weights_path() == ""
