"""Time and memory of the leakage audit's pair search + detail confirmation at dataset scale, on synthetic data.

    python benchmarks/audit_scale.py [--pretrain 20000] [--eval 5000] [--near 0.01] [--copies 50]
        [--block 2048] [--cap 1000] [--in-ram] [--no-before]

Draws ``pretrain`` x ``eval`` synthetic images as the audit keeps them (``ImageHashes``): 64-bit hashes in
clusters of ``round(1 / near)`` (members within 6 bits of each other, clusters ~32 bits apart), so about a
fraction ``near`` of all pairs lie within the threshold (8 bits); random unit detail vectors (float16, in a
memmap in a temporary folder as ``audit`` stores them, or in RAM with ``--in-ram``); ``copies`` evaluation
images are noisy copies (correlation ~0.99) of pre-training images in their cluster. No image is decoded:
this is the stage after hashing. "streaming" is ``near_matches`` (what ``audit`` runs); "before" redoes
what the audit did before it streamed (every pair within the threshold as a Python list of (i, j, bits), then
one dot product per pair), on the same vectors, without the second decoding pass it also needed. Peak traced
is tracemalloc's peak over the stage (numpy buffers and Python objects; memmapped pages are not counted);
peak RSS is ``getrusage`` for the whole process (inputs, page cache of the memmap included).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from radlab.data.audit import (
    DEFAULT_THRESHOLD,
    DETAIL_DTYPE,
    DETAIL_SIDE,
    MIN_CORRELATION,
    ImageHashes,
    near_matches,
)


def synthetic(n: int, prefix: str, patterns: np.ndarray, rng: np.random.Generator, folder: Path | None,
              ) -> tuple[ImageHashes, np.ndarray]:
    """``n`` images: hashes near random ones of ``patterns``, random unit vectors; and each image's cluster."""
    cluster = rng.integers(len(patterns), size=n)
    flips = np.zeros(n, np.uint64)
    for _ in range(3):  # up to 3 bits from the pattern: members within 6 bits of each other
        flips |= np.left_shift(np.uint64(1), rng.integers(64, size=n).astype(np.uint64))
    shape = (n, DETAIL_SIDE * DETAIL_SIDE)
    details = (np.lib.format.open_memmap(folder / f"{prefix}.npy", "w+", DETAIL_DTYPE, shape) if folder
               else np.empty(shape, DETAIL_DTYPE))
    for s in range(0, n, 4096):
        v = rng.standard_normal((min(4096, n - s), shape[1]), np.float32)
        details[s:s + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"{prefix}{k}" for k in range(n)]
    return ImageHashes(ids, ids, patterns[cluster] ^ flips, details, []), cluster


def plant_copies(a: ImageHashes, ca: np.ndarray, b: ImageHashes, cb: np.ndarray, copies: int,
                 rng: np.random.Generator) -> None:
    """Make ``copies`` evaluation vectors noisy copies of a pre-training vector of their own cluster."""
    for j in rng.choice(len(b.ids), min(copies, len(b.ids)), replace=False):
        members = np.flatnonzero(ca == cb[j])
        if len(members):
            v = a.details[rng.choice(members)].astype(np.float32) + 0.002 * rng.standard_normal(a.details.shape[1])
            b.details[j] = v / np.linalg.norm(v)


def before(a: ImageHashes, b: ImageHashes, threshold: int, block: int = 2048) -> tuple[int, int]:
    """The earlier path: every pair within ``threshold`` as a list of tuples, then one dot product per pair."""
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(a.ids), block):
        for other in range(0, len(b.ids), 4 * block):
            distance = np.bitwise_count(a.phash[start:start + block, None] ^ b.phash[None, other:other + 4 * block])
            for i, j in zip(*np.nonzero(distance <= threshold), strict=True):
                pairs.append((start + int(i), other + int(j), int(distance[i, j])))
    r = [float(np.dot(a.details[i].astype(np.float64), b.details[j].astype(np.float64))) for i, j, _ in pairs]
    confirmed = sum(x >= MIN_CORRELATION for x in r)
    return confirmed, len(pairs) - confirmed


def measure(fn: Callable[[], tuple[int, int]]) -> tuple[float, float, tuple[int, int]]:
    """(seconds, tracemalloc peak MiB, fn's result)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain", type=int, default=20000)
    parser.add_argument("--eval", type=int, default=5000)
    parser.add_argument("--near", type=float, default=0.01, help="fraction of pairs within the threshold")
    parser.add_argument("--copies", type=int, default=50, help="evaluation images that copy a pre-training one")
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--cap", type=int, default=1000, help="unconfirmed pairs listed (all are counted)")
    parser.add_argument("--in-ram", action="store_true", help="detail vectors in RAM instead of a memmap")
    parser.add_argument("--no-before", action="store_true", help="skip the earlier all-pairs-list path")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2**64 - 1, size=max(1, round(1 / args.near)), dtype=np.uint64, endpoint=True)
    with tempfile.TemporaryDirectory(prefix="radlab-bench-audit-") as scratch:
        folder = None if args.in_ram else Path(scratch)
        a, ca = synthetic(args.pretrain, "a", patterns, rng, folder)
        b, cb = synthetic(args.eval, "b", patterns, rng, folder)
        plant_copies(a, ca, b, cb, args.copies, rng)

        def streaming() -> tuple[int, int]:
            found = near_matches(a, b, DEFAULT_THRESHOLD, cap=args.cap, block=args.block)
            return len(found.duplicates), found.total

        rows = {"streaming (near_matches)": measure(streaming)}
        if not args.no_before:
            rows["before (all-pairs list + dot per pair)"] = measure(lambda: before(a, b, DEFAULT_THRESHOLD))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    pairs = args.pretrain * args.eval
    print(f"{args.pretrain:,} x {args.eval:,} images ({pairs:,} pairs, about {args.near:.2%} within "
          f"{DEFAULT_THRESHOLD} bits), {args.copies} planted copies, block {args.block}, cap {args.cap}, vectors "
          f"{'in RAM' if args.in_ram else 'memmapped'}; process peak RSS {rss:,.0f} MiB")
    base_s, base_mib, _ = next(iter(rows.values()))
    print(f"\n{'path':<40} {'confirmed':>9} {'candidates':>11} {'s':>8} {'pairs/s':>12} {'peak MiB':>9} "
          f"{'x time':>7} {'x MiB':>7}")
    for name, (seconds, mib, (confirmed, candidates)) in rows.items():
        print(f"{name:<40} {confirmed:>9,} {candidates:>11,} {seconds:>8.2f} {pairs / seconds:>12,.0f} "
              f"{mib:>9.1f} {seconds / base_s:>7.2f} {mib / base_mib:>7.2f}")


if __name__ == "__main__":
    main()
