"""The Qt binding must not corrupt reference counts (PySide6 6.12.0 on Python 3.11 did: the GUI crashed)."""

from __future__ import annotations

import sys


def test_void_qt_calls_keep_the_refcount_of_none(qapp):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QPainterPath
    from PySide6.QtWidgets import QSlider

    before = sys.getrefcount(None)
    path, slider = QPainterPath(), QSlider()
    for i in range(3000):
        path.moveTo(QPointF(i, i))
        slider.setValue(i % 100)
    assert sys.getrefcount(None) - before > -100
