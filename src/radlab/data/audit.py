"""Leakage audit between a pre-training table and evaluation tables.

Three kinds of overlap are reported per evaluation table: shared patient ids; exact duplicate images (the
same pixels after decoding: a BLAKE2b hash of the image quantised to uint8 at its native size, so a PNG and
a DICOM of the same pixels match); near duplicates (resized, re-encoded or re-windowed copies). A near
duplicate is a pair whose 64-bit perceptual hashes (``imagehash.phash``) lie within ``threshold`` bits and
whose fine structure agrees (``detail``: correlation at least ``min_correlation``): the hash alone sees the
outline every chest film shares, and flags different patients (on phantoms, 0.9% of pairs within 4 bits; their
fine structure correlates at 0.86 at most, copies at 0.96 or more). Pairs the hash flags and the detail does not
confirm are listed as ``near_candidates``, never excluded. ``exclude`` removes from the pre-training table every
record of a patient that is shared or has a duplicated image. Images that cannot be read are counted, not
audited (``unreadable``). ``refuse_overlap`` is the guard a pre-training run calls before it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader, Dataset

from radlab.data.cache import to_uint8
from radlab.data.images import read_image
from radlab.data.records import RecordTable
from radlab.progress import tracked

log = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 8  # perceptual-hash bits within which a pair is compared in detail
MIN_CORRELATION = 0.95  # detail correlation that confirms a near duplicate
DETAIL_SIDE, DETAIL_SIGMA = 64, 2.0


class LeakageError(RuntimeError):
    """Pre-training data overlaps evaluation data."""


@dataclass(frozen=True)
class ImageHashes:
    ids: list[str]
    paths: list[Path]
    exact: list[str]
    phash: np.ndarray  # uint64 per image
    unreadable: list[str]  # ids of images that could not be read (not hashed)


def hashes(pixels: np.ndarray) -> tuple[str, int]:
    """(exact digest of the uint8 pixels and their shape, 64-bit perceptual hash)."""
    exact = hashlib.blake2b(f"{pixels.shape}".encode() + pixels.tobytes(), digest_size=16).hexdigest()
    bits = imagehash.phash(Image.fromarray(pixels), hash_size=8).hash.flatten()
    return exact, int.from_bytes(np.packbits(bits).tobytes(), "big")


def detail(pixels: np.ndarray) -> np.ndarray:
    """The image's fine structure as a unit vector: its 64x64 area thumbnail minus that thumbnail's Gaussian blur
    (sigma 2 px), centred. Two images' dot product is the correlation of their detail."""
    thumb = np.asarray(Image.fromarray(pixels).resize((DETAIL_SIDE, DETAIL_SIDE), Image.Resampling.BOX), np.float64)
    fine = (thumb - gaussian_filter(thumb, DETAIL_SIGMA, mode="nearest")).ravel()
    fine -= fine.mean()
    return fine / max(float(np.linalg.norm(fine)), 1e-12)


class _PixelJob(Dataset):
    """``(i, fn(uint8 pixels))`` per file, ``(i, None)`` for a file that cannot be read."""

    def __init__(self, paths: list[Path], fn: Callable[[np.ndarray], object]) -> None:
        self.paths, self.fn = paths, fn

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, object]:
        try:
            pixels = to_uint8(read_image(self.paths[i]))
        except OSError as err:
            log.warning("%s", err)
            return i, None
        return i, self.fn(pixels)


def each_image(paths: list[Path], fn: Callable[[np.ndarray], object], workers: int, what: str) -> list:
    """``fn`` of every image's uint8 pixels, in order (None where unreadable), read by ``workers`` processes."""
    out: list = [None] * len(paths)
    loader = DataLoader(_PixelJob(paths, fn), batch_size=None, num_workers=workers,
                        prefetch_factor=8 if workers else None)
    for i, value in tracked(loader, len(paths), f"{what} {len(paths)} images"):
        out[int(i)] = value
    return out


def image_hashes(table: RecordTable, workers: int = 0) -> ImageHashes:
    """Exact and perceptual hashes of every readable image record (text-only records are skipped)."""
    rows = np.flatnonzero(table.has_images())
    ids = table.frame["id"].to_numpy()[rows].tolist()
    paths = [table.image_path(int(i)) for i in rows]
    values = each_image(paths, hashes, workers, "hashing")
    readable = [k for k, v in enumerate(values) if v is not None]
    if len(readable) < len(values):
        log.warning("%d of %d images cannot be read and are not audited", len(values) - len(readable), len(values))
    return ImageHashes([ids[k] for k in readable], [paths[k] for k in readable],
                       [values[k][0] for k in readable], np.array([int(values[k][1]) for k in readable], np.uint64),
                       [ids[k] for k, v in enumerate(values) if v is None])


def detail_correlations(a: ImageHashes, b: ImageHashes, pairs: list[tuple[int, int, int]],
                        workers: int = 0) -> list[float]:
    """The detail correlation of each (i, j, distance) pair; only the images in pairs are read again."""
    left, right = sorted({i for i, _, _ in pairs}), sorted({j for _, j, _ in pairs})
    read = each_image([a.paths[i] for i in left] + [b.paths[j] for j in right], detail, workers, "comparing")
    vectors = {("a", i): v for i, v in zip(left, read[:len(left)], strict=True)}
    vectors |= {("b", j): v for j, v in zip(right, read[len(left):], strict=True)}
    return [float(np.dot(np.asarray(vectors["a", i]), np.asarray(vectors["b", j])))
            if vectors["a", i] is not None and vectors["b", j] is not None else 0.0 for i, j, _ in pairs]


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
    near_candidates: list[tuple[str, str, int, float]] = field(default_factory=list)  # (a, b, bits, correlation)
    unreadable: list[str] = field(default_factory=list)  # evaluation images not audited

    def empty(self) -> bool:
        return not (self.shared_patients or self.exact_duplicates or self.near_duplicates)


@dataclass
class AuditReport:
    overlaps: list[Overlap]
    threshold: int
    images_checked: bool
    min_correlation: float = MIN_CORRELATION
    unreadable: list[str] = field(default_factory=list)  # pre-training images not audited

    def clean(self) -> bool:
        return all(o.empty() for o in self.overlaps)

    def summary(self) -> list[dict[str, object]]:
        return [{"eval": o.name, "shared_patients": len(o.shared_patients), "exact_duplicates": len(o.exact_duplicates),
                 "near_duplicates": len(o.near_duplicates), "near_candidates": len(o.near_candidates),
                 "unreadable": len(o.unreadable) + len(self.unreadable)} for o in self.overlaps]

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"threshold": self.threshold, "min_correlation": self.min_correlation,
                                    "images_checked": self.images_checked, "unreadable": self.unreadable,
                                    "overlaps": [asdict(o) for o in self.overlaps]}, indent=1))
        return path


def audit(pretrain: RecordTable, evals: Mapping[str, RecordTable], images: bool = True,
          threshold: int = DEFAULT_THRESHOLD, workers: int = 0,
          min_correlation: float = MIN_CORRELATION) -> AuditReport:
    """Overlap of ``pretrain`` with each evaluation table: patients, and (``images``) exact/near duplicates."""
    patients = set(pretrain.frame["patient_id"])
    base = image_hashes(pretrain, workers) if images else None
    overlaps = []
    for name, table in evals.items():
        overlap = Overlap(name, sorted(patients & set(table.frame["patient_id"])))
        if base is not None:
            other = image_hashes(table, workers)
            overlap.unreadable = other.unreadable
            by_hash: dict[str, list[str]] = {}
            for rid, digest in zip(other.ids, other.exact, strict=True):
                by_hash.setdefault(digest, []).append(rid)
            overlap.exact_duplicates = [(rid, match) for rid, digest in zip(base.ids, base.exact, strict=True)
                                        for match in by_hash.get(digest, [])]
            exact = set(overlap.exact_duplicates)
            pairs = [(i, j, d) for i, j, d in near_pairs(base.phash, other.phash, threshold)
                     if (base.ids[i], other.ids[j]) not in exact]
            for (i, j, d), r in zip(pairs, detail_correlations(base, other, pairs, workers), strict=True):
                if r >= min_correlation:
                    overlap.near_duplicates.append((base.ids[i], other.ids[j], d))
                else:
                    overlap.near_candidates.append((base.ids[i], other.ids[j], d, round(r, 4)))
        overlaps.append(overlap)
    return AuditReport(overlaps, threshold, images, min_correlation, base.unreadable if base is not None else [])


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
    """Whether two sources can hold the same images under unrelated ids, so that only an image audit reveals
    their overlap: two provider sources of one ``Source.image_origin`` (RSNA and SIIM re-release NIH images), or
    any source no provider adapter names (a manifest's: it may hold any provider's images, under its own ids)."""
    from radlab.data.sources.base import SOURCES, Source

    def origin(name: str) -> str:
        return Source.trait(name, "image_origin") or name

    if any(name not in SOURCES or name == "manifest" for name in (a, b)):  # "manifest": its default source
        return True
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
