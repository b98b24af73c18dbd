"""Segments: centroids of known masks, SLIC inside a real alpha mask, descriptors and bilinear vs torch."""

from __future__ import annotations

import numpy as np
import pytest

from protolens.core.errors import ParamError
from protolens.core.imageio import read_image, read_mask
from protolens.core.segments import (
    SEGMENT_SOURCES,
    Segments,
    bilinear_matrix,
    cluster_parts,
    object_mask_from_alpha,
    part_location_segments,
    part_map_segments,
    saliency_mask,
    segment_descriptors,
    slic_segments,
)

# ---------------------------------------------------------------- Segments


def test_rectangle_centroid_areas_present_and_mask():
    ids = np.full((40, 60), -1, dtype=np.int32)
    x0, x1, y0, y1 = 7, 30, 5, 16  # inclusive pixel index bounds
    ids[y0 : y1 + 1, x0 : x1 + 1] = 0
    ids[30, 50] = 2  # a one-pixel segment; segment 1 is empty
    segments = Segments(ids=ids, names=["body", "tail", "eye"], source="user")
    centroids = segments.centroids()
    assert centroids.dtype == np.float32 and centroids.shape == (3, 2)
    np.testing.assert_allclose(centroids[0], [(x0 + x1) / 2, (y0 + y1) / 2])
    assert np.isnan(centroids[1]).all()
    np.testing.assert_allclose(centroids[2], [50, 30])  # (x, y) = (col, row)
    assert segments.areas().tolist() == [(x1 - x0 + 1) * (y1 - y0 + 1), 0, 1]
    assert segments.present().tolist() == [0, 2]
    assert segments.count == 3
    assert segments.mask(2).sum() == 1 and segments.mask(2)[30, 50]
    with pytest.raises(ParamError):
        segments.mask(3)


def test_centroid_of_an_irregular_mask_matches_a_loop():
    rng = np.random.default_rng(0)
    ids = rng.integers(-1, 4, (23, 31)).astype(np.int32)
    segments = Segments(ids=ids, names=["a", "b", "c", "d"], source="slic")
    for k in range(4):
        xs, ys = [], []
        for row in range(23):
            for col in range(31):
                if ids[row, col] == k:
                    xs.append(col)
                    ys.append(row)
        np.testing.assert_allclose(segments.centroids()[k], [np.mean(xs), np.mean(ys)], rtol=1e-6)


def test_segments_validation():
    with pytest.raises(ParamError, match="ids span"):
        Segments(ids=np.array([[0, 2]]), names=["a", "b"], source="bank")
    with pytest.raises(ParamError, match="ids span"):
        Segments(ids=np.array([[-2, 0]]), names=["a"], source="bank")
    with pytest.raises(ParamError, match="unknown source"):
        Segments(ids=np.zeros((2, 2), dtype=int), names=["a"], source="magic")
    with pytest.raises(ParamError, match="height, width"):
        Segments(ids=np.zeros(4, dtype=int), names=["a"], source="bank")
    with pytest.raises(ParamError, match="integers"):
        Segments(ids=np.zeros((2, 2)), names=["a"], source="bank")
    assert SEGMENT_SOURCES == ("cosegment", "slic", "bank")
    assert Segments(ids=np.full((2, 2), -1), names=[], source="user").centroids().shape == (0, 2)


def test_object_mask_from_alpha_and_saliency_mask():
    alpha = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert object_mask_from_alpha(alpha).tolist() == [[False, False, True, True]]
    saliency = np.zeros((4, 4), dtype=np.float32)
    saliency[1, 2] = 1.0
    mask = saliency_mask(saliency, (40, 60), mass=0.6)
    assert mask.shape == (40, 60) and mask.dtype == bool
    rows, cols = np.nonzero(mask)
    assert 10 <= rows.mean() <= 20 and 30 <= cols.mean() <= 45  # around token (1, 2)
    import cv2

    up = cv2.resize(saliency, (60, 40), interpolation=cv2.INTER_LINEAR)
    assert up[mask].sum() >= 0.6 * up.sum() - 1e-6
    assert up[mask].min() >= up[~mask].max()
    assert not saliency_mask(np.zeros((3, 3)), (9, 9)).any()
    with pytest.raises(ParamError):
        saliency_mask(saliency, (40, 60), mass=0.0)


# ---------------------------------------------------------------- SLIC on a real photo


@pytest.mark.parametrize("name", ["blackbird.png", "crow.png"])
def test_slic_segments_stay_inside_the_alpha_mask(samples, name):
    path = samples / "birds" / name
    image = read_image(path)
    mask = object_mask_from_alpha(read_mask(path))
    assert 0.05 < mask.mean() < 0.95
    segments = slic_segments(image, mask, n_segments=10)
    assert segments.source == "slic" and segments.ids.shape == mask.shape
    assert (segments.ids[~mask] == -1).all()  # nothing outside the mask
    assert (segments.ids[mask] >= 0).all()  # every object pixel in a segment
    assert 3 <= segments.count <= 20
    assert segments.present().tolist() == list(range(segments.count))  # renumbered consecutively
    assert segments.names == [""] * segments.count
    centroids = segments.centroids()
    for x, y in centroids:
        assert 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]


def test_slic_errors():
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    with pytest.raises(ParamError, match="object mask is empty"):
        slic_segments(image, np.zeros((20, 20), bool))
    with pytest.raises(ParamError, match="names"):
        slic_segments(image, None, n_segments=1, names=["a", "b", "c"])
    with pytest.raises(ParamError, match="shape"):
        slic_segments(image, np.ones((10, 20), bool))


# ---------------------------------------------------------------- part maps and part locations


def test_part_map_segments():
    part_ids = np.array([[0, 1, 2], [3, 7, 1]])
    segments = part_map_segments(part_ids, ["head", "wing", "tail"])
    assert segments.ids.tolist() == [[-1, 0, 1], [2, -1, 0]]
    assert segments.names == ["head", "wing", "tail"] and segments.source == "bank"
    assert part_map_segments(part_ids, ["head", "wing", "tail", "leg"], source="user").areas().tolist() == [
        2,
        1,
        1,
        0,
    ]


def test_part_location_segments_are_a_voronoi_partition_inside_the_mask():
    rng = np.random.default_rng(1)
    mask = rng.random((30, 40)) < 0.7
    points = np.array([[5.0, 5.0], [30.0, 8.0], [20.0, 25.0], [5.0, 5.0]])  # point 3 duplicates point 0
    segments = part_location_segments(mask, points, ["beak", "crown", "belly", "copy"])
    for row in range(30):
        for col in range(40):
            if not mask[row, col]:
                assert segments.ids[row, col] == -1
                continue
            distances = [(col - x) ** 2 + (row - y) ** 2 for x, y in points]
            assert segments.ids[row, col] == distances.index(min(distances))  # ties -> lowest index
    assert segments.areas()[3] == 0 and segments.source == "bank"
    # a pixel equidistant from two points goes to the lower index
    tie = part_location_segments(np.ones((1, 3), bool), np.array([[2.0, 0.0], [0.0, 0.0]]), ["r", "l"])
    assert tie.ids.tolist() == [[1, 0, 0]]
    assert (part_location_segments(mask, np.zeros((0, 2)), []).ids == -1).all()
    with pytest.raises(ParamError):
        part_location_segments(mask, points, ["a"])


# ---------------------------------------------------------------- bilinear matrix and descriptors vs torch


@pytest.mark.parametrize("n_out, n_in", [(64, 16), (64, 55), (7, 3), (5, 11), (4, 1), (1, 4), (9, 9)])
def test_bilinear_matrix_matches_torch(n_out, n_in):
    torch = pytest.importorskip("torch")
    matrix = bilinear_matrix(n_out, n_in)
    assert matrix.shape == (n_out, n_in) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    x = np.random.default_rng(n_out * 100 + n_in).standard_normal((n_in, 3)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None, None], size=(n_out, 3), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(matrix @ x, expected, atol=1e-5)


def _centre_index(n_out: int, n_in: int, index: int) -> int:
    return min(int((index + 0.5) * n_in / n_out), n_in - 1)


def test_segment_descriptors_match_torch_upsampling_and_per_segment_mean():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    rows, cols, dim, height, width, grid = 5, 7, 6, 50, 37, (16, 12)
    features = rng.standard_normal((rows, cols, dim)).astype(np.float32)
    ids = np.full((height, width), -1, dtype=np.int32)
    ids[:25, :20] = 0
    ids[25:, 5:] = 1
    ids[10:40, 30:] = 2
    ids[0, 36] = 3  # one pixel, not under any grid cell centre -> the cell under its centroid
    segments = Segments(ids=ids, names=["a", "b", "c", "d", "empty"], source="user")
    out = segment_descriptors(features, segments, grid)
    assert out.shape == (5, dim) and out.dtype == np.float32

    up = (
        torch.nn.functional.interpolate(
            torch.from_numpy(features).permute(2, 0, 1)[None], size=grid, mode="bilinear", align_corners=False
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )
    sums = np.zeros((5, dim))
    counts = np.zeros(5)
    for gr in range(grid[0]):
        for gc in range(grid[1]):
            k = ids[_centre_index(grid[0], height, gr), _centre_index(grid[1], width, gc)]
            if k >= 0:
                sums[k] += up[gr, gc]
                counts[k] += 1
    assert counts[3] == 0 and counts[:3].min() > 0
    np.testing.assert_allclose(out[:3], sums[:3] / counts[:3, None], atol=1e-5)
    cell = (_centre_index(height, grid[0], 0), _centre_index(width, grid[1], 36))
    np.testing.assert_allclose(out[3], up[cell], atol=1e-5)
    assert (out[4] == 0).all()


def test_segment_descriptors_of_a_constant_field_are_the_constant():
    features = np.tile(np.array([1.0, -2.0, 3.0], dtype=np.float32), (4, 4, 1))
    ids = np.arange(9 * 9).reshape(9, 9) % 3
    out = segment_descriptors(features, Segments(ids=ids, names=["a", "b", "c"], source="slic"), (8, 8))
    np.testing.assert_allclose(out, np.tile([1.0, -2.0, 3.0], (3, 1)), rtol=1e-5)


# ---------------------------------------------------------------- part co-segmentation assignment


def test_cluster_parts_assigns_by_cosine_not_dot_product():
    centroids = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, -1.0]], dtype=np.float32)
    features = np.array(
        [[[1.0, 0.1], [0.2, 1.0], [5.0, 0.3]], [[0.1, -3.0], [1.0, 1.2], [-1.0, -0.1]]], dtype=np.float32
    )
    fg = np.array([[True, True, True], [True, True, False]])
    segments = cluster_parts(features, fg, centroids, (4, 6), ["head", "wing", "tail"])
    assert segments.source == "cosegment" and segments.names == ["head", "wing", "tail"]
    expected = np.full((2, 3), -1)
    for r in range(2):
        for c in range(3):
            if fg[r, c]:
                f = features[r, c] / np.linalg.norm(features[r, c])
                cos = [float(f @ (k / np.linalg.norm(k))) for k in centroids]
                expected[r, c] = cos.index(max(cos))
    assert expected[0, 0] == 0 and float(features[0, 0] @ centroids[1]) > float(features[0, 0] @ centroids[0])
    for row in range(4):
        for col in range(6):
            assert segments.ids[row, col] == expected[_centre_index(4, 2, row), _centre_index(6, 3, col)]
    with pytest.raises(ParamError):
        cluster_parts(features, fg, centroids, (4, 6), ["head"])
    with pytest.raises(ParamError):
        cluster_parts(features, fg[:1], centroids, (4, 6), ["a", "b", "c"])
