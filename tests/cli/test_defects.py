"""CLI defects fixed: photos sharing a stem, folder entries skipped silently, Qt aborting without xcb libraries."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from tests.cli.conftest import run_cli


def _small(path, size=(320, 256)) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB").resize(size)


# --------------------------------------------------------------------------- photo.bmp and photo.webp


def test_photos_sharing_a_stem_get_distinct_outputs(monkeypatch, capsys, samples, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _small(samples / "quadrats" / "green_meadow.jpg").save(folder / "photo.bmp")
    _small(samples / "plants" / "dahlia.jpg").save(folder / "photo.webp", lossless=True)
    out = tmp_path / "out"
    code, text, _ = run_cli(monkeypatch, capsys, "segment", folder, "--backend", "vegetation-index", "--out", out)
    assert code == 0 and "processed 2, failed 0" in text
    assert not (out / "photo.json").exists()
    metas = {name: json.loads((out / f"{name}.json").read_text()) for name in ("photo.bmp", "photo.webp")}
    assert metas["photo.bmp"]["image"]["sha256"] != metas["photo.webp"]["image"]["sha256"]
    assert metas["photo.bmp"]["image"]["path"].endswith("photo.bmp")
    assert metas["photo.webp"]["image"]["path"].endswith("photo.webp")
    heat_bmp, heat_webp = (np.load(out / f"photo.{ext}.heatmap.npy") for ext in ("bmp", "webp"))
    assert heat_bmp.shape == heat_webp.shape == (256, 320) and not np.array_equal(heat_bmp, heat_webp)
    masks = [np.asarray(Image.open(out / f"photo.{ext}.mask.png")) for ext in ("bmp", "webp")]
    assert not np.array_equal(*masks)


def test_segment_help_documents_the_output_names(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, text, _ = run_cli(monkeypatch, capsys, "segment", "--help")
    assert code == 0 and "photo.bmp.mask.png" in " ".join(text.split())


# --------------------------------------------------------------------------- skipped folder entries


def _folder_with_oddities(samples, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _small(samples / "quadrats" / "green_meadow.jpg").save(folder / "meadow.jpg")
    _small(samples / "quadrats" / "moss_carpet.jpg").save(folder / "moss.png")
    frames = [_small(samples / "plants" / "dahlia.jpg"), _small(samples / "quadrats" / "forest_floor.jpg")]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    (folder / "a.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "b.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "link.jpg").symlink_to(folder / "gone.jpg")
    (folder / "x.jpg").mkdir()
    (folder / ".DS_Store").write_bytes(b"x")
    return folder


def test_segment_summary_counts_and_names_what_it_skipped(monkeypatch, capsys, samples, tmp_path):
    folder = _folder_with_oddities(samples, tmp_path)
    out = tmp_path / "out"
    code, text, _ = run_cli(monkeypatch, capsys, "segment", folder, "--backend", "vegetation-index", "--out", out)
    assert code == 0
    assert ("processed 3, failed 0, skipped 4: a.svg (not a supported image), b.heic (not a supported image), "
            "link.jpg (broken link), x.jpg (a folder)") in text
    assert (out / "anim.mask.png").is_file()  # the GIF is read (first frame)
    assert np.load(out / "anim.heatmap.npy").shape == (256, 320)


def test_a_folder_of_only_unsupported_files_says_why_nothing_ran(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    for name in ("IMG_1.HEIC", "IMG_2.HEIC"):
        (folder / name).write_bytes(b"\x00\x00\x00\x18ftypheic")
    code, text, _ = run_cli(monkeypatch, capsys, "segment", folder, "-b", "vegetation-index", "-o", tmp_path / "o")
    assert code == 1
    assert "processed 0, failed 0, skipped 2: IMG_1.HEIC (not a supported image), IMG_2.HEIC" in text


def test_export_names_folder_entries_that_are_not_photos(monkeypatch, capsys, samples, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "meadow.jpg")
    (folder / "notes.txt").write_text("plot 7")
    assert run_cli(monkeypatch, capsys, "segment", folder, "-b", "vegetation-index")[0] == 0
    code, text, _ = run_cli(monkeypatch, capsys, "export", folder, "--out", tmp_path / "export", "-f", "cover")
    assert code == 0 and "not photos 1: notes.txt (not a supported image)" in text


# --------------------------------------------------------------------------- Qt xcb libraries


@pytest.fixture
def x11_session(monkeypatch):
    """A Linux X11 session: DISPLAY set, no Qt platform chosen, no Wayland."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def _fake_loader(missing):
    def load(soname):
        if soname in missing:
            raise OSError(f"{soname}: cannot open shared object file: No such file or directory")
        return object()

    return load


def test_missing_xcb_libraries_lists_what_the_loader_cannot_load():
    from protolens.gui.app import XCB_LIBRARIES, missing_xcb_libraries

    tried = []
    missing = missing_xcb_libraries(lambda name: tried.append(name) or _fake_loader({"libxcb-cursor.so.0"})(name))
    assert missing == [("libxcb-cursor.so.0", "libxcb-cursor0")]
    assert tried == [soname for soname, _ in XCB_LIBRARIES]
    assert missing_xcb_libraries(_fake_loader(set())) == []


@pytest.mark.parametrize(("environ", "platform", "checked"), [
    ({"DISPLAY": ":0"}, "linux", True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, "linux", True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb:dpi=96"}, "linux", True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux", False),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland;xcb"}, "linux", False),
    ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
    ({}, "linux", False),
    ({"DISPLAY": ":0"}, "darwin", False),
    ({"DISPLAY": ":0"}, "win32", False),
])
def test_qt_platform_problem_only_when_xcb_will_be_used(environ, platform, checked):
    from protolens.gui.app import qt_platform_problem

    problem = qt_platform_problem(environ, platform, _fake_loader({"libxcb-icccm.so.4"}))
    assert (problem is not None) == checked
    assert qt_platform_problem(environ, platform, _fake_loader(set())) is None


def test_qt_platform_problem_names_libraries_and_the_apt_command():
    from protolens.gui.app import qt_platform_problem

    line = qt_platform_problem({"DISPLAY": ":0"}, "linux", _fake_loader({"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}))
    assert "\n" not in line
    assert line == ("error: Qt cannot open a window: system libraries missing for its xcb plugin: "
                    "libxcb-icccm.so.4, libxcb-keysyms.so.1; install them with: "
                    "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1")
    line = qt_platform_problem({"DISPLAY": ":0"}, "linux", _fake_loader({"libxcb-image.so.0"}))
    assert line.endswith("sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0")


def test_gui_without_xcb_libraries_prints_the_fix_and_exits(monkeypatch, capsys, x11_session, tmp_path):
    import protolens.gui.app as gui_app

    def no_qt(*args, **kwargs):
        raise AssertionError("Qt was started although its xcb plugin cannot load")

    monkeypatch.setattr(gui_app, "run_app", no_qt)
    monkeypatch.setattr(gui_app, "_load_library", _fake_loader({"libxcb-cursor.so.0", "libxcb-keysyms.so.1"}))
    code, _, err = run_cli(monkeypatch, capsys, "gui", tmp_path)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines == [
        "error: Qt cannot open a window: system libraries missing for its xcb plugin: libxcb-cursor.so.0, "
        "libxcb-keysyms.so.1; install them with: sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1",
        f"The headless twin works without them: protolens segment {tmp_path} --backend vegetation-index "
        "--out results/",
    ]


def test_gui_with_xcb_libraries_starts_qt(monkeypatch, capsys, x11_session):
    import protolens.gui.app as gui_app

    started = []
    monkeypatch.setattr(gui_app, "run_app", lambda *a, **k: started.append(a) or 0)
    monkeypatch.setattr(gui_app, "_load_library", _fake_loader(set()))
    code, _, err = run_cli(monkeypatch, capsys, "gui")
    assert code == 0 and started == [(None,)] and err == ""


def test_a_usage_error_is_one_line_not_a_traceback(monkeypatch, capsys, photo_folder):
    code, out, err = run_cli(monkeypatch, capsys, "segment", photo_folder, "-b", "vegetation-index",
                             "--threshold", "2")
    assert code == 2
    assert "Traceback" not in err and "Error: Invalid value for '--threshold'" in err
