"""Label classes of a project (a folder of photos): id, name, colour; 0 is background, 255 is ignore.

A label map is a (height, width) uint8 array of class ids. The project file lives in the folder's result
store (``.protolens/project.json`` next to the photos by default) and also holds the folder's scale in pixels per
centimetre, used for cover areas.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_json_atomic
from protolens.core.errors import ProtolensError

BACKGROUND = 0
IGNORE = 255
PROJECT_SCHEMA = "protolens.project/1"
#: Distinct colours (Tableau 20 order) given to new classes in turn.
DEFAULT_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229),
]


class LabelError(ProtolensError):
    """A label set or project file is invalid (duplicate id or name, id out of 1..254, bad colour)."""


@dataclass(frozen=True)
class LabelClass:
    """One class: ``id`` in 1..254, a non-empty ``name`` (species names welcome), ``color`` as (r, g, b)."""

    id: int
    name: str
    color: tuple[int, int, int]


@dataclass
class LabelSet:
    """The classes of a project, in display order. Background (0) and ignore (255) are implicit."""

    classes: list[LabelClass] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`LabelError` on duplicate ids or names, ids outside 1..254 or bad colours."""
        ids, names = set(), set()
        for label in self.classes:
            if not 1 <= label.id <= 254:
                raise LabelError(f"class id {label.id} is outside 1..254 (0 is background, 255 ignore)")
            if not label.name.strip():
                raise LabelError(f"class {label.id} has an empty name")
            if label.id in ids or label.name in names:
                raise LabelError(f"duplicate class id or name: {label.id} {label.name!r}")
            if len(label.color) != 3 or not all(0 <= int(c) <= 255 for c in label.color):
                raise LabelError(f"class {label.name!r}: colour must be three values in 0..255")
            ids.add(label.id)
            names.add(label.name)

    def by_id(self, class_id: int) -> LabelClass | None:
        return next((c for c in self.classes if c.id == class_id), None)

    def by_name(self, name: str) -> LabelClass | None:
        return next((c for c in self.classes if c.name == name), None)

    def add(self, name: str, color: tuple[int, int, int] | None = None, class_id: int | None = None) -> LabelClass:
        """Add a class (next free id and colour unless given); returns it. Raises :class:`LabelError`."""
        used = {c.id for c in self.classes}
        if class_id is None:
            class_id = next((i for i in range(1, 255) if i not in used), None)
            if class_id is None:
                raise LabelError("all 254 class ids are in use")
        if color is None:
            taken = {c.color for c in self.classes}
            color = next((c for c in DEFAULT_COLORS if tuple(c) not in taken),
                         DEFAULT_COLORS[len(self.classes) % len(DEFAULT_COLORS)])
        label = LabelClass(int(class_id), name.strip(), tuple(int(c) for c in color))
        self.classes.append(label)
        try:
            self.validate()
        except LabelError:
            self.classes.pop()
            raise
        return label

    def ensure(self, name: str) -> LabelClass:
        """The class called ``name``, added if missing (imports use this for unknown labels).

        Surrounding spaces are ignored, as :meth:`add` strips them from new names.
        """
        name = name.strip()
        return self.by_name(name) or self.add(name)

    def ids_from(self, label_map: Any) -> np.ndarray:
        """A backend's label map (:class:`protolens.core.layers.LabelMap`) in this set's class ids.

        Classes are matched by name (case-sensitive, spaces stripped); names not in the set are added (as an
        import does). Id 0 and negative ids become background. Returns (height, width) uint8 at photo size.
        Raises :class:`LabelError` when more than 254 classes would be needed.
        """
        full = label_map.full_resolution()
        lut = np.zeros(max(len(label_map.classes), 1), np.uint8)
        for index, name in enumerate(label_map.classes):
            if index > 0 and name.strip():
                lut[index] = self.ensure(name).id
        return np.where(full > 0, lut[np.clip(full, 0, len(lut) - 1)], 0).astype(np.uint8)

    def replace(self, class_id: int, *, name: str | None = None, color: tuple[int, int, int] | None = None) -> None:
        """Rename or recolour class ``class_id``. Raises :class:`LabelError`."""
        index = next((i for i, c in enumerate(self.classes) if c.id == class_id), None)
        if index is None:
            raise LabelError(f"no class with id {class_id}")
        old = self.classes[index]
        self.classes[index] = LabelClass(old.id, (name if name is not None else old.name).strip(),
                                         tuple(color) if color is not None else old.color)
        try:
            self.validate()
        except LabelError:
            self.classes[index] = old
            raise

    def remove(self, class_id: int) -> None:
        self.classes = [c for c in self.classes if c.id != class_id]

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 RGB: background black, ignore white, classes their colours, unused ids grey."""
        table = np.full((256, 3), 128, np.uint8)
        table[BACKGROUND] = (0, 0, 0)
        table[IGNORE] = (255, 255, 255)
        for label in self.classes:
            table[label.id] = label.color
        return table

    def name_of(self, class_id: int) -> str:
        """Name of any id: a class name, "background", "ignore" or "class <id>"."""
        if class_id == BACKGROUND:
            return "background"
        if class_id == IGNORE:
            return "ignore"
        label = self.by_id(class_id)
        return label.name if label else f"class {class_id}"

    def to_json(self) -> list[dict[str, Any]]:
        return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> LabelSet:
        """Raises :class:`LabelError` on malformed entries."""
        try:
            return cls([LabelClass(int(d["id"]), str(d["name"]), tuple(int(c) for c in d["color"])) for d in data])
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelError(f"invalid class list: {exc}") from None

    @classmethod
    def default(cls) -> LabelSet:
        """A new project's classes: one class, "plant"."""
        return cls([LabelClass(1, "plant", DEFAULT_COLORS[2])])


def merge_label_sets(sources: Sequence[tuple[str, LabelSet]]) -> LabelSet:
    """One label set holding the classes of several projects (e.g. the folders of one export).

    A class that appears in several sources with the same id and name is kept once, with the colour of
    the first source that has it. Classes keep the order in which they are first met.

    Parameters
    ----------
    sources : sequence of (str, LabelSet)
        Each source's name (a folder, for the error message) and its classes.

    Returns
    -------
    LabelSet
        A new set; the sources are not modified.

    Raises
    ------
    LabelError
        Two sources disagree: one id has different names, or one name has different ids. The message names
        both sources and every clashing class, e.g. ``id 2 is 'moss' in /a but 'lichen' in /b``.
    """
    merged: dict[int, tuple[LabelClass, str]] = {}
    clashes: list[str] = []
    for source, labels in sources:
        for label in labels.classes:
            known = merged.get(label.id)
            same_name = next(((c, s) for c, s in merged.values() if c.name == label.name), None)
            if known is not None and known[0].name != label.name:
                clashes.append(f"id {label.id} is {known[0].name!r} in {known[1]} but {label.name!r} in {source}")
            elif same_name is not None and same_name[0].id != label.id:
                clashes.append(f"{label.name!r} is id {same_name[0].id} in {same_name[1]} but id {label.id} "
                               f"in {source}")
            elif known is None:
                merged[label.id] = (label, source)
    if clashes:
        raise LabelError("the class lists clash: " + "; ".join(clashes)
                         + " (give the classes the same ids in every folder, or export the folders separately)")
    return LabelSet([label for label, _ in merged.values()])


@dataclass
class Project:
    """A folder's labels and scale. ``px_per_cm`` None means cover areas are not converted to cm²."""

    labels: LabelSet = field(default_factory=LabelSet.default)
    px_per_cm: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": PROJECT_SCHEMA, "labels": self.labels.to_json(), "px_per_cm": self.px_per_cm}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Project:
        if not isinstance(data, dict) or data.get("schema") != PROJECT_SCHEMA:
            raise LabelError("not a protolens project file")
        scale = data.get("px_per_cm")
        if scale is not None and (not isinstance(scale, (int, float)) or scale <= 0):
            raise LabelError(f"px_per_cm must be a positive number, not {scale!r}")
        return cls(LabelSet.from_json(data.get("labels", [])), float(scale) if scale is not None else None)


def project_path(store_folder: str | Path) -> Path:
    """The project file in a photo folder's store folder (``ResultStore.project_folder``)."""
    return Path(store_folder) / "project.json"


def load_project(store_folder: str | Path) -> Project:
    """The project in ``store_folder``, or a default one if there is none.

    Raises :class:`LabelError` if the file exists but is corrupt (it is left untouched).
    """
    path = project_path(store_folder)
    if not path.exists():
        return Project()
    try:
        return Project.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: corrupt project file ({exc})") from None


def save_project(store_folder: str | Path, project: Project) -> Path:
    """Write the project file into ``store_folder`` atomically; returns its path."""
    path = project_path(store_folder)
    write_json_atomic(path, project.to_json())
    return path
