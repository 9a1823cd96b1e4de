"""A results store: one JSON line per evaluation (a re-run replaces the earlier one), rendered as a markdown
table (headline metric with its patient-bootstrap interval per encoder and task, and whether the encoder's
pre-training was checked for the test patients) and a bar plot with error bars."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path, PurePath

from radlab import atomic
from radlab.evaluation.runner import (
    headline_metrics,
    headline_note,
    interval_text,
    json_safe,
    method,
    method_difference,
)
from radlab.evaluation.subgroups import gap_level_note

RENDERED_SUFFIXES = (".md", ".png")  # what ``render`` writes beside the store, under the store's stem


def check_store(store: Path | str) -> Path:
    """The store's path, refused when ``render`` would overwrite it with its own output, or when the store
    already holds a line that is not JSON (``read_runs``)."""
    store = Path(store)
    if store.suffix.lower() in RENDERED_SUFFIXES:
        raise ValueError(f"results store {store}: a store is a JSONL file (say {store.with_suffix('.jsonl')}); "
                         f"{store.suffix} is what the report renders beside it and would overwrite it")
    if store.exists():
        read_runs(store)
    return store


def append_run(results: dict, store: Path | str) -> Path:
    """Add one run (the results dict of ``evaluate``) to the store: in place of the stored runs of the same
    evaluation (``run_identity``), else at the end; the store is rewritten atomically."""
    store = check_store(store)
    run = json_safe(results)
    runs = read_runs(store) if store.exists() else []
    key = run_identity(run)
    same = [i for i, stored in enumerate(runs) if key is not None and run_identity(stored) == key]
    kept = [stored for i, stored in enumerate(runs) if i not in same]
    kept.insert(same[0] if same else len(kept), run)
    return atomic.write_text(store, "".join(json.dumps(entry, allow_nan=False) + "\n" for entry in kept))


def run_identity(run: dict) -> str | None:
    """What makes two runs the same evaluation: the weights of the encoder (and of the one it was compared
    with), the data, label set, seed, tasks and task options; None for a run that does not record all of them
    (a store written before they were kept), which is then the same as no other."""
    config, baseline = run.get("config", {}), run.get("baseline", {})
    fields = [run.get("encoder_hash"), run.get("data_hash"), run.get("labels"), run.get("seed"),
              config.get("tasks"), config.get("options")]
    if any(value is None for value in fields) or ("baseline" in run and "encoder_hash" not in baseline):
        return None
    encoder, data, labels, seed, tasks, options = fields
    return json.dumps([encoder, baseline.get("encoder_hash"), data, sorted(labels), seed, sorted(tasks), options],
                      sort_keys=True)


def read_runs(store: Path | str) -> list[dict]:
    """The store's runs; a line that is not JSON is an error naming the store and the line."""
    runs = []
    for number, line in enumerate(Path(store).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"results store {store}, line {number}: not a JSON run ({err.msg}); is this a "
                             "results store (JSONL written by `radlab eval --store`)?") from err
    return runs


def headline_rows(runs: list[dict]) -> list[dict]:
    """One row per (run, task): the task's headline metric, its interval, what it needs said beside it
    (``runner.headline_note``: zero-shot via prompts or a label head, K-shot's K), provenance and leakage check."""
    rows = []
    for run, role in with_baselines(runs):
        for task, metrics in run.get("tasks", {}).items():
            note = headline_note(metrics)
            for name, group, key in headline_metrics(metrics):
                ci = group.get(f"{key}_ci") or {}
                rows.append({"encoder": run.get("encoder") or run.get("encoder_hash", "?"),
                             "encoder_hash": run.get("encoder_hash", ""), "task": task, "metric": name, "note": note,
                             "value": group[key], "low": ci.get("ci_low"), "high": ci.get("ci_high"),
                             "n_valid": ci.get("n_valid"), "n_boot": ci.get("n_boot"),
                             "data_hash": run.get("data_hash", ""), "labels": label_set(run.get("labels", [])),
                             "seed": run.get("seed", ""), "code_version": run.get("code_version", ""),
                             "leakage": leakage_text((run.get("pretraining_overlap") or {}).get(role))})
    return rows


def with_baselines(runs: list[dict]) -> list[tuple[dict, str]]:
    """Each run with its role in the leakage check ("encoder"), followed by the encoder it was compared with
    (``--compare``) as a run of its own ("compare")."""
    return [entry for run in runs
            for entry in [(run, "encoder"), *([({**run, **run["baseline"]}, "compare")] if "baseline" in run else [])]]


def leakage_text(overlap: dict | None) -> str:
    """An encoder's pre-training overlap with the test data (``PretrainingOverlap.as_dict``) in a few words:
    ``clean``, ``overlap: ...`` (reported with ``--allow-overlap``), or ``not checked``; a check that left part of
    the pre-training unchecked says how much."""
    if not overlap:
        return "not checked"
    patients, selected = overlap.get("shared_patients", 0), overlap.get("selected_on_patients", 0)
    images = overlap.get("exact_duplicates", 0) + overlap.get("near_duplicates", 0)
    found = [text for count, text in ((patients, f"{patients} test patients"), (images, f"{images} test images"),
                                      (selected, f"early-stopped on {selected} test patients")) if count]
    if found:
        return "overlap: " + ", ".join(found)
    if not overlap.get("checked"):
        return "not checked"
    unchecked = len(overlap.get("unchecked", []))
    return f"clean ({unchecked} part(s) not checked)" if unchecked else "clean"


OVERLAP_WARNING = ("Warning: rows marked `overlap` come from an encoder pre-trained on test patients or images of "
                   "this evaluation (reported with --allow-overlap); their figures are optimistic.")


def label_set(names: list[str]) -> str:
    """A label set as its size and a short hash, so rows averaging different findings look different."""
    digest = hashlib.sha256(",".join(sorted(names)).encode()).hexdigest()[:6]
    return f"{len(names)} ({digest})"


def paired_rows(runs: list[dict]) -> list[dict]:
    """One row per statistic of each run evaluated against a second encoder (``--compare``): its paired
    difference, or ``unpaired``, why it has none (obtained differently, ``runner.method_difference``, also checked
    for runs stored before ``compare_contexts`` checked it; or over different findings)."""
    rows = []
    for run in runs:
        baseline = run.get("baseline", {})
        for statistic, diff in run.get("paired_difference", {}).items():
            task = statistic.split("/", 1)[0]
            how = [method(tasks.get(task, {})) for tasks in (run.get("tasks", {}), baseline.get("tasks", {}))]
            unpaired = diff.get("unpaired") or method_difference(*how)
            figures = {} if unpaired else {k: diff.get(k) for k in ("difference", "ci_low", "ci_high", "p_value",
                                                                     "n_boot", "n_valid")}
            rows.append({"encoder": run.get("encoder") or run.get("encoder_hash", "?"),
                         "versus": baseline.get("encoder") or baseline.get("encoder_hash", "?"),
                         "statistic": statistic, "unpaired": unpaired, **figures})
    return rows


def render(store: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write ``<store stem>.md`` (headline table, paired differences) and ``<store stem>.png`` (one panel per
    task and metric, a bar with its interval per run) beside the store (or into ``out_dir``)."""
    store = Path(store)
    out = Path(out_dir) if out_dir else store.parent
    out.mkdir(parents=True, exist_ok=True)
    runs = read_runs(store)
    rows = headline_rows(runs)
    lines = ["# radlab evaluation results", "", "Intervals: 95% percentile bootstrap over patients; one that rests on "
             "fewer resamples than were drawn (those in which a finding lacked a class are dropped) says how many."]
    settings = {(r["data_hash"], r["labels"]) for r in rows}
    if len(settings) > 1:
        lines.append(f"Warning: these rows come from {len(settings)} different (data, label set) pairs; compare "
                     "only rows that share both.")
    lines += ["", "| encoder | task | metric | value | 95% CI | data | labels | seed | code | leakage |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        metric = f"{r['metric']} {r['note']}" if r["note"] else r["metric"]
        lines.append(f"| {r['encoder']} | {r['task']} | {metric} | {r['value']:.3f} | {_interval(r)} | "
                     f"{r['data_hash']} | {r['labels']} | {r['seed']} | {r['code_version']} | {r['leakage']} |")
    if any(r["leakage"].startswith("overlap") for r in rows):
        lines += ["", OVERLAP_WARNING]
    paired = paired_rows(runs)
    if paired:
        lines += ["", "## Paired differences", "", "Encoder minus the one it was compared with, on the same test "
                  "rows; paired bootstrap over patients.", "", "| encoder | versus | statistic | difference | "
                  "95% CI | p |", "|---|---|---|---|---|---|"]
        for r in paired:
            if r["unpaired"]:
                lines.append(f"| {r['encoder']} | {r['versus']} | {r['statistic']} | - | not paired: {r['unpaired']} "
                             "| - |")
                continue
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
    for run, _ in with_baselines(runs):
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
                             f"{interval_text(report.get('gap_ci'), '+')}{gap_level_note(report)} |")
    if not lines:
        return []
    return ["", "## Subgroups", "", "Macro AUC within each group, over the findings every scored group can score; "
            "gap: best minus worst group on the same patient resamples; with more than two groups its interval is "
            "Bonferroni-adjusted for the pairs of groups it was chosen from.", "",
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
    return interval_text({"ci_low": row["low"], "ci_high": row["high"], "n_valid": row.get("n_valid"),
                          "n_boot": row.get("n_boot")})


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
    """The encoder's short name (``_short_name``), with the start of its weights' hash when another encoder of
    the panel has that name too, and with the seed when the panel has the encoder more than once."""
    name = _short_name(row["encoder"])
    if any(_short_name(r["encoder"]) == name and r["encoder"] != row["encoder"] for r in rows):
        name = f"{name} [{row.get('encoder_hash', '')[:6] or row['encoder'][-18:]}]"
    repeated = sum(r["encoder"] == row["encoder"] for r in rows) > 1
    return f"{name} (seed {row['seed']})" if repeated else name


def _short_name(encoder: str) -> str:
    """The last 18 characters of an encoder's name; for a checkpoint folder ``.../RUN/checkpoint``, of RUN's."""
    path = PurePath(encoder.rstrip("/"))
    if path.name == "checkpoint" and path.parent.name:
        return path.parent.name[-18:]
    return encoder[-18:]
