"""LDVC focal and Dice losses (arXiv 2403.08426 §3.4) against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from protolens.core.errors import ParamError  # noqa: E402
from protolens.models.ldvc.losses import dice_loss, focal_loss, ldvc_loss  # noqa: E402

# One image, 2 classes, a 1x2 map. Pixel 0 is class 0; pixel 1 is ignored (255).
# Pixel 0 logits: class 0 -> 0 (p = 0.5), class 1 -> ln 3 (p = 0.75). Pixel 1 logits are arbitrary.
LOGITS = torch.tensor([[[[0.0, 5.0]], [[math.log(3.0), -7.0]]]])  # (1, 2, 1, 2)
TARGET = torch.tensor([[[0, 255]]])  # (1, 1, 2)

# Focal (alpha 0.25, gamma 2), valid elements (pixel 0, class 0) and (pixel 0, class 1):
#   class 0, y = 1: p_t = 0.5,  alpha_t = 0.25, (1 - p_t)^2 = 0.25,   -log p_t = ln 2
#   class 1, y = 0: p_t = 0.25, alpha_t = 0.75, (1 - p_t)^2 = 0.5625, -log p_t = ln 4
FOCAL = (0.25 * 0.25 * math.log(2) + 0.75 * 0.5625 * math.log(4)) / 2  # = 0.3140821...
# Dice (eps 1), per class over the valid pixel:
#   class 0: 1 - (2 * 0.5 * 1 + 1) / (0.5 + 1 + 1) = 0.2
#   class 1: 1 - (0 + 1) / (0.75 + 0 + 1) = 3 / 7
DICE = (0.2 + 3 / 7) / 2  # = 0.3142857...


def test_focal_by_hand():
    assert FOCAL == pytest.approx(0.3140821, abs=1e-6)
    assert float(focal_loss(LOGITS, TARGET)) == pytest.approx(FOCAL, rel=1e-6)


def test_focal_gamma0_is_weighted_bce():
    # gamma = 0, alpha = 0.5: 0.5 * mean BCE = 0.5 * (ln 2 + ln 4) / 2
    value = float(focal_loss(LOGITS, TARGET, alpha=0.5, gamma=0.0))
    assert value == pytest.approx(0.5 * (math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_dice_by_hand():
    assert float(dice_loss(LOGITS, TARGET)) == pytest.approx(DICE, rel=1e-6)


def test_ldvc_loss_weights():
    assert float(ldvc_loss(LOGITS, TARGET)) == pytest.approx(100 * FOCAL + DICE, rel=1e-6)
    assert float(ldvc_loss(LOGITS, TARGET, focal_weight=2.0, dice_weight=3.0)) == pytest.approx(
        2 * FOCAL + 3 * DICE, rel=1e-6)


def test_logits_upsampled_to_target():
    # a 1x1 logit map upsampled to 2x2 is constant: the same per-pixel numbers, 4 valid pixels of class 0
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    assert float(focal_loss(logits, target)) == pytest.approx(FOCAL, rel=1e-6)
    # dice over 4 pixels: class 0: 1 - (2*2 + 1)/(2 + 4 + 1) = 2/7; class 1: 1 - 1/(3 + 1) = 3/4
    assert float(dice_loss(logits, target)) == pytest.approx((2 / 7 + 3 / 4) / 2, rel=1e-6)


def test_ignored_and_invalid_targets():
    everything_ignored = torch.full((1, 1, 2), 255)
    assert float(focal_loss(LOGITS, everything_ignored)) == 0.0
    with pytest.raises(ParamError, match="outside"):
        focal_loss(LOGITS, torch.tensor([[[0, 2]]]))
    with pytest.raises(ParamError):
        dice_loss(LOGITS, torch.zeros(2, 1, 2, dtype=torch.long))


def test_gradient_pushes_toward_target():
    logits = LOGITS.clone().requires_grad_(True)
    ldvc_loss(logits, TARGET).backward()
    g = logits.grad[0, :, 0, 0]
    assert g[0] < 0 < g[1]  # raise the true class, lower the other
    assert torch.all(logits.grad[0, :, 0, 1] == 0)  # the ignored pixel gets no gradient
