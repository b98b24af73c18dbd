"""The Compare view with qtbot: panes of several backends, synced zoom, one shared threshold, the difference
pane, agreement figures, browsing with A/D and the export (the same files as ``protolens compare``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from protolens.core.store import ResultStore
from protolens.services.batch import segment_paths
from protolens.services.segment import Segmenter

RUNS = [("vegetation-index", {"index": "exg"}), ("vegetation-index", {"index": "exg-exr"}),
        ("test-gradient", {"steps": 2}), ("test-layers", {"classes": 3})]


@pytest.fixture
def compared(qtbot, window, registry, photo_folder):
    """Four stored results from three backends on two photos, the window in Compare (2×2)."""
    photos = [photo_folder / "a_meadow.jpg", photo_folder / "b_dahlia.jpg"]
    segmenter = Segmenter(registry, disk_cache=None)
    for backend, params in RUNS:
        segment_paths(photos, backend, params, segmenter=segmenter, store=ResultStore())
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.image is not None and len(window.controller.entries) == 4, timeout=15000)
    window.toggle_compare(True)
    view = window.compare
    view.set_layout("2×2")
    qtbot.waitUntil(lambda: all(i in view.data for i in range(4)), timeout=15000)
    return view


def test_four_panes_from_three_backends(compared):
    view = compared
    backends = [view.data[i][0].record.backend_id for i in range(4)]
    assert sorted(set(backends)) == ["test-gradient", "test-layers", "vegetation-index"]
    assert len(set(view.keys[:4])) == 4
    assert all(p.canvas.has_heatmap for p in view.panes[:4])
    assert "reference" in view.panes[0].title.text()
    assert all("IoU" in p.title.text() and "Spearman" in p.title.text() for p in view.panes[1:4])


def test_zoom_and_pan_are_synchronised(qtbot, compared):
    view = compared
    view.panes[2].canvas.view.setRange(xRange=(100, 300), yRange=(200, 350), padding=0)
    qtbot.wait(50)
    ranges = [p.canvas.view.viewRange() for p in view.panes[:4]]
    for xr, _yr in ranges:
        assert xr == pytest.approx(ranges[2][0], abs=1.0)
    assert ranges[0][0][1] - ranges[0][0][0] < 400


def test_shared_threshold_repaints_every_pane(compared):
    view = compared
    view.threshold.setValue(0.7)
    level = int(np.ceil(0.7 * 255 - 1e-6))
    assert [p.canvas.mask_item.threshold_level for p in view.panes[:4]] == [level] * 4
    view.panes[1].own.setChecked(True)  # a per-pane override wins over the shared threshold
    view.panes[1].own_threshold.setValue(0.2)
    view.threshold.setValue(0.4)
    assert view.panes[1].canvas.mask_item.threshold_level == int(np.ceil(0.2 * 255 - 1e-6))
    assert view.panes[3].canvas.mask_item.threshold_level == int(np.ceil(0.4 * 255 - 1e-6))


def test_a_result_agrees_with_itself_and_its_difference_is_zero(qtbot, compared):
    view = compared
    view.choose(1, view.keys[0])
    qtbot.waitUntil(lambda: 1 in view.data, timeout=10000)
    agreement = view.agreement_with_first(1)
    assert agreement.iou == 1.0 and agreement.pearson == pytest.approx(1.0) and agreement.spearman == pytest.approx(1.0)
    assert "IoU 1.000" in view.panes[1].title.text()
    view.diff_on.setChecked(True)  # 2×2 with a difference pane: three results and the difference
    qtbot.waitUntil(lambda: view.difference_pair() == (0, 1), timeout=10000)
    from protolens.services.compare import difference_map, xor_mask

    a, b = view.data[0][1], view.data[1][1]
    assert np.abs(difference_map(a, b)).max() == 0.0 and not xor_mask(a, b).any()
    assert view.difference_pane.canvas.has_heatmap and "IoU 1.000" in view.difference_pane.title.text()


def test_browsing_keeps_the_choice_of_results(qtbot, window, compared):
    view = compared
    keys = list(view.keys[:4])
    first_sha = view._image.meta.sha256
    window.next_image()
    qtbot.waitUntil(lambda: view._image is not None and view._image.meta.sha256 != first_sha and len(view.data) == 4,
                    timeout=15000)
    assert view.keys[:4] == keys
    assert [view.data[i][0].key for i in range(4)] == keys


def test_export_writes_the_grid_and_the_agreement_figures(qtbot, compared, tmp_path):
    view = compared
    out = tmp_path / "cmp"
    view.export(out)
    qtbot.waitUntil(lambda: (out / "a_meadow.compare.json").exists(), timeout=15000)
    document = json.loads((out / "a_meadow.compare.json").read_text())
    assert [p["key"] for p in document["panes"]] == view.keys[:4]
    assert len(document["agreement"]) == 6
    first = next(a for a in document["agreement"] if (a["a"], a["b"]) == (1, 2))
    assert first["iou"] == pytest.approx(view.agreement_with_first(1).iou)
    with Image.open(out / "a_meadow.compare.png") as png:
        assert png.size[0] > 2 * document["grid"]["cols"]


def test_two_checkpoints_of_one_backend_coexist_in_the_store_and_the_view(qtbot, window, registry, photo_folder,
                                                                          tmp_path):
    photo = photo_folder / "a_meadow.jpg"
    checkpoints = []
    for epoch in (3, 7):
        path = tmp_path / f"epoch_{epoch:03d}.safetensors"
        path.write_bytes(f"checkpoint of epoch {epoch}".encode())
        checkpoints.append(path)
        segment_paths([photo], "test-layers", {}, segmenter=Segmenter(registry, disk_cache=None),
                      store=ResultStore(), weights_path=path)
    entries = ResultStore().list_results(photo)
    assert [e.record.weights_id for e in entries] == ["epoch_003.safetensors", "epoch_007.safetensors"]
    assert len({e.key for e in entries}) == 2
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photo)
    qtbot.waitUntil(lambda: len(window.controller.entries) == 2, timeout=15000)
    window.toggle_compare(True)
    view = window.compare
    view.set_layout("1×2")
    qtbot.waitUntil(lambda: 0 in view.data and 1 in view.data, timeout=15000)
    assert {view.data[i][0].record.weights_id for i in range(2)} == {"epoch_003.safetensors", "epoch_007.safetensors"}
    assert "epoch_00" in view.panes[1].title.text()
    assert view.agreement_with_first(1).iou < 1.0  # two checkpoints, two different maps
