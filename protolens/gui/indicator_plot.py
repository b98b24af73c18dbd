"""The per-epoch indicators of a training run plotted against epoch (pyqtgraph), for the checkpoint comparison.

Which indicators are drawn is the table's (the run kind's, :data:`protolens.services.run_kinds.RUN_KINDS`): a
prototype-ViT run's collapse indicators (entropy, border share, IoU with the previous epoch's mask), an LDVC
run's segmentation metrics (mIoU, seen / unseen mIoU, hIoU, pixel accuracy), a patch selector's agreement
with the rollout. Every indicator but the loss is in [0, 1] and shares the left axis; the loss has its own
right axis. The chosen epoch is a dashed vertical line, the epoch shown in the view a thin one.
Clicking near an epoch (a point or anywhere in its column) emits ``epoch_clicked(epoch)``. Indicators:
:mod:`protolens.core.indicators` (arXiv 2512.19957: later epochs attend to quadrat frames, so the border share
rises and the entropy falls).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from protolens.core.indicators import INDICATORS

COLORS = {"loss": (60, 60, 60), "entropy": (31, 119, 180), "border_share": (214, 39, 40),
          "iou_previous": (44, 160, 44), "miou": (31, 119, 180), "miou_seen": (44, 160, 44),
          "miou_unseen": (255, 127, 14), "hiou": (214, 39, 40), "pixel_accuracy": (148, 103, 189),
          "agreement_iou": (23, 190, 207)}
LABELS = {"loss": "loss (right axis)", "entropy": "attention entropy", "border_share": "border share",
          "iou_previous": "IoU with previous epoch", "miou": "mIoU", "miou_seen": "mIoU seen",
          "miou_unseen": "mIoU unseen", "hiou": "hIoU", "pixel_accuracy": "pixel accuracy",
          "agreement_iou": "agreement with rollout (IoU)"}
OTHER_COLORS = ((140, 86, 75), (227, 119, 194), (188, 189, 34), (127, 127, 127))
"""Colours of indicators not in :data:`COLORS`, in order of appearance."""
CHOSEN_COLOR = (200, 0, 200)


def indicator_color(name: str, index: int = 0) -> tuple[int, int, int]:
    """The colour of indicator ``name`` (the ``index``-th of its table, for names without a fixed colour)."""
    return COLORS.get(name, OTHER_COLORS[index % len(OTHER_COLORS)])


def legend_html(names: Sequence[str] = INDICATORS) -> str:
    """The legend as rich text: a coloured mark and the name of each indicator (the loss last), then the
    chosen-epoch line."""
    def hex_color(rgb: tuple[int, int, int]) -> str:
        return "#" + "".join(f"{c:02x}" for c in rgb)

    ordered = [*[n for n in names if n != "loss"], *[n for n in names if n == "loss"]]
    marks = [f'<span style="color:{hex_color(indicator_color(n, list(names).index(n)))}">'
             f'{"■ ╌" if n == "loss" else "● ─"}</span> {LABELS.get(n, n.replace("_", " "))}' for n in ordered]
    marks.append(f'<span style="color:{hex_color(CHOSEN_COLOR)}">┆</span> chosen epoch')
    return "&nbsp;&nbsp;&nbsp;".join(marks)


class IndicatorPlot(QWidget):
    """Indicators against epoch; see the module docstring.

    Signals
    -------
    epoch_clicked(int)
        The epoch nearest a click inside the plot area (within half the spacing of the epochs).
    """

    epoch_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.epochs: list[int] = []
        self.names: tuple[str, ...] = ()
        self.table: dict[str, list[tuple[int, float]]] = {}
        self.chosen: int | None = None
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.2)
        item.setLabel("bottom", "epoch")
        item.setLabel("left", "indicator (0 to 1)")
        item.setMouseEnabled(x=False, y=False)
        item.hideButtons()
        item.setYRange(0.0, 1.12, padding=0.02)  # headroom for the "chosen" label
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.loss_view = pg.ViewBox()
        self.loss_view.setMouseEnabled(x=False, y=False)
        item.showAxis("right")
        item.scene().addItem(self.loss_view)
        item.getAxis("right").linkToView(self.loss_view)
        item.getAxis("right").setLabel("loss")
        self.loss_view.setXLink(item)
        item.vb.sigResized.connect(self._sync_views)
        self.chosen_line = pg.InfiniteLine(angle=90, movable=False, label="chosen",
                                           pen=pg.mkPen(CHOSEN_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                           labelOpts={"position": 0.97, "color": CHOSEN_COLOR})
        self.current_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((120, 120, 120), width=1))
        for line in (self.chosen_line, self.current_line):
            line.setVisible(False)
            item.addItem(line, ignoreBounds=True)
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.legend = QLabel()  # beside the plot, so it never hides a point
        self.legend.setStyleSheet("background:white;color:#333;font-size:11px;padding:1px 6px;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)
        self.set_names(INDICATORS)

    def _sync_views(self) -> None:
        self.loss_view.setGeometry(self.plot.getPlotItem().vb.sceneBoundingRect())

    # --- data --------------------------------------------------------------------------------------
    def set_names(self, names: Sequence[str]) -> None:
        """Draw these indicators (in order; ``loss`` on the right axis): new curves and legend when they
        differ from the current ones."""
        names = tuple(names)
        if names == self.names:
            return
        item = self.plot.getPlotItem()
        for name, curve in self.curves.items():
            (self.loss_view if name == "loss" else item).removeItem(curve)
        self.curves = {}
        for index, name in enumerate(names):
            color = indicator_color(name, index)
            if name == "loss":
                curve = pg.PlotDataItem([], [], pen=pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine),
                                        symbol="s", symbolSize=6, symbolBrush=color, symbolPen=None)
                self.loss_view.addItem(curve)
            else:
                curve = item.plot([], [], pen=pg.mkPen(color, width=2), symbol="o", symbolSize=7,
                                  symbolBrush=color, symbolPen=None)
            self.curves[name] = curve
        self.names = names
        self.legend.setText(legend_html(names))

    def set_table(self, table: Mapping[str, Sequence[tuple[int, float]]], chosen: int | None = None) -> None:
        """Plot ``{indicator: [(epoch, value), ...]}`` (:func:`protolens.services.epochs.indicator_table`: the
        run kind's indicators, whose names become the curves and the legend); NaN values are left out (no
        point, the line joins its neighbours)."""
        self.set_names(tuple(table))
        self.table = {name: [(int(e), float(v)) for e, v in table.get(name, [])] for name in self.names}
        self.epochs = sorted({e for series in self.table.values() for e, _ in series})
        for name, curve in self.curves.items():
            finite = [(e, v) for e, v in self.table[name] if math.isfinite(v)]
            curve.setData([e for e, _ in finite], [v for _, v in finite])
        item = self.plot.getPlotItem()
        if self.epochs:
            low, high = self.epochs[0], self.epochs[-1]
            item.setXRange(low - 0.5, high + 0.5, padding=0.02)
            step = max(1, math.ceil((high - low + 1) / 12))  # whole epochs, at most about a dozen labels
            item.getAxis("bottom").setTickSpacing(major=step, minor=step)
        self.loss_view.enableAutoRange(axis=pg.ViewBox.YAxis)
        self._sync_views()
        self.set_chosen(chosen)

    def points(self, name: str) -> list[tuple[int, float]]:
        """The (epoch, value) points drawn for indicator ``name`` (finite values only)."""
        if name not in self.curves:
            return []
        xs, ys = self.curves[name].getData()
        return [] if xs is None else [(int(x), float(y)) for x, y in zip(xs, ys, strict=True)]

    def set_chosen(self, epoch: int | None) -> None:
        """Mark the chosen epoch with a dashed vertical line (None hides it)."""
        self.chosen = epoch
        self.chosen_line.setVisible(epoch is not None)
        if epoch is not None:
            self.chosen_line.setValue(epoch)

    def set_current(self, epoch: int | None) -> None:
        """Mark the epoch shown in the view with a thin vertical line (None hides it)."""
        self.current_line.setVisible(epoch is not None)
        if epoch is not None:
            self.current_line.setValue(epoch)

    # --- clicks ------------------------------------------------------------------------------------
    def nearest_epoch(self, x: float) -> int | None:
        """The epoch nearest ``x`` (plot coordinates) if within half the smallest epoch spacing (at least 0.5)."""
        if not self.epochs:
            return None
        gaps = [b - a for a, b in zip(self.epochs, self.epochs[1:], strict=False)]
        reach = max(0.5, min(gaps) / 2 if gaps else 0.5)
        nearest = min(self.epochs, key=lambda e: abs(e - x))
        return nearest if abs(nearest - x) <= reach else None

    def _clicked(self, event: object) -> None:
        view = self.plot.getPlotItem().vb
        position = event.scenePos()  # type: ignore[attr-defined]
        if not view.sceneBoundingRect().contains(position):
            return
        epoch = self.nearest_epoch(view.mapSceneToView(position).x())
        if epoch is not None:
            self.epoch_clicked.emit(epoch)
