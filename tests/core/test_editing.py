"""Label-map edits touch only their region, and undo/redo always return to the same states."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolens.core.editing import EditHistory, Region, fill_polygon, flood_fill, paint_segment, replace_class


def test_brush_paints_a_round_stroke_inside_its_region():
    labels = np.zeros((200, 300), np.uint8)
    region = paint_segment(labels, (50, 100), (150, 100), 10, 3)
    painted = labels == 3
    ys, xs = np.nonzero(painted)
    assert region is not None and painted[region.slices].sum() == painted.sum()  # nothing outside the region
    assert abs(xs.min() - 40) <= 1 and abs(xs.max() - 160) <= 1 and abs(ys.min() - 90) <= 1
    assert painted[100, 45] and painted[108, 100] and not painted[100, 170] and not painted[112, 100]
    assert not painted[91, 41]  # round cap: the corner of a square cap is not painted


def test_brush_dot_eraser_and_clipping():
    labels = np.full((50, 50), 2, np.uint8)
    paint_segment(labels, (0, 0), (0, 0), 5, 0)
    assert labels[0, 0] == 0 and labels[0, 6] == 2 and labels[4, 2] == 0
    assert paint_segment(labels, (-100, -100), (-90, -90), 3, 1) is None


def test_polygon_and_lasso_fill():
    labels = np.zeros((100, 100), np.uint8)
    region = fill_polygon(labels, [(10, 10), (90, 10), (90, 60), (10, 60)], 4)
    assert region is not None
    assert labels[10:61, 10:91].all() and labels.sum() == 4 * 51 * 81
    assert fill_polygon(labels, [(1, 1), (5, 5)], 4) is None


def test_flood_fill_replaces_one_connected_region():
    labels = np.zeros((60, 60), np.uint8)
    labels[:, 30] = 1  # a wall
    region = flood_fill(labels, (5, 5), 2)
    assert region == Region(0, 0, 60, 30)
    assert (labels[:, :30] == 2).all() and (labels[:, 31:] == 0).all()
    assert flood_fill(labels, (5, 5), 2) is None  # already that class
    assert flood_fill(labels, (100, 5), 3) is None


def test_replace_class():
    labels = np.zeros((10, 10), np.uint8)
    labels[2:4, 5:8] = 7
    assert replace_class(labels, 7, 0) == Region(2, 5, 4, 8) and not labels.any()
    assert replace_class(labels, 7, 0) is None


def _apply(labels, op):
    kind, a, b, c, value = op
    if kind == "brush":
        return paint_segment(labels, (a, b), (c, a), 1 + b % 6, value)
    if kind == "poly":
        return fill_polygon(labels, [(a, b), (c, b), (c, a), (a, c)], value)
    return flood_fill(labels, (a, b), value)


operations = st.lists(st.tuples(st.sampled_from(["brush", "poly", "fill"]), st.integers(0, 47), st.integers(0, 39),
                                st.integers(0, 47), st.integers(0, 4)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(operations, st.data())
def test_undo_redo_sequences_return_to_the_same_states(ops, data):
    labels = np.zeros((40, 48), np.uint8)
    history = EditHistory()
    states = [labels.copy()]
    for op in ops:
        history.begin(labels)
        if history.commit(labels, _apply(labels, op), op[0]) is not None:
            states.append(labels.copy())
    assert len(history.labels) == len(states) - 1
    position = len(states) - 1
    for _ in range(data.draw(st.integers(0, 20))):
        if data.draw(st.booleans()):
            moved = history.undo(labels) is not None
            position -= moved
        else:
            moved = history.redo(labels) is not None
            position += moved
        np.testing.assert_array_equal(labels, states[position])
    while history.undo(labels):
        pass
    np.testing.assert_array_equal(labels, states[0])
    while history.redo(labels):
        pass
    np.testing.assert_array_equal(labels, states[-1])


def test_a_new_edit_after_undo_clears_redo():
    labels = np.zeros((20, 20), np.uint8)
    history = EditHistory()
    for value in (1, 2):
        history.begin(labels)
        history.commit(labels, paint_segment(labels, (5, 5), (5, 5), 2, value), f"paint {value}")
    history.undo(labels)
    history.begin(labels)
    history.commit(labels, paint_segment(labels, (15, 15), (15, 15), 2, 3), "paint 3")
    assert history.labels == ["paint 1", "paint 3"] and not history.can_redo


def test_unchanged_edits_are_not_recorded_and_deltas_are_tight():
    labels = np.zeros((100, 100), np.uint8)
    history = EditHistory()
    history.begin(labels)
    assert history.commit(labels, Region(0, 0, 100, 100), "nothing") is None
    history.begin(labels)
    labels[40:45, 60:62] = 9
    edit = history.commit(labels, Region(0, 0, 100, 100), "small")
    assert edit.region == Region(40, 60, 45, 62)


def test_history_memory_stays_within_its_cap():
    rng = np.random.default_rng(0)
    labels = np.zeros((400, 400), np.uint8)
    history = EditHistory(max_bytes=300_000)
    for step in range(30):
        history.begin(labels)
        labels[:] = rng.integers(0, 3, labels.shape, dtype=np.uint8)  # incompressible full-map edits
        history.commit(labels, Region(0, 0, 400, 400), f"noise {step}")
    assert history.nbytes <= 300_000 or len(history.labels) == 1
    assert history.dropped > 0 and history.labels[-1] == "noise 29"
    final = labels.copy()
    history.undo(labels)
    history.redo(labels)
    np.testing.assert_array_equal(labels, final)


@pytest.mark.parametrize("shape", [(3172, 5640)])
def test_full_image_flood_fill_is_undone_exactly(shape):
    labels = np.zeros(shape, np.uint8)
    labels[1000:1200, :] = 1
    history = EditHistory()
    history.begin(labels)
    region = flood_fill(labels, (10, 10), 2)
    history.commit(labels, region, "fill")
    assert region == Region(0, 0, 1000, shape[1])
    assert history.nbytes < 1_000_000  # compressed: a uniform fill costs little memory
    history.undo(labels)
    assert not (labels == 2).any() and (labels[1000:1200] == 1).all()
