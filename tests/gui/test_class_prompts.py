"""The Class prompts panel with the clip-dense backend: the class list is the backend's ``classes`` parameter,
parse errors show inline, each class has its project colour, a class map is picked and drawn, the label map is a
class overlay in the project's colours, "Use as mask" starts the editor from it with the project's class ids, and
editing one class re-encodes only that class.

CLIP is a tiny random open_clip model (width 32) standing in for ViT-B/16 (the plugin's ``api.load_clip`` is
patched), and the quadrat is a 320x200 copy, so every test runs in a few seconds.
"""

from __future__ import annotations

import uuid

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.gui.conftest import select_backend

CLASSES = "Trifolium repens; white clover\nmoss\nbare soil"
FAST = {"short_side": 64, "window": 64, "stride": 32, "prob_threshold": 0.34, "logit_scale": 40.0}


@pytest.fixture
def quadrat(tmp_path, samples):
    """A folder with one small quadrat photo (320x200, from moss_carpet.jpg)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = cv2.imread(str(samples / "quadrats" / "moss_carpet.jpg"))
    cv2.imwrite(str(folder / "moss.jpg"), cv2.resize(photo, (320, 200), interpolation=cv2.INTER_AREA))
    return folder


@pytest.fixture
def tiny_clip(monkeypatch):
    """clip-dense with a tiny random CLIP (its own identity, so its text embeddings never mix with ViT-B/16's);
    the text-embedding counters and memory cache start empty."""
    open_clip = pytest.importorskip("open_clip")
    import torch

    from protolens.models import api
    from protolens.models.clip.loading import set_clip_identity
    from protolens.models.clip.text import reset_text_stats

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)  # a seed whose maps give every class and background on this quadrat
        vision = open_clip.model.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32)
        text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
        model = open_clip.model.CLIP(32, vision, text).eval()
    # a fresh identity per test: embeddings cached on disk by an earlier test are not found
    set_clip_identity(model, "ViT-B-16+tiny-test", f"random-{uuid.uuid4().hex}")
    monkeypatch.setattr(api, "load_clip", lambda *args, **kwargs: model, raising=False)
    reset_text_stats(clear_cache=True)
    yield model
    reset_text_stats(clear_cache=True)


def _open(qtbot, window, folder) -> None:
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)


def _set_params(window, values: dict) -> None:
    form = window.backend_panel.form
    form.set_values({**form.values(), **values})
    form.changed.emit(form.values())


def _set_classes(window, text: str) -> None:
    panel = window.class_prompts
    panel.text.setPlainText(text)
    assert panel.apply_text()


def _run(qtbot, window, names: list[str]):
    """Run clip-dense with the panel's class list; the result (its classes checked against ``names``)."""
    classes = window.class_prompts.text.toPlainText()
    window.run_current()
    qtbot.waitUntil(lambda: window.result is not None and window.result.record.backend_id == "clip-dense"
                    and window.result.record.params["classes"] == classes, timeout=20000)
    assert window.result.layers.label_map.classes == ["background", *names]
    return window.result


def test_the_panel_edits_the_classes_parameter_and_shows_parse_errors_inline(qtbot, window) -> None:
    from protolens.core.labels import DEFAULT_COLORS

    panel, form = window.class_prompts, window.backend_panel.form
    select_backend(window, "vegetation-index")
    assert panel.isHidden()
    select_backend(window, "clip-dense")
    assert not panel.isHidden() and form.editor("classes").isHidden()  # one editor of the list: the panel's
    with qtbot.waitSignal(window.backend_panel.params_changed, timeout=2000) as changed:
        _set_classes(window, CLASSES)
    assert changed.args[0]["classes"] == CLASSES == form.values()["classes"]
    assert window.controller.inputs.params["classes"] == CLASSES
    names = [panel.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(panel.list.count())]
    assert names == ["", "Trifolium repens", "moss", "bare soil"]
    assert "white clover" in panel.list.item(1).toolTip()
    # colours: a project class keeps its own, new names get the next unused default colours in list order
    labels = window.edit.project.labels
    labels.add("moss", (10, 200, 30))
    panel.refresh()
    assert panel.color_of("moss") == (10, 200, 30)
    free = [c for c in DEFAULT_COLORS if c not in {cls.color for cls in labels.classes}]  # no colour twice
    assert panel.color_of("Trifolium repens") == free[0]
    assert panel.color_of("bare soil") == free[1]
    # a parse error: shown under the text, the parameter keeps the last valid list, nothing raised
    panel.text.setPlainText("moss\nlichen\nMoss")
    assert not panel.apply_text()
    assert not panel.error.isHidden() and "line 3" in panel.error.text()
    assert form.values()["classes"] == CLASSES
    panel.text.setPlainText("background")
    assert not panel.apply_text() and "reserved" in panel.error.text()
    _set_classes(window, "moss\nlichen")
    assert panel.error.isHidden() and form.values()["classes"] == "moss\nlichen"
    select_backend(window, "vegetation-index")
    assert panel.isHidden() and "classes" not in window.controller.inputs.params


def test_typing_is_applied_after_a_pause_or_before_a_run(qtbot, window) -> None:
    panel, form = window.class_prompts, window.backend_panel.form
    select_backend(window, "clip-dense")
    panel.text.setPlainText("moss")
    assert form.values()["classes"] != "moss"  # not yet: the typing pause
    qtbot.waitUntil(lambda: form.values()["classes"] == "moss", timeout=3000)
    panel.text.setPlainText("moss\nlichen")
    assert panel.flush() and form.values()["classes"] == "moss\nlichen"
    assert not panel.flush()


def test_class_maps_overlay_and_use_as_mask(qtbot, window, quadrat, tiny_clip) -> None:
    from protolens.gui.canvas import display_map

    _open(qtbot, window, quadrat)
    select_backend(window, "clip-dense")
    _set_params(window, FAST)
    labels = window.edit.project.labels
    labels.add("moss", (10, 200, 30))
    known = {c.name: c.id for c in labels.classes}
    _set_classes(window, CLASSES)
    found = _run(qtbot, window, ["Trifolium repens", "moss", "bare soil"])
    assert set(found.layers.heatmaps) == {"Trifolium repens", "moss", "bare soil"}
    panel = window.class_prompts
    assert all(panel.list.item(i).flags() & Qt.ItemFlag.ItemIsEnabled for i in range(4))
    # pick a class map: the Results panel's "Map shown" follows and the canvas draws that class's probability
    panel.list.setCurrentRow(2)
    assert window.results_panel.current_layer() == "moss"
    moss = found.layers.heatmaps["moss"]
    expected = display_map(moss.values, window.canvas.image_size, interpolation=moss.interpolation)
    np.testing.assert_array_equal(window.canvas._display, expected)
    window.results_panel.layer.setCurrentIndex(0)  # and the other way round
    assert panel.list.currentItem().data(Qt.ItemDataRole.UserRole) == ""
    # the label map is drawn as a class overlay, in the project's colours (new names: their coming colours)
    label_map = found.layers.label_map
    assert set(np.unique(label_map.ids)) == {0, 1, 2, 3}, "seed 2 gives every class and background"
    item = window.layers.label_item
    assert item.isVisible() and item.image is not None
    drawn = np.asarray(item.image)
    ids = cv2.resize(label_map.ids.astype(np.int32), (drawn.shape[1], drawn.shape[0]),
                     interpolation=cv2.INTER_NEAREST)
    for index, name in enumerate(label_map.classes[1:], start=1):
        if (ids == index).any():
            assert (drawn[ids == index][:, :3] == panel.color_of(name)).all(), name
    assert (drawn[ids == 0][:, 3] == 0).all()
    # Use as mask: the editor's label map holds the project's ids of those names, new classes added
    panel.use_as_mask.click()
    qtbot.waitUntil(lambda: window.edit.editor.active, timeout=10000)
    project = window.edit.project.labels
    assert project.by_name("moss").id == known["moss"] and project.by_name("plant").id == known["plant"]
    new = [project.by_name(n) for n in ("Trifolium repens", "bare soil")]
    assert all(c is not None and c.id not in known.values() for c in new)
    assert [c.color for c in new] == [panel.color_of(c.name) for c in new]
    lut = np.array([0, *(project.by_name(n).id for n in label_map.classes[1:])], np.uint8)
    np.testing.assert_array_equal(window.edit.editor.annotation.labels, lut[label_map.full_resolution()])
    # a class added to the list has no map until the next run
    _set_classes(window, CLASSES + "\nlichen")
    row = panel.list.item(panel.list.count() - 1)
    assert row.text().startswith("lichen") and "run to compute" in row.text()
    assert not row.flags() & Qt.ItemFlag.ItemIsEnabled


def test_editing_one_class_reencodes_only_that_class(qtbot, window, quadrat, tiny_clip) -> None:
    from protolens.models.clip.text import reset_text_stats, text_stats

    _open(qtbot, window, quadrat)
    select_backend(window, "clip-dense")
    _set_params(window, FAST)
    _set_classes(window, CLASSES)
    _run(qtbot, window, ["Trifolium repens", "moss", "bare soil"])
    assert text_stats().encoded == 4  # Trifolium repens, white clover, moss, bare soil
    reset_text_stats()
    # typed and run at once (Ctrl+R before the typing pause): the run takes the edit
    window.class_prompts.text.setPlainText("Trifolium repens; white clover\nmoss; Bryophyta\nbare soil")
    found = _run(qtbot, window, ["Trifolium repens", "moss", "bare soil"])
    stats = text_stats()
    assert (stats.encoded, stats.cached) == (1, 4)  # only the edited line's new synonym was encoded
    assert found.record.info["text"]["encoded"] == 1
