"""Reading photographs into RGB arrays, with one typed error for every kind of bad input.

Every reader returns ``numpy.ndarray`` of shape (height, width, 3), dtype uint8, RGB order,
with the EXIF orientation already applied (row 0 is the top of the photo as a person sees it).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from protolens.core.errors import ImageReadError

# We enforce our own, configurable limit before decoding (see ``max_pixels``); Pillow's global
# guard would raise a different error type at a different size.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
"""Supported photo extensions (compared lower-case); a GIF is read as its first frame."""
DEFAULT_MAX_PIXELS = 250_000_000
"""Default decompression-bomb limit in pixels (width x height); ``PROTOLENS_MAX_PIXELS`` overrides it."""

_BACKGROUND = (255, 255, 255)
_UNRECOGNISED = "not a recognised image (JPEG, PNG, TIFF, BMP, WebP or GIF)"


def max_pixels_setting() -> int:
    """The pixel limit in force: ``PROTOLENS_MAX_PIXELS`` if set to a positive integer, else the default."""
    value = os.environ.get("PROTOLENS_MAX_PIXELS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_PIXELS


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` has one of the supported image extensions (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (``img2`` before ``img10``).

    Hidden files are skipped. Raises ``NotADirectoryError`` if ``folder`` is not a directory.
    See :func:`scan_images` for the files left out and why.
    """
    return scan_images(folder).images


SKIP_NOT_IMAGE = "not a supported image"
SKIP_BROKEN_LINK = "broken link"
SKIP_FOLDER = "a folder"
SKIP_NOT_FILE = "not a regular file"


@dataclass
class ScanResult:
    """What a folder scan found: the photos to read and the entries left out, each with a reason.

    Attributes
    ----------
    images : list of Path
        Files with a supported extension (:data:`IMAGE_EXTENSIONS`), natural order; they are not opened,
        so a damaged file is listed here and reported when it is read.
    skipped : list of (Path, str)
        Entries that are not read, natural order, with the reason: :data:`SKIP_NOT_IMAGE` (another
        extension, e.g. ``.svg``, ``.heic``, ``.txt``), :data:`SKIP_BROKEN_LINK` (a symbolic link whose
        target is missing), :data:`SKIP_FOLDER` (a sub-folder; scans are not recursive) or
        :data:`SKIP_NOT_FILE` (a pipe, socket or device). Hidden entries (name starting with ``.``,
        which includes the ``.protolens`` result store) are neither read nor reported.
    """

    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _skip_reason(path: Path) -> str | None:
    """Why a non-hidden folder entry is not read, or None if it is a photo to read."""
    if path.is_symlink() and not path.exists():
        return SKIP_BROKEN_LINK
    if path.is_dir():
        return SKIP_FOLDER
    if not is_image_path(path):
        return SKIP_NOT_IMAGE
    return None if path.is_file() else SKIP_NOT_FILE


def scan_images(folder: str | Path) -> ScanResult:
    """The photos directly inside ``folder`` (natural order) and every other entry with why it is skipped.

    Raises ``NotADirectoryError`` if ``folder`` is not a directory. See :class:`ScanResult`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    result = ScanResult()
    for path in sorted(folder.iterdir(), key=_natural_key):
        if path.name.startswith("."):
            continue
        reason = _skip_reason(path)
        if reason is None:
            result.images.append(path)
        else:
            result.skipped.append((path, reason))
    return result


def scan_tree(root: str | Path) -> ScanResult:
    """The photos under ``root``, recursively, and the other files left out (never the sub-folders themselves).

    Folders are searched breadth first, each in natural order; hidden entries (``.protolens``, caches) and
    links to folders are not followed. ``skipped`` holds the non-folder entries with their reason.
    Raises ``NotADirectoryError`` if ``root`` is not a directory.
    """
    result = ScanResult()
    folders = [Path(root)]
    while folders:
        scan = scan_images(folders.pop(0))
        result.images += scan.images
        folders += [p for p, why in scan.skipped if why == SKIP_FOLDER and not p.is_symlink()]
        result.skipped += [(p, why) for p, why in scan.skipped if why != SKIP_FOLDER]
    return result


def scan_paths(paths: Iterable[str | Path]) -> ScanResult:
    """Files and folders (scanned with :func:`scan_images`, non-recursive) as one list of photos plus skips.

    Order is kept and duplicates (same resolved path) are dropped. A file named explicitly is always kept,
    whatever its extension, so that reading it reports the problem; only folder contents are skipped.
    """
    out = ScanResult()
    seen: set[Path] = set()
    seen_skipped: set[str] = set()
    for raw in paths:
        path = Path(raw)
        scan = scan_images(path) if path.is_dir() else ScanResult(images=[path])
        for item in scan.images:
            key = item.resolve()
            if key not in seen:
                seen.add(key)
                out.images.append(item)
        for item, reason in scan.skipped:
            name = os.path.normpath(item.absolute())  # not resolve(): a broken link has no target
            if name not in seen_skipped:
                seen_skipped.add(name)
                out.skipped.append((item, reason))
    return out


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders (their images, non-recursive) as one list of files, order kept, duplicates dropped.

    See :func:`scan_paths` for the same list together with the folder entries that were skipped.
    """
    return scan_paths(paths).images


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def _open(path: Path, max_pixels: int) -> Image.Image:
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, _UNRECOGNISED) from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc}") from None
    width, height = image.size
    try:
        _check_limit(path, width, height, max_pixels)
    except ImageReadError:
        image.close()
        raise
    return image


def _check_limit(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"image is {width}x{height} = {_megapixels(width * height)}, over the {_megapixels(max_pixels)} "
            "limit (raise it with PROTOLENS_MAX_PIXELS)",
        )


def _tifffile_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a TIFF that only tifffile can read (e.g. float RGB), or None."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return int(page.imagelength), int(page.imagewidth)
    except Exception:  # noqa: BLE001 - not a TIFF tifffile understands either
        return None


def _read_tifffile_only(path: Path, error: ImageReadError, max_pixels: int) -> np.ndarray:
    """Read a TIFF Pillow does not recognise with tifffile, or re-raise ``error``."""
    size = _tifffile_size(path) if error.reason == _UNRECOGNISED else None
    if size is None:
        raise error
    _check_limit(path, size[1], size[0], max_pixels)
    try:
        return np.ascontiguousarray(_tiff_fallback(path))
    except Exception as exc:  # noqa: BLE001 - reported as a read error
        raise ImageReadError(path, f"cannot decode: {exc}") from None


def image_size(path: str | Path, *, max_pixels: int | None = None) -> tuple[int, int]:
    """Size of an image as (height, width) in pixels after EXIF orientation, read from the header only.

    Raises
    ------
    ImageReadError
        Missing, empty, unrecognised or over-limit file.
    """
    path = Path(path)
    try:
        image = _open(path, max_pixels or max_pixels_setting())
    except ImageReadError as exc:
        size = _tifffile_size(path) if exc.reason == _UNRECOGNISED else None
        if size is None:
            raise
        _check_limit(path, size[1], size[0], max_pixels or max_pixels_setting())
        return size
    with image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to (H, W, 3) uint8 RGB; alpha is composited over white."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        data = np.asarray(image)
        return np.repeat(_scale_to_uint8(data)[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def _scale_to_uint8(data: np.ndarray) -> np.ndarray:
    """Map a 16-bit, 32-bit integer or float single-channel array to uint8.

    uint16 uses the full 0..65535 range (value / 257); floats already in [0, 1] are scaled by 255;
    anything else is min-max scaled.
    """
    data = np.asarray(data)
    if data.dtype == np.uint16 or (data.dtype.kind in "iu" and data.min() >= 0 and data.max() <= 65535
                                   and data.max() > 255):
        return (data.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    values = data.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if data.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif data.dtype.kind in "iu" and lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    scaled = (np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _tiff_fallback(path: Path) -> np.ndarray:
    import tifffile

    data = tifffile.imread(path, key=0)
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)
    if data.ndim == 2:
        return np.repeat(_scale_to_uint8(data)[..., None], 3, axis=2)
    if data.ndim == 3 and data.shape[-1] >= 3:
        channels = [_scale_to_uint8(data[..., c]) if data.dtype != np.uint8 else data[..., c] for c in range(3)]
        return np.stack(channels, axis=-1)
    raise ValueError(f"unsupported TIFF layout {data.shape}")


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a photograph as RGB.

    Supports JPEG, PNG, TIFF (8/16-bit, float), BMP, WebP and GIF (the first frame of an animation).
    The EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images are converted to RGB;
    alpha (and GIF transparency) is composited over white.

    Parameters
    ----------
    path : str or Path
        The image file.
    max_pixels : int, optional
        Refuse images with more than this many pixels (width x height) before decoding them
        (decompression-bomb guard). Defaults to :func:`max_pixels_setting`.

    Returns
    -------
    numpy.ndarray
        (height, width, 3) uint8, RGB, row 0 at the top.

    Raises
    ------
    ImageReadError
        Missing, empty, unrecognised, truncated/corrupt or over-limit file; the message names the
        file and the reason.
    """
    path = Path(path)
    limit = max_pixels or max_pixels_setting()
    try:
        image = _open(path, limit)
    except ImageReadError as exc:
        return _read_tifffile_only(path, exc, limit)
    try:
        with image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.ascontiguousarray(_to_rgb(image))
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                return np.ascontiguousarray(_tiff_fallback(path))
            except Exception:  # noqa: BLE001 - report the original decoder error below
                pass
        reason = "truncated or corrupt image data" if "truncated" in str(exc).lower() or isinstance(
            exc, (EOFError, SyntaxError)) else f"cannot decode: {exc}"
        raise ImageReadError(path, reason) from None


def read_thumbnail(path: str | Path, max_side: int = 160, *, max_pixels: int | None = None) -> np.ndarray:
    """A small RGB preview whose longer side is at most ``max_side`` pixels.

    JPEGs are decoded at reduced scale (Pillow draft mode), so this is much faster than
    :func:`read_image` on large photos; a GIF gives its first frame. Returns (h, w, 3) uint8 RGB; raises :class:`ImageReadError`.
    """
    path = Path(path)
    limit = max_pixels or max_pixels_setting()
    try:
        image = _open(path, limit)
    except ImageReadError as exc:
        image = Image.fromarray(_read_tifffile_only(path, exc, limit))
    try:
        with image:
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode == "P":  # palette images (GIF) would be resized nearest-neighbour
                image = image.convert("RGBA")
            image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            return np.ascontiguousarray(_to_rgb(image))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(path, f"cannot decode: {exc}") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel mask or matte as (height, width) uint8 (alpha if the file has one).

    Raises :class:`ImageReadError`.
    """
    path = Path(path)
    image = _open(path, max_pixels_setting())
    try:
        with image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                return np.asarray(image.convert("RGBA"))[..., 3].copy()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return _scale_to_uint8(np.asarray(image))
            return np.asarray(image.convert("L")).copy()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(path, f"cannot decode: {exc}") from None
