"""Explanation data (KLC steps 3-4): pooled best buddies, per-prototype vote, label filter, keypoints, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protolens.core.explanation import Correspondence, Explanation, ImageParts, Match, match_parts
from protolens.core.layers import Keypoints
from protolens.core.segments import Segments


def _stripes(n: int, names: list[str], height: int = 20, width: int = 30, empty: tuple[int, ...] = ()) -> Segments:
    """n vertical stripes (segment i = columns of stripe i); ``empty`` ids get no pixel."""
    ids = np.full((height, width), -1, np.int32)
    bounds = np.linspace(0, width, n + 1).astype(int)
    for i in range(n):
        if i not in empty:
            ids[2:height - 2, bounds[i]:bounds[i + 1]] = i
    return Segments(ids, names, "user")


def _parts(name: str, label: str, descriptors: np.ndarray, names: list[str], empty: tuple[int, ...] = ()) -> ImageParts:
    segments = _stripes(len(descriptors), names, empty=empty)
    return ImageParts(name, label, f"/photos/{name}", (20, 30), segments, descriptors, segments.centroids())


def _brute_buddies(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Mutual nearest neighbours by cosine, plain loops, lowest index on ties."""
    def cos(u, v):
        return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))

    nn_ab = [max(range(len(b)), key=lambda j: (cos(a[i], b[j]), -j)) for i in range(len(a))]
    nn_ba = [max(range(len(a)), key=lambda i: (cos(a[i], b[j]), -i)) for j in range(len(b))]
    return [(i, nn_ab[i]) for i in range(len(a)) if nn_ba[nn_ab[i]] == i]


@pytest.fixture
def scene():
    rng = np.random.default_rng(7)
    query = _parts("query", "", rng.normal(size=(6, 5)), ["head", "wing", "tail", "leg", "", "body"])
    protos = [_parts("a/1.png", "a", rng.normal(size=(4, 5)), ["head", "wing", "tail", "leg"], empty=(1,)),
              _parts("b/2.png", "b", rng.normal(size=(5, 5)), ["head", "wing", "tail", "leg", "body"]),
              _parts("a/3.png", "a", rng.normal(size=(3, 5)), ["tail", "head", "wing"])]
    return query, protos


def test_centroids_are_x_y_photo_pixels():
    segments = _stripes(3, ["", "", ""])
    centroids = segments.centroids()
    np.testing.assert_allclose(centroids[0], [4.5, 9.5])  # columns 0..9, rows 2..17
    np.testing.assert_allclose(centroids[2], [24.5, 9.5])


def test_match_parts_equals_best_buddies_of_the_pooled_descriptors(scene):
    query, protos = scene
    pooled, owner = [], []
    for rank, p in enumerate(protos):
        for s in range(p.segments.count):
            if s in p.present():
                pooled.append(p.descriptors[s])
                owner.append((rank, s))
    expected = _brute_buddies(query.descriptors, np.array(pooled))
    matches = match_parts(query, protos)
    assert [(m.query_segment, m.prototype, m.prototype_segment) for m in matches] == [
        (i, *owner[j]) for i, j in expected]
    assert len(matches) > 0 and all(not (m.prototype == 0 and m.prototype_segment == 1) for m in matches)
    for m in matches:
        other = protos[m.prototype]
        assert m.query_xy == pytest.approx(tuple(query.centroids[m.query_segment]))
        assert m.prototype_xy == pytest.approx(tuple(other.centroids[m.prototype_segment]))
        assert m.prototype_label == other.segments.names[m.prototype_segment]
        q, p = query.descriptors[m.query_segment], other.descriptors[m.prototype_segment]
        assert m.similarity == pytest.approx(np.dot(q, p) / np.linalg.norm(q) / np.linalg.norm(p), abs=1e-5)


def test_match_parts_with_nothing_to_match(scene):
    query, protos = scene
    assert match_parts(query, []) == []
    empty = _parts("q", "", np.ones((2, 5)), ["", ""], empty=(0, 1))
    assert match_parts(empty, protos) == []


def _match(q: int, rank: int, s: int, a: str, b: str, sim: float = 0.5) -> Match:
    return Match(q, rank, s, sim, (float(q), 1.0), (float(s), 2.0), a, b)


def test_vote_counts_each_prototype_by_its_owner_not_by_offsets(scene):
    query, protos = scene
    # the reference's miscount case: the query has 6 segments, prototype 0 has 3 present ones; matches on
    # prototype 1's first segments would have been counted for prototype 0 with offset ranges.
    matches = [_match(0, 1, 0, "head", "head"), _match(1, 1, 1, "wing", "wing"), _match(2, 0, 2, "tail", "tail"),
               _match(3, 2, 0, "leg", "tail"), _match(5, 1, 4, "body", "body")]
    explanation = Explanation(query, protos, [0.9, 0.8, 0.7], matches, "user")
    vote = explanation.vote()
    assert vote.per_prototype.tolist() == [1, 3, 1]
    assert vote.classes == ["a", "b"] and vote.counts.tolist() == [2, 3] and vote.prediction == "b"
    filtered = explanation.vote(label_consistent=True)  # (leg, tail) removed
    assert filtered.per_prototype.tolist() == [1, 3, 0] and filtered.total == 4


def test_label_filter_removes_only_pairs_whose_labels_differ_or_are_empty(scene):
    query, protos = scene
    matches = [_match(0, 0, 0, "head", "head"), _match(1, 1, 2, "wing", "tail"), _match(4, 1, 3, "", ""),
               _match(5, 1, 4, "body", "body")]
    explanation = Explanation(query, protos, [0.9, 0.8, 0.7], matches, "user", label_consistent=True)
    assert explanation.kept() == [matches[0], matches[3]]
    assert explanation.kept(False) == matches
    explanation.label_consistent = False
    assert explanation.kept() == matches


def test_zero_matches_give_no_prediction(scene):
    query, protos = scene
    vote = Explanation(query, protos, [0.9, 0.8, 0.7], [], "user").vote()
    assert vote.total == 0 and vote.prediction is None and vote.message() == "no best buddies: no prediction"


def test_keypoints_layer_groups_pairs_and_round_trip(scene):
    query, protos = scene
    matches = match_parts(query, protos)
    explanation = Explanation(query, protos, [0.9, 0.8, 0.7], matches, "user")
    layer = explanation.keypoints()
    assert layer.groups.count("query") == 6
    assert [layer.groups.count(p.name) for p in protos] == [3, 5, 3]
    assert len(layer.pairs) == len(matches)
    for (i, j), score, m in zip(layer.pairs, layer.pair_scores, matches, strict=True):
        assert layer.groups[i] == "query" and layer.groups[j] == protos[m.prototype].name
        np.testing.assert_allclose(layer.xy[i], m.query_xy)
        np.testing.assert_allclose(layer.xy[j], m.prototype_xy)
        assert layer.labels[i] == m.query_label and layer.labels[j] == m.prototype_label
        assert score == pytest.approx(m.similarity)
    entry, files = layer.to_files()
    back = Keypoints.from_files(entry, lambda name: files[name], (20, 30))
    np.testing.assert_array_equal(back.xy, layer.xy)
    np.testing.assert_array_equal(back.pairs, layer.pairs)
    assert back.groups == layer.groups and back.labels == layer.labels
    filtered = explanation.keypoints(label_consistent=True)
    assert len(filtered.pairs) == len(explanation.kept(True)) and len(filtered.xy) == len(layer.xy)


def test_to_json_has_photo_coordinates_and_the_vote(scene):
    query, protos = scene
    matches = match_parts(query, protos)
    explanation = Explanation(query, protos, [0.9, 0.8, 0.7], matches, "user", notes=["a note"])
    data = json.loads(json.dumps(explanation.to_json()))
    assert data["schema"] == "protolens.explanation/1" and data["query"]["size"] == {"height": 20, "width": 30}
    assert [r["class"] for r in data["retrieval"]] == ["a", "b", "a"] and data["retrieval"][1]["rank"] == 1
    assert data["segments"] == {"source": "user", "query": 6, "prototypes": [3, 5, 3]}
    assert data["vote"]["per_prototype"] == explanation.vote().per_prototype.tolist()
    assert data["notes"] == ["a note"] and "x, y" in data["coordinates"] and "correspondences" not in data
    for item, m in zip(data["matches"], matches, strict=True):
        x, y = item["query"]["xy"]
        assert (x, y) == pytest.approx(m.query_xy, abs=1e-3)
        column = query.segments.ids[int(round(y)), int(round(x))]
        assert column == m.query_segment  # x indexes columns, y rows
        assert item["prototype"]["rank"] == m.prototype and item["prototype"]["class"] == protos[m.prototype].label


def test_pixel_mode_keypoints_and_json(scene):
    query, protos = scene
    found = [Correspondence([[1, 3], [25, 10]], [[2, 4], [5, 6]], [0.9, 0.8], [0.5, 0.7]),
             Correspondence(np.zeros((0, 2)), np.zeros((0, 2)), [], []),
             Correspondence([[12, 9]], [[1, 1]], [0.4], [0.2])]
    explanation = Explanation(query, protos, [0.9, 0.8, 0.7], [], "user", correspondences=found)
    layer = explanation.keypoints()
    assert len(layer.xy) == 6 and len(layer.pairs) == 3
    assert layer.groups == ["query", "query", "a/1.png", "a/1.png", "query", "a/3.png"]
    assert layer.pairs.tolist() == [[0, 2], [1, 3], [4, 5]]
    assert layer.labels[0] == "head" and layer.labels[1] == "body"  # the query segment under each point
    np.testing.assert_allclose(layer.pair_scores, [0.9, 0.8, 0.4])
    data = explanation.to_json()
    assert [c["rank"] for c in data["correspondences"]] == [0, 1, 2]
    assert data["correspondences"][0]["pairs"][1] == {"query_xy": [25.0, 10.0], "prototype_xy": [5.0, 6.0],
                                                      "similarity": pytest.approx(0.8), "saliency": pytest.approx(0.7)}


def test_image_parts_checks_shapes():
    segments = _stripes(3, ["", "", ""])
    with pytest.raises(ValueError):
        ImageParts("q", "", "", (20, 30), segments, np.zeros((2, 4)), segments.centroids())
