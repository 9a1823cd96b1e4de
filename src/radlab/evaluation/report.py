"""A results store: every run appended to a JSONL file, rendered as a markdown table (headline metric with
its patient-bootstrap interval per encoder and task) and a bar plot with error bars."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from radlab.evaluation.runner import headline_metrics, interval_text, json_safe


def append_run(results: dict, store: Path | str) -> Path:
    """Append one run (the results dict of ``evaluate``) as a JSON line."""
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    with store.open("a") as handle:
        handle.write(json.dumps(json_safe(results), allow_nan=False) + "\n")
    return store


def read_runs(store: Path | str) -> list[dict]:
    return [json.loads(line) for line in Path(store).read_text().splitlines() if line.strip()]


def headline_rows(runs: list[dict]) -> list[dict]:
    """One row per (run, task): the task's headline metric, its interval, and provenance."""
    rows = []
    for run in with_baselines(runs):
        for task, metrics in run.get("tasks", {}).items():
            for name, group, key in headline_metrics(metrics):
                ci = group.get(f"{key}_ci") or {}
                rows.append({"encoder": run.get("encoder") or run.get("encoder_hash", "?"), "task": task,
                             "metric": name, "value": group[key], "low": ci.get("ci_low"), "high": ci.get("ci_high"),
                             "data_hash": run.get("data_hash", ""), "labels": label_set(run.get("labels", [])),
                             "seed": run.get("seed", ""), "code_version": run.get("code_version", "")})
    return rows


def with_baselines(runs: list[dict]) -> list[dict]:
    """The runs, each followed by the encoder it was compared with (``--compare``) as a run of its own."""
    return [entry for run in runs for entry in [run, *([{**run, **run["baseline"]}] if "baseline" in run else [])]]


def label_set(names: list[str]) -> str:
    """A label set as its size and a short hash, so rows averaging different findings look different."""
    digest = hashlib.sha256(",".join(sorted(names)).encode()).hexdigest()[:6]
    return f"{len(names)} ({digest})"


def paired_rows(runs: list[dict]) -> list[dict]:
    """One row per paired statistic of each run evaluated against a second encoder (``--compare``)."""
    rows = []
    for run in runs:
        baseline = run.get("baseline", {})
        for statistic, diff in run.get("paired_difference", {}).items():
            if "difference" in diff:
                rows.append({"encoder": run.get("encoder") or run.get("encoder_hash", "?"),
                             "versus": baseline.get("encoder") or baseline.get("encoder_hash", "?"),
                             "statistic": statistic, **{k: diff.get(k) for k in ("difference", "ci_low", "ci_high",
                                                                                 "p_value", "n_boot", "n_valid")}})
    return rows


def render(store: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write ``<store stem>.md`` (headline table, paired differences) and ``<store stem>.png`` (one panel per
    task and metric, a bar with its interval per run) beside the store (or into ``out_dir``)."""
    store = Path(store)
    out = Path(out_dir) if out_dir else store.parent
    out.mkdir(parents=True, exist_ok=True)
    runs = read_runs(store)
    rows = headline_rows(runs)
    lines = ["# radlab evaluation results", "", "Intervals: 95% percentile bootstrap over patients."]
    settings = {(r["data_hash"], r["labels"]) for r in rows}
    if len(settings) > 1:
        lines.append(f"Warning: these rows come from {len(settings)} different (data, label set) pairs; compare "
                     "only rows that share both.")
    lines += ["", "| encoder | task | metric | value | 95% CI | data | labels | seed | code |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['task']} | {r['metric']} | {r['value']:.3f} | {_interval(r)} | "
                     f"{r['data_hash']} | {r['labels']} | {r['seed']} | {r['code_version']} |")
    paired = paired_rows(runs)
    if paired:
        lines += ["", "## Paired differences", "", "Encoder minus the one it was compared with, on the same test "
                  "rows; paired bootstrap over patients.", "", "| encoder | versus | statistic | difference | "
                  "95% CI | p |", "|---|---|---|---|---|---|"]
        for r in paired:
            difference = "-" if r["difference"] is None else f"{r['difference']:+.3f}"
            lines.append(f"| {r['encoder']} | {r['versus']} | {r['statistic']} | {difference} | "
                         f"{interval_text(r, '+')} | {_p_value(r)} |")
    lines += subgroup_section(runs)
    figure = plot_rows(rows, out / f"{store.stem}.png")
    lines += ["", f"![results]({figure.name})", ""]
    markdown = out / f"{store.stem}.md"
    markdown.write_text("\n".join(lines))
    return markdown


def subgroup_section(runs: list[dict]) -> list[str]:
    """Markdown of every task's subgroups (``evaluation/subgroups.py``): per group its patients and macro AUC,
    per attribute the best-minus-worst gap; [] when no run asked for subgroups."""
    lines = []
    for run in with_baselines(runs):
        encoder = run.get("encoder") or run.get("encoder_hash", "?")
        for task, metrics in run.get("tasks", {}).items():
            for attribute, report in metrics.get("subgroups", {}).items():
                for group, entry in report["groups"].items():
                    auc = f"{entry['macro_auc']:.3f}" if "macro_auc" in entry else "-"
                    lines.append(f"| {encoder} | {task} | {attribute}={group} | {entry['n_patients']} | {auc} | "
                                 f"{interval_text(entry.get('macro_auc_ci'))} |")
                gap = (f"{report['best']} - {report['worst']}: {report['gap']:+.3f}" if "gap" in report
                       else report.get("skipped", ""))
                lines.append(f"| {encoder} | {task} | {attribute} gap | | {gap} | "
                             f"{interval_text(report.get('gap_ci'), '+')} |")
    if not lines:
        return []
    return ["", "## Subgroups", "", "Macro AUC within each group, over the findings every scored group can score; "
            "gap: best minus worst group on the same patient resamples.", "",
            "| encoder | task | group | patients | macro AUC | 95% CI |", "|---|---|---|---|---|---|", *lines]


def _p_value(row: dict) -> str:
    """A two-sided bootstrap p-value; 0 means below its resolution, 2 / (resamples where the statistic was
    defined), shown as ``< 2/n_valid`` (``n_boot`` for stores written before ``n_valid`` was kept); "-" if none."""
    if row["p_value"] is None:
        return "-"
    resamples = row.get("n_valid") or row.get("n_boot")
    if row["p_value"] == 0 and resamples:
        return f"< {2 / resamples:.2g}"
    return f"{row['p_value']:.3g}"


def _interval(row: dict) -> str:
    return interval_text({"ci_low": row["low"], "ci_high": row["high"]})


def plot_rows(rows: list[dict], figure: Path) -> Path:
    """One panel per task and metric (each its own scale), one bar per row with its interval as error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["task"], r["metric"]) for r in rows)) or [("(no results)", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 2.8 * len(panels)), 3.8), squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if (r["task"], r["metric"]) == (task, metric)]
        values = [r["value"] for r in mine]
        errors = [[max(0.0, r["value"] - r["low"]) if r["low"] is not None else math.nan for r in mine],
                  [max(0.0, r["high"] - r["value"]) if r["high"] is not None else math.nan for r in mine]]
        ax.bar(range(len(mine)), values, yerr=errors, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(mine)), [_bar_label(r, mine) for r in mine], rotation=60, ha="right", fontsize=7)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return figure


def _bar_label(row: dict, rows: list[dict]) -> str:
    """The encoder's name (last 18 characters), with the seed when the panel has it more than once."""
    name = row["encoder"][-18:]
    repeated = sum(r["encoder"] == row["encoder"] for r in rows) > 1
    return f"{name} (seed {row['seed']})" if repeated else name
