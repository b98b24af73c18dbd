"""The bank folder and its cache (KLC step 1): scan, cache folder, read/write, retrieval, masks, annotations."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protolens.core.bank_files import (
    CACHE_NAME,
    BankImage,
    bank_cache_dir,
    feature_identity,
    find_object_mask,
    read_bank_cache,
    scan_bank,
    stored_identity,
    token_mask,
    write_bank_cache,
    write_features,
)
from protolens.core.cache import default_cache_dir
from protolens.core.errors import ParamError
from protolens.core.hashing import sha256_file


def _fake_build(root: Path, *, dim: int = 8, grid: int = 4, seed: int = 0, cls: np.ndarray | None = None) -> None:
    """Write a bank cache for the images under ``root`` with random features (what a build writes)."""
    rng = np.random.default_rng(seed)
    found, _ = scan_bank(root)
    cache = bank_cache_dir(root)
    images = []
    for path, rel, label in found:
        stat = path.stat()
        with Image.open(path) as photo:
            size = (photo.height, photo.width)
        image = BankImage(path, rel, label, sha256_file(path), stat.st_size, stat.st_mtime_ns, size)
        write_features(cache, image.sha256, tokens=rng.normal(size=(grid, grid, dim)),
                       saliency=rng.random((grid, grid)), cls=rng.normal(size=dim), image_size=size,
                       identity=feature_identity("m", "none", 56))
        images.append(image)
    vectors = rng.normal(size=(len(images), dim)) if cls is None else cls
    write_bank_cache(cache, model="m", weights_id="m:random-init", weights_sha256="none", input_size=56,
                     images=images, cls=vectors, part_centroids=rng.normal(size=(3, dim)),
                     part_names=["head", "body", "tail"])


@pytest.fixture
def classes(tmp_path, samples):
    """A bank with class subfolders: gulls/ (2, one nested) and others/ (2), a stray text file."""
    root = tmp_path / "bank"
    (root / "gulls" / "nested").mkdir(parents=True)
    (root / "others").mkdir()
    shutil.copy(samples / "birds" / "seagull.png", root / "gulls")
    shutil.copy(samples / "birds" / "silver-gull.png", root / "gulls" / "nested")
    shutil.copy(samples / "birds" / "crow.png", root / "others")
    shutil.copy(samples / "birds" / "robin.jpg", root / "others")
    (root / "notes.txt").write_text("not an image")
    return root


def test_scan_flat_folder_each_image_is_its_own_class(birds):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(birds / "crow.mask.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(birds / "crow.parts.png")
    (birds / "parts.txt").write_text("1 head\n")
    found, ignored = scan_bank(birds)
    assert len(found) == 11 and ignored == 0  # annotation and CUB files are neither images nor ignored
    assert all(label == Path(rel).stem and "/" not in rel for _, rel, label in found)
    assert "crow.png" in [rel for _, rel, _ in found]


def test_scan_class_subfolders_recursive(classes):
    found, ignored = scan_bank(classes)
    assert sorted((rel, label) for _, rel, label in found) == [
        ("gulls/nested/silver-gull.png", "gulls"), ("gulls/seagull.png", "gulls"),
        ("others/crow.png", "others"), ("others/robin.jpg", "others")]
    assert ignored == 1


def test_scan_not_a_folder(tmp_path):
    with pytest.raises(ParamError, match="not a folder"):
        scan_bank(tmp_path / "missing")


def test_cache_dir_inside_a_writable_bank(birds):
    assert bank_cache_dir(birds) == birds.resolve() / CACHE_NAME


def test_cache_dir_falls_back_to_the_user_cache_when_read_only(birds, monkeypatch):
    import protolens.core.bank_files as bank_files

    monkeypatch.setattr(bank_files.os, "access", lambda path, mode: False)  # (root can write anywhere)
    digest = hashlib.sha256(str(birds.resolve()).encode()).hexdigest()[:16]
    fallback = default_cache_dir() / "banks" / digest
    assert bank_cache_dir(birds) == fallback
    _fake_build(birds)
    assert (fallback / "bank.json").is_file() and not (birds / CACHE_NAME).exists()
    assert read_bank_cache(birds).cache_dir == fallback


def test_unbuilt_bank_names_the_command(birds):
    with pytest.raises(ParamError, match=r"is not a built bank: run `protolens bank build .*birds`"):
        read_bank_cache(birds)


def test_round_trip(classes):
    _fake_build(classes)
    bank = read_bank_cache(classes)
    assert [i.rel for i in bank.images] == [rel for _, rel, _ in scan_bank(classes)[0]]
    assert bank.classes == ["gulls", "others"] and bank.part_names == ["head", "body", "tail"]
    assert bank.model == "m" and bank.weights_id == "m:random-init" and bank.input_size == 56
    assert bank.cls.shape == (4, 8) and bank.part_centroids.shape == (3, 8)
    robin = next(i for i, image in enumerate(bank.images) if image.rel.endswith("robin.jpg"))
    assert bank.images[robin].image_size == (254, 380)
    tokens, saliency, cls = bank.features(robin)
    assert tokens.dtype == np.float32 and tokens.shape == (4, 4, 8) and saliency.shape == (4, 4) and cls.shape == (8,)
    assert bank.features(robin)[0] is tokens  # memoised
    assert stored_identity(bank.cache_dir, bank.images[robin].sha256) == "m|none|56"
    assert len(bank.digest) == 64


def test_changed_new_and_missing_images_are_named(classes, samples):
    _fake_build(classes)
    read_bank_cache(classes)
    with open(classes / "others" / "crow.png", "ab") as handle:
        handle.write(b"\0")  # other bytes
    shutil.copy(samples / "birds" / "lark.png", classes / "others")
    (classes / "gulls" / "seagull.png").unlink()
    with pytest.raises(ParamError) as info:
        read_bank_cache(classes)
    message = str(info.value)
    assert "3 bank images changed" in message and "others/crow.png (changed)" in message
    assert "others/lark.png (new)" in message and "gulls/seagull.png (missing)" in message
    assert "protolens bank build" in message


def test_touched_but_identical_image_is_not_a_change(classes):
    _fake_build(classes)
    path = classes / "others" / "crow.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert len(read_bank_cache(classes)) == 4


def test_retrieval_is_best_first_by_cosine_and_leaves_the_query_out(birds):
    rng = np.random.default_rng(3)
    cls = rng.normal(size=(11, 8)).astype(np.float32)
    cls[5] = 2.5 * cls[2]  # a tie with image 2 (same direction): the lower index first
    _fake_build(birds, cls=cls)
    bank = read_bank_cache(birds)
    query = cls[2] + 0.01 * rng.normal(size=8)
    expected = []
    for i in range(11):  # plain re-derivation
        dot = sum(float(query[j]) * float(cls[i, j]) for j in range(8))
        expected.append(dot / (np.sqrt(sum(float(v) ** 2 for v in query)) * np.sqrt(sum(float(v) ** 2 for v in cls[i]))))
    order = sorted(range(11), key=lambda i: (-round(expected[i], 5), i))
    got = bank.retrieve(query, k=4)
    assert [i for i, _ in got] == order[:4] and got[0][0] == 2 and got[1][0] == 5
    np.testing.assert_allclose([c for _, c in got], [expected[i] for i in order[:4]], atol=1e-5)
    left_out = bank.retrieve(query, k=4, exclude_sha256=bank.images[2].sha256)
    assert [i for i, _ in left_out] == [i for i in order if i != 2][:4]
    assert len(bank.retrieve(query, k=50)) == 11
    with pytest.raises(ParamError):
        bank.retrieve(query, k=0)
    with pytest.raises(ParamError, match="dimensions"):
        bank.retrieve(np.ones(3), k=1)


def test_object_mask_priority_mask_file_then_alpha_then_saliency(birds):
    _fake_build(birds)
    bank = read_bank_cache(birds)
    index = {image.rel: i for i, image in enumerate(bank.images)}
    alpha = np.asarray(Image.open(birds / "crow.png"))[..., 3] >= 128
    crow = bank.object_mask(index["crow.png"])
    np.testing.assert_array_equal(crow, alpha)
    robin = bank.object_mask(index["robin.jpg"])  # RGB: the saliency mask
    assert robin.shape == (254, 380) and robin.any() and not robin.all()
    _, source = find_object_mask(birds / "robin.jpg", (254, 380), np.ones((4, 4)))
    assert source == "saliency"
    drawn = np.zeros((146, 183), np.uint8)
    drawn[10:20, 30:50] = 255
    Image.fromarray(drawn).save(birds / "crow.mask.png")
    np.testing.assert_array_equal(bank.object_mask(index["crow.png"]), drawn > 127)
    assert find_object_mask(birds / "crow.png", (146, 183))[1] == "mask file"


def test_annotation_segments_from_part_masks_and_part_locations(birds):
    (birds / "parts.txt").write_text("1 beak\n2 wing\n3 left leg\n")
    ids = np.zeros((146, 183), np.uint8)
    ids[0:40, :] = 1
    ids[40:80, :] = 3
    Image.fromarray(ids, mode="L").save(birds / "crow.parts.png")
    (birds / "images.txt").write_text("1 magpie.png\n2 lark.png\n")
    (birds / "part_locs.txt").write_text("1 1 10.0 20.0 1\n1 2 60.0 100.0 1\n1 3 0.0 0.0 0\n")
    _fake_build(birds)
    bank = read_bank_cache(birds)
    index = {image.rel: i for i, image in enumerate(bank.images)}
    crow = bank.annotation_segments(index["crow.png"])
    assert crow.source == "bank" and crow.names == ["beak", "wing", "left leg"]
    np.testing.assert_array_equal(crow.ids[0:40], 0)
    np.testing.assert_array_equal(crow.ids[40:80], 2)
    np.testing.assert_array_equal(crow.ids[80:], -1)
    mask = bank.object_mask(index["magpie.png"])
    magpie = bank.annotation_segments(index["magpie.png"], mask)
    assert magpie.names == ["beak", "wing"]  # the invisible part is left out
    rows, cols = np.nonzero(mask)
    nearest = ((cols - 10.0) ** 2 + (rows - 20.0) ** 2 > (cols - 60.0) ** 2 + (rows - 100.0) ** 2).astype(int)
    np.testing.assert_array_equal(magpie.ids[rows, cols], nearest)
    assert (magpie.ids[~mask] == -1).all()
    assert bank.annotation_segments(index["lark.png"]) is None  # listed, but no locations
    assert bank.annotation_segments(index["robin.jpg"]) is None


def test_token_mask_half_cover_and_tiny_objects():
    mask = np.zeros((8, 8), bool)
    mask[0:4, 0:3] = True  # 3/4 of token (0, 0) (4 x 4 px per token), none of the others
    grid = token_mask(mask, (2, 2))
    np.testing.assert_array_equal(grid, [[True, False], [False, False]])
    tiny = np.zeros((8, 8), bool)
    tiny[6, 7] = True
    np.testing.assert_array_equal(token_mask(tiny, (2, 2)), [[False, False], [False, True]])
    assert not token_mask(np.zeros((8, 8), bool), (2, 2)).any()
