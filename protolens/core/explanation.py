"""A keypoint-labeling explanation: the query's parts, its prototypes' parts, their best-buddy matches and vote.

Sources: Key-point Labeling Classifiers (KLC, seed 002; METHODS.md §4) steps 2-4 — segments with a
descriptor (mean of upsampled patch tokens) and a keypoint (centroid) each, best buddies between the query's
segments and the pooled segments of the retrieved prototypes, an optional label-consistent filter and the soft
vote; best buddies (mutual nearest neighbours) and pixel correspondences from Amir et al., arXiv 2112.05814
§3 and §4.1.

Coordinates: every keypoint is (x, y) in photo pixels of the image it lies in, origin top-left, pixel index
coordinates (the centre of pixel (row 0, col 0) is (0, 0)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protolens.core.layers import Keypoints
from protolens.core.matching import Vote, best_buddies, soft_vote
from protolens.core.matching import label_consistent as labels_agree
from protolens.core.segments import Segments

SCHEMA = "protolens.explanation/1"
COORDINATES = "x, y in photo pixels of the image the point lies in; origin top-left"
FACETS = ("key", "query", "value", "token")
"""Descriptor facets of the pixel correspondences (Amir et al., arXiv 2112.05814 §3;
:func:`protolens.models.descriptors.facet_descriptors`)."""


def _xy(value: Any) -> list[float]:
    return [round(float(value[0]), 3), round(float(value[1]), 3)]


@dataclass
class Correspondence:
    """Pixel-level correspondences between the query (image 1) and one prototype (image 2), Amir et al. §4.1.

    Attributes
    ----------
    query_xy : numpy.ndarray
        (n, 2) float32 (x, y) photo pixels of the query.
    other_xy : numpy.ndarray
        (n, 2) float32 (x, y) photo pixels of the prototype.
    similarity : numpy.ndarray
        (n,) float32 cosine similarity of each pair's descriptors.
    saliency : numpy.ndarray
        (n,) float32 mean saliency of the pair's two points.
    """

    query_xy: np.ndarray
    other_xy: np.ndarray
    similarity: np.ndarray
    saliency: np.ndarray

    def __post_init__(self) -> None:
        self.query_xy = np.asarray(self.query_xy, np.float32).reshape(-1, 2)
        self.other_xy = np.asarray(self.other_xy, np.float32).reshape(-1, 2)
        self.similarity = np.asarray(self.similarity, np.float32).reshape(-1)
        self.saliency = np.asarray(self.saliency, np.float32).reshape(-1)
        n = len(self.query_xy)
        if not (len(self.other_xy) == len(self.similarity) == len(self.saliency) == n):
            raise ValueError("a correspondence needs n query points, n other points, n similarities and n saliencies")

    def __len__(self) -> int:
        return len(self.query_xy)

    def to_json(self) -> dict[str, Any]:
        """``{"pairs": [{query_xy: [x, y], prototype_xy: [x, y], similarity, saliency}]}`` (photo pixels)."""
        return {"pairs": [{"query_xy": _xy(q), "prototype_xy": _xy(o), "similarity": round(float(s), 6),
                           "saliency": round(float(a), 6)}
                          for q, o, s, a in zip(self.query_xy, self.other_xy, self.similarity, self.saliency,
                                                strict=True)]}


@dataclass
class ImageParts:
    """One image's segments with their descriptors and keypoints (KLC step 2).

    Attributes
    ----------
    name : str
        ``"query"``, or the bank image's path relative to the bank folder.
    label : str
        Its class ("" for the query).
    path : str
        The image file.
    image_size : tuple of int
        (height, width) of the photo in pixels.
    segments : Segments
        n segments at the photo size (ids (height, width) int32, -1 = none) with part names.
    descriptors : numpy.ndarray
        (n, d) float32, one per segment (mean of the upsampled patch tokens over it); zeros for empty segments.
    centroids : numpy.ndarray
        (n, 2) float32 (x, y) photo pixels, the mean pixel index of each segment; NaN for empty segments.
    """

    name: str
    label: str
    path: str
    image_size: tuple[int, int]
    segments: Segments
    descriptors: np.ndarray
    centroids: np.ndarray

    def __post_init__(self) -> None:
        self.descriptors = np.asarray(self.descriptors, np.float32)
        self.centroids = np.asarray(self.centroids, np.float32).reshape(-1, 2)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = self.segments.count
        if self.descriptors.ndim != 2 or len(self.descriptors) != n or len(self.centroids) != n:
            raise ValueError(f"{self.name}: {n} segments need (n, d) descriptors and (n, 2) centroids, got "
                             f"{self.descriptors.shape} and {self.centroids.shape}")

    def present(self) -> np.ndarray:
        """(k,) int64 ids of the segments with at least one pixel (and so a centroid)."""
        ids = np.asarray(self.segments.present(), np.int64)
        return ids[np.isfinite(self.centroids[ids]).all(axis=1)] if len(ids) else ids

    def part_at(self, xy: np.ndarray) -> list[str]:
        """Part names of the segments under (k, 2) (x, y) photo points ("" outside every segment)."""
        points = np.asarray(xy, np.float32).reshape(-1, 2)
        height, width = self.segments.ids.shape
        cols = np.clip(np.rint(points[:, 0]).astype(np.int64), 0, width - 1)
        rows = np.clip(np.rint(points[:, 1]).astype(np.int64), 0, height - 1)
        ids = self.segments.ids[rows, cols]
        return [self.segments.names[i] if i >= 0 else "" for i in ids]


@dataclass
class Match:
    """One best-buddy pair: a query segment and a segment of the prototype of rank ``prototype``.

    ``query_xy`` / ``prototype_xy`` are the segments' centroids, (x, y) photo pixels of their own image;
    ``similarity`` is the cosine of their descriptors.
    """

    query_segment: int
    prototype: int
    prototype_segment: int
    similarity: float
    query_xy: tuple[float, float]
    prototype_xy: tuple[float, float]
    query_label: str
    prototype_label: str


def match_parts(query: ImageParts, prototypes: Sequence[ImageParts]) -> list[Match]:
    """Best buddies between the query's segments and the pooled segments of all prototypes (KLC step 3).

    The present (non-empty) segments of every prototype are pooled into one set, each row carrying its owner
    prototype's rank and its segment id, so no offsets are computed (the reference's miscount; METHODS.md §4).
    Mutual nearest neighbours by cosine: :func:`protolens.core.matching.best_buddies` (Amir et al., arXiv
    2112.05814 §3; ties to the lowest index).

    Returns
    -------
    list of Match
        Sorted by query segment (each query segment has at most one match); [] when either side has no segment.

    Raises
    ------
    ParamError
        Descriptors of different dimensions (from :func:`best_buddies`).
    """
    query_ids = query.present()
    blocks, owners, segment_ids = [], [], []
    for rank, parts in enumerate(prototypes):
        ids = parts.present()
        blocks.append(parts.descriptors[ids])
        owners.append(np.full(len(ids), rank, np.int64))
        segment_ids.append(ids)
    if not len(query_ids) or not sum(len(ids) for ids in segment_ids):
        return []
    owner = np.concatenate(owners)
    segment = np.concatenate(segment_ids)
    buddies = best_buddies(query.descriptors[query_ids], np.concatenate(blocks))
    matches = []
    for a, b, similarity in zip(buddies.a.tolist(), buddies.b.tolist(), buddies.similarity.tolist(), strict=True):
        q, rank, s = int(query_ids[a]), int(owner[b]), int(segment[b])
        other = prototypes[rank]
        matches.append(Match(q, rank, s, float(similarity), tuple(map(float, query.centroids[q])),
                             tuple(map(float, other.centroids[s])), query.segments.names[q],
                             other.segments.names[s]))
    matches.sort(key=lambda m: m.query_segment)
    return matches


@dataclass
class Explanation:
    """Why a query resembles its prototypes: parts, best-buddy matches and the soft vote (KLC steps 1-4).

    Attributes
    ----------
    query : ImageParts
    prototypes : list of ImageParts
        The retrieved prototypes, best first (rank = index).
    retrieval : list of float
        CLS cosine similarity of each prototype to the query (KLC step 1).
    matches : list of Match
        Every best-buddy pair, before the label filter.
    segments_source : str
        ``"cosegment"``, ``"slic"`` or ``"bank"``.
    label_consistent : bool
        The default of the ``label_consistent`` argument of the methods below (keep only pairs whose part
        labels agree and are non-empty; KLC step 3, paper only).
    correspondences : list of Correspondence or None
        Pixel mode (Amir et al. §4.1): one per prototype, in rank order; None in segment mode.
    notes : list of str
        What the user should know (e.g. "the query has no drawn parts: co-segmentation used").
    query_saliency : numpy.ndarray or None
        (rows, cols) float32 in [0, 1]: the query's token saliency (last block's CLS attention, mean of heads,
        min-max), covering the whole photo; None when not computed. Not part of :meth:`to_json`.
    """

    query: ImageParts
    prototypes: list[ImageParts]
    retrieval: list[float]
    matches: list[Match]
    segments_source: str
    label_consistent: bool = False
    correspondences: list[Correspondence] | None = None
    notes: list[str] = field(default_factory=list)
    query_saliency: np.ndarray | None = None

    def _flag(self, label_consistent: bool | None) -> bool:
        return self.label_consistent if label_consistent is None else bool(label_consistent)

    def kept(self, label_consistent: bool | None = None) -> list[Match]:
        """The matches, label-filtered when ``label_consistent`` (default: the attribute) is true."""
        if not self._flag(label_consistent) or not self.matches:
            return list(self.matches)
        index = np.arange(len(self.matches))
        keep = labels_agree([m.query_label for m in self.matches],
                                [m.prototype_label for m in self.matches], index, index)
        return [m for m, k in zip(self.matches, keep, strict=True) if k]

    def vote(self, label_consistent: bool | None = None) -> Vote:
        """The soft vote over the kept matches (KLC step 4): score(c) = matches on class-c prototypes / all."""
        kept = self.kept(label_consistent)
        owners = np.array([m.prototype for m in kept], np.int64)
        return soft_vote(owners, [p.label for p in self.prototypes])

    def _segment_points(self) -> tuple[list[dict[int, int]], list[np.ndarray], list[str], list[str]]:
        """Per image (query, then prototypes) a map segment id -> point index, plus the points' xy/labels/groups."""
        maps: list[dict[int, int]] = []
        xy: list[np.ndarray] = []
        labels: list[str] = []
        groups: list[str] = []
        for parts in [self.query, *self.prototypes]:
            ids = parts.present()
            maps.append({int(s): len(labels) + i for i, s in enumerate(ids)})
            xy.append(parts.centroids[ids])
            labels += [parts.segments.names[s] for s in ids]
            groups += [parts.name] * len(ids)
        return maps, xy, labels, groups

    def keypoints(self, label_consistent: bool | None = None) -> Keypoints:
        """The explanation as a keypoints layer (points (x, y) in photo pixels of their own image).

        Segment mode: the centroids of the query's present segments (group ``"query"``, label = part name) and
        of each prototype's (group = its ``name``, the bank-relative path), point score 1; pairs (query point,
        prototype point) of the kept matches, pair score = cosine. Pixel mode (``correspondences`` set): the
        correspondences' points (labels = part under each point, score = saliency) and pairs; the label filter
        does not apply to them.
        """
        if self.correspondences is not None:
            return self._pixel_keypoints()
        maps, xy, labels, groups = self._segment_points()
        kept = self.kept(label_consistent)
        pairs = [(maps[0][m.query_segment], maps[m.prototype + 1][m.prototype_segment]) for m in kept]
        points = np.concatenate(xy) if xy else np.zeros((0, 2), np.float32)
        return Keypoints(points, labels, np.ones(len(labels), np.float32), groups,
                         np.array(pairs, np.int32).reshape(-1, 2), np.array([m.similarity for m in kept], np.float32))

    def _pixel_keypoints(self) -> Keypoints:
        xy: list[np.ndarray] = []
        labels: list[str] = []
        groups: list[str] = []
        scores: list[np.ndarray] = []
        pairs: list[np.ndarray] = []
        similarity: list[np.ndarray] = []
        for rank, found in enumerate(self.correspondences or []):
            n, start = len(found), len(labels)
            other = self.prototypes[rank]
            xy += [found.query_xy, found.other_xy]
            labels += self.query.part_at(found.query_xy) + other.part_at(found.other_xy)
            groups += [self.query.name] * n + [other.name] * n
            scores += [found.saliency, found.saliency]
            pairs.append(np.stack([start + np.arange(n), start + n + np.arange(n)], axis=1))
            similarity.append(found.similarity)
        if not labels:
            return Keypoints(np.zeros((0, 2), np.float32), [], np.zeros(0, np.float32), [])
        return Keypoints(np.concatenate(xy), labels, np.concatenate(scores), groups,
                         np.concatenate(pairs).astype(np.int32), np.concatenate(similarity))

    def to_json(self, label_consistent: bool | None = None) -> dict[str, Any]:
        """The explanation as JSON (schema ``protolens.explanation/1``); points are (x, y) photo pixels.

        Keys: ``query`` {path, name, size {height, width}}, ``retrieval`` [{rank, path, name, class, cosine}],
        ``segments`` {source, query: n, prototypes: [n]} (present segments), ``label_consistent``, ``matches``
        (the kept ones) [{query: {xy, label, segment}, prototype: {rank, path, class, xy, label, segment},
        similarity}], ``vote`` (:meth:`Vote.to_json`), ``notes``, ``correspondences`` (pixel mode only)
        [{rank, pairs: [{query_xy, prototype_xy, similarity, saliency}]}], ``coordinates``.
        """
        flag = self._flag(label_consistent)
        height, width = self.query.image_size
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "query": {"path": self.query.path, "name": self.query.name, "size": {"height": height, "width": width}},
            "retrieval": [{"rank": r, "path": p.path, "name": p.name, "class": p.label, "cosine": round(float(c), 6)}
                          for r, (p, c) in enumerate(zip(self.prototypes, self.retrieval, strict=True))],
            "segments": {"source": self.segments_source, "query": len(self.query.present()),
                         "prototypes": [len(p.present()) for p in self.prototypes]},
            "label_consistent": flag,
            "matches": [self._match_json(m) for m in self.kept(flag)],
            "vote": self.vote(flag).to_json(),
            "notes": list(self.notes),
        }
        if self.correspondences is not None:
            out["correspondences"] = [{"rank": r, **c.to_json()} for r, c in enumerate(self.correspondences)]
        out["coordinates"] = COORDINATES
        return out

    def _match_json(self, match: Match) -> dict[str, Any]:
        other = self.prototypes[match.prototype]
        return {"query": {"xy": _xy(match.query_xy), "label": match.query_label, "segment": match.query_segment},
                "prototype": {"rank": match.prototype, "path": other.path, "name": other.name, "class": other.label,
                              "xy": _xy(match.prototype_xy), "label": match.prototype_label,
                              "segment": match.prototype_segment},
                "similarity": round(float(match.similarity), 6)}
