"""The checkpoint comparison (services/epochs.py) for every run kind: ldvc and patch-selector runs compared by
stub backends (tests/fixtures/plugins/test_run_kinds), unknown kinds and missing backends refused clearly.

The run folders are written with core.runs.RunFolder as the trainers write them; the checkpoints are tiny
dummy tensors (the stubs only hash them), the indicators hand-picked numbers.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from protolens.core.errors import BackendUnavailableError, CheckpointError
from protolens.core.runs import RunFolder
from protolens.core.store import ResultStore
from protolens.services import epochs as ep
from protolens.services.segment import Segmenter, drain, load_image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
KIND_PLUGINS = FIXTURES / "test_run_kinds"
LDVC_INDICATORS = {"miou": [0.2, 0.5, 0.6], "miou_seen": [0.3, 0.7, 0.8], "miou_unseen": [0.1, 0.3, 0.4],
                   "hiou": [0.15, 0.42, 0.533], "pixel_accuracy": [0.5, 0.8, 0.9]}
PATCH_INDICATORS = {"agreement_iou": [0.4, 0.75, 0.7]}


def make_kind_run(folder: Path, model: str, indicators: dict[str, list[float]], *, epochs: int = 3,
                  chosen: int | None = None, log_loss: bool = False) -> RunFolder:
    """A run folder of kind ``model``: config.json, ``epochs`` dummy checkpoints (distinct bytes) and epoch
    metadata whose indicators are ``indicators[name][epoch - 1]`` (loss 1/epoch, in the indicators too when
    ``log_loss``)."""
    from safetensors.numpy import save_file

    run = RunFolder(folder)
    run.write_config({"model": model, "train": {"epochs": epochs}})
    for epoch in range(1, epochs + 1):
        save_file({"w": np.full((2, 2), epoch, np.float32)}, str(run.checkpoint_path(epoch)))
        values = {name: series[epoch - 1] for name, series in indicators.items()}
        if log_loss:
            values["loss"] = 1.0 / epoch
        run.write_epoch(epoch, {"loss": 1.0 / epoch, "steps": 2 * epoch, "indicators": values})
    if chosen is not None:
        run.choose(chosen)
    return run


def stub_runs(module: str) -> list[str]:
    """The RUNS list of a stub backend (cleared)."""
    runs = sys.modules[f"protolens_plugins.{module}.backend"].RUNS
    runs.clear()
    return runs


@pytest.fixture
def kinds_registry():
    from protolens.models.registry import Registry

    registry = Registry.discover([KIND_PLUGINS, FIXTURES], entry_points=False)
    registry.create("ldvc")
    registry.create("patch-selection")
    return registry


@pytest.fixture
def segmenter(kinds_registry):
    return Segmenter(kinds_registry, disk_cache=None, device="cpu")


@pytest.fixture
def photo(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "leaf.png")
    return load_image(folder / "leaf.png")


def test_run_kinds_table_and_inputs():
    assert set(ep.RUN_KINDS) == {"prototype-vit", "ldvc", "patch-selector"}
    proto, ldvc, patch = (ep.RUN_KINDS[k] for k in ("prototype-vit", "ldvc", "patch-selector"))
    assert (proto.backend, ldvc.backend, patch.backend) == ("prototype-guided", "ldvc", "patch-selection")
    assert proto.indicators == ("loss", "entropy", "border_share", "iou_previous")
    assert ldvc.columns == ("epoch", "loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy", "chosen")
    checkpoint = Path("/runs/a/epoch_002.safetensors")
    assert proto.run_inputs(checkpoint, {"classifier": "x", "threshold": 0.4}) == (
        {"classifier": "", "threshold": 0.4}, checkpoint)
    params, weights = patch.run_inputs(checkpoint, {"threshold": 0.5, "batch_size": 2, "keep": 30},
                                       known=["keep", "selector"])
    assert weights is None and params == {"keep": 30, "selector": str(checkpoint)}  # no threshold, batch_size


def test_run_kind_reads_config_and_refuses_unknown_kinds(tmp_path):
    assert ep.run_kind(make_kind_run(tmp_path / "l", "ldvc", LDVC_INDICATORS)).backend == "ldvc"
    legacy = RunFolder(tmp_path / "legacy")
    legacy.write_config({"train": {}})  # before run kinds: a prototype-vit run
    assert ep.run_kind(legacy).model == "prototype-vit"
    odd = make_kind_run(tmp_path / "odd", "diffusion", {})
    with pytest.raises(CheckpointError, match=r"kind 'diffusion'.*known kinds: prototype-vit, ldvc, patch-selector"):
        ep.run_kind(odd)
    with pytest.raises(CheckpointError, match="kind 'diffusion'"):
        ep.indicator_table(odd)


def test_indicator_table_lists_the_kinds_indicators(tmp_path):
    ldvc = ep.indicator_table(make_kind_run(tmp_path / "l", "ldvc", LDVC_INDICATORS))
    assert list(ldvc) == ["loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy"]
    assert ldvc["loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]  # from the epoch's mean loss
    assert ldvc["hiou"] == [(1, 0.15), (2, 0.42), (3, 0.533)]
    patch = ep.indicator_table(make_kind_run(tmp_path / "p", "patch-selector", {"agreement_iou": [0.4, None, 0.7]},
                                             log_loss=True))
    assert list(patch) == ["loss", "agreement_iou"]
    assert patch["agreement_iou"][0] == (1, 0.4) and np.isnan(patch["agreement_iou"][1][1])


def test_ldvc_epochs_run_the_ldvc_backend_with_each_checkpoint(segmenter, photo, tmp_path):
    run = make_kind_run(tmp_path / "run", "ldvc", LDVC_INDICATORS)
    runs = stub_runs("stub_ldvc")
    store = ResultStore()
    keys = drain(ep.epoch_keys(segmenter, store, photo, run))
    assert list(keys) == [1, 2, 3] and len(set(keys.values())) == 3
    assert runs == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    entries = {e.key: e for e in store.list_results(photo.meta.path, sha256=photo.meta.sha256)}
    assert set(entries) == set(keys.values())
    for epoch, key in keys.items():
        record = entries[key].record
        assert record.backend_id == "ldvc" and record.weights_sha256 == run.epoch(epoch).sha256
    maps = drain(ep.epoch_results(segmenter, store, photo, run, epochs=[2]))
    assert len(runs) == 3 and maps[0].source == "cache"  # nothing reruns
    assert maps[0].found.layers.label_map.classes == ["background", "cat", "dog"]


def test_patch_selector_epochs_pass_the_checkpoint_as_selector(segmenter, photo, tmp_path):
    run = make_kind_run(tmp_path / "run", "patch-selector", PATCH_INDICATORS)
    runs = stub_runs("stub_patch_selection")
    store = ResultStore()
    maps = drain(ep.epoch_results(segmenter, store, photo, run, params={"threshold": 0.5, "keep": 10}))
    assert runs == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    for item in maps:
        record = item.found.record
        assert record.backend_id == "patch-selection" and "threshold" not in record.params
        assert record.params == {"keep": 10, "selector": str(item.record.checkpoint)}
        assert item.found.layers.regions.labels == ["kept", "dropped"]
        assert int(item.found.layers.regions.masks[0].sum()) == 10
    assert len({m.key for m in maps}) == 3


def test_compare_epochs_lists_the_kinds_indicators(segmenter, photo, tmp_path):
    run = make_kind_run(tmp_path / "run", "ldvc", LDVC_INDICATORS, chosen=2)
    out = tmp_path / "out"
    result = drain(ep.compare_epochs(segmenter, ResultStore(), photo, run, out, params={"threshold": 0.5}))
    assert {"leaf.epoch_003.png", "leaf.diff_003-002.png", "leaf.epochs.csv"} <= {p.name for p in result.files}
    with open(out / "leaf.epochs.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy",
                             "chosen", "key", "photo_iou_previous", "photo_pearson_previous",
                             "photo_spearman_previous"]
    assert [float(r["miou_seen"]) for r in rows] == [0.3, 0.7, 0.8] and [r["chosen"] for r in rows] == ["0", "1", "0"]
    document = json.loads((out / "leaf.epochs.json").read_text(encoding="utf-8"))
    assert (document["kind"], document["backend"]) == ("ldvc", "ldvc")
    assert document["indicator_names"] == ["loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy"]
    assert document["indicators"]["pixel_accuracy"] == [[1, 0.5], [2, 0.8], [3, 0.9]]
    assert "entropy" not in document["indicators"] and "entropy" not in rows[0]


def test_a_kind_whose_backend_is_missing_is_refused_clearly(photo, tmp_path):
    from protolens.models.registry import Registry

    bare = Segmenter(Registry.discover([FIXTURES], entry_points=False), disk_cache=None)  # no ldvc here
    run = make_kind_run(tmp_path / "run", "ldvc", LDVC_INDICATORS)
    with pytest.raises(BackendUnavailableError, match="a ldvc run needs the 'ldvc' backend"):
        drain(ep.epoch_keys(bare, ResultStore(), photo, run))
    with pytest.raises(BackendUnavailableError, match="'ldvc' backend"):
        drain(ep.compare_epochs(bare, ResultStore(), photo, run, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError, match="kind 'diffusion'"):
        drain(ep.epoch_keys(bare, ResultStore(), photo, make_kind_run(tmp_path / "odd", "diffusion", {})))


def test_compare_epochs_cli_prints_the_kinds_indicators_and_refuses_unknown_kinds(monkeypatch, capsys, photo,
                                                                                  kinds_registry, tmp_path):
    from tests.cli.conftest import run_cli

    monkeypatch.setattr("protolens.cli.epochs.registry", lambda: kinds_registry)
    run = make_kind_run(tmp_path / "run", "patch-selector", PATCH_INDICATORS)
    code, stdout, stderr = run_cli(monkeypatch, capsys, "compare-epochs", photo.meta.path, "--run", run.path,
                                   "--out", tmp_path / "out", "--threshold", "0.5")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split("\t") == ["epoch", "loss", "agreement_iou", "photo_iou_prev", "photo_pearson_prev", "key"]
    assert lines[2].split("\t")[:3] == ["2", "0.5", "0.75"]
    odd = make_kind_run(tmp_path / "odd", "diffusion", {})
    code, _, stderr = run_cli(monkeypatch, capsys, "compare-epochs", photo.meta.path, "--run", odd.path,
                              "--out", tmp_path / "out2")
    assert code == 1 and "kind 'diffusion'" in stderr and not (tmp_path / "out2").exists()
