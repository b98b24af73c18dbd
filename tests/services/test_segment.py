"""Running backends through the services layer: caching, thresholds, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protolens.core.cache import DiskCache
from protolens.core.errors import BackendUnavailableError, Cancelled, ParamError
from protolens.core.jobs import CancelToken
from protolens.core.store import ResultStore
from protolens.services.batch import segment_paths
from protolens.services.results import find_result
from protolens.services.segment import Segmenter, drain, load_image


def test_second_run_comes_from_memory_cache(registry, gradient_runs, photo_folder, tmp_path):
    segmenter = Segmenter(registry, disk_cache=DiskCache(tmp_path / "cache"))
    image = load_image(photo_folder / "a_meadow.jpg")
    first = drain(segmenter.run(image, "test-gradient", {"steps": 3}))
    second = drain(segmenter.run(image, "test-gradient", {"steps": 3}))
    assert len(gradient_runs) == 1 and not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.result.heatmap.values, second.result.heatmap.values)
    drain(segmenter.run(image, "test-gradient", {"steps": 4}))  # other parameters: a new run
    assert len(gradient_runs) == 2


def test_disk_cache_survives_a_new_session(registry, gradient_runs, photo_folder, tmp_path):
    image = load_image(photo_folder / "a_meadow.jpg")
    drain(Segmenter(registry, disk_cache=DiskCache(tmp_path / "c")).run(image, "test-gradient"))
    fresh = Segmenter(registry, disk_cache=DiskCache(tmp_path / "c"))
    outcome = drain(fresh.run(image, "test-gradient"))
    assert outcome.from_cache and len(gradient_runs) == 1
    assert outcome.result.suggested_threshold == 0.5 and outcome.result.info["steps"] == 2
    assert fresh.lookup(image, "test-gradient") is not None
    assert fresh.lookup(image, "test-gradient", {"steps": 7}) is None


def test_thresholds_never_rerun_the_model(registry, gradient_runs, photo_folder, tmp_path):
    segmenter = Segmenter(registry, disk_cache=None)
    image = load_image(photo_folder / "a_meadow.jpg")
    outcome = drain(segmenter.run(image, "test-gradient"))
    masks = [outcome.result.heatmap.full_resolution() >= t for t in (0.2, 0.5, 0.8)]
    assert [m.mean() for m in masks] == sorted((m.mean() for m in masks), reverse=True)
    assert len(gradient_runs) == 1


def test_errors_before_running(registry, photo_folder):
    segmenter = Segmenter(registry, disk_cache=None)
    image = load_image(photo_folder / "a_meadow.jpg")
    with pytest.raises(ParamError, match="--steps"):
        drain(segmenter.run(image, "test-gradient", {"steps": 0}))
    with pytest.raises(BackendUnavailableError, match="known backends"):
        drain(segmenter.run(image, "no-such-backend"))
    with pytest.raises(BackendUnavailableError, match="not installed"):
        drain(segmenter.run(image, "test-broken"))
    assert not registry.entry("test-broken").available
    drain(segmenter.run(image, "vegetation-index"))  # the others keep working


def test_cancel_stops_a_running_job(registry, gradient_runs, photo_folder):
    segmenter = Segmenter(registry, disk_cache=None)
    image = load_image(photo_folder / "a_meadow.jpg")
    token = CancelToken()
    job = segmenter.run(image, "test-gradient", {"steps": 50}, cancel=token)
    next(job)
    token.cancel()
    with pytest.raises(Cancelled):
        drain(job)
    assert gradient_runs == []


def test_batch_continues_past_bad_files_and_writes_exports(registry, photo_folder, tmp_path):
    errors = []
    summary = segment_paths([photo_folder], "vegetation-index", segmenter=Segmenter(registry, disk_cache=None),
                            out_dir=tmp_path / "out", on_error=lambda p, m: errors.append((p.name, m)))
    assert summary.processed == 2 and [p.name for p, _ in summary.failed] == ["c_broken.jpg"]
    assert errors[0][0] == "c_broken.jpg" and "not a recognised image" in errors[0][1]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{stem}{ext}" for stem in ("a_meadow", "b_dahlia")
                           for ext in (".mask.png", ".heatmap.npy", ".json"))
    document = json.loads((tmp_path / "out" / "a_meadow.json").read_text())
    assert document["threshold"]["semantics"] == "value"
    assert document["backend"]["id"] == "vegetation-index" and document["weights"]["sha256"] == "none"


def test_batch_without_out_fills_the_result_store_the_gui_reads(registry, photo_folder):
    segmenter = Segmenter(registry, disk_cache=None)
    summary = segment_paths([photo_folder / "a_meadow.jpg"], "vegetation-index", segmenter=segmenter,
                            threshold=0.42)
    assert summary.processed == 1
    store = ResultStore()
    assert (photo_folder / ".protolens" / "a_meadow.jpg.json").is_file()
    image = load_image(photo_folder / "a_meadow.jpg")
    found = find_result(Segmenter(registry, disk_cache=None), store, image, "test-gradient", {})
    assert found.source == "store" and found.record.backend_id == "vegetation-index"
    assert found.record.threshold == pytest.approx(0.42)
    assert found.heatmap.image_size == (1024, 1280)


def test_find_result_prefers_the_users_saved_threshold(registry, photo_folder):
    segmenter = Segmenter(registry, disk_cache=None)
    image = load_image(photo_folder / "b_dahlia.jpg")
    outcome = drain(segmenter.run(image, "test-gradient"))
    store = ResultStore()
    store.save_result(image.meta, outcome.record(0.73), outcome.result.heatmap)
    found = find_result(segmenter, store, image, "test-gradient", {})
    assert found.source == "cache" and found.record.threshold == pytest.approx(0.73)
    assert found.suggested_threshold is None
