"""Leakage audit between a pre-training table and evaluation tables.

Three kinds of overlap are reported per evaluation table: shared patient ids; exact duplicate images (the
same pixels after decoding: a BLAKE2b hash of the image quantised to uint8 at its native size, so a PNG and
a DICOM of the same pixels match); near duplicates (resized, re-encoded or re-windowed copies). A near
duplicate is a pair whose 64-bit perceptual hashes (``imagehash.phash``) lie within ``threshold`` bits and
whose fine structure agrees (``detail``: correlation at least ``min_correlation``): the hash alone sees the
outline every chest film shares, and flags different patients (on phantoms, 0.9% of pairs within 4 bits; their
fine structure correlates at 0.86 at most, copies at 0.96 or more). Pairs the hash flags and the detail does not
confirm are counted (``near_candidates_total``, ``near_candidate_ids``) and the best-correlated listed as
``near_candidates``, never excluded. Each image is read once (hashes and detail vector together); the pair
search streams block by block (``near_matches``), so memory does not grow with the number of pairs.
``exclude`` removes from the pre-training table every record of a patient that is shared or has a duplicated
image. Images that cannot be read are counted, not audited (``unreadable``). ``refuse_overlap`` is the guard a
pre-training run calls before it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
DETAIL_DTYPE = np.float16  # moves a correlation by < 1e-4 (4e-5 at most on phantoms); half float32's storage
MAX_CANDIDATES = 1000  # unconfirmed pairs listed per evaluation table: the best-correlated (all are counted)
DENSE_FRACTION = 1 / 32  # pair density above which a block's correlations come from one matrix product


class LeakageError(RuntimeError):
    """Pre-training data overlaps evaluation data."""


@dataclass(frozen=True)
class ImageHashes:
    """What the audit keeps of each readable image record, read once: row k of every field is one image."""

    ids: list[str]
    exact: list[str]
    phash: np.ndarray  # uint64 per image
    details: np.ndarray  # (images, DETAIL_SIDE**2) DETAIL_DTYPE unit vectors (``detail``); a memmap when stored
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


def measure(pixels: np.ndarray) -> tuple[str, int, np.ndarray]:
    """All the audit needs of one image: ``hashes`` and the ``detail`` vector as DETAIL_DTYPE."""
    return *hashes(pixels), detail(pixels).astype(DETAIL_DTYPE)


def _as_is(item: object) -> object:
    return item


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


def each_image(paths: list[Path], fn: Callable[[np.ndarray], object], workers: int,
               what: str) -> Iterator[tuple[int, object]]:
    """``(index, fn(uint8 pixels))`` per image as it is read (None where unreadable), by ``workers`` processes."""
    loader = DataLoader(_PixelJob(paths, fn), batch_size=None, num_workers=workers, collate_fn=_as_is,
                        prefetch_factor=8 if workers else None)
    for i, value in tracked(loader, len(paths), f"{what} {len(paths)} images"):
        yield int(i), value


def image_hashes(table: RecordTable, workers: int = 0, store: Path | None = None) -> ImageHashes:
    """Hashes and detail vector of every readable image record (text-only records are skipped), each image read
    once. With ``store`` (a ``.npy`` path) the detail vectors go to a memmap there instead of RAM."""
    rows = np.flatnonzero(table.has_images())
    ids = table.frame["id"].to_numpy()[rows].tolist()
    paths = [table.image_path(int(i)) for i in rows]
    shape = (len(paths), DETAIL_SIDE * DETAIL_SIDE)
    details = (np.lib.format.open_memmap(store, "w+", DETAIL_DTYPE, shape) if store is not None and paths
               else np.empty(shape, DETAIL_DTYPE))
    exact, phash, readable = [""] * len(paths), np.zeros(len(paths), np.uint64), np.zeros(len(paths), bool)
    for k, value in each_image(paths, measure, workers, "hashing"):
        if value is not None:
            exact[k], phash[k], details[k] = value
            readable[k] = True
    keep = np.flatnonzero(readable)
    if len(keep) < len(paths):
        log.warning("%d of %d images cannot be read and are not audited", len(paths) - len(keep), len(paths))
        for row, k in enumerate(keep):  # compact in place: k >= row
            details[row] = details[k]
    return ImageHashes([ids[k] for k in keep], [exact[k] for k in keep], phash[keep], details[:len(keep)],
                       [ids[k] for k in np.flatnonzero(~readable)])


def correlations(a: np.ndarray, b: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Detail correlation ``a[i[k]] . b[j[k]]`` per pair k (float64). The rows involved are read once, as float32
    (memory: those rows); then one product of all of them where the pairs are at least DENSE_FRACTION of their
    combinations, else one matrix-vector product per run of pairs sharing a row of ``a`` (sorted ``i``: one)."""
    out = np.empty(len(i), np.float64)
    if not len(i):
        return out
    rows_a, at = np.unique(i, return_inverse=True)
    rows_b, bt = np.unique(j, return_inverse=True)
    left, right = a[rows_a].astype(np.float32), b[rows_b].astype(np.float32)
    if len(i) >= DENSE_FRACTION * len(rows_a) * len(rows_b):
        out[:] = (left @ right.T)[at, bt]
        return out
    starts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], len(i)], strict=True):
        out[s:e] = right[bt[s:e]] @ left[at[s]]
    return out


@dataclass
class NearMatches:
    """Pairs (row of a, row of b) within the hash threshold, exact duplicates left out, in (i, j) order."""

    duplicates: list[tuple[int, int, int]]  # (i, j, bits): confirmed by the detail, all of them
    candidates: list[tuple[int, int, int, float]]  # (i, j, bits, r): the ``cap`` best-correlated unconfirmed
    total: int  # unconfirmed pairs in all
    candidate_rows: list[int]  # rows of b in any unconfirmed pair


def _best(i: np.ndarray, j: np.ndarray, d: np.ndarray, r: np.ndarray, cap: int) -> tuple[np.ndarray, ...]:
    """The ``cap`` pairs of highest correlation, ties to the lowest (i, j)."""
    order = np.lexsort((j, i, -r))[:cap]
    return i[order], j[order], d[order], r[order]


def near_matches(a: ImageHashes, b: ImageHashes, threshold: int, min_correlation: float = MIN_CORRELATION,
                 cap: int = MAX_CANDIDATES, block: int = 2048) -> NearMatches:
    """Stream every pair of ``a`` x ``b`` images within ``threshold`` hash bits, ``block`` x ``block`` hashes at a
    time, and settle each pair by its detail correlation at once: memory stays bounded by the block, the
    confirmed pairs and ``cap`` candidates, whatever the number of pairs."""
    codes: dict[str, int] = {}
    code_a = np.array([codes.setdefault(h, len(codes)) for h in a.exact], np.int64)
    code_b = np.array([codes.setdefault(h, len(codes)) for h in b.exact], np.int64)
    duplicates: list[tuple[int, int, int]] = []
    best = tuple(np.empty(0, t) for t in (np.int64, np.int64, np.int64, np.float64))
    total, seen = 0, np.zeros(len(b.ids), bool)
    for start in range(0, len(a.ids), block):
        for other in range(0, len(b.ids), block):
            bits = np.bitwise_count(a.phash[start:start + block, None] ^ b.phash[None, other:other + block])
            i, j = np.nonzero(bits <= threshold)
            d = bits[i, j].astype(np.int64)
            i, j = i + start, j + other
            keep = code_a[i] != code_b[j]
            i, j, d = i[keep], j[keep], d[keep]
            r = correlations(a.details, b.details, i, j)
            sure = r >= min_correlation
            duplicates.extend(zip(i[sure].tolist(), j[sure].tolist(), d[sure].tolist(), strict=True))
            rest = ~sure
            total += int(rest.sum())
            seen[j[rest]] = True
            best = _best(*(np.concatenate([x, y[rest]]) for x, y in zip(best, (i, j, d, r), strict=True)), cap)
    return NearMatches(sorted(duplicates), sorted(zip(*(x.tolist() for x in best), strict=True)), total,
                       np.flatnonzero(seen).tolist())


@dataclass
class Overlap:
    """What one evaluation table shares with the pre-training table (record ids are the tables' own)."""

    name: str
    shared_patients: list[str] = field(default_factory=list)
    exact_duplicates: list[tuple[str, str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    # (a, b, bits, correlation): the best-correlated unconfirmed pairs, at most the report's max_candidates
    near_candidates: list[tuple[str, str, int, float]] = field(default_factory=list)
    near_candidates_total: int = 0  # unconfirmed pairs in all, listed or not
    near_candidate_ids: list[str] = field(default_factory=list)  # evaluation images in any unconfirmed pair
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
    max_candidates: int = MAX_CANDIDATES

    def clean(self) -> bool:
        return all(o.empty() for o in self.overlaps)

    def summary(self) -> list[dict[str, object]]:
        return [{"eval": o.name, "shared_patients": len(o.shared_patients), "exact_duplicates": len(o.exact_duplicates),
                 "near_duplicates": len(o.near_duplicates), "near_candidates": o.near_candidates_total,
                 "unreadable": len(o.unreadable) + len(self.unreadable)} for o in self.overlaps]

    def write(self, path: Path | str) -> Path:
        """The full report as JSON; an overlap's ``near_candidates_truncated`` says its list is the best
        ``max_candidates`` of ``near_candidates_total``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        overlaps = [asdict(o) | {"near_candidates_truncated": o.near_candidates_total > len(o.near_candidates)}
                    for o in self.overlaps]
        path.write_text(json.dumps({"threshold": self.threshold, "min_correlation": self.min_correlation,
                                    "max_candidates": self.max_candidates, "images_checked": self.images_checked,
                                    "unreadable": self.unreadable, "overlaps": overlaps}, indent=1))
        return path


def audit(pretrain: RecordTable, evals: Mapping[str, RecordTable], images: bool = True,
          threshold: int = DEFAULT_THRESHOLD, workers: int = 0, min_correlation: float = MIN_CORRELATION,
          max_candidates: int = MAX_CANDIDATES) -> AuditReport:
    """Overlap of ``pretrain`` with each evaluation table: patients, and (``images``) exact/near duplicates. Each
    image is read once; its detail vector waits in a memmap in a temporary folder (``tempfile``: $TMPDIR), about
    8 KiB per image, removed on return."""
    patients = set(pretrain.frame["patient_id"])
    overlaps = []
    with tempfile.TemporaryDirectory(prefix="radlab-audit-") as folder:
        base = image_hashes(pretrain, workers, Path(folder) / "pretrain.npy") if images else None
        for k, (name, table) in enumerate(evals.items()):
            overlap = Overlap(name, sorted(patients & set(table.frame["patient_id"])))
            overlaps.append(overlap)
            if base is None:
                continue
            other = image_hashes(table, workers, Path(folder) / f"eval{k}.npy")
            overlap.unreadable = other.unreadable
            by_hash: dict[str, list[str]] = {}
            for rid, digest in zip(other.ids, other.exact, strict=True):
                by_hash.setdefault(digest, []).append(rid)
            overlap.exact_duplicates = [(rid, match) for rid, digest in zip(base.ids, base.exact, strict=True)
                                        for match in by_hash.get(digest, [])]
            found = near_matches(base, other, threshold, min_correlation, max_candidates)
            overlap.near_duplicates = [(base.ids[i], other.ids[j], d) for i, j, d in found.duplicates]
            overlap.near_candidates = [(base.ids[i], other.ids[j], d, round(r, 4)) for i, j, d, r in found.candidates]
            overlap.near_candidates_total = found.total
            overlap.near_candidate_ids = [other.ids[j] for j in found.candidate_rows]
    return AuditReport(overlaps, threshold, images, min_correlation, base.unreadable if base is not None else [],
                       max_candidates)


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
                       f"them with its `--exclude OUT`, or pre-train on them anyway with the override "
                       f"data.allow_eval_overlap=true (logged as a warning).")
