"""The generic training loop: per-update schedule, accumulation, checkpoints, resume and cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protolens.core.errors import Cancelled, CheckpointError, ParamError
from protolens.core.jobs import CancelToken
from protolens.core.runs import RunFolder
from protolens.core.schedule import warmup_cosine_lr
from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig
from protolens.models.training import (
    Schedule,
    TrainConfig,
    epoch_order,
    load_checkpoint,
    load_optimizer,
    make_optimizer,
    save_optimizer,
    train,
)
from protolens.services.segment import drain

ARCH = NarrowViTConfig(grid=(2, 3), prototypes=3, token_dim=16, depth=1, heads=2)
RUN_CONFIG = {"model": "test", "narrow_vit": ARCH.to_json()}


def make_model(seed: int = 0, arch: NarrowViTConfig = ARCH) -> NarrowViT:
    torch.manual_seed(seed)
    return NarrowViT(arch)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(1)
    samples = [torch.randn(1, 6, 16, generator=generator) for _ in range(7)]
    target = torch.randn(1, 3, 16, generator=generator)

    def loss_fn(model, sample, device):
        return F.mse_loss(model(sample.to(device)), target.to(device))

    return samples, loss_fn


def run_training(model, samples, loss_fn, config, path, **kwargs):
    kwargs.setdefault("run_config", RUN_CONFIG)
    return drain(train(model, samples, loss_fn, config, RunFolder(path), **kwargs))


def step_lines(path):
    records, _ = RunFolder(path).read_metrics()
    return [(r["epoch"], r["step"], r["loss"], r["lr"]) for r in records if r["type"] == "step"]


def test_training_loss_decreases_over_three_epochs(data, tmp_path):
    samples, loss_fn = data
    config = TrainConfig(epochs=3, lr=3e-3, accumulation=2, warmup_steps=0)
    summary = run_training(make_model(), samples, loss_fn, config, tmp_path / "run")
    losses = [r.loss for r in RunFolder(tmp_path / "run").epochs()]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]
    assert summary.epoch == 3 and summary.trained == (1, 2, 3) and summary.resumed_from == 0
    assert summary.loss == losses[2] and summary.checkpoint.name == "epoch_003.safetensors"


def test_lr_at_every_optimizer_update_is_the_warmup_cosine_formula(data, tmp_path):
    samples, loss_fn = data  # 7 samples, accumulation 3 -> groups 3, 3, 1 -> 3 updates per epoch
    config = TrainConfig(epochs=3, lr=1e-3, min_lr=1e-5, accumulation=3, warmup_steps=2)
    run_training(make_model(), samples, loss_fn, config, tmp_path / "run")
    lines = step_lines(tmp_path / "run")
    assert [step for _, step, _, _ in lines] == list(range(1, 10))
    assert [epoch for epoch, _, _, _ in lines] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    for _, step, _, lr in lines:
        assert lr == warmup_cosine_lr(step - 1, base_lr=1e-3, total_steps=9, warmup_steps=2, min_lr=1e-5)
    assert lines[0][3] == pytest.approx(5e-4) and lines[1][3] == pytest.approx(1e-3)
    assert lines[-1][3] == pytest.approx(1e-5)
    stored = RunFolder(tmp_path / "run").config()
    assert stored["schedule"] == {"updates_per_epoch": 3, "total_steps": 9, "warmup_steps": 2}
    assert stored["train"] == config.to_json() and stored["model"] == "test"
    assert [r.steps for r in RunFolder(tmp_path / "run").epochs()] == [3, 6, 9]


def test_the_optimizer_uses_the_logged_lr_and_the_last_group_is_averaged_over_its_size(data, tmp_path):
    samples, loss_fn = data
    seen = []

    def spy(model, sample, device):
        seen.append(sample)
        return loss_fn(model, sample, device)

    config = TrainConfig(epochs=2, lr=1e-3, accumulation=3, warmup_steps=1, seed=4)
    model = make_model()
    run_training(model, samples, spy, config, tmp_path / "run")
    lines = step_lines(tmp_path / "run")
    orders = [np.random.default_rng([4, epoch]).permutation(7) for epoch in (1, 2)]  # seeded by (seed, epoch)
    assert not np.array_equal(*orders) and np.array_equal(epoch_order(7, 4, 2), orders[1])
    assert all(a is samples[i] for a, i in zip(seen, np.concatenate(orders), strict=True))
    expected = sum(float(loss_fn(make_model(), samples[i], "cpu").detach()) for i in orders[0][:3]) / 3
    assert lines[0][2] == pytest.approx(expected, rel=1e-6)  # first update: untouched initial weights
    assert lines[-1][3] == pytest.approx(1e-6)  # the last update of the run reaches min_lr
    # a plain re-derivation of the loop: LR per update, each loss / its group's size (3, 3, then 1)
    reference = make_model()
    optimizer = make_optimizer(reference, config)
    schedule = Schedule.resolve(config, 7)
    groups = [order[i:i + 3] for order in orders for i in range(0, 7, 3)]
    for step, group in enumerate(groups):
        for param_group in optimizer.param_groups:
            param_group["lr"] = schedule.lr(step, config)
        for i in group:
            (loss_fn(reference, samples[i], "cpu") / len(group)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert [len(g) for g in groups] == [3, 3, 1, 3, 3, 1] and schedule.total_steps == 6
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_default_warmup_is_one_epoch_at_most_a_tenth_of_all_updates():
    assert Schedule.resolve(TrainConfig(epochs=20, accumulation=8), 80).warmup_steps == 10
    assert Schedule.resolve(TrainConfig(epochs=5, accumulation=8), 80).warmup_steps == 5
    assert Schedule.resolve(TrainConfig(epochs=3, accumulation=1), 3).warmup_steps == 0
    assert Schedule.resolve(TrainConfig(epochs=2, warmup_steps=50, accumulation=1), 3).warmup_steps == 6


def test_checkpoints_round_trip_bit_exactly(data, tmp_path):
    samples, loss_fn = data
    model = make_model()
    run_training(model, samples, loss_fn, TrainConfig(epochs=1, lr=1e-3, accumulation=2), tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    fresh = load_checkpoint(run.checkpoint_path(1), make_model(seed=9))
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    # the optimizer state of the file, loaded into a new optimizer, saved again and reloaded: identical
    optimizer = load_optimizer(run.optimizer_path(1), make_optimizer(fresh, TrainConfig(epochs=1)))
    save_optimizer(tmp_path / "again.safetensors", optimizer)
    again = load_optimizer(tmp_path / "again.safetensors", make_optimizer(make_model(3), TrainConfig(epochs=1)))
    first, second = optimizer.state_dict(), again.state_dict()
    assert first["param_groups"] == second["param_groups"]
    assert first["param_groups"][0]["betas"] == (0.9, 0.999) and first["param_groups"][1]["weight_decay"] == 0.0
    assert set(first["state"]) == set(second["state"]) == set(range(len(list(model.parameters()))))
    for index, entry in first["state"].items():
        assert set(entry) == {"step", "exp_avg", "exp_avg_sq"}
        for name, value in entry.items():
            assert torch.equal(second["state"][index][name], value), (index, name)
    assert float(first["state"][0]["step"]) == 4  # ceil(7 / 2) updates


def test_checkpoint_errors_name_the_file(data, tmp_path):
    samples, loss_fn = data
    run_training(make_model(), samples, loss_fn, TrainConfig(epochs=1, accumulation=4), tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    other = make_model(arch=NarrowViTConfig(grid=(2, 3), prototypes=4, token_dim=16, depth=1, heads=2))
    with pytest.raises(CheckpointError, match=r"epoch_001\.safetensors.*shape: mix\.weight"):
        load_checkpoint(run.checkpoint_path(1), other)
    with pytest.raises(CheckpointError, match=r"epoch_001\.optim\.safetensors.*does not fit"):
        load_optimizer(run.optimizer_path(1), make_optimizer(other, TrainConfig(epochs=1)))
    with pytest.raises(CheckpointError, match="epoch_007.safetensors: checkpoint file is missing"):
        load_checkpoint(run.checkpoint_path(7), make_model())
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="junk.safetensors: unreadable"):
        load_checkpoint(tmp_path / "junk.safetensors", make_model())


def cancelling(loss_fn, after_calls: int, token: CancelToken):
    calls = [0]

    def wrapped(model, sample, device):
        calls[0] += 1
        if calls[0] > after_calls:
            token.cancel()
        return loss_fn(model, sample, device)

    return wrapped


def test_cancel_keeps_the_last_epoch_and_resume_matches_an_uninterrupted_run(data, tmp_path):
    samples, loss_fn = data
    config = TrainConfig(epochs=3, lr=2e-3, accumulation=3, warmup_steps=1)
    whole = make_model()
    run_training(whole, samples, loss_fn, config, tmp_path / "whole", evaluate=lambda m, e: {"probe": e * 1.0})

    token = CancelToken()
    with pytest.raises(Cancelled):  # cancelled on the third micro-batch of epoch 3
        run_training(make_model(), samples, cancelling(loss_fn, 2 * 7 + 2, token), config, tmp_path / "parts",
                     cancel=token, evaluate=lambda m, e: {"probe": e * 1.0})
    parts = RunFolder(tmp_path / "parts")
    assert [r.epoch for r in parts.epochs()] == [1, 2]
    assert not parts.checkpoint_path(3).exists() and not parts.meta_path(0).exists()
    assert len(step_lines(tmp_path / "parts")) == 6 + 1  # the partial epoch logged one update before the cancel

    resumed = make_model(seed=5)  # other initial weights: the checkpoint must replace them
    summary = run_training(resumed, samples, loss_fn, config, tmp_path / "parts",
                           evaluate=lambda m, e: {"probe": e * 1.0})
    assert summary.resumed_from == 2 and summary.trained == (3,) and summary.steps == 9
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert [(r.epoch, r.steps) for r in parts.epochs()] == [(1, 3), (2, 6), (3, 9)]
    assert step_lines(tmp_path / "parts") == step_lines(tmp_path / "whole")
    record = parts.epoch(3)
    assert record.indicators == {"probe": 3.0, "loss": record.loss}
    assert json.loads(parts.meta_path(3).read_text())["config"] == config.to_json()
    epochs_logged = [r["epoch"] for r in parts.read_metrics()[0] if r["type"] == "epoch"]
    assert epochs_logged == [1, 2, 3]


def test_a_finished_run_returns_at_once_and_more_epochs_stretch_the_cosine(data, tmp_path):
    samples, loss_fn = data
    config = TrainConfig(epochs=2, lr=1e-3, accumulation=4, warmup_steps=1)
    run_training(make_model(), samples, loss_fn, config, tmp_path / "run")
    again = run_training(make_model(), samples, loss_fn, config, tmp_path / "run")
    assert again.trained == () and again.epoch == 2 and again.steps == 4
    with pytest.raises(CheckpointError, match="epochs may only grow"):
        run_training(make_model(), samples, loss_fn, TrainConfig(epochs=1, lr=1e-3, accumulation=4,
                                                                  warmup_steps=1), tmp_path / "run")
    longer = TrainConfig(epochs=4, lr=1e-3, accumulation=4, warmup_steps=1)
    summary = run_training(make_model(), samples, loss_fn, longer, tmp_path / "run")
    assert summary.trained == (3, 4) and summary.steps == 8
    lines = step_lines(tmp_path / "run")
    for _, step, _, lr in lines[:4]:
        assert lr == warmup_cosine_lr(step - 1, base_lr=1e-3, total_steps=4, warmup_steps=1, min_lr=1e-6)
    for _, step, _, lr in lines[4:]:
        assert lr == warmup_cosine_lr(step - 1, base_lr=1e-3, total_steps=8, warmup_steps=1, min_lr=1e-6)
    stored = RunFolder(tmp_path / "run").config()
    assert stored["train"]["epochs"] == 4 and stored["schedule"]["total_steps"] == 8


def test_resume_refuses_another_model_data_or_settings(data, tmp_path):
    samples, loss_fn = data
    config = TrainConfig(epochs=1, accumulation=4)
    run_training(make_model(), samples, loss_fn, config, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"another narrow_vit \(run: .*now: "):
        run_training(make_model(), samples, loss_fn, TrainConfig(epochs=2, accumulation=4), tmp_path / "run",
                     run_config={**RUN_CONFIG, "narrow_vit": {**ARCH.to_json(), "depth": 2}})
    with pytest.raises(CheckpointError, match=r"other training settings: lr \(run: 0.0001, now: 0.001\)"):
        run_training(make_model(), samples, loss_fn, TrainConfig(epochs=2, lr=1e-3, accumulation=4), tmp_path / "run")
    with pytest.raises(CheckpointError, match="expected 1 x 1 for 3 samples"):
        run_training(make_model(), samples[:3], loss_fn, TrainConfig(epochs=2, accumulation=4), tmp_path / "run")


def test_bad_settings_are_param_errors(data, tmp_path):
    samples, loss_fn = data
    for bad in ({"epochs": 0}, {"epochs": 1, "accumulation": 0}, {"epochs": 1, "precision": "float16"},
                {"epochs": 1, "min_lr": 1.0}):
        with pytest.raises(ParamError):
            TrainConfig(**bad)
    with pytest.raises(ParamError, match="no samples"):
        run_training(make_model(), [], loss_fn, TrainConfig(epochs=1), tmp_path / "run")
    assert TrainConfig(epochs=1).compute_dtype("cuda:0") == "bfloat16"
    assert TrainConfig(epochs=1).compute_dtype("cpu") == "float32"
    assert TrainConfig.from_json({**TrainConfig(epochs=2).to_json(), "future": 1}) == TrainConfig(epochs=2)
