"""Attention capture (vit/capture.py) against a plain numpy re-derivation, and ViT preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protolens.models.vit.capture import QKCapture, capture_attentions, capture_cls_attention
from protolens.models.vit.preprocess import IMAGENET_MEAN, IMAGENET_STD, grid_size, preprocess


def _numpy_attention(model, x: torch.Tensor) -> dict[int, np.ndarray]:
    """softmax(q k^T * head_dim**-0.5) per block, recomputed in numpy from each block's attention input.

    The attention input is the output of ``norm1``, caught with a forward hook; the projection is
    ``x @ W.T + b`` with the block's own qkv weights. Returns (batch, heads, tokens, tokens) float64.
    """
    inputs: dict[int, np.ndarray] = {}
    handles = [block.norm1.register_forward_hook(
        lambda _m, _i, out, index=index: inputs.__setitem__(index, out.detach().double().numpy()))
        for index, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    result = {}
    for index, block in enumerate(model.blocks):
        tokens_in = inputs[index]  # (batch, tokens, dim)
        weight = block.attn.qkv.weight.detach().double().numpy()
        bias = block.attn.qkv.bias.detach().double().numpy()
        qkv = tokens_in @ weight.T + bias
        batch, tokens, _ = qkv.shape
        heads = block.attn.num_heads
        head_dim = weight.shape[1] // heads
        qkv = qkv.reshape(batch, tokens, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        logits = q @ k.transpose(0, 1, 3, 2) * head_dim ** -0.5
        logits -= logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        result[index] = weights / weights.sum(axis=-1, keepdims=True)
    return result


def _input(rows: int, cols: int, patch: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, rows * patch, cols * patch, generator=generator)


@pytest.mark.parametrize(("patch", "registers", "rows", "cols"), [
    (16, 0, 3, 3),
    (14, 4, 3, 3),
    (8, 0, 4, 4),
    (14, 0, 2, 5),   # non-square grid
    (16, 4, 5, 2),   # non-square, registers
])
def test_capture_attentions_equals_numpy_reference(tiny_vit, patch, registers, rows, cols):
    model = tiny_vit(patch_size=patch, reg_tokens=registers)
    x = _input(rows, cols, patch, batch=2)
    expected = _numpy_attention(model, x)

    captured = capture_attentions(model, x)

    tokens = 1 + registers + rows * cols
    assert sorted(captured) == [0, 1]
    for index, attention in captured.items():
        assert attention.dtype == torch.float32
        assert tuple(attention.shape) == (2, 3, tokens, tokens)
        np.testing.assert_allclose(attention.numpy(), expected[index], atol=1e-5)
    # The comparison means something: attention is far from uniform.
    assert expected[1].max() > 5.0 / tokens


@pytest.mark.parametrize(("patch", "registers", "rows", "cols"), [
    (16, 0, 3, 3), (14, 4, 2, 5), (8, 4, 3, 4),
])
def test_capture_cls_attention_is_the_cls_row_of_the_reference(tiny_vit, patch, registers, rows, cols):
    model = tiny_vit(patch_size=patch, reg_tokens=registers)
    x = _input(rows, cols, patch)
    expected = _numpy_attention(model, x)

    cls = capture_cls_attention(model, x, blocks=(0, -1))

    tokens = 1 + registers + rows * cols
    assert sorted(cls) == [0, 1]
    for index, row in cls.items():
        assert tuple(row.shape) == (1, 3, tokens)
        np.testing.assert_allclose(row.numpy(), expected[index][:, :, 0], atol=1e-5)
        np.testing.assert_allclose(row.sum(dim=-1).numpy(), 1.0, atol=1e-5)


def test_fused_and_explicit_attention_give_the_same_capture(tiny_vit):
    """timm's default fused kernel (no softmax tensor) and its explicit path yield the same matrices,
    and both equal the softmax timm itself computes on the explicit path."""
    model = tiny_vit(patch_size=14, reg_tokens=4)
    assert all(block.attn.fused_attn for block in model.blocks)  # timm's default here
    x = _input(2, 5, 14)
    fused = capture_attentions(model, x)

    timm_softmax: dict[int, torch.Tensor] = {}
    handles = []
    for index, block in enumerate(model.blocks):
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(
            lambda _m, inputs, _out, index=index: timm_softmax.__setitem__(index, inputs[0].detach().clone())))
    try:
        explicit = capture_attentions(model, x)
    finally:
        for handle in handles:
            handle.remove()

    for index in (0, 1):
        np.testing.assert_allclose(fused[index].numpy(), explicit[index].numpy(), atol=1e-6)
        np.testing.assert_allclose(explicit[index].numpy(), timm_softmax[index].numpy(), atol=1e-5)


def test_rows_sum_to_one_and_are_probabilities(tiny_vit):
    model = tiny_vit(patch_size=16, reg_tokens=4)
    for attention in capture_attentions(model, _input(3, 4, 16)).values():
        assert torch.all(attention >= 0)
        np.testing.assert_allclose(attention.sum(dim=-1).numpy(), 1.0, atol=1e-5)


def test_negative_block_indices_name_blocks_from_the_end(tiny_vit):
    model = tiny_vit(patch_size=16, depth=3)
    x = _input(2, 3, 16)
    every = capture_attentions(model, x)
    assert sorted(every) == [0, 1, 2]

    last = capture_cls_attention(model, x)  # default: the last block
    assert list(last) == [2]
    torch.testing.assert_close(last[2], every[2][:, :, 0])

    chosen = capture_attentions(model, x, blocks=(-3, -2))
    assert sorted(chosen) == [0, 1]
    torch.testing.assert_close(chosen[0], every[0])
    torch.testing.assert_close(chosen[1], every[1])


def test_capture_leaves_no_hooks_behind(tiny_vit):
    model = tiny_vit(patch_size=16)
    x = _input(2, 2, 16)
    capture_attentions(model, x)
    capture_cls_attention(model, x)
    assert all(not block.attn.qkv._forward_hooks for block in model.blocks)

    with pytest.raises(RuntimeError, match="boom"):
        with QKCapture(model) as capture:
            assert all(len(block.attn.qkv._forward_hooks) == 1 for block in model.blocks)
            model.forward_features(x)
            assert sorted(capture.captured) == [0, 1]
            raise RuntimeError("boom")
    assert all(not block.attn.qkv._forward_hooks for block in model.blocks)


def test_capture_does_not_change_the_model_output(tiny_vit):
    model = tiny_vit(patch_size=14, reg_tokens=4)
    x = _input(3, 2, 14)
    with torch.no_grad():
        before = model.forward_features(x)
        with QKCapture(model, blocks=(-1,)):
            during = model.forward_features(x)
    torch.testing.assert_close(before, during, rtol=0, atol=0)


def test_capture_refuses_a_model_that_is_not_a_vit():
    with pytest.raises(TypeError, match="not a supported vision transformer"):
        capture_cls_attention(torch.nn.Linear(3, 3), torch.zeros(1, 3))


# --- preprocessing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "long_side", "patch"), [
    (480, 640, 224, 14), (640, 480, 224, 14), (1600, 2560, 518, 14), (1000, 1000, 160, 16),
    (300, 1200, 128, 8), (7, 5, 64, 16), (3000, 20, 224, 14), (1000, 1500, 224, 14),
])
def test_grid_size_keeps_the_aspect_ratio(height, width, long_side, patch):
    rows, cols = grid_size(height, width, long_side, patch)
    assert rows >= 1 and cols >= 1
    scale = long_side / max(height, width)
    # Each side is the nearest patch multiple of the scaled side (or one patch when that rounds to 0).
    assert abs(rows * patch - height * scale) <= patch / 2 or rows == 1
    assert abs(cols * patch - width * scale) <= patch / 2 or cols == 1
    if height >= width:
        assert rows >= cols
    else:
        assert cols >= rows


def test_grid_size_known_values():
    assert grid_size(480, 640, 224, 14) == (12, 16)
    assert grid_size(1600, 2560, 160, 16) == (6, 10)
    assert grid_size(1000, 1500, 224, 14) == (11, 16)  # 10.67 rows round to 11
    assert grid_size(10, 5000, 224, 16) == (1, 14)  # a sliver still gets one row


def test_preprocess_shape_dtype_and_normalisation():
    value = 200
    image = np.full((90, 150, 3), value, np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x, (rows, cols) = preprocess(image, 112, 14, mean, std)
    assert (rows, cols) == grid_size(90, 150, 112, 14)
    assert x.shape == (1, 3, rows * 14, cols * 14)
    assert x.dtype == np.float32
    for channel in range(3):
        expected = (value / 255.0 - mean[channel]) / std[channel]
        np.testing.assert_allclose(x[0, channel], expected, atol=1e-5)


def test_preprocess_defaults_to_imagenet_statistics_and_keeps_channel_order():
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0] = 255  # pure red
    x, grid = preprocess(image, 32, 16)
    assert grid == (2, 2) and x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(x[0, 0], (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], atol=1e-5)
    np.testing.assert_allclose(x[0, 1], -IMAGENET_MEAN[1] / IMAGENET_STD[1], atol=1e-5)
    np.testing.assert_allclose(x[0, 2], -IMAGENET_MEAN[2] / IMAGENET_STD[2], atol=1e-5)


def test_preprocess_output_runs_through_a_vit(tiny_vit):
    """A non-square photo becomes a non-square grid whose patch count matches the captured tokens."""
    model = tiny_vit(patch_size=14, reg_tokens=4)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 260, 3), dtype=np.uint8)
    x, (rows, cols) = preprocess(image, 98, 14)
    assert rows < cols
    cls = capture_cls_attention(model, torch.from_numpy(x))
    assert cls[1].shape[-1] == 1 + 4 + rows * cols
