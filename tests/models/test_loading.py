"""Building timm ViTs and loading weights safely (vit/loading.py), on real architectures with random weights."""

from __future__ import annotations

import os

import pytest
import torch

from protolens.core.errors import CheckpointError
from protolens.models.vit.loading import create_vit, forget_models, load_vit, vit_spec

NAME = "test_vit"  # a real (tiny) timm ViT architecture: patch 16, 64 dims, 6 blocks, 2 heads


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    forget_models()
    yield
    forget_models()


@pytest.fixture(scope="module")
def source():
    """A random test_vit and its state dict, as a user's fine-tuned checkpoint would be."""
    torch.manual_seed(1234)
    model = create_vit(NAME).eval()
    with torch.no_grad():  # timm's init leaves LayerNorms at identity: randomise everything
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model, {k: v.clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(5))  # 3 x 5 patches


def _features(model, x):
    with torch.no_grad():
        return model.forward_features(x)


def test_random_weights_model_is_cached_and_in_eval_mode():
    first = load_vit(NAME, None)
    assert load_vit(NAME, None) is first
    assert not first.training
    assert all(not module.training for module in first.modules())
    assert next(first.parameters()).device.type == "cpu"
    spec = vit_spec(first)
    assert (spec.patch_size, spec.num_heads, spec.num_blocks, spec.embed_dim) == (16, 2, 6, 64)
    assert spec.num_prefix_tokens == 1 and spec.num_registers == 0

    forget_models()
    assert load_vit(NAME, None) is not first


def test_safetensors_and_pth_round_trip(tmp_path, source, x):
    from safetensors.torch import save_file

    model, state = source
    safetensors_path, pth_path = tmp_path / "mine.safetensors", tmp_path / "mine.pth"
    save_file(state, str(safetensors_path))
    torch.save(state, pth_path)
    expected = _features(model, x)
    random = _features(create_vit(NAME).eval(), x)
    assert not torch.allclose(expected, random)  # loading must be what makes the outputs equal

    for path in (safetensors_path, pth_path):
        loaded = load_vit(NAME, path)
        assert loaded is not model and not loaded.training
        torch.testing.assert_close(_features(loaded, x), expected, rtol=0, atol=0)
        assert load_vit(NAME, path) is loaded  # reused for the same file


def test_model_cache_key_is_the_weights_identity(tmp_path, source):
    """The same weights under two paths are one model when keyed by their sha256; different keys differ."""
    _, state = source
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(state, a)
    torch.save(state, b)
    assert load_vit(NAME, a, weights_key="sha-1") is load_vit(NAME, b, weights_key="sha-1")
    assert load_vit(NAME, a) is not load_vit(NAME, b)
    assert load_vit(NAME, a) is not load_vit(NAME, None)


def test_dino_teacher_checkpoint_loads_the_teacher_backbone(tmp_path, source, x):
    """Original DINO checkpoints: {"student": {"module.backbone.*"}, "teacher": {"backbone.*", "head.*"}, ...}."""
    model, state = source
    checkpoint = {
        "student": {f"module.backbone.{k}": torch.zeros_like(v) for k, v in state.items()},
        "teacher": {**{f"backbone.{k}": v for k, v in state.items()},
                    "head.mlp.0.weight": torch.randn(32, 64), "head.last_layer.weight_g": torch.ones(1, 256)},
        "epoch": 100,
    }
    path = tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth"
    torch.save(checkpoint, path)

    loaded = load_vit(NAME, path)

    torch.testing.assert_close(_features(loaded, x), _features(model, x), rtol=0, atol=0)


def test_weights_of_another_architecture_do_not_fit(tmp_path):
    """test_vit3 (96 dims, 9 blocks, 1 register) is a sibling architecture: its weights must not load here."""
    from safetensors.torch import save_file

    other = create_vit("test_vit3")
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))

    with pytest.raises(CheckpointError, match="do not fit") as info:
        load_vit(NAME, path)
    message = str(info.value)
    assert NAME in message and "other.safetensors" in message
    assert "\n" not in message
    assert load_vit(NAME, None) is not None  # a failed load leaves nothing broken behind


def test_weights_of_another_depth_do_not_fit(tmp_path, source):
    _, state = source
    shallow = {k: v for k, v in state.items() if not k.startswith(("blocks.4.", "blocks.5."))}
    path = tmp_path / "shallow.pth"
    torch.save(shallow, path)
    with pytest.raises(CheckpointError, match=r"do not fit.*missing.*blocks\.[45]\."):
        load_vit(NAME, path)


class _Evil:
    """Unpickling this would create a directory: a stand-in for arbitrary code in a .pth."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_objects_are_refused(tmp_path, source):
    _, state = source
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({**state, "payload": _Evil(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="evil.pth: cannot read weights"):
        load_vit(NAME, evil)
    assert not marker.exists()

    function = tmp_path / "function.pth"
    torch.save({"state_dict": state, "hook": _features}, function)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_vit(NAME, function)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_garbage_file_is_a_checkpoint_error(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x00\x01 this is not a checkpoint " * 10)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_vit(NAME, path)


def test_missing_and_empty_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError):
        load_vit(NAME, tmp_path / "nowhere.safetensors")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_vit(NAME, empty)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3), torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_vit(NAME, path)


def test_unknown_model_name_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="no_such_vit_xyz"):
        load_vit("no_such_vit_xyz", None)


def test_register_model_round_trip(tmp_path, x):
    """test_vit2 has a register token: it must load back too (reg_token is part of the weights)."""
    from safetensors.torch import save_file

    torch.manual_seed(7)
    model = create_vit("test_vit2").eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    assert vit_spec(model).num_registers == 1
    path = tmp_path / "reg.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_vit("test_vit2", path)
    torch.testing.assert_close(_features(loaded, x), _features(model, x), rtol=0, atol=0)
