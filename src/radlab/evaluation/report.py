"""A results store: every run appended to a JSONL file, rendered as a markdown table (headline metric with
its patient-bootstrap interval per encoder and task) and a bar plot with error bars."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from radlab.evaluation.runner import HEADLINES, json_safe


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
    expanded = []
    for run in runs:
        expanded.append(run)
        if "baseline" in run:
            expanded.append({**run, **run["baseline"]})
    for run in expanded:
        for task, metrics in run.get("tasks", {}).items():
            key = next((k for k in HEADLINES if isinstance(metrics.get(k), int | float)), None)
            if key is None:
                continue
            ci = metrics.get(f"{key}_ci") or {}
            rows.append({"encoder": run.get("encoder") or run.get("encoder_hash", "?"), "task": task, "metric": key,
                         "value": metrics[key], "low": ci.get("ci_low"), "high": ci.get("ci_high"),
                         "data_hash": run.get("data_hash", ""), "labels": label_set(run.get("labels", [])),
                         "seed": run.get("seed", ""), "code_version": run.get("code_version", "")})
    return rows


def label_set(names: list[str]) -> str:
    """A label set as its size and a short hash, so rows averaging different findings look different."""
    digest = hashlib.sha256(",".join(sorted(names)).encode()).hexdigest()[:6]
    return f"{len(names)} ({digest})"


def render(store: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write ``<store stem>.md`` and ``<store stem>.png`` beside the store (or into ``out_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = Path(store)
    out = Path(out_dir) if out_dir else store.parent
    out.mkdir(parents=True, exist_ok=True)
    rows = headline_rows(read_runs(store))
    lines = ["# radlab evaluation results", "", "Intervals: 95% percentile bootstrap over patients."]
    settings = {(r["data_hash"], r["labels"]) for r in rows}
    if len(settings) > 1:
        lines.append(f"Warning: these rows come from {len(settings)} different (data, label set) pairs; compare "
                     "only rows that share both.")
    lines += ["", "| encoder | task | metric | value | 95% CI | data | labels | seed | code |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None and r["high"] is not None else "-"
        lines.append(f"| {r['encoder']} | {r['task']} | {r['metric']} | {r['value']:.3f} | {ci} | "
                     f"{r['data_hash']} | {r['labels']} | {r['seed']} | {r['code_version']} |")
    figure = out / f"{store.stem}.png"
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.5))
    if rows:
        values = [r["value"] for r in rows]
        errors = [[max(0.0, r["value"] - r["low"]) if r["low"] is not None else 0.0 for r in rows],
                  [max(0.0, r["high"] - r["value"]) if r["high"] is not None else 0.0 for r in rows]]
        ax.bar(range(len(rows)), values, yerr=errors, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(rows)), [f"{r['encoder'][-18:]}\n{r['task']}" for r in rows], rotation=60,
                      ha="right", fontsize=7)
    ax.set_ylabel("headline metric")
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    lines += ["", f"![results]({figure.name})", ""]
    markdown = out / f"{store.stem}.md"
    markdown.write_text("\n".join(lines))
    return markdown
