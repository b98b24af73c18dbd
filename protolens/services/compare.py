"""The Compare view's figures and export: several results of one photo side by side, with agreement metrics.

Shared by the GUI's Compare view and ``protolens compare``, so both write identical files.

Every metric is computed on one common grid (:func:`compare_grid`): the photo's aspect ratio, longer side at
most :data:`COMPARE_MAX_SIDE` cells. Each result's heatmap is resampled to it (:meth:`Heatmap.resized`:
area-averaging when shrinking, bilinear when enlarging), so results of different native resolutions (a ViT
patch grid, a full-resolution colour index) compare cell by cell. Arrays are (rows, cols), row 0 at the top.

Files written by :func:`export_compare` (atomically)
----------------------------------------------------
``<stem>.compare.png``
    RGB uint8: the panes row-major (then the difference pane, if any), each the photo blended with its
    colour-mapped heatmap, the mask outline in cyan and a title band on top.
``<stem>.compare.json``
    Schema ``protolens.compare/1`` (:func:`compare_document`): the photo, the grid, each pane's provenance
    and thresholds, the pairwise agreement (IoU of the masks, Pearson and Spearman correlation of the maps)
    and the difference pane. Pane indices in the JSON and in the PNG titles are 1-based; the Python API
    takes 0-based indices into the list of panes.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.stats import rankdata

from protolens.core.atomic import write_json_atomic, write_png_atomic
from protolens.core.errors import ParamError, StoreWriteError
from protolens.core.records import ImageMeta, ResultRecord, utc_now
from protolens.core.thresholds import heatmap_threshold
from protolens.core.types import fit_grid
from protolens.services.results import FoundResult
from protolens.services.segment import LoadedImage

COMPARE_SCHEMA = "protolens.compare/1"
COMPARE_MAX_SIDE = 512
"""Longer side (cells) of the common grid every metric is computed on."""

DIFFERENCE_MODES = ("map", "xor")
_CV2_COLORMAPS = ("autumn", "bone", "jet", "winter", "rainbow", "ocean", "summer", "spring", "cool", "hsv", "pink",
                  "hot", "parula", "magma", "inferno", "plasma", "viridis", "cividis", "twilight",
                  "twilight_shifted", "turbo", "deepgreen")
COLORMAPS: tuple[str, ...] = tuple(n for n in _CV2_COLORMAPS if hasattr(cv2, f"COLORMAP_{n.upper()}"))
"""Colormap names :func:`render_pane` accepts (OpenCV's ``COLORMAP_*``, lower case)."""

OUTLINE_RGB = (0, 255, 255)  # cyan: the mask outline
A_ONLY_RGB = (255, 0, 255)  # magenta: XOR cells in A only
B_ONLY_RGB = (0, 255, 0)  # green: XOR cells in B only
BACKGROUND_RGB = (24, 24, 24)
_DIVERGING = np.array([[33, 102, 172], [247, 247, 247], [178, 24, 43]], dtype=np.float64)  # blue, white, red
_DIVERGING_LUT = np.round(np.stack([np.interp(np.linspace(-1.0, 1.0, 256), [-1.0, 0.0, 1.0], _DIVERGING[:, c])
                                    for c in range(3)], axis=1)).astype(np.uint8)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_LINES = 2


# --- the common grid and the panes -----------------------------------------------------------------------


def compare_grid(image_size: tuple[int, int], max_side: int = COMPARE_MAX_SIDE) -> tuple[int, int]:
    """The common (rows, cols) grid of a photo of ``image_size`` = (height, width) pixels.

    The photo's aspect ratio with the longer side ``max_side`` cells, never larger than the photo itself;
    each side at least 1 (:func:`protolens.core.types.fit_grid`). Raises ``ValueError`` for a non-positive size.
    """
    return fit_grid(image_size, max_side)


@dataclass
class PaneData:
    """One result on the common grid, ready to measure and draw.

    Attributes
    ----------
    key : str
        The result key (16 hex digits), or any label for maps that are not stored results.
    title : str
        Human title (:meth:`ResultRecord.title`).
    values : numpy.ndarray
        (rows, cols) float32 in [0, 1]: the heatmap resampled to the common grid.
    threshold : float
        The value threshold applied to ``values``: the mask is ``values >= threshold``.
    semantics : str
        "value" or "mass": how ``requested_threshold`` is read.
    record : ResultRecord or None
        Provenance of the result (None for maps that are not stored results).
    requested_threshold : float or None
        The threshold as chosen, read with ``semantics`` (a mass fraction for "mass"); None = ``threshold``.
    score : numpy.ndarray or None
        (rows, cols) float32 non-negative masses on the grid for mass thresholds (None: ``values`` are used).
    """

    key: str
    title: str
    values: np.ndarray
    threshold: float
    semantics: str = "value"
    record: ResultRecord | None = None
    requested_threshold: float | None = None
    score: np.ndarray | None = None

    @property
    def level(self) -> float:
        """The threshold as chosen (a mass fraction for mass semantics, else the value threshold)."""
        return float(self.threshold if self.requested_threshold is None else self.requested_threshold)


def _resample(array: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(any rows, cols) float array to ``grid`` (area-averaging when shrinking, else bilinear); float32."""
    array = np.asarray(array, dtype=np.float32)
    if array.shape == tuple(grid):
        return array.copy()
    shrink = grid[0] < array.shape[0] and grid[1] < array.shape[1]
    return cv2.resize(array, (grid[1], grid[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def pane_data(found: FoundResult, grid: tuple[int, int], *, threshold: float | None = None,
              semantics: str | None = None) -> PaneData:
    """A result on the common ``grid`` (rows, cols) with its value threshold.

    ``threshold`` (in [0, 1]) and ``semantics`` ("value" or "mass") default to the result's own. A mass
    threshold is realised on the resampled map (:func:`protolens.core.thresholds.heatmap_threshold`, DINO
    arXiv 2104.14294 Sec. 4.2), with the resampled raw scores as masses when the result has them; so the
    pane's value threshold can differ slightly from the one saved for the full-resolution mask.

    Raises ``ValueError`` for unknown semantics.
    """
    record = found.record
    semantics = semantics or record.threshold_semantics
    level = float(record.threshold if threshold is None else threshold)
    values = np.clip(_resample(found.heatmap.resized(*grid), grid), 0.0, 1.0)
    score = None
    if found.score is not None and np.ndim(found.score) == 2:
        score = np.clip(_resample(found.score, grid), 0.0, None)
    pane = PaneData(found.key, record.title(), values, level, semantics, record, level, score)
    return pane_with_threshold(pane, level, semantics)


def pane_with_threshold(pane: PaneData, threshold: float, semantics: str | None = None) -> PaneData:
    """A copy of ``pane`` thresholded at ``threshold`` read with ``semantics`` (default: the pane's).

    For live threshold moves: the map and its correlations do not change, only the mask (and so the IoU).
    Raises ``ValueError`` for unknown semantics.
    """
    semantics = semantics or pane.semantics
    value = heatmap_threshold(pane.values, float(threshold), semantics, pane.score)
    return dataclasses.replace(pane, threshold=float(value), semantics=semantics,
                               requested_threshold=float(threshold))


def mask(pane: PaneData) -> np.ndarray:
    """The pane's mask: (rows, cols) bool, ``values >= threshold``."""
    return np.asarray(pane.values) >= pane.threshold


# --- agreement -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How two results agree on the common grid.

    ``iou``: intersection over union of the masks in [0, 1] (1.0 when both masks are empty).
    ``pearson`` / ``spearman``: linear / rank correlation of the maps in [-1, 1] over every cell; NaN when a
    map is constant (a correlation is undefined then). :meth:`as_json` writes NaN as null.
    """

    iou: float
    pearson: float
    spearman: float

    def as_json(self) -> dict[str, float | None]:
        """``{"iou", "pearson", "spearman"}`` with NaN as None (JSON null)."""
        return {name: None if math.isnan(v) else float(v)
                for name, v in (("iou", self.iou), ("pearson", self.pearson), ("spearman", self.spearman))}


def iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Intersection over union of two (rows, cols) bool masks; 1.0 when both are empty.

    Raises ``ValueError`` if the shapes differ.
    """
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    if denominator <= 0.0 or not math.isfinite(denominator):
        return math.nan
    return float(np.clip(float(x @ y) / denominator, -1.0, 1.0))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks of the cells (ties share their mean rank), as ``scipy.stats.spearmanr`` ranks them."""
    return rankdata(np.asarray(values, dtype=np.float64).ravel(), method="average")


def map_correlations(a_values: np.ndarray, b_values: np.ndarray) -> tuple[float, float]:
    """(pearson, spearman) of two (rows, cols) maps over every cell.

    Spearman's rho is Pearson's r of the average ranks (ties share their mean rank), equal to
    ``scipy.stats.spearmanr``. Either is NaN when a map is constant. They do not depend on thresholds: a
    view can cache them and recompute only :func:`iou` when a threshold moves.
    Raises ``ValueError`` if the shapes differ.
    """
    if np.shape(a_values) != np.shape(b_values):
        raise ValueError(f"map shapes differ: {np.shape(a_values)} vs {np.shape(b_values)}")
    return _pearson(a_values, b_values), _pearson(_ranks(a_values), _ranks(b_values))


def rank_map(values: np.ndarray) -> np.ndarray:
    """The average ranks of a map's cells (ties share their mean rank): (rows * cols,) float64.

    Ranking once per map and then calling :func:`ranked_correlations` is what a view does to keep the
    Spearman figure cheap when results are compared pair by pair (ranking is the costly part).
    """
    return _ranks(values)


def ranked_correlations(a_values: np.ndarray, b_values: np.ndarray, a_ranks: np.ndarray,
                        b_ranks: np.ndarray) -> tuple[float, float]:
    """(pearson, spearman) as :func:`map_correlations`, from ranks precomputed with :func:`rank_map`."""
    if np.shape(a_values) != np.shape(b_values):
        raise ValueError(f"map shapes differ: {np.shape(a_values)} vs {np.shape(b_values)}")
    return _pearson(a_values, b_values), _pearson(a_ranks, b_ranks)


def agreement(a: PaneData, b: PaneData) -> Agreement:
    """IoU of the masks and correlations of the maps of two panes on the same grid (see :class:`Agreement`)."""
    pearson, spearman = map_correlations(a.values, b.values)
    return Agreement(iou(mask(a), mask(b)), pearson, spearman)


def pairwise_agreement(panes: list[PaneData]) -> dict[tuple[int, int], Agreement]:
    """:func:`agreement` of every pair (i, j), i < j (0-based), ranking each map once."""
    ranks = [_ranks(p.values) for p in panes]
    masks = [mask(p) for p in panes]
    out = {}
    for i in range(len(panes)):
        for j in range(i + 1, len(panes)):
            out[(i, j)] = Agreement(iou(masks[i], masks[j]), _pearson(panes[i].values, panes[j].values),
                                    _pearson(ranks[i], ranks[j]))
    return out


def difference_map(a: PaneData, b: PaneData) -> np.ndarray:
    """``a.values - b.values``: (rows, cols) float32 in [-1, 1] (positive where A is higher)."""
    return np.clip(np.asarray(a.values, np.float32) - np.asarray(b.values, np.float32), -1.0, 1.0)


def difference_scale(a: PaneData, b: PaneData) -> float:
    """The half-range the difference colormap spans: the 99th percentile of ``|a - b|`` rounded up to a
    hundredth, within [0.01, 1], so small differences between similar results stay visible (the title and
    the JSON state it)."""
    spread = float(np.percentile(np.abs(difference_map(a, b)), 99)) if a.values.size else 0.0
    return float(np.clip(np.ceil(spread * 100.0 - 1e-3) / 100.0, 0.01, 1.0))


def xor_mask(a: PaneData, b: PaneData) -> np.ndarray:
    """Cells in exactly one of the two masks: (rows, cols) bool."""
    return mask(a) ^ mask(b)


# --- rendering -----------------------------------------------------------------------------------------------


def shrink_photo(rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The (height, width, 3) uint8 photo resampled to the (rows, cols) grid (area-averaging when shrinking)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    if rgb.shape[:2] == tuple(grid):
        return rgb
    shrink = grid[0] < rgb.shape[0] and grid[1] < rgb.shape[1]
    return cv2.resize(rgb, (grid[1], grid[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def colorize(values: np.ndarray, colormap: str = "inferno") -> np.ndarray:
    """(rows, cols) values in [0, 1] as (rows, cols, 3) uint8 RGB through an OpenCV colormap.

    Raises :class:`ParamError` for a colormap not in :data:`COLORMAPS`.
    """
    if colormap not in COLORMAPS:
        raise ParamError(f"unknown colormap {colormap!r}; one of {', '.join(COLORMAPS)}")
    levels = np.clip(np.asarray(values, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(levels, getattr(cv2, f"COLORMAP_{colormap.upper()}"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def diverging(difference: np.ndarray) -> np.ndarray:
    """(rows, cols) values in [-1, 1] as RGB uint8: blue (-1) through white (0) to red (+1), linear."""
    index = np.clip(np.round((np.asarray(difference, np.float64) + 1.0) * 127.5), 0, 255).astype(np.intp)
    return _DIVERGING_LUT[index]


def _blend(photo: np.ndarray, overlay: np.ndarray, opacity: float) -> np.ndarray:
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(photo, 1.0 - opacity, overlay, opacity, 0.0)


def _outline(canvas: np.ndarray, cells: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Draw the outline (holes included) of the (rows, cols) bool ``cells`` on ``canvas`` in place."""
    contours, _ = cv2.findContours(cells.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, color, 1, lineType=cv2.LINE_8)
    return canvas


def _ascii(text: str) -> str:
    """Title text OpenCV's Hershey fonts can draw (ASCII only): dots and dashes spelled out."""
    for old, new in (("·", "-"), ("−", "-"), ("–", "-"), ("—", "-"), ("…", "...")):
        text = text.replace(old, new)
    return unicodedata.normalize("NFKD", text).encode("ascii", "replace").decode("ascii")


def _font(width: int) -> tuple[float, int, int]:
    """(font scale, thickness, line height px) for a band ``width`` pixels wide."""
    scale = 0.4 if width < 360 else 0.5
    (_, height), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
    return scale, 1, height + baseline + 4


def _text_width(text: str, scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _truncate(text: str, width: int, scale: float, thickness: int) -> str:
    if _text_width(text, scale, thickness) <= width:
        return text
    while text and _text_width(text + "...", scale, thickness) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def _wrap(text: str, width: int, scale: float, thickness: int) -> list[str]:
    lines: list[str] = [""]
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines[-1] else word
        if lines[-1] and _text_width(candidate, scale, thickness) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def fit_title(title: str, width: int, max_lines: int = _TITLE_LINES) -> list[str]:
    """``title`` as at most ``max_lines`` lines ``width`` px wide, ASCII only (what OpenCV can draw).

    A title with ``\n`` keeps one line per part (the first ``max_lines`` parts); otherwise it is wrapped at
    spaces. A line that does not fit is truncated with "...".
    """
    scale, thickness, _ = _font(width)
    parts = _ascii(title).split("\n")
    if len(parts) == 1:
        lines = _wrap(parts[0], width, scale, thickness)
        lines = lines[:max_lines - 1] + [" ".join(lines[max_lines - 1:])] if len(lines) > max_lines else lines
    else:
        lines = parts[:max_lines]
    return [_truncate(line, width, scale, thickness) for line in lines]


def title_band(title: str, width: int) -> np.ndarray:
    """A (band height, width, 3) uint8 RGB band with ``title`` in white (:func:`fit_title`, two lines).

    The band's height depends only on ``width``, so panes of one grid line up.
    """
    scale, thickness, line_height = _font(width)
    band = np.empty((_TITLE_LINES * line_height + 4, width, 3), np.uint8)
    band[:] = BACKGROUND_RGB
    for i, line in enumerate(fit_title(title, max(1, width - 8))):
        baseline_y = 2 + (i + 1) * line_height - 6
        cv2.putText(band, line, (4, baseline_y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return band


def render_pane(photo_rgb: np.ndarray, pane: PaneData, *, colormap: str = "inferno", opacity: float = 0.5,
                title: str | None = None) -> np.ndarray:
    """One pane: the photo blended with the colour-mapped map, the mask outline (cyan) and a title band.

    Parameters
    ----------
    photo_rgb : numpy.ndarray
        (rows, cols, 3) uint8 RGB, the photo on the pane's grid (:func:`shrink_photo`; resampled if not).
    pane : PaneData
        The map and threshold to draw.
    colormap : str
        One of :data:`COLORMAPS`.
    opacity : float
        Weight of the colour-mapped map in [0, 1] (0: photo only).
    title : str, optional
        Title text (``\\n`` starts the second line); default ``pane.title``.

    Returns
    -------
    numpy.ndarray
        (band + rows, cols, 3) uint8 RGB, the title band on top.

    Raises
    ------
    ParamError
        Unknown colormap.
    """
    photo = shrink_photo(photo_rgb, pane.values.shape)
    canvas = _blend(photo, colorize(pane.values, colormap), opacity)
    _outline(canvas, mask(pane), OUTLINE_RGB)
    return np.vstack([title_band(pane.title if title is None else title, canvas.shape[1]), canvas])


def render_difference(photo_rgb: np.ndarray, a: PaneData, b: PaneData, *, mode: str = "map",
                      opacity: float = 0.5, title: str | None = None, scale: float | None = None) -> np.ndarray:
    """The difference pane of ``a`` and ``b``, same layout as :func:`render_pane`.

    The photo is shown in grey. ``mode="map"``: ``a - b`` (:func:`difference_map`) through a blue (-scale,
    B higher) - white (0) - red (+scale, A higher) colormap, saturating beyond; ``scale`` defaults to
    :func:`difference_scale`. ``mode="xor"``: the cells in A's mask only in
    magenta and in B's mask only in green (:func:`xor_mask`). Either is blended at ``max(opacity, 0.6)``. Returns (band + rows, cols, 3) uint8 RGB. Raises :class:`ParamError` for an unknown mode.
    """
    photo = cv2.cvtColor(cv2.cvtColor(shrink_photo(photo_rgb, a.values.shape), cv2.COLOR_RGB2GRAY),
                         cv2.COLOR_GRAY2RGB)  # grey, so the difference colours read on any photo
    if mode == "map":
        scale = difference_scale(a, b) if scale is None else float(scale)
        canvas = _blend(photo, diverging(difference_map(a, b) / max(scale, 1e-6)), max(float(opacity), 0.6))
        default = f"A - B (scale +-{scale:.2f})\nred: A higher, blue: B higher"
    elif mode == "xor":
        mask_a, mask_b = mask(a), mask(b)
        overlay = photo.copy()
        overlay[mask_a & ~mask_b] = A_ONLY_RGB
        overlay[mask_b & ~mask_a] = B_ONLY_RGB
        canvas = _blend(photo, overlay, max(float(opacity), 0.6))
        default = "A xor B (magenta: A only, green: B only)"
    else:
        raise ParamError(f"difference mode must be one of {', '.join(DIFFERENCE_MODES)}, not {mode!r}")
    return np.vstack([title_band(default if title is None else title, canvas.shape[1]), canvas])


def render_grid(tiles: list[np.ndarray], columns: int, *, gap: int = 4) -> np.ndarray:
    """Tiles laid out row-major in ``columns`` columns, ``gap`` px apart on a dark background.

    Each (h, w, 3) uint8 tile sits at the top-left of a cell as large as the largest tile. Returns
    (rows * H + (rows - 1) * gap, columns' * W + (columns' - 1) * gap, 3) uint8 RGB, where H, W are the
    largest tile's sides, rows = ceil(n / columns') and columns' = min(columns, n).
    Raises ``ValueError`` for no tiles or columns < 1.
    """
    if not tiles or columns < 1:
        raise ValueError(f"need at least one tile and one column (got {len(tiles)} tiles, {columns} columns)")
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    cell_h, cell_w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    out = np.empty((rows * cell_h + (rows - 1) * gap, columns * cell_w + (columns - 1) * gap, 3), np.uint8)
    out[:] = BACKGROUND_RGB
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        y, x = row * (cell_h + gap), col * (cell_w + gap)
        out[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return out


def columns_for(n: int) -> int:
    """Grid columns for ``n`` tiles: n (for n <= 2), 2 (n <= 4), else 3 (up to a 3 x 3 grid)."""
    return max(1, n) if n <= 2 else 2 if n <= 4 else 3


# --- the export ----------------------------------------------------------------------------------------------


def pane_title(index: int, pane: PaneData) -> str:
    """The exported title of pane ``index`` (0-based): "1. <title>" then key and threshold on a second line."""
    if pane.semantics == "mass":
        threshold = f"mass {pane.level:.2f} (value {pane.threshold:.3f})"
    else:
        threshold = f"t = {pane.threshold:.3f}"
    return f"{index + 1}. {pane.title}\n{pane.key[:8]}  {threshold}"


def _check_difference(panes: list[PaneData], difference: tuple[int, int] | None, mode: str) -> None:
    if mode not in DIFFERENCE_MODES:
        raise ParamError(f"difference mode must be one of {', '.join(DIFFERENCE_MODES)}, not {mode!r}")
    if difference is None:
        return
    i, j = difference
    if i == j or not (0 <= i < len(panes) and 0 <= j < len(panes)):
        raise ParamError(f"difference needs two different panes among 1..{len(panes)}, got {i + 1},{j + 1}")


def compare_document(photo_meta: ImageMeta, panes: list[PaneData], difference: tuple[int, int] | None = None,
                     difference_mode: str = "map") -> dict[str, Any]:
    """The ``protolens.compare/1`` JSON document of a comparison (JSON-serialisable, NaN written as null).

    Keys: ``schema``; ``image`` (path, sha256, height, width); ``grid`` (rows, cols); ``panes``
    [{index (1-based), key, title, backend, weights_sha256, params, threshold (as chosen: a mass fraction for
    mass semantics), semantics, value_threshold (applied to the grid map)}]; ``agreement`` [{a, b (1-based),
    iou, pearson, spearman}] for every pair a < b; ``difference`` {a, b (1-based), mode, scale (map
    mode: the colormap's half-range, :func:`difference_scale`)} or null; ``created`` (UTC ISO 8601). ``difference`` is given 0-based. Raises :class:`ParamError` for a bad difference.
    """
    _check_difference(panes, difference, difference_mode)
    rows, cols = panes[0].values.shape if panes else (0, 0)
    entries = []
    for index, pane in enumerate(panes):
        record = pane.record
        entries.append({"index": index + 1, "key": pane.key, "title": pane.title,
                        "backend": None if record is None else f"{record.backend_id}@{record.backend_version}",
                        "weights_sha256": None if record is None else record.weights_sha256,
                        "params": {} if record is None else dict(record.params),
                        "threshold": pane.level, "semantics": pane.semantics,
                        "value_threshold": float(pane.threshold)})
    pairs = [{"a": i + 1, "b": j + 1, **value.as_json()} for (i, j), value in pairwise_agreement(panes).items()]
    shown = None
    if difference is not None:
        i, j = difference
        shown = {"a": i + 1, "b": j + 1, "mode": difference_mode}
        if difference_mode == "map":
            shown["scale"] = difference_scale(panes[i], panes[j])
    return {"schema": COMPARE_SCHEMA, "image": photo_meta.to_json(), "grid": {"rows": int(rows), "cols": int(cols)},
            "panes": entries, "agreement": pairs,
            "difference": shown,
            "created": utc_now()}


def compare_tiles(photo_rgb: np.ndarray, panes: list[PaneData], *, difference: tuple[int, int] | None = None,
                  difference_mode: str = "map", colormap: str = "inferno", opacity: float = 0.5) -> list[np.ndarray]:
    """The exported tiles: each pane (:func:`render_pane` with :func:`pane_title`), then the difference pane.

    ``photo_rgb`` is (height, width, 3) uint8 at any size (shrunk to the grid here); ``difference`` 0-based.
    """
    _check_difference(panes, difference, difference_mode)
    photo = shrink_photo(photo_rgb, panes[0].values.shape)
    tiles = [render_pane(photo, p, colormap=colormap, opacity=opacity, title=pane_title(i, p))
             for i, p in enumerate(panes)]
    if difference is not None:
        i, j = difference
        if difference_mode == "map":
            title = (f"{i + 1} - {j + 1} (scale +-{difference_scale(panes[i], panes[j]):.2f})\n"
                     f"red: {i + 1} higher, blue: {j + 1} higher")
        else:
            title = f"{i + 1} xor {j + 1}\nmagenta: {i + 1} only, green: {j + 1} only"
        tiles.append(render_difference(photo, panes[i], panes[j], mode=difference_mode, opacity=opacity,
                                       title=title))
    return tiles


def export_compare(out_dir: str | Path, image: LoadedImage, panes: list[PaneData], *, columns: int | None = None,
                   difference: tuple[int, int] | None = None, difference_mode: str = "map",
                   colormap: str = "inferno", opacity: float = 0.5, stem: str | None = None) -> list[Path]:
    """Write ``<stem>.compare.png`` (the grid of :func:`compare_tiles`) and ``<stem>.compare.json``
    (:func:`compare_document`, plus a ``render`` section) into ``out_dir``, atomically.

    ``stem`` defaults to the photo's name without extension; ``columns`` to :func:`columns_for` of the tiles;
    ``difference`` is a 0-based pair of pane indices. Returns [png path, json path].

    Raises
    ------
    ParamError
        No panes, panes on different grids, a bad difference pair or mode, an unknown colormap.
    StoreWriteError
        ``out_dir`` is a file or cannot be written.
    """
    if not panes:
        raise ParamError("nothing to compare: give at least one result")
    if len({p.values.shape for p in panes}) > 1:
        raise ParamError("the panes are not on one grid (use compare_grid and pane_data)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreWriteError(f"{out_dir}: is a file, not a folder")
    tiles = compare_tiles(image.rgb, panes, difference=difference, difference_mode=difference_mode,
                          colormap=colormap, opacity=opacity)
    columns = columns or columns_for(len(tiles))
    document = compare_document(image.meta, panes, difference, difference_mode)
    document["render"] = {"colormap": colormap, "opacity": float(opacity), "columns": int(columns)}
    stem = stem or image.meta.path.stem
    png, js = out_dir / f"{stem}.compare.png", out_dir / f"{stem}.compare.json"
    write_png_atomic(png, render_grid(tiles, columns))
    write_json_atomic(js, document)
    return [png, js]

