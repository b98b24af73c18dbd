"""Readers of the CUB-200-2011 style part annotation files a prototype bank may carry.

Formats (one record per line, fields separated by white space, blank lines ignored):

- ``parts.txt``: ``<part_id> <part name, may contain spaces>``, ids 1..P (each once, any order).
- ``images.txt``: ``<image_id> <path relative to the bank folder>``.
- ``part_locs.txt``: ``<image_id> <part_id> <x> <y> <visible>``; x, y are photo pixels of that image
  (origin top-left; CUB), visible is 0 or 1 (CUB writes invisible parts as ``0.0 0.0 0``).

Every malformed line raises :class:`~protolens.core.errors.ParamError` naming the file and the line number.
Used for the "bank" segment source of the keypoint-labeling classifier (KLC, seed 002, step 2;
METHODS.md §4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from protolens.core.errors import ParamError


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line; ParamError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ParamError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield number, line


def _bad(path: str | Path, number: int, what: str) -> ParamError:
    return ParamError(f"{Path(path)}: line {number}: {what}")


def _int(path: str | Path, number: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad(path, number, f"{what} {text!r} is not an integer") from None


def _keyed_text(path: str | Path, key: str, value: str, minimum: int | None = None) -> dict[int, str]:
    """``<key> <value>`` lines (the value may contain spaces) as key -> value, in file order.

    ParamError naming the line for a line without a value, a non-integer key, a key below ``minimum`` or a key
    that appears twice.
    """
    what = key.replace("_", " ")
    found: dict[int, str] = {}
    for number, line in _lines(path):
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise _bad(path, number, f"expected '<{key}> <{value}>'")
        ident = _int(path, number, fields[0], what)
        if minimum is not None and ident < minimum:
            raise _bad(path, number, f"{what} {ident} must be >= {minimum}")
        if ident in found:
            raise _bad(path, number, f"{what} {ident} appears twice")
        found[ident] = fields[1].strip()
    return found


def read_part_names(path: str | Path) -> list[str]:
    """Part names of a CUB ``parts.txt`` (``<part_id> <name>`` per line), in part id order.

    Returns
    -------
    list of str
        ``names[v - 1]`` is the name of part v; ids must be exactly 1..P.

    Raises
    ------
    ParamError
        Unreadable file, a line without a name, a non-integer or duplicate id, or ids that are not 1..P
        (the message names the file and, for a bad line, its number).
    """
    names = _keyed_text(path, "part_id", "name", minimum=1)
    missing = sorted(set(range(1, len(names) + 1)) - set(names))
    if missing:
        raise ParamError(f"{Path(path)}: part ids must be 1..{len(names)}; missing {missing[:5]}")
    return [names[i] for i in range(1, len(names) + 1)]


def read_image_ids(path: str | Path) -> dict[int, str]:
    """Image ids of a CUB ``images.txt`` (``<image_id> <relative/path.jpg>`` per line).

    Returns
    -------
    dict of int to str
        image id -> path relative to the bank folder (``/`` separated, as written).

    Raises
    ------
    ParamError
        Unreadable file, a line without a path, a non-integer or duplicate id.
    """
    return _keyed_text(path, "image_id", "relative path")


def _visible(path: str | Path, number: int, text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value not in (0.0, 1.0):
        raise _bad(path, number, f"visible flag {text!r} must be 0 or 1")
    return value == 1.0


def read_part_locations(path: str | Path) -> dict[int, list[tuple[int, float, float, bool]]]:
    """Part locations of a CUB ``part_locs.txt`` (``<image_id> <part_id> <x> <y> <visible>`` per line).

    Returns
    -------
    dict of int to list of (int, float, float, bool)
        image id -> ``(part_id, x, y, visible)`` in file order; (x, y) photo pixels, origin top-left.

    Raises
    ------
    ParamError
        Unreadable file, a line without exactly five fields, non-numeric or non-finite values, a part id
        below 1, or a visible flag other than 0/1 (the message names the file and the line number).
    """
    locations: dict[int, list[tuple[int, float, float, bool]]] = {}
    for number, line in _lines(path):
        fields = line.split()
        if len(fields) != 5:
            raise _bad(
                path, number, f"expected '<image_id> <part_id> <x> <y> <visible>', got {len(fields)} fields"
            )
        image_id = _int(path, number, fields[0], "image id")
        part_id = _int(path, number, fields[1], "part id")
        if part_id < 1:
            raise _bad(path, number, f"part id {part_id} must be >= 1")
        try:
            x, y = float(fields[2]), float(fields[3])
        except ValueError:
            raise _bad(path, number, f"coordinates {fields[2]!r} {fields[3]!r} are not numbers") from None
        if not (abs(x) < float("inf") and abs(y) < float("inf")):
            raise _bad(path, number, "coordinates must be finite")
        locations.setdefault(image_id, []).append((part_id, x, y, _visible(path, number, fields[4])))
    return locations
