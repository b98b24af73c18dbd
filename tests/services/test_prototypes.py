"""Prototypes (arXiv 2512.19957 step 2): CLS embeddings of whole images, resumable shards, seeded K-Means."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from protolens.core.errors import Cancelled, CheckpointError, ParamError
from protolens.core.jobs import CancelToken
from protolens.models import embeddings as embeddings_module
from protolens.models import kmeans as kmeans_module
from protolens.models.embeddings import resize_centre_crop
from protolens.models.kmeans import adjusted_rand_index, cluster_purity, kmeans
from protolens.models.registry import Registry
from protolens.services.prototypes import (
    SCHEMA,
    build_prototypes,
    load_prototypes,
    provenance_path,
    save_prototypes,
    shards_path,
)
from protolens.services.segment import Segmenter, drain

MODEL = "vit_small_patch14_dinov2.lvd142m"
FAST = {"backbone": MODEL, "input_size": 56, "allow_random_weights": True, "batch_size": 4, "niter": 20, "nredo": 3}
LIBRARIES = ["sklearn", pytest.param("faiss", marks=pytest.mark.skipif(not kmeans_module.faiss_available(),
                                                                        reason="faiss not installed"))]


@pytest.fixture
def segmenter():
    return Segmenter(Registry.discover(), device="cpu", disk_cache=None)


@pytest.fixture
def classes_dir(tmp_path, samples):
    """images/birds (11 photos) and images/quadrats (4 photos): two class subfolders."""
    root = tmp_path / "images"
    for name in ("birds", "quadrats"):
        shutil.copytree(samples / name, root / name)
    return root


@pytest.fixture
def forwards(monkeypatch):
    """Images passed through the backbone, counted at the forward pass itself."""
    seen: list[int] = []
    real = embeddings_module.cls_embeddings

    def counting(model, batch):
        seen.append(int(batch.shape[0]))
        return real(model, batch)

    monkeypatch.setattr(embeddings_module, "cls_embeddings", counting)
    return seen


def test_resize_centre_crop_matches_the_reference_eval_transform(samples):
    from PIL import Image
    from torchvision import transforms

    reference = transforms.Compose([transforms.Resize(56, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(56)])
    for name in ("birds/magpie.png", "birds/rainbow-lorikeet.png", "quadrats/green_meadow.jpg"):
        image = np.asarray(Image.open(samples / name).convert("RGB"))
        ours = resize_centre_crop(image, 56)
        assert ours.shape == (56, 56, 3) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, np.asarray(reference(Image.fromarray(image))))


def test_cluster_purity_and_ari_on_a_constructed_case():
    assignment = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array(["a", "a", "b", "b", "b", "c"])
    # cluster 0: 2 of a, cluster 1: 2 of b, cluster 2: 1 of c -> 5 of 6
    assert cluster_purity(assignment, labels) == pytest.approx(5 / 6)
    renamed = np.array([7, 7, 3, 3, 9, 9])  # the same partition under other cluster numbers
    assert cluster_purity(renamed, np.array([1, 1, 2, 2, 3, 3])) == 1.0
    assert adjusted_rand_index(renamed, np.array(["x", "x", "y", "y", "z", "z"])) == pytest.approx(1.0)
    assert cluster_purity(np.zeros(4, int), np.array([0, 0, 1, 1])) == 0.5
    with pytest.raises(ValueError):
        cluster_purity(np.zeros(3, int), np.zeros(4, int))


@pytest.mark.parametrize("library", LIBRARIES)
def test_kmeans_is_seeded_and_refuses_more_clusters_than_points(library):
    x = np.random.default_rng(3).normal(size=(60, 8)).astype(np.float32)
    first, again = kmeans(x, 4, seed=1, library=library), kmeans(x, 4, seed=1, library=library)
    assert first.library == library and first.centroids.shape == (4, 8) and first.centroids.dtype == np.float32
    np.testing.assert_array_equal(first.centroids, again.centroids)
    np.testing.assert_array_equal(first.assignment, again.assignment)
    assert first.assignment.dtype == np.int64 and set(first.assignment.tolist()) == {0, 1, 2, 3}
    nearest = ((x[:, None] - first.centroids[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(first.assignment, nearest)
    assert first.inertia == pytest.approx(((x - first.centroids[first.assignment]) ** 2).sum(), rel=1e-4)
    with pytest.raises(ParamError, match="61 clusters but only 60"):
        kmeans(x, 61, library=library)


def test_an_explicit_faiss_without_faiss_is_an_error_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(kmeans_module, "faiss_available", lambda: False)
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(ParamError, match="faiss is not installed"):
        kmeans(x, 2, library="faiss")
    assert kmeans(x, 2, nredo=2, library="auto").library == "sklearn"
    with pytest.raises(ParamError, match="--kmeans"):
        kmeans(x, 2, library="scipy")


@pytest.mark.parametrize("library", LIBRARIES)
def test_prototypes_are_reproducible_with_a_seed(segmenter, classes_dir, tmp_path, library):
    first = drain(build_prototypes(segmenter, classes_dir, tmp_path / "a" / "p.safetensors", k=3, library=library,
                                   **FAST))
    second = drain(build_prototypes(segmenter, classes_dir, tmp_path / "b" / "p.safetensors", k=3, library=library,
                                    **FAST))
    assert first.embedded == second.embedded == 15  # embedded afresh both times
    (p1, prov1), (p2, prov2) = load_prototypes(first.out_file), load_prototypes(second.out_file)
    assert p1.shape == (3, 384) and p1.dtype == np.float32
    np.testing.assert_array_equal(p1, p2)
    assert prov1["library"] == library and prov1["inertia"] == prov2["inertia"]
    assert prov1["images_sha256"] == prov2["images_sha256"]
    assert (prov1["seed"], prov1["niter"], prov1["nredo"], prov1["k"], prov1["dim"]) == (0, 20, 3, 3, 384)


def test_provenance_and_class_scores(segmenter, classes_dir, tmp_path):
    out = tmp_path / "p.safetensors"
    summary = drain(build_prototypes(segmenter, classes_dir, out, k=2, **FAST))
    assert summary.classes == {"birds": 11, "quadrats": 4} and summary.n_images == 15
    assert 0.0 <= summary.purity <= 1.0 and -1.0 <= summary.ari <= 1.0
    provenance = json.loads(provenance_path(out).read_text())
    assert provenance["schema"] == SCHEMA and provenance["backbone"] == MODEL and provenance["input"] == 56
    assert provenance["weights"] == {"id": f"{MODEL}:random-init", "sha256": "none"}
    assert provenance["classes"] == {"birds": 11, "quadrats": 4}
    assert provenance["purity"] == summary.purity and provenance["adjusted_rand_index"] == summary.ari
    assert sum(provenance["cluster_sizes"]) == 15 and provenance["n_images"] == 15
    import hashlib

    assert provenance["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    flat = tmp_path / "flat"
    shutil.copytree(classes_dir / "birds", flat)
    plain = drain(build_prototypes(segmenter, flat, tmp_path / "flat.safetensors", k=2, **FAST))
    assert plain.classes is None and plain.purity is None and plain.ari is None
    assert "purity" not in json.loads(provenance_path(tmp_path / "flat.safetensors").read_text())


def test_resume_skips_done_shards(segmenter, classes_dir, tmp_path, samples, forwards):
    out = tmp_path / "p.safetensors"
    first = drain(build_prototypes(segmenter, classes_dir, out, k=3, shard_size=4, **FAST))
    assert sum(forwards) == 15 and first.embedded == 15 and first.reused == 0
    assert len(list(shards_path(out).glob("shard_*.npz"))) == 4
    prototypes = load_prototypes(out)[0]
    forwards.clear()
    second = drain(build_prototypes(segmenter, classes_dir, out, k=3, shard_size=4, **FAST))
    assert forwards == [] and (second.embedded, second.reused) == (0, 15)
    np.testing.assert_array_equal(load_prototypes(out)[0], prototypes)
    shutil.copy(samples / "plants" / "dahlia.jpg", classes_dir / "quadrats" / "new1.jpg")
    shutil.copy(samples / "birds" / "crow.png", classes_dir / "birds" / "new2.png")
    third = drain(build_prototypes(segmenter, classes_dir, out, k=3, shard_size=4, **FAST))
    assert sum(forwards) == 2 and (third.embedded, third.reused, third.n_images) == (2, 15, 17)
    assert third.classes == {"birds": 12, "quadrats": 5}
    assert len(list(shards_path(out).glob("shard_*.npz"))) == 5


def test_a_cancelled_build_keeps_its_finished_shards(segmenter, classes_dir, tmp_path, forwards):
    out = tmp_path / "p.safetensors"
    cancel = CancelToken()

    def on_progress(report):
        if "image 4/4" in report.text:  # the last batch of the first shard
            cancel.cancel()

    with pytest.raises(Cancelled):
        drain(build_prototypes(segmenter, classes_dir, out, k=3, shard_size=4, cancel=cancel, **FAST), on_progress)
    assert sum(forwards) == 4 and len(list(shards_path(out).glob("shard_*.npz"))) == 1 and not out.exists()
    forwards.clear()
    summary = drain(build_prototypes(segmenter, classes_dir, out, k=3, shard_size=4, **FAST))
    assert sum(forwards) == 11 and (summary.embedded, summary.reused) == (11, 4)


def test_shards_of_another_input_are_not_mixed_in(segmenter, classes_dir, tmp_path, forwards):
    out = tmp_path / "p.safetensors"
    drain(build_prototypes(segmenter, classes_dir / "birds", out, k=2, **FAST))
    forwards.clear()
    with pytest.raises(ParamError, match="input 56 \\(now 70\\).*not mixed in"):
        drain(build_prototypes(segmenter, classes_dir / "birds", out, k=2, **{**FAST, "input_size": 70}))
    assert forwards == []


def test_unreadable_images_are_skipped_and_reported(segmenter, classes_dir, tmp_path):
    (classes_dir / "birds" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "p.safetensors"
    summary = drain(build_prototypes(segmenter, classes_dir, out, k=2, **FAST))
    assert summary.n_images == 15 and [rel for rel, _ in summary.unreadable] == ["birds/broken.png"]
    assert "broken.png" in summary.unreadable[0][1]
    provenance = load_prototypes(out)[1]
    assert [u["path"] for u in provenance["unreadable"]] == ["birds/broken.png"]
    assert provenance["classes"] == {"birds": 11, "quadrats": 4}
    # 16 files but 15 readable: K = 16 fails after embedding, naming the embedded count
    with pytest.raises(ParamError, match="16 clusters but only 15 embedded"):
        drain(build_prototypes(segmenter, classes_dir, out, k=16, **FAST))


def test_k_larger_than_the_photos_fails_before_embedding(segmenter, classes_dir, tmp_path, forwards):
    with pytest.raises(ParamError, match="16 clusters but only 15 photos"):
        drain(build_prototypes(segmenter, classes_dir, tmp_path / "p.safetensors", k=16, **FAST))
    assert forwards == []
    with pytest.raises(ParamError, match=".safetensors"):
        drain(build_prototypes(segmenter, classes_dir, tmp_path / "p.npy", k=2, **FAST))
    with pytest.raises(ParamError, match="not a folder"):
        drain(build_prototypes(segmenter, tmp_path / "missing", tmp_path / "p.safetensors", k=2, **FAST))


def test_an_input_that_is_not_a_patch_multiple_is_a_param_error(segmenter, classes_dir, tmp_path):
    with pytest.raises(ParamError, match="multiple of the patch size 14"):
        drain(build_prototypes(segmenter, classes_dir / "birds", tmp_path / "p.safetensors", k=2,
                               **{**FAST, "input_size": 60}))


def test_load_prototypes_refuses_wrong_files(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(CheckpointError, match="no such"):
        load_prototypes(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_prototypes(tmp_path / "junk.safetensors")
    save_file({"other": np.zeros((2, 3), np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="no tensor 'prototypes'"):
        load_prototypes(tmp_path / "other.safetensors")
    save_file({"prototypes": np.zeros(3, np.float32)}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(CheckpointError, match="\\(K, D\\)"):
        load_prototypes(tmp_path / "flat.safetensors")
    good = tmp_path / "good.safetensors"
    save_prototypes(good, np.ones((2, 3), np.float32), {"schema": SCHEMA, "k": 3, "dim": 3})
    with pytest.raises(CheckpointError, match="3 x 3"):
        load_prototypes(good)
    save_prototypes(good, np.ones((2, 3), np.float64), {"schema": SCHEMA, "k": 2, "dim": 3})
    array, provenance = load_prototypes(good)
    assert array.dtype == np.float32 and array.shape == (2, 3) and provenance["k"] == 2
    provenance_path(good).unlink()
    assert load_prototypes(good)[1] == {}
