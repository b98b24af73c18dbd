"""K x K grid assembly of prototype-guided zero-shot segmentation (arXiv 2512.19957, step 7).

For each crop kept by the received-attention mask (step 6), the K x K neighbourhood of crops centred on it
(K odd) is stitched into one (K*crop) x (K*crop) image and resized to the classifier input. Cells outside the
crop grid are zeros *in normalised space* (the mean colour after mean/std normalisation, i.e. mean grey).
Kept crops overlap; there is no NMS.

Images here are (3, height, width) float tensors already normalised with the classifier's mean and std, row =
y, col = x, origin top-left; the photo has been resized to exactly (rows*crop, cols*crop) (step 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def check_grid_size(k: int) -> None:
    """Raise ``ValueError`` unless ``k`` is an odd integer >= 1 (the crop must be the neighbourhood's centre)."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"the assembly grid K must be odd and >= 1, not {k}")


def assemble_neighbourhoods(image: torch.Tensor | np.ndarray, cells: Sequence[tuple[int, int]], *, crop: int,
                            k: int) -> torch.Tensor:
    """Stitch the K x K neighbourhood of each cell (arXiv 2512.19957, step 7), before resizing.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        (3, rows*crop, cols*crop) float, normalised (mean/std) resized photo.
    cells : sequence of (int, int)
        (row, col) of the centre crops, each inside the grid.
    crop : int
        Crop side in pixels.
    k : int
        Odd neighbourhood side in crops.

    Returns
    -------
    torch.Tensor
        (len(cells), 3, k*crop, k*crop) of ``image``'s dtype, on its device. Cell (i, j) of output n is grid cell
        (row - k//2 + i, col - k//2 + j) of the photo, or zeros where that lies outside the grid.

    Raises
    ------
    ValueError
        ``k`` even or < 1, an image size that is not a multiple of ``crop``, or a cell outside the grid.
    """
    check_grid_size(k)
    tensor = torch.as_tensor(image)
    channels, height, width = tensor.shape
    if height % crop or width % crop:
        raise ValueError(f"image {height}x{width} is not a whole grid of {crop}-px crops")
    rows, cols = height // crop, width // crop
    half = k // 2
    out = tensor.new_zeros((len(cells), channels, k * crop, k * crop))
    for n, (row, col) in enumerate(cells):
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"cell ({row}, {col}) is outside the {rows}x{cols} grid")
        top, left = row - half, col - half
        r0, r1 = max(top, 0), min(top + k, rows)
        c0, c1 = max(left, 0), min(left + k, cols)
        out[n, :, (r0 - top) * crop:(r1 - top) * crop, (c0 - left) * crop:(c1 - left) * crop] = \
            tensor[:, r0 * crop:r1 * crop, c0 * crop:c1 * crop]
    return out


def resize_square(batch: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, s, s) -> (n, 3, size, size): bilinear, antialiased when shrinking (as a PIL / torchvision resize).

    Returns the input itself when ``s == size``.
    """
    if batch.shape[-1] == size and batch.shape[-2] == size:
        return batch
    return F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=batch.shape[-1] > size)

