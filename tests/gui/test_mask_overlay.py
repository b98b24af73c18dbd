"""The screen-resolution mask overlay draws exactly the cells at or above the threshold."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor


def _render(qtbot, canvas) -> np.ndarray:
    canvas.resize(400, 300)
    canvas.show()
    qtbot.waitExposed(canvas)
    canvas.fit()
    from PySide6.QtGui import QImage

    image = canvas.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    return data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def _canvas(qtbot):
    from protolens.gui.canvas import ImageCanvas

    canvas = ImageCanvas()
    qtbot.addWidget(canvas)
    canvas.set_photo(np.zeros((200, 400, 3), np.uint8))
    canvas.set_heatmap_visible(False)
    canvas.set_mask_color(QColor(0, 255, 0, 255))
    return canvas


def _green_columns(pixels: np.ndarray) -> np.ndarray:
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 60)
    return np.flatnonzero(green.any(axis=0))


def test_fill_follows_the_threshold(qtbot):
    canvas = _canvas(qtbot)
    canvas.set_heatmap(np.tile(np.linspace(0, 1, 400, dtype=np.float32), (200, 1)))
    widths = []
    for threshold in (0.25, 0.5, 0.75):
        canvas.set_threshold(threshold)
        columns = _green_columns(_render(qtbot, canvas))
        widths.append(columns.max() - columns.min() + 1)
    # the filled part is the right (1 - t) of the photo: it shrinks linearly with the threshold
    assert widths[0] > widths[1] > widths[2]
    assert abs(widths[0] / widths[2] - 3.0) < 0.15
    canvas.set_overlay_mode("none")
    assert _green_columns(_render(qtbot, canvas)).size == 0


def test_probability_and_outline(qtbot):
    canvas = _canvas(qtbot)
    values = np.ones((200, 400), np.float32)
    probability = np.tile(np.linspace(0, 1, 200, dtype=np.float32)[:, None], (1, 400))
    canvas.set_heatmap(values, probability)
    canvas.set_threshold(0.5)
    canvas.set_probability_threshold(0.5)
    pixels = _render(qtbot, canvas)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 60)
    photo_rows = np.flatnonzero((green | (pixels.max(axis=2) < 10)).any(axis=1))  # black photo or mask
    green_rows = np.flatnonzero(green.any(axis=1))
    middle = (photo_rows.min() + photo_rows.max()) / 2
    assert green_rows.size and abs(green_rows.min() - middle) <= 2 and green_rows.max() == photo_rows.max()
    canvas.set_overlay_mode("outline")
    outline = _render(qtbot, canvas)
    filled = (pixels[..., 1] > 200).sum()
    assert 0 < (outline[..., 1] > 200).sum() < filled / 10  # a thin boundary, not a fill
