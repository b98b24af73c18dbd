"""``protolens tokens`` and the embedding step of ``protolens prototypes build`` as batch jobs (for Ray).

:class:`TokensJob`: one unit per photo, its crops the unit's batch (:func:`protolens.services.tokens.crop_tokens`);
the worker writes ``<stem>.tokens.npy`` / ``.tokens.json`` into the output folder (stem: the photo's file stem,
as :meth:`~protolens.services.tokens.TokenGrid.save` names them).

:class:`PrototypeShardJob`: one unit per shard of images still to embed; the worker embeds it
(:func:`protolens.services.prototypes._embed_shard`) and writes ``shard_#####.npz`` under the number the driver
gave it, so concurrent workers never pick the same file. Only the unreadable images travel back.

Like :class:`~protolens.services.batch_jobs.SegmentJob`, both are plain dataclasses that Ray pickles to its
workers; each worker builds its own :class:`~protolens.services.segment.Segmenter` (and model) in ``open``.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens.core.errors import ImageReadError, StoreWriteError
from protolens.core.hashing import sha256_file
from protolens.core.jobs import CancelToken
from protolens.services.segment import Segmenter, drain, load_image
from protolens.services.work import UnitResult, WorkUnit


def _registry() -> Any:
    from protolens.models.registry import Registry

    return Registry.discover()


@dataclass
class TokensJob:
    """``protolens tokens`` as a batch job: units from :func:`~protolens.services.batch_jobs.photo_units`
    (payload (path, stem); the stem is not used: tokens files take the photo's file stem)."""

    model: str
    precision: str
    weights_path: Path | None
    grid: tuple[int, int]
    crop: int
    input_size: int
    batch_size: int
    allow_random_weights: bool
    out_dir: Path
    command: str = "tokens"

    def open(self, device: str | None) -> Segmenter:
        """A Segmenter of this worker (the backbone loads on the first photo and stays)."""
        return Segmenter(_registry(), device=device)

    def run(self, state: Segmenter, unit: WorkUnit) -> UnitResult:
        """Tile tokens of one photo, written into ``out_dir``; an unreadable photo or a write error fails the unit."""
        from protolens.services.tokens import crop_tokens

        path = Path(unit.payload[0])
        started = time.perf_counter()
        try:
            image = load_image(path)
            grid = drain(crop_tokens(state, image, self.model, weights_path=self.weights_path, grid=self.grid,
                                     crop=self.crop, input_size=self.input_size, batch_size=self.batch_size,
                                     precision=self.precision, allow_random_weights=self.allow_random_weights))
            written = grid.save(self.out_dir, image)
        except (ImageReadError, StoreWriteError) as exc:
            return UnitResult(unit.name, False, error=str(exc), seconds=time.perf_counter() - started)
        return UnitResult(unit.name, True, [str(p) for p in written], seconds=time.perf_counter() - started)

    @functools.cached_property
    def weights_sha256(self) -> str:
        """The backbone weights' sha256 as the vit-attention backend reports it (runs no model; once per job)."""
        from protolens.services.tokens import _backbone

        backend, params, ctx = _backbone(Segmenter(_registry(), disk_cache=None), self.model, self.precision,
                                         self.weights_path, self.allow_random_weights, CancelToken())
        return backend.weights_identity(params, ctx)[1]

    def is_done(self, unit: WorkUnit) -> bool:
        """Whether ``<stem>.tokens.json`` holds this photo's sha256, model, weights, grid, crop and input size,
        and its ``.npy`` exists."""
        path = Path(unit.payload[0])
        document_path = Path(self.out_dir) / f"{path.stem}.tokens.json"
        try:
            document = json.loads(document_path.read_text(encoding="utf-8"))
            grid = document["grid"]
            same = (document["image"]["sha256"] == sha256_file(path) and document["model"] == self.model
                    and document["weights"]["sha256"] == self.weights_sha256
                    and (grid["rows"], grid["cols"]) == tuple(self.grid)
                    and (grid["crop"], grid["input_size"]) == (self.crop, self.input_size))
            return same and (document_path.parent / document["tokens"]["file"]).is_file()
        except (OSError, ValueError, KeyError, TypeError):
            return False


@dataclass
class PrototypeShardJob:
    """The embedding step of ``protolens prototypes build``: a unit's payload is (shard number, images)."""

    backbone: str
    precision: str
    weights_path: Path | None
    allow_random_weights: bool
    input_size: int
    batch_size: int
    shards_dir: Path
    command: str = "prototypes build"

    def open(self, device: str | None) -> tuple[Segmenter, tuple[Any, Any, Any]]:
        """This worker's Segmenter and the backbone (backend, params, run context); the model loads once."""
        from protolens.services.tokens import _backbone

        segmenter = Segmenter(_registry(), device=device)
        return segmenter, _backbone(segmenter, self.backbone, self.precision, self.weights_path,
                                    self.allow_random_weights, CancelToken())

    def run(self, state: tuple[Segmenter, tuple[Any, Any, Any]], unit: WorkUnit) -> UnitResult:
        """Embed one shard and write it as ``shard_<number>.npz``; value: its unreadable (rel, reason) and warnings."""
        from protolens.services.prototypes import ShardStore, _embed_shard

        segmenter, (backend, params, ctx) = state
        number, images = unit.payload
        started = time.perf_counter()
        warnings: list[str] = []
        embedded, hashes, dtype = drain(_embed_shard(segmenter, backend, params, ctx, images,
                                                     input_size=self.input_size, batch_size=self.batch_size,
                                                     warnings=warnings))
        unreadable = [(images[i].rel, reason) for i, reason in embedded.failed]
        outputs = []
        if embedded.done:
            try:
                outputs.append(str(ShardStore(Path(self.shards_dir)).write(
                    [images[i] for i in embedded.done], [hashes[i] for i in embedded.done], embedded.vectors,
                    dtype, number=number)))
            except StoreWriteError as exc:
                return UnitResult(unit.name, False, error=str(exc), seconds=time.perf_counter() - started)
        return UnitResult(unit.name, True, outputs, seconds=time.perf_counter() - started,
                          value={"unreadable": unreadable, "warnings": warnings})

    def is_done(self, unit: WorkUnit) -> bool:
        """Never: the driver only makes units of images no shard holds."""
        return False
