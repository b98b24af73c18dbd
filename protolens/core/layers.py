"""Typed optional layers of a backend result, beside its main heatmap.

Every layer covers the whole photo, like :class:`~protolens.core.types.Heatmap`: a grid cell (0, 0) is the
photo's top-left and the last cell its bottom-right, whatever the grid's own resolution. Points are (x, y)
in photo pixels with the origin at the photo's top-left corner (x to the right, y down).

Each layer knows how to become files (:meth:`to_files`: a JSON entry for the sidecar plus ``{suffix: bytes}``
written beside it) and how to come back (:meth:`from_files`). Arrays are stored as ``.npy``/``.npz``
without pickles; names and classes go in the JSON.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from protolens.core.atomic import load_array_bytes, load_npz_arrays

Reader = Callable[[str], bytes]
"""Reads a stored file by its suffix (the part after ``<photo name>.<result key>.``)."""


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _resize_nearest(values: np.ndarray, height: int, width: int) -> np.ndarray:
    if values.shape == (height, width):
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass
class LabelMap:
    """Class ids per grid cell, with their names.

    Attributes
    ----------
    ids : numpy.ndarray
        (rows, cols) int32 class ids; 0 is background, ``classes[i]`` names id ``i``; -1 = no class.
    classes : list of str
        Class names indexed by id (``classes[0]`` is the background's name, usually ``"background"``).
    image_size : tuple of int
        (height, width) of the photo in pixels.
    """

    ids: np.ndarray
    classes: list[str]
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int32)
        if self.ids.ndim != 2:
            raise ValueError(f"label map ids must be 2-D (rows, cols), got {self.ids.shape}")
        if self.ids.size and int(self.ids.max()) >= len(self.classes):
            raise ValueError(f"label map uses id {int(self.ids.max())} but names only {len(self.classes)} classes")
        self.classes = [str(c) for c in self.classes]
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def full_resolution(self) -> np.ndarray:
        """Ids at the photo's size: (height, width) int32, nearest-neighbour resampled."""
        return _resize_nearest(self.ids, *self.image_size)

    def to_files(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        return ({"file": "labelmap.npy", "shape": list(self.ids.shape), "classes": self.classes},
                {"labelmap.npy": _npy(self.ids)})

    @classmethod
    def from_files(cls, entry: dict[str, Any], read: Reader, image_size: tuple[int, int]) -> LabelMap:
        return cls(load_array_bytes(read(entry["file"])), list(entry["classes"]), image_size)


@dataclass
class Regions:
    """Labelled region proposals, one mask each (they may overlap).

    Attributes
    ----------
    masks : numpy.ndarray
        (n, rows, cols) bool, one mask per region on a grid covering the photo.
    labels : list of str
        n labels (a class name, or "" for an unlabelled proposal).
    scores : numpy.ndarray
        (n,) float32 confidence per region (1.0 when the backend has none).
    image_size : tuple of int
        (height, width) of the photo in pixels.
    """

    masks: np.ndarray
    labels: list[str]
    scores: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.masks.ndim != 3 or not (len(self.masks) == len(self.labels) == len(self.scores)):
            raise ValueError("regions need masks (n, rows, cols), n labels and n scores")
        self.labels = [str(label) for label in self.labels]
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def mask(self, index: int) -> np.ndarray:
        """Region ``index`` at the photo's size: (height, width) bool."""
        return _resize_nearest(self.masks[index].astype(np.uint8), *self.image_size).astype(bool)

    def to_files(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        packed = np.packbits(self.masks.reshape(len(self.masks), -1), axis=1)
        return ({"file": "regions.npz", "count": len(self.labels), "shape": list(self.masks.shape),
                 "labels": self.labels},
                {"regions.npz": _npz(packed=packed, scores=self.scores)})

    @classmethod
    def from_files(cls, entry: dict[str, Any], read: Reader, image_size: tuple[int, int]) -> Regions:
        arrays = load_npz_arrays(read(entry["file"]))
        n, rows, cols = entry["shape"]
        masks = np.unpackbits(arrays["packed"], axis=1, count=rows * cols).reshape(n, rows, cols).astype(bool)
        return cls(masks, list(entry["labels"]), arrays["scores"], image_size)


@dataclass
class Keypoints:
    """Points in photo pixels with labels and scores, and match pairs between them.

    Points of several images can share one layer (a query and its prototypes): ``groups[i]`` names the image
    point ``i`` lies in (``"query"`` for the photo itself, else a prototype's path or id).

    Attributes
    ----------
    xy : numpy.ndarray
        (n, 2) float32 (x, y) in pixels of the image the point lies in; origin top-left.
    labels : list of str
        n part or class labels ("" when unlabelled).
    scores : numpy.ndarray
        (n,) float32 per-point score.
    groups : list of str
        n image names (see above); default all ``"query"``.
    pairs : numpy.ndarray
        (m, 2) int32 index pairs (i, j) into the points: a match from point i to point j (best buddies).
    pair_scores : numpy.ndarray
        (m,) float32 score per pair (e.g. cosine similarity).
    """

    xy: np.ndarray
    labels: list[str]
    scores: np.ndarray
    groups: list[str] = field(default_factory=list)
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    pair_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, dtype=np.float32).reshape(-1, 2)
        n = len(self.xy)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = [str(label) for label in self.labels]
        self.groups = [str(g) for g in self.groups] or ["query"] * n
        self.pairs = np.asarray(self.pairs, dtype=np.int32).reshape(-1, 2)
        self.pair_scores = np.asarray(self.pair_scores, dtype=np.float32).reshape(-1)
        if not (len(self.labels) == len(self.scores) == len(self.groups) == n):
            raise ValueError("keypoints need n points, n labels, n scores and n groups")
        if len(self.pair_scores) != len(self.pairs):
            raise ValueError("keypoint pairs need one score each")
        if len(self.pairs) and (self.pairs.min() < 0 or self.pairs.max() >= n):
            raise ValueError("keypoint pairs index points that do not exist")

    def in_group(self, group: str = "query") -> np.ndarray:
        """Indices of the points lying in image ``group``: (k,) int64."""
        return np.flatnonzero(np.asarray(self.groups) == group)

    def to_files(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        return ({"file": "keypoints.npz", "count": len(self.xy), "labels": self.labels, "groups": self.groups,
                 "coordinates": "x, y in pixels; origin top-left"},
                {"keypoints.npz": _npz(xy=self.xy, scores=self.scores, pairs=self.pairs,
                                       pair_scores=self.pair_scores)})

    @classmethod
    def from_files(cls, entry: dict[str, Any], read: Reader, image_size: tuple[int, int]) -> Keypoints:
        arrays = load_npz_arrays(read(entry["file"]))
        return cls(arrays["xy"], list(entry["labels"]), arrays["scores"], list(entry["groups"]), arrays["pairs"],
                   arrays["pair_scores"])


@dataclass
class ScoresTable:
    """Named scores, e.g. species with probabilities, best first.

    Attributes
    ----------
    names : list of str
        n row names (species, classes, prototypes).
    values : numpy.ndarray
        (n,) float32 scores; rows are kept sorted by descending value.
    column : str
        What the values are ("probability", "votes", "cover %").
    """

    names: list[str]
    values: np.ndarray
    column: str = "score"

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32).reshape(-1)
        if len(values) != len(self.names):
            raise ValueError("a scores table needs one value per name")
        order = np.argsort(-values, kind="stable")
        self.names = [str(self.names[i]) for i in order]
        self.values = values[order]

    def rows(self) -> list[tuple[str, float]]:
        """(name, value) pairs, best first."""
        return [(n, float(v)) for n, v in zip(self.names, self.values, strict=True)]

    def to_files(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        return ({"column": self.column, "rows": [[n, v] for n, v in self.rows()]}, {})

    @classmethod
    def from_files(cls, entry: dict[str, Any], read: Reader, image_size: tuple[int, int]) -> ScoresTable:
        rows = entry.get("rows", [])
        return cls([r[0] for r in rows], np.array([r[1] for r in rows], np.float32), entry.get("column", "score"))


@dataclass
class ResultLayers:
    """The optional layers of a result (see :class:`protolens.core.types.BackendResult` for each one's
    shape and dtype). ``heatmaps`` maps names to :class:`protolens.core.types.Heatmap`."""

    heatmaps: dict[str, Any] = field(default_factory=dict)
    label_map: LabelMap | None = None
    regions: Regions | None = None
    keypoints: Keypoints | None = None
    scores_table: ScoresTable | None = None

    def __bool__(self) -> bool:
        return bool(self.heatmaps) or any(v is not None for v in (self.label_map, self.regions, self.keypoints,
                                                                  self.scores_table))

    def to_files(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Every layer as ({layer name: JSON entry}, {file suffix: bytes})."""
        entries: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if self.heatmaps:
            entries["heatmaps"], more = heatmaps_to_files(self.heatmaps)
            files.update(more)
        for name in LAYER_TYPES:
            layer = getattr(self, name)
            if layer is not None:
                entries[name], more = layer.to_files()
                files.update(more)
        return entries, files

    @classmethod
    def from_files(cls, entries: dict[str, Any], read: Reader, image_size: tuple[int, int]) -> ResultLayers:
        """Inverse of :meth:`to_files`; raises ``KeyError``/``ValueError``/``OSError`` on damaged files."""
        layers = cls()
        if "heatmaps" in entries:
            layers.heatmaps = heatmaps_from_files(entries["heatmaps"], read, image_size)
        for name, layer_cls in LAYER_TYPES.items():
            if name in entries:
                setattr(layers, name, layer_cls.from_files(entries[name], read, image_size))
        return layers


def heatmaps_to_files(heatmaps: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Named heatmaps ({name: Heatmap}) as one ``.npz`` (names in JSON, keyed by position)."""
    names = list(heatmaps)
    arrays = {f"h{i}": heatmaps[name].values for i, name in enumerate(names)}
    return ({"file": "heatmaps.npz", "names": names}, {"heatmaps.npz": _npz(**arrays)})


def heatmaps_from_files(entry: dict[str, Any], read: Reader, image_size: tuple[int, int]) -> dict[str, Any]:
    from protolens.core.types import Heatmap

    arrays = load_npz_arrays(read(entry["file"]))
    return {name: Heatmap(arrays[f"h{i}"], image_size) for i, name in enumerate(entry["names"])}


LAYER_TYPES: dict[str, Any] = {"label_map": LabelMap, "regions": Regions, "keypoints": Keypoints,
                               "scores_table": ScoresTable}
"""Sidecar section name -> layer class, for the layers stored one per result."""


def describe(entry: dict[str, Any]) -> str:
    """A one-line description of a stored layers entry (for ``protolens results list``)."""
    parts = []
    if "heatmaps" in entry:
        parts.append(f"{len(entry['heatmaps']['names'])} heatmaps")
    if "label_map" in entry:
        parts.append(f"label map ({len(entry['label_map']['classes'])} classes)")
    if "regions" in entry:
        parts.append(f"{entry['regions']['count']} regions")
    if "keypoints" in entry:
        parts.append(f"{entry['keypoints']['count']} keypoints")
    if "scores_table" in entry:
        parts.append(f"{len(entry['scores_table']['rows'])} scores")
    return ", ".join(parts)
