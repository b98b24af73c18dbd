"""Model ▸ Train prototype ViT…: the CLI's ``protolens train prototype-vit`` on the worker pool, watched live.

The dialog collects what the training service needs (quadrats folder, prototypes file, run folder, epochs,
tiling, backbone and its weights, the narrow ViT's depth/heads/width, LR, accumulation, warm-up, seed, probe
quadrats, precision), runs :func:`protolens.services.training.train_prototype_vit` (the same service as the CLI;
imported inside the job, so opening the window never imports torch) with progress and Cancel, and shows the run
folder in an embedded :class:`~protolens.gui.training_monitor.TrainingMonitor`. Resume starts the service on
a run folder that has checkpoints: its fields come from the run's ``config.json`` (only the number of epochs may
grow) and the service continues after the last completed epoch. When training ends, "Compare epochs…" opens
the run in the checkpoint comparison view. Paths and values are kept in the window's settings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from protolens.core.errors import Cancelled, CheckpointError, ParamError, ProtolensError
from protolens.core.imageio import list_images
from protolens.core.jobs import CancelToken, Progress
from protolens.core.runs import RunFolder
from protolens.gui.training_monitor import TrainingMonitor
from protolens.gui.workers import Job, JobRunner
from protolens.services.pipeline import Tiling

BACKBONE_BACKEND = "vit-attention"
"""The backend whose model choices are the backbones (tile tokens come from its engine)."""
DEFAULT_BACKBONE = "vit_base_patch14_reg4_dinov2.lvd142m"
DEFAULT_LR = 1e-4
DEFAULT_ACCUMULATION = 8
"""The training loop's defaults (protolens.models.training.TrainConfig), repeated so the dialog needs no torch."""
PRECISIONS = ("auto", "float32", "bfloat16")
SETTINGS_PREFIX = "train/"


def train_job(segmenter: Any, quadrats: Any, prototypes: str, run_dir: str, *, cancel: CancelToken,
              **options: Any) -> Generator[Progress, None, Any]:
    """The job: ``train_prototype_vit`` (imported here, off the UI thread), its Progress passed through.

    A RuntimeError of torch is re-raised as a ProtolensError (the worker treats RuntimeErrors as a deleted
    worker and would never report the failure).
    """
    from protolens.services.training import train_prototype_vit

    try:
        return (yield from train_prototype_vit(segmenter, quadrats, prototypes, run_dir, cancel=cancel, **options))
    except RuntimeError as exc:
        raise ProtolensError(f"training failed: {type(exc).__name__}: {exc}") from exc


def _spin(low: int, high: int, value: int, special: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    if special:
        box.setSpecialValueText(special)
    return box


def _row(*pairs: tuple[str, QWidget], stretch: QWidget | None = None) -> QHBoxLayout:
    """Widgets in a row, each after its label ("" = none); ``stretch`` takes the spare width."""
    row = QHBoxLayout()
    for text, widget in pairs:
        if text:
            row.addWidget(QLabel(text))
        row.addWidget(widget, 1 if widget is stretch else 0)
    return row


class TrainDialog(QDialog):
    """The Train prototype ViT… dialog (see the module docstring). Modeless: closing it leaves a training
    running (the window's Cancel-all on quit stops it).

    Signals
    -------
    compare_requested(str run_dir)
        "Compare epochs…" was pressed for the run folder.
    finished_training(object summary)
        The service returned (a ``TrainSummary``).
    """

    compare_requested = Signal(str)
    finished_training = Signal(object)

    def __init__(self, segmenter: Any, jobs: JobRunner, settings: QSettings, *, backbones: list[str] | None = None,
                 allow_random_weights: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train prototype ViT")
        self.resize(1150, 720)
        self.segmenter, self.jobs, self.settings = segmenter, jobs, settings
        self.allow_random_weights = allow_random_weights
        self.job: Job | None = None
        self.summary: Any = None
        self.monitor = TrainingMonitor()
        form = self._build_form(backbones or self._backbones())
        buttons = self._build_buttons()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("Choose the quadrats, the prototypes and a new run folder, then Start.")
        self.status.setObjectName("train_status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(form)
        left_layout.addStretch(1)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.monitor)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([430, 720])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self._restore()
        self._run_changed()

    # --- construction -----------------------------------------------------------------------------
    def _backbones(self) -> list[str]:
        """The vit-attention backend's model choices (from its manifest: no plugin code is imported)."""
        try:
            manifest = self.segmenter.registry.manifest(BACKBONE_BACKEND)
            return [str(c) for c in manifest.param("model").choices]
        except (KeyError, ProtolensError, AttributeError):
            return [DEFAULT_BACKBONE]

    def _path_row(self, edit: QLineEdit, pick: str, title: str) -> QHBoxLayout:
        row = QHBoxLayout()
        button = QPushButton("…")
        button.setToolTip(title)
        button.clicked.connect(lambda: self._browse(edit, pick, title))
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    def _build_form(self, backbones: list[str]) -> QFormLayout:
        form = QFormLayout()
        self.quadrats = QLineEdit()
        self.quadrats.setPlaceholderText("folder of quadrat photos (the transductive training set)")
        self.prototypes = QLineEdit()
        self.prototypes.setPlaceholderText("prototypes.safetensors (protolens prototypes build)")
        self.run_dir = QLineEdit()
        self.run_dir.setPlaceholderText("a new folder, or a run to resume or watch")
        self.run_dir.editingFinished.connect(self._run_changed)
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("local Hugging Face cache")
        form.addRow("Quadrats", self._path_row(self.quadrats, "folder", "Folder of quadrat photos"))
        form.addRow("Prototypes", self._path_row(self.prototypes, "file", "Prototypes file"))
        form.addRow("Run folder", self._path_row(self.run_dir, "run", "Run folder"))
        self.epochs = _spin(1, 100000, 15)
        form.addRow("Epochs", self.epochs)
        self.photo_size = QLineEdit("3072x2048")
        self.photo_size.setToolTip("WIDTHxHEIGHT each quadrat is resized to (aspect ignored)")
        self.crop = _spin(1, 4096, 64)
        self.crop.setToolTip("Crop side in resized pixels (the grid is height/crop x width/crop)")
        self.crop_input = _spin(1, 4096, 518)
        self.crop_input.setToolTip("Side each crop is resized to before the backbone (518; 224 or 112 on a laptop)")
        form.addRow("Photo size", _row(("", self.photo_size), ("crop", self.crop), ("input", self.crop_input),
                                       stretch=self.photo_size))
        self.backbone = QComboBox()
        self.backbone.addItems(backbones)
        self.backbone.setCurrentText(DEFAULT_BACKBONE if DEFAULT_BACKBONE in backbones else backbones[0])
        form.addRow("Backbone", self.backbone)
        form.addRow("Backbone weights", self._path_row(self.weights, "weights", "Backbone weights file"))
        self._build_training_rows(form)
        return form

    def _build_training_rows(self, form: QFormLayout) -> None:
        """Narrow ViT (step 4), optimiser and run rows."""
        self.depth, self.heads = _spin(1, 48, 6), _spin(1, 64, 12)
        self.width = _spin(0, 8192, 0, "token dim")
        form.addRow("Narrow ViT", _row(("depth", self.depth), ("heads", self.heads), ("width", self.width)))
        self.lr = QLineEdit(f"{DEFAULT_LR:g}")
        self.lr.setToolTip("Peak learning rate after the warm-up (AdamW, cosine per optimizer update)")
        self.accumulation = _spin(1, 4096, DEFAULT_ACCUMULATION)
        self.accumulation.setToolTip("Quadrats per optimizer update (batch 1 with gradient accumulation)")
        self.warmup = _spin(-1, 10**7, -1, "auto")
        self.warmup.setToolTip("Warm-up updates; auto = one epoch's updates, at most 10 % of all")
        form.addRow("Optimiser", _row(("lr", self.lr), ("accumulation", self.accumulation),
                                      ("warm-up", self.warmup), stretch=self.lr))
        self.seed, self.probe = _spin(0, 2**31 - 1, 0), _spin(0, 1000, 4)
        self.probe.setToolTip("Quadrats of the fixed probe set the collapse indicators are measured on")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.6)
        self.threshold.setToolTip("Crop-mask threshold t of the IoU-with-previous indicator (0.6)")
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        form.addRow("Run", _row(("seed", self.seed), ("probe", self.probe), ("t", self.threshold),
                                ("precision", self.precision)))

    def _build_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("train_start")
        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the run folder after its last checkpoint (its own settings; "
                                      "only Epochs may grow)")
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.compare_button = QPushButton("Compare epochs…")
        self.compare_button.setToolTip("Open the run in the checkpoint comparison view")
        self.compare_button.clicked.connect(lambda: self.compare_requested.emit(self.run_dir.text().strip()))
        close = QPushButton("Close")
        close.setToolTip("Hide this dialog; a training keeps running")
        close.clicked.connect(self.hide)
        for button in (self.start_button, self.resume_button, self.cancel_button, self.compare_button):
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(close)
        return row

    def _browse(self, edit: QLineEdit, pick: str, title: str) -> None:
        start = edit.text().strip() or str(self.settings.value(SETTINGS_PREFIX + "last_dir", ""))
        if pick == "file" or pick == "weights":
            pattern = "Safetensors (*.safetensors)" if pick == "file" else "Weights (*.safetensors *.pth *.pt *.bin)"
            path, _ = QFileDialog.getOpenFileName(self, title, start, pattern)
        else:
            path = QFileDialog.getExistingDirectory(self, title, start)
        if path:
            edit.setText(path)
            self.settings.setValue(SETTINGS_PREFIX + "last_dir", str(Path(path).parent))
            if edit is self.run_dir:
                self._run_changed()

    # --- settings -----------------------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        return {"quadrats": self.quadrats, "prototypes": self.prototypes, "run_dir": self.run_dir,
                "weights": self.weights, "photo_size": self.photo_size, "lr": self.lr, "epochs": self.epochs,
                "crop": self.crop, "crop_input": self.crop_input, "depth": self.depth, "heads": self.heads,
                "width": self.width, "accumulation": self.accumulation, "warmup": self.warmup, "seed": self.seed,
                "probe": self.probe, "threshold": self.threshold, "backbone": self.backbone,
                "precision": self.precision}

    def _restore(self) -> None:
        for name, widget in self._fields().items():
            value = self.settings.value(SETTINGS_PREFIX + name)
            if value is None or value == "":
                continue
            if isinstance(widget, QSpinBox | QDoubleSpinBox):
                try:
                    widget.setValue(type(widget.value())(value))
                except (TypeError, ValueError):
                    continue
            elif isinstance(widget, QComboBox):
                if widget.findText(str(value)) >= 0:
                    widget.setCurrentText(str(value))
            else:
                widget.setText(str(value))

    def save_settings(self) -> None:
        """Keep every field (paths and values) for the next time the dialog opens."""
        for name, widget in self._fields().items():
            value = (widget.value() if isinstance(widget, QSpinBox | QDoubleSpinBox) else
                     widget.currentText() if isinstance(widget, QComboBox) else widget.text().strip())
            self.settings.setValue(SETTINGS_PREFIX + name, value)

    # --- validation -------------------------------------------------------------------------------
    def run_folder(self) -> RunFolder | None:
        text = self.run_dir.text().strip()
        return RunFolder(Path(text).expanduser()) if text else None

    def _run_changed(self) -> None:
        """Watch the run folder in the monitor (a run the CLI trains shows too); Resume needs checkpoints."""
        run = self.run_folder()
        completed = self._completed(run)
        self.resume_button.setEnabled(self.job is None and completed > 0)
        self.compare_button.setEnabled(completed > 0)
        if run is not None and self.monitor.run is not None and self.monitor.run.path == run.path:
            return
        self.monitor.set_run(run.path if run is not None and run.path.is_dir() else None)

    @staticmethod
    def _completed(run: RunFolder | None) -> int:
        if run is None or not run.path.is_dir():
            return 0
        try:
            latest = run.latest()
        except CheckpointError:
            return 0
        return latest.epoch if latest is not None else 0

    def validate(self, *, resume: bool = False) -> dict[str, Any] | None:
        """The service's arguments from the fields, or None with the problems shown in the status line."""
        problems: list[str] = []
        quadrats = Path(self.quadrats.text().strip()).expanduser()
        if not self.quadrats.text().strip() or not quadrats.is_dir():
            problems.append("choose the folder of quadrat photos")
        elif not list_images(quadrats):
            problems.append(f"{quadrats} holds no photos")
        prototypes = Path(self.prototypes.text().strip()).expanduser()
        if not self.prototypes.text().strip() or not prototypes.is_file():
            problems.append("choose the prototypes file (protolens prototypes build)")
        run = self.run_folder()
        completed = self._completed(run)
        if run is None:
            problems.append("choose a run folder")
        elif resume and completed == 0:
            problems.append(f"{run.path} has no checkpoint to resume from")
        elif resume and self.epochs.value() <= completed:
            problems.append(f"the run has {completed} epochs: set Epochs above {completed} to train more")
        elif not resume and completed:
            problems.append(f"{run.path} already holds {completed} epochs: Resume continues it, "
                            "or choose a new run folder")
        tiling = None
        try:
            tiling = Tiling.parse(self.photo_size.text(), self.crop.value(), self.crop_input.value())
        except ParamError as exc:
            problems.append(str(exc))
        width, heads = self.width.value(), self.heads.value()
        if width and width % heads:
            problems.append(f"width {width} is not a multiple of heads {heads}")
        try:
            lr = float(self.lr.text())
        except ValueError:
            lr = math.nan
        if not lr > 0 or not math.isfinite(lr):
            problems.append(f"lr must be a number > 0, not {self.lr.text()!r}")
        weights = self.weights.text().strip()
        if weights and not Path(weights).expanduser().exists():
            problems.append(f"backbone weights {weights} do not exist")
        if problems:
            self._say("Cannot start: " + "; ".join(problems) + ".", error=True)
            return None
        return {"quadrats": quadrats, "prototypes_file": prototypes, "run_dir": run.path, "epochs": self.epochs.value(),
                "tiling": tiling, "backbone": self.backbone.currentText(),
                "weights_path": Path(weights).expanduser() if weights else None, "depth": self.depth.value(),
                "heads": heads, "width": width, "lr": lr, "accumulation": self.accumulation.value(),
                "warmup_steps": None if self.warmup.value() < 0 else self.warmup.value(), "seed": self.seed.value(),
                "probe": self.probe.value(), "threshold": self.threshold.value(),
                "precision": self.precision.currentText(),
                "allow_random_weights": self.allow_random_weights}

    def fill_from_run(self, run: RunFolder) -> None:
        """Set the fields to the run's ``config.json`` (what a resume must keep); raises CheckpointError."""
        config = run.config()
        train, vit = config.get("train", {}), config.get("narrow_vit", {})
        tiling = Tiling.from_json(config["tiling"]) if "tiling" in config else None
        if tiling is not None:
            self.photo_size.setText(f"{tiling.photo_size[0]}x{tiling.photo_size[1]}")
            self.crop.setValue(tiling.crop)
            self.crop_input.setValue(tiling.crop_input)
        backbone = config.get("backbone", {})
        if backbone.get("model") and self.backbone.findText(backbone["model"]) < 0:
            self.backbone.addItem(backbone["model"])
        self.backbone.setCurrentText(backbone.get("model", self.backbone.currentText()))
        weights = backbone.get("weights_path") or ""
        if weights:
            self.weights.setText(str(weights))
        prototypes = config.get("prototypes", {}).get("file")
        if prototypes:
            self.prototypes.setText(str(prototypes))
        folder = config.get("quadrats_dir") or self._common_folder(config.get("quadrats", []))
        if folder:
            self.quadrats.setText(str(folder))
        for box, key, source in ((self.depth, "depth", vit), (self.heads, "heads", vit), (self.width, "width", vit),
                                 (self.accumulation, "accumulation", train), (self.seed, "seed", train)):
            if isinstance(source.get(key), int):
                box.setValue(source[key])
        if "lr" in train:
            self.lr.setText(f"{float(train['lr']):g}")
        self.warmup.setValue(-1 if train.get("warmup_steps") is None else int(train["warmup_steps"]))
        if train.get("precision") in PRECISIONS:
            self.precision.setCurrentText(train["precision"])
        if isinstance(config.get("probe"), list):
            self.probe.setValue(len(config["probe"]))
        if isinstance(config.get("threshold"), int | float):
            self.threshold.setValue(float(config["threshold"]))

    @staticmethod
    def _common_folder(paths: list[str]) -> str:
        if not paths:
            return ""
        try:
            return os.path.commonpath([str(Path(p).parent) for p in paths])
        except ValueError:
            return ""

    # --- running ----------------------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> Job | None:
        """Start (or with ``resume`` continue) the training job; returns it, or None if a field is wrong."""
        if self.job is not None:
            return None
        if resume:
            run = self.run_folder()
            try:
                if self._completed(run):
                    self.fill_from_run(run)
            except (CheckpointError, ParamError, KeyError, TypeError, ValueError) as exc:
                self._say(f"Cannot resume: {exc}", error=True)
                return None
        options = self.validate(resume=resume)
        if options is None:
            return None
        self.save_settings()
        self.summary = None
        quadrats, prototypes, run_dir = (options.pop(k) for k in ("quadrats", "prototypes_file", "run_dir"))
        token = CancelToken()
        self.monitor.set_run(run_dir)
        self._set_running(True)
        self._say(("Resuming " if resume else "Starting ") + f"training into {run_dir}…")
        self.job = self.jobs.submit(train_job, self.segmenter, quadrats, str(prototypes), str(run_dir),
                                    cancel=token, token=token, kind="train", **options,
                                    on_progress=self._progress, on_result=self._done, on_error=self._failed,
                                    on_finished=self._finished)
        return self.job

    def cancel(self) -> None:
        """Ask the training to stop at its next check (the last completed epoch's checkpoint stays)."""
        if self.job is not None:
            self.job.token.cancel()
            self._say("Cancelling… (the run stops at its next check; Resume continues it)")

    @property
    def running(self) -> bool:
        return self.job is not None

    def _progress(self, report: Any) -> None:
        if isinstance(report, Progress):
            self.progress.setValue(int(max(0.0, min(1.0, report.fraction)) * 1000))
            self._say(report.text)

    def _done(self, summary: Any) -> None:
        self.summary = summary
        self.progress.setValue(1000)
        trained = getattr(summary, "trained", ())
        epoch, loss = getattr(summary, "epoch", 0), getattr(summary, "loss", math.nan)
        what = (f"trained epochs {trained[0]}–{trained[-1]}" if len(trained) > 1 else
                f"trained epoch {trained[0]}" if trained else "nothing to train (the run was complete)")
        skipped = getattr(summary, "skipped", ())
        self._say(f"Done: {what}; the run has {epoch} epochs, last loss {loss:.4g}. "
                  + (f"{len(skipped)} photos skipped. " if skipped else "")
                  + "Compare epochs… opens it in the checkpoint comparison.")
        self.finished_training.emit(summary)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self._say("Training cancelled; the completed epochs are kept (Resume continues the run).")
        else:
            text = str(exc) if isinstance(exc, ProtolensError) else f"{type(exc).__name__}: {exc}"
            self._say(f"Training failed: {text}", error=True)

    def _finished(self) -> None:
        self.job = None
        self._set_running(False)
        self.monitor.poll()
        self._run_changed()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for widget in self._fields().values():
            widget.setEnabled(not running)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet("color:#d33;" if error else "")
        self.status.setText(text)
