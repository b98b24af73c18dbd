"""The VOC-style reader: classes, splits, palette masks, and bad or missing masks skipped by name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from protolens.core.errors import ImageReadError, ParamError
from protolens.core.segdata import (
    VOC_CLASSES,
    SegDataset,
    SegSample,
    parse_class_split,
    read_class_list,
    read_voc,
)


def _labels(h: int, w: int, value: int) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[1:3, 1:4] = value
    labels[0, 0] = 255
    return labels


def _palette_png(path, labels):
    image = Image.fromarray(labels, mode="P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


@pytest.fixture
def voc(tmp_path):
    """a, b good (palette masks), c mask missing, d corrupt mask, e mask of another size, f class 9."""
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(1)
    for name in "abcdef":
        Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    _palette_png(root / "SegmentationClass" / "a.png", _labels(6, 8, 1))
    _palette_png(root / "SegmentationClass" / "b.png", _labels(6, 8, 2))
    (root / "SegmentationClass" / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _palette_png(root / "SegmentationClass" / "e.png", _labels(5, 8, 1))
    _palette_png(root / "SegmentationClass" / "f.png", _labels(6, 8, 9))
    (root / "labels.txt").write_text("0 background\n1 cat\n2 wild dog\n255 ignore\n")
    return root


def test_voc_reads_palette_ids_and_reports_bad_masks_by_name(voc):
    data = read_voc(voc)
    assert data.classes == ["background", "cat", "wild dog"]
    assert [s.name for s in data.samples] == ["a", "b"]
    reasons = dict(data.skipped)
    assert set(reasons) == {"c", "d", "e", "f"}
    assert "missing" in reasons["c"]
    assert "d.png" in reasons["d"]
    assert "8x5" in reasons["e"]
    assert "[9]" in reasons["f"]
    image, labels = data.load(1)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(labels, _labels(6, 8, 2))  # palette index = id, not the palette colour


def test_splits_follow_image_sets_and_name_their_missing_masks(voc):
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("b\nc\n")
    (sets / "val.txt").write_text("a\n")
    data = read_voc(voc)
    assert data.splits() == ["train", "val"]
    assert {n for n, _ in data.skipped} == {"c"}  # d, e, f are listed in no split: not part of the data set
    train = data.split("train")
    assert [s.name for s in train.samples] == ["b"] and [n for n, _ in train.skipped] == ["c"]
    assert [s.name for s in data.split("val").samples] == ["a"]
    with pytest.raises(ParamError, match="train, val"):
        data.split("test")


def test_class_lists(tmp_path, voc):
    (voc / "labels.txt").unlink()
    assert read_voc(voc).classes == VOC_CLASSES
    (voc / "class_names.txt").write_text("background\ncat\ndog\n")
    assert read_voc(voc).classes == ["background", "cat", "dog"]
    gaps = tmp_path / "labels.txt"
    gaps.write_text("1 moss\n3 Trifolium repens\n")
    assert read_class_list(gaps) == ["background", "moss", "unused-2", "Trifolium repens"]
    gaps.write_text("1 moss\n1 lichen\n")
    with pytest.raises(ParamError, match="repeated"):
        read_class_list(gaps)


def test_parse_class_split():
    classes = ["background", "cat", "wild dog", "Bird"]
    assert parse_class_split("wild dog, cat", classes) == [2, 1]
    assert parse_class_split("bird,3,cat,cat", classes) == [3, 1]
    assert parse_class_split("", classes) == []
    with pytest.raises(ParamError, match="'horse'"):
        parse_class_split("cat,horse", classes)


def test_holdout_is_seeded_and_disjoint(tmp_path):
    samples = [SegSample(tmp_path / f"{i}.jpg", tmp_path / f"{i}.png", str(i)) for i in range(10)]
    data = SegDataset(["background", "x"], samples)
    train, val = data.holdout(0.3, seed=4)
    assert len(val) == 3 and len(train) == 7
    assert not {s.name for s in train.samples} & {s.name for s in val.samples}
    assert [s.name for s in data.holdout(0.3, seed=4)[1].samples] == [s.name for s in val.samples]
    assert len(SegDataset(["b"], samples[:2]).holdout(0.1)[1]) == 1
    with pytest.raises(ParamError):
        data.holdout(1.0)


def test_load_unlabelled_and_vanished_files(tmp_path, voc):
    data = read_voc(voc)
    unlabelled = SegDataset(data.classes, [SegSample(data.samples[0].image, None, "a")])
    _, labels = unlabelled.load(0)
    assert (labels == 255).all() and labels.shape == (6, 8)
    data.samples[0].mask.unlink()
    with pytest.raises(ImageReadError, match="a.png"):
        data.load(0)


def test_not_a_voc_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="JPEGImages"):
        read_voc(tmp_path)
