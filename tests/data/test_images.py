import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import fixtures as fx
from radlab.data.images import image_shape, read_image

GRAY = np.tile(np.linspace(60, 180, 32).astype(np.uint8), (16, 1))  # 8-bit, not spanning 0..255


def png16(path: Path, array: np.ndarray, colour_type: int) -> Path:
    """A 16-bit PNG [H, W, C] written by hand (Pillow cannot write 16-bit colour)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_8bit_colour_and_gray_alpha_read_like_gray(tmp_path, mode):
    image = Image.fromarray(GRAY).convert(mode)
    if "A" in mode:
        image.putalpha(Image.fromarray(np.full_like(GRAY, 7)))  # alpha is dropped, not averaged in
    image.save(tmp_path / "c.png")
    np.testing.assert_allclose(read_image(tmp_path / "c.png"), GRAY / 255.0, atol=1e-6)


def test_8bit_colour_is_mean_of_rgb_over_255(tmp_path):
    rgb = np.stack([GRAY, GRAY // 2, np.full_like(GRAY, 90)], axis=-1)
    fx.png(tmp_path / "rgb.png", rgb)
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), rgb.mean(axis=-1) / 255.0, atol=1e-6)


def test_palette_png_reads_gray_levels_not_indices(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (8, 1))
    Image.fromarray(ramp).convert("RGB").quantize(colors=64).save(tmp_path / "p.png")  # non-identity palette
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
        truth = np.asarray(img.convert("L")) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), truth, atol=1e-6)


def test_cmyk_reads_gray_levels_not_ink(tmp_path):
    Image.fromarray(GRAY).convert("CMYK").save(tmp_path / "c.tif")
    np.testing.assert_allclose(read_image(tmp_path / "c.tif"), GRAY / 255.0, atol=1e-6)


def test_1bit_png_white_is_one(tmp_path):
    Image.fromarray(np.ones((6, 5), dtype=bool)).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), np.ones((6, 5), np.float32))


@pytest.mark.parametrize("colour_type, channels", [(2, 3), (4, 2), (6, 4)])
def test_16bit_colour_png_is_refused(tmp_path, colour_type, channels):
    levels = np.tile(np.arange(0, 1024, 4, dtype=np.uint16), (4, 1))  # 10-bit signal, lost in 8 bits
    path = png16(tmp_path / "deep.png", np.repeat(levels[..., None], channels, axis=-1), colour_type)
    with pytest.raises(OSError, match=r"deep\.png: 16-bit colour PNG"):
        read_image(path)


def test_16bit_gray_png_keeps_its_levels(tmp_path):
    levels = np.tile(np.arange(0, 1024, 4, dtype=np.uint16), (4, 1))
    out = read_image(png16(tmp_path / "g.png", levels[..., None], 0))
    np.testing.assert_allclose(out, levels / levels.max(), atol=1e-6)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(OSError, match=r"broken\.png: cannot read image"):
        read_image(tmp_path / "broken.png")


def test_towers_geometry_pads_or_crops_then_centre_crops():
    from radlab.data.images import fit_square

    wide = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (100, 1))  # value = column position
    padded = fit_square(wide, 50)
    assert padded.shape == (50, 50) and (padded[:12] == 0).all() and padded[25, 0] < 0.02 and padded[25, -1] > 0.98
    cropped = fit_square(wide, 50, fit="crop")
    assert cropped.shape == (50, 50) and (cropped > 0).all()
    assert cropped[25, 0] == pytest.approx(0.25, abs=0.02) and cropped[25, -1] == pytest.approx(0.75, abs=0.02)
    inner = fit_square(wide, 40, fit="crop", resize=50)  # BioViL-style: shorter side to 50, centre 40
    np.testing.assert_array_equal(inner, cropped[5:45, 5:45])


def test_preprocess_geometry_is_checked_and_described():
    from radlab.models.towers import Preprocess

    with pytest.raises(ValueError, match="fit"):
        Preprocess(fit="squash")
    with pytest.raises(ValueError, match="at least image_size"):
        Preprocess(image_size=480, resize=256)
    assert Preprocess(image_size=480, fit="crop", resize=512).geometry() == (
        "shorter side resized and centre-cropped to a square of 512 px, then centre-cropped to 480 px")


def test_an_exif_orientation_is_applied(tmp_path):
    """A JPEG from a camera or scanner stored sideways with Orientation 6 (rotate 90 degrees clockwise to view)
    is read as displayed, so masks, crops and duplicate hashes see the anatomy upright."""
    array = fx.image(3, shape=(40, 60), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "plain.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(tmp_path / "tagged.jpg", quality=95, exif=exif)
    plain, tagged = read_image(tmp_path / "plain.jpg"), read_image(tmp_path / "tagged.jpg")
    assert plain.shape == (40, 60) and tagged.shape == (60, 40)
    np.testing.assert_allclose(tagged, np.rot90(plain, k=-1), atol=1e-6)
    assert image_shape(tmp_path / "plain.jpg") == (40, 60) and image_shape(tmp_path / "tagged.jpg") == (60, 40)
