"""Reading photographs: every sample, every supported encoding, and every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from protolens.core.errors import ImageReadError
from protolens.core.imageio import (
    SKIP_BROKEN_LINK,
    SKIP_FOLDER,
    SKIP_NOT_IMAGE,
    ScanResult,
    expand_paths,
    image_size,
    is_image_path,
    list_images,
    read_image,
    read_mask,
    read_thumbnail,
    scan_images,
    scan_paths,
)

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
ALL_SAMPLES = sorted(p for p in SAMPLES.glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
ROBIN = SAMPLES / "birds" / "robin.jpg"  # 380 x 254, RGB JPEG
QUADRAT = SAMPLES / "quadrats" / "forest_floor.jpg"  # 2560 x 1600


def _pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def robin() -> np.ndarray:
    """The robin photo as decoded by Pillow: (254, 380, 3) uint8."""
    return _pillow_rgb(ROBIN)


def _assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous


# --------------------------------------------------------------------------- bundled samples


def test_samples_are_present():
    names = {p.name for p in ALL_SAMPLES}
    assert {"robin.jpg", "potted_plant.jpg", "potted_plant_matte.png", "dahlia.jpg", "crow.png",
            "forest_floor.jpg", "green_meadow.jpg"} <= names
    assert len(ALL_SAMPLES) >= 18


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_read_image_every_sample_matches_pillow_size(path: Path):
    with Image.open(path) as image:
        width, height = image.size
        mode = image.mode
    array = read_image(path)
    _assert_rgb(array, height, width)
    assert image_size(path) == (height, width)
    if mode in ("RGB", "L"):
        # Same decoder, so the pixels must be identical (gray is replicated into the 3 channels).
        np.testing.assert_array_equal(array, _pillow_rgb(path))


@pytest.mark.parametrize("path", sorted((SAMPLES / "birds").glob("*.png")), ids=lambda p: p.name)
def test_rgba_samples_are_composited_over_white(path: Path):
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        rgba = np.asarray(image).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    array = read_image(path)
    assert np.abs(array.astype(np.float64) - expected).max() <= 1.0
    transparent = rgba[..., 3] == 0
    if transparent.any():
        assert (array[transparent] == 255).all()


def test_large_quadrat_reads_full_size():
    array = read_image(QUADRAT)
    _assert_rgb(array, 1600, 2560)
    assert image_size(QUADRAT) == (1600, 2560)
    assert array.std() > 10  # a real photo, not a blank canvas


# --------------------------------------------------------------------------- generated encodings


def test_grayscale_png_is_replicated_to_three_channels(tmp_path, robin):
    gray = Image.fromarray(robin).convert("L")
    path = tmp_path / "gray.png"
    gray.save(path)
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    expected = np.asarray(gray)
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], expected)


def test_palette_png_without_transparency(tmp_path, robin):
    palette = Image.fromarray(robin).quantize(colors=64)
    assert palette.mode == "P"
    path = tmp_path / "palette.png"
    palette.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
        assert "transparency" not in reopened.info
    np.testing.assert_array_equal(read_image(path), np.asarray(palette.convert("RGB")))


def test_palette_png_with_transparent_index_reads_white(tmp_path, robin):
    palette = Image.fromarray(robin).quantize(colors=64)
    indices = np.asarray(palette)
    transparent_index = int(np.bincount(indices.ravel()).argmax())  # the most used colour
    path = tmp_path / "palette_t.png"
    palette.save(path, transparency=transparent_index)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and reopened.info.get("transparency") == transparent_index
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    hidden = indices == transparent_index
    assert hidden.any() and (~hidden).any()
    assert (array[hidden] == 255).all()
    np.testing.assert_array_equal(array[~hidden], np.asarray(palette.convert("RGB"))[~hidden])


def test_rgba_png_alpha_composited_over_white(tmp_path, robin):
    rgb = robin.copy()
    rgb[:40, :40] = (10, 200, 30)  # non-white colour under the transparent corner
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:40, :40] = 0
    alpha[100:140, 100:140] = 128
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    assert (array[:40, :40] == 255).all()
    assert tuple(array[0, 0]) == (255, 255, 255)
    opaque = alpha == 255
    np.testing.assert_array_equal(array[opaque], rgb[opaque])
    half = rgb[100:140, 100:140].astype(np.float64) * 128 / 255 + 255.0 * 127 / 255
    assert np.abs(array[100:140, 100:140] - half).max() <= 1.0


def test_la_png_alpha_composited_over_white(tmp_path, robin):
    gray = np.asarray(Image.fromarray(robin).convert("L"))
    alpha = np.full(gray.shape, 255, np.uint8)
    alpha[:, :50] = 0
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(path)
    array = read_image(path)
    assert (array[:, :50] == 255).all()
    np.testing.assert_array_equal(array[:, 50:, 1], gray[:, 50:])


def test_cmyk_jpeg_reads_as_rgb(tmp_path, robin):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(robin).convert("CMYK").save(path, quality=100)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    assert np.abs(array.astype(np.int16) - robin.astype(np.int16)).mean() < 3.0


def test_16bit_grayscale_tiff_scaled_by_257(tmp_path, robin):
    gray = np.asarray(Image.fromarray(robin).convert("L")).astype(np.uint16) * 257  # 8-bit -> full 16-bit range
    gray[0, :6] = [0, 65535, 32768, 1000, 257 * 100 + 128, 40000]
    path = tmp_path / "gray16.tif"
    tifffile.imwrite(path, gray)
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    expected = np.rint(gray / 257.0).astype(np.uint8)
    assert tuple(array[0, :6, 0]) == (0, 255, 128, 4, 100, 156)
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], expected)


def test_16bit_rgb_tiff(tmp_path, robin):
    rgb16 = robin.astype(np.uint16) * 257
    rgb16[0, 0] = (65535, 0, 32768)
    rgb16[0, 1] = (1000, 12345, 50000)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, rgb16, photometric="rgb")
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    expected = rgb16 / 257.0
    assert tuple(array[0, 0]) == (255, 0, 128)
    assert np.abs(array.astype(np.float64) - expected).max() <= 1.0
    np.testing.assert_array_equal(array[1:], robin[1:])


def test_float32_gray_tiff_in_unit_range(tmp_path, robin):
    values = np.asarray(Image.fromarray(robin).convert("L")).astype(np.float32) / 255.0
    values[0, 0], values[0, 1], values[0, 2] = 0.0, 1.0, 0.5
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, values)
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    assert tuple(array[0, :3, 0]) == (0, 255, 128)
    assert np.abs(array[..., 0].astype(np.float64) - values * 255.0).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(array[1:, :, 0], np.asarray(Image.fromarray(robin).convert("L"))[1:])


def test_float32_rgb_tiff_in_unit_range(tmp_path, robin):
    values = robin.astype(np.float32) / 255.0
    path = tmp_path / "float_rgb.tif"
    tifffile.imwrite(path, values, photometric="rgb")
    array = read_image(path)
    _assert_rgb(array, 254, 380)
    np.testing.assert_array_equal(array, robin)
    assert image_size(path) == (254, 380)
    assert read_thumbnail(path, 100).shape == (67, 100, 3)
    _assert_read_error(path, "limit", max_pixels=1000)


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not a TIFF either\n" * 20)
    _assert_read_error(path, "not a recognised image")


def test_bmp_is_pixel_exact(tmp_path, robin):
    path = tmp_path / "robin.bmp"
    Image.fromarray(robin).save(path)
    np.testing.assert_array_equal(read_image(path), robin)


def test_lossless_webp_is_pixel_exact(tmp_path, robin):
    path = tmp_path / "robin.webp"
    Image.fromarray(robin).save(path, lossless=True)
    np.testing.assert_array_equal(read_image(path), robin)


def _jpeg_with_orientation(tmp_path: Path, robin: np.ndarray, orientation: int) -> Path:
    image = Image.fromarray(robin)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"orient{orientation}.jpg"
    image.save(path, quality=100, exif=exif)
    return path


@pytest.mark.parametrize(("orientation", "k"), [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(tmp_path, robin, orientation, k):
    path = _jpeg_with_orientation(tmp_path, robin, orientation)
    with Image.open(path) as image:
        assert image.getexif()[0x0112] == orientation
        stored = np.asarray(image.convert("RGB"))  # as stored, not rotated
    array = read_image(path)
    expected = np.rot90(stored, k=k)
    np.testing.assert_array_equal(array, expected)
    # ...and it is the photo the right way round, up to JPEG loss.
    assert np.abs(array.astype(np.int16) - np.rot90(robin, k=k).astype(np.int16)).mean() < 2.0
    assert image_size(path) == array.shape[:2]


def test_orientation_6_swaps_height_and_width(tmp_path, robin):
    path = _jpeg_with_orientation(tmp_path, robin, 6)
    assert read_image(path).shape == (380, 254, 3)
    assert image_size(path) == (380, 254)
    # The top row of the displayed photo is the left column of the stored one, read bottom to top.
    array = read_image(path)
    with Image.open(path) as image:
        stored = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(array[0], stored[::-1, 0])


def test_orientation_8_thumbnail_is_portrait(tmp_path, robin):
    path = _jpeg_with_orientation(tmp_path, robin, 8)
    thumb = read_thumbnail(path, 100)
    assert thumb.shape[0] == 100 and thumb.shape[1] < 100


def test_read_mask_of_matte_and_alpha(tmp_path):
    matte_path = SAMPLES / "plants" / "potted_plant_matte.png"
    with Image.open(matte_path) as image:
        expected = np.asarray(image.convert("L"))
    mask = read_mask(matte_path)
    assert mask.shape == expected.shape and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)
    crow = SAMPLES / "birds" / "crow.png"
    with Image.open(crow) as image:
        alpha = np.asarray(image)[..., 3]
    np.testing.assert_array_equal(read_mask(crow), alpha)


# --------------------------------------------------------------------------- bad inputs


def _assert_read_error(path: Path, *words: str, **kwargs) -> None:
    for reader in (read_image, image_size):
        with pytest.raises(ImageReadError) as info:
            reader(path, **kwargs)
        message = str(info.value)
        assert str(path) in message
        assert info.value.path == path
        for word in words:
            assert word in message, message


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_read_error(path, "empty", "0 bytes")


def test_truncated_jpeg(tmp_path):
    data = ROBIN.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: int(len(data) * 0.3)])
    image_size(path)  # the header is intact...
    with pytest.raises(ImageReadError) as info:  # ...but the pixels are not
        read_image(path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value)
    with pytest.raises(ImageReadError) as info:
        read_thumbnail(path)
    assert str(path) in str(info.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n" * 20)
    _assert_read_error(path, "not a recognised image")


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "nowhere.jpg", "no such file")


def test_folder(tmp_path):
    folder = tmp_path / "looks_like.jpg"
    folder.mkdir()
    _assert_read_error(folder, "folder")


def test_pixel_limit_argument(tmp_path):
    path = tmp_path / "robin.jpg"
    shutil.copy(ROBIN, path)
    _assert_read_error(path, "380x254", "limit", "PROTOLENS_MAX_PIXELS", max_pixels=380 * 254 - 1)
    with pytest.raises(ImageReadError):
        read_thumbnail(path, max_pixels=1000)
    # The limit is inclusive: exactly as many pixels as allowed is fine.
    assert read_image(path, max_pixels=380 * 254).shape == (254, 380, 3)


def test_pixel_limit_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "quadrat.jpg"
    shutil.copy(QUADRAT, path)
    monkeypatch.setenv("PROTOLENS_MAX_PIXELS", str(2560 * 1600 - 1))
    _assert_read_error(path, "2560x1600", "4.1 MP", "limit")
    with pytest.raises(ImageReadError):
        read_thumbnail(path)
    monkeypatch.setenv("PROTOLENS_MAX_PIXELS", str(2560 * 1600))
    assert image_size(path) == (1600, 2560)


def test_invalid_pixel_limit_environment_variable_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOLENS_MAX_PIXELS", "lots")
    assert read_image(ROBIN).shape == (254, 380, 3)
    monkeypatch.setenv("PROTOLENS_MAX_PIXELS", "0")
    assert read_image(ROBIN).shape == (254, 380, 3)


def test_read_mask_errors_name_the_file(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_mask(path)


# --------------------------------------------------------------------------- thumbnails


@pytest.mark.parametrize("max_side", [64, 160, 300])
def test_thumbnail_bounds_the_longer_side(max_side):
    thumb = read_thumbnail(QUADRAT, max_side)
    assert thumb.dtype == np.uint8 and thumb.ndim == 3 and thumb.shape[2] == 3
    assert max(thumb.shape[:2]) == max_side
    assert thumb.shape[1] > thumb.shape[0]  # landscape stays landscape
    assert thumb.shape[1] / thumb.shape[0] == pytest.approx(2560 / 1600, rel=0.03)


def test_thumbnail_looks_like_the_photo():
    thumb = read_thumbnail(QUADRAT, 160).astype(np.float64)
    full = read_image(QUADRAT).astype(np.float64)
    # Compare 10 x 16 block means: 160 x 100 pixels per block in the photo, 10 x 10 in the thumbnail.
    blocks_full = full.reshape(10, 160, 16, 160, 3).mean(axis=(1, 3))
    blocks_thumb = thumb.reshape(10, 10, 16, 10, 3).mean(axis=(1, 3))
    assert np.abs(blocks_full - blocks_thumb).mean() < 6.0


def test_thumbnail_never_enlarges():
    path = SAMPLES / "birds" / "magpie.png"  # 86 x 120
    assert read_thumbnail(path, 160).shape == (120, 86, 3)
    assert read_thumbnail(path, 60).shape[0] == 60


# --------------------------------------------------------------------------- listing files


def test_is_image_path():
    assert is_image_path("a/b/IMG_0001.JPG")
    assert is_image_path("x.tiff") and is_image_path("x.webp") and is_image_path("x.bmp")
    assert not is_image_path("x.txt") and not is_image_path("x.json") and not is_image_path("jpg")


def _make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ["img10.png", "img2.png", "img1.jpg", "IMG3.JPG", "img2b.tif", ".hidden.png", "notes.txt",
                 "img4.json"]:
        (folder / name).write_bytes(b"x")
    (folder / "img5.png").mkdir()  # a folder with an image-like name
    (folder / ".protolens").mkdir()
    return folder


def test_list_images_natural_order_skips_hidden_and_non_images(tmp_path):
    folder = _make_folder(tmp_path)
    names = [p.name for p in list_images(folder)]
    assert names == ["img1.jpg", "img2.png", "img2b.tif", "IMG3.JPG", "img10.png"]
    assert all(p.parent == folder for p in list_images(folder))


def test_list_images_of_samples_folder():
    names = [p.name for p in list_images(SAMPLES / "quadrats")]
    assert names == ["forest_floor.jpg", "forget_me_not.jpg", "green_meadow.jpg", "moss_carpet.jpg"]


def test_list_images_on_a_file_raises(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        list_images(path)
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "missing")


def test_expand_paths_keeps_order_and_drops_duplicates(tmp_path, monkeypatch):
    folder = _make_folder(tmp_path)
    other = tmp_path / "extra.jpg"
    other.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    result = expand_paths([other, folder, folder / "img2.png", "photos/../photos/img10.png", Path("extra.jpg"),
                           folder])
    assert [p.name for p in result] == ["extra.jpg", "img1.jpg", "img2.png", "img2b.tif", "IMG3.JPG",
                                        "img10.png"]
    assert len({p.resolve() for p in result}) == len(result)


def test_expand_paths_passes_through_explicit_files(tmp_path):
    # An explicitly named file is kept even if it is not (yet) an image; reading it reports the problem.
    path = tmp_path / "scan.jpg"
    assert expand_paths([path, str(path)]) == [path]


# --------------------------------------------------------------------------- scans that say what they skipped


def _gif_frames() -> list[np.ndarray]:
    """Two 40 x 60 frames: red | blue halves, then flat grey (palette-exact colours)."""
    first = np.zeros((40, 60, 3), np.uint8)
    first[:, :30] = (255, 0, 0)
    first[:, 30:] = (0, 0, 255)
    return [first, np.full((40, 60, 3), 128, np.uint8)]


def _write_gif(path: Path) -> np.ndarray:
    frames = [Image.fromarray(f) for f in _gif_frames()]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return _gif_frames()[0]


def _mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write_gif(folder / "anim.gif")
    shutil.copy(ROBIN, folder / "robin.jpg")
    (folder / "a.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "b.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "notes.txt").write_text("plot 7")
    (folder / "link.jpg").symlink_to(folder / "gone.jpg")
    (folder / "x.jpg").mkdir()
    (folder / ".hidden.jpg").write_bytes(b"x")
    (folder / ".protolens").mkdir()
    return folder


def test_scan_images_names_every_skipped_entry_and_why(tmp_path):
    folder = _mixed_folder(tmp_path)
    scan = scan_images(folder)
    assert isinstance(scan, ScanResult)
    assert [p.name for p in scan.images] == ["anim.gif", "robin.jpg"]
    assert [(p.name, reason) for p, reason in scan.skipped] == [
        ("a.svg", SKIP_NOT_IMAGE), ("b.heic", SKIP_NOT_IMAGE), ("link.jpg", SKIP_BROKEN_LINK),
        ("notes.txt", SKIP_NOT_IMAGE), ("x.jpg", SKIP_FOLDER)]
    assert SKIP_NOT_IMAGE == "not a supported image" and SKIP_BROKEN_LINK == "broken link"
    assert list_images(folder) == scan.images  # the old API lists the same photos


def test_scan_images_on_a_file_raises(tmp_path):
    with pytest.raises(NotADirectoryError):
        scan_images(tmp_path / "missing")


def test_scan_paths_keeps_explicit_files_and_reports_each_skip_once(tmp_path, monkeypatch):
    folder = _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    scan = scan_paths([folder / "notes.txt", folder, "mixed/../mixed"])
    assert [p.name for p in scan.images] == ["notes.txt", "anim.gif", "robin.jpg"]
    assert [p.name for p, _ in scan.skipped] == ["a.svg", "b.heic", "link.jpg", "notes.txt", "x.jpg"]
    assert expand_paths([folder / "notes.txt", folder]) == scan.images


def test_a_symlink_to_a_photo_is_read(tmp_path):
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "robin.jpg").symlink_to(ROBIN)
    scan = scan_images(folder)
    assert [p.name for p in scan.images] == ["robin.jpg"] and scan.skipped == []


# --------------------------------------------------------------------------- GIF


def test_gif_is_a_supported_extension():
    assert is_image_path("walk/IMG_7.GIF") and is_image_path("x.gif")


def test_gif_reads_its_first_frame_as_rgb(tmp_path):
    path = tmp_path / "anim.gif"
    first = _write_gif(path)
    with Image.open(path) as image:
        assert image.is_animated and image.mode == "P"
    rgb = read_image(path)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, first)
    assert image_size(path) == (40, 60)


def test_gif_transparency_is_composited_over_white(tmp_path):
    path = tmp_path / "clear.gif"
    image = Image.new("P", (8, 6), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.save(path, transparency=0)
    rgb = read_image(path)
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 1].tolist() == [0, 200, 0]


def test_gif_thumbnail_is_the_first_frame_scaled(tmp_path):
    path = tmp_path / "anim.gif"
    _write_gif(path)
    thumb = read_thumbnail(path, 30)
    assert thumb.shape == (20, 30, 3) and thumb.dtype == np.uint8
    assert thumb[10, 2].tolist() == [255, 0, 0] and thumb[10, -3].tolist() == [0, 0, 255]
