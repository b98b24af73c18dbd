"""Build and load the prototype bank of keypoint-labeling explanations (``protolens bank build DIR``).

Source: Key-point Labeling Classifiers (KLC, seed 002) step 1 (METHODS.md §4): dense features of every bank
image — CLS embedding, patch tokens and CLS-attention saliency (:func:`protolens.models.dense.dense_features`,
one forward pass per batch, the photo resized to input x input) — cached per image; then the part
co-segmentation centroids (Amir et al., arXiv 2112.05814 §4.2, "part co-segmentation"): K-Means (k parts) on
the L2-normalised foreground tokens of all bank images (foreground = the object mask at the token grid: mask
file > alpha > saliency mask), named ``part 1``..``part k`` or by ``DIR/part_names.txt``.

Folder layout and cache files: :mod:`protolens.core.bank_files`. A rebuild re-embeds only images whose bytes
(sha256) are new or whose features were computed with another backbone, weights or input size; the part
centroids are always recomputed (cheap). Unreadable images are reported by name, skipped and recorded (the
bank still opens; they are retried on the next build).

The backbone is the vit-attention backend's (``model`` choices, weights look-up and identity, dtype rule),
loaded on the segmenter's device pool as for prototypes (:mod:`protolens.services.prototypes`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.bank_files import (
    PART_NAMES_FILE,
    SCHEMA,
    BankCache,
    BankImage,
    bank_cache_dir,
    feature_identity,
    features_path,
    find_object_mask,
    read_bank_cache,
    read_features,
    scan_bank,
    stored_identity,
    token_mask,
    write_bank_cache,
    write_features,
)
from protolens.core.errors import ImageReadError, ParamError
from protolens.core.hashing import sha256_file
from protolens.core.imageio import read_image
from protolens.core.jobs import CancelToken, Progress, rescaled
from protolens.core.matching import l2_normalise
from protolens.models import api
from protolens.models.kmeans import kmeans
from protolens.services.segment import Segmenter
from protolens.services.tokens import _backbone

DEFAULT_MODEL = "vit_small_patch14_dinov2.lvd142m"
CHUNK = 16
"""Images per device job: the most embedding work a cancelled build loses."""
MAX_KMEANS_TOKENS = 60_000
"""Most foreground tokens K-Means sees (an even share per image, seeded subsample)."""
EMBED_END = 0.85
METHOD = ("KLC step 1: photo resized to input x input (aspect ignored), CLS + patch tokens after the final norm, "
          "saliency = last block's CLS attention (mean of heads, min-max); part centroids: K-Means on "
          "L2-normalised foreground tokens (Amir et al. arXiv 2112.05814 §4.2)")


@dataclass
class BankSummary:
    """What :func:`build_bank` did.

    ``images`` bank images used (``embedded`` by this run + ``reused`` from the cache); ``classes`` class ->
    images; ``parts`` k part centroids; ``unreadable`` (path relative to the bank, reason) of skipped images;
    ``ignored`` other files left out.
    """

    root: Path
    cache_dir: Path
    images: int
    embedded: int
    reused: int
    classes: dict[str, int]
    parts: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    model: str = ""
    weights_id: str = ""
    part_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_part_vocabulary(root: str | Path, k: int) -> list[str]:
    """Names of the k co-segmentation parts: ``DIR/part_names.txt`` (one per line), else ``part 1``..``part k``.

    Raises ParamError when the file does not hold exactly k non-blank lines.
    """
    path = Path(root) / PART_NAMES_FILE
    if not path.is_file():
        return [f"part {i + 1}" for i in range(k)]
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamError(f"{path}: cannot read ({exc})") from None
    if len(names) != k:
        raise ParamError(f"{path}: {len(names)} part names for --parts {k}; give exactly one name per line "
                         f"for each part")
    return names


def _previous_images(cache_dir: Path) -> dict[str, dict[str, Any]]:
    """rel -> image entry of an earlier bank.json (for reusing sha256 of unchanged files); {} if none."""
    try:
        meta = json.loads((cache_dir / "bank.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        return {}
    return {e["rel"]: e for e in meta.get("images", []) if isinstance(e, dict) and "rel" in e}


def _identify(found: Sequence[tuple[Path, str, str]], previous: dict[str, dict[str, Any]],
              unreadable: list[tuple[str, str, int, int]]) -> list[BankImage]:
    """BankImages with sha256 (an unchanged size and mtime reuse the recorded one); unhashable -> unreadable."""
    images = []
    for path, rel, label in found:
        try:
            stat = path.stat()
            old = previous.get(rel)
            if old is not None and (old.get("size"), old.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
                sha = str(old["sha256"])
            else:
                sha = sha256_file(path)
        except OSError as exc:
            unreadable.append((rel, f"cannot read: {exc.strerror or exc}", 0, 0))
            continue
        images.append(BankImage(path, rel, label, sha, int(stat.st_size), int(stat.st_mtime_ns)))
    return images


def _embed_chunk(segmenter: Segmenter, backbone: tuple[Any, Any, Any], chunk: Sequence[BankImage], *,
                 input_size: int, batch_size: int, warnings: list[str]) -> Generator[Progress, None, Any]:
    """([(image, DenseFeatures)], [(image, reason)]) of ``chunk`` computed on the device pool."""
    backend, params, ctx = backbone

    def job(device: str) -> Generator[Progress, None, Any]:
        from protolens.models.dense import dense_features

        device_ctx = dataclasses.replace(ctx, device=device)
        network = backend.load_model(params, device_ctx)
        spec = api.vit_spec(network)
        photos: list[tuple[BankImage, np.ndarray]] = []
        failed: list[tuple[BankImage, str]] = []
        for image in chunk:
            ctx.cancel.raise_if_set()
            try:
                photos.append((image, read_image(image.path)))
            except ImageReadError as exc:
                failed.append((image, exc.reason))
        features = yield from dense_features(network, [rgb for _, rgb in photos], input_size=input_size,
                                             mean=spec.mean, std=spec.std, device=device,
                                             dtype=device_ctx.resolved_dtype(), batch_size=batch_size,
                                             cancel=ctx.cancel)
        return [(image, f) for (image, _), f in zip(photos, features, strict=True)], failed

    return (yield from segmenter.pool().run(job, cancel=ctx.cancel, prefer=segmenter.device, warnings=warnings))


def _embed_pending(segmenter: Segmenter, backbone: tuple[Any, Any, Any], cache_dir: Path,
                   pending: list[BankImage], identity: str, *, input_size: int, batch_size: int,
                   warnings: list[str]) -> Generator[Progress, None, list[tuple[BankImage, str]]]:
    """Compute and store the features of ``pending`` chunk by chunk; returns the unreadable (image, reason)."""
    failed: list[tuple[BankImage, str]] = []
    for start in range(0, len(pending), CHUNK):
        backbone[2].cancel.raise_if_set()
        chunk = pending[start:start + CHUNK]
        inner = _embed_chunk(segmenter, backbone, chunk, input_size=input_size, batch_size=batch_size,
                             warnings=warnings)
        low, span = 0.05, EMBED_END - 0.05
        done, bad = yield from rescaled(inner, low + span * start / len(pending), span * len(chunk) / len(pending),
                                        lambda r: f"embedding: {r.text}")
        failed += bad
        for image, features in done:
            write_features(cache_dir, image.sha256, tokens=features.tokens, saliency=features.saliency,
                           cls=features.cls, image_size=features.image_size, identity=identity)
    return failed


def _foreground_tokens(cache_dir: Path, images: Sequence[BankImage], seed: int,
                       cancel: CancelToken) -> tuple[np.ndarray, np.ndarray]:
    """(CLS (n, d) float32, L2-normalised foreground tokens (m, d) float32); sets each image's image_size."""
    rng = np.random.default_rng(seed)
    per_image = max(1, math.ceil(MAX_KMEANS_TOKENS / max(len(images), 1)))
    cls_rows, picked = [], []
    for image in images:
        cancel.raise_if_set()
        arrays = read_features(cache_dir, image.sha256)
        image.image_size = (int(arrays["image_size"][0]), int(arrays["image_size"][1]))
        tokens = arrays["tokens"].astype(np.float32)
        mask, _ = find_object_mask(image.path, image.image_size, arrays["saliency"])
        fg = token_mask(mask, tokens.shape[:2]) if mask is not None else np.ones(tokens.shape[:2], bool)
        rows = tokens[fg]
        if len(rows) > per_image:
            rows = rows[np.sort(rng.choice(len(rows), per_image, replace=False))]
        picked.append(rows)
        cls_rows.append(arrays["cls"].astype(np.float32))
    return np.stack(cls_rows), l2_normalise(np.concatenate(picked))


def _remove_orphans(cache_dir: Path, keep: set[str]) -> None:
    folder = features_path(cache_dir, "x").parent
    for path in folder.glob("*.npz"):
        if path.stem not in keep:
            path.unlink(missing_ok=True)


def build_bank(segmenter: Segmenter, root: str | Path, *, model: str = DEFAULT_MODEL,
               weights_path: str | Path | None = None, input_size: int = 224, parts: int = 4, batch_size: int = 8,
               precision: str = "auto", allow_random_weights: bool = False, cancel: CancelToken | None = None,
               seed: int = 0, library: str = "auto") -> Generator[Progress, None, BankSummary]:
    """Build (or refresh) the bank of the folder ``root`` (KLC step 1; part centroids, Amir et al. §4.2).

    Parameters
    ----------
    segmenter : Segmenter
        Gives the vit-attention backend (registry) and the device pool the features run on.
    root : path
        The bank folder (:mod:`protolens.core.bank_files`: class subfolders, or images each its own class).
    model : str
        One of the vit-attention backend's ``model`` choices.
    weights_path : path, optional
        Backbone weights file; default the local cache (``protolens weights pull``).
    input_size : int
        Side of the square model input in pixels (aspect ignored); a multiple of the patch size (KLC: 224).
    parts : int
        k co-segmentation parts (Amir et al.: 4), at least 1.
    batch_size : int
        Images per forward pass (halved on out-of-memory).
    precision : str
        The backend's precision (``auto``: bfloat16 autocast on CUDA, float32 on the CPU).
    allow_random_weights : bool
        Random backbone weights when none are found (tests, benchmarks).
    cancel : CancelToken, optional
        Checked between chunks of images and batches.
    seed, library : int, str
        K-Means seed and library (:func:`protolens.models.kmeans.kmeans`).

    Yields
    ------
    Progress
        Hashing, embedding (to 85 %), K-Means and writing.

    Returns
    -------
    BankSummary

    Raises
    ------
    ParamError
        Not a folder, no (readable) images, bad sizes, a bad ``part_names.txt``, fewer foreground tokens
        than parts, a model the backend does not offer.
    BackendUnavailableError, WeightsNotFoundError, CheckpointError, Cancelled, StoreWriteError
    """
    cancel = cancel or CancelToken()
    root = Path(root)
    if parts < 1 or input_size < 1 or batch_size < 1:
        raise ParamError("--parts, --input and --batch-size must be at least 1")
    found, ignored = scan_bank(root)
    if not found:
        raise ParamError(f"{root}: no images (give class subfolders, or images that are each their own class)")
    part_names = read_part_vocabulary(root, parts)
    backbone = _backbone(segmenter, model, precision, weights_path, allow_random_weights, cancel)
    weights_id, weights_sha = backbone[0].weights_identity(backbone[1], backbone[2])
    cache_dir = bank_cache_dir(root)
    identity = feature_identity(model, weights_sha, input_size)
    yield Progress(0.0, f"hashing {len(found)} images")
    skipped: list[tuple[str, str, int, int]] = []
    images = _identify(found, _previous_images(cache_dir), skipped)
    pending = list({i.sha256: i for i in images if stored_identity(cache_dir, i.sha256) != identity}.values())
    yield Progress(0.05, f"{len(images)} images: {len(pending)} to embed")
    warnings: list[str] = []
    failed = yield from _embed_pending(segmenter, backbone, cache_dir, pending, identity, input_size=input_size,
                                       batch_size=batch_size, warnings=warnings)
    bad = {i.sha256: reason for i, reason in failed}
    skipped += [(i.rel, bad[i.sha256], i.size, i.mtime_ns) for i in images if i.sha256 in bad]
    used = [i for i in images if i.sha256 not in bad]
    if not used:
        raise ParamError(f"{root}: none of the {len(found)} images could be read")
    yield Progress(EMBED_END, f"part co-segmentation: k-means into {parts} parts")
    cls, tokens = _foreground_tokens(cache_dir, used, seed, cancel)
    if len(tokens) < parts:
        raise ParamError(f"--parts {parts}: only {len(tokens)} foreground tokens in the bank")
    result = kmeans(tokens, parts, seed=seed, niter=100, nredo=3, library=library)
    cancel.raise_if_set()
    write_bank_cache(cache_dir, model=model, weights_id=weights_id, weights_sha256=weights_sha,
                     input_size=input_size, images=used, cls=cls, part_centroids=result.centroids,
                     part_names=part_names,
                     unreadable=[{"rel": r, "reason": why, "size": s, "mtime_ns": t} for r, why, s, t in skipped],
                     extra={"root": str(root.resolve()), "method": METHOD,
                            "kmeans": {"library": result.library, "seed": seed, "tokens": int(len(tokens)),
                                       "inertia": result.inertia}})
    _remove_orphans(cache_dir, {i.sha256 for i in used})
    yield Progress(1.0, f"wrote {cache_dir}")
    classes: dict[str, int] = {}
    for image in used:
        classes[image.label] = classes.get(image.label, 0) + 1
    embedded_rels = {i.rel for i in pending}
    embedded = sum(1 for i in used if i.rel in embedded_rels)
    return BankSummary(root, cache_dir, len(used), embedded, len(used) - embedded, classes, parts,
                       [(r, why) for r, why, _, _ in skipped], ignored, model, weights_id, part_names, warnings)


def load_bank(root: str | Path) -> BankCache:
    """The built bank of ``root`` (:func:`protolens.core.bank_files.read_bank_cache`); ParamError if unbuilt."""
    return read_bank_cache(root)
