"""Leakage audit between a pre-training table and evaluation tables.

Three kinds of overlap are reported per evaluation table: shared patient ids; exact duplicate images (the
same pixels after decoding: a BLAKE2b hash of the image quantised to uint8 at its native size, so a PNG and
a DICOM of the same pixels match); near duplicates (64-bit perceptual hash, ``imagehash.phash``, within
``threshold`` bits Hamming distance: resized, re-encoded or slightly re-windowed copies). ``exclude``
removes from the pre-training table every record of a patient that is shared or has a duplicated image.
``refuse_overlap`` is the guard a pre-training run calls before it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from radlab.data.cache import to_uint8
from radlab.data.images import read_image
from radlab.data.records import RecordTable
from radlab.progress import tracked

log = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 4


class LeakageError(RuntimeError):
    """Pre-training data overlaps evaluation data."""


@dataclass(frozen=True)
class ImageHashes:
    ids: list[str]
    exact: list[str]
    phash: np.ndarray  # uint64 per image


class _HashJob(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str, int]:
        pixels = to_uint8(read_image(self.paths[i]))
        exact = hashlib.blake2b(f"{pixels.shape}".encode() + pixels.tobytes(), digest_size=16).hexdigest()
        bits = imagehash.phash(Image.fromarray(pixels), hash_size=8).hash.flatten()
        return i, exact, int.from_bytes(np.packbits(bits).tobytes(), "big")


def image_hashes(table: RecordTable, workers: int = 0) -> ImageHashes:
    """Exact and perceptual hashes of every image record (text-only records are skipped)."""
    rows = np.flatnonzero(table.has_images())
    paths = [table.image_path(int(i)) for i in rows]
    exact, phash = [""] * len(rows), np.zeros(len(rows), dtype=np.uint64)
    loader = DataLoader(_HashJob(paths), batch_size=None, num_workers=workers,
                        prefetch_factor=8 if workers else None)
    for i, digest, value in tracked(loader, len(paths), f"hashing {len(paths)} images"):
        exact[int(i)], phash[int(i)] = digest, np.uint64(int(value))
    return ImageHashes(table.frame["id"].to_numpy()[rows].tolist(), exact, phash)


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int, block: int = 2048) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair of 64-bit hashes within ``threshold`` bits, blockwise."""
    out: list[tuple[int, int, int]] = []
    for start in range(0, len(a), block):
        for other in range(0, len(b), 4 * block):
            distance = np.bitwise_count(a[start:start + block, None] ^ b[None, other:other + 4 * block])
            for i, j in zip(*np.nonzero(distance <= threshold), strict=True):
                out.append((start + int(i), other + int(j), int(distance[i, j])))
    return out


@dataclass
class Overlap:
    """What one evaluation table shares with the pre-training table (record ids are the tables' own)."""

    name: str
    shared_patients: list[str] = field(default_factory=list)
    exact_duplicates: list[tuple[str, str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.shared_patients or self.exact_duplicates or self.near_duplicates)


@dataclass
class AuditReport:
    overlaps: list[Overlap]
    threshold: int
    images_checked: bool

    def clean(self) -> bool:
        return all(o.empty() for o in self.overlaps)

    def summary(self) -> list[dict[str, object]]:
        return [{"eval": o.name, "shared_patients": len(o.shared_patients), "exact_duplicates": len(o.exact_duplicates),
                 "near_duplicates": len(o.near_duplicates)} for o in self.overlaps]

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"threshold": self.threshold, "images_checked": self.images_checked,
                                    "overlaps": [asdict(o) for o in self.overlaps]}, indent=1))
        return path


def audit(pretrain: RecordTable, evals: Mapping[str, RecordTable], images: bool = True,
          threshold: int = DEFAULT_THRESHOLD, workers: int = 0) -> AuditReport:
    """Overlap of ``pretrain`` with each evaluation table: patients, and (``images``) exact/near duplicates."""
    patients = set(pretrain.frame["patient_id"])
    base = image_hashes(pretrain, workers) if images else None
    overlaps = []
    for name, table in evals.items():
        overlap = Overlap(name, sorted(patients & set(table.frame["patient_id"])))
        if base is not None:
            other = image_hashes(table, workers)
            by_hash: dict[str, list[str]] = {}
            for rid, digest in zip(other.ids, other.exact, strict=True):
                by_hash.setdefault(digest, []).append(rid)
            overlap.exact_duplicates = [(rid, match) for rid, digest in zip(base.ids, base.exact, strict=True)
                                        for match in by_hash.get(digest, [])]
            exact = set(overlap.exact_duplicates)
            overlap.near_duplicates = [(base.ids[i], other.ids[j], d)
                                       for i, j, d in near_pairs(base.phash, other.phash, threshold)
                                       if (base.ids[i], other.ids[j]) not in exact]
        overlaps.append(overlap)
    return AuditReport(overlaps, threshold, images)


def flagged_patients(pretrain: RecordTable, report: AuditReport) -> set[str]:
    """Pre-training patients to drop: shared ones, and those owning any duplicated image."""
    by_id = dict(zip(pretrain.frame["id"], pretrain.frame["patient_id"], strict=True))
    flagged: set[str] = set()
    for overlap in report.overlaps:
        flagged |= set(overlap.shared_patients)
        flagged |= {by_id[a] for a, _ in overlap.exact_duplicates} | {by_id[a] for a, _, _ in overlap.near_duplicates}
    return flagged


def exclude(pretrain: RecordTable, report: AuditReport) -> RecordTable:
    """The pre-training table without any record of a flagged patient."""
    flagged = flagged_patients(pretrain, report)
    return pretrain.subset(~pretrain.frame["patient_id"].isin(flagged).to_numpy())


def share_images(a: str, b: str) -> bool:
    """Whether two different sources can hold the same images under unrelated ids (``Source.image_origin``),
    so that only an image audit reveals their overlap."""
    from radlab.data.sources.base import Source

    def origin(name: str) -> str:
        return Source.trait(name, "image_origin") or name

    return a != b and origin(a) == origin(b)


def tables_share_images(a: RecordTable, b: RecordTable) -> bool:
    """Whether a source of ``a``'s records can hold images of ``b``'s under unrelated ids (``share_images``):
    decided by the sources the records carry, whatever loader read them (``table``, ``auto``)."""
    return any(share_images(x, y) for x in set(a.frame["source"]) for y in set(b.frame["source"]))


def refuse_overlap(pretrain: RecordTable, evals: Mapping[str, RecordTable], force: bool = False,
                   images: bool = False, threshold: int = DEFAULT_THRESHOLD, workers: int = 0) -> AuditReport:
    """Raise LeakageError when pre-training data shares patients (or, with ``images``, duplicate images) with
    any evaluation table; with ``force`` only log a warning. Returns the audit report. Messages give counts
    only (patient ids can come from DICOM PatientID); ``radlab data audit --report`` writes the full lists."""
    report = audit(pretrain, evals, images=images, threshold=threshold, workers=workers)
    if report.clean():
        return report
    details = "; ".join(f"{o.name}: {len(o.shared_patients)} shared patients, "
                        f"{len(o.exact_duplicates)} exact and {len(o.near_duplicates)} near-duplicate images"
                        for o in report.overlaps if not o.empty())
    message = f"pre-training data overlaps evaluation data: {details}"
    if force:
        log.warning("%s (forced: continuing)", message)
        return report
    raise LeakageError(f"{message}. List them with `radlab data audit PRETRAIN EVAL... --report FILE`, remove "
                       f"them with `--exclude OUT`, or force the run to accept the leak.")
