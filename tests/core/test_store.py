"""The per-photo result store (sidecar + arrays) and the export trio, with provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protolens.core import store as store_module
from protolens.core.errors import SidecarError, StoreWriteError
from protolens.core.hashing import sha256_file
from protolens.core.store import (
    RESULT_SCHEMA,
    SIDECAR_SCHEMA,
    STORE_DIRNAME,
    ImageMeta,
    ResultRecord,
    ResultStore,
    export_result,
)
from protolens.core.types import Heatmap

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
ROBIN = SAMPLES / "birds" / "robin.jpg"  # 380 x 254


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    path = folder / "robin.jpg"
    shutil.copy(ROBIN, path)
    return path


@pytest.fixture()
def meta(photo: Path) -> ImageMeta:
    return ImageMeta(photo, sha256_file(photo), 254, 380)


@pytest.fixture(autouse=True)
def _no_user_data_dir(tmp_path, monkeypatch):
    """Keep the fallback store inside tmp_path, never in the real user data folder."""
    monkeypatch.setattr(store_module, "_fallback_root", lambda: tmp_path / "fallback-store")


def _grid_heatmap(rows: int = 23, cols: int = 37, seed: int = 0) -> Heatmap:
    values = np.random.default_rng(seed).random((rows, cols)).astype(np.float32)
    return Heatmap(values, (254, 380))


def _record(backend: str = "vit-attention", threshold: float = 0.5, **kwargs) -> ResultRecord:
    defaults = dict(backend_version="1.2.0", params={"long_side": 518, "head_fusion": "mean"},
                    weights_id="facebook/dinov2-small", weights_sha256="ab" * 32)
    defaults.update(kwargs)
    return ResultRecord(backend_id=backend, threshold=threshold, **defaults)


# --------------------------------------------------------------------------- ResultRecord


def test_record_json_round_trip():
    record = _record(threshold=0.123456789, threshold_semantics="mass", info={"grid": [23, 37]})
    data = record.to_json()
    assert data["backend"] == {"id": "vit-attention", "version": "1.2.0"}
    assert data["weights"] == {"id": "facebook/dinov2-small", "sha256": "ab" * 32}
    assert data["threshold"]["semantics"] == "mass"
    assert data["threshold"]["value"] == pytest.approx(0.123456789, abs=1e-6)
    assert data["created"].endswith("Z") and "T" in data["created"]
    back = ResultRecord.from_json(json.loads(json.dumps(data)))
    assert back.backend_id == "vit-attention" and back.params == record.params
    assert back.threshold == pytest.approx(0.123456789, abs=1e-6) and back.threshold_semantics == "mass"
    assert back.info == {"grid": [23, 37]} and back.created == record.created


def test_record_defaults_for_backends_without_weights():
    data = ResultRecord("vegetation-index", "0.1", {}, 0.4).to_json()
    assert data["weights"] == {"id": "none", "sha256": "none"}
    assert data["threshold"]["semantics"] == "value"


# --------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(photo, meta):
    store = ResultStore()
    heatmap = _grid_heatmap()
    sidecar = store.save_result(meta, _record(), heatmap)
    assert sidecar == photo.parent / STORE_DIRNAME / "robin.jpg.json"
    assert store.sidecar_path(photo) == sidecar

    loaded = store.load_result(photo)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.heatmap.values, heatmap.values)  # native resolution, exact
    assert loaded.heatmap.values.shape == (23, 37)
    assert loaded.heatmap.image_size == (254, 380)
    assert loaded.mask is not None and loaded.mask.dtype == bool and loaded.mask.shape == (254, 380)
    np.testing.assert_array_equal(loaded.mask, heatmap.full_resolution() >= 0.5)
    assert loaded.record.backend_id == "vit-attention" and loaded.record.backend_version == "1.2.0"
    assert loaded.record.params == {"long_side": 518, "head_fusion": "mean"}
    assert loaded.record.threshold == 0.5
    assert loaded.record.weights_sha256 == "ab" * 32


def test_files_and_sidecar_schema(photo, meta):
    store = ResultStore()
    store.save_result(meta, _record(), _grid_heatmap())
    folder = photo.parent / STORE_DIRNAME
    key = _record().key
    assert len(key) == 16
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        f"robin.jpg.{key}.heatmap.npy", f"robin.jpg.{key}.mask.png", "robin.jpg.json"]
    data = json.loads((folder / "robin.jpg.json").read_text(encoding="utf-8"))
    assert data["schema"] == SIDECAR_SCHEMA == "protolens.sidecar/2"
    assert data["image"] == {"path": "robin.jpg", "sha256": meta.sha256, "height": 254, "width": 380}
    assert data["current"] == key
    entry = data["results"][key]
    assert entry["key"] == key and entry["kind"] == "heatmap"
    assert entry["heatmap"] == {"file": f"robin.jpg.{key}.heatmap.npy", "shape": [23, 37],
                                "resolution": "native", "interpolation": "linear"}
    assert entry["mask"] == {"file": f"robin.jpg.{key}.mask.png"}
    assert entry["threshold"] == {"value": 0.5, "semantics": "value", "heatmap_threshold": 0.5}
    stored = np.load(folder / f"robin.jpg.{key}.heatmap.npy")
    assert stored.dtype == np.float32 and stored.shape == (23, 37)
    with Image.open(folder / f"robin.jpg.{key}.mask.png") as mask:
        assert mask.size == (380, 254)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert not list(folder.glob("*.tmp"))  # atomic writes leave no temporaries


def test_explicit_mask_is_stored(photo, meta):
    store = ResultStore()
    mask = np.zeros((254, 380), bool)
    mask[10:20, 30:60] = True
    store.save_result(meta, _record(), _grid_heatmap(), mask)
    np.testing.assert_array_equal(store.load_result(photo).mask, mask)


def test_two_backends_are_kept_and_current_is_the_last(photo, meta):
    store = ResultStore()
    vit = _grid_heatmap(seed=1)
    veg = Heatmap(np.random.default_rng(2).random((254, 380)).astype(np.float32), (254, 380))
    store.save_result(meta, _record("vit-attention", 0.3), vit)
    store.save_result(meta, _record("vegetation-index", 0.6, weights_id="none", weights_sha256="none"), veg)

    vit_key = _record("vit-attention", 0.3).key
    veg_key = _record("vegetation-index", 0.6, weights_id="none", weights_sha256="none").key
    data = store.read_sidecar(photo)
    assert set(data["results"]) == {vit_key, veg_key}
    assert data["current"] == veg_key
    current = store.load_result(photo)
    assert current.record.backend_id == "vegetation-index"
    np.testing.assert_array_equal(current.heatmap.values, veg.values)
    older = store.load_result(photo, "vit-attention")
    np.testing.assert_array_equal(older.heatmap.values, vit.values)
    np.testing.assert_array_equal(older.mask, vit.full_resolution() >= 0.3)
    assert store.load_record(photo, "vit-attention").threshold == 0.3

    # Saving the first backend again makes it current and keeps the other.
    store.save_result(meta, _record("vit-attention", 0.4), vit)
    data = store.read_sidecar(photo)
    assert data["current"] == vit_key and set(data["results"]) == {vit_key, veg_key}


def test_results_are_keyed_by_image_content(photo, meta):
    store = ResultStore()
    store.save_result(meta, _record(), _grid_heatmap())
    assert store.load_result(photo, sha256=meta.sha256) is not None
    assert store.load_result(photo, sha256="0" * 64) is None
    assert store.load_record(photo, sha256="0" * 64) is None
    assert store.load_record(photo, sha256=meta.sha256).backend_id == "vit-attention"


def test_new_image_content_drops_old_results(photo, meta):
    store = ResultStore()
    store.save_result(meta, _record("vit-attention"), _grid_heatmap())
    edited = ImageMeta(photo, "f" * 64, 254, 380)
    store.save_result(edited, _record("vegetation-index"), _grid_heatmap(seed=3))
    data = store.read_sidecar(photo)
    assert data["image"]["sha256"] == "f" * 64
    assert set(data["results"]) == {_record("vegetation-index").key}
    assert store.load_result(photo, "vit-attention") is None
    assert store.load_result(photo, sha256=meta.sha256) is None


def test_other_tools_sections_are_kept(photo, meta):
    store = ResultStore()
    sidecar = store.save_result(meta, _record(), _grid_heatmap())
    data = json.loads(sidecar.read_text())
    data["labels"] = {"species": ["Bellis perennis"]}
    sidecar.write_text(json.dumps(data))
    store.save_result(meta, _record("other"), _grid_heatmap(seed=4))
    assert store.read_sidecar(photo)["labels"] == {"species": ["Bellis perennis"]}


def test_absent_results(photo, tmp_path):
    store = ResultStore()
    assert store.sidecar_path(photo) is None
    assert store.read_sidecar(photo) is None
    assert store.load_result(photo) is None
    assert store.load_record(photo) is None


def test_unknown_backend_and_missing_arrays_count_as_absent(photo, meta):
    store = ResultStore()
    store.save_result(meta, _record(), _grid_heatmap())
    assert store.load_result(photo, "no-such-backend") is None
    (photo.parent / STORE_DIRNAME / f"robin.jpg.{_record().key}.heatmap.npy").unlink()
    assert store.load_result(photo) is None


def test_missing_mask_file_loads_heatmap_only(photo, meta):
    store = ResultStore()
    store.save_result(meta, _record(), _grid_heatmap())
    (photo.parent / STORE_DIRNAME / f"robin.jpg.{_record().key}.mask.png").unlink()
    loaded = store.load_result(photo)
    assert loaded is not None and loaded.mask is None


def test_file_names_use_the_key_not_the_backend_id(photo, meta):
    store = ResultStore()
    store.save_result(meta, _record("acme/vit:large"), _grid_heatmap())
    names = {p.name for p in (photo.parent / STORE_DIRNAME).iterdir()}
    assert f"robin.jpg.{_record('acme/vit:large').key}.heatmap.npy" in names
    assert store.load_result(photo, "acme/vit:large") is not None


# --------------------------------------------------------------------------- corrupt sidecars


def _corrupt(photo: Path, meta: ImageMeta, text: str) -> Path:
    store = ResultStore()
    sidecar = store.save_result(meta, _record(), _grid_heatmap())
    sidecar.write_text(text, encoding="utf-8")
    return sidecar


@pytest.mark.parametrize("text", ['{"schema": "protolens.sidecar/1", "results": {', "not json at all",
                                  '{"schema": "something.else/9"}', "[1, 2, 3]"])
def test_corrupt_sidecar_is_moved_aside(photo, meta, text):
    sidecar = _corrupt(photo, meta, text)
    store = ResultStore()
    with pytest.raises(SidecarError) as info:
        store.read_sidecar(photo)
    assert str(sidecar) in str(info.value)
    assert not sidecar.exists()
    aside = list(sidecar.parent.glob("robin.jpg.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].name in str(info.value)
    assert aside[0].read_text(encoding="utf-8") == text  # content preserved
    # Afterwards the photo simply has no result, and a new one can be saved.
    assert store.read_sidecar(photo) is None
    store.save_result(meta, _record(), _grid_heatmap())
    assert store.load_result(photo) is not None
    assert aside[0].read_text(encoding="utf-8") == text


def test_undecodable_sidecar_is_moved_aside(photo, meta):
    sidecar = ResultStore().save_result(meta, _record(), _grid_heatmap())
    sidecar.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SidecarError):
        ResultStore().load_result(photo)
    assert [p.read_bytes() for p in sidecar.parent.glob("*.corrupt-*")] == [b"\xff\xfe\x00garbage"]


def test_save_over_corrupt_sidecar_raises_and_keeps_it(photo, meta):
    sidecar = _corrupt(photo, meta, "{{{")
    with pytest.raises(SidecarError):
        ResultStore().save_result(meta, _record(), _grid_heatmap())
    assert [p.read_text() for p in sidecar.parent.glob("*.corrupt-*")] == ["{{{"]


def test_corrupt_copies_are_never_overwritten(photo, meta, monkeypatch):
    # Two corruptions within the same second must not replace the first copy with the second.
    monkeypatch.setattr(store_module, "utc_now", lambda: "2025-01-01T00:00:00Z")
    store = ResultStore()
    for text in ("first corrupt", "second corrupt"):
        sidecar = _corrupt(photo, meta, text)
        with pytest.raises(SidecarError):
            store.read_sidecar(photo)
    kept = sorted(p.read_text() for p in sidecar.parent.glob("robin.jpg.json.corrupt-*"))
    assert kept == ["first corrupt", "second corrupt"]


# --------------------------------------------------------------------------- central layout


def test_central_store_layout(photo, meta, tmp_path):
    root = tmp_path / "central"
    store = ResultStore(root=root)
    sidecar = store.save_result(meta, _record(), _grid_heatmap())
    assert not (photo.parent / STORE_DIRNAME).exists()  # nothing next to the photo
    assert sidecar.parent.parent == root
    assert sidecar.parent.name.startswith("photos-")
    assert sidecar.name == "robin.jpg.json"
    assert store.folders(photo) == [sidecar.parent]
    assert store.load_result(photo) is not None
    assert ResultStore().load_result(photo) is None  # the next-to-photo store does not see it


def test_central_store_separates_folders_with_the_same_name(tmp_path, meta):
    store = ResultStore(root=tmp_path / "central")
    a = tmp_path / "a" / "photos" / "robin.jpg"
    b = tmp_path / "b" / "photos" / "robin.jpg"
    for path in (a, b):
        path.parent.mkdir(parents=True)
        shutil.copy(ROBIN, path)
    store.save_result(ImageMeta(a, meta.sha256, 254, 380), _record("one"), _grid_heatmap())
    store.save_result(ImageMeta(b, meta.sha256, 254, 380), _record("two"), _grid_heatmap())
    assert store.folders(a) != store.folders(b)
    assert store.load_result(a).record.backend_id == "one"
    assert store.load_result(b).record.backend_id == "two"


def test_store_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOLENS_STORE", str(tmp_path / "env-store"))
    assert ResultStore.from_environment().root == tmp_path / "env-store"
    monkeypatch.delenv("PROTOLENS_STORE")
    assert ResultStore.from_environment().root is None


def test_unwritable_photo_folder_falls_back(photo, meta, tmp_path, monkeypatch):
    # A file where the .protolens folder should be makes the next-to-photo store unwritable.
    (photo.parent / STORE_DIRNAME).write_text("in the way")
    store = ResultStore()
    sidecar = store.save_result(meta, _record(), _grid_heatmap())
    assert sidecar.is_relative_to(tmp_path / "fallback-store")
    assert store.load_result(photo) is not None


def test_unwritable_everywhere_raises_store_write_error(photo, meta, tmp_path):
    root = tmp_path / "central-is-a-file"
    root.write_text("x")
    with pytest.raises(StoreWriteError):
        ResultStore(root=root).save_result(meta, _record(), _grid_heatmap())


# --------------------------------------------------------------------------- export


def test_export_writes_the_trio_with_provenance(tmp_path, meta):
    out = tmp_path / "out"
    heatmap = _grid_heatmap()
    record = _record(threshold=0.55, threshold_semantics="value", info={"grid": [23, 37]})
    paths = export_result(out, meta, record, heatmap)
    assert paths == [out / "robin.mask.png", out / "robin.heatmap.npy", out / "robin.json"]

    with Image.open(paths[0]) as image:
        assert image.size == (380, 254) and image.mode == "L"
        mask = np.asarray(image)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    full = heatmap.full_resolution()
    np.testing.assert_array_equal(mask == 255, full >= 0.55)

    values = np.load(paths[1], allow_pickle=False)
    assert values.dtype == np.float32 and values.shape == (254, 380)
    assert values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_array_equal(values, full)

    doc = json.loads(paths[2].read_text(encoding="utf-8"))
    assert doc["schema"] == RESULT_SCHEMA
    assert doc["image"] == {"path": str(meta.path.resolve()), "sha256": meta.sha256, "height": 254, "width": 380}
    assert doc["backend"] == {"id": "vit-attention", "version": "1.2.0"}
    assert doc["weights"] == {"id": "facebook/dinov2-small", "sha256": "ab" * 32}
    assert doc["params"] == {"long_side": 518, "head_fusion": "mean"}
    assert doc["threshold"] == {"value": 0.55, "semantics": "value", "heatmap_threshold": 0.55}
    assert doc["created"] == record.created and doc["exported"].endswith("Z")
    assert doc["mask"]["file"] == "robin.mask.png" and doc["heatmap"]["file"] == "robin.heatmap.npy"
    assert doc["heatmap"]["shape"] == [254, 380]
    assert not list(out.glob(".*.tmp"))


def test_export_upsamples_patch_grid_to_photo_size(tmp_path):
    # One hot patch in a 23 x 37 grid over a 1600 x 2560 photo: after upsampling the peak lies inside it.
    values = np.zeros((23, 37), np.float32)
    values[5, 30] = 1.0
    meta = ImageMeta(tmp_path / "quadrat.jpg", "c" * 64, 1600, 2560)
    paths = export_result(tmp_path / "out", meta, _record(threshold=0.5), Heatmap(values, (1600, 2560)))
    full = np.load(paths[1])
    assert full.shape == (1600, 2560) and full.dtype == np.float32
    row, col = np.unravel_index(np.argmax(full), full.shape)
    cell_h, cell_w = 1600 / 23, 2560 / 37
    assert 5 * cell_h <= row < 6 * cell_h and 30 * cell_w <= col < 31 * cell_w
    assert full.max() == pytest.approx(1.0, abs=0.02)
    # Far from the hot patch the map stays zero, and the mask is a blob around the patch.
    assert full[:, :1000].max() == 0.0
    mask = np.asarray(Image.open(paths[0])) == 255
    rows, cols = np.nonzero(mask)
    assert mask.any()
    assert rows.min() >= 4 * cell_h and rows.max() < 7 * cell_h
    assert cols.min() >= 29 * cell_w and cols.max() < 32 * cell_w


def test_export_with_explicit_mask_and_existing_folder(tmp_path, meta):
    out = tmp_path / "out"
    out.mkdir()
    mask = np.zeros((254, 380), bool)
    mask[:, :100] = True
    paths = export_result(out, meta, _record(), _grid_heatmap(), mask)
    np.testing.assert_array_equal(np.asarray(Image.open(paths[0])) == 255, mask)


def test_export_overwrites_previous_export(tmp_path, meta):
    out = tmp_path / "out"
    export_result(out, meta, _record(threshold=0.9), _grid_heatmap())
    paths = export_result(out, meta, _record(threshold=0.1), _grid_heatmap())
    assert json.loads(paths[2].read_text())["threshold"]["value"] == 0.1
    assert sorted(p.name for p in out.iterdir()) == ["robin.heatmap.npy", "robin.json", "robin.mask.png"]


def test_export_into_a_file_raises(tmp_path, meta):
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    with pytest.raises(StoreWriteError, match="not a folder"):
        export_result(target, meta, _record(), _grid_heatmap())
    assert target.read_text() == "x"


# --------------------------------------------------------------------------- Heatmap and hashing


def test_heatmap_validates_and_normalises():
    heatmap = Heatmap(np.ones((3, 4), np.float64), (30.0, 40.0))
    assert heatmap.values.dtype == np.float32 and heatmap.image_size == (30, 40)
    with pytest.raises(ValueError, match="2-D"):
        Heatmap(np.ones((3, 4, 1)), (30, 40))


def test_heatmap_shrink_is_area_average_and_enlarge_stays_in_range():
    values = np.zeros((4, 4), np.float32)
    values[:2, :2] = 1.0
    heatmap = Heatmap(values, (2, 2))
    np.testing.assert_allclose(heatmap.full_resolution(), [[1.0, 0.0], [0.0, 0.0]])
    big = Heatmap(np.random.default_rng(0).random((5, 7)).astype(np.float32), (50, 70)).full_resolution()
    assert big.shape == (50, 70) and big.min() >= 0.0 and big.max() <= 1.0
    # Block means of the upsampled map track the native cells.
    assert np.abs(big.reshape(5, 10, 7, 10).mean(axis=(1, 3)) - Heatmap(big, (50, 70)).resized(5, 7)).max() < 1e-5


def test_heatmap_display_bounds_the_longer_side():
    native = Heatmap(np.zeros((23, 37), np.float32), (1600, 2560))
    assert native.display(1280) is native.values  # small maps are drawn as they are
    full = Heatmap(np.zeros((1600, 2560), np.float32), (1600, 2560))
    assert full.display(1280).shape == (800, 1280)


def test_sha256_file_and_json(tmp_path):
    import hashlib

    from protolens.core.hashing import sha256_json

    assert sha256_file(ROBIN) == hashlib.sha256(ROBIN.read_bytes()).hexdigest()
    assert sha256_json({"b": 1, "a": [1, 2]}) == sha256_json({"a": [1, 2], "b": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


def test_a_block_heatmap_keeps_its_nearest_interpolation(meta, photo):
    """Crop scores (prototype guidance) are stored at the crop grid and enlarged as whole blocks, mask included."""
    values = np.array([[0.2, 0.9], [0.7, 0.1]], np.float32)
    heatmap = Heatmap(values, (254, 380), "nearest")
    full = heatmap.full_resolution()
    assert set(np.unique(full).tolist()) == set(values.ravel().tolist())  # no blending at block edges
    ResultStore().save_result(meta, _record(threshold=0.5), heatmap)
    loaded = ResultStore().load_result(photo)
    assert loaded.heatmap.interpolation == "nearest" and loaded.heatmap.values.shape == (2, 2)
    np.testing.assert_array_equal(loaded.mask, full >= 0.5)
    with pytest.raises(ValueError):
        Heatmap(values, (254, 380), "cubic")
