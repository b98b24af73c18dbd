"""The live training monitor: loss per optimizer update and the per-epoch collapse indicators of any run folder.

It watches a run folder (:class:`protolens.core.runs.RunFolder`) whoever trains it: the Train… dialog, or the
CLI (``protolens train prototype-vit``) in another process. A timer reads the new complete lines of
``metrics.jsonl`` from the last byte offset (``RunFolder.read_metrics``) off the UI thread, one read at a time,
so polling a long run costs only the lines written since the last poll; a partial last line is left for the
next poll. The plots: loss against optimizer step (log-y optional), and against epoch the indicators of arXiv
2512.19957's collapse (METHODS.md §1 step 5: attention entropy, border share, IoU with the previous epoch's
mask, all in [0, 1], left axis) with the epoch's mean loss (right axis). Any other indicator a run logs (an LDVC
run's mIoU, seen / unseen mIoU, hIoU, pixel accuracy; a patch selector's agreement with the rollout) gets its
own curve on the left axis when its first value arrives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget
from superqt.utils import create_worker

from protolens.core.errors import ProtolensError
from protolens.core.runs import RunFolder
from protolens.gui.indicator_plot import LABELS, indicator_color

POLL_MS = 500
INDICATOR_STYLE = {"entropy": ("attention entropy", (31, 119, 180)),
                   "border_share": ("border share", (214, 39, 40)),
                   "iou_previous": ("IoU with previous", (44, 160, 44))}
"""Indicators on the left axis of the epoch plot: name -> (legend, colour)."""
EPOCH_LOSS_COLOR = (255, 127, 14)


def _read(run: RunFolder, offset: int, want_config: bool) -> tuple[list[dict[str, Any]], int, bool, int | None]:
    """Worker side of one poll: (records, next offset, file was rewritten, total epochs from config or None)."""
    try:
        rewritten = run.metrics_path.stat().st_size < offset
    except OSError:
        rewritten = False
    records, new_offset = run.read_metrics(0 if rewritten else offset)
    total = None
    if want_config and run.config_path.is_file():
        try:
            total = int(run.config().get("train", {}).get("epochs", 0)) or None
        except (ProtolensError, ValueError, TypeError, AttributeError):
            total = None
    return records, new_offset, rewritten, total


def _number(value: Any) -> float:
    """A JSON number as float; null (a NaN the trainer wrote) and junk as NaN."""
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points with a finite value (an undefined indicator, e.g. the first epoch's IoU, is not drawn)."""
    keep = np.isfinite(y)
    return x[keep], y[keep]


class TrainingMonitor(QWidget):
    """Plots a run folder's ``metrics.jsonl`` while it grows (see the module docstring).

    Signals
    -------
    updated(int steps, int epochs)
        After a poll that read new lines: optimizer updates and epochs plotted so far.
    """

    updated = Signal(int, int)

    def __init__(self, parent: QWidget | None = None, interval_ms: int = POLL_MS) -> None:
        super().__init__(parent)
        self.run: RunFolder | None = None
        self.total_epochs: int | None = None
        self._offset = 0
        self._reading = False
        self._generation = 0
        self._steps: dict[int, tuple[float, float, int]] = {}
        self._epochs: dict[int, dict[str, float]] = {}
        self._last_step: dict[str, Any] = {}
        self._build(interval_ms)
        self.clear()

    def _build(self, interval_ms: int) -> None:
        self.loss_plot = pg.PlotWidget()
        self.loss_plot.setBackground("w")
        self.loss_plot.setLabel("bottom", "optimizer step")
        self.loss_plot.setLabel("left", "loss (MSE)")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.25)
        self.loss_plot.setDownsampling(auto=True, mode="peak")
        self.loss_plot.setClipToView(True)
        self.step_curve = self.loss_plot.plot(pen=pg.mkPen((40, 40, 40), width=1))
        self.epoch_plot = pg.PlotWidget()
        self.epoch_plot.setBackground("w")
        self.epoch_plot.setLabel("bottom", "epoch")
        self.epoch_plot.setLabel("left", "indicator")
        self.epoch_plot.showGrid(x=True, y=True, alpha=0.25)
        self.epoch_plot.setYRange(0.0, 1.3, padding=0)  # headroom above 1 for the legend
        self.epoch_plot.getAxis("left").setTicks([[(v / 5, f"{v / 5:.1f}") for v in range(6)]])
        legend = self.epoch_plot.addLegend(offset=(40, 2), colCount=2, labelTextColor=(30, 30, 30),
                                           brush=pg.mkBrush(255, 255, 255, 210), pen=pg.mkPen(200, 200, 200))
        self.indicator_curves = {
            name: self.epoch_plot.plot(pen=pg.mkPen(color, width=2), symbol="o", symbolSize=6,
                                       symbolBrush=color, symbolPen=None, name=label)
            for name, (label, color) in INDICATOR_STYLE.items()}
        self.epoch_loss_curve = self._right_axis_curve(legend)
        self.log_y = QCheckBox("log loss")
        self.log_y.setToolTip("Logarithmic loss axis (the step plot)")
        self.log_y.toggled.connect(lambda on: self.loss_plot.setLogMode(y=bool(on)))
        self.status = QLabel()
        self.status.setObjectName("monitor_status")
        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.log_y)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.loss_plot, 3)
        layout.addWidget(self.epoch_plot, 2)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)

    def _right_axis_curve(self, legend: Any) -> pg.PlotDataItem:
        """The epoch loss on its own right-hand axis (pyqtgraph's linked second ViewBox)."""
        item = self.epoch_plot.getPlotItem()
        self._loss_view = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(self._loss_view)
        item.getAxis("right").linkToView(self._loss_view)
        item.getAxis("right").setLabel("epoch loss", color=pg.mkColor(EPOCH_LOSS_COLOR))
        self._loss_view.setXLink(item)
        curve = pg.PlotDataItem(pen=pg.mkPen(EPOCH_LOSS_COLOR, width=2, style=pg.QtCore.Qt.PenStyle.DashLine),
                                symbol="s", symbolSize=6, symbolBrush=EPOCH_LOSS_COLOR, symbolPen=None)
        self._loss_view.addItem(curve)
        legend.addItem(curve, "epoch loss (right)")

        def sync() -> None:
            self._loss_view.setGeometry(item.vb.sceneBoundingRect())
            self._loss_view.linkedViewChanged(item.vb, self._loss_view.XAxis)

        item.vb.sigResized.connect(sync)
        return curve

    # --- the run ----------------------------------------------------------------------------------
    def set_run(self, path: str | Path | None) -> None:
        """Watch the run folder ``path`` (it may not exist yet: the first lines appear when training starts);
        None stops watching. Plots are cleared and the whole log is read again."""
        self.clear()
        self.run = RunFolder(path) if path else None
        if self.run is None:
            self.timer.stop()
            self.status.setText("no run folder")
            return
        self.status.setText(f"watching {self.run.path} (no metrics yet)")
        if self.isVisible():  # a hidden monitor starts polling when shown
            self.timer.start()
        self.poll()

    def clear(self) -> None:
        """Forget what was read (the next poll reads the log from the start)."""
        self._generation += 1
        self._offset, self._reading = 0, False
        self.total_epochs = None
        self._steps.clear()
        self._epochs.clear()
        self._last_step = {}
        self._redraw()

    def poll(self) -> None:
        """Read the lines written since the last poll, off the UI thread (skipped while a read is running)."""
        if self.run is None or self._reading:
            return
        self._reading = True
        generation, run = self._generation, self.run
        worker = create_worker(_read, run, self._offset, self.total_epochs is None, _start_thread=False)
        worker.returned.connect(lambda out: self._read_done(generation, *out))
        worker.errored.connect(lambda exc: self._read_failed(generation, exc))
        worker.start()

    def _read_failed(self, generation: int, exc: BaseException) -> None:
        if generation == self._generation:
            self._reading = False
            self.status.setText(f"cannot read {self.run.path if self.run else ''}: {exc}")

    def _read_done(self, generation: int, records: list[dict[str, Any]], offset: int, rewritten: bool,
                   total: int | None) -> None:
        if generation != self._generation:
            return  # read for a run no longer watched
        self._reading = False
        if total is not None:
            self.total_epochs = total
        if rewritten:  # the trainer rewrote the log (a resume dropped redone steps)
            self._steps.clear()
            self._epochs.clear()
        self._offset = offset
        if records or rewritten:
            self.add_records(records)

    def add_records(self, records: list[dict[str, Any]]) -> None:
        """Plot metric records (``{"type": "step" | "epoch", ...}``); a step already plotted is replaced, and
        the steps after it are dropped (a resumed run redoes them)."""
        for record in records:
            kind = record.get("type")
            if kind == "step" and "step" in record:
                step = int(record["step"])
                if self._steps and step <= max(self._steps):
                    self._steps = {s: v for s, v in self._steps.items() if s < step}
                self._steps[step] = (_number(record.get("loss")), _number(record.get("lr")),
                                     int(record.get("epoch", 0)))
                self._last_step = record
            elif kind == "epoch" and "epoch" in record:
                values = {k: _number(v) for k, v in (record.get("indicators") or {}).items()}
                values["loss"] = _number(record.get("loss", values.get("loss")))
                self._epochs[int(record["epoch"])] = values
        self._redraw()
        self.updated.emit(len(self._steps), len(self._epochs))

    # --- what is plotted --------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        """Optimizer updates plotted."""
        return len(self._steps)

    @property
    def epoch_count(self) -> int:
        """Epochs plotted."""
        return len(self._epochs)

    def step_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, losses) plotted, sorted by step: (n,) int64 and (n,) float64."""
        steps = np.array(sorted(self._steps), dtype=np.int64)
        return steps, np.array([self._steps[s][0] for s in steps], dtype=np.float64)

    def epoch_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of indicator ``name`` ("loss" = the epoch's mean loss); NaN where undefined."""
        epochs = np.array(sorted(self._epochs), dtype=np.int64)
        return epochs, np.array([self._epochs[e].get(name, math.nan) for e in epochs], dtype=np.float64)

    def _add_curves(self) -> None:
        """A curve (left axis) for every indicator logged so far that has none (the loss has the right axis)."""
        names = dict.fromkeys(n for values in self._epochs.values() for n in values if n != "loss")
        for name in names:
            if name not in self.indicator_curves:
                color = indicator_color(name, len(self.indicator_curves))
                self.indicator_curves[name] = self.epoch_plot.plot(
                    pen=pg.mkPen(color, width=2), symbol="o", symbolSize=6, symbolBrush=color, symbolPen=None,
                    name=LABELS.get(name, name.replace("_", " ")))

    def _redraw(self) -> None:
        self._add_curves()
        self.step_curve.setData(*_finite(*self.step_data()))
        for name, curve in self.indicator_curves.items():
            curve.setData(*_finite(*self.epoch_data(name)))
        self.epoch_loss_curve.setData(*_finite(*self.epoch_data("loss")))
        self._loss_view.enableAutoRange(axis=pg.ViewBox.YAxis)
        self.status.setText(self.status_text())

    def status_text(self) -> str:
        """``epoch n/E · step s · loss x · lr y`` of the last update read (or what is being watched)."""
        if not self._last_step:
            return f"watching {self.run.path} (no metrics yet)" if self.run is not None else "no run folder"
        record = self._last_step
        total = f"/{self.total_epochs}" if self.total_epochs else ""
        done = f" ({len(self._epochs)} done)" if self._epochs else ""
        return (f"epoch {int(record.get('epoch', 0))}{total}{done}  ·  step {int(record['step'])}  ·  "
                f"loss {_number(record.get('loss')):.4g}  ·  lr {_number(record.get('lr')):.3g}")

    def stop(self) -> None:
        """Stop polling (the plots stay)."""
        self.timer.stop()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Polling resumes when shown (a hidden monitor reads nothing)."""
        super().showEvent(event)
        if self.run is not None and not self.timer.isActive():
            self.timer.start()
            self.poll()

    def hideEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().hideEvent(event)
        self.timer.stop()
