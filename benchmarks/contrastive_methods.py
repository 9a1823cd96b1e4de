"""Image-text contrastive methods under one setup, judged as the contrastive-methods benchmark judges them:
zero-shot and linear-probe classification, retrieval both ways, and closed-set VQA.

    .venv/bin/python benchmarks/contrastive_methods.py --out runs/bench_contrastive [--data SOURCE:PATH ...]
        [--methods clip convirt gloria ...] [--steps 150] [--fractions 0.1 1.0] [--vqa labels|none|vqa_rad:PATH]
        [--seeds 0 1 2] [--set key=value ...]

Every method starts from ``configs/<method>.yaml`` (the same ViT-Tiny image tower, bert_small text tower,
image size, joint width, optimiser, steps, batch and seed; only what a method defines differs: ConVIRT's MLP
projections, GLoRIA's mean-pooled report embedding of its last 4 text layers and local embedder, DeCLIP's
views and queue, the label terms of UniCL/DLILP/MedCLIP; ``low_data`` is DeCLIP with GLoRIA's local term, the
low-data study's combination) with the same overrides, on the same records and splits. Each row's intervals
are 95% patient-level bootstrap CIs on the test split; retrieval is image->report and report->image R@10 over
the test studies (a report matches every image of its study). ``--fractions`` repeats every method on
seeded, nested patient-level fractions of the training split (``data.train_subset``), the low-data-regime
protocol; validation and test records stay the same. ``--seeds`` repeats every run with other training seeds
(weights, augmentation, batch order; data, splits and subsets stay) and adds a table of each method's mean and
standard deviation over them: the run-to-run spread a single run's CIs do not show.

Measured on the demo's 1,200 phantoms (defaults, session 9; about 50 min in all on 2 busy cores; low_data
below). VQA: closed questions from the phantoms' labels and sex (2,358 test questions; majority answer 0.727,
the head on the question alone 0.769 for every method, the same towers at random init 0.818 [0.803, 0.832]):

    | method   | zero-shot AUC        | linear probe AUC     | image->report R@10   | report->image R@10   | VQA accuracy         |
    |----------|----------------------|----------------------|----------------------|----------------------|----------------------|
    | clip     | 0.702 [0.662, 0.741] | 0.770 [0.734, 0.808] | 0.089 [0.057, 0.122] | 0.085 [0.048, 0.125] | 0.842 [0.826, 0.858] |
    | convirt  | 0.644 [0.599, 0.689] | 0.746 [0.713, 0.781] | 0.064 [0.034, 0.099] | 0.068 [0.033, 0.105] | 0.827 [0.811, 0.843] |
    | gloria   | 0.570 [0.527, 0.612] | 0.750 [0.717, 0.784] | 0.055 [0.030, 0.082] | 0.066 [0.036, 0.101] | 0.827 [0.810, 0.845] |
    | declip   | 0.653 [0.611, 0.696] | 0.790 [0.756, 0.826] | 0.064 [0.038, 0.093] | 0.072 [0.040, 0.108] | 0.845 [0.828, 0.860] |
    | slip     | 0.670 [0.630, 0.711] | 0.801 [0.773, 0.835] | 0.102 [0.060, 0.144] | 0.106 [0.065, 0.148] | 0.844 [0.828, 0.859] |
    | medclip  | 0.600 [0.561, 0.638] | 0.746 [0.712, 0.782] | 0.042 [0.021, 0.068] | 0.051 [0.023, 0.082] | 0.832 [0.817, 0.847] |
    | unicl    | 0.595 [0.557, 0.632] | 0.764 [0.730, 0.803] | 0.042 [0.020, 0.072] | 0.047 [0.022, 0.072] | 0.840 [0.823, 0.855] |
    | dlilp    | 0.683 [0.643, 0.722] | 0.803 [0.772, 0.837] | 0.089 [0.056, 0.124] | 0.081 [0.049, 0.116] | 0.849 [0.831, 0.865] |
    | low_data | 0.571 [0.540, 0.598] | 0.769 [0.734, 0.805] | 0.047 [0.023, 0.073] | 0.042 [0.020, 0.068] | 0.831 [0.815, 0.845] |
    | gloria (similarity both)   | 0.535 [0.504, 0.566] | - | 0.051 [0.026, 0.078] | 0.034 [0.012, 0.060] | - |
    | low_data (similarity both) | 0.584 [0.545, 0.622] | - | 0.055 [0.026, 0.085] | 0.055 [0.027, 0.086] | - |

Session 11 re-ran it after text towers began padding batches to multiples of 16 tokens (forward passes equal
up to float rounding): single cells moved by up to 0.08 (MedCLIP zero-shot 0.676, ConVIRT probe 0.713, CLIP
probe 0.802; the table in docs/training.md), so gaps under ~0.08 here are run-to-run noise, not method effects.

Encoders with a word-region matcher (GLoRIA, low_data) get a second row scored as GLoRIA scores itself
(``similarity: both``). GLoRIA's row is the session-9 config (word features summed over the text tower's last 4
layers, as GLoRIA); with the last layer alone (sessions 7-8) it read 0.653 [0.614, 0.693] / 0.746 / 0.081 /
0.081. Every other row equals the earlier sessions' run for run. See docs/training.md for what these say
(little: a plumbing check, CIs overlapping). At ``--fractions 0.1`` (83 training images; ``--methods clip
declip low_data``): CLIP zero-shot 0.526 [0.494, 0.555], report->image R@10 0.042; DeCLIP 0.641 [0.612, 0.671],
0.097 [0.062, 0.135] before its MLM term, 0.689 [0.648, 0.729], 0.059 [0.033, 0.092] with it (the default since
session 8, as the DeCLIP row above); low_data 0.627 [0.587, 0.668], 0.093 [0.054, 0.134] (probe 0.757).
The low_data row (``local_weight`` 0.2) was run apart from the others (``--methods low_data --fractions 0.1 1.0``,
same phantoms); with ``local_weight`` 1.0 it read 0.611 / 0.760 / 0.051 / 0.042 (full) and 0.551 / 0.779 /
0.059 / 0.064 (10%).

``--data`` takes registered sources in their native layouts (paths also under $RADLAB_DATA); without it the
script draws phantoms (the bundled real data has no images yet). ``--vqa`` evaluates each pre-trained encoder
with frozen towers on a VQA source (``vqa_rad``, ``slake``) or, by default (``labels``), on closed questions
written from the benchmark data's own labels and sex (``radlab.data.label_questions``: "Is there
cardiomegaly?", "Is this patient male or female?"; same images, patients and splits); ``none`` skips it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from radlab.bench.methods import (
    SEED_METRICS,
    across_seeds,
    benchmark_sources,
    interval_cell,
    interval_text,
    pretrain_and_evaluate,
    sources_override,
)
from radlab.data.label_questions import label_questions
from radlab.data.loading import load_tables, parse_sources
from radlab.data.records import RecordTable
from radlab.data.splits import DEFAULT_FRACTIONS
from radlab.evaluation.runner import evaluate, write_json
from radlab.models import load_encoder
from radlab.train.setup import training_labels

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["clip", "convirt", "gloria", "declip", "slip", "medclip", "unicl", "dlilp", "low_data"]
TASKS = ["zero_shot", "linear_probe", "retrieval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_contrastive")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--data", nargs="*", default=[], help="SOURCE:PATH of images with reports and labels")
    parser.add_argument("--n", type=int, default=1200, help="phantom images to draw when --data is not given")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="default: each config's optim.steps")
    parser.add_argument("--fractions", nargs="*", type=float, default=[1.0],
                        help="fractions of the training patients to pre-train on (every method at each)")
    parser.add_argument("--vqa", default="labels", help="SOURCE:PATH of a VQA set (vqa_rad, slake); 'labels' "
                        "(default): questions written from the data's labels and sex; 'none': no VQA")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds; several add a spread table")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value, for every method")
    args = parser.parse_args()

    sources = benchmark_sources(args.data, args.out, args.n, args.size)
    steps = [f"optim.steps={args.steps}"] if args.steps else []
    overrides = [*steps, f"model.image_size={args.size}", sources_override(sources), *args.set]
    table = load_tables(sources, DEFAULT_FRACTIONS, seed=0)
    labels = training_labels(table.split("train"), None)
    vqa_table = vqa_records(args.vqa, table)

    rows, runs = [], {}
    for fraction, method, seed in itertools.product(args.fractions, args.methods, args.seeds):
        subset = [f"data.train_subset={{fraction: {fraction}, seed: 0}}"] if fraction < 1 else []
        name = method + (f"_{fraction:g}" if fraction < 1 else "") + (f"_seed{seed}" if len(args.seeds) > 1 else "")
        out = args.out / name
        start = time.time()
        results, checkpoint = pretrain_and_evaluate(method, [*overrides, *subset, f"seed={seed}"], out, table,
                                                    TASKS, labels, args.n_boot)
        runs.setdefault((f"{fraction:g}", method), []).append(results)
        ids = {"train fraction": f"{fraction:g}", "seed": str(seed)}
        results["pretrain_and_eval_minutes"] = round((time.time() - start) / 60, 2)
        encoder = load_encoder(checkpoint)
        if vqa_table is not None:
            results["vqa"] = evaluate(encoder, vqa_table, ["vqa"], [], encoder_name=method,
                                      n_boot=args.n_boot)["tasks"]["vqa"]
        write_json(results, out / "metrics.json")
        rows.append({**ids, **row(method, results)})
        if encoder.local_match is not None:  # also as GLoRIA scores itself: cosine + word-region similarity
            both = {task: {"similarity": "both"} for task in ("zero_shot", "retrieval")}
            own = evaluate(encoder, table, ["zero_shot", "retrieval"], labels, encoder_name=method,
                           options=both, n_boot=args.n_boot)
            own["tasks"]["linear_probe"] = results["tasks"]["linear_probe"]
            own["pretrain_and_eval_minutes"] = results["pretrain_and_eval_minutes"]
            write_json(own, out / "metrics_similarity_both.json")
            rows.append({**ids, **row(f"{method} (similarity both)", own)})
            runs.setdefault((f"{fraction:g}", f"{method} (similarity both)"), []).append(own)
    spread = [{"train fraction": fraction, "method": method, **across_seeds(results)}
              for (fraction, method), results in runs.items()] if len(args.seeds) > 1 else []
    write_json({"rows": rows, "across_seeds": spread, "seeds": args.seeds, "overrides": overrides},
               args.out / "summary.json")
    show("contrastive methods, one setup (test split, 95% patient-bootstrap CIs)", rows)
    if spread:
        show(f"mean ± sd over training seeds {args.seeds}",
             [{k: v if isinstance(v, str) else f"{v['mean']:.3f} ± {v['std']:.3f}" for k, v in r.items()}
              for r in spread])
    print(json.dumps({"summary": str(args.out / "summary.json")}))


def vqa_records(choice: str, table: RecordTable) -> RecordTable | None:
    """The VQA records ``--vqa`` names: written from ``table``'s labels, a VQA source, or none."""
    if choice == "none":
        return None
    if choice == "labels":
        return label_questions(table)
    return load_tables(parse_sources([choice]), DEFAULT_FRACTIONS, seed=0)


def row(method: str, results: dict) -> dict[str, str]:
    """One method's cells; "-" where a task was skipped."""
    vqa = results.get("vqa", {})
    return {"method": method, **{name: interval_cell(results, path) for name, path in SEED_METRICS.items()},
            "VQA accuracy": interval_text(vqa["accuracy_ci"]) if "accuracy_ci" in vqa else "-",
            "VQA question only": f"{vqa['question_only_accuracy']:.3f}" if vqa else "-",
            "minutes": f"{results['pretrain_and_eval_minutes']:.1f}"}


def show(title: str, rows: list[dict[str, str]]) -> None:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for r in rows:
        table.add_row(*r.values())
    Console().print(table)


if __name__ == "__main__":
    main()
