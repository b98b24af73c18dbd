"""The class vote of a keypoint-labeling explanation as a bar chart (pyqtgraph ``BarGraphItem``).

Soft vote (KLC step 4, seed 002): score(c) = matches on class-c prototypes / all matches; the prediction is the
argmax. One horizontal bar per class of the retrieved prototypes (retrieval order, top to bottom), its length
the class's share of the matches and its end labelled ``n/total``; the predicted class is orange. The title
says the prediction, or "no best buddies: no prediction" when there is no match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

BAR = (31, 119, 180)
PREDICTED = (255, 127, 14)


class VoteChart(QWidget):
    """Bars of :class:`~protolens.core.matching.Vote` (see the module docstring); ``set_vote(None)`` clears."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("no explanation yet")
        self.title.setObjectName("vote_title")
        self.title.setWordWrap(True)
        self.title.setStyleSheet("font-weight:bold;padding:2px 4px;")
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        item = self.plot.getPlotItem()
        item.showGrid(x=True, alpha=0.25)
        item.setLabel("bottom", "share of the matches")
        item.getAxis("left").setStyle(tickLength=0)
        self.bars: pg.BarGraphItem | None = None
        self._texts: list[pg.TextItem] = []
        self.vote: Any = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.plot, 1)

    @property
    def bar_count(self) -> int:
        """Bars drawn (one per class of the vote)."""
        return 0 if self.bars is None else len(self.bars.opts["y"])

    def set_vote(self, vote: Any) -> None:
        """Draw ``vote`` (a Vote: classes, counts, scores, total, prediction, message()); None clears."""
        self.vote = vote
        plot = self.plot.getPlotItem()
        if self.bars is not None:
            plot.removeItem(self.bars)
            self.bars = None
        for text in self._texts:
            plot.removeItem(text)
        self._texts = []
        if vote is None:
            self.title.setText("no explanation yet")
            plot.getAxis("left").setTicks([[]])
            return
        self.title.setText(f"vote: {vote.message()}")
        classes = [str(c) for c in vote.classes]
        n = len(classes)
        scores = np.asarray(vote.scores, np.float64).reshape(-1)
        counts = np.asarray(vote.counts, np.int64).reshape(-1)
        y = np.arange(n, dtype=np.float64)
        brushes = [pg.mkBrush(*(PREDICTED if c == vote.prediction else BAR)) for c in classes]
        self.bars = pg.BarGraphItem(x0=np.zeros(n), y=y, height=0.6, width=np.maximum(scores, 1e-4),
                                    brushes=brushes, pen=pg.mkPen(None))
        plot.addItem(self.bars)
        for i in range(n):
            text = pg.TextItem(f"{counts[i]}/{vote.total}", color=(40, 40, 40), anchor=(0, 0.5))
            text.setPos(float(scores[i]) + 0.01, float(y[i]))
            plot.addItem(text)
            self._texts.append(text)
        plot.getAxis("left").setTicks([[(float(i), _short(c)) for i, c in enumerate(classes)]])
        plot.getViewBox().invertY(True)
        plot.setXRange(0.0, 1.15, padding=0)
        plot.setYRange(-0.6, max(n, 1) - 0.4, padding=0)


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"
