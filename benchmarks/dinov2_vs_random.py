"""DINOv2 pre-training vs the same tower at random init: linear probe (findings), sex and age probes on
held-out patients, with patient-level bootstrap CIs and paired differences.

    .venv/bin/python benchmarks/dinov2_vs_random.py --out runs/bench_dinov2 [--data SOURCE:PATH ...] [--steps 250]

Measured (2-core CPU, configs/dinov2.yaml: ViT-Tiny at 128 px, 200 steps of batch 32, 6.8 min;
6,000 phantoms, ``--data phantom:runs/phantoms6k``; test split 1,231 images; 95% patient-bootstrap CIs):

    findings probe macro AUC  0.807 [0.794, 0.819]  vs random init 0.760 [0.746, 0.773]  paired +0.048 [0.032, 0.063]
    sex AUC                   0.958 [0.942, 0.970]  vs             0.949 [0.934, 0.962]  paired +0.009 [-0.000, 0.017]
    age MAE (years)           11.41 [10.76, 12.05]  vs             11.82 [11.13, 12.50]  paired -0.40 [-0.77, -0.03]

With the official layer-wise lr decay (0.9) the same run probes no better than random init.

The baselines on the same phantoms and test split (``--config configs/simclr.yaml`` / ``configs/mae.yaml``):

    SimCLR, 150 steps of batch 64 (6.6 min)   findings 0.871 [0.860, 0.882]  sex 0.969 [0.955, 0.979]  age MAE 11.15
    MAE, 150 steps of batch 32 (0.7 min)      findings 0.754 [0.740, 0.768]  sex 0.965 [0.954, 0.975]  age MAE 11.84
    MAE, 1,500 steps (``--steps 1500 --set optim.warmup_steps=100``, 11.9 min on one busy core)
                                              findings 0.831 [0.819, 0.842]  sex 0.973 [0.962, 0.981]  age MAE 12.00

Paired against random init, SimCLR gains on all three (findings +0.111, sex +0.020 [0.011, 0.029], age MAE
-0.67 [-1.03, -0.29]); MAE at 1,500 steps on findings (+0.071) and sex (+0.024 [0.015, 0.034]), not age.

``--data`` takes any registered source in its native layout (repeatable, paths also under $RADLAB_DATA), e.g.
``--data nih:nih_sample``, or ``auto:FOLDER`` for the source whose layout the folder holds; without it the
script draws phantoms (the bundled real data has no images yet). Pre-training, probes and splits all use those
records; on full-size radiographs add ``--set data.image_cache=runs/cache/NAME`` so pre-training decodes each
file once (docs/training.md, "Image cache"). ``--config`` picks the objective config (default
configs/dinov2.yaml), so the same script compares SimCLR or MAE against random init; ``--tasks`` picks the
evaluation, e.g. report-only MLM on the bundled real IU X-ray reports (RADLAB_DATA=../shared/data; 3.4 min of
pre-training, about 4 of evaluation):

    --config configs/mlm.yaml --data iu_xray:iu_xray_reports --tasks text_probe text_retrieval

    text probe macro AUC (CLS pooling)   0.907 [0.890, 0.923]  vs random init 0.947 [0.933, 0.958]  paired -0.040
    text probe macro AUC (mean pooling)  0.949 [0.934, 0.962]  vs random init 0.955 [0.937, 0.971]  paired -0.007
                                         [-0.016, 0.003]  (``--set model.text_tower.kwargs.pooling=mean``)
    the same, 1,500 steps                0.937 [0.920, 0.953]  vs random init 0.955                 paired -0.018
                                         [-0.028, -0.008]  (``--steps 1500 --set ... optim.warmup_steps=100``)

(777 held-out studies, expert MeSH tags; discussion in docs/training.md.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from radlab.bench.methods import benchmark_sources, interval_cell, sources_override, task_entry
from radlab.data.loading import load_tables
from radlab.evaluation.leakage import refuse_pretraining_overlap
from radlab.evaluation.runner import evaluate, write_json
from radlab.models import RadEncoder, load_encoder
from radlab.models.build import build_encoder
from radlab.models.image_towers import INITIAL_WEIGHTS
from radlab.train.config import TrainConfig
from radlab.train.engine import pretrain
from radlab.train.setup import seed_everything, training_labels

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["linear_probe", "demographics"]
SUMMARY: dict[str, tuple[str, ...]] = {
    "findings probe macro AUC": ("linear_probe", "macro_auc"),
    "sex AUC": ("demographics", "sex", "auc"),
    "age MAE (years)": ("demographics", "age", "mae"),
    "text probe macro AUC": ("text_probe", "macro_auc"),
    "findings->impression R@10": ("text_retrieval", "findings_to_impression", "R@10"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_dinov2")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "dinov2.yaml")
    parser.add_argument("--data", nargs="*", default=[], help="SOURCE:PATH of images with labels and sex/age")
    parser.add_argument("--n", type=int, default=1200, help="phantom images to draw when --data is not given")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="default: the config's optim.steps")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    parser.add_argument("--tasks", nargs="*", default=TASKS, help=f"evaluation tasks (default: {' '.join(TASKS)})")
    args = parser.parse_args()

    sources = benchmark_sources(args.data, args.out, args.n, args.size)
    steps = [f"optim.steps={args.steps}"] if args.steps else []
    overrides = [f"out={args.out / 'pretrain'}", *steps, f"model.image_size={args.size}", sources_override(sources),
                 *args.set]
    cfg = TrainConfig.from_file(args.config, overrides)
    if cfg.model.external:
        raise SystemExit("model.external continues a public encoder: its random init is not built here; compare "
                         "it with `radlab eval --compare` against a checkpoint of the same architecture")
    table = load_tables(sources, cfg.data.split_fractions, seed=cfg.data.split_seed)
    empty = [split for split in ("train", "val", "test") if not len(table.split(split))]
    if empty:  # the probes select on val and report on test: found out now, not after pre-training
        raise SystemExit(f"the data have no {' or '.join(empty)} records (provider splits: "
                         f"{dict(table.frame['split'].value_counts())}); the probes need train, val and test")
    labels = training_labels(table.split("train"), None)

    start = time.time()
    checkpoint = pretrain(cfg, progress=True)
    minutes = (time.time() - start) / 60
    overlap = refuse_pretraining_overlap(checkpoint, table).as_dict()
    trained = load_encoder(checkpoint).eval()
    seed_everything(cfg.seed)
    random_init = random_tower(cfg, trained)
    results = evaluate(trained, table, args.tasks, labels, seed=0, encoder_name=cfg.objective.name,
                       n_boot=args.n_boot, compare=random_init, compare_name="random init",
                       workers=cfg.optim.num_workers)  # as many decoding processes as training had
    results["pretrain_minutes"], results["pretraining_overlap"] = round(minutes, 2), {"encoder": overlap}
    write_json(results, args.out / "results.json")
    print(json.dumps(summary(results), indent=2))


def random_tower(cfg: TrainConfig, trained: RadEncoder) -> RadEncoder:
    """The trained encoder's towers at random init: the config's model without the options that choose starting
    weights (``checkpoint_path``, ``pretrained``), so a continued run is compared with random init, not with
    the weights it started from."""
    tower = cfg.model.image_tower
    kwargs = {k: v for k, v in tower.kwargs.items() if k not in INITIAL_WEIGHTS}
    model = cfg.model.model_copy(update={"image_tower": tower.model_copy(update={"kwargs": kwargs})})
    if trained.has_text:
        return build_encoder(model, getattr(trained.text_tower, "tokenizer", None)).eval()
    return build_encoder(model.model_copy(update={"text_tower": None})).eval()


def summary(results: dict) -> dict:
    """Point estimates with 95% CIs for both encoders (the ``SUMMARY`` metrics of the tasks run), and the
    paired differences."""
    def pick(run: dict) -> dict:
        out = {name: interval_cell(run, path) for name, path in SUMMARY.items() if path[0] in run["tasks"]}
        out |= {f"{task} skipped": metrics["skipped"] for task, metrics in run["tasks"].items()
                if "skipped" in metrics}
        baseline = task_entry(run, ("demographics", "age", "baseline_mae"))
        return {**out, **({} if baseline is None else {"age MAE of the train mean": round(baseline, 2)})}

    return {"pretrain_minutes": results["pretrain_minutes"], results["encoder"]: pick(results),
            "random init": pick(results["baseline"]),
            "paired_difference": {k: {"diff": round(v["difference"], 4), "ci": [round(v["ci_low"], 4),
                                                                             round(v["ci_high"], 4)],
                                      "p": v["p_value"]} for k, v in results["paired_difference"].items()
                                  if "unpaired" not in v}}


if __name__ == "__main__":
    main()
