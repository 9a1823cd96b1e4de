"""Reading radiographs into float arrays in [0, 1], and resizing them without distorting anatomy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from radlab.data.dicom import DICOM_POLICY, is_dicom, read_dicom

_RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


INTENSITY_POLICY = ("png/jpeg: 8-bit / 255, deeper min-max per image; " + DICOM_POLICY
                    + "; resize_pad: bilinear, longer side to size, zero padding")


def read_image(path: Path | str) -> np.ndarray:
    """Read an 8- or 16-bit grayscale PNG, a JPEG or a DICOM file as float32 [H, W] in [0, 1].

    8-bit images are divided by 255; deeper images (16-bit PNG, often 12 bits of signal) are min-max
    scaled per image, so a 12-bit radiograph stored in 16 bits is not read as nearly black. DICOM goes
    through ``radlab.data.dicom.read_dicom`` (rescale, VOI LUT or window, MONOCHROME1 inversion).
    """
    path = Path(path)
    if path.suffix.lower() not in _RASTER_SUFFIXES and is_dicom(path):
        return read_dicom(path)
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except (OSError, ValueError) as err:
        raise OSError(f"{path}: cannot read image ({err})") from err
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the longer side to ``size`` keeping the aspect ratio, then pad to a square with zeros."""
    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((nw, nh), Image.BILINEAR))
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out
