"""Reading DICOM radiographs into float [0, 1] arrays, and their non-identifying header fields.

Intensity policy (``DICOM_POLICY``): modality LUT (Rescale Slope/Intercept or a Modality LUT), then the
first VOI LUT of the file (a VOI LUT Sequence wins over Window Center/Width; LINEAR, LINEAR_EXACT and
SIGMOID windows), else the full stored range of the image; MONOCHROME1 is inverted so that air is dark.
PALETTE COLOR images are read through their palette (the mean of its R, G, B), colour images as the mean of
their channels.
Blank Rescale or Window values (type-3 elements may be present but empty) and a window width <= 0 count
as absent.
Compressed transfer syntaxes decode through pydicom's handlers (RLE natively, JPEG through pylibjpeg or
gdcm when installed). Identifying fields (names, ids, dates) are never logged or put in error messages.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
DICOM_POLICY = ("dicom: modality LUT -> first VOI LUT or window of width > 0 (else stored range) "
                "-> MONOCHROME1 inverted; palette colour through its palette")
_HEADER_TAGS = ["ViewPosition", "PatientSex", "PatientAge", "PatientID", "Rows", "Columns",
                "PhotometricInterpretation", "Modality"]


@dataclass(frozen=True)
class DicomHeader:
    """Raw header fields adapters use (they map view, sex and age to the record vocabulary).
    ``patient_key`` is the provider's (pseudonymised) Patient ID, used only to group images by patient;
    it is kept out of ``repr`` so it never reaches a log line."""

    view_position: str
    sex: str
    age: str
    rows: int
    columns: int
    photometric: str
    modality: str
    patient_key: str = field(repr=False)


def is_dicom(path: Path | str) -> bool:
    """True for a DICOM suffix, or a file with the 'DICM' marker after its 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom's value-validation warnings and log lines quote element values (names and ids included);
    keep them out of logs while reading and accessing headers."""
    with config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _open(path: Path, **kwargs: object) -> Dataset:
    try:
        return pydicom.dcmread(path, **kwargs)
    except Exception as err:  # a damaged file makes pydicom raise many kinds (struct.error, unknown VR, lengths)
        raise OSError(f"{path}: cannot read DICOM ({type(err).__name__})") from err


def read_header(path: Path | str) -> DicomHeader:
    """Non-pixel fields of one DICOM file (pixels are not read)."""
    path = Path(path)
    with _quiet():
        ds = _open(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        return DicomHeader(view_position=str(ds.get("ViewPosition", "")), sex=str(ds.get("PatientSex", "")),
                           age=str(ds.get("PatientAge", "")), rows=int(ds.get("Rows", 0) or 0),
                           columns=int(ds.get("Columns", 0) or 0),
                           photometric=str(ds.get("PhotometricInterpretation", "")),
                           modality=str(ds.get("Modality", "")), patient_key=str(ds.get("PatientID", "")))


def _number(ds: Dataset, keyword: str) -> float | None:
    """The (first) value of a numeric element; None when absent or empty (type-3 elements may be blank)."""
    value = ds.get(keyword)
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    return None if value is None or value == "" else float(value)


def _has_rescale(ds: Dataset) -> bool:
    """A Modality LUT Sequence, or both Rescale Slope and Intercept with values."""
    return bool(ds.get("ModalityLUTSequence")) or (
        _number(ds, "RescaleSlope") is not None and _number(ds, "RescaleIntercept") is not None)


def _window_of(ds: Dataset) -> tuple[float, float] | None:
    """The first Window Center/Width; None when either is absent or empty, or the width is not positive."""
    center, width = _number(ds, "WindowCenter"), _number(ds, "WindowWidth")
    return (center, width) if center is not None and width is not None and width > 0 else None


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A DICOM VOI window (PS3.3 C.11.2.1.2) mapped to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return bool(syntax.is_little_endian) if syntax is not None and syntax.is_transfer_syntax else True


def voi_lut(ds: Dataset, values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The first VOI LUT (PS3.3 C.11.2.1.1) applied to ``values``, with the range of its entries.

    Values below the first mapped one take the first entry, above the last the last. Entries stored as OW are
    16-bit words in the file's byte order, or bytes when an 8-bit LUT holds one byte per entry; the table is
    indexed in int64 (pydicom's ``apply_voi`` indexes an 8-bit LUT in uint8, so a 4096-entry display LUT
    wrapped every 256 values)."""
    item = ds.VOILUTSequence[0]
    count, first, bits = (int(v) for v in item.LUTDescriptor)
    count = count or 2 ** 16
    data = item.LUTData
    if isinstance(data, bytes):
        words = len(data) >= 2 * count or bits > 8
        data = np.frombuffer(data, dtype=("<" if _little_endian(ds) else ">") + ("u2" if words else "u1"),
                             count=min(count, len(data) // (2 if words else 1)))
    lut = np.asarray(data, dtype=np.float64).reshape(-1)
    index = np.clip(np.round(values).astype(np.int64) - first, 0, len(lut) - 1)
    return lut[index], float(lut.min()), float(lut.max())


def _palette_gray(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    """PALETTE COLOR: the palette's colours (not the indices), as the mean of R, G, B in [0, 1]."""
    rgb = apply_color_lut(pixels, ds)
    return rgb[..., :3].astype(np.float32).mean(axis=-1) / float(np.iinfo(rgb.dtype).max)


def to_unit_range(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Stored pixel values -> display intensities in [0, 1] under ``DICOM_POLICY``."""
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        return pixels[..., :3].astype(np.float32).mean(axis=-1) / float(2 ** int(ds.BitsStored) - 1)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        return _palette_gray(ds, pixels)
    values = apply_modality_lut(pixels, ds) if _has_rescale(ds) else pixels
    if ds.get("VOILUTSequence"):
        values, lo, hi = voi_lut(ds, values)
    elif (center_width := _window_of(ds)) is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper() or "LINEAR"
        values = window(values.astype(np.float64), *center_width, function)
        lo, hi = 0.0, 1.0
    else:
        values = values.astype(np.float64)
        lo, hi = float(values.min()), float(values.max())
    out = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def read_dicom(path: Path | str) -> np.ndarray:
    """One DICOM radiograph as float32 [H, W] in [0, 1]; the first frame of a multi-frame file."""
    path = Path(path)
    with _quiet():
        return _decode(path, _open(path))


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    if "PixelData" not in ds:
        raise OSError(f"{path}: DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as err:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        raise OSError(f"{path}: cannot decode pixel data with transfer syntax {syntax} "
                      f"(install pylibjpeg plugins or python-gdcm): {err}") from err
    except Exception as err:  # a header missing or mangling what the pixels need (AttributeError, struct.error, ...)
        raise OSError(f"{path}: cannot decode pixel data: {err}") from err
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    try:
        return to_unit_range(ds, pixels)
    except Exception as err:  # unusable rescale, window or LUT values; the values themselves stay out of the message
        raise OSError(f"{path}: cannot map its pixel values to intensities ({type(err).__name__} in the rescale, "
                      "window or LUT elements)") from err
