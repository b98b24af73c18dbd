"""Where the Regions tool's regions come from: the shown result's regions layer, or object regions computed for
the current photo on the job runner, with a live n_o that never reruns the model.

Object regions (OC-ZSS, seed 004, step 1; METHODS.md §3) need DINO patch tokens of the photo: one model
forward, run once per (photo, model, long side, weights) by ``services.regions.region_features`` on the
device pool (progress, cancel) and cached there (memory + disk, the same key as the object-regions backend, so
a photo that backend already ran on needs no forward). The tokens are also kept here; moving the n_o slider
runs only ``services.regions.regions_from_features`` (partition + edge refinement, pure CPU) in a job. Slider
moves arriving while such a job runs are coalesced: the latest count runs when it ends.

Services are imported inside the job functions: importing the GUI never imports torch.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from protolens.core.errors import BackendUnavailableError, Cancelled
from protolens.core.jobs import CancelToken, Progress
from protolens.gui.region_picker import MAX_REGIONS, regions_id_map

BACKEND = "object-regions"
"""The backend whose parameters (model, long side, seed, spatial weight) the editor's object regions use."""
FEATURES_JOB, REGIONS_JOB = "region-features", "regions"
DEFAULTS = {"regions": 6, "model": "vit_small_patch16_224.dino", "long_side": 896, "precision": "auto", "seed": 0,
            "spatial": 0.0, "iterations": 0, "refine": True, "max_side": 1024}
"""The object-regions parameters used here (the manifest's defaults replace these when the backend exists)."""


def features_job(segmenter: Any, image: Any, options: dict[str, Any], weights: str | None, allow_random: bool,
                 cancel: CancelToken) -> Generator[Progress, None, Any]:
    """Patch tokens of ``image`` (a LoadedImage) for the object regions (``services.regions.RegionFeatures``,
    tokens (rows, cols, d) float32), from the service's cache or one model forward on the device pool."""
    from protolens.services import regions

    return (yield from regions.region_features(
        segmenter, image, model=options["model"], long_side=int(options["long_side"]),
        precision=options["precision"], weights_path=weights, allow_random_weights=allow_random, cancel=cancel))


def regions_job(tokens: Any, rgb: np.ndarray, n: int, options: dict[str, Any]) -> np.ndarray:
    """The id map ((rows', cols') int32, 0..n-1) of ``n`` regions from cached tokens, refined as the backend
    refines (``options``: seed, spatial, iterations, refine, max_side); CPU only, no model."""
    from protolens.services import regions

    return np.asarray(regions.regions_from_features(
        tokens, rgb, n, int(options["seed"]), float(options["spatial"]), iterations=int(options["iterations"]),
        refined=bool(options["refine"]), max_side=int(options["max_side"])), np.int32)


class RegionSource(QObject):
    """The regions offered to the Regions tool for the controller's current photo.

    Signals
    -------
    regions_changed(object ids, object image_size, str text)
        An id map ((rows, cols) int32, -1 = none) over a photo of image_size (height, width) and a description;
        ids None clears.
    busy_changed(bool)   a features job started / ended
    progress(float, str) progress of the features job
    count_shown(int)     the number of regions now shown (the panel's slider follows it without emitting)
    failed(str)          a job failed (cancelling is not a failure)
    """

    regions_changed = Signal(object, object, str)
    busy_changed = Signal(bool)
    progress = Signal(float, str)
    count_shown = Signal(int)
    failed = Signal(str)

    def __init__(self, controller: Any, jobs: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller, self.jobs = controller, jobs
        self.count = DEFAULTS["regions"]
        self.image: Any = None
        self.computed = False  # the regions shown were computed here (not the result's layer)
        self._result_key: str | None = None
        self._features: tuple[tuple[Any, ...], Any] | None = None
        self._features_job: Any = None
        self._regions_running = False
        self._pending = False

    # --- options ---------------------------------------------------------------------------------
    def options(self) -> tuple[dict[str, Any], str | None]:
        """The object-regions parameters (manifest defaults, or the backend panel's values while that backend
        is selected) and the weights file (the panel's, for that backend only)."""
        options = dict(DEFAULTS)
        try:
            manifest = self.controller.registry.manifest(BACKEND)
            options.update({s.name: s.default for s in manifest.params if s.name in DEFAULTS})
        except BackendUnavailableError:
            pass
        inputs = self.controller.inputs
        weights = None
        if inputs.backend == BACKEND:
            options.update({k: v for k, v in inputs.params.items() if k in DEFAULTS})
            weights = inputs.weights
        return options, weights

    def _key(self, image: Any, options: dict[str, Any], weights: str | None) -> tuple[Any, ...]:
        return image.meta.sha256, options["model"], int(options["long_side"]), options["precision"], weights

    # --- photo and result ------------------------------------------------------------------------
    def photo_changed(self, image: Any) -> None:
        """A new photo (or None): stop its jobs, forget the regions (the cached tokens stay in the service)."""
        self.cancel()
        self.image, self.computed, self._pending = image, False, False
        if self._features is not None and (image is None or self._features[0][0] != image.meta.sha256):
            self._features = None
        self.regions_changed.emit(None, None, "")

    def result_changed(self, found: Any) -> None:
        """Offer the regions layer of a newly shown result; regions computed here for this photo stay until a
        result with another key and a regions layer arrives."""
        key = None if found is None else found.key
        seen, self._result_key = self._result_key, key
        if self.controller.image is None:
            return
        regions = None if found is None else found.layers.regions
        has_regions = regions is not None and len(regions.labels) > 0
        if self.computed and (key == seen or not has_regions):
            return
        self.image, self.computed = self.controller.image, False
        if not has_regions or len(regions.labels) > MAX_REGIONS:
            self.regions_changed.emit(None, None, f"{len(regions.labels)} regions: more than the Regions tool takes"
                                      if has_regions else "")
            return
        ids = regions_id_map(regions.masks)
        self.count_shown.emit(len(regions.labels))
        self.regions_changed.emit(ids, regions.image_size, f"{len(regions.labels)} regions of the result")

    # --- computing -------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._features_job is not None

    def compute(self) -> None:
        """Object regions for the current photo ("Object regions" button); while features run: cancel them."""
        if self.busy:
            self.cancel()
            return
        image = self.controller.image
        if image is None:
            self.failed.emit("Open a photo first.")
            return
        self.image = image
        options, weights = self.options()
        key = self._key(image, options, weights)
        if self._features is not None and self._features[0] == key:
            self._run_regions()
            return
        token = CancelToken()
        self._features_job = self.jobs.submit(
            features_job, self.controller.segmenter, image, options, weights,
            bool(self.controller.allow_random_weights), token, kind=FEATURES_JOB, token=token,
            on_result=lambda tokens: self._features_ready(image, key, tokens),
            on_error=self._error, on_progress=lambda p: self.progress.emit(float(p.fraction), str(p.text)),
            on_finished=self._features_finished)
        self.busy_changed.emit(True)
        self.progress.emit(0.0, "object regions: features…")

    def _features_finished(self) -> None:
        self._features_job = None
        self.busy_changed.emit(False)

    def _features_ready(self, image: Any, key: tuple[Any, ...], tokens: Any) -> None:
        if image is not self.controller.image:
            return
        self._features = (key, tokens)
        self._run_regions()

    def set_count(self, n: int) -> None:
        """n_o changed (the slider): recompute from the cached tokens; without them, compute them once first."""
        self.count = int(n)
        if self.controller.image is None or self.busy:
            return
        options, weights = self.options()
        if self._features is not None and self._features[0] == self._key(self.controller.image, options, weights):
            self._run_regions()
        elif self.computed or self.controller.inputs.backend == BACKEND:
            self.compute()

    def _run_regions(self, stage: str = "preview") -> None:
        """Partition the cached tokens into ``count`` regions in a job. With edge refinement on, a first job shows
        the patch-grid partition at once (a few ms) and a second refines its borders (about 0.1 s at 2560 x 1600);
        a slider move meanwhile restarts from the preview."""
        if self._regions_running:
            self._pending = True
            return
        assert self._features is not None
        image, tokens = self.controller.image, self._features[1]
        if image is None:
            return
        options, _ = self.options()
        n = self.count
        refine = bool(options["refine"])
        final = stage == "final" or not refine
        follow = "final" if not final else None
        self._regions_running, self._pending = True, False
        token = CancelToken()  # set by the window's cancel_all on close: then no refined stage follows
        self.jobs.submit(regions_job, tokens, image.rgb, n, {**options, "refine": refine and final},
                         kind=REGIONS_JOB, token=token, on_result=lambda ids: self._regions_ready(image, n, ids, final),
                         on_error=self._error, on_finished=lambda: self._regions_finished(follow, token))

    def _regions_finished(self, follow: str | None = None, token: CancelToken | None = None) -> None:
        self._regions_running = False
        if self._features is None or (token is not None and token.is_set):
            return
        if self._pending:
            self._run_regions()
        elif follow is not None:
            self._run_regions(follow)

    def _regions_ready(self, image: Any, n: int, ids: np.ndarray, final: bool = True) -> None:
        if image is not self.controller.image or self._pending:
            return
        self.image, self.computed = image, True
        self.count_shown.emit(n)
        text = f"{n} object regions" + ("" if final else " (refining the edges…)")
        self.regions_changed.emit(ids, (image.meta.height, image.meta.width), text)

    def _error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.progress.emit(0.0, "object regions cancelled")
        else:
            self.failed.emit(f"object regions failed: {exc}")

    def cancel(self) -> None:
        """Stop the features job, if one runs."""
        if self._features_job is not None:
            self._features_job.cancel()
