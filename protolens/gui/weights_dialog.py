"""Download weights on request: the catalogue with size, licence and cache state; progress and cancel."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from protolens.core.errors import Cancelled
from protolens.core.jobs import CancelToken
from protolens.gui.workers import Job, JobRunner
from protolens.models.api import WeightsSpec
from protolens.services import weights as weights_service


def _size(spec: WeightsSpec) -> str:
    return f"{spec.size_bytes / 1e6:.0f} MB" if spec.size_bytes else "unknown"


class _Signals(QObject):
    progress = Signal(int, int)


class WeightsDialog(QDialog):
    """Lists weights (name, size, licence, cached?) and downloads the selected one when the user asks."""

    def __init__(self, specs: list[WeightsSpec], jobs: JobRunner, parent: QWidget | None = None,
                 selected: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download weights")
        self.resize(760, 320)
        self._specs, self._jobs = specs, jobs
        self._job: Job | None = None
        self._signals = _Signals(self)
        self._signals.progress.connect(self._progress)
        self.downloaded: list[str] = []
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Weights are downloaded from the Hugging Face Hub into its local cache, "
                                "only when you ask. Offline, pass a local file in the Weights field instead."))
        self.table = QTableWidget(len(specs), 4)
        self.table.setHorizontalHeaderLabels(["Weights", "Size", "Licence", "On this machine"])
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for row, spec in enumerate(specs):
            cached = weights_service.cached_path(spec)
            for col, text in enumerate((spec.name, _size(spec), spec.licence, "yes" if cached else "no")):
                self.table.setItem(row, col, QTableWidgetItem(text))
            if spec.name == selected:
                self.table.selectRow(row)
        self.table.resizeColumnsToContents()
        layout.addWidget(self.table)
        self.progress = QProgressBar()
        self.status = QLabel("")
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        row = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.download_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        row.addWidget(close)
        layout.addLayout(row)

    def selected_spec(self) -> WeightsSpec | None:
        rows = self.table.selectionModel().selectedRows()
        return self._specs[rows[0].row()] if rows else None

    def start(self) -> None:
        spec = self.selected_spec()
        if spec is None:
            self.status.setText("Select weights first.")
            return
        token = CancelToken()
        self.status.setText(f"Downloading {spec.name} ({_size(spec)}, licence {spec.licence})…")
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        emit = self._signals.progress.emit  # queued to the UI thread
        self._job = self._jobs.submit(weights_service.pull, spec, kind="download", token=token,
                                      progress=lambda done, total: emit(done, total or 0), cancel=token,
                                      on_result=lambda p: self._done(spec, p), on_error=self._failed)

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total or 0)
        if total:
            self.progress.setValue(done)
        self.status.setText(f"{done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else ""))

    def _done(self, spec: WeightsSpec, path: object) -> None:
        self.downloaded.append(spec.name)
        self.status.setText(f"Saved {path}")
        self.table.item(self._specs.index(spec), 3).setText("yes")
        self._reset()

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(str(exc) if not isinstance(exc, Cancelled) else "Download cancelled.")
        self._reset()

    def _reset(self) -> None:
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._job = None

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()

    def reject(self) -> None:
        self.cancel()
        super().reject()
