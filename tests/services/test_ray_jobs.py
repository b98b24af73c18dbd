"""``tokens``, ``species`` and ``prototypes build`` on a local Ray instance (2 CPUs) write what the local path does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from protolens.core.cache import default_cache_dir
from protolens.core.job_manifest import FILE_NAME
from protolens.core.species import read_species_csv
from protolens.services.prototypes import load_prototypes
from tests.cli.conftest import run_cli
from tests.ray_support import private_ray
from tests.services.test_species_service import make_options, make_run

pytest.importorskip("ray")

MODEL = "vit_small_patch14_dinov2.lvd142m"
RAY = ("--executor", "ray", "--workers", "2")


@pytest.fixture(scope="module", autouse=True)
def ray_instance(tmp_path_factory):
    """One private local Ray instance (127.0.0.1) for the module; workers use a cache folder of their own."""
    with private_ray(tmp_path_factory.mktemp("ray-cache")) as ray:
        yield ray


def _forget_cached_features() -> None:
    """Drop the tile tokens and heatmaps cached by a run, so the next run computes them again."""
    for name in ("features", "heatmaps"):
        shutil.rmtree(default_cache_dir() / name, ignore_errors=True)


@pytest.fixture
def one_thread():
    """Torch on one thread, as each Ray worker here (1 CPU each): float sums in the same order, identical bytes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _without_created(path):
    document = json.loads(path.read_text())
    document.pop("created", None)
    return document


@pytest.fixture
def quadrats(tmp_path, samples):
    folder = tmp_path / "quadrats"
    folder.mkdir()
    for name in ("green_meadow.jpg", "moss_carpet.jpg"):
        shutil.copy(samples / "quadrats" / name, folder / name)
    return folder


def test_tokens_on_ray_match_the_local_path_and_a_rerun_skips(monkeypatch, capsys, quadrats, tmp_path, one_thread):
    tiny = ("--model", MODEL, "--rows", 2, "--cols", 3, "--crop", 16, "--input-size", 28, "--batch-size", 4,
            "--random-weights")
    (quadrats / "broken.jpg").write_bytes(b"not a jpeg")
    code, stdout, stderr = run_cli(monkeypatch, capsys, "tokens", quadrats, "--out", tmp_path / "ray", *tiny, *RAY)
    assert code == 0, stderr
    assert "protolens tokens: processed 2, failed 1" in stdout and "broken.jpg" in stderr
    _forget_cached_features()
    code, _, stderr = run_cli(monkeypatch, capsys, "tokens", quadrats, "--out", tmp_path / "local", *tiny)
    assert code == 0, stderr
    for stem in ("green_meadow", "moss_carpet"):
        ray_npy, local_npy = (tmp_path / d / f"{stem}.tokens.npy" for d in ("ray", "local"))
        assert ray_npy.read_bytes() == local_npy.read_bytes()
        assert np.load(ray_npy).shape[:2] == (2, 3)
        assert _without_created(tmp_path / "ray" / f"{stem}.tokens.json") == _without_created(
            tmp_path / "local" / f"{stem}.tokens.json")
    manifest = json.loads((tmp_path / "ray" / FILE_NAME).read_text())
    assert manifest["command"] == "tokens"
    code, stdout, _ = run_cli(monkeypatch, capsys, "tokens", quadrats, "--out", tmp_path / "ray", *tiny, *RAY)
    assert "processed 0, failed 1, already done 2" in stdout and code == 0


def test_prototypes_on_ray_match_the_local_build(monkeypatch, capsys, samples, tmp_path, one_thread):
    images = tmp_path / "images"
    shutil.copytree(samples / "birds", images / "birds")
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", images / "green_meadow.jpg")
    (images / "birds" / "broken.png").write_bytes(b"not a png")
    build = ("prototypes", "build", "--images", images, "--backbone", MODEL, "--k", 2, "--input", 28,
             "--niter", 10, "--nredo", 2, "--batch-size", 4, "--shard-size", 4, "--kmeans", "sklearn",
             "--allow-random-weights")
    outs = {name: tmp_path / name / "prototypes.safetensors" for name in ("ray", "local")}
    code, stdout_ray, stderr = run_cli(monkeypatch, capsys, *build, "--out", outs["ray"], *RAY)
    assert code == 0, stderr
    code, stdout_local, stderr = run_cli(monkeypatch, capsys, *build, "--out", outs["local"])
    assert code == 0, stderr
    assert stdout_ray.split(" -> ")[0] == stdout_local.split(" -> ")[0]
    assert "12 images (12 embedded, 0 reused), 1 skipped" in stdout_ray
    (ray_p, ray_doc), (local_p, local_doc) = load_prototypes(outs["ray"]), load_prototypes(outs["local"])
    assert np.allclose(ray_p, local_p)
    for doc in (ray_doc, local_doc):
        doc.pop("created")
        # the file's digest: safetensors writes its metadata in hash-map order, which differs between saves
        doc.pop("sha256")
    assert ray_doc == local_doc
    shards = sorted(p.name for p in (tmp_path / "ray" / "prototypes.shards").glob("shard_*.npz"))
    assert shards == [f"shard_{n:05d}.npz" for n in range(4)]  # 13 photos in shards of 4, numbered in order
    manifest = json.loads((tmp_path / "ray" / FILE_NAME).read_text())
    assert sorted(manifest["units"]) == [s[:-4] for s in shards]
    code, stdout, _ = run_cli(monkeypatch, capsys, *build, "--out", outs["ray"], *RAY)
    assert code == 0 and "(0 embedded, 12 reused)" in stdout


def test_species_on_ray_match_the_local_path(monkeypatch, capsys, quadrats, tmp_path, one_thread):
    run, options = make_run(tmp_path / "run", epochs=1), make_options(tmp_path)
    (quadrats / "broken.jpg").write_bytes(b"not a jpeg")
    species = ("species", quadrats, "--run", run.path, "--classifier", options.classifier,
               "--classifier-weights", options.classifier_weights, "--class-mapping", options.class_mapping,
               "--grid", "3", "--classifier-input", "32", "--prob", "0.2", "--allow-random-weights")
    code, stdout, stderr = run_cli(monkeypatch, capsys, *species, "--out", tmp_path / "ray", *RAY)
    assert code == 0, stderr
    assert "protolens species: processed 2, failed 1" in stdout and "broken.jpg" in stderr
    _forget_cached_features()
    code, stdout_local, stderr = run_cli(monkeypatch, capsys, *species, "--out", tmp_path / "local")
    assert code == 0, stderr
    assert stdout.split(" -> ")[0] == stdout_local.split(" -> ")[0]
    ray_csv, local_csv = (tmp_path / d / "submission.csv" for d in ("ray", "local"))
    assert ray_csv.read_bytes() == local_csv.read_bytes()
    assert list(read_species_csv(ray_csv)) == ["green_meadow", "moss_carpet"]
    for stem in ("green_meadow", "moss_carpet"):
        assert _without_created(tmp_path / "ray" / f"{stem}.species.json") == _without_created(
            tmp_path / "local" / f"{stem}.species.json")
        for suffix in ("mask.png", "heatmap.npy"):
            assert (tmp_path / "ray" / f"{stem}.{suffix}").read_bytes() == (
                tmp_path / "local" / f"{stem}.{suffix}").read_bytes()
    # a rerun skips both quadrats and still writes the full submission
    ray_csv.unlink()
    code, stdout, _ = run_cli(monkeypatch, capsys, *species, "--out", tmp_path / "ray", *RAY)
    assert code == 0 and "processed 0, failed 1, already done 2" in stdout
    assert ray_csv.read_bytes() == local_csv.read_bytes()
