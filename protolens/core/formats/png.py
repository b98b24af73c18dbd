"""PNG label maps, their colour twins, ``labels.txt`` and ``labels.csv``.

An export writes two PNGs per photo (see :mod:`protolens.services.annotations`):

``<stem>.labels.png``
    8-bit **greyscale** (Pillow mode "L", PNG colour type 0) whose pixel values are the class ids: 0 background,
    1..254 classes, 255 ignore. Every PNG reader returns these values as they are: Pillow, OpenCV
    (``cv2.imread`` with ``IMREAD_UNCHANGED`` or ``IMREAD_GRAYSCALE``; its default ``IMREAD_COLOR`` repeats the
    id in three channels), ``imageio``, scikit-image and rasterio. Training code for VOC-style datasets and
    mmsegmentation, which read label PNGs with Pillow, gets the ids too. A palette PNG would not do: OpenCV,
    imageio and scikit-image expand a palette to colours, so only Pillow and rasterio would see ids.
``<stem>.color.png``
    The same map as a palette image (Pillow mode "P", palette :meth:`LabelSet.palette`: background black,
    ignore white, classes their colours, unused ids grey), for looking at. Pillow reads its pixel values as
    ids too, but other readers see colours: train on ``.labels.png``.

:func:`read_label_png` reads both kinds, and the palette ``.labels.png`` files of earlier protolens versions.

``labels.txt`` names the ids: "0 background", one "<id> <name>" line per class, "255 ignore" (a name may
contain spaces: split each line once, at the first space). ``labels.csv`` adds the colours: header
``id,name,r,g,b``, one row per id of ``labels.txt``, the colours of ``<stem>.color.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from protolens.core.atomic import write_bytes_atomic
from protolens.core.formats import FormatError, check_labelmap
from protolens.core.labels import BACKGROUND, IGNORE, LabelSet


def encode_id_png(labelmap: np.ndarray) -> bytes:
    """PNG bytes of ``labelmap`` as an 8-bit greyscale image whose pixel values are the class ids.

    Parameters
    ----------
    labelmap : np.ndarray
        (height, width) uint8 class ids, row 0 at the top.

    Raises
    ------
    ValueError
        ``labelmap`` is not a 2-D uint8 array.
    """
    return _encode(labelmap, "L")


def write_id_png(path: str | Path, labelmap: np.ndarray) -> None:
    """Write :func:`encode_id_png` (``<stem>.labels.png``) to ``path`` atomically (raises ``StoreWriteError``)."""
    write_bytes_atomic(path, encode_id_png(labelmap))


def encode_label_png(labelmap: np.ndarray, labels: LabelSet) -> bytes:
    """PNG bytes of ``labelmap`` as an indexed image whose palette is ``labels.palette()`` (the colour twin).

    Pixel values are the class ids, but only Pillow and rasterio return them; other readers return the
    palette colours (see the module docstring). Exports write this as ``<stem>.color.png``.

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
    return _encode(labelmap, "P", labels.palette().tobytes())


def _encode(labelmap: np.ndarray, mode: str, palette: bytes | None = None) -> bytes:
    """PNG bytes of a checked (height, width) uint8 map in PIL ``mode`` ("L" or "P" with an RGB palette)."""
    array = np.ascontiguousarray(check_labelmap(labelmap))
    height, width = array.shape
    image = Image.frombytes(mode, (width, height), array.tobytes())
    if palette is not None:
        image.putpalette(palette, rawmode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_label_png(path: str | Path, labelmap: np.ndarray, labels: LabelSet) -> None:
    """Write :func:`encode_label_png` (the palette colour twin) to ``path`` atomically (raises ``StoreWriteError``)."""
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


def labels_csv(labels: LabelSet) -> str:
    """The ``labels.csv`` text: header ``id,name,r,g,b``, then background, the classes in id order and ignore.

    The colours are those of ``labels.palette()`` (the ``<stem>.color.png`` palette), 0..255 each.
    """
    palette = labels.palette()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "r", "g", "b"])
    ids = [BACKGROUND, *sorted(c.id for c in labels.classes), IGNORE]
    for class_id in ids:
        writer.writerow([class_id, labels.name_of(class_id), *map(int, palette[class_id])])
    return buffer.getvalue()


def write_labels_csv(path: str | Path, labels: LabelSet) -> None:
    """Write :func:`labels_csv` to ``path`` as UTF-8, atomically (raises ``StoreWriteError``)."""
    write_bytes_atomic(path, labels_csv(labels).encode("utf-8"))


def read_label_png(path: str | Path, labels: LabelSet | None = None) -> np.ndarray:
    """Read a label map from a PNG (or any image Pillow reads losslessly).

    Grey images (``<stem>.labels.png``) and palette images (``<stem>.color.png``, and the palette
    ``.labels.png`` of earlier protolens versions) give their pixel values as class ids. RGB and RGBA images (alpha is
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
