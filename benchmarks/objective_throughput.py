"""Cost of one pre-training step per objective, under identical conditions, with ratios to a reference objective.

    python benchmarks/objective_throughput.py [--objectives supervised clip dinov2 ...] [--steps 20]
        [--batch-size 32] [--size 128] [--n 256] [--device cpu|cuda] [--threads N] [--workers 0]
        [--set key=value ...] [--out runs/bench_objectives] [--reference supervised] [--profile N]

Each objective runs ``pretrain`` from ``configs/<objective>.yaml`` with the same overrides (``--n`` phantoms
drawn once with ``radlab.data.phantoms.synthesize``, seed 0; ``optim.steps``, ``optim.batch_size``,
``model.image_size``, ``optim.num_workers`` and any ``--set``; no training states; lr warm-up and the logging interval a quarter of the steps) in a
fresh spawned process, so peak memory is per objective: peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of
that process (torch and model included; loader workers, ``--workers`` > 0, are not counted), on
CUDA also ``torch.cuda.max_memory_allocated``. Step times are timed here, not read from metrics.jsonl:
``Trainer.train_step`` is wrapped in the child (data loading and augmentation included, CUDA synchronised
after each step), the first logged interval (a quarter of the steps) is dropped as start-up and the median
of the rest is kept (robust to a busy neighbour on a shared machine). ``--profile N`` runs the last N steps of
each objective under ``torch.profiler`` (left out of the timing), prints its ops by self time (CUDA time on a
GPU) and writes a Chrome trace to ``<out>/<objective>/trace.json``. "images/s" counts source images per
optimiser step (batch size / median s per step), whatever an objective does with them:
DINOv2 encodes 2 global + N local crops per image and runs an EMA teacher, SimCLR encodes 2 views, MAE
encodes only the visible patches, the image-text objectives also run the BERT text tower.

Measured (2 shared CPU cores, another benchmark running; torch default threads = 2; ViT-Tiny; ``--steps 10
--n 128 --size 64 --batch-size 16``, all objectives, 8 timed steps each):

    objective   per image                               images/s  x supervised  s/step  peak RSS MiB  x supervised
    supervised  1 view                                     129.3          1.00   0.124         1,067          1.00
    clip        1 view + text tower                         44.7          0.35   0.358         1,290          1.21
    convirt     1 view + text tower                         45.5          0.35   0.351         1,286          1.20
    unicl       1 view + text tower                         36.0          0.28   0.445         1,278          1.20
    dlilp       1 view + text tower                         45.4          0.35   0.353         1,282          1.20
    medclip     1 view + text tower                         45.1          0.35   0.355         1,286          1.21
    dinov2      2 global + 4 local crops, EMA teacher       43.6          0.34   0.367         1,172          1.10
    simclr      2 views                                     65.4          0.51   0.245         1,119          1.05
    mae         25% of patches + decoder                   162.5          1.26   0.098         1,060          0.99

At the defaults for five objectives (``--objectives supervised clip simclr mae dinov2``: ``--steps 20
--batch-size 32 --size 128 --n 256``, 15 timed steps each; same machine, torch default threads = 2):

    objective   per image                               images/s  x supervised  s/step  peak RSS MiB  x supervised
    supervised  1 view                                      44.3          1.00   0.722         1,390          1.00
    clip        1 view + text tower                         25.9          0.58   1.236         1,811          1.30
    simclr      2 views                                     23.7          0.53   1.353         1,752          1.26
    mae         25% of patches + decoder                    75.1          1.69   0.426         1,184          0.85
    dinov2      2 global + 4 local crops, EMA teacher       14.8          0.33   2.165         2,015          1.45

GLoRIA and DeCLIP against CLIP at the defaults (``--objectives clip gloria declip --reference clip``; the
machine otherwise idle; torch default threads = 2):

    objective   per image                                       images/s  x clip  s/step  peak RSS MiB  x clip
    clip        1 view + text tower                                 31.7    1.00   1.009         1,795    1.00
    gloria      1 view + text tower + word-region attention         18.6    0.59   1.720         2,514    1.40
    declip      2 views + 2 report views                            16.6    0.52   1.923         2,432    1.36

Session 8, same settings and an idle machine, after DeCLIP gained its masked-language term and SLIP arrived:

    objective   per image                                  images/s  x clip  s/step  peak RSS MiB  x clip
    clip        1 view + text tower                            31.4    1.00   1.018         1,820    1.00
    declip      2 views + 2 report views + masked report       13.5    0.43   2.378         2,777    1.53
    slip        3 views + text tower                           14.4    0.46   2.225         2,488    1.37

Peak RSS includes the ~890 MiB a process holds after importing radlab's engine (torch, timm,
transformers). A repeat of the small run moved single objectives by up to 25% (the neighbour's load), so
ratios within 0.8-1.25 are noise there. A first attempt with the neighbour at full load ran the first four
objectives 10-50x slower: rerun when a table looks odd. The tables above predate session 10's loader change
(samples seeded through the CPU generator alone): supervised at ``--steps 10 --n 128 --size 64 --batch-size 16``
went from 126.6 to 157.8 images/s with it, MAE stayed (197.5 / 195.6).

On one H100 (session 10; torch 2.11+cu130, 16 CPU cores, bf16 autocast; ViT-S/16 at 224 px, batch 64, 8 loader
workers, 12 steps of which 9 timed: ``--device cuda --workers 8 --steps 12 --batch-size 64 --size 224 --n 256
--set model.image_tower.name=vit_small_patch16_224``):

    objective   per image                               images/s  x supervised  s/step
    supervised  1 view                                     578.3          1.00   0.111
    clip        1 view + text tower                         72.2          0.12   0.886
    dinov2      2 global + 4 local crops, EMA teacher      197.4          0.34   0.324
    simclr      2 views                                    360.2          0.62   0.178

MAE did not finish inside the session's GPU time (its first GPU run had found the bf16 scatter bug, since
fixed). CLIP's 0.12x was not explained: tokenising 64 reports takes ~3 ms and its loader work on the CPU is
within 15% of supervised's. Likely cause (session 11, no GPU to check): a new report length nearly every step,
with attention planned per shape on the H100 (cuDNN); batches are now padded to multiples of 16 tokens. Re-run
the clip row (with `--profile 3` if it stays low) before trusting image-text rates on a GPU.
"""

from __future__ import annotations

import argparse
import inspect
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.profiler import ProfilerActivity

from radlab.bench.timing import Measurement
from radlab.data.phantoms import synthesize
from radlab.objectives import OBJECTIVES
from radlab.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE_NAMES = [name for name in OBJECTIVES.names() if (ROOT / "configs" / f"{name}.yaml").is_file()]


def run_objective(config: Path, overrides: list[str], skip: int, threads: int | None,
                  profile: int = 0) -> dict[str, float | str]:
    """In a fresh process: pretrain, timing each optimiser step; the median s/step after the first ``skip``
    steps and before the last ``profile`` (profiled) ones, this process's peak memory (MiB), its torch threads
    and the profiler's table."""
    import multiprocessing

    from radlab.train import engine

    # This process was spawned, which makes spawn its default: loader workers would then re-import this script
    # and torch each (minutes with 8 on the GPU machine). Fork them, as in a `radlab pretrain` run on Linux.
    multiprocessing.set_start_method("fork", force=True)
    if threads:
        torch.set_num_threads(threads)

    times: list[float] = []
    step = engine.Trainer.train_step
    cfg = TrainConfig.from_file(config, overrides)
    cuda = cfg.runtime.device == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    profiler = torch.profiler.profile(activities=activities)

    def timed(self: engine.Trainer, batches: object) -> dict[str, torch.Tensor]:
        if profile and self.step == cfg.optim.steps - profile:
            profiler.start()
        start = time.perf_counter()
        terms = step(self, batches)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if profile and self.step == cfg.optim.steps:
            profiler.stop()
        return terms

    engine.Trainer.train_step = timed  # this process only
    engine.pretrain(cfg, progress=False)
    table = ""
    if profile:
        profiler.export_chrome_trace(str(Path(cfg.out) / "trace.json"))
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=sort, row_limit=20)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return {"seconds_per_step": statistics.median(times[skip:len(times) - profile]), "rss_mib": rss,
            "cuda_mib": peak, "threads": torch.get_num_threads(), "profile": table}


def workload(cfg: TrainConfig) -> str:
    """What one source image costs the objective, from its config (and the objective's defaults)."""
    cls = OBJECTIVES.get(cfg.objective.name)
    kwargs = {k: p.default for k, p in inspect.signature(cls).parameters.items()} | cfg.objective.kwargs
    if cfg.objective.name == "dinov2":
        return f"2 global + {kwargs['n_local']} local crops, EMA teacher"
    if cfg.objective.name == "simclr":
        return "2 views"
    if cfg.objective.name == "mae":
        return f"{1 - kwargs['mask_ratio']:.0%} of patches + decoder"
    if cfg.objective.name == "declip":
        return "2 views + 2 report views" + (" + masked report" if kwargs["tss_weight"] > 0 else "")
    if cfg.objective.name == "slip":
        return "3 views + text tower"
    if cfg.objective.name == "gloria":
        return "1 view + text tower + word-region attention"
    if not cls.requires_images:
        return "a report, no image (its rate counts reports)"
    return "1 view + text tower" if cls.requires_text else "1 view"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=OBJECTIVE_NAMES, choices=OBJECTIVE_NAMES)
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per objective (>= 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=128, help="phantom and model image side")
    parser.add_argument("--n", type=int, default=256, help="phantom images to draw")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: load in the training process)")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value, for every objective")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_objectives")
    parser.add_argument("--reference", default="supervised", help="objective the ratios are relative to")
    parser.add_argument("--profile", type=int, default=0, help="profile the last N steps of each objective")
    args = parser.parse_args()
    if args.reference not in args.objectives:
        parser.error(f"--reference {args.reference} is not among --objectives")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first quarter is start-up)")
    if args.profile and args.steps - max(1, args.steps // 4) - args.profile < 1:
        parser.error("--profile leaves no timed step: raise --steps")
    device = "cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    if device != args.device:
        print("CUDA is not available: running on CPU")

    phantoms = (args.out / f"phantoms_{args.n}_{args.size}").resolve()
    if not (phantoms / "records.parquet").exists():
        synthesize(phantoms, n=args.n, size=args.size, seed=0, progress=True)
    skip = max(1, args.steps // 4)
    common = [f"data.sources=[{{source: phantom, path: '{phantoms}'}}]", f"optim.steps={args.steps}",
              f"optim.batch_size={args.batch_size}", f"model.image_size={args.size}", f"optim.log_every={skip}",
              f"optim.warmup_steps={skip}", "checkpoint.every=0", f"runtime.device={device}",
              f"optim.num_workers={args.workers}", *args.set]

    rates: dict[str, Measurement] = {}
    results: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    spawn = get_context("spawn")
    for name in args.objectives:
        config = ROOT / "configs" / f"{name}.yaml"
        overrides = [f"out={args.out / name}", *common]
        notes[name] = workload(TrainConfig.from_file(config, overrides))
        print(f"{name}: {args.steps} steps ...", flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            results[name] = pool.submit(run_objective, config, overrides, skip, args.threads, args.profile).result()
        if args.profile:
            print(f"{name}: last {args.profile} steps by self time\n{results[name]['profile']}", flush=True)
        rates[name] = Measurement(name, args.batch_size, results[name]["seconds_per_step"])
        print(f"  {rates[name].rate:,.1f} images/s, {rates[name].seconds:.3f} s/step", flush=True)

    ref_rate, ref_mem = rates[args.reference].rate, results[args.reference]
    timed = args.steps - skip - args.profile
    table = Table(title=f"{device}, batch {args.batch_size}, {args.size} px, {args.workers} loader workers, {timed} "
                        f"timed steps after {skip} start-up steps ({int(ref_mem['threads'])} torch threads)"
                        + (f"; {' '.join(args.set)}" if args.set else ""),
                  caption="images/s = batch size / median s per step (data loading included)")
    columns = ["objective", "per image", "images/s", f"x {args.reference}", "s/step", "peak RSS MiB",
               f"x {args.reference}"] + (["CUDA peak MiB", f"x {args.reference}"] if device == "cuda" else [])
    for col in columns:
        table.add_column(col, justify="left" if col in ("objective", "per image") else "right")
    for name, rate in rates.items():
        mem = results[name]
        row = [name, notes[name], f"{rate.rate:,.1f}", f"{rate.rate / ref_rate:.2f}",
               f"{rate.seconds:.3f}", f"{mem['rss_mib']:,.0f}", f"{mem['rss_mib'] / ref_mem['rss_mib']:.2f}"]
        if device == "cuda":
            row += [f"{mem['cuda_mib']:,.0f}", f"{mem['cuda_mib'] / ref_mem['cuda_mib']:.2f}"]
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
