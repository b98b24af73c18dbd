"""Atomic writes: the old file survives any failure, no temporaries are left, errors say why."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from protolens.core import atomic
from protolens.core.atomic import (
    atomic_writer,
    encode_png,
    read_npy,
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
    write_png_atomic,
)
from protolens.core.errors import StoreWriteError

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"


def _raise(code: int):
    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_write_bytes_creates_and_replaces(tmp_path):
    path = tmp_path / "sub" / "deeper" / "result.bin"
    write_bytes_atomic(path, b"first")
    assert path.read_bytes() == b"first"
    write_bytes_atomic(path, b"second, longer content")
    assert path.read_bytes() == b"second, longer content"
    write_bytes_atomic(path, b"")
    assert path.read_bytes() == b""
    assert [p.name for p in path.parent.iterdir()] == ["result.bin"]


def test_disk_full_on_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    path.write_bytes(b"old content")
    monkeypatch.setattr(atomic.os, "replace", _raise(errno.ENOSPC))
    with pytest.raises(StoreWriteError) as info:
        write_bytes_atomic(path, b"new content")
    monkeypatch.undo()
    message = str(info.value)
    assert "disk is full" in message
    assert str(path) in message and "nothing was overwritten" in message
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_disk_full_on_fsync_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "mask.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(atomic.os, "fsync", _raise(errno.ENOSPC))
    with pytest.raises(StoreWriteError, match="disk is full"):
        write_png_atomic(path, np.zeros((4, 4), np.uint8))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_disk_full_for_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "replace", _raise(errno.ENOSPC))
    with pytest.raises(StoreWriteError, match="disk is full"):
        write_json_atomic(tmp_path / "new.json", {"a": 1})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_permission_denied_message(tmp_path, monkeypatch):
    path = tmp_path / "x.bin"
    monkeypatch.setattr(atomic.os, "replace", _raise(errno.EACCES))
    with pytest.raises(StoreWriteError) as info:
        write_bytes_atomic(path, b"x")
    monkeypatch.undo()
    assert os.strerror(errno.EACCES) in str(info.value) and "disk is full" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StoreWriteError, match="cannot write"):
        write_bytes_atomic(blocker / "child.bin", b"x")
    assert blocker.read_text() == "a file, not a folder"


def test_error_inside_writer_keeps_old_file_and_propagates(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_writer(path) as handle:
            handle.write(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_text_mode_writer(tmp_path):
    path = tmp_path / "notes.txt"
    with atomic_writer(path, "w") as handle:
        handle.write("hello\nworld\n")
    assert path.read_text() == "hello\nworld\n"


def test_json_round_trip(tmp_path):
    value = {"species": "Myosotis scorpioides", "score": 0.5, "path": Path("a/b"), "list": [1, 2]}
    write_json_atomic(tmp_path / "x.json", value)
    text = (tmp_path / "x.json").read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert json.loads(text) == {"species": "Myosotis scorpioides", "score": 0.5, "path": "a/b", "list": [1, 2]}
    write_json_atomic(tmp_path / "u.json", {"name": "Vergissmeinnicht ✓"})
    assert "✓" in (tmp_path / "u.json").read_text(encoding="utf-8")  # UTF-8, not \u escapes


def test_npy_round_trip(tmp_path):
    array = np.random.default_rng(0).random((23, 37)).astype(np.float32)[:, ::2]  # non-contiguous view
    write_npy_atomic(tmp_path / "h.npy", array)
    back = read_npy(tmp_path / "h.npy")
    assert back.dtype == np.float32 and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(np.load(tmp_path / "h.npy"), array)


def test_read_npy_refuses_pickles(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        read_npy(tmp_path / "o.npy")


def test_png_mask_round_trip_with_pillow_and_cv2(tmp_path):
    mask = np.zeros((254, 380), np.uint8)
    mask[50:120, 100:300] = 255
    path = tmp_path / "mask.png"
    write_png_atomic(path, mask)
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (380, 254)
        np.testing.assert_array_equal(np.asarray(image), mask)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), mask)


def test_png_rgb_round_trip_keeps_channel_order(tmp_path):
    with Image.open(SAMPLES / "birds" / "robin.jpg") as image:
        rgb = np.asarray(image.convert("RGB"))
    data = encode_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    write_png_atomic(tmp_path / "robin.png", rgb)
    with Image.open(tmp_path / "robin.png") as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), rgb)  # red stays red (no BGR swap on disk)


def test_png_rgba_and_16bit_round_trip(tmp_path):
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.arange(10, dtype=np.uint8) * 25
    write_png_atomic(tmp_path / "a.png", rgba)
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(image), rgba)
    deep = (np.arange(80, dtype=np.uint16).reshape(8, 10) * 800)
    write_png_atomic(tmp_path / "d.png", deep)
    back = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, deep)


def test_encode_png_rejects_unsupported_arrays():
    with pytest.raises((ValueError, cv2.error)):
        encode_png(np.zeros((4, 4, 2), np.uint8))


# -- file mode ------------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask):
    umask(0o022)
    assert atomic.current_umask() == 0o022
    write_bytes_atomic(tmp_path / "shared.json", b"{}")
    with open(tmp_path / "plain.json", "w") as handle:  # what a normal write gives, for comparison
        handle.write("{}")
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644
    umask(0o077)
    write_json_atomic(tmp_path / "private.json", {"a": 1})
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_an_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "labels.txt"
    path.write_text("old")
    path.chmod(0o640)
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o640
    path.chmod(0o664)
    write_png_atomic(path, np.zeros((2, 2), np.uint8))
    assert path.stat().st_mode & 0o777 == 0o664
    assert [p.name for p in tmp_path.iterdir()] == ["labels.txt"]  # no temporaries left


def test_umask_falls_back_to_the_value_read_at_import(monkeypatch):
    real_open = open

    def no_proc(name, *args, **kwargs):
        if str(name) == "/proc/self/status":
            raise FileNotFoundError(name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert atomic.current_umask() == atomic._IMPORT_UMASK
