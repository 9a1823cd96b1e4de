"""Run named evaluation tasks for one encoder on one record table and write a JSON of metrics."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from radlab import __version__
from radlab.data.records import RecordTable
from radlab.evaluation.context import TASKS, EvalContext
from radlab.models.encoder import RadEncoder


def code_version() -> str:
    """radlab's version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def evaluate(encoder: RadEncoder, table: RecordTable, tasks: list[str], label_names: list[str],
             seed: int = 0, encoder_name: str = "") -> dict:
    ctx = EvalContext(encoder, table, label_names, seed)
    results: dict = {"encoder": encoder_name, "seed": seed, "code_version": code_version(),
                     "n_records": {s: int(len(ctx.rows(s))) for s in ("train", "val", "test")}, "tasks": {}}
    for name in tasks:
        start = time.time()
        metrics = TASKS.get(name)(ctx)
        results["tasks"][name] = {**metrics, "seconds": round(time.time() - start, 2)}
    return results


def write_json(results: dict, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)
    return path
