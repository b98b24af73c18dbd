"""Taking over scaled_dot_product_attention for the full capture (vit/sdpa.py): the capture computes each
block's attention once, the model's output is unchanged, and nothing outside the capturing thread (or any
masked call) is touched."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protolens.models.vit.capture import capture_attentions, capture_summaries
from protolens.models.vit.families import family_info, forward_tokens
from protolens.models.vit.sdpa import SDPAIntercept


def make_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=32)
    return Dinov2Model(config).eval()


def _qkv(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, 7, 4, generator=generator) for _ in range(3))


def _explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v


def test_intercept_answers_plain_calls_with_the_handler_and_counts_them():
    q, k, v = _qkv()
    seen = []

    def handler(index, q_, k_, v_, scale):
        seen.append((index, scale))
        return _explicit(q_, k_, v_, scale)

    with SDPAIntercept(handler) as intercept:
        first = F.scaled_dot_product_attention(q, k, v)
        second = F.scaled_dot_product_attention(q, k, v, scale=0.25)
    assert intercept.calls == 2 and seen == [(0, 0.5), (1, 0.25)]
    torch.testing.assert_close(first, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(second, F.scaled_dot_product_attention(q, k, v, scale=0.25))


def test_masked_calls_other_threads_and_closed_intercepts_use_the_original_kernel():
    q, k, v = _qkv(1)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()

    def wrong(*_args):
        return torch.zeros_like(v)

    other: list[torch.Tensor] = []
    with SDPAIntercept(wrong) as intercept:
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        thread = threading.Thread(target=lambda: other.append(F.scaled_dot_product_attention(q, k, v)))
        thread.start()
        thread.join()
    after = F.scaled_dot_product_attention(q, k, v)
    assert intercept.calls == 0
    torch.testing.assert_close(masked, causal)  # a lower-triangular mask is the causal mask
    assert masked.abs().sum() > 0
    torch.testing.assert_close(other[0], after)
    torch.testing.assert_close(after, _explicit(q, k, v, 0.5))


def test_intercepts_do_not_nest():
    with SDPAIntercept(lambda *a: a[3]), pytest.raises(RuntimeError, match="already active"):
        with SDPAIntercept(lambda *a: a[3]):
            pass


def _calls_during_full_capture(model, x) -> int:
    """How many SDPA calls the full capture answered itself (0 = the projection hooks were used)."""
    import protolens.models.vit.capture as capture

    counts = []
    real = capture.SDPAIntercept

    class Spy(real):
        def __exit__(self, *exc):
            counts.append(self.calls)
            super().__exit__(*exc)

    capture.SDPAIntercept = Spy
    try:
        capture_summaries(model, x, full=True)
    finally:
        capture.SDPAIntercept = real
    return counts[0]


@pytest.mark.parametrize("family", ["timm", "hf-dinov2"])
def test_full_capture_takes_over_the_attention_and_keeps_the_model_output(tiny_vit, family):
    model = tiny_vit(patch_size=8) if family == "timm" else make_dinov2()
    x = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    assert _calls_during_full_capture(model, x) == family_info(model).num_blocks
    summaries, tokens = capture_summaries(model, x, full=True)
    with torch.inference_mode():
        torch.testing.assert_close(tokens, forward_tokens(model, x), rtol=1e-5, atol=1e-5)
    attentions = capture_attentions(model, x)
    np.testing.assert_allclose(summaries[1].received, np.stack([attentions[i][1].sum(1).numpy()
                                                                for i in sorted(attentions)]), atol=1e-5)


def test_a_model_that_never_calls_sdpa_is_captured_from_its_projections(tiny_vit):
    model = tiny_vit(patch_size=8)
    for block in model.blocks:
        block.attn.fused_attn = False  # timm's explicit softmax path: no SDPA call at all
    x = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(4))
    assert _calls_during_full_capture(model, x) == 0
    summaries, tokens = capture_summaries(model, x, full=True)
    attentions = capture_attentions(model, x)
    np.testing.assert_allclose(summaries[0].cls_rows, np.stack([attentions[i][0, :, 0].numpy()
                                                                for i in sorted(attentions)]), atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(tokens, forward_tokens(model, x))
