"""Per-epoch checkpoint comparison (services/epochs.py) on a tiny 3-epoch run and the prototype-guided backend.

The run folder is what the trainer writes (core/runs.py): a random narrow ViT per epoch saved with safetensors,
epoch metadata with indicators computed on a random probe grid, a random-weights backbone (ViT-S/14 on 28-px
crops of a 6 x 4 crop grid), so every test stays fast on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from protolens.core.errors import CheckpointError, ParamError
from protolens.core.indicators import INDICATORS
from protolens.core.runs import RunFolder
from protolens.core.store import ResultStore
from protolens.services import epochs as ep
from protolens.services.segment import Segmenter, drain, load_image

BACKBONE = "vit_small_patch14_dinov2.lvd142m"
TOKEN_DIM = 384


def make_run(folder: Path, *, epochs: int = 3, grid: tuple[int, int] = (4, 6), crop: int = 32, crop_input: int = 28,
             prototypes: int = 5, depth: int = 2, heads: int = 4, seed: int = 0, chosen: int | None = None) -> RunFolder:
    """A run folder of ``epochs`` random narrow ViTs (one per epoch) with indicators, as the trainer writes it."""
    import torch
    from safetensors.torch import save_file

    from protolens.core.indicators import epoch_indicators
    from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig
    from protolens.services.pipeline import Tiling

    rows, cols = grid
    tiling = Tiling((cols * crop, rows * crop), crop, crop_input)
    config = NarrowViTConfig(grid=grid, prototypes=prototypes, token_dim=TOKEN_DIM, depth=depth, heads=heads)
    run = RunFolder(folder)
    torch.manual_seed(seed)
    prototype_file = folder / "prototypes.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prototypes": torch.randn(prototypes, TOKEN_DIM)}, str(prototype_file))
    run.write_config({"model": "prototype-vit", "train": {"epochs": epochs, "lr": 1e-4, "accumulation": 1},
                      "narrow_vit": config.to_json(), "tiling": tiling.to_json(),
                      "backbone": {"model": BACKBONE, "weights": None, "weights_sha256": "none"},
                      "prototypes": {"file": prototype_file.name, "sha256": "", "k": prototypes, "dim": TOKEN_DIM},
                      "quadrats": [], "probe": []})
    probe = torch.randn(1, rows * cols, TOKEN_DIM)
    previous = None
    for epoch in range(1, epochs + 1):
        model = NarrowViT(config).eval()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run.checkpoint_path(epoch)))
        received = model.received_attention(probe)[0].numpy().reshape(grid)
        loss = 1.0 / epoch
        indicators, previous = epoch_indicators([received], previous, 0.6, loss)
        run.write_epoch(epoch, {"loss": loss, "steps": 4 * epoch, "lr": 1e-4, "indicators": indicators,
                                "config": {"epochs": epochs}})
    if chosen is not None:
        run.choose(chosen)
    return run


@pytest.fixture
def tiny_run(tmp_path):
    return make_run(tmp_path / "run")


@pytest.fixture
def quadrat(tmp_path, samples):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "meadow.jpg")
    return load_image(folder / "meadow.jpg")


@pytest.fixture
def counted(registry, monkeypatch):
    """A segmenter without a disk cache whose backend runs are counted per checkpoint."""
    segmenter = Segmenter(registry, disk_cache=None, device="cpu")
    runs: list[str] = []
    real = segmenter.run

    def run(image, backend_id, params=None, **kwargs):
        runs.append(Path(kwargs["weights_path"]).name)
        return (yield from real(image, backend_id, params, **kwargs))

    monkeypatch.setattr(segmenter, "run", run)
    return segmenter, runs


def test_every_epoch_is_stored_under_its_own_key(counted, registry, tiny_run, quadrat):
    segmenter, runs = counted
    store = ResultStore()
    shown = drain(Segmenter(registry, disk_cache=None).run(quadrat, "vegetation-index", {"index": "exg"}))
    store.save_result(quadrat.meta, shown.record(), shown.result.heatmap)  # the photo's current result
    reports = []
    maps = drain(ep.epoch_results(segmenter, store, quadrat, tiny_run, allow_random_weights=True), reports.append)
    assert [m.epoch for m in maps] == [1, 2, 3]
    assert len({m.key for m in maps}) == 3
    assert runs == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    assert [r.fraction for r in reports] == sorted(r.fraction for r in reports) and reports[-1].fraction == 1.0
    assert any("epoch 2 (2/3)" in r.text for r in reports)
    entries = {e.key: e for e in store.list_results(quadrat.meta.path, sha256=quadrat.meta.sha256)}
    assert set(entries) == {m.key for m in maps} | {shown.key}
    assert entries[shown.key].current  # the comparison never changes the photo's current result
    for item in maps:
        record = entries[item.key].record
        assert record.backend_id == "prototype-guided" and record.params["classifier"] == ""
        assert record.weights_sha256 == item.record.sha256  # the checkpoint's hash is in the key
        assert item.score is not None and item.score.shape == (4, 6)
        assert np.isclose(item.heatmap.values.max(), 1.0, atol=1e-3) and item.heatmap.values.min() >= 0.0


def test_a_second_call_reruns_nothing(counted, registry, tiny_run, quadrat):
    segmenter, runs = counted
    store = ResultStore()
    first = drain(ep.epoch_results(segmenter, store, quadrat, tiny_run, allow_random_weights=True))
    assert len(runs) == 3
    again = drain(ep.epoch_results(segmenter, store, quadrat, tiny_run, allow_random_weights=True))
    assert len(runs) == 3 and [m.source for m in again] == ["cache"] * 3
    fresh = Segmenter(registry, disk_cache=None, device="cpu")  # a new process: only the store has them
    stored = drain(ep.epoch_results(fresh, store, quadrat, tiny_run, allow_random_weights=True))
    assert [m.source for m in stored] == ["store"] * 3
    assert [m.key for m in stored] == [m.key for m in first]
    for a, b in zip(first, stored, strict=True):
        np.testing.assert_array_equal(a.heatmap.values, b.heatmap.values)


def test_listed_epochs_only_and_missing_epochs_are_named(counted, tiny_run, quadrat):
    segmenter, runs = counted
    maps = drain(ep.epoch_results(segmenter, ResultStore(), quadrat, tiny_run, epochs=[3, 1, 3],
                                  allow_random_weights=True))
    assert [m.epoch for m in maps] == [1, 3] and runs == ["epoch_001.safetensors", "epoch_003.safetensors"]
    with pytest.raises(CheckpointError, match=r"epoch 7 \(epochs: 1, 2, 3\)"):
        drain(ep.epoch_results(segmenter, ResultStore(), quadrat, tiny_run, epochs=[7]))


def test_difference_of_an_epoch_with_itself_is_zero(counted, tiny_run, quadrat):
    segmenter, _ = counted
    maps = drain(ep.epoch_results(segmenter, ResultStore(), quadrat, tiny_run, allow_random_weights=True))
    assert np.count_nonzero(ep.difference(maps[1], maps[1])) == 0
    grid = ep.common_grid(maps)
    diff = ep.difference(maps[2], maps[0], grid)
    expected = np.clip(ep.epoch_pane(maps[2], grid).values - ep.epoch_pane(maps[0], grid).values, -1, 1)
    np.testing.assert_allclose(diff, expected, atol=1e-6)
    assert diff.shape == grid and np.abs(diff).max() > 0  # two random epochs attend differently


def test_indicator_table_reads_the_epoch_files(tiny_run):
    table = ep.indicator_table(tiny_run)
    assert list(table) == list(INDICATORS)
    assert table["loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [e for e, _ in table["entropy"]] == [1, 2, 3]
    assert np.isnan(table["iou_previous"][0][1]) and 0.0 <= table["iou_previous"][1][1] <= 1.0
    for epoch, value in table["border_share"]:
        assert value == pytest.approx(tiny_run.epoch(epoch).indicators["border_share"])


def test_compare_epochs_writes_the_figures_and_tables(counted, tiny_run, quadrat, tmp_path):
    segmenter, _ = counted
    tiny_run.choose(2)
    out = tmp_path / "out"
    result = drain(ep.compare_epochs(segmenter, ResultStore(), quadrat, tiny_run, out, params={"threshold": 0.5},
                                     allow_random_weights=True))
    names = sorted(p.name for p in result.files)
    assert names == sorted(["meadow.epoch_001.png", "meadow.epoch_002.png", "meadow.epoch_003.png",
                            "meadow.diff_002-001.png", "meadow.diff_003-002.png", "meadow.epochs.png",
                            "meadow.epochs.csv", "meadow.epochs.json"])
    assert all(p.is_file() for p in result.files)
    with open(out / "meadow.epochs.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:6] == ["epoch", "loss", "entropy", "border_share", "iou_previous", "chosen"]
    assert [r["chosen"] for r in rows] == ["0", "1", "0"] and rows[0]["iou_previous"] == ""
    assert float(rows[1]["loss"]) == pytest.approx(0.5) and rows[0]["photo_iou_previous"] == ""
    document = json.loads((out / "meadow.epochs.json").read_text(encoding="utf-8"))
    assert document["schema"] == "protolens.epochs/1" and document["chosen"] == 2
    assert [e["key"] for e in document["epochs"]] == [m.key for m in result.maps]
    assert [e["value_threshold"] for e in document["epochs"]] == [0.5] * 3
    assert [(a["a"], a["b"]) for a in document["agreement"]] == [(1, 2), (2, 3)]
    assert result.agreements[1].iou == pytest.approx(document["agreement"][0]["iou"])
    assert float(rows[1]["photo_iou_previous"]) == pytest.approx(result.agreements[1].iou, abs=1e-5)
    assert [(d["a"], d["b"]) for d in document["differences"]] == [(2, 1), (3, 2)]
    from PIL import Image

    with Image.open(out / "meadow.epoch_001.png") as tile, Image.open(out / "meadow.epochs.png") as grid:
        assert grid.width > tile.width and grid.height >= tile.height


def test_a_chosen_pair_gives_one_difference_and_bad_pairs_are_refused(counted, tiny_run, quadrat, tmp_path):
    segmenter, _ = counted
    result = drain(ep.compare_epochs(segmenter, ResultStore(), quadrat, tiny_run, tmp_path / "out", pair=(3, 3),
                                     allow_random_weights=True))
    diffs = [p.name for p in result.files if ".diff_" in p.name]
    assert diffs == ["meadow.diff_003-003.png"]
    document = json.loads((tmp_path / "out" / "meadow.epochs.json").read_text(encoding="utf-8"))
    assert document["differences"][0]["max_abs"] == 0.0
    with pytest.raises(ParamError, match="difference pair 1,2"):
        drain(ep.compare_epochs(segmenter, ResultStore(), quadrat, tiny_run, tmp_path / "o2", epochs=[1, 3],
                                pair=(1, 2), allow_random_weights=True))


def test_choose_epoch_writes_chosen_json(tiny_run):
    record = ep.choose_epoch(tiny_run.path, 2)
    assert record.epoch == 2 and tiny_run.chosen() == 2
    chosen = json.loads((tiny_run.path / "chosen.json").read_text(encoding="utf-8"))
    assert chosen["checkpoint"] == "epoch_002.safetensors" and chosen["sha256"] == record.sha256
    with pytest.raises(CheckpointError):
        ep.choose_epoch(tiny_run, 9)


def test_epoch_keys_reads_no_stored_arrays_and_cancel_stops_before_the_next_epoch(counted, tiny_run, quadrat,
                                                                                   monkeypatch):
    from protolens.core.errors import Cancelled
    from protolens.core.jobs import CancelToken

    segmenter, runs = counted
    store = ResultStore()
    maps = drain(ep.epoch_results(segmenter, store, quadrat, tiny_run, epochs=[1, 2], allow_random_weights=True))
    segmenter.memory.clear()

    def no_arrays(*args, **kwargs):
        raise AssertionError("epoch_keys read a stored result's arrays")

    monkeypatch.setattr(store, "load_result", no_arrays)
    keys = drain(ep.epoch_keys(segmenter, store, quadrat, tiny_run, epochs=[1, 2], allow_random_weights=True))
    assert keys == {1: maps[0].key, 2: maps[1].key} and len(runs) == 2  # both stored: nothing ran again
    token = CancelToken()

    def cancel_during_epoch_1(report):
        if report.text.startswith("epoch 1"):
            token.cancel()

    with pytest.raises(Cancelled):
        drain(ep.epoch_keys(segmenter, store, quadrat, tiny_run, epochs=[1, 3], cancel=token,
                            allow_random_weights=True), cancel_during_epoch_1)
    assert len(runs) == 2  # epoch 3 never started
