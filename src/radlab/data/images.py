"""Reading radiographs into float arrays in [0, 1], and resizing them without distorting anatomy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from radlab.data.dicom import DICOM_POLICY, is_dicom, read_dicom, read_header

_RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_TO_GRAY_MODES = {"P", "PA", "1", "CMYK"}  # palette indices, 1-bit and ink values are not gray levels
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LOSSLESS_MASK_SUFFIXES = {".png", ".tif", ".tiff", ".bmp"}
_EXIF_ORIENTATION, _TRANSPOSING = 0x0112, {5, 6, 7, 8}  # orientations that swap width and height


INTENSITY_POLICY = ("png/jpeg: EXIF orientation applied, palette and 1-bit as gray, colour as mean of R, G, B "
                    "(alpha dropped); "
                    "8-bit / 255, deeper min-max per image; 16-bit colour PNG refused; " + DICOM_POLICY
                    + "; resize_pad: bilinear, longer side to size, zero padding")


def read_image(path: Path | str) -> np.ndarray:
    """Read an 8- or 16-bit grayscale PNG, a JPEG or a DICOM file as float32 [H, W] in [0, 1].

    8-bit images are divided by 255; deeper images (16-bit PNG, often 12 bits of signal) are min-max
    scaled per image, so a 12-bit radiograph stored in 16 bits is not read as nearly black. Palette,
    1-bit and CMYK images are read as their gray levels, colour as the mean of R, G and B, gray+alpha as its gray
    channel; an EXIF orientation (cameras, scanners) is applied. A 16-bit colour PNG raises ``OSError`` (Pillow
    would read it as 8 bits). DICOM goes through
    ``radlab.data.dicom.read_dicom`` (rescale, VOI LUT or window, MONOCHROME1 inversion).
    """
    path = Path(path)
    if path.suffix.lower() not in _RASTER_SUFFIXES and is_dicom(path):
        return read_dicom(path)
    if path.suffix.lower() == ".png" and _is_16bit_colour_png(path):
        raise OSError(f"{path}: 16-bit colour PNG: Pillow reads it as 8 bits; convert it to 16-bit grayscale")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)  # JPEG/TIFF orientation tags: the anatomy as displayed
            array = np.asarray(img.convert("L") if img.mode in _TO_GRAY_MODES else img)
    except (OSError, ValueError) as err:
        raise OSError(f"{path}: cannot read image ({err})") from err
    eight_bit = array.dtype == np.uint8
    array = _gray(array).astype(np.float32)
    if eight_bit:
        return array / 255.0
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def image_shape(path: Path | str) -> tuple[int, int]:
    """(height, width) of the array ``read_image`` gives for ``path`` (EXIF orientation applied), from the file's
    header without decoding its pixels."""
    path = Path(path)
    if path.suffix.lower() not in _RASTER_SUFFIXES and is_dicom(path):
        header = read_header(path)
        return header.rows, header.columns
    try:
        with Image.open(path) as img:
            width, height = img.size
            turned = img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING
    except (OSError, ValueError) as err:
        raise OSError(f"{path}: cannot read image ({err})") from err
    return (width, height) if turned else (height, width)


def read_mask(path: Path | str) -> np.ndarray:
    """A segmentation mask as bool [H, W]: every non-zero stored value is foreground, at any bit depth (0/1,
    0/255 and 0/65535 masks alike; a radiograph's intensity scaling would read a constant 16-bit mask as
    empty), EXIF orientation applied as to images. Lossy formats are refused: JPEG noise around an edge would
    read as foreground."""
    path = Path(path)
    if path.suffix.lower() not in _LOSSLESS_MASK_SUFFIXES:
        raise OSError(f"{path}: masks are read from lossless files ({', '.join(sorted(_LOSSLESS_MASK_SUFFIXES))}); "
                      f"a {path.suffix or 'suffix-less'} mask cannot be read exactly")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            array = np.asarray(img.convert("L") if img.mode in _TO_GRAY_MODES else img)
    except (OSError, ValueError) as err:
        raise OSError(f"{path}: cannot read mask ({err})") from err
    if array.ndim == 3:  # gray+alpha: its gray; colour: any of R, G, B
        array = array[..., 0] if array.shape[-1] == 2 else array[..., :3].max(axis=-1)
    return array > 0


def _gray(array: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] -> [H, W]: channel 0 of gray+alpha, the mean of R, G, B of colour (alpha dropped)."""
    if array.ndim == 2:
        return array
    if array.shape[-1] == 2:
        return array[..., 0]
    return array[..., :3].mean(axis=-1)


def _is_16bit_colour_png(path: Path) -> bool:
    """True for a PNG whose IHDR declares 16-bit samples and a colour type other than grayscale (0)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return False  # Image.open reports it
    is_png = len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
    return is_png and head[24] == 16 and head[25] != 0


def fit_square(image: np.ndarray, size: int, fit: str = "pad", resize: int | None = None) -> np.ndarray:
    """A tower's input geometry (``Preprocess``): ``fit`` the image to a ``resize`` square ("pad": longer side,
    zero padding; "crop": shorter side, centre crop), then centre-crop to ``size``."""
    side = resize or size
    square = resize_pad(image, side) if fit == "pad" else resize_crop(image, side)
    return center_crop(square, size)


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` keeping the aspect ratio, then centre-crop a square."""
    h, w = image.shape
    scale = size / min(h, w)
    return center_crop(_resize(image, max(size, round(h * scale)), max(size, round(w * scale))), size)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an image at least that large (a writable copy)."""
    h, w = image.shape
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size].copy()


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float image (Pillow's 32-bit float mode, no 8-bit rounding)."""
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the longer side to ``size`` keeping the aspect ratio, then pad to a square with zeros."""
    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _resize(image, nh, nw)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out
