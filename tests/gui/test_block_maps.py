"""Block maps (crop scores of prototype guidance) are drawn as whole crops, so the drawn mask is the crop mask."""

from __future__ import annotations

import numpy as np

from protolens.gui.canvas import display_map


def test_a_nearest_map_is_drawn_as_blocks_and_a_linear_one_is_blended() -> None:
    values = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    blocks = display_map(values, (200, 400), interpolation="nearest")
    assert set(np.unique(blocks).tolist()) == {0, 255}
    assert (blocks[: blocks.shape[0] // 2, : blocks.shape[1] // 2] == 0).all()
    blended = display_map(values, (200, 400))
    assert len(np.unique(blended)) > 2


def test_the_window_draws_a_prototype_guided_style_result_as_crops(window, qtbot) -> None:
    from protolens.core.types import Heatmap

    window.canvas.set_photo(np.zeros((64, 128, 3), np.uint8))
    heatmap = Heatmap(np.array([[0.1, 0.9, 0.2, 0.8]], np.float32), (64, 128), "nearest")
    window.canvas.set_heatmap(heatmap.values, None, heatmap.interpolation)
    drawn = window.canvas._display
    columns = np.split(drawn, 4, axis=1)
    assert all(len(np.unique(c)) == 1 for c in columns)
