"""The Explain view (View ▸ Explain, Ctrl+Shift+X): why the current photo resembles its nearest prototypes.

Method: the Key-point Labeling Classifier (KLC, seed 002) on the dense ViT features of Amir et al.
(arXiv 2112.05814), computed by :func:`protolens.services.explain.explain` (METHODS.md §4): the photo's top-k
prototypes are retrieved from a bank by CLS cosine (step 1), photo and prototypes are cut into segments (part
co-segmentation, SLIC superpixels or the bank's annotations; step 2), segment descriptors are matched as best
buddies (step 3) and the matches vote for a class (step 4).

The page shows the query on the left and its prototypes on the right (:class:`ExplainScene`: segments tinted,
a line per match coloured by part label, tooltips with the similarity and labels, a click highlights both
segments) and the vote (:class:`VoteChart`). Controls: the bank folder (remembered; "Build bank…" builds it
with progress), k, the segments source, the label-consistent filter, segment matches | pixel correspondences,
and Export (PNG + JSON, :func:`protolens.services.explain_render.write_explanation`).

Work off the UI thread: every computation is a job on the window's ``JobRunner`` with progress and Cancel.
Explanations are cached per (photo, bank, k, segments); the label filter only re-filters the cached one, and
the pixel correspondences are computed the first time they are shown, then kept. Prototype features, segments
and descriptors are memoised by the engine, so the next photo reuses the prototypes' work. Services are
imported inside the job functions (they reach torch), keeping the window's start light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cachetools import LRUCache
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from protolens.core.explanation import FACETS
from protolens.core.imageio import read_image
from protolens.core.jobs import CancelToken
from protolens.core.segments import SEGMENT_SOURCES, label_map_segments
from protolens.gui.explain_scene import ExplainScene
from protolens.gui.job_progress import JobProgress
from protolens.gui.vote_chart import VoteChart

PROTOTYPE_SIDE = 480
QUERY_SIDE = 1024
_photo_memo: LRUCache = LRUCache(maxsize=64)
_memo_lock = threading.Lock()


def prototype_photo(path: str | Path, max_side: int = PROTOTYPE_SIDE) -> np.ndarray:
    """A bank image for drawing: (rows, cols, 3) uint8 RGB, longer side at most ``max_side`` (memoised by path,
    size and mtime). Runs on a worker thread."""
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, max_side)
    with _memo_lock:
        hit = _photo_memo.get(key)
    if hit is not None:
        return hit
    photo = shrink(read_image(path), max_side)
    with _memo_lock:
        _photo_memo[key] = photo
    return photo


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side`` (cv2 INTER_AREA)."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


def explain_job(segmenter: Any, image: Any, bank_root: str, *, k: int, segments: str, pixels: bool,
                allow_random_weights: bool, cancel: CancelToken, drawn: Any = None, layer: int = 9,
                facet: str = "key") -> Any:
    """Job: the explanation of ``image`` (a LoadedImage) against the bank at ``bank_root`` and the photos to draw.

    ``drawn`` is the label map the user drew on the photo and the project's (id, name) classes
    (:meth:`EditSession.drawn_parts`): with the ``"bank"`` source its classes are the query's parts.
    A generator of Progress returning ``(Explanation, [prototype RGB], query RGB)``; raises ParamError (not a
    built bank, weights not the bank's), Cancelled, and the engine's errors. ``layer`` and ``facet`` choose the
    descriptors of the pixel correspondences (Amir et al. §4.1: block 9, key).
    """
    from protolens.services.bank import load_bank
    from protolens.services.explain import explain

    bank = load_bank(bank_root)
    query_segments = label_map_segments(*drawn) if drawn is not None and segments == "bank" else None
    explanation = yield from explain(segmenter, image, bank, k=k, segments=segments, pixels=pixels,
                                     allow_random_weights=allow_random_weights, cancel=cancel,
                                     query_segments=query_segments, layer=layer, facet=facet)
    photos = [prototype_photo(parts.path) for parts in explanation.prototypes]
    return explanation, photos, shrink(image.rgb, QUERY_SIDE)


def build_bank_job(segmenter: Any, root: str, *, allow_random_weights: bool, cancel: CancelToken,
                   **options: Any) -> Any:
    """Job: build (or update) the bank at ``root`` (:func:`protolens.services.bank.build_bank`); its summary."""
    from protolens.services.bank import build_bank

    return (yield from build_bank(segmenter, root, allow_random_weights=allow_random_weights, cancel=cancel,
                                  **options))


def export_job(explanation: Any, out_dir: str, label_consistent: bool) -> list[Path]:
    """Job: write ``<stem>.explanation.png`` and ``.json`` (:func:`protolens.services.explain_render.write_explanation`)."""
    from protolens.services.explain_render import write_explanation

    return write_explanation(explanation, out_dir, label_consistent=label_consistent)


class KeypointView(JobProgress, QWidget):
    """The Explain page over a :class:`~protolens.gui.controller.PhotoController` (see the module docstring)."""

    def __init__(self, controller: Any, jobs: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller, self.jobs, self.settings = controller, jobs, settings
        self._image: Any = None
        self._cache: LRUCache = LRUCache(maxsize=16)  # (photo sha256, bank, k, segments) -> (expl, photos, rgb)
        self._pixels_of: LRUCache = LRUCache(maxsize=16)  # same key -> (block, facet) of its correspondences or None
        self.explanation: Any = None
        self._shown: tuple[Any, ...] | None = None
        self.jobs_started = 0
        self.bank_options: dict[str, Any] = {}
        """Extra :func:`build_bank` options of "Build bank…" (model, input_size, parts…); defaults when empty."""
        self.last_export: list[Path] = []
        self.drawn_parts: Any = None
        """Callable(ImageMeta) -> (label map, [(id, name)]) or None: the parts drawn with the mask editor."""
        self._build()
        controller.photo_changed.connect(self._photo_changed)

    # --- construction ----------------------------------------------------------------------------
    def _build(self) -> None:
        s = self.settings
        self.bank_edit = QLineEdit(str(s.value("explain_bank", "")))
        self.bank_edit.setPlaceholderText("prototype bank folder (class subfolders of reference images)")
        self.bank_edit.editingFinished.connect(self._bank_edited)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(lambda: self.choose_bank())
        self.build_button = QPushButton("Build bank…")
        self.build_button.setToolTip("Embed the bank's images and cluster their part centroids (protolens bank build)")
        self.build_button.clicked.connect(lambda: self.build_bank())
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 50)
        self.k_spin.setPrefix("k = ")
        self.k_spin.setValue(int(s.value("explain_k", 5)))
        self.k_spin.setToolTip("Prototypes retrieved by CLS cosine")
        self.k_spin.valueChanged.connect(lambda _v: self._inputs_changed())
        self.segments_combo = QComboBox()
        self.segments_combo.addItems(list(SEGMENT_SOURCES))
        self.segments_combo.setCurrentText(str(s.value("explain_segments", "cosegment")))
        self.segments_combo.setToolTip("cosegment: part co-segmentation · slic: superpixels in the object mask · "
                                       "bank: the bank's part annotations (the photo's: the classes you drew "
                                       "with the mask editor)")
        self.segments_combo.currentTextChanged.connect(lambda _t: self._inputs_changed())
        self.consistent = QCheckBox("label-consistent")
        self.consistent.setToolTip("Keep only matches whose two segments carry the same part label (no recompute)")
        self.consistent.toggled.connect(self._filter_changed)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("segment matches", "segments")
        self.mode_combo.addItem("pixel correspondences", "pixels")
        self.mode_combo.currentIndexChanged.connect(lambda _i: self._mode_changed())
        self.layer_spin = QSpinBox()
        self.layer_spin.setRange(0, 39)
        self.layer_spin.setPrefix("block ")
        self.layer_spin.setValue(int(s.value("explain_layer", 9)))
        self.layer_spin.setToolTip("Pixel correspondences: the block whose facet gives the descriptors (Amir et al.: 9)")
        self.facet_combo = QComboBox()
        self.facet_combo.addItems(list(FACETS))
        self.facet_combo.setCurrentText(str(s.value("explain_facet", "key")))
        self.facet_combo.setToolTip("Pixel correspondences: key, query or value projections (heads concatenated) or "
                                    "the block's output tokens; log-binned, at half the patch stride")
        self.layer_spin.valueChanged.connect(lambda _v: self._pixel_options_changed())
        self.facet_combo.currentTextChanged.connect(lambda _t: self._pixel_options_changed())
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the explanation as PNG and JSON")
        self.export_button.clicked.connect(lambda: self.export())
        self._build_progress(240)
        self._build_body()

    def _build_body(self) -> None:
        top = QHBoxLayout()
        for widget in (QLabel("bank"), self.bank_edit, self.browse_button, self.build_button):
            top.addWidget(widget, 1 if widget is self.bank_edit else 0)
        bar = QHBoxLayout()
        for widget in (self.k_spin, self.segments_combo, self.consistent, self.mode_combo, self.layer_spin,
                       self.facet_combo, self.export_button):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.progress)
        bar.addWidget(self.cancel_button)
        self.scene_view = ExplainScene()
        self.chart = VoteChart()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setStyleSheet("padding:4px;")
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.chart, 2)
        side_layout.addWidget(self.summary, 3)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.scene_view)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([900, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addLayout(bar)
        layout.addWidget(self.splitter, 1)
        self.scene_view.match_clicked.connect(self._match_clicked)
        self._set_running(False)
        self.layer_spin.setEnabled(self.mode == "pixels")
        self.facet_combo.setEnabled(self.mode == "pixels")
        self.scene_view.show_message("no photo")

    # --- inputs ----------------------------------------------------------------------------------
    @property
    def bank_root(self) -> str:
        return self.bank_edit.text().strip()

    @property
    def mode(self) -> str:
        return str(self.mode_combo.currentData())

    def set_bank(self, folder: str | Path) -> None:
        """Use the bank at ``folder`` (remembered in the settings) and explain the photo against it."""
        self.bank_edit.setText(str(folder))
        self._bank_edited()

    def choose_bank(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a prototype bank folder", self.bank_root)
        if folder:
            self.set_bank(folder)

    def _bank_edited(self) -> None:
        self.settings.setValue("explain_bank", self.bank_root)
        self._inputs_changed()

    def _inputs_changed(self) -> None:
        self.settings.setValue("explain_k", self.k_spin.value())
        self.settings.setValue("explain_segments", self.segments_combo.currentText())
        self.refresh()

    def _drawn(self) -> Any:
        """The parts drawn on the photo with the mask editor (label map, classes), for the "bank" source."""
        if self.drawn_parts is None or self.segments_combo.currentText() != "bank" or self._image is None:
            return None
        return self.drawn_parts(self._image.meta)

    def _key(self) -> tuple[Any, ...] | None:
        if self._image is None or not self.bank_root:
            return None
        drawn = self._drawn()
        drawn_id = (None if drawn is None else
                    hashlib.blake2b(drawn[0].tobytes() + repr(drawn[1]).encode(), digest_size=8).hexdigest())
        return (self._image.meta.sha256, str(Path(self.bank_root).expanduser()), self.k_spin.value(),
                self.segments_combo.currentText(), drawn_id)

    # --- photo and computation -------------------------------------------------------------------
    def activate(self) -> None:
        """Shown: take the controller's photo and explain it (from the cache when it was explained before)."""
        if self.controller.image is not self._image:
            self._image = self.controller.image
            self._shown = None
        self.refresh()

    def _photo_changed(self, image: Any) -> None:
        self._image, self._shown = image, None
        if self.isVisible():
            self.refresh()

    def refresh(self) -> None:
        """Show the explanation of the current inputs: cached, else computed on the job runner."""
        key = self._key()
        if key is None:
            self.cancel()
            self._show(None)
            self.scene_view.show_message("no photo" if self._image is None else
                                         "choose a prototype bank folder (or build one) to explain this photo")
            return
        cached = self._cache.get(key)
        pixels = self.mode == "pixels"
        if cached is not None and (not pixels or self._pixels_of.get(key) == self.pixel_options):
            if key != self._shown:
                self._show(key, cached)
            return
        self.compute(pixels)

    def compute(self, pixels: bool = False) -> None:
        """Explain the current photo on the job runner (progress, Cancel); replaces a running computation."""
        key = self._key()
        if key is None:
            return
        self.cancel()
        options = dict(zip(("layer", "facet"), self.pixel_options, strict=True))
        if self._shown != key:
            self._show(None)
            self.scene_view.show_message("explaining…")
        self.jobs_started += 1
        controller = self.controller
        self.start_job(
            explain_job, controller.segmenter, self._image, key[1], k=key[2], segments=key[3], pixels=pixels,
            allow_random_weights=controller.allow_random_weights, drawn=self._drawn(), kind="explain", **options,
            what="explanation", text="pixel correspondences" if pixels else "explaining",
            on_result=lambda result: self._computed(key, result, options if pixels else None))

    def _job_failed(self, message: str) -> None:
        """A failed job's message is drawn too when no explanation is shown."""
        if self._shown is None:
            self._show(None)
            self.scene_view.show_message(message)

    def _computed(self, key: tuple[Any, ...], result: tuple[Any, list[np.ndarray], np.ndarray],
                  pixel_options: dict[str, Any] | None) -> None:
        self._cache[key] = result
        self._pixels_of[key] = None if pixel_options is None else (pixel_options["layer"], pixel_options["facet"])
        if key == self._key():
            self._show(key, result)

    # --- drawing ---------------------------------------------------------------------------------
    def _show(self, key: tuple[Any, ...] | None, entry: Any = None) -> None:
        if key is None or entry is None:
            self.explanation, self._shown = None, None
            self.chart.set_vote(None)
            self.summary.setText("")
            return
        explanation, photos, query_rgb = entry
        self.explanation, self._shown = explanation, key
        self.scene_view.set_explanation(explanation, query_rgb, photos, label_consistent=self.consistent.isChecked(),
                                        mode=self.mode)
        self._refresh_vote()

    def _refresh_vote(self) -> None:
        explanation = self.explanation
        if explanation is None:
            return
        consistent = self.consistent.isChecked()
        vote = explanation.vote(consistent)
        self.chart.set_vote(vote)
        kept = len(explanation.kept(consistent))
        lines = [f"<b>{vote.message()}</b>",
                 f"{kept} of {len(explanation.matches)} best-buddy matches kept"
                 + (" (label-consistent)" if consistent else ""),
                 f"segments: {explanation.segments_source}"]
        if self.mode == "pixels" and explanation.correspondences is not None:
            lines.append(f"{self.scene_view.line_count} pixel correspondences (Amir et al. §4.1)")
        lines.append("<br>retrieved prototypes (CLS cosine):")
        per_prototype = np.asarray(vote.per_prototype).reshape(-1)
        for rank, (parts, cosine) in enumerate(zip(explanation.prototypes, explanation.retrieval, strict=False)):
            count = int(per_prototype[rank]) if rank < len(per_prototype) else 0
            lines.append(f"{rank + 1}. {parts.label} · cos {cosine:.3f} · {count} matches")
        legend = [f'<span style="color:#{r:02x}{g:02x}{b:02x}">■</span> {label}'
                  for label, (r, g, b) in sorted(self.scene_view.colors.items(), key=lambda kv: (len(kv[0]), kv[0]))
                  if label]
        if legend:
            lines.append("<br>part labels: " + " &nbsp; ".join(legend)
                         + " &nbsp; (dashed: the two labels differ)")
        for note in getattr(explanation, "notes", []) or []:
            lines.append(f"<i>note: {note}</i>")
        lines.append("<br><small>hover a line for its similarity and labels; click it to highlight both "
                     "segments; Ctrl+wheel zooms, double-click fits</small>")
        self.summary.setText("<br>".join(lines))

    def _filter_changed(self, _on: bool) -> None:
        """The label-consistent filter: re-filter the cached explanation (no job)."""
        self.scene_view.set_filter(self.consistent.isChecked())
        self._refresh_vote()

    @property
    def pixel_options(self) -> tuple[int, str]:
        """(block, facet) of the pixel correspondences' descriptors."""
        return self.layer_spin.value(), self.facet_combo.currentText()

    def _pixel_options_changed(self) -> None:
        self.settings.setValue("explain_layer", self.layer_spin.value())
        self.settings.setValue("explain_facet", self.facet_combo.currentText())
        if self.mode == "pixels":
            self.refresh()

    def _mode_changed(self) -> None:
        """Segment matches | pixel correspondences: draw them, computing the correspondences the first time."""
        pixels = self.mode == "pixels"
        self.layer_spin.setEnabled(pixels)
        self.facet_combo.setEnabled(pixels)
        if pixels and (self.explanation is None or self._pixels_of.get(self._shown) != self.pixel_options):
            self.refresh()
            return
        self.scene_view.set_mode(self.mode)
        self._refresh_vote()

    def _match_clicked(self, index: int) -> None:
        drawn = self.scene_view.drawn[index]
        self.controller.message.emit(drawn.tooltip.replace("\n", "  ·  "), "info")

    # --- bank and export -------------------------------------------------------------------------
    def build_bank(self, folder: str | Path | None = None) -> None:
        """Build the bank at ``folder`` (default: the bank field, else a folder the user picks) on the job runner."""
        folder = str(folder or self.bank_root or QFileDialog.getExistingDirectory(
            self, "Build a prototype bank from folder", self.bank_root))
        if not folder:
            return
        self.bank_edit.setText(folder)
        self.settings.setValue("explain_bank", folder)
        self.cancel()
        self.jobs_started += 1
        self.start_job(
            build_bank_job, self.controller.segmenter, folder,
            allow_random_weights=self.controller.allow_random_weights, kind="bank", what="bank build",
            text="building bank", on_result=lambda summary: self._bank_built(folder, summary), **self.bank_options)

    def _bank_built(self, folder: str, summary: Any) -> None:
        root = str(Path(folder).expanduser())
        for key in [k for k in self._cache if k[1] == root]:
            del self._cache[key]
        self._shown = None
        images = getattr(summary, "images", "?")
        self.controller.message.emit(f"bank {folder} built: {images} images", "info")
        if self.bank_root == folder:
            self.refresh()

    def export(self, out_dir: str | Path | None = None) -> None:
        """Write the shown explanation (with the current filter) as ``<photo>.explanation.png`` and ``.json``."""
        explanation = self.explanation
        if explanation is None:
            self.controller.message.emit("Nothing to export: no explanation shown yet.", "warning")
            return
        if not out_dir:
            out_dir = QFileDialog.getExistingDirectory(self, "Export the explanation into",
                                                       str(self.settings.value("explain_export_folder", "")))
            if not out_dir:
                return
        self.settings.setValue("explain_export_folder", str(out_dir))
        if self.mode != "pixels":
            explanation = dataclasses.replace(explanation, correspondences=None)
        self.jobs.submit(export_job, explanation, str(out_dir), self.consistent.isChecked(), kind="export",
                         on_result=self._exported,
                         on_error=lambda exc: self.controller.message.emit(f"explanation export failed: {exc}",
                                                                           "error"))

    def _exported(self, paths: list[Path]) -> None:
        self.last_export = list(paths)
        self.controller.message.emit(f"exported {', '.join(Path(p).name for p in paths)}", "info")
