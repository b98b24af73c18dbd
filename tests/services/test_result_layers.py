"""A backend that returns every typed layer: through the disk cache, the store and the mask exports; and one
key shared by the cache, the store and ``protolens segment``."""

from __future__ import annotations

import numpy as np
from PIL import Image

from protolens.core.cache import DiskCache
from protolens.core.labels import Project
from protolens.core.store import ResultStore
from protolens.services.annotations import export_masks
from protolens.services.batch import segment_paths
from protolens.services.results import FoundResult, find_result
from protolens.services.segment import Segmenter, cache_key, drain, load_image


def test_every_layer_through_cache_store_and_export(registry, photo_folder, tmp_path):
    image = load_image(photo_folder / "a_meadow.jpg")
    computed = drain(Segmenter(registry, disk_cache=DiskCache(tmp_path / "c")).run(image, "test-layers"))
    assert computed.kind == "segmentation"
    cached = drain(Segmenter(registry, disk_cache=DiskCache(tmp_path / "c")).run(image, "test-layers"))
    assert cached.from_cache
    a, b = computed.result, cached.result
    assert list(b.heatmaps) == ["class 1", "class 2"]
    np.testing.assert_array_equal(a.label_map.ids, b.label_map.ids)
    np.testing.assert_array_equal(a.regions.masks, b.regions.masks)
    np.testing.assert_array_equal(a.keypoints.pairs, b.keypoints.pairs)
    assert a.scores_table.rows() == b.scores_table.rows()

    store = ResultStore()
    FoundResult.from_outcome(cached).save(store, image.meta)
    stored = store.load_result(image.meta.path, cached.key)
    assert stored.record.kind == "segmentation"
    np.testing.assert_array_equal(stored.layers.label_map.ids, a.label_map.ids)
    assert stored.layers.keypoints.groups == ["query", "query", "prototype-0"]

    # The label map feeds the mask exports: its classes are matched to the project's by name.
    project = Project()
    out = tmp_path / "export"
    summary = export_masks([image.meta.path], ["png"], out, store=store, project=project)
    assert summary.exported == 1
    exported = np.asarray(Image.open(out / "a_meadow.labels.png"))
    expected = stored.layers.label_map.full_resolution()
    for index, name in enumerate(stored.layers.label_map.classes[1:], start=1):
        assert (exported[expected == index] == project.labels.by_name(name).id).all()
    assert (exported[expected == 0] == 0).all()


def test_cache_store_and_cli_share_one_key(registry, photo_folder, tmp_path):
    segmenter = Segmenter(registry, disk_cache=DiskCache(tmp_path / "c"))
    image = load_image(photo_folder / "a_meadow.jpg")
    store = ResultStore()
    segment_paths([image.meta.path], "test-gradient", {"steps": 3}, segmenter=segmenter, store=store)
    key, _cached = segmenter.lookup_keyed(image, "test-gradient", {"steps": 3})
    assert [e.key for e in store.list_results(image.meta.path)] == [key]
    assert segmenter.disk_cache.get(cache_key(image.meta.sha256, key)) is not None
    found = find_result(Segmenter(registry, disk_cache=None), store, image, "test-gradient", {"steps": 3})
    assert found.source == "store" and found.key == key
    # Other parameters of the same backend: not shown as if they were these (no stale result).
    assert find_result(Segmenter(registry, disk_cache=None), store, image, "test-gradient", {"steps": 4},
                       any_backend=False) is None


def test_segment_out_writes_the_layers_beside_the_mask(registry, photo_folder, tmp_path):
    """`protolens segment --out DIR` also writes a result's layers: the label map as <stem>.labels.png (class ids
    at the photo size, names in the JSON) and every layer file the store keeps, readable with the layer readers."""
    import json

    from protolens.core.layers import ResultLayers
    from protolens.services.batch import save_outcome

    image = load_image(photo_folder / "a_meadow.jpg")
    outcome = drain(Segmenter(registry, disk_cache=None).run(image, "test-layers"))
    out = tmp_path / "out"
    paths = save_outcome(outcome, None, out_dir=out, store=ResultStore())
    names = {p.name for p in paths}
    assert {"a_meadow.mask.png", "a_meadow.heatmap.npy", "a_meadow.json", "a_meadow.labels.png",
            "a_meadow.labelmap.npy", "a_meadow.heatmaps.npz", "a_meadow.regions.npz",
            "a_meadow.keypoints.npz"} <= names
    document = json.loads((out / "a_meadow.json").read_text())
    label_map = outcome.result.label_map
    assert document["label_map"]["classes"] == label_map.classes
    ids = np.asarray(Image.open(out / "a_meadow.labels.png"))
    assert ids.shape == (image.meta.height, image.meta.width)
    np.testing.assert_array_equal(ids, label_map.full_resolution())
    layers = ResultLayers.from_files(document["layers"], lambda name: (out / name).read_bytes(),
                                     (image.meta.height, image.meta.width))
    np.testing.assert_array_equal(layers.regions.masks, outcome.result.regions.masks)
    assert list(layers.heatmaps) == list(outcome.result.heatmaps)
