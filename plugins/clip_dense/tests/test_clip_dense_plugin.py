"""clip-dense through the Segmenter on a small sample quadrat with a tiny random open_clip CLIP.

What must hold: one named heatmap per class (the class probability: softmax over all synonyms, max per class),
the main heatmap is the best class probability, the label map is argmax + 1 where that reaches the threshold
(re-derived here with numpy from the stored class maps), the class list is part of the result key, editing one
class re-encodes only its synonyms, and weights/parameter errors are typed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protolens.core.errors import Cancelled, ParamError, WeightsNotFoundError
from protolens.core.jobs import CancelToken
from protolens.core.prompts import parse_class_list
from protolens.models import api
from protolens.models.registry import Registry
from protolens.services.segment import Segmenter, drain, load_image

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"short_side": 64, "window": 32, "stride": 16}
CLASSES = "moss; green moss\nbare soil\nleaf litter; dead leaves\n"
LOADS: list[tuple[str, object]] = []


def tiny_clip():
    """A tiny random open_clip CLIP (32 wide, 2 vision layers, patch 8 on 32 px, 1 text layer), tagged for the
    text cache like ``load_clip`` tags its models."""
    import open_clip
    import torch

    from protolens.models.clip.loading import set_clip_identity

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = open_clip.model.CLIP(
            embed_dim=32, vision_cfg=open_clip.model.CLIPVisionCfg(width=32, layers=2, head_width=16,
                                                                   patch_size=8, image_size=32),
            text_cfg=open_clip.model.CLIPTextCfg(width=32, layers=1, heads=2, context_length=77))
    return set_clip_identity(model.eval(), "tiny-clip-plugin-test", "random")


_TINY = None


@pytest.fixture
def tiny(monkeypatch):
    """``api.load_clip`` returns the tiny CLIP (built once) and records (name, weights) of each call."""
    global _TINY
    if _TINY is None:
        _TINY = tiny_clip()
    LOADS.clear()

    def load(name, weights=None, device="cpu", **_):
        LOADS.append((name, weights))
        return _TINY

    monkeypatch.setattr(api, "load_clip", load, raising=False)
    return _TINY


@pytest.fixture(scope="module")
def registry():
    return Registry.discover()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "moss_carpet.jpg"
    Image.open(ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg").convert("RGB").resize((256, 160)).save(path, quality=92)
    return load_image(path)


def _run(segmenter, photo, classes=CLASSES, **params):
    return drain(segmenter.run(photo, "clip-dense", {"classes": classes, **SMALL, **params},
                               allow_random_weights=True))


def test_class_maps_label_map_and_info(registry, tiny, photo):
    outcome = _run(Segmenter(registry, disk_cache=None), photo)
    result = outcome.result
    names = ["moss", "bare soil", "leaf litter"]
    assert outcome.kind == "segmentation" and LOADS == [("ViT-B-16", None)]  # random: no weights file
    assert outcome.weights_id == "ViT-B-16:random-init" and outcome.weights_sha256 == "none"
    assert list(result.heatmaps) == names
    probs = np.stack([result.heatmaps[n].values for n in names])
    rows, cols = probs.shape[1:]
    assert probs.dtype == np.float32 and abs(rows / cols - 160 / 256) < 0.05
    assert all(h.image_size == (160, 256) for h in result.heatmaps.values())
    assert np.all((probs >= 0) & (probs <= 1))
    # max over synonyms of a softmax over all synonyms: the class maps sum to at most 1, at least 1/synonyms
    total = probs.sum(axis=0)
    assert np.all(total <= 1 + 1e-5) and np.all(total >= 1 / 5 - 1e-5)
    np.testing.assert_allclose(result.heatmap.values, probs.max(axis=0), rtol=0, atol=1e-6)
    labels = result.label_map
    assert labels.classes == ["background", *names] and labels.ids.shape == (rows, cols)
    expected = np.where(probs.max(axis=0) >= 0.3, probs.argmax(axis=0) + 1, 0)
    np.testing.assert_array_equal(labels.ids, expected)
    assert result.suggested_threshold == pytest.approx(0.3)
    info = result.info
    assert info["mode"] == "sclip" and info["classes"][0] == {"name": "moss", "synonyms": ["moss", "green moss"]}
    assert info["text"]["encoded"] + info["text"]["cached"] == 5 and info["text"]["seconds"] >= 0
    windows = np.asarray(info["windows"])  # [x, y, w, h] photo pixels, covering the photo
    assert len(windows) >= 2 and windows[:, 0].min() == 0 and windows[:, 1].min() == 0
    assert np.allclose((windows[:, 0] + windows[:, 2]).max(), 256, atol=0.5)
    assert np.allclose((windows[:, 1] + windows[:, 3]).max(), 160, atol=0.5)


def test_single_synonyms_sum_to_one_and_threshold_moves_background(registry, tiny, photo):
    segmenter = Segmenter(registry, disk_cache=None)
    low = _run(segmenter, photo, "grass\nmoss\nsoil\n", prob_threshold=0.0, mode="clearclip").result
    probs = np.stack([h.values for h in low.heatmaps.values()])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)  # one synonym each: the softmax itself
    assert low.label_map.ids.min() >= 1  # threshold 0: no background
    high = _run(segmenter, photo, "grass\nmoss\nsoil\n", prob_threshold=0.99, mode="clearclip").result
    np.testing.assert_array_equal(high.label_map.ids, np.where(probs.max(axis=0) >= 0.99, low.label_map.ids, 0))


def test_class_list_is_part_of_the_result_key_and_edits_reencode_one_class(registry, tiny, photo):
    segmenter = Segmenter(registry, disk_cache=None)
    first = _run(segmenter, photo, "moss\nbare soil; soil\nlichen\n")
    again = _run(segmenter, photo, "moss\nbare soil; soil\nlichen\n")
    assert again.from_cache and again.key == first.key
    edited = _run(segmenter, photo, "moss\nbare soil; soil\nreindeer lichen\n")
    assert not edited.from_cache and edited.key != first.key
    assert edited.result.info["text"]["encoded"] == 1 and edited.result.info["text"]["cached"] == 3
    assert edited.result.label_map.classes[-1] == "reindeer lichen"
    other_mode = _run(segmenter, photo, "moss\nbare soil; soil\nlichen\n", mode="maskclip")
    assert other_mode.key != first.key and other_mode.result.info["text"]["encoded"] == 0


def test_errors_are_typed(registry, tiny, photo):
    segmenter = Segmenter(registry, disk_cache=None)
    with pytest.raises(ParamError, match="at least one class"):
        _run(segmenter, photo, "# nothing here\n\n")
    with pytest.raises(ParamError, match="reserved"):
        _run(segmenter, photo, "background\nmoss\n")
    wide = _run(segmenter, photo, "moss\nsoil\n", window=96, stride=96).result  # one window per short side
    assert len(wide.info["windows"]) == 2 and wide.label_map.ids.shape == (64, 102)
    with pytest.raises(ParamError, match="--stride 48 is larger than --window 32"):
        _run(segmenter, photo, stride=48)
    with pytest.raises(WeightsNotFoundError, match="protolens weights pull ViT-B-16"):
        drain(segmenter.run(photo, "clip-dense", {"classes": "moss", **SMALL}))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        drain(segmenter.run(photo, "clip-dense", {"classes": "moss", **SMALL}, weights_path=photo.meta.path.parent
                            / "nope.safetensors", allow_random_weights=True))


def test_cancel_between_class_encodings(registry, tiny, photo):
    token, reports = CancelToken(), []

    def on_progress(report):
        reports.append(report.text)
        if report.text.startswith("class names 2/3"):
            token.cancel()

    run = Segmenter(registry, disk_cache=None).run(photo, "clip-dense", {"classes": "fern\nsedge\nrush", **SMALL},
                                                   cancel=token, allow_random_weights=True)
    with pytest.raises(Cancelled):
        drain(run, on_progress)
    assert not any(text.startswith("class names 3/3") or "windows" in text for text in reports), reports


def test_manifest_declares_the_issue_parameters_and_weights(registry):
    manifest = registry.manifest("clip-dense")
    assert (manifest.kind, manifest.weights_param) == ("segmentation", "model") and manifest.weights_file
    assert {"torch", "open_clip"} <= set(manifest.requires)
    spec = {s.name: s for s in manifest.params}
    assert spec["classes"].type == "text"
    assert spec["mode"].choices == ("sclip", "maskclip", "clearclip") and spec["mode"].default == "sclip"
    assert (spec["model"].default, spec["logit_scale"].default, spec["prob_threshold"].default) == (
        "ViT-B-16", 40.0, 0.3)
    assert (spec["short_side"].default, spec["window"].default, spec["stride"].default) == (336, 224, 112)
    weights = manifest.weights_for({"model": "ViT-B-16"})
    assert (weights.hf_repo, weights.filename, weights.licence) == (
        "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors", "MIT")
    parse_class_list(CLASSES)  # the class list the tests use is valid
