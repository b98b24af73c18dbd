"""Batches: export names that never collide, and summaries that say what was skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from protolens.services.batch import BatchSummary, export_stems, segment_paths, skipped_text
from protolens.services.segment import Segmenter


def test_export_stems_are_the_photo_stems_when_unique():
    paths = [Path("q/meadow.jpg"), Path("q/moss.png"), Path("q/forest.tif")]
    assert export_stems(paths) == {paths[0]: "meadow", paths[1]: "moss", paths[2]: "forest"}


def test_shared_stems_keep_their_extension_case_insensitively():
    paths = [Path("q/photo.bmp"), Path("q/photo.webp"), Path("q/Photo.JPG"), Path("q/other.jpg")]
    stems = export_stems(paths)
    assert stems == {paths[0]: "photo.bmp", paths[1]: "photo.webp", paths[2]: "Photo.JPG", paths[3]: "other"}


def test_the_same_file_name_in_two_folders_is_numbered_in_batch_order():
    paths = [Path("day1/plot.jpg"), Path("day2/plot.jpg"), Path("day3/PLOT.jpg"), Path("day1/plot.png")]
    stems = export_stems(paths)
    assert [stems[p] for p in paths] == ["plot.jpg", "plot.jpg-2", "PLOT.jpg-3", "plot.png"]
    assert len({s.lower() for s in stems.values()}) == len(paths)


def test_a_stem_equal_to_another_photos_file_name_is_numbered():
    paths = [Path("a/x.jpg"), Path("a/x.png"), Path("b/x.jpg.png")]  # the third one's stem is "x.jpg"
    stems = export_stems(paths)
    assert [stems[p] for p in paths] == ["x.jpg", "x.png", "x.jpg-2"]


def test_summary_line_counts_and_names_skipped_entries():
    summary = BatchSummary(processed=3, skipped=[(Path("f/a.svg"), "not a supported image"),
                                                 (Path("f/x.jpg"), "a folder")])
    assert summary.line == "processed 3, failed 0, skipped 2: a.svg (not a supported image), x.jpg (a folder)"
    assert BatchSummary(processed=4).line == "processed 4, failed 0"


def test_summary_line_caps_the_names_it_lists():
    skipped = [(Path(f"f/n{i:02d}.txt"), "not a supported image") for i in range(13)]
    text = skipped_text(skipped)
    assert text.startswith("skipped 13: n00.txt (not a supported image), ")
    assert text.endswith("n09.txt (not a supported image), and 3 more") and "n10.txt" not in text


def test_segment_paths_writes_both_photos_that_share_a_stem(registry, samples, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(samples / "quadrats" / "green_meadow.jpg").save(folder / "photo.bmp")
    Image.open(samples / "plants" / "dahlia.jpg").save(folder / "photo.webp", lossless=True)
    shutil.copy(samples / "quadrats" / "moss_carpet.jpg", folder / "moss.jpg")
    (folder / "notes.txt").write_text("plot 7")
    summary = segment_paths([folder], "vegetation-index", segmenter=Segmenter(registry, disk_cache=None),
                            out_dir=tmp_path / "out")
    assert summary.processed == 3 and summary.failed == []
    assert [(p.name, r) for p, r in summary.skipped] == [("notes.txt", "not a supported image")]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{ext}" for stem in ("photo.bmp", "photo.webp", "moss") for ext in (".mask.png", ".heatmap.npy",
                                                                                  ".json"))
    assert np.load(out / "photo.bmp.heatmap.npy").shape != np.load(out / "photo.webp.heatmap.npy").shape
