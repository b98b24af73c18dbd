"""Species lists for quadrats with prototype-guided zero-shot segmentation: the ``protolens species`` use case.

Source: arXiv 2512.19957 (METHODS.md §1, steps 3-8), run by the ``prototype-guided`` backend on one epoch of a
training run. Per quadrat the output folder receives

``<stem>.mask.png``, ``<stem>.heatmap.npy``, ``<stem>.json``
    The export trio (:func:`protolens.core.result_export.export_result`): the crop mask (crops whose normalised
    received attention is >= the threshold, nearest-upsampled to the photo), the heatmap and the provenance.
``<stem>.species.json``
    Schema ``protolens.species/1``: the quadrat id, the species list (id, name, probability, class index) and,
    per species, the crops it came from as (row, col) of the crop grid and [x, y, width, height] photo-pixel
    boxes (origin top-left).

and once ``submission.csv`` (PlantCLEF ``quadrat_id,species_ids``; quadrat id = the photo's file stem).

Tiling: the tokens must be those the narrow ViT was trained on (its grid, and the token statistics of the photo
size, crop and crop input), so the tiling always comes from the run's ``config.json``; a tiling a user passes is
only checked against it (:func:`run_tiling`) and a difference is an error, never an override.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.atomic import write_json_atomic
from protolens.core.errors import ParamError
from protolens.core.imageio import scan_paths
from protolens.core.job_manifest import FILE_NAME as MANIFEST_FILE
from protolens.core.jobs import CancelToken, Progress
from protolens.core.records import utc_now
from protolens.core.runs import RunFolder
from protolens.core.species import write_submission
from protolens.services.batch import BatchSummary, segment_paths
from protolens.services.batch_jobs import SegmentJob, SpeciesHook, photo_units
from protolens.services.pipeline import Tiling, parse_photo_size
from protolens.services.segment import Segmenter, SegmentOutcome

BACKEND = "prototype-guided"
SPECIES_SCHEMA = "protolens.species/1"
SUBMISSION = "submission.csv"


@dataclass(frozen=True)
class SpeciesOptions:
    """Parameters of the ``prototype-guided`` backend for species lists (see its ``plugin.toml``).

    Attributes
    ----------
    classifier : str
        timm classifier name.
    classifier_weights : str
        Its local weights file ("" = random weights, only with ``allow_random_weights``).
    class_mapping : str
        CSV ``class_index,species_id[,name]``.
    grid : int
        Odd assembly side K in crops (step 7), default 9.
    prob : float
        Species probability threshold in [0, 1] (step 8), default 0.5.
    threshold : float
        Crop threshold t on the normalised received attention (step 6), default 0.6.
    classifier_input : int
        Classifier input side in pixels; 0 = the classifier's own.
    batch_size : int
        Crops and stitched images per forward pass.
    precision : str
        ``auto``, ``float32``, ``bfloat16`` or ``float16``.
    """

    classifier: str
    classifier_weights: str
    class_mapping: str
    grid: int = 9
    prob: float = 0.5
    threshold: float = 0.6
    classifier_input: int = 0
    batch_size: int = 32
    precision: str = "auto"

    def params(self) -> dict[str, Any]:
        """The backend parameters (``classifier_weights`` and ``class_mapping`` as absolute paths)."""
        values = asdict(self)
        for name in ("classifier_weights", "class_mapping"):
            values[name] = str(Path(values[name]).expanduser().resolve()) if values[name] else ""
        return values


@dataclass
class SpeciesSummary(BatchSummary):
    """A :class:`BatchSummary` plus the species list of every processed quadrat and the submission file."""

    species: dict[str, list[str]] = field(default_factory=dict)
    submission: Path | None = None


def run_checkpoint(run_dir: str | Path, epoch: int | None = None) -> Path:
    """The checkpoint of ``epoch`` of the run in ``run_dir`` (default its chosen epoch, else the last).

    Raises :class:`~protolens.core.errors.CheckpointError` for a folder that is not a run or lacks the epoch.
    """
    run = RunFolder(run_dir)
    run.config()
    return (run.epoch(epoch) if epoch is not None else run.active()).checkpoint


def run_tiling(run_dir: str | Path, photo_size: str | None = None, crop: int | None = None,
               crop_input: int | None = None) -> Tiling:
    """The run's tiling (arXiv 2512.19957, step 3), after checking the values a user gave against it.

    Raises
    ------
    ParamError
        A given value differs from the run's: tokens must match those the narrow ViT was trained on.
    CheckpointError
        Not a run folder.
    """
    tiling = Tiling.from_json(RunFolder(run_dir).config()["tiling"])
    given = {"--photo-size": (parse_photo_size(photo_size) if photo_size else None, tiling.photo_size),
             "--crop": (crop, tiling.crop), "--crop-input": (crop_input, tiling.crop_input)}
    for option, (value, expected) in given.items():
        if value is not None and value != expected:
            shown = "x".join(map(str, expected)) if isinstance(expected, tuple) else expected
            raise ParamError(f"{option} must match the run's tiling ({shown}): the narrow ViT was trained on the "
                             f"tokens of a {tiling.grid[0]}x{tiling.grid[1]} crop grid of that tiling")
    return tiling


def species_document(outcome: SegmentOutcome, quadrat_id: str, options: SpeciesOptions) -> dict[str, Any]:
    """The ``<stem>.species.json`` document of one result (schema ``protolens.species/1``)."""
    info = outcome.result.info
    return {"schema": SPECIES_SCHEMA, "quadrat_id": quadrat_id, "image": outcome.image.to_json(),
            "run": info.get("run"), "epoch": info.get("epoch"), "checkpoint_sha256": info.get("checkpoint_sha256"),
            "weights": {"id": outcome.weights_id, "sha256": outcome.weights_sha256},
            "classifier": options.classifier, "classes": info.get("classes"), "assembly_grid": options.grid,
            "species_threshold": options.prob, "crop_threshold": options.threshold,
            "crop_grid": info.get("grid"), "kept_crops": info.get("kept_crops"),
            "species": info.get("species", []),
            "coordinates": "crops: row, col of the crop grid; box: [x, y, width, height] in photo pixels, origin "
                           "top-left", "method": "arXiv 2512.19957 steps 3-8", "created": utc_now()}


def _quadrat_ids(files: list[Path]) -> None:
    """Raise ParamError when two quadrats share a file stem (their submission rows would collide)."""
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ParamError(f"quadrats {seen[path.stem]} and {path} share the quadrat id {path.stem!r}")
        seen[path.stem] = path


def species_paths(paths: Iterable[str | Path], options: SpeciesOptions, *, run_dir: str | Path, out_dir: str | Path,
                  segmenter: Segmenter, epoch: int | None = None, allow_random_weights: bool = False,
                  cancel: CancelToken | None = None, on_file: Callable[[int, int, Path], None] | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_error: Callable[[Path, str], None] | None = None) -> SpeciesSummary:
    """Species lists of quadrats (files and folders) with one epoch of a run; writes into ``out_dir``.

    Per-file failures (unreadable photo, write error) are reported through ``on_error``, counted in
    ``summary.failed`` and left out of the submission; errors that would fail every file (not a run, missing
    epoch or classifier files, bad parameters, two quadrats with one id) are raised at once. ``submission.csv``
    is written when at least one quadrat was processed.

    Raises
    ------
    ParamError, CheckpointError, WeightsNotFoundError, BackendUnavailableError, Cancelled
    """
    checkpoint = run_checkpoint(run_dir, epoch)
    scan = scan_paths(paths)
    _quadrat_ids(scan.images)
    out = Path(out_dir)
    species: dict[str, list[str]] = {}

    def write_species(path: Path, outcome: SegmentOutcome, stem: str) -> list[Path]:
        document = species_document(outcome, path.stem, options)
        species_json = out / f"{stem}.species.json"
        write_json_atomic(species_json, document)
        species[path.stem] = [s["species_id"] for s in document["species"]]
        return [species_json]

    batch = segment_paths(scan.images, BACKEND, options.params(), segmenter=segmenter, threshold=options.threshold,
                          out_dir=out, weights_path=checkpoint, cancel=cancel,
                          allow_random_weights=allow_random_weights, on_file=on_file, on_progress=on_progress,
                          on_error=on_error, reserved_stems=[Path(SUBMISSION).stem], on_outcome=write_species)
    summary = SpeciesSummary(**{**vars(batch), "skipped": scan.skipped}, species=species)
    if summary.processed:
        summary.submission = out / SUBMISSION
        write_submission(summary.submission, summary.species)
        summary.written.append(summary.submission)
    return summary


def species_on_ray(paths: Iterable[str | Path], options: SpeciesOptions, *, run_dir: str | Path,
                   out_dir: str | Path, run_units: Callable[[SegmentJob, list[Any]], Sequence[Any]],
                   epoch: int | None = None, allow_random_weights: bool = False) -> SpeciesSummary:
    """:func:`species_paths` with the quadrats run by an executor (Ray workers), one unit per quadrat.

    ``run_units(job, units)`` runs the :class:`~protolens.services.batch_jobs.SegmentJob` (resumable: it skips
    quadrats whose outputs exist with the same key) and returns the UnitResults of the units it ran. The
    submission then lists every quadrat done now or before, read back from its ``<stem>.species.json``, in scan
    order, as the local path orders its rows. ``summary.processed`` counts the quadrats done by this run;
    ``summary.failed`` (path, error) those that failed. Raises as :func:`species_paths`.
    """
    checkpoint = run_checkpoint(run_dir, epoch)
    out = Path(out_dir).resolve()  # workers may run in another working folder
    units, scan = photo_units(paths, reserved_stems=[Path(SUBMISSION).stem, Path(MANIFEST_FILE).stem])
    _quadrat_ids(scan.images)
    job = SegmentJob(BACKEND, options.params(), threshold=options.threshold, out_dir=out, weights_path=checkpoint,
                     allow_random_weights=allow_random_weights, on_outcome=SpeciesHook(out, options),
                     command="species")
    results = {result.name: result for result in run_units(job, units)}
    summary = SpeciesSummary(skipped=scan.skipped)
    for unit in units:
        path, stem = unit.payload
        result = results.get(unit.name)
        if result is not None and not result.ok:
            summary.failed.append((path, result.error or "failed"))
            continue
        species_json = out / f"{stem}.species.json"
        try:
            document = json.loads(species_json.read_text(encoding="utf-8"))
            summary.species[path.stem] = [s["species_id"] for s in document["species"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            summary.failed.append((path, f"{species_json}: unreadable species list ({exc})"))
            continue
        if result is not None:
            summary.processed += 1
            summary.written += [Path(p) for p in result.outputs]
    if summary.species:
        summary.submission = out / SUBMISSION
        write_submission(summary.submission, summary.species)
        summary.written.append(summary.submission)
    return summary
