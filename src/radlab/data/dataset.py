"""Torch Datasets over a record table (images with labels and reports, or reports alone), and the collator
that turns samples into training batches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from radlab.data.images import fit_square, read_image
from radlab.data.records import RecordTable
from radlab.models.towers import Preprocess

if TYPE_CHECKING:
    from radlab.data.cache import ImageCache

log = logging.getLogger(__name__)
ImageTransform = Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]]


def cache_size(preprocess: Preprocess, source_size: int | None = None) -> int:
    """The image size a cache (``radlab.data.cache``, padded squares) must hold for this preprocessing read at
    ``source_size`` (``RecordDataset``); an error when the tower crops or resizes first, which the cache cannot
    serve."""
    if (preprocess.fit, preprocess.resize) != ("pad", None):
        raise ValueError(f"the image cache holds padded squares; this tower's geometry is {preprocess.geometry()}: "
                         "run without the cache")
    return read_geometry(preprocess, source_size)[0]


def read_geometry(preprocess: Preprocess, source_size: int | None) -> tuple[int, int | None]:
    """The square side and ``resize`` at which images are read: the tower's, or its geometry scaled to
    ``source_size`` (a larger side that random views are cut from, so a zoomed crop keeps source detail)."""
    if source_size is None or source_size == preprocess.image_size:
        return preprocess.image_size, preprocess.resize
    if source_size < preprocess.image_size:
        raise ValueError(f"data.source_size ({source_size}) is smaller than the tower's image size "
                         f"({preprocess.image_size}); views would be upsampled: leave it unset or raise it")
    scale = source_size / preprocess.image_size
    return source_size, None if preprocess.resize is None else round(preprocess.resize * scale)


def train_augment(image_size: int) -> ImageTransform:
    """Mild augmentation for radiographs: crops that keep most anatomy, small rotations and contrast changes.
    No horizontal flip: it would swap laterality (heart side, left/right findings)."""
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomAffine(degrees=5),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
    ])


class RecordDataset(Dataset):
    """Images in [0, 1] brought to the tower's geometry (``preprocess``), optionally augmented, then
    normalised; with the record's labels (NaN = not annotated) and report text.

    ``source_size`` reads the images at a larger side (the same geometry scaled) for a ``transform`` that cuts
    random views at the tower's size from them (every training view does); without a transform the image is
    then resized to the tower's size, so a sample is always what the tower takes.

    An image that cannot be read is an ``OSError`` naming its record and file; with ``skip_unreadable``
    (pre-training's ``data.unreadable_images=skip``) the sample is instead the next readable record's (rows
    wrap around), the file is logged once per process and the sample is marked ``replaced``; the same rows always
    stand in, so a resumed run reads what the original read."""

    def __init__(self, table: RecordTable, preprocess: Preprocess, label_names: Sequence[str] = (),
                 transform: ImageTransform | None = None, cache: ImageCache | None = None,
                 skip_unreadable: bool = False, source_size: int | None = None) -> None:
        if not table.has_images().all():
            rows = np.flatnonzero(~table.has_images())
            raise ValueError(f"{len(rows)} records have no image (first: row {rows[0]}, id "
                             f"{table.frame['id'].iat[rows[0]]!r}); use text-only tasks for them")
        self.table = table
        self.preprocess = preprocess
        self.label_names = list(label_names)
        self.labels = table.labels(self.label_names)
        self.texts = table.texts()
        self.transform = transform
        self.cache = cache
        self.skip_unreadable = skip_unreadable
        self.read_size, self.read_resize = read_geometry(preprocess, source_size)
        self.unreadable: set[int] = set()
        self.studies = pd.factorize(study_keys(table.frame))[0]
        if cache is not None:  # a pre-resized uint8 cache (radlab.data.cache); refused when stale
            cache.validate(table, cache_size(preprocess, self.read_size))
            self.cache_rows = [cache.rows[r] for r in table.frame["id"]]

    def __len__(self) -> int:
        return len(self.table)

    def load_image(self, i: int) -> torch.Tensor:
        """The stored image as [1, S, S] in [0, 1] (S the read size), before augmentation and normalisation."""
        if self.cache is not None:
            return torch.from_numpy(self.cache[self.cache_rows[i]].astype(np.float32) / 255.0).unsqueeze(0)
        array = fit_square(read_image(self.table.image_path(i)), self.read_size, self.preprocess.fit,
                           self.read_resize)
        return torch.from_numpy(array).unsqueeze(0)

    def readable_image(self, i: int) -> tuple[int, torch.Tensor]:
        """Row ``i``'s image, or with ``skip_unreadable`` the first readable one from row ``i`` on, and its row."""
        for offset in range(len(self) if self.skip_unreadable else 1):
            row = (i + offset) % len(self)
            if row in self.unreadable:
                continue
            try:
                return row, self.load_image(row)
            except OSError as err:
                # a record, not a row: the rows of a merged table's split are no file's rows
                problem = f"record {self.table.frame['id'].iat[row]!r}: {err}"
                if not self.skip_unreadable:
                    raise OSError(f"{problem}; fix the file, or list every unreadable one with `radlab data check "
                                  "TABLE` (--drop OUT writes the table without them); pre-training can also stand "
                                  "the next readable record in (data.unreadable_images=skip)") from err
                log.warning("skipping an unreadable image, %s", problem)
                self.unreadable.add(row)
        raise OSError(f"none of the {len(self)} images of this table can be read")

    def __getitem__(self, i: int) -> dict:
        row, image = self.readable_image(i)
        if self.transform is not None:
            views = self.transform(image)
        elif self.read_size != self.preprocess.image_size:
            views = TF.resize(image, [self.preprocess.image_size] * 2, antialias=True)
        else:
            views = image
        if isinstance(views, list):
            normalised: torch.Tensor | list[torch.Tensor] = [self._normalise(v) for v in views]
        else:
            normalised = self._normalise(views)
        return {"index": row, "study": int(self.studies[row]), "image": normalised,
                "labels": torch.from_numpy(self.labels[row]), "text": self.texts[row], "replaced": row != i}

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        return self.preprocess.normalise(image.clamp(0, 1).unsqueeze(0))[0]


def study_keys(frame: pd.DataFrame) -> pd.Series:
    """Each record's study: its patient's ``study_id`` (study ids need only be unique within a patient, as
    per-patient numbering such as CheXpert's ``study1`` is), or the record's own id where it has none. A study's
    images share its report."""
    return (frame["patient_id"] + "\x1f" + frame["study_id"]).where(frame["study_id"] != "", frame["id"])


def study_reports(table: RecordTable) -> RecordTable:
    """One record per study with a non-empty report (its first), images or not: what text-only objectives
    read, so a study's report counts once however many images it has."""
    rows = np.flatnonzero((table.frame["report"].fillna("").str.strip() != "").to_numpy())
    return table.subset(rows[~study_keys(table.frame.iloc[rows]).duplicated().to_numpy()])


class ReportDataset(Dataset):
    """The reports of a table (``study_reports``), as samples with their row index."""

    def __init__(self, table: RecordTable) -> None:
        self.table = table
        self.texts = table.texts()

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "text": self.texts[i]}


class Collator:
    """Stack samples and add label masks (annotated = not NaN) and ``replaced``, how many samples stood in for an
    unreadable image (``RecordDataset``). ``study`` numbers each sample's study (records of one study share a
    report; a sample without one is its own). Samples without images (``ReportDataset``) give batches of index,
    study and text."""

    def __call__(self, samples: list[dict]) -> dict:
        texts = [s["text"] for s in samples]
        batch: dict = {
            "index": torch.tensor([s["index"] for s in samples]),
            "study": torch.tensor([s.get("study", s["index"]) for s in samples]),
            "text": texts,
            "has_text": torch.tensor([bool(t.strip()) for t in texts]),
        }
        if "image" in samples[0]:
            labels = torch.stack([s["labels"] for s in samples])
            batch.update(image=_stack_views([s["image"] for s in samples]), labels=labels,
                         label_mask=~torch.isnan(labels),
                         replaced=torch.tensor(sum(s.get("replaced", False) for s in samples)))
        return batch


def with_tokens(batch: dict, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]) -> dict:
    """The batch with its texts tokenised as ``batch["tokens"]``. Training does this in its own process, not in
    loader workers: a worker would need the text tower (pickled whole into spawned or forkserver workers,
    parameters on the GPU included), where the tokenizer alone is all it uses."""
    return {**batch, "tokens": tokenize(batch["text"])}


def _stack_views(images: list) -> torch.Tensor | list[torch.Tensor]:
    """Stack single images to [B, C, H, W]; stack multi-view samples per view position to a list."""
    if isinstance(images[0], list):
        return [torch.stack([views[k] for views in images]) for k in range(len(images[0]))]
    return torch.stack(images)
