"""View ▸ Explain with qtbot: a bird sample (alpha = object mask) explained against a bank of the bird samples
(random ViT-S/14 weights at a 56 px input), one line per kept match, the label filter without a new job, the
vote chart, hover and click, pixel correspondences on demand, and the PNG + JSON export."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from protolens.models.registry import Registry
from protolens.services.bank import build_bank
from protolens.services.segment import Segmenter, drain

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain") / "bank"
    shutil.copytree(SAMPLES / "birds", root)
    drain(build_bank(Segmenter(Registry.discover(), disk_cache=None), root, input_size=56,
                     allow_random_weights=True))
    return root


@pytest.fixture
def explained(qtbot, window, bank_dir, tmp_path):
    """The window on a copy of the bird samples, lark.png shown in View ▸ Explain with k = 3 and SLIC segments
    (named after the co-segmentation part covering most of each, so some matches disagree in label)."""
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "birds", photos)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photos / "lark.png")
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    window.toggle_explain(True)
    view = window.explain_view
    assert window.views.currentWidget() is view and window.explain_action.isChecked()
    view.k_spin.setValue(3)
    view.segments_combo.setCurrentText("slic")
    view.set_bank(bank_dir)
    qtbot.waitUntil(lambda: view.explanation is not None and not view.jobs.active("explain"), timeout=30000)
    return view


def test_view_draws_one_line_per_kept_match(explained):
    view = explained
    explanation = view.explanation
    assert explanation.query.path.endswith("lark.png") and len(explanation.prototypes) == 3
    kept = explanation.kept(False)
    assert len(kept) > 0
    assert view.scene_view.line_count == len(kept) == len(view.scene_view.lines())
    assert view.chart.bar_count == len(explanation.vote(False).classes) == 3
    assert explanation.vote(False).message() in view.chart.title.text()
    # the query's mask is its alpha channel: no segment outside the bird
    from protolens.core.imageio import read_mask

    alpha = read_mask(Path(explanation.query.path)) >= 128
    assert not (explanation.query.segments.ids[~alpha] >= 0).any()
    assert explanation.segments_source == "slic"
    assert view.settings.value("explain_bank") == str(view.bank_root)


def test_no_matches_says_no_prediction(explained):
    view = explained
    key = view._shown
    _, photos, query_rgb = view._cache[key]
    empty = dataclasses.replace(view.explanation, matches=[])
    view._show(key, (empty, photos, query_rgb))
    assert view.scene_view.line_count == 0
    assert "no best buddies: no prediction" in view.chart.title.text()
    assert view.chart.bar_count == len(empty.vote().classes) == 3


def test_segments_source_recomputes(qtbot, explained):
    view = explained
    first, started = view.explanation, view.jobs_started
    view.segments_combo.setCurrentText("cosegment")
    assert view.jobs_started == started + 1
    qtbot.waitUntil(lambda: view.explanation is not first and not view.jobs.active("explain"), timeout=30000)
    assert view.explanation.segments_source == "cosegment"
    assert view.scene_view.line_count == len(view.explanation.kept(False)) > 0


def test_label_filter_refilters_without_a_job(qtbot, explained):
    view = explained
    started = view.jobs_started
    view.consistent.setChecked(True)
    filtered = view.explanation.kept(True)
    assert 0 < len(filtered) < len(view.explanation.kept(False))
    assert view.scene_view.line_count == len(filtered)
    assert all(m.query_label == m.prototype_label for m in filtered)
    assert view.chart.bar_count == len(view.explanation.vote(True).classes)
    view.consistent.setChecked(False)
    assert view.scene_view.line_count == len(view.explanation.kept(False))
    assert view.jobs_started == started and not view.jobs.active("explain")


def test_hover_tooltip_and_click_highlight(qtbot, explained):
    view = explained
    scene = view.scene_view
    line = scene.lines()[0]
    match = view.explanation.kept(False)[0]
    assert f"similarity {match.similarity:.3f}" in line.toolTip()
    assert match.query_label in line.toolTip() and match.prototype_label in line.toolTip()
    scene.centerOn(line.line().center())
    qtbot.wait(20)
    dot = next(item for item in scene.scene().items() if type(item).__name__ == "KeypointDot")
    qtbot.mouseClick(scene.viewport(), Qt.MouseButton.LeftButton,
                     pos=scene.mapFromScene(dot.rect().center()))
    assert scene.highlighted is not None
    assert len(scene._highlight_items) == 2  # the query's and the prototype's segment


def test_pixel_correspondences_on_demand_then_cached(qtbot, explained):
    view = explained
    started = view.jobs_started
    view.mode_combo.setCurrentIndex(view.mode_combo.findData("pixels"))
    assert view.jobs_started == started + 1
    qtbot.waitUntil(lambda: view.explanation.correspondences is not None and not view.jobs.active("explain"),
                    timeout=30000)
    pairs = sum(len(c) for c in view.explanation.correspondences)
    assert view.scene_view.line_count == pairs
    view.mode_combo.setCurrentIndex(view.mode_combo.findData("segments"))
    assert view.scene_view.line_count == len(view.explanation.kept(False))
    view.mode_combo.setCurrentIndex(view.mode_combo.findData("pixels"))
    assert view.scene_view.line_count == pairs and view.jobs_started == started + 1
    assert view.layer_spin.isEnabled() and view.facet_combo.isEnabled()
    # another facet: the correspondences are computed again, with that facet
    view.facet_combo.setCurrentText("token")
    assert view.jobs_started == started + 2
    qtbot.waitUntil(lambda: not view.jobs.active("explain") and view._pixels_of.get(view._shown) == (9, "token"),
                    timeout=30000)
    assert view.scene_view.line_count == sum(len(c) for c in view.explanation.correspondences)
    view.mode_combo.setCurrentIndex(view.mode_combo.findData("segments"))
    assert not view.layer_spin.isEnabled() and view.jobs_started == started + 2


def test_export_writes_png_and_json(qtbot, explained, tmp_path):
    view = explained
    view.consistent.setChecked(True)
    out = tmp_path / "out"
    view.export(out)
    qtbot.waitUntil(lambda: len(view.last_export) == 2, timeout=10000)
    png, js = (Path(p) for p in view.last_export)
    assert png.name == "lark.explanation.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text())
    assert data["label_consistent"] is True
    assert len(data["matches"]) == len(view.explanation.kept(True))


def test_going_back_to_a_photo_reuses_its_explanation(qtbot, window, explained):
    view = explained
    first = view.explanation
    window.next_image()  # magpie.png
    qtbot.waitUntil(lambda: view.explanation is not first and view.explanation is not None
                    and not view.jobs.active("explain"), timeout=30000)
    started = view.jobs_started
    window.previous_image()
    qtbot.waitUntil(lambda: view.explanation is first, timeout=10000)
    assert view.jobs_started == started
    window.toggle_explain()
    assert window.views.currentIndex() == 0 and not window.explain_action.isChecked()


def test_build_bank_from_the_view(qtbot, window, tmp_path):
    bank = tmp_path / "small"
    bank.mkdir()
    for name in ("crow.png", "magpie.png", "seagull.png"):
        shutil.copy(SAMPLES / "birds" / name, bank / name)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(SAMPLES / "birds" / "lark.png")
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    window.toggle_explain(True)
    view = window.explain_view
    texts = [item.text() for item in view.scene_view.scene().items() if hasattr(item, "text")]
    assert any("choose a prototype bank folder" in text for text in texts)
    view.bank_options = {"input_size": 56}
    view.k_spin.setValue(2)
    view.build_bank(bank)
    assert view.progress.isVisible() and view.cancel_button.isVisible()
    qtbot.waitUntil(lambda: (bank / ".protolens-bank" / "bank.json").is_file() and view.explanation is not None
                    and not window.jobs.active(), timeout=30000)
    assert len(view.explanation.prototypes) == 2
    assert not view.progress.isVisible()


def test_cancel_stops_the_computation(qtbot, window, bank_dir):
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(SAMPLES / "birds" / "robin.jpg")
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    window.toggle_explain(True)
    view = window.explain_view
    view.set_bank(bank_dir)
    assert view.cancel_button.isVisible()
    view.cancel_button.click()
    qtbot.waitUntil(lambda: not view.jobs.active("explain"), timeout=30000)
    assert not view.progress.isVisible() and not view.cancel_button.isVisible()


def test_bank_source_uses_the_parts_drawn_with_the_editor(qtbot, explained):
    """Segments source "bank": the classes drawn on the photo with the mask editor are the query's parts; a new
    stroke gives a new explanation."""
    import numpy as np

    from protolens.core.annotation import Annotation
    from protolens.core.labels import LabelClass, LabelSet

    view = explained
    window = view.window()
    edit = window.edit
    meta = view._image.meta
    labels = np.zeros((meta.height, meta.width), np.uint8)
    labels[: meta.height // 2, :] = 1  # "head" on the top half, "tail" on the bottom half
    labels[meta.height // 2:, :] = 2
    edit.project.labels = LabelSet([LabelClass(1, "head", (255, 0, 0)), LabelClass(2, "tail", (0, 0, 255))])
    edit.meta = meta
    edit.editor.set_annotation(Annotation(labels))
    started = view.jobs_started
    view.segments_combo.setCurrentText("bank")
    qtbot.waitUntil(lambda: view.jobs_started > started and not view.jobs.active("explain")
                    and view.explanation is not None and view.explanation.segments_source == "bank", timeout=30000)
    query = view.explanation.query.segments
    assert query.source == "user" and query.names == ["head", "tail"]
    assert (query.ids[: meta.height // 2] == 0).all() and (query.ids[meta.height // 2:] == 1).all()
    started = view.jobs_started
    labels[:, : meta.width // 2] = 0  # an edit: another explanation (the drawn parts are part of the key)
    view.refresh()
    qtbot.waitUntil(lambda: view.jobs_started > started and not view.jobs.active("explain"), timeout=30000)
    assert (view.explanation.query.segments.ids[:, : meta.width // 2] == -1).all()
