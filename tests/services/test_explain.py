"""services.explain: KLC explanations of bird queries against a bank of the bird samples (random tiny model),
the weights check, the query's object mask, and the keypoint evaluation on a folder split."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from protolens.core.errors import ParamError
from protolens.models.registry import Registry
from protolens.services.bank import build_bank, load_bank
from protolens.services.explain import evaluate_keypoints, explain, query_object_mask
from protolens.services.explain_render import write_explanation
from protolens.services.segment import Segmenter, drain, load_image

FAST = {"input_size": 56, "allow_random_weights": True, "parts": 3}
SPLIT = {"corvid": ["crow.png", "magpie.png", "blackbird.png"], "gull": ["seagull.png", "silver-gull.png", "pigeon.png"],
         "parrot": ["adelaide-rosella.png", "rainbow-lorikeet.png", "cuckoo.png"]}


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(Registry.discover(), device="cpu", disk_cache=None)


@pytest.fixture(scope="module")
def bird_bank(tmp_path_factory, segmenter):
    """A bank of the 11 bird samples (flat folder: each bird its own class), built at input 56."""
    from tests.conftest import SAMPLES

    root = tmp_path_factory.mktemp("bank") / "birds"
    shutil.copytree(SAMPLES / "birds", root)
    drain(build_bank(segmenter, root, **FAST))
    return load_bank(root)


@pytest.fixture(scope="module")
def split(tmp_path_factory, segmenter):
    """bank/<class>/ with three birds per class, test/<class>/ with one bird each plus an unreadable file."""
    from tests.conftest import SAMPLES

    base = tmp_path_factory.mktemp("split")
    for label, names in SPLIT.items():
        (base / "bank" / label).mkdir(parents=True)
        for name in names:
            shutil.copy(SAMPLES / "birds" / name, base / "bank" / label / name)
        (base / "test" / label).mkdir(parents=True)
        shutil.copy(SAMPLES / "birds" / names[0], base / "test" / label / names[0])
    shutil.copy(SAMPLES / "birds" / "robin.jpg", base / "test" / "parrot" / "robin.jpg")
    (base / "test" / "corvid" / "broken.png").write_bytes(b"not a png")
    drain(build_bank(segmenter, base / "bank", **FAST))
    return load_bank(base / "bank"), base / "test"


@pytest.fixture(scope="module")
def robin():
    from tests.conftest import SAMPLES

    return load_image(SAMPLES / "birds" / "robin.jpg")


def _explain(segmenter, query, bank, **options):
    return drain(explain(segmenter, query, bank, allow_random_weights=True, **options))


def test_robin_is_explained_by_other_birds(segmenter, bird_bank, robin):
    explanation = _explain(segmenter, robin, bird_bank, k=5)
    names = [p.name for p in explanation.prototypes]
    assert len(names) == 5 and "robin.jpg" not in names  # same sha256: left out of its own retrieval
    assert explanation.query.path.endswith("robin.jpg") and explanation.segments_source == "cosegment"
    assert len(explanation.retrieval) == 5 and explanation.retrieval == sorted(explanation.retrieval, reverse=True)
    vote = explanation.vote()
    assert vote.total == len(explanation.matches) and int(vote.per_prototype.sum()) == vote.total
    assert (vote.prediction is None) == (vote.total == 0)
    height, width = robin.rgb.shape[:2]
    for match in explanation.matches:
        assert 0 <= match.query_xy[0] <= width - 1 and 0 <= match.query_xy[1] <= height - 1


def test_label_consistent_changes_only_the_kept_set(segmenter, bird_bank, robin):
    loose = _explain(segmenter, robin, bird_bank, k=5)
    strict = _explain(segmenter, robin, bird_bank, k=5, label_consistent=True)
    assert strict.label_consistent and not loose.label_consistent
    assert strict.matches == loose.matches and strict.retrieval == loose.retrieval
    agree = [m for m in loose.matches if m.query_label and m.query_label == m.prototype_label]
    assert strict.kept() == agree == loose.kept(True) and loose.kept() == loose.matches
    assert strict.vote().total == len(agree)


def test_written_json_has_keypoints_in_photo_pixels(segmenter, bird_bank, robin, tmp_path):
    explanation = _explain(segmenter, robin, bird_bank, k=3)
    png, js = write_explanation(explanation, tmp_path)
    assert png.is_file() and png.stat().st_size > 0
    data = json.loads(js.read_text())
    assert data["query"]["size"] == {"height": robin.rgb.shape[0], "width": robin.rgb.shape[1]}
    assert "x, y in photo pixels" in data["coordinates"] and data["picture"] == png.name
    sizes = {p.path: p.image_size for p in explanation.prototypes}
    for match in data["matches"]:
        (qx, qy), (px, py) = match["query"]["xy"], match["prototype"]["xy"]
        assert 0 <= qx <= robin.rgb.shape[1] - 1 and 0 <= qy <= robin.rgb.shape[0] - 1
        height, width = sizes[match["prototype"]["path"]]
        assert 0 <= px <= width - 1 and 0 <= py <= height - 1
        assert isinstance(match["query"]["label"], str) and isinstance(match["prototype"]["label"], str)
        assert -1.0 <= match["similarity"] <= 1.0
    assert data["vote"]["total"] == len(data["matches"])
    assert [r["rank"] for r in data["retrieval"]] == [0, 1, 2]


def test_a_bank_of_other_weights_is_refused_naming_both(segmenter, bird_bank, robin, tmp_path):
    other = dataclasses.replace(bird_bank, weights_id="dinov2-small-finetuned", weights_sha256="ab" * 32)
    with pytest.raises(ParamError) as info:
        _explain(segmenter, robin, other)
    assert "dinov2-small-finetuned" in str(info.value) and "random-init" in str(info.value)
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"some other weights")
    with pytest.raises(ParamError, match="random-init"):
        drain(explain(segmenter, robin, bird_bank, weights_path=weights))


def test_a_model_other_than_the_banks_is_refused(segmenter, bird_bank, robin):
    with pytest.raises(ParamError, match="vit_base_patch14_dinov2.lvd142m.*vit_small_patch14_dinov2.lvd142m"):
        _explain(segmenter, robin, bird_bank, model="vit_base_patch14_dinov2.lvd142m")
    with pytest.raises(ParamError, match="--segments"):
        _explain(segmenter, robin, bird_bank, segments="watershed")


def test_query_mask_priority(tmp_path):
    from tests.conftest import SAMPLES

    magpie = tmp_path / "magpie.png"
    shutil.copy(SAMPLES / "birds" / "magpie.png", magpie)
    alpha = np.asarray(Image.open(magpie).convert("RGBA"))[..., 3]
    mask = query_object_mask(magpie, alpha.shape)
    np.testing.assert_array_equal(mask, alpha >= 128)
    assert query_object_mask(SAMPLES / "birds" / "robin.jpg", (10, 10)) is None
    drawn = np.zeros(alpha.shape, np.uint8)
    drawn[:5, :5] = 255
    Image.fromarray(drawn).save(tmp_path / "magpie.mask.png")
    np.testing.assert_array_equal(query_object_mask(magpie, alpha.shape), drawn > 127)


def test_evaluate_keypoints_on_a_folder_split(segmenter, split, tmp_path):
    bank, test_dir = split
    reports = []
    result = drain(evaluate_keypoints(segmenter, bank, test_dir, k=3, allow_random_weights=True), reports.append)
    assert 0.0 <= result.top1 <= 1.0 and 0.0 <= result.zero_match_share <= 1.0
    assert result.n_queries == 4 and sorted(result.per_class) == ["corvid", "gull", "parrot"]
    assert result.skipped and result.skipped[0][0] == "corvid/broken.png"
    assert result.top1 == pytest.approx(np.mean([r["correct"] for r in result.rows]))
    assert result.matches_per_query == pytest.approx(np.mean([r["matches"] for r in result.rows]))
    assert result.zero_match_share == pytest.approx(np.mean([r["matches"] == 0 for r in result.rows]))
    assert result.per_class["parrot"]["queries"] == 2 and result.notes == []
    assert sum(c["correct"] for c in result.per_class.values()) == result.correct
    for row in result.rows:
        assert row["correct"] == (row["prediction"] == row["class"]) and (row["matches"] > 0 or not row["correct"])
    assert reports[-1].fraction == 1.0 and all(0 <= r.fraction <= 1 for r in reports)
    line = result.summary_line()
    assert line.startswith(f"keypoints: top-1 accuracy {result.top1:.4f} ({result.correct}/4 queries)")
    assert "1 skipped" in line
    path = result.write_csv(tmp_path / "rows.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [r["path"] for r in result.rows] and rows[0]["class"] == "corvid"


def test_evaluate_keypoints_errors(segmenter, split, tmp_path):
    bank, _ = split
    with pytest.raises(ParamError, match="not a folder"):
        drain(evaluate_keypoints(segmenter, bank, tmp_path / "nowhere", allow_random_weights=True))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParamError, match="no photos"):
        drain(evaluate_keypoints(segmenter, bank, tmp_path / "empty", allow_random_weights=True))


def test_test_classes_missing_from_the_bank_are_noted(segmenter, split, tmp_path, samples):
    bank, _ = split
    (tmp_path / "owl").mkdir()
    shutil.copy(samples / "birds" / "lark.png", tmp_path / "owl" / "lark.png")
    result = drain(evaluate_keypoints(segmenter, bank, tmp_path, k=2, allow_random_weights=True))
    assert result.top1 == 0.0 and len(result.notes) == 1 and "owl" in result.notes[0]
