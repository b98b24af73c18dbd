"""The explanation picture: geometry (layout), line count and colours, the zero-match state, PNG + JSON export."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from protolens.core.explanation import Correspondence, Explanation, ImageParts, Match
from protolens.core.segments import Segments
from protolens.services.explain_render import (
    NEUTRAL,
    NO_PREDICTION,
    PALETTE,
    label_colour,
    layout_explanation,
    render_explanation,
    write_explanation,
)


def _parts(name, label, path, size, names):
    """An image cut into len(names) vertical stripes (inside a 1-px border with no segment)."""
    height, width = size
    ids = np.full(size, -1, np.int32)
    edges = np.linspace(1, width - 1, len(names) + 1).astype(int)
    for i in range(len(names)):
        ids[1:height - 1, edges[i]:edges[i + 1]] = i
    segments = Segments(ids, list(names), "cosegment")
    rng = np.random.default_rng(len(name))
    return ImageParts(name, label, str(path), size, segments, rng.normal(size=(len(names), 8)), segments.centroids())


def _match(query, q, rank, other, s, similarity=0.9):
    return Match(q, rank, s, similarity, tuple(map(float, query.centroids[q])), tuple(map(float, other.centroids[s])),
                 query.segments.names[q], other.segments.names[s])


@pytest.fixture
def explanation(samples):
    birds = samples / "birds"
    query = _parts("query", "", birds / "robin.jpg", (120, 160), ["part 1", "part 2", ""])
    crow = _parts("crow.png", "crow", birds / "crow.png", (90, 90), ["part 1", "part 2", "part 3"])
    lark = _parts("lark.png", "lark", birds / "lark.png", (100, 80), ["part 2", "part 1"])
    matches = [_match(query, 0, 0, crow, 0), _match(query, 1, 1, lark, 1),  # 2nd: labels disagree
               _match(query, 2, 0, crow, 2, 0.5)]  # unlabelled query segment: never label-consistent
    return Explanation(query, [crow, lark], [0.8, 0.7], matches, "cosegment")


def _zero(explanation):
    return Explanation(explanation.query, explanation.prototypes, explanation.retrieval, [], "cosegment")


def test_picture_is_rgb_uint8_with_query_left_and_prototypes_stacked_right(explanation):
    layout = layout_explanation(explanation, max_side=200)
    picture = render_explanation(explanation, max_side=200)
    assert picture.dtype == np.uint8 and picture.shape == (*layout.size, 3)
    query, (first, second) = layout.query, layout.prototypes
    assert query.width == 200 and query.height == 150  # 160 x 120 photo, longer side 200
    assert first.x0 == second.x0 > query.x0 + query.width and second.y0 > first.y0 + first.height
    assert max(first.width, first.height) == max(second.width, second.height) == 100
    assert first.title.startswith("#1 crow") and "0.800" in first.title and second.title.startswith("#2 lark")
    for panel in (query, first, second):
        assert panel.y0 + panel.height <= layout.size[0] and panel.x0 + panel.width <= layout.size[1]


def test_panel_maps_pixel_index_coordinates(explanation):
    panel = layout_explanation(explanation, max_side=320).query  # 160 x 120 photo drawn at 320 x 240: scale 2
    np.testing.assert_allclose(panel.to_canvas([[0, 0], [159, 119]]),
                               [[panel.x0 + 0.5, panel.y0 + 0.5], [panel.x0 + 318.5, panel.y0 + 238.5]])


def test_one_line_per_kept_match_with_the_query_label_colour(explanation):
    for flag, expected in ((False, 3), (True, 1)):
        layout = layout_explanation(explanation, label_consistent=flag)
        kept = explanation.kept(flag)
        assert len(kept) == expected and len(layout.lines) == expected
        for line, match in zip(layout.lines, kept, strict=True):
            assert line.colour == label_colour(match.query_label) and line.rank == match.prototype
            start = layout.query.to_canvas(match.query_xy)[0]
            end = layout.prototypes[match.prototype].to_canvas(match.prototype_xy)[0]
            np.testing.assert_allclose([line.start, line.end], [start, end])


def test_lines_are_drawn_in_their_colour(explanation):
    layout = layout_explanation(explanation)
    picture = render_explanation(explanation, layout=layout)
    for line in layout.lines:
        x, y = (np.asarray(line.start) + np.asarray(line.end)) / 2  # midway: in the gap between the columns
        patch = picture[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].reshape(-1, 3).astype(int)
        assert np.abs(patch - np.array(line.colour)).sum(axis=1).min() <= 6, (line, patch)


def test_label_filter_changes_the_vote_drawn(explanation):
    assert layout_explanation(explanation).message == "prediction: crow (2/3 matches)"
    assert layout_explanation(explanation, label_consistent=True).message == "prediction: crow (1/1 matches)"


def test_zero_matches_render_the_no_prediction_state(explanation):
    zero = _zero(explanation)
    layout = layout_explanation(zero)
    assert layout.lines == [] and layout.message == NO_PREDICTION
    picture = render_explanation(zero)
    assert picture.shape == (*layout.size, 3) and picture.dtype == np.uint8
    # the label filter removing every match is the same state
    only_unlabelled = Explanation(explanation.query, explanation.prototypes, explanation.retrieval,
                                  explanation.matches[2:], "cosegment", label_consistent=True)
    assert layout_explanation(only_unlabelled).message == NO_PREDICTION
    render_explanation(only_unlabelled)


def test_no_prototypes_at_all_renders(explanation):
    alone = Explanation(explanation.query, [], [], [], "cosegment")
    picture = render_explanation(alone)
    assert picture.ndim == 3 and layout_explanation(alone).prototypes == []


def test_pixel_mode_draws_the_correspondences_instead(explanation):
    pairs = [Correspondence([[10, 20], [100, 60]], [[5, 5], [50, 60]], [0.9, 0.8], [0.5, 0.4]),
             Correspondence([[30, 30]], [[40, 40]], [0.7], [0.3])]
    pixel = Explanation(explanation.query, explanation.prototypes, explanation.retrieval, explanation.matches,
                        "cosegment", correspondences=pairs)
    layout = layout_explanation(pixel)
    assert layout.mode == "pixels" and [line.rank for line in layout.lines] == [0, 0, 1]
    assert [line.label for line in layout.lines] == explanation.query.part_at([[10, 20], [100, 60], [30, 30]])
    assert render_explanation(pixel).dtype == np.uint8


def test_part_colours_are_fixed_by_label_name():
    assert [label_colour(f"part {i}") for i in range(1, 13)] == list(PALETTE)
    assert label_colour("") == NEUTRAL
    assert label_colour("left wing") == label_colour("left wing") in PALETTE
    assert label_colour("part 13") == PALETTE[0]


def test_segments_are_tinted_by_label(explanation, tmp_path):
    layout = layout_explanation(explanation, max_side=160)  # query at its own size: 160 x 120
    picture = render_explanation(explanation, max_side=160, images={"query": np.zeros((120, 160, 3), np.uint8)})
    panel = layout.query
    inside = picture[panel.y0 + 15, panel.x0 + 20]  # segment 0, "part 1", over black: 0.42 of its colour
    np.testing.assert_allclose(inside, 0.42 * np.array(label_colour("part 1")), atol=1.5)
    unlabelled = picture[panel.y0 + 15, panel.x0 + 150]
    np.testing.assert_allclose(unlabelled, 0.25 * np.array(NEUTRAL), atol=1.5)


def test_missing_photos_are_placeholders(explanation, tmp_path):
    gone = Explanation(_parts("query", "", tmp_path / "gone.jpg", (50, 50), ["part 1"]), explanation.prototypes,
                       explanation.retrieval, [], "cosegment")
    assert render_explanation(gone).dtype == np.uint8


def test_write_explanation_writes_png_and_json(explanation, tmp_path):
    png, js = write_explanation(explanation, tmp_path / "out", label_consistent=True)
    assert png.name == "robin.explanation.png" and js.name == "robin.explanation.json"
    picture = cv2.imread(str(png))
    assert picture.shape == (*layout_explanation(explanation, label_consistent=True).size, 3)
    data = json.loads(js.read_text())
    assert data["schema"] == "protolens.explanation/1" and data["picture"] == png.name
    assert data["label_consistent"] is True and len(data["matches"]) == 1
    assert data["vote"]["prediction"] == "crow" and data["vote"]["total"] == 1
    assert not list((tmp_path / "out").glob("*.tmp*"))
