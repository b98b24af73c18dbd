"""CUB-style part files: parsing and malformed lines (ParamError naming the file and line)."""

from __future__ import annotations

import pytest

from protolens.core.errors import ParamError
from protolens.core.parts import read_image_ids, read_part_locations, read_part_names


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_part_names_in_id_order(tmp_path):
    path = _write(tmp_path, "parts.txt", "2 left wing\n1 back\n\n3 beak  \n")
    assert read_part_names(path) == ["back", "left wing", "beak"]


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("1 back\nx beak\n", 2, "not an integer"),
        ("1 back\n2\n", 2, "expected"),
        ("1 back\n\n1 beak\n", 3, "appears twice"),
        ("0 back\n", 1, ">= 1"),
    ],
)
def test_read_part_names_malformed_lines(tmp_path, text, line, what):
    path = _write(tmp_path, "parts.txt", text)
    with pytest.raises(ParamError, match=f"parts.txt: line {line}: .*{what}"):
        read_part_names(path)


def test_read_part_names_gap_and_missing_file(tmp_path):
    with pytest.raises(ParamError, match=r"1\.\.2; missing \[2\]"):
        read_part_names(_write(tmp_path, "parts.txt", "1 back\n3 beak\n"))
    with pytest.raises(ParamError, match="no such file"):
        read_part_names(tmp_path / "absent.txt")


def test_read_image_ids(tmp_path):
    path = _write(tmp_path, "images.txt", "1 001.Albatross/a 1.jpg\n7 002.Auklet/b.jpg\n")
    assert read_image_ids(path) == {1: "001.Albatross/a 1.jpg", 7: "002.Auklet/b.jpg"}
    with pytest.raises(ParamError, match="images.txt: line 2: .*appears twice"):
        read_image_ids(_write(tmp_path, "images.txt", "1 a.jpg\n1 b.jpg\n"))
    with pytest.raises(ParamError, match="images.txt: line 1: expected"):
        read_image_ids(_write(tmp_path, "images.txt", "a.jpg\n"))


def test_read_part_locations(tmp_path):
    path = _write(tmp_path, "part_locs.txt", "1 1 10.5 20.0 1\n1 2 0.0 0.0 0\n2 1 3 4 1.0\n")
    assert read_part_locations(path) == {
        1: [(1, 10.5, 20.0, True), (2, 0.0, 0.0, False)],
        2: [(1, 3.0, 4.0, True)],
    }


@pytest.mark.parametrize(
    "bad, what",
    [
        ("1 1 10 20", "5 fields|got 4 fields"),
        ("1 1 ten 20 1", "not numbers"),
        ("1 1 10 20 2", "visible flag"),
        ("1 x 10 20 1", "not an integer"),
        ("1 0 10 20 1", ">= 1"),
        ("1 1 nan 20 1", "finite"),
    ],
)
def test_read_part_locations_malformed_lines(tmp_path, bad, what):
    path = _write(tmp_path, "part_locs.txt", f"1 1 1 1 1\n\n{bad}\n")
    with pytest.raises(ParamError, match=f"part_locs.txt: line 3: .*({what})"):
        read_part_locations(path)
