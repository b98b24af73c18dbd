"""The keypoint-labeling engine: one query photo against a built prototype bank (the plugin and services use it).

Sources: Key-point Labeling Classifiers (KLC, seed 002; METHODS.md §4) — step 1 dense ViT features and top-k
retrieval by CLS cosine, step 2 segments (part co-segmentation, SLIC superpixels or annotated parts) with a
descriptor (mean of the bilinearly upsampled patch tokens) and a keypoint (centroid) each, step 3 best buddies
between the query's segments and the prototypes' pooled segments (optional label-consistent filter), step 4
the soft vote. Part co-segmentation and pixel correspondences: Amir et al., arXiv 2112.05814 §4.2 and §4.1.

Prototype work (segments, descriptors; pixel-mode descriptors) is memoised across queries, keyed by the bank's
digest, the image's sha256 and the options, so opening the next query reuses it.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, MutableMapping, Sequence
from typing import Any

import cachetools
import numpy as np

from protolens.core.bank_files import BankCache
from protolens.core.errors import ParamError
from protolens.core.explanation import Correspondence, Explanation, ImageParts, match_parts
from protolens.core.imageio import read_image
from protolens.core.jobs import CancelToken, Progress, rescaled
from protolens.core.segments import (
    SEGMENT_SOURCES,
    Segments,
    cluster_parts,
    saliency_mask,
    segment_descriptors,
    slic_segments,
)

MEMO_BYTES = 1024**3
"""Most bytes the default prototype memo keeps (segment maps, descriptors, pixel descriptors)."""


def _nbytes(value: Any) -> int:
    if isinstance(value, ImageParts):
        return int(value.segments.ids.nbytes + value.descriptors.nbytes + 64 * value.segments.count + 1024)
    values = getattr(value, "values", None)
    return int(getattr(values, "nbytes", 0)) + 4096


_MEMO: MutableMapping[Any, Any] = cachetools.LRUCache(MEMO_BYTES, getsizeof=_nbytes)
_MEMO_LOCK = threading.Lock()


def clear_memo() -> None:
    """Forget the prototype work of the default memo (tests, benchmarks: a cold start)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def _memo_get(memo: MutableMapping[Any, Any], key: Any) -> Any:
    with _MEMO_LOCK:
        return memo.get(key)


def _memo_put(memo: MutableMapping[Any, Any], key: Any, value: Any) -> None:
    with _MEMO_LOCK:
        try:
            memo[key] = value
        except ValueError:  # larger than the whole memo: not kept
            pass


def _cosegment(tokens: np.ndarray, mask: np.ndarray, centroids: np.ndarray | None, names: Sequence[str],
               image_size: tuple[int, int]) -> Segments:
    """Part co-segmentation inside ``mask`` (Amir et al. §4.2, centroids from the bank's K-Means)."""
    if centroids is None:
        raise ParamError("co-segmentation needs the bank's part centroids: rebuild the bank with --parts >= 1")
    k = len(centroids)
    names = list(names) if len(names) == k else [f"part {i + 1}" for i in range(k)]
    # Every token is assigned, then the map is clipped to the mask at the photo size: each object pixel gets
    # the part of the token under it (foreground at the token grid alone would drop the object's rim).
    parts = cluster_parts(tokens, np.ones(tokens.shape[:2], bool), centroids, image_size, names)
    ids = np.where(mask, parts.ids, -1).astype(np.int32)
    return Segments(ids, parts.names, "cosegment")


def _majority_names(superpixels: Segments, parts: Segments) -> list[str]:
    """Each superpixel's name: the co-segmentation part covering most of its pixels ("" when none does)."""
    n, k = superpixels.count, parts.count
    inside = superpixels.ids >= 0
    joint = superpixels.ids[inside].astype(np.int64) * (k + 1) + (parts.ids[inside].astype(np.int64) + 1)
    table = np.bincount(joint, minlength=n * (k + 1)).reshape(n, k + 1)[:, 1:]
    return [parts.names[int(np.argmax(row))] if row.any() else "" for row in table]


def analyse_image(rgb: np.ndarray | None, tokens: np.ndarray, saliency: np.ndarray, *, name: str, label: str,
                  path: str, segments: str = "cosegment", n_segments: int = 10, mask: np.ndarray | None = None,
                  annotation: Segments | None = None, part_centroids: np.ndarray | None = None,
                  part_names: Sequence[str] = (), grid: tuple[int, int] = (64, 64),
                  image_size: tuple[int, int] | None = None, notes: list[str] | None = None) -> ImageParts:
    """Segments, segment descriptors and keypoints of one image (KLC step 2).

    Parameters
    ----------
    rgb : numpy.ndarray or None
        (height, width, 3) uint8 RGB photo; needed only for ``segments="slic"`` (else ``image_size`` suffices).
    tokens : numpy.ndarray
        (rows, cols, d) float patch tokens (:func:`protolens.models.dense.dense_features`).
    saliency : numpy.ndarray
        (rows, cols) float token saliency in [0, 1].
    name, label, path : str
        ``"query"`` or the bank-relative path; the class ("" for the query); the file.
    segments : str
        ``"cosegment"``: each token to its nearest part centroid by cosine
        (:func:`protolens.core.segments.cluster_parts`), the part map clipped to ``mask`` at the photo size
        (every object pixel gets the part of the token under it). ``"slic"``: SLIC
        superpixels inside ``mask`` (n = ``n_segments``), each named after the co-segmentation part covering
        most of it when ``part_centroids`` are given (so the label filter can work), else "". ``"bank"``:
        ``annotation`` (bank part annotations, or the user's drawn parts); without one, co-segmentation, and
        a note saying so is appended to ``notes``.
    n_segments : int
        SLIC superpixels asked for (KLC: 8..12).
    mask : numpy.ndarray, optional
        (height, width) bool object mask; default (or when empty) the saliency mask
        (:func:`protolens.core.segments.saliency_mask`).
    annotation : Segments, optional
        Segments for the ``"bank"`` source.
    part_centroids : numpy.ndarray, optional
        (k, d) the bank's co-segmentation part centroids; ``part_names`` their k names.
    grid : tuple of int
        (rows, cols) of the bilinear upsampling of the tokens for segment descriptors (KLC: 64 x 64).
    image_size : tuple of int, optional
        (height, width); default ``rgb.shape[:2]``.
    notes : list of str, optional
        Receives user-facing notes (fallbacks).

    Returns
    -------
    ImageParts
        Descriptors (n, d) float32 (:func:`protolens.core.segments.segment_descriptors`) and centroids (n, 2)
        float32 (x, y) photo pixels. ``segments.source`` says which source was used in the end.

    Raises
    ------
    ParamError
        Unknown source, a mask of another size, no ``rgb`` for SLIC, or co-segmentation without centroids.
    """
    if segments not in SEGMENT_SOURCES:
        raise ParamError(f"--segments {segments!r}: one of {', '.join(SEGMENT_SOURCES)}")
    if image_size is None:
        if rgb is None:
            raise ParamError("analyse_image: give the photo or its image_size")
        image_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    size = (int(image_size[0]), int(image_size[1]))
    tokens = np.asarray(tokens, np.float32)
    if mask is not None and np.asarray(mask).shape != size:
        raise ParamError(f"{name}: object mask of shape {np.asarray(mask).shape} for a photo of {size}")
    if mask is None or not np.asarray(mask).any():
        mask = saliency_mask(saliency, size)
    mask = np.asarray(mask, bool)
    source = segments
    if segments == "bank" and annotation is None:
        source = "cosegment"
        if notes is not None:
            who = "the query has no drawn parts" if name == "query" else f"{name} has no part annotations"
            notes.append(f"{who}: co-segmentation used")
    if source == "bank":
        found = annotation
    elif source == "cosegment":
        found = _cosegment(tokens, mask, part_centroids, part_names, size)
    else:
        if rgb is None:
            raise ParamError("SLIC superpixels need the photo itself")
        found = slic_segments(rgb, mask, n_segments)
        if part_centroids is not None:
            parts = _cosegment(tokens, mask, part_centroids, part_names, size)
            found = Segments(found.ids, _majority_names(found, parts), "slic")
    assert found is not None
    return ImageParts(name, label, str(path), size, found, segment_descriptors(tokens, found, grid),
                      found.centroids())


def _prototype_parts(bank: BankCache, index: int, *, segments: str, n_segments: int, grid: tuple[int, int],
                     memo: MutableMapping[Any, Any]) -> ImageParts:
    """Analysed bank image ``index`` (label = its class, name = its rel path), memoised."""
    image = bank.images[index]
    key = ("parts", bank.digest, image.sha256, segments, int(n_segments), tuple(grid))
    hit = _memo_get(memo, key)
    if hit is not None:
        return hit
    tokens, saliency, _ = bank.features(index)
    mask = bank.object_mask(index, saliency)
    annotation = bank.annotation_segments(index, mask) if segments == "bank" else None
    rgb = read_image(image.path) if segments == "slic" else None
    parts = analyse_image(rgb, tokens, saliency, name=image.rel, label=image.label, path=str(image.path),
                          segments=segments, n_segments=n_segments, mask=mask, annotation=annotation,
                          part_centroids=bank.part_centroids, part_names=bank.part_names, grid=grid,
                          image_size=image.image_size)
    _memo_put(memo, key, parts)
    return parts


def _pixel_correspondences(model: Any, rgb: np.ndarray, bank: BankCache, ranking: Sequence[tuple[int, float]], *,
                           n_pairs: int, options: dict[str, Any], run: dict[str, Any],
                           memo: MutableMapping[Any, Any]) -> Generator[Progress, None, list[Correspondence]]:
    """Amir et al. §4.1 correspondences between the query and each prototype (prototype descriptors memoised)."""
    from protolens.models.descriptors import facet_descriptors, find_correspondences

    keys = [("pixels", bank.digest, bank.images[i].sha256, *sorted(options.items())) for i, _ in ranking]
    found = {i: d for (i, _), key in zip(ranking, keys, strict=True) if (d := _memo_get(memo, key)) is not None}
    missing = [i for i, _ in ranking if i not in found]
    photos = [rgb] + [read_image(bank.images[i].path) for i in missing]
    computed = yield from facet_descriptors(model, photos, input_size=bank.input_size, **options, **run)
    for i, descriptors in zip(missing, computed[1:], strict=True):
        found[i] = descriptors
    for (i, _), key in zip(ranking, keys, strict=True):
        if i in missing:
            _memo_put(memo, key, found[i])
    return [find_correspondences(computed[0], found[i], n_pairs=n_pairs) for i, _ in ranking]


def _source_notes(segments: str, prototypes: Sequence[ImageParts]) -> list[str]:
    if segments != "bank":
        return []
    fallback = sum(1 for p in prototypes if p.segments.source != "bank")
    if not fallback:
        return []
    return [f"{fallback} of {len(prototypes)} prototypes have no part annotations: co-segmentation used"]


def explain_image(model: Any, rgb: np.ndarray, bank: BankCache, *, k: int = 5, segments: str = "cosegment",
                  n_segments: int = 10, pixels: bool = False, n_pairs: int = 10, layer: int = 9, facet: str = "key",
                  bin: bool = True, stride: int = 0, query_mask: np.ndarray | None = None,
                  query_segments: Segments | None = None, query_sha256: str | None = None, query_path: str = "",
                  weights_sha256: str | None = None, label_consistent: bool = False, device: str = "cpu",
                  dtype: str = "float32", cancel: CancelToken | None = None,
                  memo: MutableMapping[Any, Any] | None = None,
                  grid: tuple[int, int] = (64, 64)) -> Generator[Progress, None, Explanation]:
    """Explain one query photo with a built bank: retrieval, segments, best buddies, vote (KLC steps 1-4).

    Parameters
    ----------
    model : torch.nn.Module
        The bank's backbone (``bank.model`` with the bank's weights), eval mode, on ``device``.
    rgb : numpy.ndarray
        (height, width, 3) uint8 RGB query photo.
    bank : BankCache
        :func:`protolens.core.bank_files.read_bank_cache`.
    k : int
        Prototypes retrieved by CLS cosine (KLC step 1; reference 5).
    segments, n_segments : str, int
        Segment source and SLIC count (:func:`analyse_image`); the query's ``"bank"`` segments are
        ``query_segments`` (the user's drawn parts), else co-segmentation with a note.
    pixels : bool
        Also compute pixel correspondences (Amir et al. §4.1) with ``layer``, ``facet``, ``bin``, ``stride``
        (0 = patch // 2) and ``n_pairs`` (:func:`protolens.models.descriptors.find_correspondences`).
    query_mask : numpy.ndarray, optional
        (height, width) bool object mask of the query; default its saliency mask.
    query_sha256 : str, optional
        The query file's sha256: a bank image with the same bytes is not retrieved (leave-one-out).
    query_path : str
        The query's file, for the explanation's JSON.
    weights_sha256 : str, optional
        sha256 of ``model``'s weights as the caller resolved them; checked against the bank's.
    label_consistent : bool
        The explanation's default label filter (it can be toggled later without recomputing).
    device, dtype : str
        Torch device and autocast dtype.
    cancel : CancelToken, optional
        Checked between batches.
    memo : MutableMapping, optional
        Where prototype work is memoised; default a module-level LRU of at most :data:`MEMO_BYTES`.
    grid : tuple of int
        Upsampling grid of segment descriptors (KLC: 64 x 64).

    Yields
    ------
    Progress

    Returns
    -------
    Explanation
        All best-buddy matches (the filter applies in its methods), the retrieval cosines and notes.

    Raises
    ------
    ParamError
        Weights other than the bank's, bad options, an embedding dimension other than the bank's.
    Cancelled, DeviceOutOfMemoryError, CheckpointError (damaged bank features)
    """
    from protolens.models.dense import dense_features
    from protolens.models.descriptors import resolve_stride
    from protolens.models.vit.loading import vit_spec

    cancel = cancel or CancelToken()
    memo = _MEMO if memo is None else memo
    if weights_sha256 is not None and weights_sha256 != bank.weights_sha256:
        raise ParamError(f"the bank {bank.root} was built with weights {bank.weights_id} (sha256 "
                         f"{bank.weights_sha256[:12]}), the model has sha256 {weights_sha256[:12]}; "
                         f"use the bank's weights or rebuild the bank")
    if segments not in SEGMENT_SOURCES:
        raise ParamError(f"--segments {segments!r}: one of {', '.join(SEGMENT_SOURCES)}")
    spec = vit_spec(model)
    run = {"mean": spec.mean, "std": spec.std, "device": device, "dtype": dtype, "cancel": cancel}
    yield Progress(0.0, "query features")
    query_features = (yield from rescaled(dense_features(model, [rgb], input_size=bank.input_size, batch_size=1,
                                                         **run), 0.0, 0.4, lambda r: f"query: {r.text}"))[0]
    ranking = bank.retrieve(query_features.cls, k, exclude_sha256=query_sha256)
    notes: list[str] = []
    query = analyse_image(rgb, query_features.tokens, query_features.saliency, name="query", label="",
                          path=query_path, segments=segments, n_segments=n_segments, mask=query_mask,
                          annotation=query_segments, part_centroids=bank.part_centroids,
                          part_names=bank.part_names, grid=grid, notes=notes)
    prototypes = []
    for rank, (index, _) in enumerate(ranking):
        cancel.raise_if_set()
        yield Progress(0.4 + 0.4 * rank / max(len(ranking), 1), f"prototype {rank + 1} of {len(ranking)}")
        prototypes.append(_prototype_parts(bank, index, segments=segments, n_segments=n_segments, grid=grid,
                                           memo=memo))
    notes += _source_notes(segments, prototypes)
    matches = match_parts(query, prototypes)
    correspondences = None
    if pixels:
        options = {"layer": layer, "facet": facet, "bin": bin, "stride": resolve_stride(model, stride)}
        correspondences = yield from rescaled(_pixel_correspondences(model, rgb, bank, ranking, n_pairs=n_pairs,
                                                                     options=options, run=run, memo=memo),
                                              0.8, 0.2, lambda r: f"pixels: {r.text}")
    yield Progress(1.0, f"{len(matches)} best buddies")
    return Explanation(query, prototypes, [cosine for _, cosine in ranking], matches, segments,
                       label_consistent=label_consistent, correspondences=correspondences, notes=notes,
                       query_saliency=np.asarray(query_features.saliency, np.float32))
