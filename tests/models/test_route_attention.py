"""Route attention (BiFormer, arXiv 2303.08810 §3.2) against plain multi-head attention and a numpy routing
re-derivation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from protolens.core.errors import ParamError  # noqa: E402
from protolens.models.ldvc.route_attention import RouteAttention, full_attention, window_layout  # noqa: E402


def _numpy_mha(module: RouteAttention, x: np.ndarray, keys_of=None) -> np.ndarray:
    """Plain multi-head attention in numpy; ``keys_of(query_index) -> allowed key indices`` (default: all)."""
    b, rows, cols, c = x.shape
    w = module.qkv.weight.detach().double().numpy()
    bias = module.qkv.bias.detach().double().numpy()
    tokens = x.reshape(b, rows * cols, c)
    q, k, v = np.split(tokens @ w.T + bias, 3, axis=-1)
    h, d = module.heads, c // module.heads
    out = np.zeros_like(q)
    for bi in range(b):
        for i in range(rows * cols):
            allowed = np.arange(rows * cols) if keys_of is None else keys_of(bi, i)
            for hh in range(h):
                sl = slice(hh * d, (hh + 1) * d)
                s = k[bi, allowed, sl] @ q[bi, i, sl] / np.sqrt(d)
                p = np.exp(s - s.max())
                out[bi, i, sl] = (p / p.sum()) @ v[bi, allowed, sl]
    out = out @ module.proj.weight.detach().double().numpy().T + module.proj.bias.detach().double().numpy()
    return out.reshape(b, rows, cols, c)


@pytest.mark.parametrize(("rows", "cols", "windows"), [(8, 8, 4), (7, 5, 3), (6, 6, 1)])
def test_route_equals_full_attention_when_all_windows_kept(rows, cols, windows):
    torch.manual_seed(0)
    module = RouteAttention(16, heads=4, windows=windows, top_k=windows * windows)
    x = torch.randn(2, rows, cols, 16)
    with torch.no_grad():
        routed = module(x)
        full = full_attention(module, x)
        # the same via torch's reference attention on the flattened tokens
        q, k, v = module.qkv(x.reshape(2, -1, 16)).chunk(3, dim=-1)
        q, k, v = (z.reshape(2, -1, 4, 4).transpose(1, 2) for z in (q, k, v))
        sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, rows, cols, 16)
        sdpa = module.proj(sdpa)
    np.testing.assert_allclose(routed.numpy(), sdpa.numpy(), atol=1e-5)
    np.testing.assert_allclose(full.numpy(), sdpa.numpy(), atol=1e-5)
    np.testing.assert_allclose(routed.double().numpy(), _numpy_mha(module, x.double().numpy()), atol=1e-5)


def test_top_k_routing_matches_numpy_rederivation():
    """4x4 grid, 2x2 windows of 2x2 tokens, top_k = 2: each query attends to the tokens of the 2 windows whose
    mean-key has the largest dot product with its window's mean-query."""
    torch.manual_seed(1)
    module = RouteAttention(8, heads=2, windows=2, top_k=2)
    x = torch.randn(1, 4, 4, 8)
    with torch.no_grad():
        routed = module(x).double().numpy()
    xn = x.double().numpy()
    qkv = xn.reshape(16, 8) @ module.qkv.weight.detach().double().numpy().T + module.qkv.bias.detach().double().numpy()
    q, k = qkv[:, :8], qkv[:, 8:16]
    window = np.array([(r // 2) * 2 + c // 2 for r in range(4) for c in range(4)])  # token -> window id
    q_r = np.stack([q[window == w].mean(0) for w in range(4)])
    k_r = np.stack([k[window == w].mean(0) for w in range(4)])
    keep = np.argsort(-(q_r @ k_r.T), axis=1)[:, :2]

    def keys_of(_b, i):
        return np.flatnonzero(np.isin(window, keep[window[i]]))

    np.testing.assert_allclose(routed, _numpy_mha(module, xn, keys_of), atol=1e-5)
    # and routing matters here: it differs from full attention
    assert not np.allclose(routed, _numpy_mha(module, xn), atol=1e-3)


def test_window_layout_and_errors():
    assert window_layout(14, 14, 7) == (2, 2, 7, 7)
    assert window_layout(5, 5, 4) == (2, 2, 3, 3)  # no window is pure padding
    with pytest.raises(ParamError):
        RouteAttention(10, heads=3, windows=2, top_k=1)
    with pytest.raises(ParamError):
        RouteAttention(8, heads=2, windows=2, top_k=0)


def test_route_attention_gradients_flow():
    module = RouteAttention(8, heads=2, windows=3, top_k=2)
    x = torch.randn(1, 7, 6, 8, requires_grad=True)
    module(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert module.qkv.weight.grad.abs().sum() > 0
