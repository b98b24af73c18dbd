"""The narrow ViT (arXiv 2512.19957, step 4) and its received attention (step 6), against plain re-derivations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig, sincos_position_embedding


def _model(width: int = 0) -> NarrowViT:
    torch.manual_seed(0)
    return NarrowViT(NarrowViTConfig(grid=(3, 4), prototypes=5, token_dim=16, width=width, depth=2, heads=4)).eval()


def test_output_is_k_by_d_and_each_prototype_row_mixes_tokens_linearly() -> None:
    model = _model()
    tokens = torch.randn(2, 12, 16)
    out = model(tokens)
    assert out.shape == (2, 5, 16)
    encoded, _ = model.encode(tokens)
    expected = torch.einsum("kn,bnd->bkd", model.mix.weight, encoded) + model.mix.bias[None, :, None]
    assert torch.allclose(out, expected, atol=1e-5)
    assert _model(width=8)(tokens).shape == (2, 5, 16)  # another block width projects in and out
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(1, 11, 16))


def test_explicit_attention_path_matches_the_fused_one() -> None:
    model = _model()
    tokens = torch.randn(1, 12, 16)
    fused, _ = model.encode(tokens, keep=False)
    explicit, weights = model.encode(tokens, keep=True)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (1, 4, 12, 12)


def test_received_attention_is_the_query_sum_of_the_block_and_head_mean() -> None:
    model = _model()
    tokens = torch.randn(1, 12, 16)
    x = (tokens + model.pos_embed).numpy()[0]
    matrices = []
    for block in model.blocks:  # numpy re-derivation of pre-norm blocks with softmax(q k^T / sqrt(d))
        h = torch.nn.functional.layer_norm(torch.from_numpy(x), (16,), block.norm1.weight, block.norm1.bias, 1e-6)
        qkv = block.attn.qkv(h).detach().numpy().reshape(12, 3, 4, 4).transpose(1, 2, 0, 3)
        q, k, v = qkv
        logits = q @ k.transpose(0, 2, 1) / 2.0
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        matrices.append(attn)
        out = (attn @ v).transpose(1, 0, 2).reshape(12, 16)
        x = x + block.attn.proj(torch.from_numpy(out)).detach().numpy()
        x = x + block.mlp(block.norm2(torch.from_numpy(x))).detach().numpy()
    expected = np.mean(matrices, axis=(0, 1)).sum(axis=0)
    assert np.allclose(model.received_attention(tokens)[0].numpy(), expected, atol=1e-5)
    assert float(expected.sum()) == pytest.approx(12.0, abs=1e-4)  # every query row sums to one


def test_sincos_embedding_encodes_row_then_column() -> None:
    pe = sincos_position_embedding(2, 3, 8)
    assert pe.shape == (6, 8)
    # token (row 1, col 2) is index 5: first half encodes y = 1, second half x = 2
    omega = 1.0 / 10000 ** (np.arange(2) / 2)
    assert np.allclose(pe[5, :4].numpy(), np.concatenate([np.sin(omega), np.cos(omega)]), atol=1e-6)
    assert np.allclose(pe[5, 4:].numpy(), np.concatenate([np.sin(2 * omega), np.cos(2 * omega)]), atol=1e-6)
    with pytest.raises(ValueError):
        sincos_position_embedding(2, 2, 6)
