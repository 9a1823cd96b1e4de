"""The radlab command line: data, pretrain, eval, list, demo."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
import yaml
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from radlab.data.commands import data_app

if TYPE_CHECKING:
    from radlab.data.records import RecordTable


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix; the pre-training leakage guard's once its module is loaded (it is what raises it,
    and importing it for every error would slow each exit)."""
    audit = sys.modules.get("radlab.data.audit")
    return (OSError, KeyError, ValueError, yaml.YAMLError, *((audit.LeakageError,) if audit else ()))


class UserErrorGroup(TyperGroup):
    """Input a user can fix (a missing file, an unknown name, a bad value in a config or table, pre-training data
    that overlaps evaluation data) ends a command with its one-line message and exit code 1; ``--verbose`` shows
    the traceback instead."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except user_errors() as err:
            if ctx.params.get("verbose"):
                raise
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            typer.echo(f"error: {message}\n(radlab -v ... shows the traceback)", err=True)
            raise typer.Exit(1) from err


app = typer.Typer(help="Pretrain radiology image encoders and benchmark them honestly.", no_args_is_help=True,
                  cls=UserErrorGroup)
app.add_typer(data_app, name="data")
console = Console()


def registries() -> dict:
    from radlab.data.sources import SOURCES
    from radlab.evaluation import TASKS
    from radlab.models import ENCODERS
    from radlab.models.image_towers import IMAGE_TOWERS
    from radlab.models.text_towers import TEXT_TOWERS
    from radlab.objectives import OBJECTIVES

    return {"sources": SOURCES, "encoders": ENCODERS, "image-towers": IMAGE_TOWERS, "text-towers": TEXT_TOWERS,
            "objectives": OBJECTIVES, "tasks": TASKS}


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command("list")
def list_entries(kind: str = typer.Argument(..., help="sources|encoders|image-towers|text-towers|objectives|tasks")) -> None:
    """Print a registry with a one-line description per entry."""
    known = registries()
    if kind not in known:
        raise typer.BadParameter(f"unknown registry {kind!r}; choose from {', '.join(known)}")
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("description")
    for name, description in known[kind].describe():
        table.add_row(name, description)
    console.print(table)


@app.command()
def pretrain(config: Path = typer.Option(..., help="YAML config, e.g. configs/clip.yaml"),
             overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. optim.steps=50"),
             data: str = typer.Option(None, help="data root for relative paths (default $RADLAB_DATA)"),
             resume: bool = typer.Option(False, "--resume", help="continue from the latest state in <out>/state"),
             max_minutes: float = typer.Option(None, "--max-minutes", help="stop (resumably) after this budget")
             ) -> None:
    """Pre-train an encoder and write a checkpoint folder; under torchrun, one process per GPU."""
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain as run
    from radlab.train.engine import stop_note

    flags = (["resume=true"] if resume else []) + ([f"max_minutes={max_minutes}"] if max_minutes is not None else [])
    cfg = TrainConfig.from_file(config, [*(overrides or []), *flags])
    checkpoint = run(cfg, data_root=data)
    typer.echo(f"checkpoint: {checkpoint}{stop_note(checkpoint)}")  # one line, however long


@app.command("eval")
def evaluate(task: list[str] = typer.Option(..., help="task name(s), see `radlab list tasks`"),
             data: list[str] = typer.Option(..., help="SOURCE:PATH of the evaluation data (repeatable)"),
             checkpoint: str = typer.Option(None, help="a radlab checkpoint folder"),
             encoder: str = typer.Option(None, help="an external encoder as FORMAT:PATH"),
             labels: str = typer.Option(None, help="comma-separated findings (default: all annotated)"),
             seed: int = typer.Option(0),
             out: Path = typer.Option(Path("runs/eval/metrics.json"), help="metrics JSON"),
             option: list[str] = typer.Option(None, "--option", "-o",
                                              help="task option TASK.KEY=VALUE, e.g. kshot.seeds=5 (repeatable)"),
             bootstrap: int = typer.Option(1000, help="patient-bootstrap resamples for every interval"),
             cache_dir: Path = typer.Option(None, help="feature cache folder (default ~/.cache/radlab/features)"),
             no_cache: bool = typer.Option(False, "--no-cache", help="keep extracted features in memory only"),
             compare: str = typer.Option(None, help="a second encoder (checkpoint or FORMAT:PATH): paired bootstrap"),
             seen_classes: str = typer.Option(None, help="zero-shot base-vs-new: comma-separated seen classes"),
             subgroups: str = typer.Option(None, help="comma-separated attributes of sex, age, view, source: the "
                                                      "AUC tasks also score each group, with the best-worst gap"),
             store: Path = typer.Option(None, help="results store (JSONL) to add the run to, in place of an "
                                                   "earlier run of the same evaluation; renders STORE.md/.png"),
             allow_overlap: bool = typer.Option(False, "--allow-overlap",
                                                help="report even when an encoder pre-trained on test patients "
                                                     "(recorded in the metrics JSON)"),
             device: str = typer.Option("cpu", help="where encoders run: cpu, cuda, cuda:N or auto (CUDA when "
                                                     "available); probes and statistics run on the CPU"),
             workers: int = typer.Option(0, min=0, help="image-decoding loader processes for feature extraction "
                                                        "and the leakage check's image hashing (0: in this "
                                                        "process)")) -> None:
    """Evaluate one encoder on named tasks and write a JSON of metrics with patient-bootstrap intervals."""
    from radlab.data.loading import load_tables, parse_sources
    from radlab.data.splits import DEFAULT_FRACTIONS
    from radlab.evaluation.runner import (
        DEFAULT_CACHE_DIR,
        headline,
        interval_text,
        parse_options,
        subgroup_lines,
        write_json,
    )
    from radlab.evaluation.runner import evaluate as run
    from radlab.evaluation.subgroups import ATTRIBUTES, TASKS_WITH_SUBGROUPS
    from radlab.models import load_encoder
    from radlab.train.distributed import process_device
    from radlab.train.setup import training_labels

    if (checkpoint is None) == (encoder is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --encoder")
    if store is not None:
        from radlab.evaluation.report import check_store

        check_store(store)  # before the evaluation, not after it
    try:
        target = process_device(device)
    except (ValueError, RuntimeError) as err:
        raise typer.BadParameter(str(err), param_hint="--device") from err
    spec = checkpoint or encoder
    try:
        sources = parse_sources(data)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    table = load_tables(sources, DEFAULT_FRACTIONS, seed=0)
    overlaps = pretraining_overlaps({"encoder": spec, "compare": compare}, table, allow_overlap, workers)
    names = labels.split(",") if labels else training_labels(table, None)
    unknown = [n for n in names if n not in table.label_names]
    if unknown:
        raise typer.BadParameter(f"{unknown} not among the findings this data annotates: {table.label_names}",
                                 param_hint="--labels")
    try:
        options = parse_options(option)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    stray = sorted(set(options) - set(task))
    if stray:
        raise typer.BadParameter(f"options for task(s) {stray}, which this run does not ask for", param_hint="--option")
    if seen_classes:
        options.setdefault("zero_shot", {})["seen_classes"] = seen_classes
    if subgroups:
        unknown = set(subgroups.split(",")) - set(ATTRIBUTES)
        if unknown:
            raise typer.BadParameter(f"unknown attribute(s) {sorted(unknown)}; choose from {ATTRIBUTES}",
                                     param_hint="--subgroups")
        scored = [name for name in task if name in TASKS_WITH_SUBGROUPS]
        if not scored:
            raise typer.BadParameter(f"subgroups are scored by {', '.join(TASKS_WITH_SUBGROUPS)}; none was asked",
                                     param_hint="--subgroups")
        for name in scored:
            options.setdefault(name, {}).setdefault("subgroups", subgroups)
    results = run(load_encoder(spec).to(target), table, task, names, seed, encoder_name=spec, options=options,
                  n_boot=bootstrap, cache_dir=None if no_cache else (cache_dir or DEFAULT_CACHE_DIR),
                  compare=load_encoder(compare).to(target) if compare else None, compare_name=compare or "",
                  workers=workers)
    results["pretraining_overlap"] = overlaps
    path = write_json(results, out)
    if store is not None:
        from radlab.evaluation.report import append_run, render

        console.print(f"report: {render(append_run(results, store))}")
    compared = results.get("baseline", {}).get("tasks", {})
    for name, metrics in results["tasks"].items():
        console.print(f"{name}: {headline(metrics)}")
        for line in subgroup_lines(metrics):
            console.print(line)
        if name in compared:
            typer.echo(f"{name} of B ({compare}): {headline(compared[name])}")  # one line, however long the path
    for key, diff in results.get("paired_difference", {}).items():
        if "unpaired" in diff:
            console.print(f"{key}: not paired ({diff['unpaired']})")
        else:
            console.print(f"{key}: A - B = {diff['difference']:.3f} {interval_text(diff)}")
    console.print(f"metrics: {path}")


def pretraining_overlaps(encoders: dict[str, str | None], table: RecordTable, allow: bool,
                         workers: int = 0) -> dict[str, dict]:
    """``evaluation.leakage.refuse_pretraining_overlap`` for each encoder given (images hashed by ``workers``
    processes where they are compared), with what it found or could not check printed; an encoder that
    pre-trained on test patients stops the evaluation unless ``allow``."""
    from radlab.data.audit import LeakageError
    from radlab.evaluation.leakage import refuse_pretraining_overlap, require_checkpoint

    for spec in filter(None, encoders.values()):  # a wrong path is the only error, before any encoder's notes
        require_checkpoint(spec)
    found = {}
    for role, spec in encoders.items():
        if not spec:
            continue
        try:
            found[role] = overlap = refuse_pretraining_overlap(spec, table, force=allow, workers=workers)
        except LeakageError as err:
            console.print(f"error: {err}, so its test figures would be optimistic. Evaluate on other patients "
                          "(`radlab data audit` lists them), or pass --allow-overlap to report them anyway.",
                          markup=False, highlight=False)
            raise typer.Exit(1) from err
        for reason in overlap.unchecked:
            console.print(f"leakage not checked: {reason}", markup=False, highlight=False)
        if not overlap.clean():
            console.print(f"warning: {overlap.message(spec)} (--allow-overlap: reporting anyway)", markup=False,
                          highlight=False)
        elif overlap.checked:
            console.print(f"leakage checked: none of the {overlap.test_patients} test patients is in the "
                          f"pre-training data of {spec}", markup=False, highlight=False)
    return {role: overlap.as_dict() for role, overlap in found.items()}


@app.command("export")
def export(checkpoint: Path = typer.Option(..., help="a radlab checkpoint folder"),
           out: Path = typer.Option(..., help="output folder (image/, text/, heads, README.md model card)"),
           metrics: Path = typer.Option(None, help="a metrics JSON from `radlab eval`, for the model card")) -> None:
    """Export a checkpoint as Hugging Face-style folders (timm / transformers) with a model card."""
    from radlab.models.export import export_checkpoint

    console.print(f"exported: {export_checkpoint(checkpoint, out, metrics)}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo")), n: int = typer.Option(1200),
         steps: int = typer.Option(150)) -> None:
    """Phantoms -> pretrain DINOv2, supervised and CLIP -> probes and zero-shot vs random init -> table."""
    from radlab.demo import run_demo

    run_demo(out, n=n, steps=steps, console=console)


if __name__ == "__main__":
    app()
