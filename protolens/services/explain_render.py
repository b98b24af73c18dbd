"""A keypoint-labeling explanation as one picture (cv2 drawing only), and its PNG + JSON export.

The picture: the query on the left (centred on the prototype column), its top-k prototypes stacked on its
right (each titled with its rank, class and CLS cosine), the legend and the vote in a column right of them; every segment tinted with the colour of its part label (unlabelled segments a neutral
tint) and outlined; keypoints (segment centroids, KLC step 2) as dots with their part label; a line for each
kept best-buddy match (KLC step 3) coloured by the query's part label; a legend of the labels; the soft vote
(KLC step 4) as horizontal bars with the prediction, or "no best buddies: no prediction". In pixel mode the
correspondences of Amir et al. (arXiv 2112.05814 §4.1) are drawn instead of the segment matches.

Colours are fixed by label name (:func:`label_colour`), so a part has the same colour in every image and every
export. :func:`layout_explanation` computes where everything goes (panels, line endpoints); the renderer draws
exactly that layout, so tests and other views can check the geometry without reading pixels.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from protolens.core.atomic import write_json_atomic, write_png_atomic
from protolens.core.errors import ImageReadError
from protolens.core.explanation import Explanation, ImageParts

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 187, 120), (152, 223, 138), (174, 199, 232))
"""RGB colours of part labels (tab10 and a few lighter ones)."""
NEUTRAL = (150, 150, 150)
"""RGB colour of unlabelled segments and points."""
NO_PREDICTION = "no best buddies: no prediction"
MARGIN = 12
TITLE = 22
GAP = 72
"""Horizontal space between the query and the prototype column, where the match lines run."""
ROW = 18
INFO_WIDTH = 320
"""Width of the legend and vote column, right of the prototypes (no match line crosses it)."""
FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (30, 30, 30)
_PART = re.compile(r"part (\d+)")


def label_colour(label: str) -> tuple[int, int, int]:
    """The RGB colour of a part label: the same for the same name in every image.

    ``"part N"`` (the default vocabulary of a bank's K parts) takes palette entry N-1 so that those never
    collide; any other name a palette entry chosen by the CRC-32 of its UTF-8 bytes; "" the neutral grey.
    """
    if not label:
        return NEUTRAL
    found = _PART.fullmatch(label)
    index = int(found.group(1)) - 1 if found else zlib.crc32(label.encode("utf-8"))
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Panel:
    """Where one image lies in the picture: its top-left corner and size in canvas pixels.

    ``rank`` is -1 for the query, else the prototype's retrieval rank (0-based). ``image_size`` is the
    photo's (height, width).
    """

    name: str
    title: str
    rank: int
    x0: int
    y0: int
    width: int
    height: int
    image_size: tuple[int, int]

    def to_canvas(self, xy: Any) -> np.ndarray:
        """(k, 2) float32 canvas (x, y) of photo-pixel (x, y) points (pixel index coordinates: the centre of
        photo pixel (0, 0) is (0, 0)); scaled by panel size / photo size about pixel edges."""
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        sx = self.width / self.image_size[1]
        sy = self.height / self.image_size[0]
        return np.stack([(xy[:, 0] + 0.5) * sx - 0.5 + self.x0, (xy[:, 1] + 0.5) * sy - 0.5 + self.y0], axis=1)


@dataclass(frozen=True)
class Line:
    """One drawn match: canvas (x, y) endpoints, RGB colour, the query's part label, cosine and prototype rank."""

    start: tuple[float, float]
    end: tuple[float, float]
    colour: tuple[int, int, int]
    label: str
    similarity: float
    rank: int


@dataclass
class RenderLayout:
    """Everything :func:`render_explanation` draws, in canvas pixels ((x, y), origin top-left).

    ``lines`` holds one entry per kept match (segment mode) or per correspondence (pixel mode), in the order
    of :meth:`Explanation.kept` / the correspondences; ``legend`` the (label, colour) rows; ``message`` the
    vote's headline.
    """

    size: tuple[int, int]
    query: Panel
    prototypes: list[Panel]
    lines: list[Line]
    legend: list[tuple[str, tuple[int, int, int]]]
    legend_origin: tuple[int, int]
    vote_origin: tuple[int, int]
    message: str
    mode: str = "segments"


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) of an image of (height, width) ``size`` scaled so that its longer side is ``side``."""
    height, width = size
    scale = side / max(height, width, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _legend(explanation: Explanation) -> list[tuple[str, tuple[int, int, int]]]:
    names = set(explanation.query.segments.names)
    for parts in explanation.prototypes:
        names.update(parts.segments.names)
    labelled = sorted((n for n in names if n), key=lambda n: (_PART.fullmatch(n) is None, len(n), n))
    return [(n, label_colour(n)) for n in labelled] + ([("unlabelled", NEUTRAL)] if "" in names else [])


def _lines(explanation: Explanation, query: Panel, prototypes: list[Panel],
           label_consistent: bool | None) -> tuple[list[Line], str]:
    lines: list[Line] = []
    if explanation.correspondences is not None:
        for rank, found in enumerate(explanation.correspondences[:len(prototypes)]):
            starts = query.to_canvas(found.query_xy)
            ends = prototypes[rank].to_canvas(found.other_xy)
            for i, label in enumerate(explanation.query.part_at(found.query_xy)):
                lines.append(Line(tuple(map(float, starts[i])), tuple(map(float, ends[i])), label_colour(label),
                                  label, float(found.similarity[i]), rank))
        return lines, "pixels"
    for match in explanation.kept(label_consistent):
        start = query.to_canvas(match.query_xy)[0]
        end = prototypes[match.prototype].to_canvas(match.prototype_xy)[0]
        lines.append(Line((float(start[0]), float(start[1])), (float(end[0]), float(end[1])),
                          label_colour(match.query_label), match.query_label, float(match.similarity),
                          int(match.prototype)))
    return lines, "segments"


def layout_explanation(explanation: Explanation, *, label_consistent: bool | None = None,
                       max_side: int = 480) -> RenderLayout:
    """The geometry of the picture :func:`render_explanation` draws (no pixels read or drawn).

    Parameters
    ----------
    explanation : Explanation
    label_consistent : bool, optional
        Filter of the matches drawn and voted; default the explanation's own setting.
    max_side : int
        The query's longer side in canvas pixels; prototypes get half of it (at least 96).

    Returns
    -------
    RenderLayout
    """
    max_side = max(64, int(max_side))
    qw, qh = _fit(explanation.query.image_size, max_side)
    side = max(96, max_side // 2)
    x = MARGIN + qw + GAP
    y = MARGIN
    prototypes: list[Panel] = []
    for rank, parts in enumerate(explanation.prototypes):
        pw, ph = _fit(parts.image_size, side)
        cosine = explanation.retrieval[rank] if rank < len(explanation.retrieval) else float("nan")
        title = f"#{rank + 1} {parts.label}  cos {cosine:.3f}"
        prototypes.append(Panel(parts.name, title, rank, x, y + TITLE, pw, ph, tuple(parts.image_size)))
        y += TITLE + ph + MARGIN
    top = MARGIN + max(0, (y - MARGIN - (TITLE + qh + MARGIN)) // 2)  # centred on the prototype column
    query = Panel(explanation.query.name, f"query: {Path(explanation.query.path).name or 'photo'}", -1, MARGIN,
                  top + TITLE, qw, qh, tuple(explanation.query.image_size))
    lines, mode = _lines(explanation, query, prototypes, label_consistent)
    legend = _legend(explanation)
    if mode == "pixels" and any(not line.label for line in lines) and ("unlabelled", NEUTRAL) not in legend:
        legend.append(("unlabelled", NEUTRAL))
    legend_origin = (x + side + GAP // 2, MARGIN)
    vote_origin = (legend_origin[0], legend_origin[1] + ROW * (1 + (len(legend) + 1) // 2) + 2 * MARGIN)
    vote = explanation.vote(label_consistent)
    message = f"prediction: {vote.message()}" if vote.prediction is not None else NO_PREDICTION
    bottom = max(vote_origin[1] + ROW * (2 + len(vote.classes)) + MARGIN, y + MARGIN, query.y0 + qh + MARGIN)
    width = legend_origin[0] + INFO_WIDTH + MARGIN
    return RenderLayout((bottom, width), query, prototypes, lines, legend, legend_origin, vote_origin, message, mode)


# --- drawing ---------------------------------------------------------------------------------------------
def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], *, scale: float = 0.45,
          colour: tuple[int, int, int] = INK, outline: bool = False, max_width: int | None = None) -> None:
    if max_width is not None:
        while text and cv2.getTextSize(text, FONT, scale, 1)[0][0] > max_width:
            text = text[:-2] + "~" if len(text) > 2 else ""  # Hershey fonts have no ellipsis
    if outline:
        cv2.putText(canvas, text, origin, FONT, scale, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def _photo(parts: ImageParts, images: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
    if images is not None and parts.name in images:
        return np.asarray(images[parts.name])
    if images is not None and parts.path in images:
        return np.asarray(images[parts.path])
    from protolens.core.imageio import read_image

    try:
        return read_image(parts.path) if parts.path else None
    except ImageReadError:
        return None


def _tinted(parts: ImageParts, panel: Panel, rgb: np.ndarray | None) -> np.ndarray:
    """The panel's pixels: the photo resized, segments tinted by part label and outlined."""
    size = (panel.width, panel.height)
    if rgb is None or rgb.shape[:2] != tuple(parts.image_size):
        base = np.full((panel.height, panel.width, 3), 225, np.uint8)
        _text(base, "photo not found" if rgb is None else "photo changed", (6, 18), max_width=panel.width - 8)
        rgb_small = base
    else:
        shrinking = panel.width < rgb.shape[1]
        rgb_small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    segments = parts.segments
    ids = cv2.resize(segments.ids.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
    colours = np.zeros((segments.count + 1, 3), np.float32)
    alpha = np.zeros(segments.count + 1, np.float32)
    for i, name in enumerate(segments.names):
        colours[i + 1] = label_colour(name)
        alpha[i + 1] = 0.42 if name else 0.25
    index = ids + 1
    a = alpha[index][..., None]
    out = rgb_small.astype(np.float32) * (1 - a) + colours[index] * a
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    out[edge] = out[edge] * 0.35
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _points(canvas: np.ndarray, parts: ImageParts, panel: Panel) -> None:
    """Keypoints (present segments' centroids) as dots with their part label."""
    present = parts.present()
    for i, (x, y) in zip(present.tolist(), panel.to_canvas(parts.centroids[present]), strict=True):
        name = parts.segments.names[i]
        centre = (round(float(x)), round(float(y)))
        cv2.circle(canvas, centre, 5, INK, -1, cv2.LINE_AA)
        cv2.circle(canvas, centre, 4, label_colour(name), -1, cv2.LINE_AA)
        if name:
            _text(canvas, name, (centre[0] + 6, centre[1] - 4), scale=0.38, outline=True)


def _vote(canvas: np.ndarray, explanation: Explanation, layout: RenderLayout,
          label_consistent: bool | None) -> None:
    vote = explanation.vote(label_consistent)
    x, y = layout.vote_origin
    width = INFO_WIDTH
    _text(canvas, layout.message, (x, y + 13), scale=0.5, max_width=width)
    if vote.total == 0:
        return
    name_w, count_w = min(130, width // 3), 90
    bar_w = max(20, width - name_w - count_w)
    order = np.argsort(-np.asarray(vote.scores, np.float64), kind="stable")
    for row, c in enumerate(order):
        top = y + ROW * (row + 1) + 4
        name = vote.classes[c]
        _text(canvas, name, (x, top + 12), scale=0.4, max_width=name_w - 6)
        length = int(round(float(vote.scores[c]) * bar_w))
        colour = (52, 101, 164) if name == vote.prediction else (150, 170, 200)
        cv2.rectangle(canvas, (x + name_w, top + 2), (x + name_w + bar_w, top + ROW - 3), (235, 235, 235), -1)
        if length > 0:
            cv2.rectangle(canvas, (x + name_w, top + 2), (x + name_w + length, top + ROW - 3), colour, -1)
        _text(canvas, f"{int(vote.counts[c])} ({100 * float(vote.scores[c]):.0f} %)",
              (x + name_w + bar_w + 6, top + 12), scale=0.4)


def _legend_draw(canvas: np.ndarray, layout: RenderLayout) -> None:
    x, y = layout.legend_origin
    column = INFO_WIDTH // 2
    _text(canvas, "parts" if layout.mode == "segments" else "parts (pixel correspondences)", (x, y + 13))
    for i, (label, colour) in enumerate(layout.legend):
        left = x + (i % 2) * column
        top = y + ROW * (1 + i // 2) + 3
        cv2.rectangle(canvas, (left, top), (left + 14, top + 12), colour, -1)
        cv2.rectangle(canvas, (left, top), (left + 14, top + 12), INK, 1)
        _text(canvas, label, (left + 20, top + 11), scale=0.4, max_width=column - 26)


def render_explanation(explanation: Explanation, *, label_consistent: bool | None = None, max_side: int = 480,
                       images: Mapping[str, np.ndarray] | None = None,
                       layout: RenderLayout | None = None) -> np.ndarray:
    """Draw ``explanation`` as one RGB picture (cv2 only).

    Parameters
    ----------
    explanation : Explanation
    label_consistent : bool, optional
        Draw and vote only label-consistent matches (KLC step 3); default the explanation's own setting.
    max_side : int
        The query's longer side in pixels (prototypes: half of it, at least 96).
    images : mapping of str to numpy.ndarray, optional
        (h, w, 3) uint8 RGB photos by ``ImageParts.name`` (``"query"``, a bank image's rel path) or path;
        missing ones are read from ``ImageParts.path`` (an unreadable photo is drawn as a grey placeholder).
    layout : RenderLayout, optional
        A layout from :func:`layout_explanation` with the same arguments (default: computed).

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB, row 0 at the top.
    """
    layout = layout or layout_explanation(explanation, label_consistent=label_consistent, max_side=max_side)
    canvas = np.full((*layout.size, 3), 255, np.uint8)
    everything = [(explanation.query, layout.query)] + list(zip(explanation.prototypes, layout.prototypes,
                                                                strict=True))
    for parts, panel in everything:
        rgb = _photo(parts, images)
        canvas[panel.y0:panel.y0 + panel.height, panel.x0:panel.x0 + panel.width] = _tinted(parts, panel, rgb)
        _text(canvas, panel.title, (panel.x0, panel.y0 - 7), max_width=max(panel.width, 240))
    if layout.mode == "segments":
        for parts, panel in everything:
            _points(canvas, parts, panel)
    for line in layout.lines:
        start = (round(line.start[0] * 16), round(line.start[1] * 16))
        end = (round(line.end[0] * 16), round(line.end[1] * 16))
        cv2.line(canvas, start, end, line.colour, 2, cv2.LINE_AA, shift=4)
        if layout.mode == "pixels":
            for point in (start, end):
                cv2.circle(canvas, point, 4 * 16, line.colour, -1, cv2.LINE_AA, shift=4)
    _legend_draw(canvas, layout)
    _vote(canvas, explanation, layout, label_consistent)
    return canvas


def explanation_paths(explanation: Explanation, out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir/<query stem>.explanation.png`` and ``.json`` (stem ``query`` when the query has no path)."""
    stem = Path(explanation.query.path).stem if explanation.query.path else "query"
    out_dir = Path(out_dir)
    return out_dir / f"{stem}.explanation.png", out_dir / f"{stem}.explanation.json"


def write_explanation(explanation: Explanation, out_dir: str | Path, *, label_consistent: bool | None = None,
                      images: Mapping[str, np.ndarray] | None = None, max_side: int = 480) -> list[Path]:
    """Write the picture (:func:`render_explanation`) and :meth:`Explanation.to_json`, each atomically.

    The JSON (schema ``protolens.explanation/1``) holds the keypoints as (x, y) photo pixels of the image
    they lie in (origin top-left), their labels, the similarities and the vote, plus ``"picture"`` (the PNG's
    file name). Returns [PNG path, JSON path]; creates ``out_dir``. Raises StoreWriteError/OSError on failure.
    """
    png, js = explanation_paths(explanation, out_dir)
    png.parent.mkdir(parents=True, exist_ok=True)
    picture = render_explanation(explanation, label_consistent=label_consistent, images=images, max_side=max_side)
    write_png_atomic(png, picture)
    write_json_atomic(js, {**explanation.to_json(label_consistent), "picture": png.name})
    return [png, js]
