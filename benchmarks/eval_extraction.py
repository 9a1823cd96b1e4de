"""Evaluation's feature extraction, images per second: decoded in the evaluating process vs by loader workers.

    python benchmarks/eval_extraction.py [--n 200] [--size 1024] [--model-size 128] [--workers 1 2 4] [--out DIR]

Draws ``n`` phantom radiographs at ``size`` px once (seed 0, ``radlab.bench.methods.drawn_phantoms``), builds the
demo's ViT-Tiny tower at ``model-size`` (random init: the weights do not change the cost) and extracts pooled
features of every image through ``FeatureCache(workers=W)`` (``radlab eval --workers W``), in memory, after one
warm-up pass (files in the page cache). Prints images/s per worker count, the ratio to 0 workers, and whether
the features equal those of 0 workers.

Measured on 2 CPU cores (``--n 200 --size 1024``): 0 workers 62.6 images/s, 1 worker 58.0 (0.93x), 2 workers
67.4 (1.08x), features identical. Two cores leave no spare core to decode on, and phantoms decode fast; a
realistic radiograph does not: a 2500 x 2048 16-bit PNG with noise (8.9 MB) took 163 ms to read and resize on
the same machine, against about 16 ms per phantom for reading and the ViT-Tiny forward together, so a real
evaluation is bound by decoding and gains up to the number of spare cores from ``--workers``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from radlab.bench.methods import drawn_phantoms
from radlab.data.records import RecordTable
from radlab.evaluation.features import FeatureCache
from radlab.models.build import ModelConfig, build_encoder

ROOT = Path(__file__).resolve().parents[1]


def extraction(encoder: torch.nn.Module, table: RecordTable, workers: int) -> tuple[float, np.ndarray]:
    """(seconds, features) of one fresh extraction of every record."""
    rows = np.arange(len(table))
    start = time.perf_counter()
    features = FeatureCache(workers=workers).get(encoder, table, rows, "pooled", 32)
    return time.perf_counter() - start, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024, help="phantom size in px (decoding cost)")
    parser.add_argument("--model-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_eval_extraction")
    args = parser.parse_args()

    table = RecordTable.read(drawn_phantoms(args.out / "phantoms", args.n, args.size))
    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(image_size=args.model_size, text_tower=None))
    extraction(encoder, table, 0)  # warm-up: files into the page cache
    base_seconds, base = extraction(encoder, table, 0)
    out = Table(title=f"{args.n} phantoms of {args.size} px -> ViT-Tiny at {args.model_size} px, "
                      f"{torch.get_num_threads()} torch threads")
    for column in ("workers", "images/s", "vs 0 workers", "same features"):
        out.add_column(column)
    out.add_row("0", f"{args.n / base_seconds:.1f}", "1.00", "-")
    for workers in args.workers:
        seconds, features = extraction(encoder, table, workers)
        out.add_row(str(workers), f"{args.n / seconds:.1f}", f"{base_seconds / seconds:.2f}",
                    str(np.array_equal(features, base)))
    Console().print(out)


if __name__ == "__main__":
    main()
