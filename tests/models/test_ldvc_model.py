"""LDVC model (arXiv 2403.08426) on a tiny random open_clip CLIP: shapes, frozen towers, deep prompt tuning,
checkpoints, and the decoder overfitting a 4-image synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

import torch.nn.functional as F  # noqa: E402

from protolens.core.errors import ParamError  # noqa: E402
from protolens.models.ldvc import LDVC, LDVCConfig, ldvc_image_tensor, ldvc_loss, tiny_clip, tiny_ldvc  # noqa: E402
from protolens.models.training import load_checkpoint, save_checkpoint  # noqa: E402


def _texts(n: int = 3, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _images(b: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(2))


def test_forward_shapes_and_state_dict_holds_only_trainable_parts():
    model = tiny_ldvc()
    logits = model(_images(2, 64), _texts(3))
    assert logits.shape == (2, 3, 8, 8) and logits.dtype == torch.float32
    assert model(_images(1, 32), _texts(5)).shape == (1, 5, 4, 4)  # the tower's own size
    keys = model.state_dict().keys()
    assert keys and not any(k.startswith("clip") or "visual" in k for k in keys)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in model.clip.parameters())


def test_untrained_decoder_gives_clip_cosine_logits():
    """patch_out is zero-initialised: logits = scale * cos(CLIP patch feature, adapted class embedding)."""
    model = tiny_ldvc()
    images, texts = _images(1, 32), _texts(3)
    with torch.no_grad():
        patches, global_feature = model.encode_image(images)
        classes = model.adapter(texts, global_feature)
        expected = torch.einsum("bhwd,bnd->bnhw", F.normalize(patches, dim=-1), F.normalize(classes, dim=-1))
        np.testing.assert_allclose(model(images, texts).numpy(), (expected / 0.07).numpy(), rtol=1e-4, atol=1e-4)
        # the plain tower: class token and patch tokens as open_clip's own forward gives them
        visual = model.clip.visual
        visual.output_tokens = True
        pooled, tokens = visual(images)
        visual.output_tokens = False
        np.testing.assert_allclose(global_feature.numpy(), pooled.numpy(), atol=1e-5)
        np.testing.assert_allclose(patches.reshape(1, 16, -1).numpy(), (tokens @ visual.proj).numpy(), atol=1e-5)


def test_frozen_towers_get_no_gradient_and_run_without_graph():
    model = tiny_ldvc()
    patches, _ = model.encode_image(_images(1, 32))
    assert not patches.requires_grad  # no_grad when prompts are off
    ldvc_loss(model(_images(1, 32), _texts(3)), torch.zeros(1, 32, 32, dtype=torch.long)).backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert model.decoder.patch_out.weight.grad.abs().sum() > 0
    assert model.adapter.mlp[0].weight.grad is not None


def test_deep_prompt_tuning_changes_output_and_receives_gradients():
    clip = tiny_clip()
    plain = tiny_ldvc(clip=clip)
    prompted = tiny_ldvc(clip=clip, prompt_tokens=3)
    assert prompted.prompts.shape == (2, 3, 32)  # (image blocks, tokens, width)
    images, texts = _images(1, 32), _texts(3)
    with torch.no_grad():
        a, b = plain.encode_image(images), prompted.encode_image(images)
    assert a[0].shape == b[0].shape and not torch.allclose(a[0], b[0], atol=1e-4)
    logits = prompted(images, texts)
    # with patch_out zero-initialised, the prompts reach the loss through the class-token global feature
    ldvc_loss(logits, torch.zeros(1, 32, 32, dtype=torch.long)).backward()
    assert prompted.prompts.grad is not None and prompted.prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert "prompts" in prompted.state_dict() and "prompts" not in plain.state_dict()


def test_checkpoint_roundtrip_and_config(tmp_path):
    model = tiny_ldvc(seed=3, prompt_tokens=2)
    path = tmp_path / "epoch_001.safetensors"
    save_checkpoint(path, model)
    other = tiny_ldvc(seed=4, clip=model.clip, prompt_tokens=2)
    load_checkpoint(path, other)
    images, texts = _images(1, 32), _texts(2)
    with torch.no_grad():
        np.testing.assert_allclose(other(images, texts).numpy(), model(images, texts).numpy(), atol=1e-6)
    config = LDVCConfig.from_json(model.config.to_json())
    assert config == model.config and config.prompt_tokens == 2
    with pytest.raises(ParamError, match="unknown"):
        LDVCConfig.from_json({"dim": 8, "colour": 1})


def test_module_moves_and_casts_the_held_clip():
    model = tiny_ldvc().double()
    assert model.clip.visual.conv1.weight.dtype == torch.float64
    model.train()
    assert model.decoder.training and not model.clip.training


def test_input_errors():
    model = tiny_ldvc()
    with pytest.raises(ParamError, match="multiple"):
        model(torch.zeros(1, 3, 30, 30), _texts(2))
    with pytest.raises(ParamError, match="class embeddings"):
        model(_images(1, 32), torch.zeros(2, 8))
    with pytest.raises(ParamError):
        LDVC(torch.nn.Linear(2, 2))


def test_image_tensor_normalises_with_clip_statistics():
    clip = tiny_clip()
    image = np.full((20, 30, 3), 255, np.uint8)
    x = ldvc_image_tensor(image, 32, clip)
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (1 - np.array([0.48145466, 0.4578275, 0.40821073]))
                               / np.array([0.26862954, 0.26130258, 0.27577711]), rtol=1e-5)


def _synthetic(size: int = 64, patch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """4 photos: grey background (class 0), a red square (1) and a blue bar (2) on the patch grid, with noise."""
    rng = np.random.default_rng(0)
    colours = np.array([[120, 120, 120], [220, 40, 40], [40, 60, 220]], np.uint8)
    cells = size // patch
    images, masks = [], []
    for _ in range(4):
        grid = np.zeros((cells, cells), np.uint8)
        r, c = rng.integers(0, cells - 3, 2)
        grid[r:r + 3, c:c + 3] = 1
        r, c = rng.integers(0, cells - 2, 2)
        grid[r:r + 2, c:c + 4] = 2
        mask = np.kron(grid, np.ones((patch, patch), np.uint8))
        image = colours[mask].astype(np.float64) + rng.normal(0, 10, (size, size, 3))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def _miou(pred: np.ndarray, truth: np.ndarray, n: int) -> float:
    return float(np.mean([((pred == c) & (truth == c)).sum() / max(1, ((pred == c) | (truth == c)).sum())
                          for c in range(n)]))


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: intra-op threads only add spin-waiting (10x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_decoder_overfits_four_synthetic_images(one_thread):
    """Frozen tiny towers; adapter + decoder trained with focal + Dice for 150 full-batch AdamW steps (full
    forward each step, towers included); the pixel mIoU of the (bilinearly upsampled) prediction reaches
    >= 0.95 on the training images (it starts below 0.6)."""
    torch.manual_seed(0)
    images, masks = _synthetic()
    model = tiny_ldvc()
    x = torch.stack([ldvc_image_tensor(image, 64, model.clip) for image in images])
    y = torch.from_numpy(masks).long()
    texts = _texts(3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with torch.no_grad():
        before = F.interpolate(model(x, texts), size=(64, 64), mode="bilinear").argmax(1).numpy()
    for _ in range(150):
        loss = ldvc_loss(model(x, texts), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = F.interpolate(model(x, texts), size=(64, 64), mode="bilinear").argmax(1).numpy()
    assert _miou(before, masks, 3) < 0.6
    assert _miou(pred, masks, 3) >= 0.95
