"""The keypoint-labeling engine (KLC steps 1-4) on the bird samples with a tiny random ViT."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from protolens.core import bank_files
from protolens.core.bank_files import (
    BankImage,
    bank_cache_dir,
    feature_identity,
    read_bank_cache,
    scan_bank,
    token_mask,
    write_bank_cache,
    write_features,
)
from protolens.core.errors import ParamError
from protolens.core.explanation import Correspondence, match_parts
from protolens.core.hashing import sha256_file
from protolens.core.imageio import read_image
from protolens.core.jobs import CancelToken
from protolens.core.segments import Segments, segment_descriptors
from protolens.models import api
from protolens.models.dense import dense_features
from protolens.models.keypoint_labeling import analyse_image, clear_memo, explain_image
from protolens.models.kmeans import kmeans
from protolens.services.segment import drain
from tests.models.conftest import make_tiny_vit

INPUT = 56


@pytest.fixture(scope="module")
def model():
    return make_tiny_vit(14, embed_dim=48, depth=2, num_heads=3)


@pytest.fixture(scope="module")
def bank(model, tmp_path_factory, samples):
    """The bird samples as a bank, built here with the tiny model (what services.bank writes)."""
    root = tmp_path_factory.mktemp("bank") / "birds"
    shutil.copytree(samples / "birds", root)
    found, _ = scan_bank(root)
    photos = [read_image(path) for path, _, _ in found]
    features = drain(dense_features(model, photos, input_size=INPUT, mean=(0.5,) * 3, std=(0.25,) * 3,
                                    device="cpu", dtype="float32", cancel=CancelToken()))
    cache = bank_cache_dir(root)
    images, fg = [], []
    for (path, rel, label), f in zip(found, features, strict=True):
        image = BankImage(path, rel, label, sha256_file(path), path.stat().st_size, path.stat().st_mtime_ns,
                          f.image_size)
        write_features(cache, image.sha256, tokens=f.tokens, saliency=f.saliency, cls=f.cls,
                       image_size=f.image_size, identity=feature_identity("tiny", "none", INPUT))
        mask, _ = bank_files.find_object_mask(path, f.image_size, f.saliency)
        rows = f.tokens[token_mask(mask, f.tokens.shape[:2])]
        fg.append(rows / np.linalg.norm(rows, axis=1, keepdims=True))
        images.append(image)
    centroids = kmeans(np.concatenate(fg), 3, seed=0, niter=20, nredo=1, library="sklearn").centroids
    write_bank_cache(cache, model="tiny", weights_id="tiny:random-init", weights_sha256="none", input_size=INPUT,
                     images=images, cls=np.stack([f.cls for f in features]), part_centroids=centroids,
                     part_names=["head", "body", "tail"])
    return read_bank_cache(root)


@pytest.fixture(autouse=True)
def _mean_std(monkeypatch):
    """The tiny model has no pretrained config: give explain_image the bank fixture's normalisation."""
    real = api.vit_spec

    def spec(network):
        import dataclasses

        return dataclasses.replace(real(network), mean=(0.5,) * 3, std=(0.25,) * 3)

    monkeypatch.setattr("protolens.models.vit.loading.vit_spec", spec)


def _halves(rows: int = 4, cols: int = 4, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Tokens whose left half points one way and right half another, and those two directions as centroids."""
    left, right = np.eye(d)[0], np.eye(d)[1]
    tokens = np.zeros((rows, cols, d), np.float32)
    tokens[:, : cols // 2] = left + 0.1
    tokens[:, cols // 2:] = right + 0.1
    return tokens, np.stack([left, right]).astype(np.float32)


def test_cosegment_parts_inside_the_mask_named_by_the_vocabulary():
    tokens, centroids = _halves()
    mask = np.zeros((40, 40), bool)
    mask[5:35, 8:36] = True
    parts = analyse_image(None, tokens, np.ones((4, 4)), name="query", label="", path="q.png", mask=mask,
                          part_centroids=centroids, part_names=["left", "right"], image_size=(40, 40))
    ids = parts.segments.ids
    assert parts.segments.source == "cosegment" and parts.segments.names == ["left", "right"]
    assert (ids[~mask] == -1).all() and (ids[mask] >= 0).all()
    assert (ids[5:35, 8:20] == 0).all() and (ids[5:35, 20:36] == 1).all()
    np.testing.assert_allclose(parts.descriptors, segment_descriptors(tokens, parts.segments))
    np.testing.assert_allclose(parts.centroids[0], [13.5, 19.5])  # (x, y): columns 8..19, rows 5..34


def test_slic_superpixels_take_the_name_of_the_part_covering_them():
    tokens, centroids = _halves()
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, 20:] = 255
    parts = analyse_image(rgb, tokens, np.ones((4, 4)), name="p", label="c", path="p.png", segments="slic",
                          n_segments=6, part_centroids=centroids, part_names=["left", "right"],
                          mask=np.ones((40, 40), bool))
    assert parts.segments.source == "slic" and parts.segments.count >= 2
    for i, name in enumerate(parts.segments.names):
        cols = np.nonzero(parts.segments.ids == i)[1]
        assert name == ("left" if np.mean(cols < 20) > 0.5 else "right")
    plain = analyse_image(rgb, tokens, np.ones((4, 4)), name="p", label="c", path="p.png", segments="slic",
                          n_segments=6, mask=np.ones((40, 40), bool))
    assert set(plain.segments.names) == {""}


def test_bank_source_uses_annotations_else_falls_back_with_a_note():
    tokens, centroids = _halves()
    drawn = Segments(np.repeat(np.arange(4, dtype=np.int32)[None].repeat(10, 1), 40, 0), ["a", "b", "c", "d"],
                     "user")
    notes: list[str] = []
    parts = analyse_image(None, tokens, np.ones((4, 4)), name="query", label="", path="", segments="bank",
                          annotation=drawn, part_centroids=centroids, image_size=(40, 40), notes=notes)
    assert parts.segments is drawn and notes == []
    parts = analyse_image(None, tokens, np.ones((4, 4)), name="query", label="", path="", segments="bank",
                          part_centroids=centroids, image_size=(40, 40), notes=notes)
    assert parts.segments.source == "cosegment" and notes == ["the query has no drawn parts: co-segmentation used"]


def test_bad_arguments():
    tokens, centroids = _halves()
    with pytest.raises(ParamError, match="--segments"):
        analyse_image(None, tokens, np.ones((4, 4)), name="q", label="", path="", segments="vlpart",
                      image_size=(8, 8))
    with pytest.raises(ParamError, match="object mask"):
        analyse_image(None, tokens, np.ones((4, 4)), name="q", label="", path="", mask=np.ones((3, 3), bool),
                      part_centroids=centroids, image_size=(8, 8))
    with pytest.raises(ParamError, match="photo"):
        analyse_image(None, tokens, np.ones((4, 4)), name="q", label="", path="", segments="slic",
                      image_size=(8, 8))


def test_explain_the_robin_against_the_other_birds(model, bank):
    robin = next(i for i, image in enumerate(bank.images) if image.rel == "robin.jpg")
    rgb = read_image(bank.images[robin].path)
    explanation = drain(explain_image(model, rgb, bank, k=4, query_sha256=bank.images[robin].sha256,
                                      query_path="robin.jpg", memo={}))
    assert len(explanation.prototypes) == 4 and "robin.jpg" not in [p.name for p in explanation.prototypes]
    assert explanation.retrieval == sorted(explanation.retrieval, reverse=True)
    expected = [i for i, _ in bank.retrieve(bank.cls[robin], 5) if i != robin][:4]  # its own features
    assert [p.name for p in explanation.prototypes] == [bank.images[i].rel for i in expected]
    for parts in explanation.prototypes:
        index = next(i for i, image in enumerate(bank.images) if image.rel == parts.name)
        mask = bank.object_mask(index)
        assert parts.label == bank.images[index].label and parts.image_size == bank.images[index].image_size
        assert (parts.segments.ids[~mask] == -1).all() and parts.segments.names == ["head", "body", "tail"]
    query_ids = explanation.query.segments.ids
    assert query_ids.shape == rgb.shape[:2] and (query_ids >= 0).any()
    recomputed = match_parts(explanation.query, explanation.prototypes)
    assert [(m.query_segment, m.prototype, m.prototype_segment) for m in explanation.matches] == [
        (m.query_segment, m.prototype, m.prototype_segment) for m in recomputed]
    kept = explanation.kept(True)
    removed = [m for m in explanation.matches if m not in kept]
    assert kept and removed, "the case should exercise both sides of the filter"
    assert all(m.query_label != m.prototype_label for m in removed)
    assert all(m.query_label == m.prototype_label for m in kept)
    vote = explanation.vote()
    assert vote.total == len(explanation.matches) and vote.per_prototype.shape == (4,)
    saliency = explanation.query_saliency
    assert saliency.shape == (4, 4) and saliency.dtype == np.float32 and 0 <= saliency.min() <= saliency.max() <= 1


def test_query_mask_keeps_the_query_segments_inside(model, bank):
    rgb = read_image(bank.images[0].path)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[20:80, 10:60] = True
    explanation = drain(explain_image(model, rgb, bank, k=2, query_mask=mask, segments="slic", n_segments=8,
                                      memo={}))
    assert (explanation.query.segments.ids[~mask] == -1).all() and explanation.query.segments.source == "slic"
    assert all(p.segments.source == "slic" for p in explanation.prototypes)


def test_prototype_work_is_memoised(model, bank, monkeypatch):
    rgb = read_image(bank.images[1].path)
    memo: dict = {}
    first = drain(explain_image(model, rgb, bank, k=3, memo=memo))
    calls = []
    real = type(bank).features
    monkeypatch.setattr(type(bank), "features", lambda self, i: calls.append(i) or real(self, i))
    second = drain(explain_image(model, rgb, bank, k=3, memo=memo))
    assert calls == [] and all(a is b for a, b in zip(first.prototypes, second.prototypes, strict=True))
    clear_memo()
    drain(explain_image(model, rgb, bank, k=3))  # the default memo: cold, then warm
    assert len(calls) == 3
    drain(explain_image(model, rgb, bank, k=3))
    assert len(calls) == 3


def test_other_weights_are_refused(model, bank):
    with pytest.raises(ParamError, match="built with weights tiny:random-init"):
        drain(explain_image(model, read_image(bank.images[0].path), bank, weights_sha256="ab" * 32))


def test_pixel_correspondences_one_per_prototype(model, bank):
    rgb = read_image(bank.images[2].path)
    explanation = drain(explain_image(model, rgb, bank, k=2, pixels=True, layer=-1, bin=False, n_pairs=4,
                                      memo={}))
    assert len(explanation.correspondences) == 2
    assert all(isinstance(c, Correspondence) and len(c) <= 4 for c in explanation.correspondences)
    layer = explanation.keypoints()
    assert len(layer.pairs) == sum(len(c) for c in explanation.correspondences)
    height, width = rgb.shape[:2]
    for c in explanation.correspondences:
        assert ((c.query_xy >= 0) & (c.query_xy <= [width, height])).all()
