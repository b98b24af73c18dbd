"""Export defects of issue 9, each checked by reading the export back with the library users read it with."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from PIL import Image
from pycocotools.coco import COCO
from scipy import ndimage

from protolens.core.annotation import Annotation, save_annotation
from protolens.core.formats.png import read_label_png, write_label_png
from protolens.core.labels import LabelClass, LabelError, LabelSet, Project, save_project
from protolens.core.store import ResultStore
from protolens.services.annotations import export_masks, export_stems_for, photo_meta, photo_names

HEIGHT, WIDTH = 48, 64


def make_photo(path: Path, seed: int = 0) -> Path:
    """A small random RGB photo (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def annotate(path: Path, labelmap: np.ndarray) -> None:
    """Save ``labelmap`` as the photo's edited mask in the default store (next to the photo)."""
    save_annotation(ResultStore(), photo_meta(path), Annotation(labelmap, {"kind": "empty"}))


def set_classes(folder: Path, *classes: tuple[int, str]) -> None:
    """Give ``folder`` a project with ``classes`` (id, name)."""
    labels = LabelSet([LabelClass(i, name, (10 * i, 20, 30)) for i, name in classes])
    save_project(ResultStore().project_folder(folder), Project(labels))


def two_class_map(seed: int = 0) -> np.ndarray:
    labelmap = np.zeros((HEIGHT, WIDTH), np.uint8)
    labelmap[5:30, 5:30] = 1
    labelmap[10 + seed:20 + seed, 40:60] = 2
    labelmap[0:2, 0:2] = 255
    return labelmap


def speckled_map() -> np.ndarray:
    """Two big regions with holes plus many 1-3 px specks of both classes."""
    rng = np.random.default_rng(3)
    labelmap = np.zeros((HEIGHT, WIDTH), np.uint8)
    labelmap[4:40, 4:30] = 1
    labelmap[8:44, 36:60] = 2
    specks = rng.random((HEIGHT, WIDTH)) < 0.04
    labelmap[specks] = rng.choice(np.array([0, 1, 2], np.uint8), size=int(specks.sum()))
    return labelmap


def regions(labelmap: np.ndarray, min_area: int = 0) -> int:
    """4-connected class regions with at least ``min_area`` pixels (a plain scipy re-derivation)."""
    total = 0
    for class_id in (1, 2):
        components, count = ndimage.label(labelmap == class_id)  # default structure: 4-connectivity
        sizes = np.bincount(components.ravel())[1:]
        total += int((sizes >= min_area).sum())
    return total


# -- 3: speck removal and hole filling for polygon formats ----------------------------------------------------


def test_min_area_shrinks_polygon_exports_and_leaves_png_cover_and_rle_exact(tmp_path):
    photo = make_photo(tmp_path / "photos" / "floor.jpg")
    labelmap = speckled_map()
    annotate(photo, labelmap)
    store = ResultStore()
    plain = export_masks([photo], ["geojson", "png"], tmp_path / "plain", store=store)
    cleaned = export_masks([photo], ["geojson", "labelme", "coco", "png", "cover"], tmp_path / "clean", store=store,
                           coco_encoding="polygon", min_area=4, fill_holes=3)
    assert plain.exported == cleaned.exported == 1
    before = json.loads((tmp_path / "plain" / "floor.geojson").read_text())["features"]
    after = json.loads((tmp_path / "clean" / "floor.geojson").read_text())["features"]
    assert len(before) >= regions(labelmap) - 2 and len(after) < len(before) / 3
    assert len(after) <= regions(labelmap, min_area=4)  # filling holes can only join regions
    labelme = json.loads((tmp_path / "clean" / "floor.json").read_text())
    assert len([s for s in labelme["shapes"] if s["label"] != "_background_"]) < len(before) / 3
    coco = COCO(str(tmp_path / "clean" / "annotations.coco.json"))
    union = sum(coco.annToMask(a).astype(int) for a in coco.loadAnns(coco.getAnnIds()))
    assert (union <= 1).all() and np.count_nonzero(union) != np.count_nonzero(np.isin(labelmap, (1, 2)))
    # PNG and cover stay exact
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "clean" / "floor.labels.png")), labelmap)
    rows = {r["class_id"]: int(r["pixels"]) for r in csv.DictReader((tmp_path / "clean" / "cover.csv").open())}
    assert rows["1"] == np.count_nonzero(labelmap == 1)
    provenance = json.loads((tmp_path / "clean" / "provenance.json").read_text())
    assert provenance["cleanup"]["min_area"] == 4 and provenance["cleanup"]["fill_holes"] == 3
    assert provenance["cleanup"]["applies_to"] == ["geojson", "labelme", "coco"]
    report = provenance["photos"]["floor.jpg"]["cleanup"]
    assert int(report["removed_pixels"]["1"]) > 0 and int(report["removed_regions"]["2"]) > 0
    assert sum(report["filled_pixels"].values()) > 0
    assert "cleanup" not in json.loads((tmp_path / "plain" / "provenance.json").read_text())


def test_coco_rle_is_not_cleaned(tmp_path):
    photo = make_photo(tmp_path / "photos" / "floor.jpg")
    labelmap = speckled_map()
    annotate(photo, labelmap)
    export_masks([photo], ["coco"], tmp_path / "out", store=ResultStore(), min_area=50, fill_holes=50)
    coco = COCO(str(tmp_path / "out" / "annotations.coco.json"))
    for annotation in coco.loadAnns(coco.getAnnIds()):
        np.testing.assert_array_equal(coco.annToMask(annotation), labelmap == annotation["category_id"])
    assert "cleanup" not in json.loads((tmp_path / "out" / "provenance.json").read_text())


# -- 4: photos with the same stem or name -----------------------------------------------------------------


def test_same_stem_photos_get_distinct_files(tmp_path):
    folder = tmp_path / "photos"
    a_jpg, a_png = make_photo(folder / "a.jpg", 1), make_photo(folder / "a.png", 2)
    annotate(a_jpg, two_class_map(0))
    annotate(a_png, two_class_map(9))
    out = tmp_path / "out"
    summary = export_masks([folder], ["png", "geojson", "labelme", "coco"], out, store=ResultStore())
    assert summary.exported == 2
    for name, seed in (("a.jpg", 0), ("a.png", 9)):
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}.labels.png")), two_class_map(seed))
        document = json.loads((out / f"{name}.geojson").read_text())
        assert document["protolens"]["image"] == name
        assert json.loads((out / f"{name}.json").read_text())["imagePath"].endswith(name)
    assert (out / "a.jpg.geojson").read_bytes() != (out / "a.png.geojson").read_bytes()
    assert not (out / "a.labels.png").exists()
    coco = COCO(str(out / "annotations.coco.json"))
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == ["a.jpg", "a.png"]
    assert summary.files == len(summary.written) == 2 * 4 + 4  # per photo: 2 PNGs, geojson, labelme
    assert f"{summary.files} files written" in summary.line


def test_same_name_in_two_folders(tmp_path):
    first, second = make_photo(tmp_path / "photos" / "q.jpg", 1), make_photo(tmp_path / "photos2" / "q.jpg", 2)
    annotate(first, two_class_map(0))
    annotate(second, two_class_map(9))
    out = tmp_path / "out"
    summary = export_masks([first.parent, second.parent], ["png", "coco", "cover"], out, store=ResultStore())
    assert summary.exported == 2
    np.testing.assert_array_equal(np.asarray(Image.open(out / "q.jpg.labels.png")), two_class_map(0))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "q.jpg-2.labels.png")), two_class_map(9))
    coco = COCO(str(out / "annotations.coco.json"))
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == ["photos/q.jpg", "photos2/q.jpg"]
    for image in coco.dataset["images"]:  # file_name is relative to the common parent folder
        assert (tmp_path / image["file_name"]).is_file()
    images = {r["image"] for r in csv.DictReader((out / "cover.csv").open())}
    assert images == {"photos/q.jpg", "photos2/q.jpg"}
    provenance = json.loads((out / "provenance.json").read_text())["photos"]
    assert provenance["photos2/q.jpg"]["files"] == ["q.jpg-2.labels.png", "q.jpg-2.color.png"]


def test_stems_and_names_rules(tmp_path):
    files = [tmp_path / "x" / "provenance.jpg", tmp_path / "x" / "b.jpg", tmp_path / "y" / "B.JPG"]
    stems = export_stems_for(files)
    assert stems[files[0]] == "provenance.jpg"  # provenance.json is the export's own file
    assert stems[files[1]] == "b.jpg" and stems[files[2]] == "B.JPG-2"
    assert photo_names(files) == {files[0]: "x/provenance.jpg", files[1]: "x/b.jpg", files[2]: "y/B.JPG"}
    assert photo_names(files[:2]) == {files[0]: "provenance.jpg", files[1]: "b.jpg"}


# -- 5: several folders, several class lists ------------------------------------------------------------------


def test_two_folders_with_different_classes_export_one_coco_file(tmp_path):
    first, second = make_photo(tmp_path / "photos" / "a.jpg"), make_photo(tmp_path / "photos2" / "b.jpg")
    set_classes(first.parent, (1, "moss"))
    set_classes(second.parent, (1, "moss"), (2, "lichen"), (3, "Trifolium repens"))
    annotate(first, two_class_map() % 2)  # class 1 only (255 -> 1, 2 -> 0)
    annotate(second, np.where(two_class_map() == 255, 3, two_class_map()).astype(np.uint8))
    out = tmp_path / "out"
    summary = export_masks([first.parent, second.parent], ["png", "coco", "cover"], out, store=ResultStore())
    assert summary.exported == 2
    coco = COCO(str(out / "annotations.coco.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    names = {c["name"] for c in coco.loadCats([a["category_id"] for a in annotations])}
    assert names == {"moss", "lichen", "Trifolium repens"}
    assert (out / "labels.txt").read_text().splitlines() == ["0 background", "1 moss", "2 lichen",
                                                             "3 Trifolium repens", "255 ignore"]
    rows = list(csv.DictReader((out / "cover.csv").open()))
    assert {r["class_name"] for r in rows if r["image"] == "b.jpg"} >= {"moss", "lichen", "Trifolium repens"}
    assert not any(r["class_name"].startswith("class ") for r in rows)


def test_clashing_class_lists_name_both_folders(tmp_path):
    first, second = make_photo(tmp_path / "photos" / "a.jpg"), make_photo(tmp_path / "photos2" / "b.jpg")
    set_classes(first.parent, (1, "moss"), (2, "grass"))
    set_classes(second.parent, (1, "moss"), (2, "lichen"))
    annotate(first, two_class_map())
    annotate(second, two_class_map())
    with pytest.raises(LabelError) as info:
        export_masks([first.parent, second.parent], ["coco"], tmp_path / "out", store=ResultStore())
    message = str(info.value)
    assert str(first.parent) in message and str(second.parent) in message
    assert "'grass'" in message and "'lichen'" in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_given_project_is_used_for_one_folder(tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg")
    set_classes(photo.parent, (1, "stale name"))
    annotate(photo, two_class_map())
    project = Project(LabelSet([LabelClass(1, "moss", (1, 2, 3)), LabelClass(2, "lichen", (4, 5, 6))]))
    export_masks([photo.parent], ["coco"], tmp_path / "out", store=ResultStore(), project=project)
    coco = COCO(str(tmp_path / "out" / "annotations.coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["moss", "lichen"]


# -- 6: file modes ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_exports_are_readable_by_others_and_keep_an_existing_mode(tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg")
    annotate(photo, two_class_map())
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.geojson").write_text("{}")
    (out / "a.geojson").chmod(0o640)
    old = os.umask(0o022)
    try:
        summary = export_masks([photo], ["png", "geojson", "coco"], out, store=ResultStore())
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in summary.written}
    assert modes.pop("a.geojson") == 0o640
    assert set(modes.values()) == {0o644}, modes


# -- 7: the label PNG gives ids in every reader ----------------------------------------------------------------


def test_label_png_gives_class_ids_in_every_reader(tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg")
    labelmap = two_class_map()
    labelmap[40:44, 0:4] = 254
    annotate(photo, labelmap)
    out = tmp_path / "out"
    export_masks([photo], ["png"], out, store=ResultStore())
    path = out / "a.labels.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path)), labelmap)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), labelmap)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), labelmap)
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(path) as dataset:
        np.testing.assert_array_equal(dataset.read(1), labelmap)
    iio = pytest.importorskip("imageio.v3")
    np.testing.assert_array_equal(iio.imread(path), labelmap)


def test_colour_twin_labels_csv_and_old_palette_files(tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg")
    set_classes(photo.parent, (1, "moss"), (2, "lichen, grey"))
    annotate(photo, two_class_map())
    out = tmp_path / "out"
    export_masks([photo], ["png"], out, store=ResultStore())
    colours = np.asarray(Image.open(out / "a.color.png").convert("RGB"))
    assert tuple(colours[10, 10]) == (10, 20, 30) and tuple(colours[15, 50]) == (20, 20, 30)
    assert tuple(colours[0, 0]) == (255, 255, 255) and tuple(colours[47, 0]) == (0, 0, 0)
    np.testing.assert_array_equal(read_label_png(out / "a.color.png"), two_class_map())
    rows = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
    assert rows[2] == {"id": "2", "name": "lichen, grey", "r": "20", "g": "20", "b": "30"}
    assert [r["id"] for r in rows] == ["0", "1", "2", "255"]
    old = tmp_path / "old.labels.png"  # a palette .labels.png written by earlier versions
    write_label_png(old, two_class_map(), LabelSet.default())
    np.testing.assert_array_equal(read_label_png(old), two_class_map())
    np.testing.assert_array_equal(read_label_png(out / "a.labels.png"), two_class_map())
