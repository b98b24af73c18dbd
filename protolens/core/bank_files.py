"""The prototype bank of keypoint-labeling explanations: its folder layout, cache files and retrieval.

Source: Key-point Labeling Classifiers (KLC, seed 002), step 1 (METHODS.md §4): a bank of reference images
per class, their CLS embeddings cached, the top-k prototypes of a query retrieved by cosine similarity.

Bank folder (the user's)
    ``DIR/<class>/*.jpg|png...``: an image's class is its top-level subfolder (searched recursively below
    it); an image directly in ``DIR`` is its own class, named by its file stem (a folder of reference images
    such as ``resources/samples/birds``). Beside an image, optionally: ``<stem>.mask.png`` (object mask,
    > 127 = object) and ``<stem>.parts.png`` (indexed part mask: 0 = none, v = part v of ``parts.txt``);
    files with these two suffixes are never bank images. Optional CUB-style files in ``DIR``: ``parts.txt``
    (``<part id> <name>``), and ``images.txt`` (``<image id> <path relative to DIR>``) with ``part_locs.txt``
    (``<image id> <part id> <x> <y> <visible>``, x, y in photo pixels, origin top-left). RGBA images: the
    alpha channel is the object mask. Object mask priority: mask file > alpha > saliency mask.
    ``DIR/part_names.txt`` (one name per line) names the co-segmentation parts (see
    :mod:`protolens.services.bank`).

Bank cache (written by ``protolens bank build DIR``)
    ``DIR/.protolens-bank/`` (hidden, so scans skip it), or, when ``DIR`` is not writable,
    ``default_cache_dir()/banks/<sha256 of the resolved absolute path of DIR>[:16]``:

    ``bank.json``
        schema ``protolens.bank/1``: ``model``, ``weights`` {``id``, ``sha256``}, ``input`` (side in pixels),
        ``parts`` (k), ``part_names`` (k), ``images`` [{``rel``, ``class``, ``sha256``, ``size`` (bytes),
        ``mtime_ns``, ``height``, ``width``}] in bank order, ``unreadable`` [{``rel``, ``size``,
        ``mtime_ns``, ``reason``}], ``created``. Written last: its presence means the build finished.
    ``bank.npz``
        ``cls`` (n, d) float32 CLS embeddings in bank order; ``part_centroids`` (k, d) float32.
    ``features/<sha256>.npz``
        per image: ``tokens`` (rows, cols, d) float16 patch tokens, ``saliency`` (rows, cols) float32 in
        [0, 1], ``cls`` (d,) float32, ``image_size`` (2,) int64 (height, width), ``identity`` (str: model,
        weights sha256 and input size the features were computed with).

Every file is written atomically (:mod:`protolens.core.atomic`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from protolens.core.atomic import load_npz_arrays, write_json_atomic, write_npz_atomic
from protolens.core.cache import MemoryCache, default_cache_dir
from protolens.core.errors import CheckpointError, ImageReadError, ParamError
from protolens.core.hashing import sha256_file, sha256_json
from protolens.core.imageio import read_mask, scan_tree
from protolens.core.segments import (
    Segments,
    object_mask_from_alpha,
    part_location_segments,
    part_map_segments,
    saliency_mask,
)
from protolens.core.store import utc_now

SCHEMA = "protolens.bank/1"
CACHE_NAME = ".protolens-bank"
"""Name of the cache folder inside a writable bank folder."""
MASK_SUFFIX = ".mask.png"
PARTS_SUFFIX = ".parts.png"
PART_NAMES_FILE = "part_names.txt"
"""The user's names of the co-segmentation parts, one per line (``DIR/part_names.txt``)."""
CUB_PARTS, CUB_IMAGES, CUB_LOCATIONS = "parts.txt", "images.txt", "part_locs.txt"
FEATURE_MEMORY_BYTES = 512 * 1024**2
"""Most bytes of decoded per-image features a :class:`BankCache` keeps in memory."""


def build_command(root: str | Path) -> str:
    """The command that builds (or refreshes) the bank of ``root``."""
    return f"`protolens bank build {root}`"


def is_annotation_file(path: str | Path) -> bool:
    """Whether ``path`` is an object or part mask beside a bank image (``*.mask.png``, ``*.parts.png``)."""
    name = Path(path).name.lower()
    return name.endswith(MASK_SUFFIX) or name.endswith(PARTS_SUFFIX)


@dataclass
class BankImage:
    """One bank image.

    Attributes
    ----------
    path : Path
        The image file.
    rel : str
        Path relative to the bank folder (posix); the image's name in explanations.
    label : str
        Its class (top-level subfolder, or the file stem for an image directly in the bank folder).
    sha256 : str
        Hex SHA-256 of the file's bytes when the bank was built.
    size, mtime_ns : int
        File size (bytes) and modification time (ns) when the bank was built.
    image_size : tuple of int
        (height, width) of the photo in pixels.
    """

    path: Path
    rel: str
    label: str
    sha256: str
    size: int = 0
    mtime_ns: int = 0
    image_size: tuple[int, int] = (0, 0)

    def to_json(self) -> dict[str, Any]:
        return {"rel": self.rel, "class": self.label, "sha256": self.sha256, "size": self.size,
                "mtime_ns": self.mtime_ns, "height": int(self.image_size[0]), "width": int(self.image_size[1])}


def scan_bank(root: str | Path) -> tuple[list[tuple[Path, str, str]], int]:
    """The bank images under ``root`` as (path, rel, class), and the count of other files left out.

    Folders are searched breadth first, each in natural order; hidden entries (the cache) and links to
    folders are not followed; ``*.mask.png`` / ``*.parts.png`` files are annotations, neither images nor
    counted. Class: the top-level subfolder, or the file stem for an image directly in ``root``.

    Raises
    ------
    ParamError
        ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ParamError(f"{root}: not a folder (a bank is a folder of class subfolders or of images)")
    scan = scan_tree(root)
    found: list[tuple[Path, str, str]] = []
    for path in scan.images:
        if not is_annotation_file(path):
            rel = path.relative_to(root)
            found.append((path, rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else path.stem))
    ignored = sum(1 for p, _ in scan.skipped if p.name not in _BANK_TEXT_FILES)
    return found, ignored


_BANK_TEXT_FILES = frozenset({CUB_PARTS, CUB_IMAGES, CUB_LOCATIONS, PART_NAMES_FILE})


def bank_cache_dir(root: str | Path) -> Path:
    """The cache folder of the bank in ``root`` (see the module docstring).

    An existing built cache is found first (``DIR/.protolens-bank``, then the user-cache fallback); otherwise
    ``DIR/.protolens-bank`` when ``DIR`` is writable, else ``default_cache_dir()/banks/<sha256(path)[:16]>``
    where path is the resolved absolute path of ``DIR``.
    """
    root = Path(root).resolve()
    local = root / CACHE_NAME
    fallback = default_cache_dir() / "banks" / hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:16]
    for folder in (local, fallback):
        if (folder / "bank.json").is_file():
            return folder
    writable = os.access(local, os.W_OK) if local.is_dir() else os.access(root, os.W_OK)
    return local if writable else fallback


def feature_identity(model: str, weights_sha256: str, input_size: int) -> str:
    """What features were computed with: ``"<model>|<weights sha256>|<input>"`` (stored in each features file)."""
    return f"{model}|{weights_sha256}|{int(input_size)}"


def features_path(cache_dir: str | Path, sha256: str) -> Path:
    """``<cache>/features/<sha256>.npz``."""
    return Path(cache_dir) / "features" / f"{sha256}.npz"


def write_features(cache_dir: str | Path, sha256: str, *, tokens: np.ndarray, saliency: np.ndarray,
                   cls: np.ndarray, image_size: tuple[int, int], identity: str) -> Path:
    """Write one image's features atomically (tokens stored as float16); returns the file's path.

    ``tokens`` (rows, cols, d), ``saliency`` (rows, cols), ``cls`` (d,), ``image_size`` (height, width).
    """
    path = features_path(cache_dir, sha256)
    write_npz_atomic(path, tokens=np.ascontiguousarray(tokens, np.float16),
                     saliency=np.ascontiguousarray(saliency, np.float32), cls=np.ascontiguousarray(cls, np.float32),
                     image_size=np.asarray(image_size, np.int64), identity=np.array(identity))
    return path


def stored_identity(cache_dir: str | Path, sha256: str) -> str | None:
    """The ``identity`` of a stored features file (only that member is read), or None if absent or damaged."""
    path = features_path(cache_dir, sha256)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return str(archive["identity"])
    except Exception:  # noqa: BLE001 - absent or damaged: the image is embedded again
        return None


def read_features(cache_dir: str | Path, sha256: str) -> dict[str, np.ndarray]:
    """Every array of a stored features file (``tokens`` still float16).

    Raises CheckpointError (naming the rebuild command) when the file is missing or damaged.
    """
    path = features_path(cache_dir, sha256)
    try:
        return load_npz_arrays(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - OSError, BadZipFile, ValueError
        raise CheckpointError(f"{path}: bank features missing or damaged ({type(exc).__name__}); "
                              f"rebuild the bank with `protolens bank build`") from None


def _has_alpha(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                image.mode == "P" and "transparency" in image.info)
    except (OSError, ValueError):
        return False


def _to_size(mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    height, width = int(image_size[0]), int(image_size[1])
    if mask.shape[:2] != (height, width):
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(mask)


def find_object_mask(path: str | Path, image_size: tuple[int, int],
                     saliency: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """The object mask of an image by the bank's priority: mask file > alpha > saliency mask.

    Parameters
    ----------
    path : path
        The image; ``<stem>.mask.png`` beside it is the mask file (> 127 = object).
    image_size : tuple of int
        (height, width) of the photo; a mask file of another size is resized (nearest).
    saliency : numpy.ndarray, optional
        (rows, cols) float token saliency (KLC step 2 / Amir et al.: CLS attention); its mask is
        :func:`protolens.core.segments.saliency_mask` at the photo size.

    Returns
    -------
    (numpy.ndarray or None, str)
        (height, width) bool mask and its source (``"mask file"``, ``"alpha"``, ``"saliency"``); (None, "")
        when no source gives a non-empty mask. An empty mask file or alpha falls through to the next source.

    Raises
    ------
    ImageReadError
        The mask file exists but cannot be read.
    """
    path = Path(path)
    mask_file = path.with_name(path.stem + MASK_SUFFIX)
    if mask_file.is_file():
        mask = _to_size(read_mask(mask_file) > 127, image_size).astype(bool)
        if mask.any():
            return mask, "mask file"
    if _has_alpha(path):
        try:
            mask = _to_size(object_mask_from_alpha(read_mask(path)), image_size).astype(bool)
        except ImageReadError:
            mask = np.zeros(0, bool)
        if mask.any():
            return mask, "alpha"
    if saliency is not None:
        return saliency_mask(saliency, (int(image_size[0]), int(image_size[1]))), "saliency"
    return None, ""


def token_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """An object mask at the token grid: (rows, cols) bool, a token is inside when >= half its area is.

    When no token reaches half (a thin or tiny object) the tokens the mask touches at all are used, so a
    non-empty mask never gives an empty token mask. ``mask`` is (height, width) bool at the photo size.
    """
    rows, cols = int(grid[0]), int(grid[1])
    cover = cv2.resize(np.asarray(mask, np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    inside = cover >= 0.5
    if not inside.any() and np.asarray(mask).any():
        inside = cover > 0
        if not inside.any():  # far smaller than a token: the token under its first pixel
            ys, xs = np.nonzero(mask)
            inside[min(int(ys[0] * rows / mask.shape[0]), rows - 1), min(int(xs[0] * cols / mask.shape[1]),
                                                                          cols - 1)] = True
    return inside


def read_part_mask(path: str | Path, image_size: tuple[int, int]) -> np.ndarray:
    """An indexed part mask (``<stem>.parts.png``: 0 = none, v = part v) as (height, width) int32.

    Palette PNGs give their indices, grey PNGs their values; another size is resized (nearest).
    Raises ImageReadError for an unreadable file or a colour (RGB) image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise ImageReadError(path, f"a part mask must be an indexed or grey PNG, not mode {image.mode}")
            ids = np.asarray(image).astype(np.int32)
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"cannot read the part mask: {exc}") from None
    return _to_size(ids, image_size).astype(np.int32)


def _part_names_for(names: Sequence[str], highest: int) -> list[str]:
    """The annotation vocabulary, extended with ``part v`` for ids beyond it."""
    out = list(names)
    return out + [f"part {v}" for v in range(len(out) + 1, highest + 1)]


@dataclass
class BankCache:
    """A built bank: its images, CLS embeddings, part centroids and per-image features (read lazily).

    Attributes
    ----------
    root, cache_dir : Path
        The bank folder and its cache folder.
    images : list of BankImage
        Bank images in bank order (rows of ``cls``).
    classes : list of str
        Classes in order of first appearance in ``images``.
    model, weights_id, weights_sha256 : str
        The backbone (a vit-attention ``model`` choice) and its weights as that backend names them
        (random weights: id ``<model>:random-init``, sha256 ``none``).
    input_size : int
        Side of the square model input in pixels (aspect ignored).
    cls : numpy.ndarray
        (n, d) float32 CLS embeddings (KLC step 1).
    part_centroids : numpy.ndarray or None
        (k, d) float32 co-segmentation part centroids (K-Means on L2-normalised foreground tokens).
    part_names : list of str
        k names of those parts (``part 1``.. or ``DIR/part_names.txt``).
    digest : str
        SHA-256 over the model, weights, input, image hashes and part centroids: a key for work derived from
        this bank (it changes whenever a rebuild changes anything).
    """

    root: Path
    cache_dir: Path
    images: list[BankImage]
    classes: list[str]
    model: str
    weights_id: str
    weights_sha256: str
    input_size: int
    cls: np.ndarray
    part_centroids: np.ndarray | None
    part_names: list[str]
    digest: str = ""
    _memory: MemoryCache[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=lambda: MemoryCache(256, max_bytes=FEATURE_MEMORY_BYTES,
                                            size_of=lambda v: sum(a.nbytes for a in v)),
        init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images)

    @cached_property
    def _unit_cls(self) -> np.ndarray:
        norms = np.linalg.norm(self.cls.astype(np.float32), axis=1, keepdims=True)
        return (self.cls / np.maximum(norms, 1e-12)).astype(np.float32)

    def retrieve(self, query_cls: np.ndarray, k: int = 5,
                 exclude_sha256: str | None = None) -> list[tuple[int, float]]:
        """The top-k bank images by cosine similarity of CLS embeddings (KLC step 1), best first.

        Parameters
        ----------
        query_cls : numpy.ndarray
            (d,) CLS embedding of the query (any float dtype).
        k : int
            How many (>= 1); more than available gives all.
        exclude_sha256 : str, optional
            The query file's sha256: bank images with the same bytes are left out (leave-one-out).

        Returns
        -------
        list of (int, float)
            (bank index, cosine) pairs; equal cosines keep the lower index first.

        Raises
        ------
        ParamError
            k < 1, or an embedding of another dimension than the bank's.
        """
        if k < 1:
            raise ParamError(f"--k {k}: retrieve at least 1 prototype")
        query = np.asarray(query_cls, np.float32).reshape(-1)
        if query.shape[0] != self.cls.shape[1]:
            raise ParamError(f"the query embedding has {query.shape[0]} dimensions, the bank's "
                             f"{self.cls.shape[1]} (built with {self.model})")
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        similarity = self._unit_cls @ query
        order = np.argsort(-similarity, kind="stable")
        if exclude_sha256 is not None:
            order = np.array([i for i in order if self.images[i].sha256 != exclude_sha256], np.int64)
        return [(int(i), float(similarity[i])) for i in order[:k]]

    def features(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``index``'s (tokens (rows, cols, d) float32, saliency (rows, cols) float32, cls (d,) float32).

        Read from ``features/<sha256>.npz`` once and kept in memory (LRU, 512 MiB). Raises CheckpointError
        for a missing or damaged file.
        """
        sha = self.images[index].sha256
        hit = self._memory.get(sha)
        if hit is None:
            arrays = read_features(self.cache_dir, sha)
            hit = (arrays["tokens"].astype(np.float32), arrays["saliency"].astype(np.float32),
                   arrays["cls"].astype(np.float32))
            self._memory.put(sha, hit)
        return hit

    def object_mask(self, index: int, saliency: np.ndarray | None = None) -> np.ndarray:
        """(height, width) bool object mask of image ``index``: mask file > alpha > saliency mask.

        ``saliency`` (rows, cols) defaults to the stored one. See :func:`find_object_mask`.
        """
        image = self.images[index]
        if saliency is None:
            saliency = self.features(index)[1]
        mask, _ = find_object_mask(image.path, image.image_size, saliency)
        return mask if mask is not None else np.zeros(image.image_size, bool)

    @cached_property
    def annotation_part_names(self) -> list[str]:
        """The annotation vocabulary of ``DIR/parts.txt`` (part id v is entry v - 1); [] without the file."""
        from protolens.core.parts import read_part_names

        path = self.root / CUB_PARTS
        return read_part_names(path) if path.is_file() else []

    @cached_property
    def _part_locations(self) -> dict[str, list[tuple[int, float, float, bool]]]:
        from protolens.core.parts import read_image_ids, read_part_locations

        ids_file, locs_file = self.root / CUB_IMAGES, self.root / CUB_LOCATIONS
        if not (ids_file.is_file() and locs_file.is_file()):
            return {}
        paths = read_image_ids(ids_file)
        locations = read_part_locations(locs_file)
        return {Path(rel).as_posix(): locations.get(image_id, []) for image_id, rel in paths.items()}

    def part_mask_segments(self, path: str | Path, image_size: tuple[int, int]) -> Segments | None:
        """The parts of ``<stem>.parts.png`` beside the photo ``path`` as Segments (source ``"bank"``), or None
        without that file.

        One segment per part of ``parts.txt``, names ``part v`` beyond it
        (:func:`protolens.core.segments.part_map_segments`); a mask of another size than ``image_size``
        (height, width) is resized (nearest). Raises ImageReadError (part mask) or ParamError (bad parts.txt).
        """
        path = Path(path)
        parts_file = path.with_name(path.stem + PARTS_SUFFIX)
        if not parts_file.is_file():
            return None
        ids = read_part_mask(parts_file, image_size)
        names = _part_names_for(self.annotation_part_names, int(ids.max(initial=0)))
        return part_map_segments(ids, names, source="bank")

    def annotation_segments(self, index: int, mask: np.ndarray | None = None) -> Segments | None:
        """The annotated parts of image ``index`` as Segments (source ``"bank"``), or None without annotations.

        ``<stem>.parts.png`` first (:meth:`part_mask_segments`), else the visible CUB part locations of the image in
        ``images.txt`` / ``part_locs.txt`` (each pixel of ``mask`` to its nearest visible point;
        :func:`protolens.core.segments.part_location_segments`). ``mask`` (height, width) bool defaults to
        :meth:`object_mask`. Raises ImageReadError (part mask) or ParamError (malformed CUB files).
        """
        image = self.images[index]
        drawn = self.part_mask_segments(image.path, image.image_size)
        if drawn is not None:
            return drawn
        visible = [(p, x, y) for p, x, y, seen in self._part_locations.get(image.rel, []) if seen]
        if not visible:
            return None
        mask = self.object_mask(index) if mask is None else np.asarray(mask, bool)
        if not mask.any():
            return None
        names = _part_names_for(self.annotation_part_names, max(p for p, _, _ in visible))
        points = np.array([[x, y] for _, x, y in visible], np.float32)
        return part_location_segments(mask, points, [names[p - 1] for p, _, _ in visible])


def bank_digest(model: str, weights_sha256: str, input_size: int, images: Sequence[BankImage],
                part_centroids: np.ndarray | None, part_names: Sequence[str]) -> str:
    """SHA-256 identifying a built bank's content (see :attr:`BankCache.digest`)."""
    centroids = "" if part_centroids is None else sha256_json(np.asarray(part_centroids, np.float32).tobytes().hex())
    return sha256_json([model, weights_sha256, int(input_size), [i.sha256 for i in images], centroids,
                        list(part_names)])


def _load_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable bank file ({exc}); rebuild with `protolens bank build`") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise CheckpointError(f"{path}: not a {SCHEMA} file; rebuild with `protolens bank build`")
    return meta


def _changes(root: Path, meta: dict[str, Any]) -> list[str]:
    """Bank images added, removed or edited since the build: ``"<rel> (new|missing|changed)"``."""
    recorded = {e["rel"]: e for e in meta.get("images", [])}
    skipped = {e["rel"]: e for e in meta.get("unreadable", [])}
    found, _ = scan_bank(root)
    changes: list[str] = []
    present = set()
    for path, rel, _label in found:
        present.add(rel)
        entry = recorded.get(rel) or skipped.get(rel)
        stat = path.stat()
        if entry is None:
            changes.append(f"{rel} (new)")
        elif (stat.st_size, stat.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
            if rel in skipped or sha256_file(path) != entry.get("sha256"):
                changes.append(f"{rel} (changed)")
    changes += [f"{rel} (missing)" for rel in recorded if rel not in present]
    return changes


def read_bank_cache(root: str | Path) -> BankCache:
    """The built bank of the folder ``root`` (see the module docstring for the files).

    Raises
    ------
    ParamError
        ``root`` is not a folder, has no built bank ("DIR is not a built bank: run `protolens bank build
        DIR`"), or its images changed since the build (new, missing or edited images; the first 5 named).
    CheckpointError
        Damaged or mismatched cache files.
    """
    root = Path(root)
    if not root.is_dir():
        raise ParamError(f"--bank {root}: not a folder")
    cache_dir = bank_cache_dir(root)
    json_path = cache_dir / "bank.json"
    if not json_path.is_file():
        raise ParamError(f"{root} is not a built bank: run {build_command(root)}")
    meta = _load_json(json_path)
    changes = _changes(root, meta)
    if changes:
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise ParamError(f"{root}: {len(changes)} bank images changed since the bank was built "
                         f"({', '.join(changes[:5])}{more}); run {build_command(root)} again")
    try:
        arrays = load_npz_arrays((cache_dir / "bank.npz").read_bytes())
        cls = np.asarray(arrays["cls"], np.float32)
        centroids = np.asarray(arrays["part_centroids"], np.float32) if "part_centroids" in arrays else None
    except Exception as exc:  # noqa: BLE001 - OSError, BadZipFile, KeyError, ValueError
        raise CheckpointError(f"{cache_dir / 'bank.npz'}: unreadable ({type(exc).__name__}: {exc}); "
                              f"run {build_command(root)} again") from None
    images = [BankImage(root / e["rel"], e["rel"], e["class"], e["sha256"], int(e["size"]), int(e["mtime_ns"]),
                        (int(e["height"]), int(e["width"]))) for e in meta["images"]]
    if cls.ndim != 2 or cls.shape[0] != len(images):
        raise CheckpointError(f"{cache_dir}: bank.npz holds {cls.shape} CLS embeddings for {len(images)} "
                              f"images; run {build_command(root)} again")
    if centroids is not None and centroids.size == 0:
        centroids = None
    names = list(meta.get("part_names", []))
    weights = meta.get("weights", {})
    classes = list(dict.fromkeys(i.label for i in images))
    return BankCache(root, cache_dir, images, classes, meta["model"], weights.get("id", ""),
                     weights.get("sha256", ""), int(meta["input"]), cls, centroids, names,
                     bank_digest(meta["model"], weights.get("sha256", ""), int(meta["input"]), images, centroids,
                                 names))


def write_bank_cache(cache_dir: str | Path, *, model: str, weights_id: str, weights_sha256: str, input_size: int,
                     images: Sequence[BankImage], cls: np.ndarray, part_centroids: np.ndarray,
                     part_names: Sequence[str], unreadable: Sequence[dict[str, Any]] = (),
                     extra: dict[str, Any] | None = None) -> Path:
    """Write ``bank.npz`` then ``bank.json`` (schema ``protolens.bank/1``) atomically; returns bank.json's path.

    ``cls`` (n, d) float32 in the order of ``images``; ``part_centroids`` (k, d) float32 named by
    ``part_names``; ``unreadable`` entries {rel, size, mtime_ns, reason}; ``extra`` adds provenance keys.
    """
    cache_dir = Path(cache_dir)
    cls = np.ascontiguousarray(cls, np.float32)
    centroids = np.ascontiguousarray(part_centroids, np.float32)
    if cls.shape[0] != len(images) or len(part_names) != centroids.shape[0]:
        raise ValueError("write_bank_cache: one CLS row per image and one name per part centroid")
    write_npz_atomic(cache_dir / "bank.npz", cls=cls, part_centroids=centroids)
    path = cache_dir / "bank.json"
    write_json_atomic(path, {
        "schema": SCHEMA, "model": model, "weights": {"id": weights_id, "sha256": weights_sha256},
        "input": int(input_size), "parts": int(centroids.shape[0]), "part_names": list(part_names),
        "dim": int(cls.shape[1]) if cls.ndim == 2 else 0, "images": [i.to_json() for i in images],
        "unreadable": list(unreadable), **(extra or {}), "created": utc_now()})
    return path
