"""Prototypes P (K x D) from a folder of training photos: CLS embeddings, then K-Means.

Source: prototype-guided zero-shot segmentation, arXiv 2512.19957, step 2 (METHODS.md §1). Every image is
resized (short side = input, bicubic), centre-cropped and encoded by the backbone (CLS after the final
norm, :mod:`protolens.models.embeddings`); the prototypes are the K-Means centroids of those embeddings
(:mod:`protolens.models.kmeans`; squared L2, nothing normalised, clusters not tied to labels).

Files, for ``--out DIR/prototypes.safetensors``:

``DIR/prototypes.safetensors``
    tensor ``prototypes`` (K, D) float32.
``DIR/prototypes.json``
    provenance (schema ``protolens.prototypes/1``): backbone, weights, input, K-Means settings and outcome,
    the images used (count and digest), classes and cluster scores when the images sit in class subfolders.
``DIR/prototypes.shards/``
    the embeddings, resumable: ``manifest.json`` (backbone, weights sha256, input) and
    ``shard_#####.npz`` files of up to ``shard_size`` images each (``paths`` relative to the images folder,
    ``sizes``, ``mtimes`` (ns), ``sha256``, ``vectors`` (n, D) float32, ``dtype``), each written atomically
    once embedded. A rerun embeds only the images no shard holds with the same size and modification time;
    an edited photo is embedded again (the newest shard wins). A shard folder made with another backbone,
    weights or input is never mixed in: the build stops with a ParamError (delete the folder or choose
    another ``--out``). Unreadable images are not recorded, so they are retried on every run.

The backbone is the vit-attention backend's (``model`` choices, weights look-up, dtype rule), loaded on the
segmenter's device pool as for tile tokens (:mod:`protolens.services.tokens`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import load_npz_arrays, write_bytes_atomic, write_json_atomic, write_npz_atomic
from protolens.core.errors import CheckpointError, ParamError
from protolens.core.hashing import sha256_file, sha256_json
from protolens.core.imageio import read_image, scan_tree
from protolens.core.jobs import CancelToken, Progress, rescaled
from protolens.core.store import utc_now
from protolens.models import api
from protolens.models.kmeans import adjusted_rand_index, choose_library, cluster_purity, kmeans
from protolens.services.segment import Segmenter, drain
from protolens.services.tokens import _backbone

SCHEMA = "protolens.prototypes/1"
SHARDS_SCHEMA = "protolens.embeddings/1"
TENSOR = "prototypes"
"""Name of the (K, D) float32 tensor in the safetensors file."""
METHOD = ("arXiv 2512.19957 step 2: short side to input (PIL bicubic), centre crop input x input, the model's "
          "mean/std, CLS after the final norm; K-Means in squared L2, features and centroids not normalised")
EMBED_SHARE = 0.9
"""Fraction of the progress bar given to embedding; K-Means and writing take the rest."""


@dataclass(frozen=True)
class TrainingImage:
    """One training photo: its path, path relative to the images folder (posix), class and file identity."""

    path: Path
    rel: str
    label: str | None
    size: int
    mtime_ns: int


@dataclass
class PrototypeSummary:
    """What :func:`build_prototypes` did.

    ``embedded`` images were encoded by this run, ``reused`` came from earlier shards; ``unreadable`` lists
    (path relative to the images folder, reason) of images skipped; ``ignored`` counts other files.
    ``classes`` (class -> images used) is None without class subfolders; then ``purity`` and ``ari`` are None.
    """

    out_file: Path
    provenance_file: Path
    shards_dir: Path
    k: int
    dim: int
    n_images: int
    embedded: int
    reused: int
    library: str
    inertia: float
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    classes: dict[str, int] | None = None
    purity: float | None = None
    ari: float | None = None
    warnings: list[str] = field(default_factory=list)


def provenance_path(out_file: str | Path) -> Path:
    """``<out stem>.json`` next to the prototypes file."""
    out_file = Path(out_file)
    return out_file.with_name(f"{out_file.stem}.json")


def shards_path(out_file: str | Path) -> Path:
    """``<out stem>.shards/`` next to the prototypes file: the resumable embeddings."""
    out_file = Path(out_file)
    return out_file.with_name(f"{out_file.stem}.shards")


def scan_training_images(images_dir: str | Path) -> tuple[list[TrainingImage], int]:
    """Every photo under ``images_dir`` (recursive, natural order per folder) and the count of other files.

    An image's class is its top-level subfolder (``images_dir/<class>/.../photo.jpg``); images directly in
    ``images_dir`` have none. Hidden entries and links to folders are not followed.
    Raises ParamError if ``images_dir`` is not a folder.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise ParamError(f"--images {root}: not a folder")
    scan = scan_tree(root)
    found = []
    for path in scan.images:
        rel = path.relative_to(root)
        stat = path.stat()
        found.append(TrainingImage(path, rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else None,
                                   stat.st_size, stat.st_mtime_ns))
    ignored = len(scan.skipped)
    return found, ignored


@dataclass
class _Entry:
    size: int
    mtime_ns: int
    sha256: str
    vector: np.ndarray
    dtype: str


class ShardStore:
    """The resumable embeddings of one prototypes file (see the module docstring for the layout)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.warnings: list[str] = []

    def open(self, manifest: dict[str, Any]) -> None:
        """Create the folder and manifest, or check that an existing manifest describes the same embeddings.

        A manifest without shards (a run that stopped before its first shard) is replaced. Raises ParamError
        for shards of another backbone, weights or input; CheckpointError for an unreadable manifest.
        """
        path = self.folder / "manifest.json"
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: unreadable shard manifest ({exc}); delete {self.folder}") from None
            keys = ("schema", "backbone", "weights_sha256", "input")
            differ = [k for k in keys if old.get(k) != manifest[k]]
            if differ and any(self.folder.glob("shard_*.npz")):
                was = ", ".join(f"{k} {old.get(k)!r} (now {manifest[k]!r})" for k in differ)
                raise ParamError(f"{self.folder} holds embeddings made with {was}; they are not mixed in. "
                                 f"Delete that folder to start afresh, or choose another --out")
            if not differ:
                return
        write_json_atomic(path, {**manifest, "created": utc_now()})

    def load(self) -> dict[str, _Entry]:
        """Embedded images by relative path; later shards override earlier ones. Damaged shards are skipped
        (their images are embedded again) with a message in :attr:`warnings`."""
        entries: dict[str, _Entry] = {}
        for path in sorted(self.folder.glob("shard_*.npz")):
            try:
                arrays = load_npz_arrays(path.read_bytes())
                rows = zip(arrays["paths"].tolist(), arrays["sizes"].tolist(), arrays["mtimes"].tolist(),
                           arrays["sha256"].tolist(), arrays["vectors"], strict=True)
                dtype = str(arrays["dtype"])
                for rel, size, mtime, sha, vector in rows:
                    entries[rel] = _Entry(int(size), int(mtime), sha, np.asarray(vector, np.float32), dtype)
            except Exception as exc:  # noqa: BLE001 - any damage: re-embed those images
                self.warnings.append(f"{path.name}: unreadable shard ({type(exc).__name__}: {exc}); "
                                     f"its images are embedded again")
        return entries

    def next_number(self) -> int:
        """The number of the next shard: one more than the highest written (0 in an empty folder)."""
        numbers = [int(p.stem.split("_")[1]) for p in self.folder.glob("shard_*.npz") if p.stem[6:].isdigit()]
        return max(numbers, default=-1) + 1

    def write(self, images: Sequence[TrainingImage], sha256: Sequence[str], vectors: np.ndarray, dtype: str,
              number: int | None = None) -> Path:
        """Write ``shard_<number>.npz`` atomically (default the next number); returns its path.

        Concurrent writers (Ray workers) must each be given their ``number``: the default is found by listing
        the folder, which two writers could do at the same time.
        """
        number = self.next_number() if number is None else number
        path = self.folder / f"shard_{number:05d}.npz"
        write_npz_atomic(path, paths=np.array([i.rel for i in images], dtype=str),
                         sizes=np.array([i.size for i in images], np.int64),
                         mtimes=np.array([i.mtime_ns for i in images], np.int64),
                         sha256=np.array(list(sha256), dtype=str), vectors=np.ascontiguousarray(vectors, np.float32),
                         dtype=np.array(dtype))
        return path


def _check_args(out_file: Path, k: int, shard_size: int, batch_size: int, input_size: int) -> None:
    if out_file.suffix != ".safetensors":
        raise ParamError(f"--out {out_file}: give a .safetensors file (e.g. prototypes.safetensors)")
    if k < 1:
        raise ParamError(f"--k: {k}; give at least 1 cluster")
    if shard_size < 1 or batch_size < 1 or input_size < 1:
        raise ParamError("--batch-size, --input and the shard size must be at least 1")


def _embed_shard(segmenter: Segmenter, backend: Any, params: Any, ctx: Any, images: Sequence[TrainingImage], *,
                 input_size: int, batch_size: int, warnings: list[str]) -> Generator[Progress, None, Any]:
    """(Embeddings, sha256 by index, dtype) of ``images`` on the device pool."""
    hashes: dict[int, str] = {}

    def read(index: int) -> np.ndarray:
        rgb = read_image(images[index].path)
        hashes[index] = sha256_file(images[index].path)
        return rgb

    def job(device: str) -> Generator[Progress, None, Any]:
        from protolens.models.embeddings import embed_images

        device_ctx = dataclasses.replace(ctx, device=device)
        network = backend.load_model(params, device_ctx)
        spec = api.vit_spec(network)
        dtype = device_ctx.resolved_dtype()
        result = yield from embed_images(network, range(len(images)), read, input_size=input_size, mean=spec.mean,
                                         std=spec.std, batch_size=batch_size, device=device, dtype=dtype,
                                         cancel=ctx.cancel)
        return result, dtype

    embedded, dtype = yield from segmenter.pool().run(job, cancel=ctx.cancel, prefer=segmenter.device,
                                                      warnings=warnings)
    return embedded, hashes, dtype


def _embed_pending(segmenter: Segmenter, backbone: tuple[Any, Any, Any], store: ShardStore,
                   pending: list[TrainingImage], entries: dict[str, _Entry], *, input_size: int, batch_size: int,
                   shard_size: int, warnings: list[str]) -> Generator[Progress, None, list[tuple[str, str]]]:
    """Embed ``pending`` shard by shard into ``store`` and ``entries``; returns the unreadable (rel, reason)."""
    backend, params, ctx = backbone
    unreadable: list[tuple[str, str]] = []
    for start in range(0, len(pending), shard_size):
        ctx.cancel.raise_if_set()
        chunk = pending[start:start + shard_size]
        inner = _embed_shard(segmenter, backend, params, ctx, chunk, input_size=input_size, batch_size=batch_size,
                             warnings=warnings)
        embedded, hashes, dtype = yield from rescaled(inner, EMBED_SHARE * start / len(pending),
                                                      EMBED_SHARE * len(chunk) / len(pending),
                                                      lambda r: f"embedding: {r.text}")
        unreadable += [(chunk[i].rel, reason) for i, reason in embedded.failed]
        if embedded.done:
            done = [chunk[i] for i in embedded.done]
            store.write(done, [hashes[i] for i in embedded.done], embedded.vectors, dtype)
            for image, i, vector in zip(done, embedded.done, embedded.vectors, strict=True):
                entries[image.rel] = _Entry(image.size, image.mtime_ns, hashes[i], vector, dtype)
    return unreadable


def _class_scores(used: list[TrainingImage], assignment: np.ndarray) -> dict[str, Any]:
    """Classes (counts) and cluster purity / ARI over the labelled images, or {} without classes."""
    labelled = [i for i, image in enumerate(used) if image.label is not None]
    if not labelled:
        return {}
    labels = np.array([used[i].label for i in labelled])
    names, counts = np.unique(labels, return_counts=True)
    clusters = assignment[labelled]
    return {"classes": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
            "unlabelled": len(used) - len(labelled), "purity": cluster_purity(clusters, labels),
            "adjusted_rand_index": adjusted_rand_index(clusters, labels)}


def build_prototypes(segmenter: Segmenter, images_dir: str | Path, out_file: str | Path, *, backbone: str,
                     weights_path: str | Path | None = None, k: int, input_size: int = 518, seed: int = 0,
                     niter: int = 350, nredo: int = 30, batch_size: int = 32, shard_size: int = 256,
                     precision: str = "auto", allow_random_weights: bool = False, cancel: CancelToken | None = None,
                     library: str = "auto") -> Generator[Progress, None, PrototypeSummary]:
    """Build the prototypes P (K x D) of arXiv 2512.19957 step 2 from the photos under ``images_dir``.

    Parameters
    ----------
    segmenter : Segmenter
        Gives the vit-attention backend (registry) and the device pool the embeddings run on.
    images_dir : path
        Training photos, searched recursively; with class subfolders, an image's class is its top-level
        subfolder (used only for the purity and adjusted Rand index reported, never for clustering).
    out_file : path
        The ``.safetensors`` file to write; ``<stem>.json`` (provenance) and ``<stem>.shards/`` go beside it.
    backbone : str
        One of the vit-attention backend's ``model`` choices (e.g. ``vit_base_patch14_reg4_dinov2.lvd142m``).
    weights_path : path, optional
        Backbone weights file; default: the local cache (``protolens weights pull``).
    k : int
        Number of prototypes (the reference: the number of classes, 7806); at most the number of images.
    input_size : int
        Model input side in pixels (518); a multiple of the patch size.
    seed, niter, nredo, library
        K-Means settings (:func:`protolens.models.kmeans.kmeans`).
    batch_size : int
        Images per forward pass (halved on out-of-memory).
    shard_size : int
        Images per embeddings shard: the most work a cancelled or crashed run loses.
    precision : str
        The backend's precision (``auto``: bfloat16 autocast on CUDA, float32 on the CPU).
    allow_random_weights : bool
        Random backbone weights when none are found (tests, benchmarks).
    cancel : CancelToken, optional
        Checked before every batch; K-Means itself is not interruptible.

    Yields
    ------
    Progress
        Embedding (90 % of the bar), then K-Means and writing.

    Returns
    -------
    PrototypeSummary

    Raises
    ------
    ParamError
        Bad arguments, K larger than the number of (readable) images, no images, or shards of another backbone.
    BackendUnavailableError, WeightsNotFoundError, CheckpointError, Cancelled, StoreWriteError
    """
    cancel = cancel or CancelToken()
    plan = _plan(segmenter, images_dir, out_file, backbone=backbone, weights_path=weights_path, k=k,
                 input_size=input_size, shard_size=shard_size, batch_size=batch_size, precision=precision,
                 allow_random_weights=allow_random_weights, cancel=cancel, library=library)
    yield Progress(0.0, plan.start_text)
    unreadable = yield from _embed_pending(segmenter, plan.parts, plan.store, plan.pending, plan.entries,
                                           input_size=input_size, batch_size=batch_size, shard_size=shard_size,
                                           warnings=plan.warnings)
    return (yield from _cluster(plan, unreadable, k=k, seed=seed, niter=niter, nredo=nredo, cancel=cancel))


@dataclass
class _Plan:
    """What a build knows before embedding: backbone, images, the shard store, what it holds, what is pending."""

    images_dir: str | Path
    out_file: Path
    backbone: str
    input_size: int
    library: str
    parts: tuple[Any, Any, Any]
    weights_id: str
    weights_sha: str
    images: list[TrainingImage]
    ignored: int
    store: ShardStore
    entries: dict[str, _Entry]
    pending: list[TrainingImage]
    warnings: list[str]

    @property
    def start_text(self) -> str:
        before = len(self.images) - len(self.pending)
        return f"{len(self.images)} photos: {before} embedded before, {len(self.pending)} to embed"


def _plan(segmenter: Segmenter, images_dir: str | Path, out_file: str | Path, *, backbone: str,
          weights_path: str | Path | None, k: int, input_size: int, shard_size: int, batch_size: int,
          precision: str, allow_random_weights: bool, cancel: CancelToken, library: str) -> _Plan:
    """Check the arguments, resolve the backbone and weights, scan the images, open the shards (phase 1)."""
    out_file = Path(out_file)
    _check_args(out_file, k, shard_size, batch_size, input_size)
    chosen = choose_library(library)
    backend, params, ctx = _backbone(segmenter, backbone, precision, weights_path, allow_random_weights, cancel)
    weights_id, weights_sha = backend.weights_identity(params, ctx)
    images, ignored = scan_training_images(images_dir)
    if not images:
        raise ParamError(f"--images {images_dir}: no photos found (searched recursively)")
    if k > len(images):
        raise ParamError(f"--k: {k} clusters but only {len(images)} photos under {images_dir}; "
                         f"K-Means needs at least as many images as clusters")
    store = ShardStore(shards_path(out_file))
    store.open({"schema": SHARDS_SCHEMA, "backbone": backbone, "weights_id": weights_id,
                "weights_sha256": weights_sha, "input": input_size, "method": METHOD})
    entries = store.load()
    pending = [i for i in images if (e := entries.get(i.rel)) is None or (e.size, e.mtime_ns) != (i.size, i.mtime_ns)]
    return _Plan(images_dir, out_file, backbone, input_size, chosen, (backend, params, ctx), weights_id,
                 weights_sha, images, ignored, store, entries, pending, list(store.warnings))


def _cluster(plan: _Plan, unreadable: list[tuple[str, str]], *, k: int, seed: int, niter: int, nredo: int,
             cancel: CancelToken) -> Generator[Progress, None, PrototypeSummary]:
    """K-Means over the embeddings of every readable image, then the prototypes file and provenance (phase 3)."""
    images, entries, out_file = plan.images, plan.entries, plan.out_file
    failed = {rel for rel, _ in unreadable}
    used = [i for i in images if i.rel not in failed]
    if not used:
        raise ParamError(f"--images {plan.images_dir}: none of the {len(images)} photos could be read")
    vectors = np.stack([entries[i.rel].vector for i in used]) if used else np.zeros((0, 0), np.float32)
    yield Progress(EMBED_SHARE, f"k-means ({plan.library}): {len(used)} x {vectors.shape[1]} into {k} clusters")
    result = kmeans(vectors, k, seed=seed, niter=niter, nredo=nredo, library=plan.library)
    cancel.raise_if_set()
    scores = _class_scores(used, result.assignment)
    provenance = {
        "schema": SCHEMA, "file": out_file.name, "tensor": TENSOR, "backbone": plan.backbone,
        "weights": {"id": plan.weights_id, "sha256": plan.weights_sha}, "input": plan.input_size, "k": k,
        "dim": int(result.centroids.shape[1]), "seed": seed, "niter": niter, "nredo": nredo,
        "library": result.library, "inertia": result.inertia, "n_images": len(used),
        "images_dir": str(Path(plan.images_dir).resolve()),
        "images_sha256": sha256_json([[i.rel, entries[i.rel].sha256] for i in used]),
        "embedding_dtypes": sorted({entries[i.rel].dtype for i in used}),
        "cluster_sizes": np.bincount(result.assignment, minlength=k).tolist(),
        "unreadable": [{"path": rel, "reason": why} for rel, why in unreadable],
        **scores, "method": METHOD, "created": utc_now()}
    save_prototypes(out_file, result.centroids, provenance)
    yield Progress(1.0, f"wrote {out_file}")
    pending = plan.pending
    return PrototypeSummary(out_file, provenance_path(out_file), plan.store.folder, k, int(result.centroids.shape[1]),
                            len(used), len(pending) - len(unreadable), len(images) - len(pending), result.library,
                            result.inertia, unreadable, plan.ignored, scores.get("classes"), scores.get("purity"),
                            scores.get("adjusted_rand_index"), plan.warnings)


RunUnits = Callable[[Any, list[Any]], Sequence[Any]]
"""``run_units(job, units) -> results``: an executor (e.g. the CLI's Ray runner) returning the UnitResults."""


def build_prototypes_with(run_units: RunUnits, segmenter: Segmenter, images_dir: str | Path, out_file: str | Path,
                          *, backbone: str, weights_path: str | Path | None = None, k: int, input_size: int = 518,
                          seed: int = 0, niter: int = 350, nredo: int = 30, batch_size: int = 32,
                          shard_size: int = 256, precision: str = "auto", allow_random_weights: bool = False,
                          library: str = "auto",
                          on_progress: Callable[[Progress], None] | None = None) -> PrototypeSummary:
    """:func:`build_prototypes` with the embeddings computed by an executor (Ray workers), one unit per shard.

    The driver plans as the local build does (``segmenter`` gives the registry; no model runs here), makes one
    :class:`~protolens.services.shard_jobs.PrototypeShardJob` unit of up to ``shard_size`` pending images per
    shard with its shard number (the next free ones, in order, so later shards still win), hands them to
    ``run_units``, reloads the shards and clusters exactly as the local build. The images of a unit that
    failed (its worker died too often) count as unreadable, with the unit's error as the reason.
    ``on_progress`` gets the K-Means and writing reports. Raises as :func:`build_prototypes`.
    """
    from protolens.services.shard_jobs import PrototypeShardJob
    from protolens.services.work import WorkUnit

    cancel = CancelToken()
    images_dir = Path(images_dir).resolve()  # workers may run in another working folder
    out_file = Path(out_file).resolve()
    plan = _plan(segmenter, images_dir, out_file, backbone=backbone, weights_path=weights_path, k=k,
                 input_size=input_size, shard_size=shard_size, batch_size=batch_size, precision=precision,
                 allow_random_weights=allow_random_weights, cancel=cancel, library=library)
    job = PrototypeShardJob(backbone, precision, Path(weights_path).resolve() if weights_path else None,
                            allow_random_weights, input_size, batch_size, plan.store.folder)
    first = plan.store.next_number()
    units = [WorkUnit(f"shard_{first + n:05d}", (first + n, plan.pending[start:start + shard_size]))
             for n, start in enumerate(range(0, len(plan.pending), shard_size))]
    results = {result.name: result for result in run_units(job, units)} if units else {}
    unreadable: list[tuple[str, str]] = []
    for unit in units:
        result = results.get(unit.name)
        if result is not None and result.ok:
            unreadable += [tuple(entry) for entry in result.value["unreadable"]]
            plan.warnings += [w for w in result.value.get("warnings", []) if w not in plan.warnings]
        else:
            why = result.error if result is not None and result.error else f"{unit.name} was not embedded"
            unreadable += [(image.rel, why) for image in unit.payload[1]]
    reloaded = ShardStore(plan.store.folder)
    plan.entries = reloaded.load()
    plan.warnings += [w for w in reloaded.warnings if w not in plan.warnings]
    return drain(_cluster(plan, unreadable, k=k, seed=seed, niter=niter, nredo=nredo, cancel=cancel), on_progress)


def save_prototypes(out_file: str | Path, prototypes: np.ndarray, provenance: dict[str, Any]) -> None:
    """Write ``out_file`` (tensor ``prototypes`` (K, D) float32) and ``<stem>.json``, each atomically.

    The provenance gains ``sha256``, the digest of the safetensors file written.
    """
    from safetensors.numpy import save

    out_file = Path(out_file)
    prototypes = np.ascontiguousarray(prototypes, dtype=np.float32)
    data = save({TENSOR: prototypes}, metadata={"schema": SCHEMA, "k": str(prototypes.shape[0]),
                                                "dim": str(prototypes.shape[1])})
    write_bytes_atomic(out_file, data)
    write_json_atomic(provenance_path(out_file), {**provenance, "sha256": sha256_file(out_file)})


def load_prototypes(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The prototypes P (K, D) float32 of a file written by :func:`build_prototypes`, and its provenance.

    The provenance is ``<stem>.json`` beside the file ({} when there is none, e.g. prototypes made elsewhere);
    when present, its ``k`` and ``dim`` must match the tensor.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, no ``prototypes`` tensor, a tensor that is not 2-D floating point or holds
        NaN/inf, an unreadable provenance JSON or one of another schema or shape.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such prototypes file")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: not a safetensors file ({type(exc).__name__}: {exc})") from None
    if TENSOR not in tensors:
        raise CheckpointError(f"{path}: no tensor {TENSOR!r} (has: {', '.join(sorted(tensors)) or 'none'})")
    array = tensors[TENSOR]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        raise CheckpointError(f"{path}: {TENSOR!r} must be a non-empty (K, D) float tensor, "
                              f"got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise CheckpointError(f"{path}: {TENSOR!r} holds NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32), _read_provenance(path, array.shape)


def _read_provenance(path: Path, shape: tuple[int, ...]) -> dict[str, Any]:
    json_path = provenance_path(path)
    if not json_path.is_file():
        return {}
    try:
        provenance = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: unreadable provenance ({exc})") from None
    if not isinstance(provenance, dict) or provenance.get("schema") != SCHEMA:
        raise CheckpointError(f"{json_path}: not a {SCHEMA} provenance file")
    if (provenance.get("k"), provenance.get("dim")) != tuple(shape):
        raise CheckpointError(f"{json_path}: says K x D = {provenance.get('k')} x {provenance.get('dim')}, "
                              f"but {path.name} holds {shape[0]} x {shape[1]}")
    return provenance

