"""`radlab data ...` commands."""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(help="Build, import and inspect record tables.", no_args_is_help=True)


@data_app.command("synth")
def synth(out: Path = typer.Argument(..., help="output folder"),
          n: int = typer.Option(2000, help="number of images"),
          size: int = typer.Option(128, help="image side in pixels"),
          seed: int = typer.Option(0, help="random seed")) -> None:
    """Draw synthetic chest X-ray phantoms with known findings, masks and reports."""
    from radlab.data.phantoms import synthesize

    table = synthesize(out, n=n, size=size, seed=seed, progress=True)
    typer.echo(f"wrote {len(table)} phantom images to {out}")
