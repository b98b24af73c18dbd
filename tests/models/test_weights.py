"""Finding, identifying and pulling weights (models/weights.py), offline: the Hub is faked throughout."""

from __future__ import annotations

import hashlib
import os

import huggingface_hub
import huggingface_hub.constants
import pytest

from protolens.core.errors import Cancelled, WeightsNotFoundError
from protolens.core.jobs import CancelToken
from protolens.models.api import WeightsSpec
from protolens.models.weights import hf_cached_file, pull_weights, resolve_weights, weights_sha256

SPEC = WeightsSpec(name="vit_small_patch14_dinov2.lvd142m", hf_repo="timm/vit_small_patch14_dinov2.lvd142m",
                   size_bytes=1000, licence="Apache-2.0")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = b"pretend these are weights " * 40


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that replaces the real one (huggingface_hub reads the constant per call)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_file(cache, spec: WeightsSpec, payload: bytes = PAYLOAD):
    """Lay a file out as huggingface_hub does: blobs/<sha256>, snapshots/<commit>/<name> -> blob, refs/main."""
    repo = cache / ("models--" + spec.hf_repo.replace("/", "--"))
    digest = hashlib.sha256(payload).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / digest).write_bytes(payload)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    link = repo / "snapshots" / COMMIT / spec.filename
    os.symlink(os.path.join("..", "..", "blobs", digest), link)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return link, digest


def _assert_names_both_ways(message: str, name: str) -> None:
    assert f"protolens weights pull {name}" in message
    assert "--weights" in message
    assert "\n" not in message


# --- resolve_weights -----------------------------------------------------------------------------------


def test_missing_user_file_says_how_to_get_weights(tmp_path, hf_cache):
    _cache_file(hf_cache, SPEC)  # even with a cached copy, a wrong explicit path is an error
    missing = tmp_path / "nowhere" / "mine.safetensors"
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(SPEC, missing)
    assert str(missing) in str(info.value)
    _assert_names_both_ways(str(info.value), SPEC.name)


def test_user_file_is_used_as_given(tmp_path, hf_cache):
    _cache_file(hf_cache, SPEC)
    mine = tmp_path / "fine-tuned.pth"
    mine.write_bytes(b"x")
    assert resolve_weights(SPEC, mine) == mine
    assert resolve_weights(SPEC, str(mine)) == mine


def test_snapshot_folder_resolves_to_its_weights_file(tmp_path):
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"b")
    (folder / "model.safetensors").write_bytes(b"s")
    assert resolve_weights(SPEC, folder) == folder / "model.safetensors"


def test_folder_with_one_other_weights_file_resolves(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    (folder / "README.md").write_text("weights")
    (folder / "dino_deitsmall16_pretrain.pth").write_bytes(b"p")
    assert resolve_weights(SPEC, folder) == folder / "dino_deitsmall16_pretrain.pth"


@pytest.mark.parametrize("files", [(), ("a.pth", "b.pth"), ("notes.txt",)])
def test_folder_without_a_single_weights_file_is_an_error(tmp_path, files):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"?")
    with pytest.raises(WeightsNotFoundError, match="no weights file"):
        resolve_weights(SPEC, folder)


def test_nothing_cached_names_both_ways(hf_cache):
    assert hf_cached_file(SPEC) is None
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(SPEC)
    assert "not on this machine" in str(info.value)
    _assert_names_both_ways(str(info.value), SPEC.name)


def test_no_spec_and_no_path_is_an_error(hf_cache):
    with pytest.raises(WeightsNotFoundError, match="--weights"):
        resolve_weights(None)


def test_file_in_the_hf_cache_is_found(hf_cache):
    link, digest = _cache_file(hf_cache, SPEC)
    other = WeightsSpec(name="vit_small_patch16_224.dino", hf_repo="timm/vit_small_patch16_224.dino")

    assert hf_cached_file(SPEC) == link
    assert resolve_weights(SPEC) == link
    assert resolve_weights(SPEC).read_bytes() == PAYLOAD
    assert hf_cached_file(other) is None  # another model's weights are not taken for these
    assert weights_sha256(resolve_weights(SPEC)) == digest


def test_cache_entry_whose_blob_is_gone_is_not_found(hf_cache):
    link, _ = _cache_file(hf_cache, SPEC)
    os.unlink(os.path.realpath(link))  # an interrupted cleanup leaves a dangling link
    assert hf_cached_file(SPEC) is None
    with pytest.raises(WeightsNotFoundError):
        resolve_weights(SPEC)


# --- weights_sha256 ------------------------------------------------------------------------------------


def test_sha256_of_a_plain_file(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(PAYLOAD)
    assert weights_sha256(path) == hashlib.sha256(PAYLOAD).hexdigest()
    assert weights_sha256(str(path)) == hashlib.sha256(PAYLOAD).hexdigest()


def test_sha256_follows_a_changed_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"first version")
    first = weights_sha256(path)
    path.write_bytes(b"second, longer version")
    assert weights_sha256(path) == hashlib.sha256(b"second, longer version").hexdigest() != first


def test_sha256_of_a_cache_blob_is_its_name(tmp_path):
    """Hub blobs are named by their sha256; the name is trusted (no second read of a large file)."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    name = "ab" * 32
    (blobs / name).write_bytes(b"content whose hash is not the name")
    assert weights_sha256(blobs / name) == name
    link = tmp_path / "model.safetensors"
    os.symlink(blobs / name, link)
    assert weights_sha256(link) == name
    # A 64-hex file outside blobs/ is hashed.
    plain = tmp_path / name
    plain.write_bytes(b"x")
    assert weights_sha256(plain) == hashlib.sha256(b"x").hexdigest()


# --- pull_weights --------------------------------------------------------------------------------------


def _fake_download(tmp_path, calls, *, chunks=(100, 300, 250, 350), on_chunk=None):
    """A stand-in for hf_hub_download that reports progress through tqdm_class as the real one does."""  # ok-offline
    target = tmp_path / "downloaded" / "model.safetensors"

    def hf_hub_download(repo_id, filename, *, tqdm_class=None, **kwargs):  # ok-offline: a local fake
        calls.append((repo_id, filename, kwargs))
        bar = tqdm_class(total=sum(chunks), unit="B", unit_scale=True, desc=filename)
        try:
            for i, chunk in enumerate(chunks):
                if on_chunk is not None:
                    on_chunk(i)
                bar.update(chunk)
        finally:
            bar.close()
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(PAYLOAD)
        return str(target)

    return hf_hub_download, target  # ok-offline


def test_pull_reports_increasing_bytes(tmp_path, monkeypatch):
    calls, seen = [], []
    fake, target = _fake_download(tmp_path, calls)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)  # ok-offline

    path = pull_weights(SPEC, progress=lambda done, total: seen.append((done, total)))

    assert path == target
    assert calls[0][:2] == (SPEC.hf_repo, SPEC.filename)
    assert seen == [(100, 1000), (400, 1000), (650, 1000), (1000, 1000)]


def test_pull_without_callback_still_downloads(tmp_path, monkeypatch):
    fake, target = _fake_download(tmp_path, [])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)  # ok-offline
    assert pull_weights(SPEC) == target


def test_cancel_during_pull_raises_cancelled(tmp_path, monkeypatch):
    cancel, seen = CancelToken(), []
    fake, target = _fake_download(tmp_path, [], on_chunk=lambda i: cancel.cancel() if i == 2 else None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)  # ok-offline

    with pytest.raises(Cancelled, match="cancelled"):
        pull_weights(SPEC, progress=lambda done, total: seen.append(done), cancel=cancel)
    assert seen == [100, 400]  # nothing reported after the cancel
    assert not target.exists()


def test_network_failure_is_a_clear_weights_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)  # ok-offline
    with pytest.raises(WeightsNotFoundError) as info:
        pull_weights(SPEC)
    message = str(info.value)
    assert "download of" in message and SPEC.name in message and SPEC.hf_repo in message
    assert "Failed to resolve 'huggingface.co'" in message


def test_pull_checks_the_expected_sha256(tmp_path, monkeypatch):
    fake, target = _fake_download(tmp_path, [])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)  # ok-offline
    good = WeightsSpec(name=SPEC.name, hf_repo=SPEC.hf_repo, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    bad = WeightsSpec(name=SPEC.name, hf_repo=SPEC.hf_repo, sha256="0" * 64)
    assert pull_weights(good) == target
    with pytest.raises(WeightsNotFoundError, match="does not match the expected sha256"):
        pull_weights(bad)
