"""`protolens export`: --min-area/--fill-holes, --format lists, several folders, honest summary line."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from tests.cli.conftest import run_cli
from tests.services.test_export_defects import annotate, make_photo, set_classes, speckled_map, two_class_map


def test_min_area_cuts_geojson_features_and_is_recorded(monkeypatch, capsys, tmp_path):
    photo = make_photo(tmp_path / "photos" / "forest_floor.jpg")
    annotate(photo, speckled_map())
    code, text, _ = run_cli(monkeypatch, capsys, "export", photo.parent, "-f", "geojson", "--out", tmp_path / "plain")
    assert code == 0 and "exported 1, skipped 0 (no mask), failed 0; 2 files written" in text
    code, text, _ = run_cli(monkeypatch, capsys, "export", photo.parent, "--format", "geojson,png", "--out",
                            tmp_path / "clean", "--min-area", "4", "--fill-holes", "3")
    assert code == 0 and "exported 1" in text
    before = json.loads((tmp_path / "plain" / "forest_floor.geojson").read_text())["features"]
    after = json.loads((tmp_path / "clean" / "forest_floor.geojson").read_text())["features"]
    assert len(before) > 40 and 0 < len(after) <= 2
    provenance = json.loads((tmp_path / "clean" / "provenance.json").read_text())
    assert provenance["cleanup"] == {"min_area": 4, "fill_holes": 3, "connectivity": 4, "applies_to": ["geojson"]}
    report = provenance["photos"]["forest_floor.jpg"]["cleanup"]
    assert sum(report["removed_pixels"].values()) > 0 and sum(report["filled_pixels"].values()) > 0
    labels = np.asarray(Image.open(tmp_path / "clean" / "forest_floor.labels.png"))
    np.testing.assert_array_equal(labels, speckled_map())  # the PNG stays exact
    code, _, err = run_cli(monkeypatch, capsys, "export", photo.parent, "--out", tmp_path / "x", "--min-area", "-1")
    assert code == 2 and "--min-area" in err


def test_format_lists_comma_separated_or_repeated(monkeypatch, capsys, tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg")
    annotate(photo, two_class_map())
    code, _, _ = run_cli(monkeypatch, capsys, "export", photo.parent, "--format", "png,geojson", "--out",
                         tmp_path / "comma")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "comma").iterdir()) == [
        "a.color.png", "a.geojson", "a.labels.png", "labels.csv", "labels.txt", "provenance.json"]
    code, _, _ = run_cli(monkeypatch, capsys, "export", photo.parent, "-f", "png", "-f", "geojson", "--out",
                         tmp_path / "repeated")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "repeated").iterdir()) == sorted(
        p.name for p in (tmp_path / "comma").iterdir())


def test_a_format_name_given_as_a_photo_says_use_the_comma_form(monkeypatch, capsys, tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg")
    annotate(photo, two_class_map())
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "export", photo.parent, "--format", "png", "geojson", "--out",
                           tmp_path / "out")
    assert code == 1
    assert "error: geojson is a format name, not a photo: use --format png,geojson" in err
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(monkeypatch, capsys, "export", photo.parent, "-f", "png,tiff", "--out", tmp_path / "out")
    assert code == 1 and "unknown format(s) tiff" in err


def test_two_folders_merge_classes_and_same_names_do_not_overwrite(monkeypatch, capsys, tmp_path):
    first, second = make_photo(tmp_path / "photos" / "q.jpg", 1), make_photo(tmp_path / "photos2" / "q.jpg", 2)
    set_classes(first.parent, (1, "moss"))
    set_classes(second.parent, (1, "moss"), (2, "lichen"))
    annotate(first, (two_class_map() == 1).astype(np.uint8))
    annotate(second, two_class_map(9))
    out = tmp_path / "out"
    code, text, _ = run_cli(monkeypatch, capsys, "export", first.parent, second.parent, "-f", "png,coco",
                            "--out", out)
    assert code == 0 and "exported 2, skipped 0 (no mask), failed 0; 8 files written" in text
    coco = COCO(str(out / "annotations.coco.json"))
    categories = coco.loadCats([a["category_id"] for a in coco.loadAnns(coco.getAnnIds())])
    assert {c["name"] for c in categories} == {"moss", "lichen"}
    assert "2 lichen" in (out / "labels.txt").read_text().splitlines()
    assert (out / "q.jpg.labels.png").exists() and (out / "q.jpg-2.labels.png").exists()
    set_classes(second.parent, (1, "lichen"))
    code, _, err = run_cli(monkeypatch, capsys, "export", first.parent, second.parent, "--out", tmp_path / "clash")
    assert code == 1 and str(first.parent) in err and str(second.parent) in err and "'lichen'" in err
