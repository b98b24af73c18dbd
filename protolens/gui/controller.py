"""The view controller: per-photo state and the look-up → run → threshold → save flow, shared by every view.

State: the folder's photos, the current photo, its stored results (listed with provenance), the result shown,
the threshold (value and semantics, probability) and the running job. Views (the main window's canvas, the
Compare grid) listen to its signals and call its methods; none reaches into another's widgets.

Nothing slow runs on the UI thread: decoding, look-ups, runs and saves are jobs on the ``JobRunner``; reads
and writes of the store run on its ``store`` lane so a look-up never overtakes the save before it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from protolens.core.errors import BackendUnavailableError, Cancelled, ProtolensError
from protolens.core.jobs import CancelToken, Progress
from protolens.core.store import ResultStore
from protolens.core.thresholds import MassThresholder
from protolens.gui.image_loader import ImageLoader
from protolens.gui.workers import Job, JobRunner
from protolens.models.registry import Registry
from protolens.services.results import FoundResult, find_result, load_found, mass_thresholder
from protolens.services.segment import LoadedImage, Segmenter, SegmentOutcome

SAVE_DELAY_MS = 1500


@dataclasses.dataclass
class Inputs:
    """What the next run uses: backend id, parameter values, a weights path (None = local cache)."""

    backend: str = "vegetation-index"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: str | None = None


class PhotoController(QObject):
    """Per-photo state and flow (see the module docstring).

    Signals
    -------
    photo_loading(int index, int count, object path)
    photo_changed(object image)           LoadedImage, or None when the photo is unreadable / the folder empty
    photo_failed(object path, str message)
    result_changed(object found)          the shown FoundResult, or None (nothing for the current inputs)
    results_listed(object entries)        list of ResultEntry: every stored result of the photo
    value_threshold_changed(float)        the value threshold that draws the shown result's mask
    run_progress(float, str), run_state(bool running)
    message(str text, str level)          level: info | warning | error
    """

    photo_loading = Signal(int, int, object)
    photo_changed = Signal(object)
    photo_failed = Signal(object, str)
    result_changed = Signal(object)
    results_listed = Signal(object)
    value_threshold_changed = Signal(float)
    run_progress = Signal(float, str)
    run_state = Signal(bool)
    backend_unavailable = Signal(str, str)
    message = Signal(str, str)

    def __init__(self, registry: Registry, segmenter: Segmenter, store: ResultStore, jobs: JobRunner, *,
                 allow_random_weights: bool = False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.registry, self.segmenter, self.store, self.jobs = registry, segmenter, store, jobs
        self.loader = ImageLoader(jobs)
        self.allow_random_weights = allow_random_weights
        self.paths: list[Path] = []
        self.index = -1
        self.image: LoadedImage | None = None
        self.result: FoundResult | None = None
        self.entries: list[Any] = []
        self.inputs = Inputs()
        self.auto_run = True
        self.auto_threshold = True
        self.threshold, self.semantics, self.probability_threshold = 0.5, "value", 0.5
        self.run_job: Job | None = None
        self._dirty = False
        self._mass: tuple[FoundResult, MassThresholder] | None = None
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save)
        self.loader.loaded.connect(self._image_loaded)
        self.loader.failed.connect(self._image_failed)

    # --- photos -----------------------------------------------------------------------------------
    def set_paths(self, paths: list[Path], index: int = 0) -> None:
        """Browse ``paths`` starting at ``index`` (an empty list shows nothing)."""
        self.save()
        self.paths, self.index = list(paths), -1
        if not paths:
            self.image, self.result = None, None
            self.photo_changed.emit(None)
            return
        self.show_index(index)

    def current_path(self) -> Path | None:
        return self.paths[self.index] if 0 <= self.index < len(self.paths) else None

    def show_index(self, index: int) -> None:
        """Show photo ``index`` (decoded off the UI thread; neighbours prefetched)."""
        if not self.paths or not 0 <= index < len(self.paths):
            return
        self.save()
        self.index = index
        path = self.paths[index]
        self.photo_loading.emit(index, len(self.paths), path)
        self.loader.request(path)
        self.loader.prefetch([self.paths[i] for i in (index + 1, index - 1) if 0 <= i < len(self.paths)])

    def next_photo(self) -> None:
        self.show_index(min(self.index + 1, len(self.paths) - 1))

    def previous_photo(self) -> None:
        self.show_index(max(self.index - 1, 0))

    def _image_loaded(self, image: LoadedImage) -> None:
        if image.meta.path != self.current_path():
            return
        self.image, self.result, self.entries = image, None, []
        self.photo_changed.emit(image)
        self.look_up()

    def _image_failed(self, path: Path, message: str) -> None:
        if path != self.current_path():
            return
        self.image, self.result, self.entries = None, None, []
        self.photo_failed.emit(path, message)
        self.result_changed.emit(None)

    # --- results ----------------------------------------------------------------------------------
    def set_inputs(self, backend: str, params: dict[str, Any], weights: str | None, *, look_up: bool = True) -> None:
        """The backend, parameters and weights of the next run; with ``look_up``, show their result."""
        self.inputs = Inputs(backend, dict(params), weights or None)
        if look_up and self.image is not None:
            self.look_up(any_backend=False)

    def look_up(self, any_backend: bool | None = None) -> None:
        """Show the photo's result for the current inputs (cache, else store); run if none and auto-run is on.

        A stored result of other inputs is shown only when auto-run is off and the inputs did not just change.
        Without a result for the inputs the view shows none (never the previous inputs' result).
        """
        image = self.image
        if image is None:
            return
        if any_backend is None:
            any_backend = not self.auto_run
        i = self.inputs
        self.jobs.submit(find_result, self.segmenter, self.store, image, i.backend, i.params, i.weights,
                         any_backend=any_backend, kind="lookup", lane="store",
                         on_result=lambda found: self._found(image, found),
                         on_error=lambda exc: self.message.emit(str(exc), "error"))
        self.refresh_entries()

    def _found(self, image: LoadedImage, found: FoundResult | None) -> None:
        if image is not self.image:
            return
        if found is not None:
            self.show_result(found)
            return
        self._set_result(None)
        if self.auto_run:
            self.run()

    def refresh_entries(self) -> None:
        """List the photo's stored results (off the UI thread); ``results_listed`` carries them."""
        image = self.image
        if image is None:
            return
        self.jobs.submit(self.store.list_results, image.meta.path, sha256=image.meta.sha256, kind="lookup",
                         lane="store", on_result=lambda entries: self._listed(image, entries),
                         on_error=lambda exc: self.message.emit(str(exc), "error"))

    def _listed(self, image: LoadedImage, entries: list[Any]) -> None:
        if image is self.image:
            self.entries = list(entries)
            self.results_listed.emit(self.entries)

    def show_key(self, key: str, *, make_current: bool = True) -> None:
        """Show the stored result ``key`` of this photo (and mark it current in the store)."""
        image = self.image
        if image is None:
            return
        self.save()
        if make_current:
            self.jobs.submit(self.store.set_current, image.meta, key, kind="save", lane="store",
                             on_error=lambda exc: self.message.emit(f"not marked current: {exc}", "error"))
        self.jobs.submit(load_found, self.store, image, key, kind="lookup", lane="store",
                         on_result=lambda found: self._key_loaded(image, key, found),
                         on_error=lambda exc: self.message.emit(str(exc), "error"))
        self.refresh_entries()

    def _key_loaded(self, image: LoadedImage, key: str, found: FoundResult | None) -> None:
        if image is not self.image:
            return
        if found is None:
            self.message.emit(f"{image.meta.path.name} has no readable result {key}", "warning")
            return
        self.show_result(found)

    def delete_key(self, key: str) -> None:
        """Delete the stored result ``key`` of this photo; if it was shown, the new current one is shown (or none:
        a deleted result is never recomputed behind the user's back)."""
        image = self.image
        if image is None:
            return
        shown = self.result is not None and self.result.key == key
        if shown:
            self._dirty = False
            self._set_result(None)

        def deleted(_path: Any) -> None:
            self.refresh_entries()
            if shown:
                self.jobs.submit(load_found, self.store, image, None, kind="lookup", lane="store",
                                 on_result=lambda found: self._current_loaded(image, found))

        self.jobs.submit(self.store.delete_result, image.meta, key, kind="save", lane="store", on_result=deleted,
                         on_error=lambda exc: self.message.emit(f"not deleted: {exc}", "error"))

    def _current_loaded(self, image: LoadedImage, found: FoundResult | None) -> None:
        if image is self.image and found is not None and self.result is None:
            self.show_result(found)

    def show_result(self, found: FoundResult) -> None:
        """Show ``found``: its saved threshold, else the suggestion (auto threshold, value semantics), else the
        slider's current threshold."""
        record = found.record
        if found.probability is not None and record.probability_threshold is None:
            record.probability_threshold = self.probability_threshold
        if found.suggested_threshold is None:
            pass  # a threshold the user saved: keep it and its semantics
        elif self.auto_threshold and self.semantics == "value":
            record.threshold, record.threshold_semantics = float(found.suggested_threshold), "value"
        else:
            record.threshold, record.threshold_semantics = self.threshold, self.semantics
        self.threshold, self.semantics = record.threshold, record.threshold_semantics
        if record.probability_threshold is not None:
            self.probability_threshold = record.probability_threshold
        self._set_result(found)
        self._dirty = found.source != "store"
        if self._dirty:
            self._save_timer.start()

    def _set_result(self, found: FoundResult | None) -> None:
        self.result, self._mass = found, None
        self.result_changed.emit(found)
        if found is not None:
            self.apply_threshold()

    # --- running ----------------------------------------------------------------------------------
    def run(self) -> None:
        """Run the current inputs on the current photo (cancelling a run in progress)."""
        image = self.image
        if image is None:
            return
        self.cancel()
        i = self.inputs
        token = CancelToken()
        self.run_state.emit(True)
        self.run_progress.emit(0.0, f"running {i.backend}…")
        self.run_job = self.jobs.submit(
            self.segmenter.run, image, i.backend, i.params, weights_path=i.weights, cancel=token, token=token,
            allow_random_weights=self.allow_random_weights, kind="run",
            on_progress=lambda report: self._progress(report, token),
            on_result=lambda outcome: self._run_done(image, outcome),
            on_error=lambda exc: self._run_failed(exc, i.backend),
            on_finished=lambda: self._run_finished(token))

    def cancel(self) -> None:
        if self.run_job is not None and not self.run_job.done:
            self.run_job.cancel()
            self.run_progress.emit(0.0, "cancelled")

    @property
    def running(self) -> bool:
        return self.run_job is not None and not self.run_job.done

    def _is_live(self, token: CancelToken) -> bool:
        return self.run_job is not None and self.run_job.token is token and not token.is_set

    def _progress(self, report: Progress, token: CancelToken) -> None:
        if self._is_live(token):
            self.run_progress.emit(report.fraction, report.text)

    def _run_done(self, image: LoadedImage, outcome: SegmentOutcome) -> None:
        for warning in outcome.warnings:  # this run's own warnings
            self.message.emit(warning, "warning")
        if image is self.image:
            self.show_result(FoundResult.from_outcome(outcome))
            self.run_progress.emit(1.0, f"done in {outcome.seconds:.2f} s" + (" (from cache)" if outcome.from_cache
                                                                                 else ""))
            self.refresh_entries()

    def _run_failed(self, exc: BaseException, backend: str) -> None:
        if isinstance(exc, Cancelled):
            self.run_progress.emit(0.0, "cancelled")
            return
        if isinstance(exc, BackendUnavailableError):
            self.backend_unavailable.emit(backend, str(exc))
        self.run_progress.emit(0.0, "failed")
        self.message.emit(str(exc) if isinstance(exc, ProtolensError) else f"{type(exc).__name__}: {exc}", "error")

    def _run_finished(self, token: CancelToken) -> None:
        if self.run_job is not None and self.run_job.token is token:
            self.run_state.emit(False)
            if token.is_set:
                self.run_progress.emit(0.0, "cancelled")

    # --- thresholds and saving --------------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Move the threshold (read with the current semantics); never reruns a model."""
        self.threshold = float(value)
        if self.result is not None:
            self.result.record.threshold = self.threshold
            self.result.record.threshold_semantics = self.semantics
            self._mark_dirty()
        self.apply_threshold()

    def set_semantics(self, semantics: str) -> float:
        """Switch between thresholds by value and by attention mass; returns the new default threshold
        (DINO's 60 % for mass, the suggestion or 0.5 for value), which the caller shows and sets."""
        self.semantics = semantics
        if self.result is not None:
            self.result.record.threshold_semantics = semantics
        suggested = self.result.suggested_threshold if self.result is not None else None
        return 0.6 if semantics == "mass" else (suggested if suggested is not None else 0.5)

    def set_probability_threshold(self, value: float) -> None:
        self.probability_threshold = float(value)
        if self.result is not None and self.result.probability is not None:
            self.result.record.probability_threshold = self.probability_threshold
            self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._dirty = True
        self._save_timer.start()

    def apply_threshold(self) -> None:
        """Emit the value threshold drawing the mask for the threshold in the active semantics."""
        if self.semantics == "value" or self.result is None:
            self.value_threshold_changed.emit(self.threshold)
        elif self._mass is not None and self._mass[0] is self.result:
            self.value_threshold_changed.emit(self._mass[1].value_threshold(self.threshold))
        else:
            found = self.result
            self.jobs.submit(mass_thresholder, found, kind="mass",
                             on_result=lambda thresholder: self._mass_ready(found, thresholder))

    def _mass_ready(self, found: FoundResult, thresholder: MassThresholder) -> None:
        if found is self.result:
            self._mass = (found, thresholder)
            self.apply_threshold()

    def save(self) -> None:
        """Save the shown result (arrays, mask at the current threshold, provenance) to the photo's store."""
        self._save_timer.stop()
        if not self._dirty or self.result is None or self.image is None:
            return
        self._dirty = False
        snapshot = dataclasses.replace(self.result, record=dataclasses.replace(self.result.record))
        self.jobs.submit(snapshot.save, self.store, self.image.meta, kind="save", lane="store",
                         on_result=lambda _path: self.refresh_entries(),
                         on_error=lambda exc: self.message.emit(f"not saved: {exc}", "error"))

    def export(self, out_dir: str | Path) -> None:
        """Export mask PNG, heatmap .npy and provenance JSON of the shown result into ``out_dir``."""
        if self.result is None or self.image is None:
            self.message.emit("Nothing to export: run a backend on this photo first.", "warning")
            return
        snapshot = dataclasses.replace(self.result, record=dataclasses.replace(self.result.record))
        self.jobs.submit(snapshot.export, out_dir, self.image.meta, kind="export",
                         on_result=lambda paths: self.message.emit(
                             f"exported {', '.join(p.name for p in paths)} to {out_dir}", "info"),
                         on_error=lambda exc: self.message.emit(f"export failed: {exc}", "error"))
