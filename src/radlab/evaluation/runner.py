"""Run named evaluation tasks for one encoder (optionally against a second, paired) and write a JSON with
metrics, patient-bootstrap intervals, the task options, data and encoder hashes, seeds and code version."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from radlab import __version__, atomic
from radlab.data.records import RecordTable
from radlab.evaluation.context import SPLITS, TASKS, EvalContext, TaskSkipped
from radlab.evaluation.features import FeatureCache, table_hash
from radlab.evaluation.stats import DEFAULT_N_BOOT, paired_bootstrap
from radlab.evaluation.subgroups import gap_level_note
from radlab.models.encoder import RadEncoder

log = logging.getLogger(__name__)


def code_version() -> str:
    """radlab's version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def run_tasks(ctx: EvalContext, tasks: list[str]) -> dict:
    """Each task's metrics (or ``{"skipped": reason}``) with its wall time."""
    out = {}
    for name in tasks:
        ctx.task = name
        start = time.time()
        try:
            metrics = TASKS.get(name)(ctx)
        except TaskSkipped as reason:
            metrics = {"skipped": str(reason)}
        out[name] = {**metrics, "seconds": round(time.time() - start, 2)}
    return out


# Task result fields that say how a score was obtained (zero-shot by prompts or by a label head, the
# image-text similarity, the text features probed): runs that differ in one are not paired.
METHOD_FIELDS = ("mode", "prompt_mode", "similarity", "kind")
ZERO_SHOT_VIA = {"prompts": "prompts", "prototypes": "label head"}  # zero-shot ``mode`` -> how it scored


def method(metrics: dict) -> dict:
    """The ``METHOD_FIELDS`` a task's results hold."""
    return {name: metrics[name] for name in METHOD_FIELDS if name in metrics}


def method_difference(a: dict, b: dict) -> str:
    """How two tasks' ``method`` differ, in words ("" when they do not); a different zero-shot mode says it
    all (the prompt fields follow from it)."""
    names = [n for n in METHOD_FIELDS if a.get(n) != b.get(n)]
    if "mode" in names:
        names = ["mode"]

    def said(how: dict) -> str:
        return ", ".join(f"via {ZERO_SHOT_VIA.get(how.get(n), how.get(n))}" if n == "mode"
                         else f"with {n} {how.get(n)}" for n in names)

    return f"A scored it {said(a)}, B {said(b)}" if names else ""


def compare_contexts(a: EvalContext, b: EvalContext, tasks_a: dict | None = None,
                     tasks_b: dict | None = None) -> dict:
    """Paired patient bootstrap of A minus B for every statistic both runs computed on the same rows. One
    obtained differently (a task's ``METHOD_FIELDS`` in ``tasks_a``/``tasks_b``, the two runs' task results: say
    zero-shot by prompts vs by a label head), computed over different findings, or a subgroup gap between
    different groups, is reported as unpaired, with the reason."""
    out: dict = {}
    for key, (fn_a, patients, over_a) in a.statistics.items():
        if key not in b.statistics or not np.array_equal(patients, b.statistics[key][1]):
            continue
        fn_b, _, over_b = b.statistics[key]
        task = key.split("/", 1)[0]
        how_a, how_b = method((tasks_a or {}).get(task, {})), method((tasks_b or {}).get(task, {}))
        reasons = [text for text in (method_difference(how_a, how_b),
                                     "A and B cover different findings (or gap groups)" if over_a != over_b else "")
                   if text]
        if reasons:
            out[key] = {"unpaired": "; ".join(reasons), "a_over": list(over_a), "b_over": list(over_b),
                        "a_method": how_a, "b_method": how_b}
            continue
        out[key] = paired_bootstrap(fn_a, fn_b, patients, a.n_boot, a.seed)
    return out


def evaluate(encoder: RadEncoder, table: RecordTable, tasks: list[str], label_names: list[str],
             seed: int = 0, encoder_name: str = "", options: dict[str, dict[str, Any]] | None = None,
             n_boot: int = DEFAULT_N_BOOT, cache_dir: Path | str | None = None,
             compare: RadEncoder | None = None, compare_name: str = "", workers: int = 0) -> dict:
    """Evaluate ``encoder`` (and ``compare`` on the same rows, for paired differences) on named tasks; images
    are decoded by ``workers`` loader processes (0: in this one)."""
    for name in tasks:
        TASKS.get(name)
    cache = FeatureCache(cache_dir, workers)
    ctx = EvalContext(encoder, table, label_names, seed, features=cache, options=options or {}, n_boot=n_boot)
    results: dict = {
        "encoder": encoder_name, "encoder_hash": cache.encoder_key(encoder), "seed": seed,
        "code_version": code_version(), "data_hash": table_hash(table), "labels": list(label_names),
        "config": {"tasks": list(tasks), "options": options or {}, "n_boot": n_boot, "bootstrap_unit": "patient",
                   "ci_level": 0.95, "cache_dir": str(cache_dir) if cache_dir else None,
                   "device": str(next(encoder.parameters()).device)},
        "n_records": {s: int(len(ctx.rows(s))) for s in SPLITS},
        "n_text_records": {s: int(len(ctx.text_rows(s))) for s in SPLITS},
        "tasks": run_tasks(ctx, tasks)}
    unread = ctx.unread_options()
    if unread:
        log.warning("options no task read (a typo?): %s", ", ".join(unread))
        results["unread_options"] = unread
    if compare is not None:
        other = EvalContext(compare, table, label_names, seed, features=cache, options=options or {}, n_boot=n_boot)
        results["baseline"] = {"encoder": compare_name, "encoder_hash": cache.encoder_key(compare),
                               "tasks": run_tasks(other, tasks)}
        results["paired_difference"] = compare_contexts(ctx, other, results["tasks"], results["baseline"]["tasks"])
    results["feature_extractions"] = cache.extractions
    return results


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(results: dict, path: Path | str) -> Path:
    return atomic.write_text(Path(path), json.dumps(json_safe(results), indent=2, allow_nan=False))


DEFAULT_CACHE_DIR = Path("~/.cache/radlab/features")
HEADLINES = ("macro_auc", "accuracy", "mean_dice", "mean_R@1", "bleu4")


def parse_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["kshot.seeds=5", "zero_shot.modes=[names,ensemble]"]`` -> {"kshot": {"seeds": 5}, ...} (YAML values)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        task, dot, name = key.partition(".")
        if not sep or not dot or not task or not name:
            raise ValueError(f"task options look like TASK.KEY=VALUE, got {item!r}")
        out.setdefault(task, {})[name] = yaml.safe_load(value)
    return out


def headline_metrics(metrics: dict) -> list[tuple[str, dict, str]]:
    """(name, the dict holding it, key) of a task's headline: the first ``HEADLINES`` key it reports, else the
    demographics task's sex AUC and age MAE; each may have its interval beside it as ``<key>_ci``."""
    key = next((k for k in HEADLINES if isinstance(metrics.get(k), int | float)), None)
    if key is not None:
        return [(key, metrics, key)]
    nested = [(f"{group} {key}", metrics.get(group), key) for group, key in (("sex", "auc"), ("age", "mae"))]
    return [(name, group, key) for name, group, key in nested
            if isinstance(group, dict) and isinstance(group.get(key), int | float)]


def interval_text(ci: dict | None, sign: str = "") -> str:
    """``[low, high]`` of an interval dict (``ci_low``/``ci_high``; ``sign="+"`` for differences); "-" if none.
    An interval resting on fewer resamples than were drawn (``n_valid`` < ``n_boot``: resamples in which a
    finding lacked a class are dropped, so it describes the others) says how many."""
    if not isinstance(ci, dict) or ci.get("ci_low") is None or ci.get("ci_high") is None:
        return "-"
    valid, drawn = ci.get("n_valid"), ci.get("n_boot")
    dropped = f" ({valid} of {drawn} resamples)" if valid is not None and drawn and valid < drawn else ""
    return f"[{ci['ci_low']:{sign}.3f}, {ci['ci_high']:{sign}.3f}]{dropped}"


def headline_note(metrics: dict) -> str:
    """What a headline needs said beside it: how zero-shot scored (``via prompts`` / ``via label head``), and
    for K-shot which K it is the mean at, over how many findings and seeds, and the SD across seeds (which the
    interval, over test patients, leaves out); "" for other tasks."""
    if metrics.get("mode") in ZERO_SHOT_VIA:
        return f"via {ZERO_SHOT_VIA[metrics['mode']]}"
    if isinstance(metrics.get("kshot"), dict) and "kshot_findings" in metrics:
        if not metrics["kshot"]:
            return f"(no K-shot curve: {metrics.get('kshot_skipped', 'no K asked for')})"
        k = max(metrics["kshot"], key=int)
        findings, seeds = len(metrics["kshot_findings"]), len(metrics.get("seeds", []))
        sd = metrics["kshot"][k].get("std")
        spread = f", SD {sd:.3f}" if isinstance(sd, int | float) and seeds > 1 else ""
        return f"at K={k} over {findings} finding{'s' * (findings != 1)} (mean of {seeds} seed{'s' * (seeds != 1)}{spread})"
    return ""


def headline(metrics: dict) -> str:
    """One line per task for the console: its headline metrics with their intervals where there are some, and
    ``headline_note``."""
    if "skipped" in metrics:
        return f"skipped ({metrics['skipped']})"
    parts = []
    for name, group, key in headline_metrics(metrics):
        ci = group.get(f"{key}_ci")
        band = f" {interval_text(ci)}" if isinstance(ci, dict) else ""
        parts.append(f"{name} {group[key]:.3f}{band}")
    note = headline_note(metrics) if parts else ""
    return ", ".join(parts) + (f" {note}" if note else "") or "done"


def subgroup_lines(metrics: dict) -> list[str]:
    """One console line per subgroup attribute of a task: each scored group's macro AUC, and the gap."""
    lines = []
    for attribute, report in metrics.get("subgroups", {}).items():
        if "skipped" in report:
            lines.append(f"  {attribute}: not compared ({report['skipped']})")
            continue
        groups = ", ".join(f"{g} {v['macro_auc']:.3f} {interval_text(v['macro_auc_ci'])}"
                           for g, v in report["groups"].items() if "macro_auc" in v)
        lines.append(f"  {attribute}: {groups}; gap {report['best']} - {report['worst']} {report['gap']:+.3f} "
                     f"{interval_text(report['gap_ci'], '+')}{gap_level_note(report)}")
    return lines
