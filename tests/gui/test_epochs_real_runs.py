"""Issue 13: both training runs — a real (tiny) LDVC run and a real patch-selector run — open in the checkpoint
comparison view with the real `ldvc` and `patch-selection` backends and their metrics per epoch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from protolens.services.segment import Segmenter, drain


@pytest.fixture
def shown(qtbot, window, tmp_path, samples):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = cv2.imread(str(samples / "quadrats" / "moss_carpet.jpg"))
    cv2.imwrite(str(folder / "moss.png"), cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA))
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=15000)
    return window


def _open(qtbot, window, run_dir, epochs):
    window.open_training_run(run_dir)
    view = window.epochs_view
    qtbot.waitUntil(lambda: len(view.keys_by_epoch) == epochs and all(i in view.data for i in range(epochs)),
                    timeout=60000)
    return view


def _voc(root):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "class_names.txt").write_text("background\nred\ngreen\n")
    for i in range(4):
        image = np.full((32, 32, 3), 120, np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        image[8:24, 8:24] = (220, 30, 30) if i % 2 else (30, 200, 40)
        mask[8:24, 8:24] = 1 if i % 2 else 2
        Image.fromarray(image).save(root / "JPEGImages" / f"p{i}.png")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"p{i}.png")
    return root


def test_a_real_ldvc_run_opens_with_label_maps_and_segmentation_metrics(qtbot, shown, tmp_path, monkeypatch):
    from protolens.models.clip import loading
    from protolens.models.ldvc.model import save_tiny_clip, tiny_clip
    from protolens.services.ldvc_training import train_ldvc

    weights = save_tiny_clip(tmp_path / "clip", 11)
    monkeypatch.setattr(loading, "create_clip", lambda name="ViT-B-16", **_: tiny_clip(11))
    out = tmp_path / "ldvc_run"
    drain(train_ldvc(Segmenter(disk_cache=None, device="cpu"), _voc(tmp_path / "voc"), seen="red", unseen="green",
                     epochs=2, out=out, input_size=32, weights_path=weights, val_fraction=0.25, accumulation=2,
                     arch={"dim": 16, "layers": 1, "heads": 2, "windows": 2, "top_k": 2}))
    view = _open(qtbot, shown, out, 2)
    assert "(ldvc)" in view.run_label.text()
    assert all(view.data[i].found.record.backend_id == "ldvc" for i in range(2))
    assert all(view.data[i].found.layers.label_map.classes == ["background", "red", "green"] for i in range(2))
    assert {"miou", "miou_unseen", "hiou", "pixel_accuracy"} <= set(view.plot.curves)
    assert [e for e, _ in view.plot.points("hiou")] == [1, 2]


def test_a_real_patch_selector_run_opens_with_kept_sets_and_agreement(qtbot, shown, tmp_path, samples,
                                                                      monkeypatch):
    from protolens.services.patch_selector_training import train_patch_selector

    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))
    images = tmp_path / "train"
    images.mkdir()
    for name in ("forget_me_not.jpg", "forest_floor.jpg", "green_meadow.jpg"):
        image = cv2.imread(str(samples / "quadrats" / name))
        cv2.imwrite(str(images / name), cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA))
    out = tmp_path / "selector_run"
    drain(train_patch_selector(Segmenter(shown.registry, disk_cache=None, device="cpu"), images, out, epochs=2,
                               keep=3, input_size=64, accumulation=1, val_fraction=0.34, allow_random_weights=True))
    view = _open(qtbot, shown, out, 2)
    assert "(patch-selector)" in view.run_label.text()
    found = [view.data[i].found for i in range(2)]
    assert all(f.record.backend_id == "patch-selection" for f in found)
    assert all(f.layers.regions.labels == ["kept", "dropped"] for f in found)
    assert all(int(f.layers.regions.masks[0].sum()) > 0 for f in found)
    assert [e for e, _ in view.plot.points("agreement_iou")] == [1, 2]
