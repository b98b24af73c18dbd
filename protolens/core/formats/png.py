"""Indexed PNG label maps and ``labels.txt``.

The PNG is a palette image (Pillow mode "P"): pixel values are class ids and the 256-entry palette
is :meth:`LabelSet.palette` (background black, ignore white, classes their colours, unused ids grey),
so the file opens as a coloured overlay in any viewer and as class ids in any PNG reader.
``labels.txt`` names the ids: "0 background", one "<id> <name>" line per class, "255 ignore".
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from protolens.core.atomic import write_bytes_atomic
from protolens.core.formats import FormatError, check_labelmap
from protolens.core.labels import BACKGROUND, IGNORE, LabelSet


def encode_label_png(labelmap: np.ndarray, labels: LabelSet) -> bytes:
    """PNG bytes of ``labelmap`` as an indexed image whose palette is ``labels.palette()``.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) uint8 class ids.
    labels : LabelSet
        Gives the palette colours.

    Raises
    ------
    ValueError
        ``labelmap`` is not a 2-D uint8 array.
    """
    array = np.ascontiguousarray(check_labelmap(labelmap))
    height, width = array.shape
    image = Image.frombytes("P", (width, height), array.tobytes())
    image.putpalette(labels.palette().tobytes(), rawmode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_label_png(path: str | Path, labelmap: np.ndarray, labels: LabelSet) -> None:
    """Write :func:`encode_label_png` to ``path`` atomically (raises ``StoreWriteError``)."""
    write_bytes_atomic(path, encode_label_png(labelmap, labels))


def labels_txt(labels: LabelSet) -> str:
    """The ``labels.txt`` text: "0 background", "<id> <name>" per class in id order, "255 ignore"."""
    lines = [f"{BACKGROUND} background"]
    lines += [f"{c.id} {c.name}" for c in sorted(labels.classes, key=lambda c: c.id)]
    lines.append(f"{IGNORE} ignore")
    return "\n".join(lines) + "\n"


def write_labels_txt(path: str | Path, labels: LabelSet) -> None:
    """Write :func:`labels_txt` to ``path`` as UTF-8, atomically (raises ``StoreWriteError``)."""
    write_bytes_atomic(path, labels_txt(labels).encode("utf-8"))


def read_label_png(path: str | Path, labels: LabelSet | None = None) -> np.ndarray:
    """Read a label map from a PNG (or any image Pillow reads losslessly).

    Palette and grey images give their pixel values as class ids. RGB and RGBA images (alpha is
    ignored) are mapped to ids by exact colour match against ``labels.palette()``: black is
    background, white is ignore, each class colour its id (if two share a colour, the lowest id
    wins; the grey of unused ids matches nothing).

    Returns
    -------
    np.ndarray
        (height, width) uint8 class ids.

    Raises
    ------
    FormatError
        The file is not a readable image, has 16-bit values above 255, is RGB without ``labels``,
        or has a colour that is no class colour (the message names the colour and its first pixel
        (x, y) in row order).
    FileNotFoundError
        ``path`` does not exist.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            data = np.array(image.getchannel(0) if mode in ("LA", "PA") else image)
    except UnidentifiedImageError:
        raise FormatError(f"{path}: not an image file") from None
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: corrupt image ({exc})") from None
    if mode in ("RGB", "RGBA"):
        if labels is None:
            raise FormatError(f"{path}: an RGB label image needs the label set to map colours to ids")
        return _ids_from_colours(data[..., :3], labels, path)
    if data.ndim != 2:
        raise FormatError(f"{path}: unsupported image mode {mode}")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise FormatError(f"{path}: pixel values {data.min()}..{data.max()} are outside 0..255")
    return data.astype(np.uint8)


def _ids_from_colours(rgb: np.ndarray, labels: LabelSet, path: Path) -> np.ndarray:
    """Map an (height, width, 3) uint8 RGB array to class ids through ``labels``' colours."""
    palette = labels.palette().astype(np.uint32)
    keys_of = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    lookup: dict[int, int] = {}
    for class_id in [BACKGROUND, IGNORE, *sorted(c.id for c in labels.classes)]:
        lookup.setdefault(int(keys_of[class_id]), class_id)
    rgb = rgb.astype(np.uint32)
    keys = ((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]).ravel()
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    unknown = [i for i, key in enumerate(unique) if int(key) not in lookup]
    if unknown:
        index = min(unknown, key=lambda i: first[i])
        key, pixel = int(unique[index]), int(first[index])
        colour = (key >> 16, (key >> 8) & 255, key & 255)
        x, y = pixel % rgb.shape[1], pixel // rgb.shape[1]
        raise FormatError(f"{path}: colour {colour} at pixel (x={x}, y={y}) is not the colour of any class")
    ids = np.array([lookup[int(key)] for key in unique], np.uint8)
    return ids[inverse.reshape(-1)].reshape(rgb.shape[:2])
