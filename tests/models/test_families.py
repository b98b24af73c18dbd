"""Model families (vit/families.py): attention capture for Hugging Face DINOv2 (with and without registers)
and CLIP towers against a plain numpy re-derivation, token layout and geometry, final tokens, and
``capture_summaries`` against ``capture_attentions`` for every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from protolens.models.vit.capture import capture_attentions, capture_summaries
from protolens.models.vit.families import family_info, family_of, forward_tokens

PATCH = 8
ROWS, COLS = 3, 5  # non-square: 24 x 40 px
DIM, HEADS, BLOCKS = 32, 2, 2


def _sharpen(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every q/k projection with a wide spread: at the default init (std 0.02) attention is nearly
    uniform, and a wrong scale or swapped q/k would go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q, k in _qk_linears(model):
            for linear in (q, k):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.35)
                linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator) * 0.5)
    return model.eval()


def _layers(model: nn.Module) -> list[nn.Module]:
    encoder = model.vision_model.encoder if hasattr(model, "vision_model") else model.encoder
    return list(getattr(encoder, "layers", None) or encoder.layer)


def _qk_linears(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """(query, key) projections of every block, found by name (transformers 4.x ``query``/``key``, 5.x
    ``q_proj``/``k_proj``)."""
    pairs = []
    for layer in _layers(model):
        named = dict(layer.named_modules())
        q = next(m for n, m in named.items() if n.endswith(("q_proj", "query")))
        k = next(m for n, m in named.items() if n.endswith(("k_proj", "key")))
        pairs.append((q, k))
    return pairs


def make_dinov2(registers: int = 0, seed: int = 0) -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(seed)
    common = dict(hidden_size=DIM, num_hidden_layers=BLOCKS, num_attention_heads=HEADS, intermediate_size=64,
                  patch_size=PATCH, image_size=32)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**common, num_register_tokens=registers))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    return _sharpen(model, seed + 100)


def make_clip(seed: int = 0) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=DIM, intermediate_size=64, num_hidden_layers=BLOCKS,
                                             num_attention_heads=HEADS, image_size=32, patch_size=PATCH))
    return _sharpen(model, seed + 100)


HF_MODELS = {
    "dinov2": (lambda: make_dinov2(0), "hf-dinov2", 0),
    "dinov2-registers": (lambda: make_dinov2(4), "hf-dinov2", 4),
    "clip": (make_clip, "hf-clip", 0),
}


@pytest.fixture(scope="module")
def hf_models() -> dict[str, nn.Module]:
    return {name: build() for name, (build, _family, _registers) in HF_MODELS.items()}


def _input(rows: int = ROWS, cols: int = COLS, patch: int = PATCH, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, rows * patch, cols * patch, generator=generator)


def _numpy_attention(model: nn.Module, x: torch.Tensor) -> dict[int, np.ndarray]:
    """softmax(q k^T * head_dim**-0.5) per block, from the hidden states entering each block's q/k projections.

    The inputs of the query and key projections are caught with forward pre-hooks; the projections are
    ``x @ W.T + b`` with the block's own weights. Returns (batch, heads, tokens, tokens) float64.
    """
    pairs = _qk_linears(model)
    inputs: dict[tuple[int, str], np.ndarray] = {}
    handles = []
    for index, (q, k) in enumerate(pairs):
        for name, linear in (("q", q), ("k", k)):
            handles.append(linear.register_forward_pre_hook(
                lambda _m, args, key=(index, name): inputs.__setitem__(key, args[0].detach().double().numpy())))
    try:
        with torch.no_grad():
            if family_of(model) == "hf-clip":
                model(pixel_values=x, interpolate_pos_encoding=True)
            else:
                model(pixel_values=x)
    finally:
        for handle in handles:
            handle.remove()
    heads = model.config.num_attention_heads
    result = {}
    for index, (q_linear, k_linear) in enumerate(pairs):
        def project(name: str, linear: nn.Linear, index: int = index) -> np.ndarray:
            hidden = inputs[(index, name)]  # (batch, tokens, dim)
            out = hidden @ linear.weight.detach().double().numpy().T + linear.bias.detach().double().numpy()
            batch, tokens, dim = out.shape
            return out.reshape(batch, tokens, heads, dim // heads).transpose(0, 2, 1, 3)

        q, k = project("q", q_linear), project("k", k_linear)
        head_dim = q.shape[-1]
        logits = q @ k.transpose(0, 1, 3, 2) * head_dim ** -0.5
        logits -= logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        result[index] = weights / weights.sum(axis=-1, keepdims=True)
    return result


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_hf_capture_equals_numpy_reference(hf_models, name):
    model = hf_models[name]
    registers = HF_MODELS[name][2]
    x = _input()
    expected = _numpy_attention(model, x)

    captured = capture_attentions(model, x)

    tokens = 1 + registers + ROWS * COLS
    assert sorted(captured) == list(range(BLOCKS))
    for index, attention in captured.items():
        assert attention.dtype == torch.float32
        assert tuple(attention.shape) == (2, HEADS, tokens, tokens)
        np.testing.assert_allclose(attention.numpy(), expected[index], atol=1e-5)
    # The comparison means something: attention is far from uniform in every block.
    for attention in expected.values():
        assert attention.max() > 5.0 / tokens


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_hf_family_and_geometry(hf_models, name):
    model = hf_models[name]
    _build, family, registers = HF_MODELS[name]
    assert family_of(model) == family
    info = family_info(model)
    assert info.family == family
    assert info.patch_size == PATCH
    assert info.num_registers == registers
    assert info.num_prefix == 1 + registers
    assert info.num_heads == HEADS
    assert info.num_blocks == BLOCKS
    assert info.embed_dim == DIM


def test_timm_family_and_geometry(tiny_vit):
    model = tiny_vit(patch_size=16, reg_tokens=4, embed_dim=48, depth=3, num_heads=3)
    info = family_info(model)
    assert family_of(model) == "timm"
    assert (info.family, info.patch_size, info.num_prefix, info.num_registers, info.num_heads, info.num_blocks,
            info.embed_dim) == ("timm", 16, 5, 4, 3, 3, 48)


def test_family_of_refuses_other_models():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                vocab_size=32))
    for model in (nn.Linear(3, 3), bert):
        with pytest.raises(TypeError, match="not a supported vision transformer"):
            family_of(model)


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_hf_forward_tokens_shape_and_final_norm(hf_models, name):
    model = hf_models[name]
    registers = HF_MODELS[name][2]
    x = _input()
    with torch.no_grad():
        tokens = forward_tokens(model, x)
        kwargs = {"interpolate_pos_encoding": True} if HF_MODELS[name][1] == "hf-clip" else {}
        pooled = model(pixel_values=x, **kwargs).pooler_output
    assert tuple(tokens.shape) == (2, 1 + registers + ROWS * COLS, DIM)
    # The CLS token after the model's last norm is exactly what the model pools (CLIP: post_layernorm).
    torch.testing.assert_close(tokens[:, 0], pooled, rtol=0, atol=1e-6)


def _check_summaries_match(model: nn.Module, x: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> None:
    attentions = capture_attentions(model, x)
    order = sorted(attentions)
    summaries, tokens = capture_summaries(model, x, full=True)
    with torch.no_grad():
        expected_tokens = forward_tokens(model, x)
    torch.testing.assert_close(tokens, expected_tokens)
    assert len(summaries) == x.shape[0]
    for b, summary in enumerate(summaries):
        stacked = np.stack([attentions[i][b].numpy() for i in order])  # (blocks, heads, tokens, tokens)
        assert summary.grid == grid and summary.num_prefix == num_prefix
        assert summary.full and summary.blocks == len(order) and summary.heads == stacked.shape[1]
        assert summary.cls_rows.dtype == np.float32
        np.testing.assert_allclose(summary.cls_rows, stacked[:, :, 0], atol=1e-6)
        np.testing.assert_allclose(summary.received, stacked.sum(axis=2), atol=1e-5)
        assert set(summary.fused) == {"mean", "max", "min"}
        for fusion, reduce in (("mean", np.mean), ("max", np.max), ("min", np.min)):
            fused = summary.fused[fusion]
            assert fused.dtype == np.float16
            np.testing.assert_allclose(fused.astype(np.float32), reduce(stacked, axis=1), atol=1e-3, rtol=1e-3)

    cheap, cheap_tokens = capture_summaries(model, x, full=False)
    torch.testing.assert_close(cheap_tokens, tokens)
    for b, summary in enumerate(cheap):
        assert summary.received is None and not summary.full and summary.fused == {}
        assert summary.grid == grid and summary.num_prefix == num_prefix
        np.testing.assert_allclose(summary.cls_rows, summaries[b].cls_rows, atol=1e-6)


@pytest.mark.parametrize("registers", [0, 4])
def test_timm_summaries_are_consistent_with_capture(tiny_vit, registers):
    model = tiny_vit(patch_size=PATCH, reg_tokens=registers)
    _check_summaries_match(model, _input(), 1 + registers, (ROWS, COLS))


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_hf_summaries_are_consistent_with_capture(hf_models, name):
    _check_summaries_match(hf_models[name], _input(), 1 + HF_MODELS[name][2], (ROWS, COLS))


def test_summaries_keep_only_chosen_fusions(tiny_vit):
    summaries, _ = capture_summaries(tiny_vit(patch_size=PATCH), _input(batch=1), full=True, fusions=("max",))
    assert set(summaries[0].fused) == {"max"}


def test_summaries_keep_float32_fused_matrices_on_request(tiny_vit):
    # a rollout discard ranks the fused weights: float32 keeps them within float32 rounding of the attention
    model, x = tiny_vit(patch_size=PATCH, reg_tokens=4), _input()
    attentions = capture_attentions(model, x)
    stacked = np.stack([attentions[i].numpy() for i in sorted(attentions)], axis=1)  # (batch, blocks, heads, T, T)
    summaries, _ = capture_summaries(model, x, full=True, fusions=("mean", "min"), fused_dtype="float32")
    for b, summary in enumerate(summaries):
        assert set(summary.fused) == {"mean", "min"}
        assert all(fused.dtype == np.float32 for fused in summary.fused.values())
        np.testing.assert_allclose(summary.fused["mean"], stacked[b].mean(axis=1), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(summary.fused["min"], stacked[b].min(axis=1), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="fused_dtype"):
        capture_summaries(model, x, full=True, fused_dtype="bfloat16")


def test_vit_spec_of_a_known_hub_id_with_registers():
    """A known Hub id builds with random weights (no download) and its layout is read off the built model.
    (Building the 22M-parameter model takes about 2.5 s, so only the registers variant is built here.)"""
    from protolens.models.vit.loading import forget_models, load_vit, vit_spec

    try:
        model = load_vit("facebook/dinov2-with-registers-small", None)
        spec = vit_spec(model)
        assert not model.training
        assert (spec.patch_size, spec.num_prefix_tokens, spec.num_registers) == (14, 5, 4)
        assert (spec.num_heads, spec.num_blocks, spec.embed_dim, spec.default_size) == (6, 12, 384, 518)
        x = _input(2, 3, 14, batch=1)
        cls = capture_attentions(model, x, blocks=(-1,))[11]
        assert tuple(cls.shape) == (1, 6, 5 + 6, 5 + 6)
    finally:
        forget_models()
