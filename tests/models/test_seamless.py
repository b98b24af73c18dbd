"""Sliding windows end to end: a constant photo gives a constant heatmap in every mode (no seams)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protolens.core.attention import aggregate
from protolens.core.jobs import CancelToken
from protolens.core.tiling import blend, plan_windows
from protolens.models.vit.engine import window_summaries
from protolens.services.segment import drain


@pytest.mark.parametrize("mode", ["cls", "received", "rollout"])
def test_constant_image_blends_to_a_constant_map(tiny_vit, mode):
    """Without position embeddings every window of a constant image sees identical tokens, so each window's
    map is constant; any gap, double count or misplaced window in tiling/blending would show as a step."""
    model = tiny_vit(patch_size=8, seed=1)
    with torch.no_grad():
        model.pos_embed.zero_()
    patch, rows, cols = 8, 13, 21
    working = np.full((3, rows * patch, cols * patch), 0.3, np.float32)
    windows = plan_windows(rows * patch, cols * patch, 5 * patch, 0.4, patch)
    assert len(windows) > 6
    summaries, _ = drain(window_summaries(model, working, windows, full=mode != "cls", batch_size=3,
                                          device="cpu", dtype="float32", cancel=CancelToken()))
    maps = [aggregate(s, mode) for s in summaries]
    assert all(np.ptp(m) < 1e-5 for m in maps)
    blended = blend(windows, maps, rows, cols, patch)
    assert blended.shape == (rows, cols)
    assert np.ptp(blended) <= 1e-5 * max(1.0, float(np.abs(blended).max()))
