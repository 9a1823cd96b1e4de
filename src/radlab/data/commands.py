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


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(1)


def _options(items: list[str] | None) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in items or []]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise typer.BadParameter("--option takes KEY=VALUE, e.g. --option labeler=negbio")
    return dict(pairs)


@data_app.command("import")
def import_source(source: str = typer.Argument(..., help="source name (`radlab list sources`), or auto: the one "
                                                         "whose layout ROOT holds"),
                  root: Path = typer.Argument(..., help="the provider's folder in its native layout (or a manifest)"),
                  out: Path = typer.Option(..., "--out", help="folder for records.parquet and derived files (masks/)"),
                  option: list[str] = typer.Option(None, "--option", help="KEY=VALUE for the source, e.g. labeler=negbio"),
                  report_labels: bool = typer.Option(False, help="fill labels the source leaves unannotated from the report text"),
                  prompts: bool = typer.Option(False, help="write templated prompts from labels where a record has no report"),
                  seed: int = typer.Option(0, help="seed for --prompts")) -> None:
    """Turn a provider's native layout into OUT/records.parquet (derived masks go to OUT/masks)."""
    import inspect

    from radlab.data.labeller import add_report_labels
    from radlab.data.loading import AUTO
    from radlab.data.prompts import add_prompts
    from radlab.data.records import RecordError
    from radlab.data.sources import SOURCES, detect_source
    from radlab.data.sources.common import SourceFormatError

    if source == AUTO:
        try:
            source = detect_source(root)
        except (FileNotFoundError, ValueError) as err:
            raise _fail(err) from err
        typer.echo(f"{root}: {source} layout")
    try:
        factory = SOURCES.get(source)
    except KeyError as err:
        raise typer.BadParameter(str(err)) from err
    kwargs: dict[str, object] = dict(_options(option))
    accepted = inspect.signature(factory).parameters
    if set(kwargs) - set(accepted):
        raise typer.BadParameter(f"{source} takes no option(s) {sorted(set(kwargs) - set(accepted))}; it takes "
                                 f"{sorted(accepted) or 'none'}", param_hint="--option")
    if "mask_dir" in accepted:
        kwargs.setdefault("mask_dir", out / "masks")
    try:
        table = factory(**kwargs).load(root)
    except (SourceFormatError, RecordError, FileNotFoundError, OSError, ValueError) as err:
        raise _fail(err) from err
    if report_labels:
        table = add_report_labels(table)
    if prompts:
        table = add_prompts(table, seed)
    path = table.write(out)
    frame = table.frame
    splits = ", ".join(f"{k or 'none'}: {v}" for k, v in frame["split"].value_counts().items())
    annotated = sum(bool(frame[f"label_{n}"].notna().any()) for n in table.label_names)
    reports = int((frame["report"].str.strip() != "").sum())
    typer.echo(f"{path}: {len(frame)} records, {frame['patient_id'].nunique()} patients, {reports} with report "
               f"text, {annotated} annotated findings; splits {splits}")


@data_app.command("cache")
def cache(table: Path = typer.Argument(..., help="record table (folder or .parquet)"),
          out: Path = typer.Option(..., "--out", help="cache folder (images-<key>.npy + cache.json)"),
          size: int = typer.Option(256, help="square side in pixels"),
          workers: int = typer.Option(4, help="DataLoader worker processes"),
          rebuild: bool = typer.Option(False, help="rebuild even when the cache is valid"),
          shards: Path = typer.Option(None, help="also write WebDataset tar shards to this folder"),
          shard_size: int = typer.Option(1000, help="records per shard")) -> None:
    """Pre-resize every image once into a uint8 memory-mapped cache (rebuilt when config or sources change)."""
    from radlab.data.cache import build_cache, ensure_cache, write_webdataset_shards
    from radlab.data.records import RecordTable

    records = RecordTable.read(table)
    built = build_cache(records, out, size, workers) if rebuild else ensure_cache(records, out, size, workers)
    typer.echo(f"{out}: {len(built)} images at {size} px, key {built.key}")
    if shards is not None:
        written = write_webdataset_shards(records, built, shards, shard_size)
        typer.echo(f"{shards}: {len(written)} WebDataset shards")


@data_app.command("check")
def check(table: Path = typer.Argument(..., help="record table (folder or .parquet)"),
          workers: int = typer.Option(0, help="DataLoader worker processes for reading"),
          report: Path = typer.Option(None, help="write every unreadable image as CSV (data_row, record, path, "
                                                  "problem)"),
          drop: Path = typer.Option(None, help="write the table without the unreadable records here")) -> None:
    """Read every image once and list those that cannot be read; exit 1 when there are some and --drop is not
    given."""
    from radlab.data.check import unreadable_images, without_unreadable, write_unreadable
    from radlab.data.records import RecordTable

    records = RecordTable.read(table)
    found = unreadable_images(records, workers)
    typer.echo(f"{table}: {len(found)} of {int(records.has_images().sum())} images cannot be read")
    for item in found[:10]:
        typer.echo(f"  data row {item.data_row} (record {item.record!r}): {item.problem}")
    if len(found) > 10:
        typer.echo(f"  ... and {len(found) - 10} more" + ("" if report else " (--report lists them all)"))
    if report is not None:  # also when empty: an earlier check's list must not stay behind
        typer.echo(f"unreadable images: {write_unreadable(found, report)}")
    if drop is not None:
        cleaned = without_unreadable(records, found)
        typer.echo(f"{cleaned.write(drop)}: {len(cleaned)} of {len(records)} records kept")
    elif found:
        raise typer.Exit(1)


@data_app.command("audit")
def audit(tables: list[Path] = typer.Argument(..., help="PRETRAIN EVAL [EVAL ...] record tables"),
          exclude: Path = typer.Option(None, help="write the pre-training table without flagged patients or "
                                                  "images here"),
          images: bool = typer.Option(True, "--images/--no-images", help="also hash images (exact + perceptual)"),
          threshold: int = typer.Option(8, help="perceptual-hash Hamming distance (of 64 bits) within which two "
                                                "images are compared in detail"),
          min_correlation: float = typer.Option(0.95, help="detail correlation that confirms a near duplicate"),
          workers: int = typer.Option(0, help="DataLoader worker processes for hashing"),
          report: Path = typer.Option(None, help="write the full audit as JSON (every pair; of those alike in "
                                              "outline only, the best-correlated and their count)")) -> None:
    """Shared patients and exact / near-duplicate images between a pre-training table and evaluation tables."""
    from radlab.data.audit import audit as run_audit
    from radlab.data.audit import exclude as drop_flagged
    from radlab.data.records import RecordTable

    if len(tables) < 2:
        raise typer.BadParameter("give the pre-training table, then at least one evaluation table")
    pretrain = RecordTable.read(tables[0])
    evals = {str(p): RecordTable.read(p) for p in tables[1:]}
    result = run_audit(pretrain, evals, images=images, threshold=threshold, workers=workers,
                       min_correlation=min_correlation)
    for row in result.summary():
        typer.echo(f"{tables[0]} vs {row['eval']}: {row['shared_patients']} shared patients, "
                   f"{row['exact_duplicates']} exact and {row['near_duplicates']} near-duplicate images"
                   + (f" ({row['near_candidates']} pairs alike in outline only, not flagged)"
                      if row["near_candidates"] else "")
                   + (f"; {row['unreadable']} images unreadable, not audited" if row["unreadable"] else ""))
    if report is not None:
        typer.echo(f"audit report: {result.write(report)}")
    if exclude is not None:
        cleaned = drop_flagged(pretrain, result)
        typer.echo(f"{cleaned.write(exclude)}: {len(cleaned)} of {len(pretrain)} pre-training records kept")


@data_app.command("label-agreement")
def label_agreement(data: list[str] = typer.Argument(..., help="SOURCE:PATH of sets with reports and labels"),
                    out: Path = typer.Option(Path("docs/report_labeller.md"), help="markdown file to (re)write")) -> None:
    """Measure the rule-based report labeller against sources that ship both text and labels."""
    from radlab.data.labeller import agreement, agreement_markdown
    from radlab.data.loading import load_source, parse_sources, resolve_data_path

    try:
        sources = parse_sources(data)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    results = {f"{name} ({Path(path).name})": agreement(load_source(name, resolve_data_path(path)))
               for name, path in sources}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(agreement_markdown(results))
    typer.echo(f"wrote {out}")
