"""The loaded-model cache of vit/loading.py: bounded least-recently-used by count and bytes, per device."""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref

import pytest
import torch

from protolens.models.vit import loading
from protolens.models.vit.loading import (
    cached_models,
    create_vit,
    forget_models,
    load_vit,
    model_bytes,
    model_cache_limits,
)

NAME = "test_vit"  # a real (tiny) timm ViT: patch 16, 64 dims, 6 blocks, 2 heads


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch):
    monkeypatch.delenv("PROTOLENS_MAX_MODELS", raising=False)
    monkeypatch.delenv("PROTOLENS_MAX_MODEL_BYTES", raising=False)
    forget_models()
    yield
    monkeypatch.undo()
    forget_models()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Ten epochs of a run: ten tiny random test_vit checkpoints (safetensors), each with its own weights."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("run")
    paths = []
    for epoch in range(10):
        torch.manual_seed(epoch)
        model = create_vit(NAME)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        path = folder / f"epoch_{epoch:03d}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        paths.append(path)
    return paths


def _first_weight(model: torch.nn.Module) -> torch.Tensor:
    return model.patch_embed.proj.weight.detach().clone()


def test_switching_between_ten_checkpoints_holds_at_most_three(checkpoints):
    assert model_cache_limits() == (3, 4 * 1024**3)
    refs = []
    for path in checkpoints:
        refs.append(weakref.ref(load_vit(NAME, path)))
        assert len(cached_models()) <= 3
    assert len(cached_models()) == 3
    assert {key[1] for key in cached_models()} == {str(p.resolve()) for p in checkpoints[-3:]}

    gc.collect()
    assert [ref() is None for ref in refs] == [True] * 7 + [False] * 3  # evicted models are freed

    newest = refs[-1]()
    assert load_vit(NAME, checkpoints[-1]) is newest  # the most recent one is reused

    rebuilt = load_vit(NAME, checkpoints[0])  # an evicted one is rebuilt, with its own weights
    assert refs[0]() is None and rebuilt is not None
    torch.manual_seed(0)
    expected = create_vit(NAME)
    with torch.no_grad():
        for parameter in expected.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    torch.testing.assert_close(_first_weight(rebuilt), _first_weight(expected), rtol=0, atol=0)
    assert len(cached_models()) == 3


def test_a_reuse_refreshes_recency(checkpoints):
    first, second, third = (load_vit(NAME, p) for p in checkpoints[:3])
    assert load_vit(NAME, checkpoints[0]) is first  # now second is the least recently used
    load_vit(NAME, checkpoints[3])
    held = {key[1] for key in cached_models()}
    assert str(checkpoints[1].resolve()) not in held
    assert load_vit(NAME, checkpoints[0]) is first and load_vit(NAME, checkpoints[2]) is third
    del second


def test_weights_keys_are_distinct_models():
    models = [load_vit(NAME, None, weights_key=f"sha-{i}") for i in range(5)]
    assert len({id(m) for m in models}) == 5
    assert [key[1] for key in sorted(cached_models())] == ["sha-2", "sha-3", "sha-4"]
    assert load_vit(NAME, None, weights_key="sha-4") is models[4]
    assert load_vit(NAME, None, weights_key="sha-0") is not models[0]


def test_byte_cap_from_the_environment(monkeypatch):
    size = model_bytes(create_vit(NAME))
    assert size == sum(p.numel() * 4 for p in create_vit(NAME).parameters())  # float32, no buffers
    monkeypatch.setenv("PROTOLENS_MAX_MODEL_BYTES", str(int(2.5 * size)))
    monkeypatch.setenv("PROTOLENS_MAX_MODELS", "10")
    forget_models()  # re-reads the limits
    for i in range(5):
        load_vit(NAME, None, weights_key=f"k{i}")
        assert len(cached_models()) <= 2
    assert sorted(key[1] for key in cached_models()) == ["k3", "k4"]


def test_model_larger_than_the_byte_cap_is_kept_alone(monkeypatch):
    monkeypatch.setenv("PROTOLENS_MAX_MODEL_BYTES", "1")
    forget_models()
    a = load_vit(NAME, None, weights_key="a")
    assert load_vit(NAME, None, weights_key="a") is a  # the newest is always kept
    load_vit(NAME, None, weights_key="b")
    assert [key[1] for key in cached_models()] == ["b"]


def test_count_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv("PROTOLENS_MAX_MODELS", "1")
    forget_models()
    load_vit(NAME, None, weights_key="a")
    b = load_vit(NAME, None, weights_key="b")
    assert [key[1] for key in cached_models()] == ["b"]
    assert load_vit(NAME, None, weights_key="b") is b


@pytest.mark.parametrize(("models", "size", "expected"), [
    ("5", "8GiB", (5, 8 * 1024**3)),
    ("0", "500MB", (1, 500 * 1000**2)),
    (" 2 ", "1.5 GiB", (2, int(1.5 * 1024**3))),
    ("many", "lots", (3, 4 * 1024**3)),  # invalid: the defaults
    ("", "", (3, 4 * 1024**3)),
])
def test_limits_from_the_environment(monkeypatch, models, size, expected):
    monkeypatch.setenv("PROTOLENS_MAX_MODELS", models)
    monkeypatch.setenv("PROTOLENS_MAX_MODEL_BYTES", size)
    assert model_cache_limits() == expected


def test_each_device_has_its_own_budget():
    """A model per device is what the device pool needs: the CPU fallback must not evict the GPU's models."""
    for i in range(4):
        load_vit(NAME, None, "cpu", weights_key=f"k{i}")
        load_vit(NAME, None, "meta", weights_key=f"k{i}")  # a second device without a GPU
    keys = cached_models()
    assert sorted(k for k in keys if k[2] == "cpu") == [(NAME, f"k{i}", "cpu") for i in (1, 2, 3)]
    assert sorted(k for k in keys if k[2] == "meta") == [(NAME, f"k{i}", "meta") for i in (1, 2, 3)]


def test_evicting_a_cuda_model_empties_the_cuda_cache(monkeypatch):
    """Without a GPU: pretend every evicted model was on cuda:0 and record the calls."""
    calls = []
    monkeypatch.setattr(loading, "_cuda_devices",
                        lambda models: {torch.device("cuda", 0)} if models else set())
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext(calls.append(("on", device))))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))
    for i in range(3):
        load_vit(NAME, None, weights_key=f"k{i}")
    assert calls == []  # nothing evicted yet
    load_vit(NAME, None, weights_key="k3")
    assert calls == [("on", torch.device("cuda", 0)), "empty"]
    calls.clear()
    forget_models()
    assert calls == [("on", torch.device("cuda", 0)), "empty"]


def test_evicted_model_memory_is_released_before_the_cuda_cache_is_emptied(monkeypatch):
    """empty_cache can only return blocks nobody holds: the evicted model must be gone by then."""
    seen = []
    first = weakref.ref(load_vit(NAME, None, weights_key="k0"))
    monkeypatch.setattr(loading, "_cuda_devices", lambda models: {torch.device("cuda", 0)} if models else set())
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: seen.append(first() is None))
    for i in range(1, 4):
        load_vit(NAME, None, weights_key=f"k{i}")
    assert seen == [True]


def test_threads_loading_one_model_get_one_object():
    barrier = threading.Barrier(3)
    results = []

    def load() -> None:
        barrier.wait()
        results.append(load_vit(NAME, None, weights_key="shared"))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(r is results[0] for r in results)
    assert load_vit(NAME, None, weights_key="shared") is results[0]


@pytest.mark.gpu
def test_evicting_cuda_models_returns_their_memory():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    forget_models()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_reserved()
    size = model_bytes(create_vit("vit_small_patch16_224"))
    for i in range(10):
        load_vit("vit_small_patch16_224", None, "cuda", weights_key=f"k{i}")
        assert torch.cuda.memory_allocated() <= 3 * size + 64 * 1024**2
    assert len(cached_models()) == 3
    forget_models()
    assert torch.cuda.memory_allocated() <= 1024**2
    assert torch.cuda.memory_reserved() <= base + 64 * 1024**2
