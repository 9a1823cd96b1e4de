"""Images per second: raw files vs radlab's uint8 cache vs torchxrayvision's dataset class, on the same files.

    python benchmarks/data_loading.py [--n 300] [--size 512] [--cache-size 224] [--workers 2] [--out DIR]

Draws ``n`` phantom radiographs at ``size`` px (``radlab.data.phantoms.synthesize``), lays the same PNGs out as
an NIH ChestX-ray14 folder (``Data_Entry_2017.csv`` + ``images/``) for ``torchxrayvision.datasets.NIH_Dataset``,
builds the cache, then times each path over every image after one warm-up pass (files in the page cache for
all): raw = ``read_image`` + ``resize_pad``; cache = a memory-mapped uint8 row to a float tensor (what
``RecordDataset`` does with a cache); torchxrayvision = ``NIH_Dataset[i]`` with its resizer. A second block
times full ``RecordDataset`` batches (normalised, collated) through DataLoader. A third times DINOv2's multi-crop
views (2 global + 4 local, as configs/dinov2.yaml) cut from the image read at the cache size and at twice it
(``data.source_size``), from in-memory reads. Prints tables with ratios to the first row.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from radlab.data.augment import MultiCrop, local_crop_size
from radlab.data.cache import ImageCache, StaleCache, build_cache
from radlab.data.dataset import RecordDataset
from radlab.data.images import read_image, resize_pad
from radlab.data.phantoms import synthesize
from radlab.data.records import RecordTable
from radlab.models.towers import Preprocess


def rate(fn: Callable[[int], object], n: int, repeats: int = 2) -> float:
    """Best images/s over ``repeats`` passes, after a warm-up pass."""
    for i in range(n):
        fn(i)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = max(best, n / (time.perf_counter() - start))
    return best


def loader_rate(dataset: RecordDataset, workers: int, batch: int = 32) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:
        pass
    start = time.perf_counter()
    count = sum(len(b["index"]) for b in loader)
    return count / (time.perf_counter() - start)


def view_rates(table: RecordTable, size: int, n: int = 100) -> dict[str, float]:
    """Multi-crop views per second from reads at ``size`` and at ``2 * size`` (``data.source_size``)."""
    views = MultiCrop(size, local_crop_size(size, 16), n_local=4, global_scale=(0.5, 1.0), local_scale=(0.1, 0.5))
    rates = {}
    for side in (size, 2 * size):
        reads = [torch.from_numpy(resize_pad(read_image(table.image_path(i)), side)).unsqueeze(0)
                 for i in range(min(n, len(table)))]
        rates[f"multi-crop views from a {side} px read"] = rate(lambda i, reads=reads: views(reads[i]), len(reads))
    return rates


def nih_layout(table: RecordTable, folder: Path) -> Path:
    """The same image files, hard-linked into an NIH-style folder that torchxrayvision can read."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(table)):
        name = f"{i:08d}_000.png"
        target = folder / "images" / name
        target.unlink(missing_ok=True)  # an earlier run's link may point at other phantoms
        os.link(table.image_path(i), target)
        rows.append({"Image Index": name, "Finding Labels": "No Finding", "Follow-up #": 0, "Patient ID": i,
                     "Patient Age": 50, "Patient Gender": "M", "View Position": "PA"})
    pd.DataFrame(rows).to_csv(folder / "Data_Entry_2017.csv", index=False)
    (folder / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    return folder


def xrv_rate(table: RecordTable, folder: Path, size: int) -> float | None:
    try:
        import torchxrayvision as xrv
    except ImportError:
        return None
    root = nih_layout(table, folder)
    dataset = xrv.datasets.NIH_Dataset(imgpath=str(root / "images"), csvpath=str(root / "Data_Entry_2017.csv"),
                                       bbox_list_path=str(root / "BBox_List_2017.csv"), views=["*"],
                                       unique_patients=False, transform=xrv.datasets.XRayResizer(size, engine="skimage"))
    return rate(lambda i: dataset[i]["img"], len(dataset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="side of the phantom PNGs")
    parser.add_argument("--cache-size", type=int, default=224, help="side of the cached / resized images")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_data_loading"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    phantoms = args.out / f"phantoms_{args.n}_{args.size}"
    table = RecordTable.read(phantoms) if (phantoms / "records.parquet").exists() else synthesize(
        phantoms, n=args.n, size=args.size, seed=0)
    folder = args.out / f"cache_{args.cache_size}"
    try:
        cache, build = ImageCache(folder), "reused"
        cache.validate(table, args.cache_size)
    except (FileNotFoundError, StaleCache):
        start = time.perf_counter()
        cache = build_cache(table, folder, args.cache_size, workers=args.workers)
        build = f"built in {time.perf_counter() - start:.1f} s"
    ids = table.frame["id"].tolist()

    results = {
        "raw files (read_image + resize_pad)": rate(lambda i: resize_pad(read_image(table.image_path(i)),
                                                                         args.cache_size), len(table)),
        "radlab cache (memmap uint8 -> float)": rate(
            lambda i: torch.from_numpy(cache.get(ids[i]).astype(np.float32) / 255.0), len(table)),
        "torchxrayvision NIH_Dataset": xrv_rate(table, args.out / "nih_layout", args.cache_size),
    }
    preprocess = Preprocess(image_size=args.cache_size)
    raw_set, cached_set = RecordDataset(table, preprocess), RecordDataset(table, preprocess, cache=cache)
    loaders = {
        f"RecordDataset raw, DataLoader x{args.workers}": loader_rate(raw_set, args.workers),
        f"RecordDataset cache, DataLoader x{args.workers}": loader_rate(cached_set, args.workers),
        "RecordDataset cache, DataLoader in-process": loader_rate(cached_set, 0),
    }
    print(f"{len(table)} phantom PNGs at {args.size} px -> {args.cache_size} px; cache {build} "
          f"({os.cpu_count()} CPUs, torch threads 1)")
    blocks = (("single process", results), ("training loader", loaders),
              ("DINOv2 views", view_rates(table, args.cache_size)))
    for title, block in blocks:
        base = next(iter(block.values()))
        print(f"\n{title:<48} {'images/s':>10} {'x first':>8}")
        for name, value in block.items():
            print(f"{name:<48} {'n/a':>10} {'':>8}" if value is None else f"{name:<48} {value:>10.0f} {value / base:>8.1f}")


if __name__ == "__main__":
    main()
