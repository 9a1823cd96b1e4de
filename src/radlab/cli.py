"""The radlab command line: data, pretrain, eval, list, demo."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from radlab.data.commands import data_app

app = typer.Typer(help="Pretrain radiology image encoders and benchmark them honestly.", no_args_is_help=True)
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
             data: str = typer.Option(None, help="data root for relative paths (default $RADLAB_DATA)")) -> None:
    """Pre-train an encoder and write a checkpoint folder."""
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain as run

    cfg = TrainConfig.from_file(config, overrides or [])
    checkpoint = run(cfg, data_root=data)
    console.print(f"checkpoint: {checkpoint}")


@app.command("eval")
def evaluate(task: list[str] = typer.Option(..., help="task name(s), see `radlab list tasks`"),
             data: list[str] = typer.Option(..., help="SOURCE:PATH of the evaluation data (repeatable)"),
             checkpoint: str = typer.Option(None, help="a radlab checkpoint folder"),
             encoder: str = typer.Option(None, help="an external encoder as FORMAT:PATH"),
             labels: str = typer.Option(None, help="comma-separated findings (default: all annotated)"),
             seed: int = typer.Option(0),
             out: Path = typer.Option(Path("runs/eval/metrics.json"), help="metrics JSON")) -> None:
    """Evaluate one encoder on named tasks and write a JSON of metrics."""
    from radlab.data.loading import load_tables
    from radlab.data.splits import DEFAULT_FRACTIONS
    from radlab.evaluation.runner import evaluate as run, write_json
    from radlab.models import load_encoder
    from radlab.train.engine import training_labels

    if (checkpoint is None) == (encoder is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --encoder")
    spec = checkpoint or encoder
    sources = [tuple(item.split(":", 1)) for item in data]
    if any(len(s) != 2 for s in sources):
        raise typer.BadParameter("--data takes SOURCE:PATH, e.g. phantom:runs/demo/phantoms")
    table = load_tables(sources, DEFAULT_FRACTIONS, seed=0)
    names = labels.split(",") if labels else training_labels(table, None)
    results = run(load_encoder(spec), table, task, names, seed, encoder_name=spec)
    path = write_json(results, out)
    for name, metrics in results["tasks"].items():
        console.print(f"{name}: macro AUC {metrics.get('macro_auc', float('nan')):.3f}")
    console.print(f"metrics: {path}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo")), n: int = typer.Option(1200),
         steps: int = typer.Option(150)) -> None:
    """Phantoms -> pretrain CLIP and supervised -> linear probe and zero-shot -> comparison table."""
    from radlab.demo import run_demo

    run_demo(out, n=n, steps=steps, console=console)


if __name__ == "__main__":
    app()
