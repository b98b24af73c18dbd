"""SVIP's patch selector (arXiv 2503.10252, Sec. 3.2): raw embeddings, rollout targets, the MLP overfits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protolens.models.patch_selector import (
    PatchSelector,
    predict_not_kept,
    raw_patch_embeddings,
    rollout_and_embeddings,
    selector_features,
    selector_loss,
    stack_samples,
)
from protolens.models.vit.capture import capture_attentions


def _numpy_rollout(attentions: dict[int, torch.Tensor]) -> np.ndarray:
    """SVIP's rollout by hand (METHODS.md §2): A~ = (mean_heads(A) + I) / row sums, R = A~_L ... A~_1, CLS row."""
    result = None
    for block in sorted(attentions):
        a = attentions[block][0].double().numpy().mean(axis=0)
        a = a + np.eye(a.shape[0])
        a = a / a.sum(axis=1, keepdims=True)
        result = a if result is None else a @ result
    return result[0, 1:]


def test_embeddings_are_before_the_position_embedding_and_rollout_matches_numpy(tiny_vit):
    model = tiny_vit(patch_size=16, img_size=64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    raw = raw_patch_embeddings(model, x)
    by_hand = model.patch_embed.proj(x).permute(0, 2, 3, 1)  # conv projection, no position embedding
    assert raw.shape == (1, 4, 4, 48)
    torch.testing.assert_close(raw, by_hand)
    scores, embeddings = rollout_and_embeddings(model, x)
    np.testing.assert_allclose(embeddings[0], by_hand[0].detach().numpy(), rtol=1e-5, atol=1e-5)
    expected = _numpy_rollout(capture_attentions(model, x)).reshape(4, 4)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-4, atol=1e-6)


def test_selector_shape_and_checks():
    selector = PatchSelector(in_dim=12, hidden=8)
    features = selector_features(np.random.default_rng(0).normal(size=(4, 6, 3)))
    assert features.shape == (6, 12)
    probability = predict_not_kept(selector, np.zeros((4, 6, 3), np.float32))
    assert probability.shape == (2, 3) and np.all((probability > 0) & (probability < 1))
    from protolens.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="12-dim"):
        predict_not_kept(selector, np.zeros((4, 4, 5), np.float32))


def test_selector_overfits_a_fixed_set():
    """8 photos x 4 super-patches with random features and random 0/1 targets: BCE -> ~0, all predictions right."""
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(4, 64)).astype(np.float32) for _ in range(8)]
    targets = [rng.integers(0, 2, size=4).astype(np.float32) for _ in range(8)]
    samples = stack_samples(features, targets)
    torch.manual_seed(0)
    model = PatchSelector(in_dim=64, hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = sum(selector_loss(model, s, "cpu") for s in samples) / len(samples)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02
    with torch.no_grad():
        predicted = [(model(torch.from_numpy(f)) > 0.5).numpy() for f in features]
    np.testing.assert_array_equal(np.stack(predicted), np.stack(targets).astype(bool))
