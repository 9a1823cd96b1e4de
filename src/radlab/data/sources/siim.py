"""SIIM-ACR Pneumothorax Segmentation in its stage 1 or stage 2 release, told apart by their label files.

Stage 1: ROOT holds ``train-rle.csv`` (``ImageId``, `` EncodedPixels`` - the provider's header has the leading
space), the labelled DICOMs as ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` and the unlabelled
competition test set ``dicom-images-test/``.

Stage 2 (the release Kaggle ships now): ROOT holds ``stage_2_train.csv`` (``ImageId,EncodedPixels``), the same
two DICOM folders and the unlabelled stage-2 test set as flat ``stage_2_images/<ImageId>.dcm`` (``ID_...``
ids). stage_2_train.csv labels the stage-1 train and test images, so both DICOM folders are labelled. ROOT
holding both label files is read as stage 2.

Only images the label file names are loaded: the unlabelled test folder's, and any DICOM in the labelled
folders without a label row, are skipped with one logged count, as VinDr's Kaggle test images are. The labelled
images are one pool (the competition's training set, in stage 2 even two stage-1 splits), not a train split of a
labelled release, so they carry no official split (``split`` empty) and ``splits.assign_splits`` draws train,
val and test per patient from the fractions: the source keeps a labelled test split.

Both releases use one code: ``EncodedPixels`` is the competition's relative run-length code over the
column-major pixel order ("offset length" pairs, each offset counted from the end of the previous run; not the
absolute 1-based start code of other competitions); "-1" means no pneumothorax; several rows for one image are
several regions. Learned from earhian/SIIM-ACR-Pneumothorax-Segmentation-5th (dataSet/reader.py decodes
stage_2_train.csv with the relative ``rle2mask`` of utils/utils.py; stage-1 train and test DICOMs beside it)
and lucaslmrs/fed_multi_task_breast_cancer (src/dataset/SIIM_ACR_preprocessing.py: train-rle.csv's rows are a
subset of stage_2_train.csv, which labels 12,047 stage-1 train and test images). Label: pneumothorax (1 when
any region).

Masks are derived files, so they are written only where the caller says: ``SIIMSource(mask_dir=...)`` decodes
every labelled image's mask (empty for negatives) to ``mask_dir/<ImageId>.png`` (0/255, the DICOM's size) and
fills ``mask_pneumothorax``; ``radlab data import siim ROOT --out DIR`` passes ``DIR/masks``. Without
``mask_dir`` the table has labels only and nothing is written. Sex, age, view and the (pseudonymised) Patient
ID come from the DICOM headers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """One release's files: its label file, the DICOM folders that file labels and the unlabelled test folder
    (skipped)."""

    labels: str
    labelled: tuple[str, ...]
    test: str


STAGE_1 = Release("train-rle.csv", ("dicom-images-train",), "dicom-images-test")
STAGE_2 = Release("stage_2_train.csv", ("dicom-images-train", "dicom-images-test"), "stage_2_images")


def release(root: Path) -> Release:
    """The release in ROOT, by its label file (stage 2 first); a clear error naming both layouts otherwise."""
    for candidate in (STAGE_2, STAGE_1):
        if (root / candidate.labels).is_file():
            return candidate
    raise FileNotFoundError(
        f"{root} holds neither SIIM-ACR release: stage 1 needs {STAGE_1.labels} with dicom-images-train/ "
        f"(and dicom-images-test/); stage 2 needs {STAGE_2.labels} with dicom-images-train/ and "
        f"dicom-images-test/ (and stage_2_images/)")


def decode_rle(code: str, rows: int, columns: int) -> np.ndarray:
    """The competition's relative RLE (both releases) -> uint8 mask [rows, columns] with 255 inside."""
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


def read_codes(path: Path) -> dict[str, list[str]]:
    """ImageId -> its EncodedPixels rows ("-1" or run lengths) from a release's label file."""
    frame = read_table(path, ["ImageId"], dtype=str, skipinitialspace=True)
    column = next((c for c in frame.columns if c.strip() == "EncodedPixels"), None)
    if column is None:
        raise SourceFormatError(f"{path}: missing column 'EncodedPixels'")
    codes: dict[str, list[str]] = {}
    for row, (image_id, code) in enumerate(frame[["ImageId", column]].itertuples(index=False)):
        code = str(code).strip()
        if code != "-1" and not all(v.isdigit() for v in code.split()):
            raise bad_row(path, row, f"EncodedPixels {code[:40]!r} is neither -1 nor run lengths")
        codes.setdefault(image_id, []).append(code)
    return codes


def find_images(folder: Path) -> dict[str, Path]:
    """ImageId -> DICOM file under ``folder`` (nested or flat); empty when the folder is absent."""
    return {p.stem: p for p in folder.rglob("*.dcm")} if folder.is_dir() else {}


def labelled_images(root: Path, layout: Release, codes: dict[str, list[str]]) -> dict[str, Path]:
    """The DICOM of every image the label file lists; an error when the layout's folders lack some. Images there
    and in the test folder that the label file does not name are skipped, counted in one log line."""
    images: dict[str, Path] = {}
    for folder in layout.labelled:
        images.update(find_images(Source.require(root / folder)))
    missing = sorted(set(codes) - set(images))
    folders = " and ".join(str(root / f) for f in layout.labelled)
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of {layout.labels} are missing under {folders}, "
                                f"e.g. {missing[0]}.dcm")
    unnamed = len(set(images) - set(codes))
    test = len(set(find_images(root / layout.test)) - set(codes))
    if unnamed or test:
        log.info("siim: %d unlabelled images skipped (%d in %s, the competition's test set; %d without a row in %s "
                 "under %s); the %d labelled images carry no official split", unnamed + test, test,
                 root / layout.test, unnamed, layout.labels, folders, len(codes))
    return {image_id: images[image_id] for image_id in sorted(codes)}


def study_of(path: Path, root: Path) -> str:
    """The study folder of ``<folder>/<study>/<series>/<ImageId>.dcm``; the image id in a flat folder."""
    parts = path.relative_to(root).parts
    return parts[1] if len(parts) == 4 else path.stem


@SOURCES.register("siim", "SIIM-ACR Pneumothorax (stage 1 or 2 release): DICOM, relative-RLE masks decoded "
                          "to PNG with mask_dir")
class SIIMSource(Source):
    name = "siim"
    markers = (STAGE_1.labels, STAGE_2.labels)
    image_origin = "nih"
    label_map = LABEL_MAP

    def __init__(self, mask_dir: str | Path | None = None) -> None:
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        layout = release(root)
        rle_path = root / layout.labels
        codes = read_codes(rle_path)
        train = labelled_images(root, layout, codes)
        if self.mask_dir is not None:
            self.mask_dir.mkdir(parents=True, exist_ok=True)
        records = [self._labelled(root, path, codes[image_id], rle_path) for image_id, path in train.items()]
        return finish(records, root, str(rle_path))

    def _labelled(self, root: Path, path: Path, codes: list[str], rle_path: Path) -> dict[str, Any]:
        header = read_header(path)
        record = {
            "id": f"siim_{path.stem}", "image_path": str(path.relative_to(root)), "source": self.name,
            "patient_id": f"siim_{header.patient_key or path.stem}",
            "study_id": f"siim_{study_of(path, root)}", "view": view_code(header.view_position),
            "split": "", "sex": sex_code(header.sex), "age": age_years(header.age),
            **harmonise({"Pneumothorax": float(any(c != "-1" for c in codes))}, LABEL_MAP),
        }
        if self.mask_dir is not None:
            record["mask_pneumothorax"] = str(self._write_mask(path.stem, codes, header.rows, header.columns,
                                                               rle_path))
        return record

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
