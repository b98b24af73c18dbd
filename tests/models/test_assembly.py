"""K x K grid assembly (arXiv 2512.19957, step 7) against a plain numpy re-derivation, borders included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protolens.models.prototype.assembly import assemble_neighbourhoods, resize_square


def reference(image: np.ndarray, row: int, col: int, crop: int, k: int) -> np.ndarray:
    """Cell by cell: neighbour (i, j) is grid cell (row - k//2 + i, col - k//2 + j), zeros outside the grid."""
    channels, height, width = image.shape
    rows, cols = height // crop, width // crop
    out = np.zeros((channels, k * crop, k * crop), image.dtype)
    for i in range(k):
        for j in range(k):
            r, c = row - k // 2 + i, col - k // 2 + j
            if 0 <= r < rows and 0 <= c < cols:
                out[:, i * crop:(i + 1) * crop, j * crop:(j + 1) * crop] = \
                    image[:, r * crop:(r + 1) * crop, c * crop:(c + 1) * crop]
    return out


@pytest.fixture
def image():
    """A non-square 5 x 7 grid of 4-px crops; every value distinct, none zero (zeros only come from padding)."""
    rows, cols, crop = 5, 7, 4
    return (np.arange(3 * rows * crop * cols * crop, dtype=np.float32) + 1).reshape(3, rows * crop, cols * crop)


CELLS = [(0, 0), (0, 6), (4, 0), (4, 6),  # corners
         (0, 3), (2, 0), (4, 3), (2, 6),  # edges
         (2, 3), (1, 1)]  # inside, and one cell from the border


@pytest.mark.parametrize("k", [1, 3, 5])
def test_assembly_matches_the_cell_by_cell_reference(image, k):
    stitched = assemble_neighbourhoods(torch.from_numpy(image), CELLS, crop=4, k=k).numpy()
    assert stitched.shape == (len(CELLS), 3, 4 * k, 4 * k)
    for out, (row, col) in zip(stitched, CELLS, strict=True):
        np.testing.assert_array_equal(out, reference(image, row, col, 4, k))


def test_corner_and_edge_padding_counts(image):
    """K = 5 at the top-left corner: 2 rows and 2 columns of cells are out of bounds (zeros); at a top edge 2 rows."""
    corner, edge = assemble_neighbourhoods(image, [(0, 0), (0, 3)], crop=4, k=5).numpy()
    assert np.all(corner[:, :8] == 0) and np.all(corner[:, :, :8] == 0) and np.all(corner[:, 8:, 8:] != 0)
    assert np.all(edge[:, :8] == 0) and np.all(edge[:, 8:] != 0)
    np.testing.assert_array_equal(corner[:, 8:12, 8:12], image[:, 0:4, 0:4])  # the crop itself is the centre


def test_wider_than_the_grid(image):
    """K = 9 exceeds the 5-row grid: the whole grid sits inside the neighbourhood, the rest is zeros."""
    out = assemble_neighbourhoods(image, [(2, 3)], crop=4, k=9).numpy()[0]
    np.testing.assert_array_equal(out, reference(image, 2, 3, 4, 9))
    np.testing.assert_array_equal(out[:, 8:28, 4:32], image)


def test_bad_inputs_raise(image):
    with pytest.raises(ValueError, match="odd"):
        assemble_neighbourhoods(image, [(0, 0)], crop=4, k=4)
    with pytest.raises(ValueError, match="outside"):
        assemble_neighbourhoods(image, [(5, 0)], crop=4, k=3)
    with pytest.raises(ValueError, match="grid"):
        assemble_neighbourhoods(image[:, :, :-1], [(0, 0)], crop=4, k=3)


def test_batches_equal_the_whole_and_resize_keeps_constants(image):
    """Stitching in batches (as the classifier does, one batch at a time) gives the images of one big call."""
    tensor = torch.from_numpy(image)
    batches = [resize_square(assemble_neighbourhoods(tensor, CELLS[i:i + 4], crop=4, k=3), 6) for i in (0, 4, 8)]
    assert [b.shape[0] for b in batches] == [4, 4, 2] and all(b.shape[1:] == (3, 6, 6) for b in batches)
    whole = resize_square(assemble_neighbourhoods(image, CELLS, crop=4, k=3), 6)
    torch.testing.assert_close(torch.cat(batches), whole)
    # a constant image stays constant through the antialiased resize
    flat = torch.full((2, 3, 12, 12), 0.5)
    torch.testing.assert_close(resize_square(flat, 5), torch.full((2, 3, 5, 5), 0.5))


def test_classify_cells_feeds_the_stitched_neighbourhoods():
    """Through the classifier path: photo resized to the grid, normalised, stitched (zeros outside), batched."""
    from protolens.core.jobs import CancelToken
    from protolens.models.prototype.classifier import ClassifierSpec, classify_cells
    from protolens.models.vit.engine import resize_to_crop_grid
    from protolens.models.vit.preprocess import normalise
    from protolens.services.segment import drain

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 2)

    spec = ClassifierSpec("recorder", 2, 24, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    photo = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    cells = [(0, 0), (2, 4), (3, 6)]
    probabilities = drain(classify_cells(Recorder(), spec, photo, grid=(4, 7), crop=8, k=3, cells=cells,
                                         batch_size=2, device="cpu", dtype="float32", cancel=CancelToken()))
    np.testing.assert_allclose(probabilities, 0.5)  # softmax of equal logits
    assert [len(x) for x in seen] == [2, 1]
    small = normalise(resize_to_crop_grid(photo, 4, 7, 8), spec.mean, spec.std)
    for got, (row, col) in zip(torch.cat(seen), cells, strict=True):
        np.testing.assert_allclose(got.numpy(), reference(small, row, col, 8, 3), atol=1e-6)
