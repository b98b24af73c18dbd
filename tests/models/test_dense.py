"""Dense features (models/dense.py): tokens, CLS and saliency of whole photos against plain re-derivations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from protolens.core.errors import ParamError
from protolens.core.jobs import CancelToken
from protolens.models.dense import DenseFeatures, dense_features

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def drain(generator):
    """Run a progress generator to its end; returns (its value, the progress reports)."""
    reports = []
    while True:
        try:
            reports.append(next(generator))
        except StopIteration as stop:
            return stop.value, reports


def photos(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (90, 40, 3), dtype=np.uint8),
            rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)]


def reference_input(image: np.ndarray, size: int) -> torch.Tensor:
    """The model input re-derived: cv2 resize (area when shrinking both sides, else cubic), (x/255-mean)/std."""
    shrink = size < image.shape[0] and size < image.shape[1]
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    x = (resized.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


def reference_saliency(model, x: torch.Tensor, num_prefix: int) -> np.ndarray:
    """Last block's CLS attention in numpy from the block's attention input (norm1 output), prefix dropped,
    mean over heads, min-max normalised. Returns (patches,) float64."""
    block = model.blocks[-1]
    caught = {}
    handle = block.norm1.register_forward_hook(lambda _m, _i, out: caught.__setitem__("x", out.double().numpy()))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    qkv = caught["x"][0] @ block.attn.qkv.weight.detach().double().numpy().T + block.attn.qkv.bias.detach().double().numpy()
    heads = block.attn.num_heads
    head_dim = qkv.shape[1] // (3 * heads)
    q = qkv[0, :heads * head_dim].reshape(heads, head_dim)
    k = qkv[:, heads * head_dim:2 * heads * head_dim].reshape(-1, heads, head_dim)
    rows = []
    for h in range(heads):
        logits = k[:, h] @ q[h] * head_dim ** -0.5
        weights = np.exp(logits - logits.max())
        rows.append((weights / weights.sum())[num_prefix:])
    mean = np.mean(rows, axis=0)
    return (mean - mean.min()) / (mean.max() - mean.min())


@pytest.mark.parametrize("registers", [0, 4])
def test_dense_features_match_a_plain_forward(tiny_vit, registers):
    model = tiny_vit(8, reg_tokens=registers)
    images = photos()
    features, reports = drain(dense_features(model, images, input_size=48, mean=MEAN, std=STD, device="cpu",
                                             dtype="float32", batch_size=2, cancel=CancelToken()))
    assert len(features) == 3 and len(reports) == 2
    prefix = 1 + registers
    for image, feature in zip(images, features, strict=True):
        assert isinstance(feature, DenseFeatures)
        assert feature.image_size == image.shape[:2] and feature.input_size == 48 and feature.grid == (6, 6)
        x = reference_input(image, 48)
        with torch.no_grad():
            expected = model.forward_features(x)[0].numpy()
        assert feature.cls.dtype == np.float32 and feature.cls.shape == (48,)
        np.testing.assert_allclose(feature.cls, expected[0], atol=1e-4)
        assert feature.tokens.shape == (6, 6, 48) and feature.tokens.dtype == np.float32
        np.testing.assert_allclose(feature.tokens, expected[prefix:].reshape(6, 6, 48), atol=1e-4)
        assert feature.saliency.shape == (6, 6) and feature.saliency.dtype == np.float32
        np.testing.assert_allclose(feature.saliency.ravel(), reference_saliency(model, x, prefix), atol=1e-4)
        assert feature.saliency.min() == 0.0 and feature.saliency.max() == 1.0


def test_batch_size_does_not_change_results(tiny_vit):
    model = tiny_vit(8)
    kwargs = dict(input_size=32, mean=MEAN, std=STD, device="cpu", dtype="float32", cancel=CancelToken())
    one, _ = drain(dense_features(model, photos(1), batch_size=1, **kwargs))
    three, _ = drain(dense_features(model, photos(1), batch_size=3, **kwargs))
    for a, b in zip(one, three, strict=True):
        np.testing.assert_allclose(a.tokens, b.tokens, atol=1e-5)
        np.testing.assert_allclose(a.saliency, b.saliency, atol=1e-5)


def test_input_size_must_be_a_patch_multiple_and_empty_input_is_empty(tiny_vit):
    model = tiny_vit(14)
    kwargs = dict(mean=MEAN, std=STD, device="cpu", dtype="float32", cancel=CancelToken())
    with pytest.raises(ParamError, match="multiple of the patch size 14"):
        drain(dense_features(model, photos(), input_size=50, **kwargs))
    assert drain(dense_features(model, [], input_size=56, **kwargs))[0] == []


def test_cancel_before_the_first_batch(tiny_vit):
    from protolens.core.errors import Cancelled

    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        drain(dense_features(tiny_vit(8), photos(), input_size=32, mean=MEAN, std=STD, device="cpu",
                             dtype="float32", cancel=cancel))


def test_hugging_face_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     patch_size=8, image_size=32)).eval()
    image = photos()[0]
    (feature,), _ = drain(dense_features(model, [image], input_size=32, mean=MEAN, std=STD, device="cpu",
                                         dtype="float32", cancel=CancelToken()))
    with torch.no_grad():
        expected = model(pixel_values=reference_input(image, 32)).last_hidden_state[0].numpy()
    np.testing.assert_allclose(feature.tokens, expected[1:].reshape(4, 4, 32), atol=1e-4)
    assert feature.saliency.shape == (4, 4) and 0.0 <= feature.saliency.min() <= feature.saliency.max() <= 1.0


def test_exposed_through_the_plugin_api():
    from protolens.models import api, dense

    assert api.dense_features is dense.dense_features and api.DenseFeatures is dense.DenseFeatures
