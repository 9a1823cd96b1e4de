"""SIIM-ACR Pneumothorax Segmentation (stage 1 release) in its layout.

ROOT holds ``train-rle.csv`` (``ImageId``, `` EncodedPixels`` - the provider's header has the leading space)
and the DICOMs as ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` (and ``dicom-images-test/``, no
labels). ``EncodedPixels`` is the competition's relative run-length code over the column-major pixel order
("offset length" pairs, each offset counted from the end of the previous run); "-1" means no pneumothorax;
several rows for one image are several regions. Label: pneumothorax (1 when any region).

Masks are derived files, so they are written only where the caller says: ``SIIMSource(mask_dir=...)``
decodes every labelled image's mask (empty for negatives) to ``mask_dir/<ImageId>.png`` (0/255, the
DICOM's size) and fills ``mask_pneumothorax``; ``radlab data import siim ROOT --out DIR`` passes
``DIR/masks``. Without ``mask_dir`` the table has labels only and nothing is written. Sex, age, view and
the (pseudonymised) Patient ID come from the DICOM headers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from radlab.data.dicom import read_header
from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    SourceFormatError,
    age_years,
    bad_row,
    finish,
    harmonise,
    read_table,
    sex_code,
    view_code,
)

LABEL_MAP: dict[str, str] = {"Pneumothorax": "pneumothorax"}
RLE_FILE = "train-rle.csv"
FOLDERS = {"dicom-images-train": "train", "dicom-images-test": "test"}


def decode_rle(code: str, rows: int, columns: int) -> np.ndarray:
    """The competition's relative RLE -> uint8 mask [rows, columns] with 255 inside."""
    values = [int(v) for v in code.split()]
    if len(values) % 2:
        raise ValueError("odd number of values")
    flat = np.zeros(rows * columns, dtype=np.uint8)
    position = 0
    for offset, length in zip(values[0::2], values[1::2], strict=True):
        position += offset
        if offset < 0 or length < 0 or position + length > flat.size:
            raise ValueError(f"run at {position} of length {length} leaves the {rows}x{columns} image")
        flat[position:position + length] = 255
        position += length
    return flat.reshape(columns, rows).T


@SOURCES.register("siim", "SIIM-ACR Pneumothorax: DICOM, relative-RLE masks decoded to PNG with mask_dir")
class SIIMSource(Source):
    name = "siim"
    image_origin = "nih"
    label_map = LABEL_MAP

    def __init__(self, mask_dir: str | Path | None = None) -> None:
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        rle_path = self.require(root / RLE_FILE)
        frame = read_table(rle_path, ["ImageId"], dtype=str, skipinitialspace=True)
        column = next((c for c in frame.columns if c.strip() == "EncodedPixels"), None)
        if column is None:
            raise SourceFormatError(f"{rle_path}: missing column 'EncodedPixels'")
        codes: dict[str, list[str]] = {}
        for row, (image_id, code) in enumerate(frame[["ImageId", column]].itertuples(index=False)):
            code = str(code).strip()
            if code != "-1" and not all(v.isdigit() for v in code.split()):
                raise bad_row(rle_path, row, f"EncodedPixels {code[:40]!r} is neither -1 nor run lengths")
            codes.setdefault(image_id, []).append(code)
        self.require(root / "dicom-images-train")
        if self.mask_dir is not None:
            self.mask_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for folder, split in FOLDERS.items():
            images = {p.stem: p for p in (root / folder).rglob("*.dcm")} if (root / folder).is_dir() else {}
            if split == "train":
                missing = sorted(set(codes) - set(images))
                if missing:
                    raise FileNotFoundError(f"{len(missing)} images of {RLE_FILE} are missing under "
                                            f"{root / folder}, e.g. {missing[0]}.dcm")
            for image_id in sorted(images):
                if split == "train" and image_id not in codes:
                    continue
                header = read_header(images[image_id])
                record = {
                    "id": f"siim_{image_id}", "image_path": str(images[image_id].relative_to(root)),
                    "source": self.name, "patient_id": f"siim_{header.patient_key or image_id}",
                    "study_id": f"siim_{images[image_id].parent.parent.name}", "view": view_code(header.view_position),
                    "split": split, "sex": sex_code(header.sex), "age": age_years(header.age),
                }
                if split == "train":
                    positive = any(c != "-1" for c in codes[image_id])
                    record.update(harmonise({"Pneumothorax": float(positive)}, LABEL_MAP))
                    if self.mask_dir is not None:
                        record["mask_pneumothorax"] = str(self._write_mask(image_id, codes[image_id], header.rows,
                                                                           header.columns, rle_path))
                records.append(record)
        return finish(records, root, str(rle_path))

    def _write_mask(self, image_id: str, codes: list[str], rows: int, columns: int, rle_path: Path) -> Path:
        assert self.mask_dir is not None
        mask = np.zeros((rows, columns), dtype=np.uint8)
        for code in codes:
            if code != "-1":
                try:
                    mask |= decode_rle(code, rows, columns)
                except ValueError as err:
                    raise SourceFormatError(f"{rle_path}: ImageId {image_id}: {err}") from err
        path = self.mask_dir / f"{image_id}.png"
        Image.fromarray(mask).save(path)
        return path.resolve()
