"""Per-epoch checkpoint comparison: one photo's result under every epoch of a training run, of any run kind.

The run kind is ``config.json``'s ``"model"``; :data:`RUN_KINDS` maps it to the backend that draws an epoch's
map, how the epoch checkpoint reaches that backend, the parameters forced on every epoch run, the per-epoch
indicators read from the ``epoch_###.json`` files and the typed layers the view draws over each pane:

``prototype-vit``
    ``prototype-guided`` (attention only, below), weights = the checkpoint; indicators loss, entropy,
    border_share, iou_previous.
``ldvc``
    ``ldvc`` (LDVC, arXiv 2403.08426): the max class probability map and the label map, weights = the
    checkpoint; indicators loss, miou, miou_seen, miou_unseen, hiou, pixel_accuracy (§4.1 metrics on the
    validation split).
``patch-selector``
    ``patch-selection`` (SVIP, arXiv 2503.10252 §3.2) with its ``selector`` parameter = the checkpoint: the
    super-patch rank map and the kept / dropped regions; indicators loss, agreement_iou (IoU of the kept sets
    with the rollout's on a held-out split).

A run of another kind raises :class:`~protolens.core.errors.CheckpointError` naming the known kinds; a kind
whose backend is not installed raises :class:`~protolens.core.errors.BackendUnavailableError`
(:func:`check_backend`). What follows describes the prototype-ViT kind; the other kinds follow the same path
with their backend.

Source: prototype-guided zero-shot segmentation, arXiv 2512.19957. Its authors found that early stopping
(epochs 10-15) was essential because later epochs attend to quadrat frames (METHODS.md §1 step 5); this is
the use case that lets a researcher see that happen and choose the epoch. Each map is the attention-only
path of the ``prototype-guided`` backend under one ``epoch_###.safetensors``: the narrow ViT's received
attention (step 6), min-max normalised, with the crop mask at the threshold t. Tile tokens are disk-cached
by the backend, so after the first epoch only the narrow ViT reruns.

Every epoch's result is saved in the per-photo :class:`~protolens.core.store.ResultStore` under its own key
(the checkpoint's sha256 is part of it) without becoming the photo's current result, so the Compare view,
the Results panel and ``protolens results`` see every epoch, and a second comparison reruns nothing.

Files written by :func:`compare_epochs` (atomically, ``<stem>`` = the photo's name without extension)
--------------------------------------------------------------------------------------------------
``<stem>.epoch_###.png``
    RGB uint8, one per epoch: the photo blended with the colour-mapped map on the common grid
    (:func:`protolens.services.compare.compare_grid`), the mask outline in cyan, a title band.
``<stem>.epochs.png``
    Those panes in a grid (row-major, epoch order), then the difference panes.
``<stem>.diff_###-###.png``
    Map of epoch A minus epoch B on a blue-white-red colormap (red: A higher): every consecutive pair
    (B = the previous epoch), or the one pair asked for.
``<stem>.epochs.csv``
    One row per epoch: ``epoch, loss, entropy, border_share, iou_previous, chosen`` (the run's training
    indicators on its probe set, :mod:`protolens.core.indicators`; ``chosen`` 1 for the run's chosen epoch),
    then ``key`` and this photo's ``photo_iou_previous, photo_pearson_previous, photo_spearman_previous``
    (agreement with the previous listed epoch on the common grid; empty where undefined).
``<stem>.epochs.json``
    Schema ``protolens.epochs/1``: the photo, the run, params, grid, the rows above (NaN as null), the
    indicator series, the agreements, the differences and the files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_bytes_atomic, write_json_atomic, write_png_atomic
from protolens.core.errors import CheckpointError, ParamError, StoreWriteError
from protolens.core.indicators import INDICATORS
from protolens.core.jobs import CancelToken, Progress
from protolens.core.records import utc_now
from protolens.core.runs import EpochRecord, RunFolder
from protolens.core.store import ResultStore
from protolens.core.types import Heatmap
from protolens.services import compare as cmp
from protolens.services.results import FoundResult
from protolens.services.run_kinds import DEFAULT_MODEL, RUN_KINDS, RunKind, check_backend, run_kind
from protolens.services.segment import LoadedImage, Segmenter

EPOCHS_SCHEMA = "protolens.epochs/1"
TABLE_COLUMNS = ("epoch", *INDICATORS, "chosen")
"""Columns of the indicator table (CSV and JSON rows) of a prototype-ViT run, in order
(another kind: ``RunKind.columns``)."""
PHOTO_COLUMNS = ("key", "photo_iou_previous", "photo_pearson_previous", "photo_spearman_previous")


def _kind_of(record: EpochRecord) -> RunKind:
    return run_kind(RunFolder(record.checkpoint.parent))


@dataclass
class EpochMap:
    """One epoch's received-attention result for a photo.

    Attributes
    ----------
    epoch : int
        Epochs completed when the checkpoint was written.
    key : str
        The result's key in the store (16 hex digits); differs per epoch (the checkpoint sha256 is in it).
    record : EpochRecord
        The epoch's checkpoint and training metadata.
    found : FoundResult
        The result: provenance, heatmap and raw received attention; ``found.source`` is ``"computed"``,
        ``"cache"`` (the segmenter's heatmap cache) or ``"store"``.
    """

    epoch: int
    key: str
    record: EpochRecord
    found: FoundResult = field(repr=False)

    @property
    def heatmap(self) -> Heatmap:
        """Min-max normalised received attention, float32 in [0, 1], (rows, cols) at native resolution,
        upsampled to the photo on demand (:class:`~protolens.core.types.Heatmap`)."""
        return self.found.heatmap

    @property
    def score(self) -> np.ndarray | None:
        """Raw received attention on the crop grid, (rows, cols) float32 (None if the backend gave none)."""
        return self.found.score

    @property
    def source(self) -> str:
        return self.found.source


@dataclass
class EpochComparison:
    """What :func:`compare_epochs` computed and wrote.

    ``maps`` in epoch order; ``rows`` the CSV rows as dicts (:data:`TABLE_COLUMNS` + :data:`PHOTO_COLUMNS`);
    ``agreements[i]`` the agreement of map i with map i - 1 (None for the first); ``files`` every path written.
    """

    maps: list[EpochMap]
    rows: list[dict[str, Any]]
    agreements: list[cmp.Agreement | None]
    files: list[Path]


# --- which epochs, which parameters ---------------------------------------------------------------------------


def as_run(run: RunFolder | str | Path) -> RunFolder:
    """``run`` as a :class:`RunFolder` whose ``config.json`` is readable. Raises CheckpointError."""
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    folder.config()
    return folder


def select_epochs(run: RunFolder, epochs: Sequence[int] | None = None) -> list[EpochRecord]:
    """The run's completed epochs (``epochs`` None), or those listed, in epoch order without duplicates.

    Raises CheckpointError when the run has no checkpoint or a listed epoch has none (naming those it has).
    """
    records = run.epochs()
    if not records:
        raise CheckpointError(f"{run.path}: the run has no checkpoint yet")
    if epochs is None:
        return records
    by_epoch = {r.epoch: r for r in records}
    missing = sorted({int(e) for e in epochs} - set(by_epoch))
    if missing:
        have = ", ".join(str(e) for e in by_epoch)
        raise CheckpointError(f"{run.path}: no checkpoint of epoch {', '.join(map(str, missing))} (epochs: {have})")
    return [by_epoch[e] for e in sorted({int(e) for e in epochs})]


def epoch_params(params: Mapping[str, Any] | None = None, kind: RunKind | None = None) -> dict[str, Any]:
    """The backend parameters of every epoch run: ``params`` (threshold, batch_size, ...) with those ``kind``
    forces (default prototype-vit: no classifier); the checkpoint parameter is not included."""
    return {**dict(params or {}), **(kind or RUN_KINDS[DEFAULT_MODEL]).params}


# --- computing (or finding) the maps -------------------------------------------------------------------------


def _scaled(report: Progress, index: int, count: int, epoch: int) -> Progress:
    text = f"epoch {epoch} ({index + 1}/{count})" + (f": {report.text}" if report.text else "")
    return Progress((index + min(max(report.fraction, 0.0), 1.0)) / count, text)


def ensure_epoch_result(segmenter: Segmenter, store: ResultStore, image: LoadedImage, record: EpochRecord,
                        params: Mapping[str, Any] | None = None, *, cancel: CancelToken | None = None,
                        allow_random_weights: bool = False, load: bool = True,
                        kind: RunKind | None = None) -> Generator[Progress, None, tuple[str, FoundResult | None]]:
    """Make sure the store holds ``image``'s result under one epoch's checkpoint.

    Order: the segmenter's heatmap cache (:meth:`Segmenter.lookup_keyed`), then the store (same key), then a
    run of the run kind's backend (``kind``, default read from the run's ``config.json``; a prototype-ViT run:
    the ``prototype-guided`` attention-only path, arXiv 2512.19957 step 6) given the checkpoint
    (:meth:`RunKind.run_inputs`).
    A result that is not in the store yet is saved there with ``make_current=False`` (the photo's current
    result does not change); a stored one is never rewritten and keeps the user's threshold. Yields progress.

    Returns (result key, the result; None when it is in the store and ``load`` is False, so no arrays are read).

    Raises
    ------
    BackendUnavailableError, ParamError, WeightsNotFoundError, CheckpointError, Cancelled
        As the backend dictates (its weights, the run folder, cancellation).
    StoreWriteError, SidecarError
        The result cannot be saved, or the photo's sidecar is corrupt.
    """
    kind = kind or _kind_of(record)
    known = [spec.name for spec in segmenter.registry.manifest(kind.backend).params]
    params, weights = kind.run_inputs(record.checkpoint, params, known)
    meta = image.meta
    key, outcome = segmenter.lookup_keyed(image, kind.backend, params, weights_path=weights,
                                          allow_random_weights=allow_random_weights)
    saved = store.load_record(meta.path, key, sha256=meta.sha256)
    if outcome is None and saved is not None:
        if not load:
            return key, None
        stored = store.load_result(meta.path, key, sha256=meta.sha256)
        if stored is not None:
            yield Progress(1.0, "stored result")
            return key, FoundResult.from_stored(stored)
        saved = None  # listed, but its arrays are missing: compute and save it again
    if outcome is None:
        outcome = yield from segmenter.run(image, kind.backend, params, weights_path=weights, cancel=cancel,
                                           allow_random_weights=allow_random_weights)
    found = FoundResult.from_outcome(outcome, params.get("threshold"))
    if saved is not None:  # already stored: keep the user's threshold
        found.record.threshold, found.record.threshold_semantics = saved.threshold, saved.threshold_semantics
        found.suggested_threshold = None
    else:
        store.save_result(meta, found.finalized_record(), found.heatmap, probability=found.probability,
                          score=found.score, layers=found.layers, make_current=False)
    return key, found


def epoch_result(segmenter: Segmenter, store: ResultStore, image: LoadedImage, record: EpochRecord,
                 params: Mapping[str, Any] | None = None, *, cancel: CancelToken | None = None,
                 allow_random_weights: bool = False,
                 kind: RunKind | None = None) -> Generator[Progress, None, EpochMap]:
    """The result of ``image`` under one epoch's checkpoint, looked up, else computed and stored
    (:func:`ensure_epoch_result`). Raises as that function."""
    key, found = yield from ensure_epoch_result(segmenter, store, image, record, params, cancel=cancel,
                                                allow_random_weights=allow_random_weights, kind=kind)
    assert found is not None
    return EpochMap(record.epoch, key, record, found)


def _each_epoch(records: Sequence[EpochRecord], cancel: CancelToken,
                job: Any) -> Generator[Progress, None, list[Any]]:
    """Run ``job(record)`` (a progress generator) for every record, progress scaled over all; their values."""
    values = []
    for index, record in enumerate(records):
        cancel.raise_if_set()
        yield Progress(index / len(records), f"epoch {record.epoch} ({index + 1}/{len(records)})")
        generator = job(record)
        while True:
            try:
                report = next(generator)
            except StopIteration as stop:
                values.append(stop.value)
                break
            yield _scaled(report, index, len(records), record.epoch)
    yield Progress(1.0, f"{len(values)} epochs")
    return values


def epoch_keys(segmenter: Segmenter, store: ResultStore, image: LoadedImage, run: RunFolder | str | Path, *,
               epochs: Sequence[int] | None = None, params: Mapping[str, Any] | None = None,
               cancel: CancelToken | None = None,
               allow_random_weights: bool = False) -> Generator[Progress, None, dict[int, str]]:
    """As :func:`epoch_results`, but returns only ``{epoch: result key}`` and reads no stored arrays: what a view
    needs before it loads the maps it shows (one at a time). Raises as :func:`epoch_results`."""
    cancel = cancel or CancelToken()
    run = as_run(run)
    kind = run_kind(run)
    check_backend(segmenter.registry, kind)
    records = select_epochs(run, epochs)

    def job(record: EpochRecord) -> Generator[Progress, None, str]:
        key, _found = yield from ensure_epoch_result(segmenter, store, image, record, params, cancel=cancel,
                                                     allow_random_weights=allow_random_weights, load=False,
                                                     kind=kind)
        return key

    keys = yield from _each_epoch(records, cancel, job)
    return {r.epoch: k for r, k in zip(records, keys, strict=True)}


def epoch_results(segmenter: Segmenter, store: ResultStore, image: LoadedImage, run: RunFolder | str | Path, *,
                  epochs: Sequence[int] | None = None, params: Mapping[str, Any] | None = None,
                  cancel: CancelToken | None = None,
                  allow_random_weights: bool = False) -> Generator[Progress, None, list[EpochMap]]:
    """Every listed epoch's result of ``image`` (:func:`epoch_result`) by the run kind's backend, in epoch order.

    Parameters
    ----------
    segmenter, store : Segmenter, ResultStore
        Runs and caches results; keeps them per photo.
    image : LoadedImage
        The photo.
    run : RunFolder or path
        The training run folder (``config.json`` and ``epoch_###`` checkpoints).
    epochs : sequence of int, optional
        Epoch numbers to compare; default every completed epoch.
    params : mapping, optional
        Backend parameters (``threshold``, ``batch_size``, ...; those two only where the backend takes them);
        the run kind's forced ones win (prototype-vit: ``classifier`` "", attention only).
    cancel : CancelToken, optional
        Checked between epochs and by the backend between batches.
    allow_random_weights : bool
        Let the backbone be randomly initialised when the run's weights are absent (tests, benchmarks).

    Yields progress over all epochs; returns the :class:`EpochMap` list. Raises as :func:`epoch_result`,
    CheckpointError for a run without the listed epochs or of an unknown kind (:func:`run_kind`), and
    BackendUnavailableError when the kind's backend is not installed (:func:`check_backend`).
    """
    cancel = cancel or CancelToken()
    run = as_run(run)
    kind = run_kind(run)
    check_backend(segmenter.registry, kind)
    records = select_epochs(run, epochs)
    return (yield from _each_epoch(records, cancel, lambda record: epoch_result(
        segmenter, store, image, record, params, cancel=cancel, allow_random_weights=allow_random_weights,
        kind=kind)))


# --- figures ---------------------------------------------------------------------------------------------------


def common_grid(maps: Sequence[EpochMap]) -> tuple[int, int]:
    """The (rows, cols) grid every figure is computed on (:func:`protolens.services.compare.compare_grid`)."""
    if not maps:
        raise ParamError("no epoch maps to compare")
    return cmp.compare_grid(maps[0].heatmap.image_size)


def epoch_pane(item: EpochMap, grid: tuple[int, int], threshold: float | None = None,
               semantics: str = "value") -> cmp.PaneData:
    """``item`` on the common ``grid``, titled by epoch, thresholded at ``threshold`` read with ``semantics``
    ("value" or "mass"; default: the stored result's threshold and semantics). Raises ValueError for unknown
    semantics."""
    pane = cmp.pane_data(item.found, grid, threshold=threshold, semantics=semantics if threshold is not None else None)
    pane.title = f"epoch {item.epoch}"
    return pane


def difference(a: EpochMap, b: EpochMap, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Map of epoch ``a`` minus epoch ``b``: (rows, cols) float32 in [-1, 1], positive where ``a`` attends more.

    Both normalised maps are resampled to ``grid`` (default the common grid of the photo) first; the
    difference of a map with itself is exactly zero.
    """
    grid = grid or common_grid([a])
    return cmp.difference_map(epoch_pane(a, grid), epoch_pane(b, grid))


def consecutive_agreement(panes: Sequence[cmp.PaneData]) -> list[cmp.Agreement | None]:
    """Agreement (IoU of the masks, Pearson and Spearman of the maps) of each pane with the one before it;
    None for the first."""
    return [None] + [cmp.agreement(panes[i - 1], panes[i]) for i in range(1, len(panes))]


def indicator_table(run: RunFolder | str | Path) -> dict[str, list[tuple[int, float]]]:
    """The per-epoch indicators of the run's kind for every completed epoch, from its ``epoch_###.json`` files.

    Returns ``{name: [(epoch, value), ...]}`` for each name of ``run_kind(run).indicators`` (prototype-vit:
    loss, entropy, border_share, iou_previous, the collapse indicators of arXiv 2512.19957's observation that
    later epochs attend to quadrat frames, step 5; ldvc: loss and the segmentation metrics of the validation
    split; patch-selector: loss, agreement_iou), in epoch order; NaN where the trainer did not log a value
    (``iou_previous`` of the first epoch). ``loss`` falls back to the epoch's mean training loss.
    Raises CheckpointError for a missing or corrupt run, or one of an unknown kind.
    """
    run = as_run(run)
    names = run_kind(run).indicators
    records = run.epochs()
    table: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    for record in records:
        for name in names:
            value = record.indicators.get(name, math.nan)
            if name == "loss" and not math.isfinite(value):
                value = record.loss
            table[name].append((record.epoch, float(value)))
    return table


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def table_rows(run: RunFolder, maps: Sequence[EpochMap],
               agreements: Sequence[cmp.Agreement | None]) -> list[dict[str, Any]]:
    """One dict per map: the kind's ``RunKind.columns`` then :data:`PHOTO_COLUMNS` (NaN as None)."""
    table = {name: dict(series) for name, series in indicator_table(run).items()}
    chosen = run.chosen()
    rows = []
    for item, agreement in zip(maps, agreements, strict=True):
        row: dict[str, Any] = {"epoch": item.epoch}
        row.update({name: _number(series.get(item.epoch)) for name, series in table.items()})
        row["chosen"] = item.epoch == chosen
        values = agreement.as_json() if agreement is not None else {}
        row.update({"key": item.key, "photo_iou_previous": values.get("iou"),
                    "photo_pearson_previous": values.get("pearson"),
                    "photo_spearman_previous": values.get("spearman")})
        rows.append(row)
    return rows


def table_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as CSV (UTF-8, header first: the first row's keys, else the prototype-vit columns; booleans as
    1/0, None as empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = tuple(rows[0]) if rows else (*TABLE_COLUMNS, *PHOTO_COLUMNS)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else int(row[c]) if isinstance(row[c], bool)
                         else f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in columns])
    return buffer.getvalue().encode("utf-8")


def _pairs(maps: Sequence[EpochMap], pair: tuple[int, int] | None) -> list[tuple[int, int]]:
    """0-based (A, B) indices of the difference maps: the given epoch pair, else every consecutive pair."""
    if pair is None:
        return [(i, i - 1) for i in range(1, len(maps))]
    index = {m.epoch: i for i, m in enumerate(maps)}
    missing = [e for e in pair if e not in index]
    if missing:
        raise ParamError(f"difference pair {pair[0]},{pair[1]}: epoch {missing[0]} is not among the compared "
                         f"epochs ({', '.join(str(m.epoch) for m in maps)})")
    return [(index[pair[0]], index[pair[1]])]


def _pane_title(item: EpochMap, pane: cmp.PaneData, chosen: int | None) -> str:
    mark = " (chosen)" if item.epoch == chosen else ""
    return f"epoch {item.epoch}{mark}  loss {item.record.loss:.4g}\n{item.key[:8]}  t = {pane.threshold:.3f}"


def _difference_tile(photo: np.ndarray, panes: Sequence[cmp.PaneData], maps: Sequence[EpochMap], a: int, b: int,
                     opacity: float) -> tuple[np.ndarray, float]:
    scale = cmp.difference_scale(panes[a], panes[b])
    ea, eb = maps[a].epoch, maps[b].epoch
    title = f"epoch {ea} - epoch {eb} (scale +-{scale:.2f})\nred: {ea} higher, blue: {eb} higher"
    return cmp.render_difference(photo, panes[a], panes[b], mode="map", opacity=opacity, scale=scale,
                                 title=title), scale


def epochs_document(image: LoadedImage, run: RunFolder, maps: Sequence[EpochMap], panes: Sequence[cmp.PaneData],
                    rows: Sequence[dict[str, Any]], agreements: Sequence[cmp.Agreement | None],
                    differences: Sequence[dict[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``protolens.epochs/1`` JSON document (see the module docstring); NaN written as null."""
    rows_out = []
    for row, item, pane in zip(rows, maps, panes, strict=True):
        rows_out.append({**row, "checkpoint": item.record.checkpoint.name, "sha256": item.record.sha256,
                         "weights_sha256": item.found.record.weights_sha256, "value_threshold": float(pane.threshold),
                         "source": item.source})
    indicators = {name: [[e, _number(v)] for e, v in series] for name, series in indicator_table(run).items()}
    pairs = [{"a": maps[i - 1].epoch, "b": maps[i].epoch, **agreement.as_json()}
             for i, agreement in enumerate(agreements) if agreement is not None]
    rows_, cols = panes[0].values.shape
    kind = run_kind(run)
    return {"schema": EPOCHS_SCHEMA, "image": image.meta.to_json(), "run": str(run.path.resolve()),
            "kind": kind.model, "backend": kind.backend, "params": epoch_params(params, kind),
            "indicator_names": list(kind.indicators), "chosen": run.chosen(),
            "grid": {"rows": int(rows_), "cols": int(cols)}, "epochs": rows_out, "indicators": indicators,
            "agreement": pairs, "differences": list(differences), "created": utc_now()}


def compare_epochs(segmenter: Segmenter, store: ResultStore, image: LoadedImage, run: RunFolder | str | Path,
                   out_dir: str | Path, *, epochs: Sequence[int] | None = None,
                   params: Mapping[str, Any] | None = None, pair: tuple[int, int] | None = None,
                   threshold: float | None = None, semantics: str = "value", colormap: str = "inferno", opacity: float = 0.5, columns: int | None = None,
                   cancel: CancelToken | None = None,
                   allow_random_weights: bool = False) -> Generator[Progress, None, EpochComparison]:
    """Compare ``image``'s maps under the run's epochs (received attention of a prototype-ViT run, the kind's
    backend's map otherwise) and write the files of the module docstring.

    ``epochs`` default every completed epoch; ``params`` as :func:`epoch_results`; ``threshold`` in [0, 1] read
    with ``semantics`` ("value" or "mass") draws the masks and gives the IoUs (default the ``threshold`` of
    ``params``, else each stored result's); ``pair`` = (epoch A, epoch B) for one difference map
    A - B instead of every consecutive pair (A = B gives a zero map); ``columns`` of the grid PNG (default by
    the pane count). Yields progress; returns an :class:`EpochComparison`.

    Raises
    ------
    ParamError
        Unknown colormap or semantics, a pair epoch that is not compared.
    CheckpointError
        The run or a listed epoch is missing; the run's kind is unknown.
    BackendUnavailableError
        The run kind's backend is not installed.
    StoreWriteError
        ``out_dir`` is a file or cannot be written.
    Others
        As :func:`epoch_results`.
    """
    run, out_dir = as_run(run), Path(out_dir)
    check_backend(segmenter.registry, run_kind(run))
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreWriteError(f"{out_dir}: is a file, not a folder")
    if colormap not in cmp.COLORMAPS:
        raise ParamError(f"unknown colormap {colormap!r}; one of {', '.join(cmp.COLORMAPS)}")
    if semantics not in ("value", "mass"):
        raise ParamError(f"threshold semantics must be value or mass, not {semantics!r}")
    if pair is not None:
        listed = [r.epoch for r in select_epochs(run, epochs)]
        if any(e not in listed for e in pair):
            raise ParamError(f"difference pair {pair[0]},{pair[1]}: compare epochs {', '.join(map(str, listed))}")
    maps = yield from epoch_results(segmenter, store, image, run, epochs=epochs, params=params, cancel=cancel,
                                    allow_random_weights=allow_random_weights)
    yield Progress(1.0, "writing figures")
    if threshold is None:
        threshold = (params or {}).get("threshold")
    grid = common_grid(maps)
    panes = [epoch_pane(m, grid, threshold, semantics) for m in maps]
    agreements = consecutive_agreement(panes)
    rows = table_rows(run, maps, agreements)
    photo, stem, chosen = cmp.shrink_photo(image.rgb, grid), image.meta.path.stem, run.chosen()
    files, tiles = [], []
    for item, pane in zip(maps, panes, strict=True):
        tiles.append(cmp.render_pane(photo, pane, colormap=colormap, opacity=opacity,
                                     title=_pane_title(item, pane, chosen)))
        files.append(out_dir / f"{stem}.epoch_{item.epoch:03d}.png")
        write_png_atomic(files[-1], tiles[-1])
    differences = []
    for a, b in _pairs(maps, pair):
        tile, scale = _difference_tile(photo, panes, maps, a, b, opacity)
        path = out_dir / f"{stem}.diff_{maps[a].epoch:03d}-{maps[b].epoch:03d}.png"
        write_png_atomic(path, tile)
        files.append(path)
        differences.append({"a": maps[a].epoch, "b": maps[b].epoch, "scale": scale, "file": path.name,
                            "max_abs": float(np.abs(cmp.difference_map(panes[a], panes[b])).max())})
        if pair is not None:
            tiles.append(tile)
    columns = columns or max(cmp.columns_for(len(tiles)), math.ceil(math.sqrt(len(tiles))))
    files.append(out_dir / f"{stem}.epochs.png")
    write_png_atomic(files[-1], cmp.render_grid(tiles, columns))
    files.append(out_dir / f"{stem}.epochs.csv")
    write_bytes_atomic(files[-1], table_csv(rows))
    document = epochs_document(image, run, maps, panes, rows, agreements, differences, params or {})
    document["files"] = [p.name for p in files] + [f"{stem}.epochs.json"]
    document["render"] = {"colormap": colormap, "opacity": float(opacity), "columns": int(columns)}
    files.append(out_dir / f"{stem}.epochs.json")
    write_json_atomic(files[-1], document)
    return EpochComparison(maps, rows, agreements, files)


def choose_epoch(run: RunFolder | str | Path, epoch: int) -> EpochRecord:
    """Record ``epoch`` as the run's chosen (early-stopping) epoch in ``chosen.json`` (:meth:`RunFolder.choose`);
    the run kind's backend (prototype-guided, ldvc, patch-selection as ``selector``) then uses its checkpoint
    when given the run folder.
    Returns its record. Raises CheckpointError if the run has no such epoch."""
    return as_run(run).choose(epoch)
