"""Every result of a photo kept apart: identity, listing, current, deletion, typed layers, /1 -> /2 migration,
and two processes saving into the same sidecar at once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from protolens.core import store as store_module
from protolens.core.annotation import load_annotation
from protolens.core.hashing import sha256_file
from protolens.core.layers import Keypoints, LabelMap, Regions, ScoresTable
from protolens.core.store import SIDECAR_SCHEMA, ImageMeta, ResultRecord, ResultStore, result_key
from protolens.core.types import Heatmap, ResultLayers

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "sidecar_v1"
SIZE = (24, 32)


@pytest.fixture(autouse=True)
def _no_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_fallback_root", lambda: tmp_path / "fallback-store")


@pytest.fixture()
def meta(tmp_path: Path) -> ImageMeta:
    photo = tmp_path / "photo.png"
    shutil.copy(FIXTURE_V1 / "photo.png", photo)
    return ImageMeta(photo, sha256_file(photo), *SIZE)


def _record(weights_sha: str = "none", **params) -> ResultRecord:
    return ResultRecord("vit-attention", "2.0.0", {"mode": "cls", **params}, 0.5, weights_id="ckpt",
                        weights_sha256=weights_sha)


def _heatmap(seed: int) -> Heatmap:
    return Heatmap(np.random.default_rng(seed).random((6, 8)).astype(np.float32), SIZE)


def test_key_is_backend_version_weights_and_params():
    base = result_key("b", "1", "none", {"x": 1, "y": 2})
    assert base == result_key("b", "1", "none", {"y": 2, "x": 1})  # order of parameters does not matter
    others = {result_key("c", "1", "none", {"x": 1, "y": 2}), result_key("b", "2", "none", {"x": 1, "y": 2}),
              result_key("b", "1", "ab" * 32, {"x": 1, "y": 2}), result_key("b", "1", "none", {"x": 2, "y": 2})}
    assert base not in others and len(others) == 4
    record = _record()
    assert record.key == result_key("vit-attention", "2.0.0", "none", {"mode": "cls"})
    record.threshold = 0.9  # a threshold is not part of the identity
    assert record.key == _record().key


def test_two_checkpoints_and_two_parameter_sets_coexist(meta):
    store = ResultStore()
    records = [_record("a" * 64), _record("b" * 64), _record("b" * 64, block=3)]
    for seed, record in enumerate(records):
        store.save_result(meta, record, _heatmap(seed))
    listed = store.list_results(meta.path)
    assert [e.key for e in listed] == [r.key for r in records]
    assert [e.current for e in listed] == [False, False, True]
    for seed, record in enumerate(records):
        loaded = store.load_result(meta.path, record.key)
        np.testing.assert_array_equal(loaded.heatmap.values, _heatmap(seed).values)
        assert loaded.record.weights_sha256 == record.weights_sha256
    line = listed[0].line()
    assert line.startswith(records[0].key) and "vit-attention@2.0.0" in line and "ckpt@aaaaaaaaaaaa" in line


def test_mark_current_and_delete(meta):
    store = ResultStore()
    first, second = _record("a" * 64), _record("b" * 64)
    store.save_result(meta, first, _heatmap(0))
    store.save_result(meta, second, _heatmap(1))
    store.set_current(meta, first.key)
    assert store.load_result(meta.path).key == first.key
    folder = meta.path.parent / ".protolens"
    assert (folder / f"photo.png.{first.key}.heatmap.npy").exists()
    store.delete_result(meta, first.key)
    assert [e.key for e in store.list_results(meta.path)] == [second.key]
    assert store.load_result(meta.path).key == second.key  # the remaining one became current
    assert not list(folder.glob(f"photo.png.{first.key}.*"))  # its files are gone
    with pytest.raises(KeyError):
        store.delete_result(meta, first.key)
    with pytest.raises(KeyError):
        store.set_current(meta, "0" * 16)


def test_backend_id_still_finds_its_newest_result(meta):
    store = ResultStore()
    store.save_result(meta, _record("a" * 64), _heatmap(0))
    other = ResultRecord("vegetation-index", "1.0.0", {"index": "exg"}, 0.4)
    store.save_result(meta, other, _heatmap(1))
    assert store.load_result(meta.path, "vit-attention").record.weights_sha256 == "a" * 64
    assert store.load_record(meta.path, "vegetation-index").key == other.key


def test_every_layer_round_trips(meta):
    rng = np.random.default_rng(3)
    layers = ResultLayers(
        heatmaps={"Trifolium repens": _heatmap(5), "block 3": _heatmap(6)},
        label_map=LabelMap(rng.integers(0, 3, (6, 8)), ["background", "clover", "moss"], SIZE),
        regions=Regions(rng.random((4, 6, 8)) > 0.5, ["a", "b", "", "d"], [0.9, 0.5, 1.0, 0.1], SIZE),
        keypoints=Keypoints([[1.5, 2.0], [30.0, 20.5], [3, 4]], ["head", "tail", ""], [0.9, 0.8, 0.1],
                            ["query", "query", "proto/a.jpg"], [[0, 2]], [0.77]),
        scores_table=ScoresTable(["Bellis perennis", "Trifolium repens"], [0.2, 0.7], "probability"))
    store = ResultStore()
    record = _record()
    record.kind = "explanation"
    store.save_result(meta, record, _heatmap(4), layers=layers)
    loaded = store.load_result(meta.path, record.key)
    got = loaded.layers
    assert loaded.record.kind == "explanation"
    assert list(got.heatmaps) == ["Trifolium repens", "block 3"]
    np.testing.assert_array_equal(got.heatmaps["block 3"].values, _heatmap(6).values)
    np.testing.assert_array_equal(got.label_map.ids, layers.label_map.ids)
    assert got.label_map.ids.dtype == np.int32 and got.label_map.classes == ["background", "clover", "moss"]
    assert got.label_map.full_resolution().shape == SIZE
    np.testing.assert_array_equal(got.regions.masks, layers.regions.masks)
    assert got.regions.labels == ["a", "b", "", "d"] and got.regions.mask(0).shape == SIZE
    np.testing.assert_allclose(got.keypoints.xy, [[1.5, 2.0], [30.0, 20.5], [3, 4]])
    assert got.keypoints.groups == ["query", "query", "proto/a.jpg"] and got.keypoints.pairs.tolist() == [[0, 2]]
    assert list(got.keypoints.in_group("query")) == [0, 1]
    assert got.scores_table.rows() == [("Trifolium repens", pytest.approx(0.7)), ("Bellis perennis",
                                                                                   pytest.approx(0.2))]
    assert store.list_results(meta.path)[0].layers == (
        "2 heatmaps, label map (3 classes), 4 regions, 3 keypoints, 2 scores")


def test_layers_reject_inconsistent_shapes():
    with pytest.raises(ValueError):
        LabelMap(np.full((2, 2), 5), ["background"], (4, 4))
    with pytest.raises(ValueError):
        Keypoints([[0, 0]], ["a"], [1.0], pairs=[[0, 3]], pair_scores=[1.0])
    with pytest.raises(ValueError):
        Regions(np.zeros((2, 3, 3), bool), ["a"], [1.0], (3, 3))


def test_v1_sidecar_is_read_and_migrated_on_the_next_write(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(FIXTURE_V1, folder)
    photo = folder / "photo.png"
    meta = ImageMeta(photo, sha256_file(photo), *SIZE)
    store = ResultStore()
    on_disk = json.loads((folder / ".protolens" / "photo.png.json").read_text())
    assert on_disk["schema"] == "protolens.sidecar/1"

    listed = store.list_results(photo, sha256=meta.sha256)
    assert {e.record.backend_id for e in listed} == {"vegetation-index", "vit-attention"}
    vit = next(e for e in listed if e.record.backend_id == "vit-attention")
    assert vit.current and vit.key == vit.record.key
    loaded = store.load_result(photo, vit.key)
    np.testing.assert_array_equal(loaded.heatmap.values, np.eye(6, 8, dtype=np.float32))
    assert loaded.record.threshold_semantics == "mass" and loaded.score is not None
    assert load_annotation(store, meta) is not None  # the edited mask is kept

    new = _record("c" * 64)
    store.save_result(meta, new, _heatmap(9))
    on_disk = json.loads((folder / ".protolens" / "photo.png.json").read_text())
    assert on_disk["schema"] == SIDECAR_SCHEMA == "protolens.sidecar/2"
    assert set(on_disk["results"]) == {e.key for e in listed} | {new.key}
    assert on_disk["current"] == new.key and "annotation" in on_disk
    old = store.load_result(photo, vit.key)  # old arrays keep their /1 file names
    np.testing.assert_array_equal(old.heatmap.values, np.eye(6, 8, dtype=np.float32))


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from protolens.core.store import ImageMeta, ResultRecord, ResultStore
    from protolens.core.types import Heatmap
    photo, sha, tag = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    meta = ImageMeta(photo, sha, 24, 32)
    store = ResultStore()
    for i in range(50):
        record = ResultRecord("writer-" + tag, "1", {"i": i}, 0.5)
        store.save_result(meta, record, Heatmap(np.full((6, 8), i / 50, np.float32), (24, 32)))
""")


def test_two_processes_saving_the_same_photo_lose_nothing(meta):
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(meta.path), meta.sha256, tag])
             for tag in ("a", "b")]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    listed = ResultStore().list_results(meta.path)
    assert len(listed) == 100
    assert {(e.record.backend_id, e.record.params["i"]) for e in listed} == {
        (f"writer-{t}", i) for t in "ab" for i in range(50)}
    for entry in listed[::17]:
        loaded = ResultStore().load_result(meta.path, entry.key)
        assert float(loaded.heatmap.values[0, 0]) == pytest.approx(entry.record.params["i"] / 50)
