"""Pre-train methods from their configs under one set of overrides and evaluate each on the same records: the
loop behind the demo and the method-comparison benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from radlab.data.loading import parse_sources
from radlab.data.records import RecordTable
from radlab.evaluation.leakage import refuse_pretraining_overlap
from radlab.evaluation.runner import evaluate, write_json
from radlab.evaluation.stats import DEFAULT_N_BOOT, mean_std
from radlab.models import load_encoder
from radlab.train.config import TrainConfig
from radlab.train.engine import pretrain

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
SEED_METRICS: dict[str, tuple[str, ...]] = {
    "zero-shot AUC": ("zero_shot", "macro_auc"),
    "linear probe AUC": ("linear_probe", "macro_auc"),
    "image->report R@10": ("retrieval", "report", "image_to_text", "R@10"),
    "report->image R@10": ("retrieval", "report", "text_to_image", "R@10"),
}


def pretrain_and_evaluate(method: str, overrides: list[str], out: Path, table: RecordTable, tasks: list[str],
                          labels: list[str], n_boot: int = DEFAULT_N_BOOT) -> tuple[dict, Path]:
    """Pre-train ``configs/<method>.yaml`` with ``overrides`` into ``out``, make sure it did not pre-train on
    ``table``'s test patients, evaluate its checkpoint on ``tasks`` and write ``<out>/metrics.json``; returns the
    results and the checkpoint folder."""
    cfg = TrainConfig.from_file(CONFIG_DIR / f"{method}.yaml", [f"out={out}", *overrides])
    checkpoint = pretrain(cfg)
    overlap = refuse_pretraining_overlap(checkpoint, table).as_dict()
    results = evaluate(load_encoder(checkpoint), table, tasks, labels, encoder_name=method, n_boot=n_boot,
                       workers=cfg.optim.num_workers)
    results["pretraining_overlap"] = {"encoder": overlap}
    write_json(results, out / "metrics.json")
    return results, checkpoint


def drawn_phantoms(folder: Path, n: int, size: int) -> Path:
    """``n`` phantoms of ``size`` px under ``folder``, drawn once (seed 0) and reused by later runs that ask for
    the same; a folder drawn with another count or size is drawn again."""
    from radlab.data.phantoms import synthesize

    if (folder / "records.parquet").exists():
        table = RecordTable.read(folder)
        with Image.open(table.image_path(0)) as first:
            if len(table) == n and first.size == (size, size):
                return folder
        shutil.rmtree(folder)
    synthesize(folder, n=n, size=size, seed=0, progress=True)
    return folder


def benchmark_sources(data: list[str], out: Path, n: int, size: int) -> list[tuple[str, str]]:
    """A benchmark's ``--data`` SOURCE:PATH entries, or ``n`` phantoms drawn once under ``out/phantoms``."""
    return parse_sources(data) or [("phantom", str(drawn_phantoms(out / "phantoms", n, size)))]


def sources_override(sources: list[tuple[str, str]]) -> str:
    """The ``data.sources=[...]`` config override for (source, path) pairs."""
    listed = ", ".join(f"{{source: {name}, path: '{path}'}}" for name, path in sources)
    return f"data.sources=[{listed}]"


def interval_text(interval: dict, digits: int = 3) -> str:
    """An estimate with its bootstrap interval, e.g. ``0.812 [0.790, 0.833]``."""
    return (f"{interval['estimate']:.{digits}f} [{interval['ci_low']:.{digits}f}, "
            f"{interval['ci_high']:.{digits}f}]")


def task_entry(results: dict, path: tuple[str, ...]) -> Any:
    """What sits at ``path`` under ``results["tasks"]``; None where a task was skipped or lacks it."""
    value: Any = results["tasks"]
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def task_metric(results: dict, path: tuple[str, ...]) -> float:
    """The number at ``path`` under ``results["tasks"]``; NaN where a task was skipped or lacks it."""
    value = task_entry(results, path)
    return float("nan") if value is None else float(value)


def interval_cell(results: dict, path: tuple[str, ...]) -> str:
    """The estimate at ``path`` with its bootstrap interval (the ``<key>_ci`` beside it); "-" where absent."""
    interval = task_entry(results, (*path[:-1], f"{path[-1]}_ci"))
    return "-" if interval is None else interval_text(interval)


def across_seeds(runs: list[dict]) -> dict[str, dict]:
    """Mean and sample standard deviation of each ``SEED_METRICS`` entry over evaluation results of runs that
    differ only in their training seed: the spread the patient-bootstrap CIs of one run do not show."""
    return {name: mean_std([task_metric(r, path) for r in runs]) for name, path in SEED_METRICS.items()}
