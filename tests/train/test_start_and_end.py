"""What `radlab pretrain` refuses at start-up (an objective with nothing to learn from, pre-training on evaluation
patients) and what it prints when a run ends (the step reached, and why and how to go on when it stopped early)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tiny_runs import manifest_config, tiny_manifest, tiny_overrides
from typer.testing import CliRunner

from radlab.cli import app
from radlab.train.engine import pretrain

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("method", ["supervised", "dlilp", "unicl", "medclip"])
def test_label_objectives_without_labels_are_refused(method: str, tmp_path: Path) -> None:
    root = tiny_manifest(tmp_path / "site", labels=False)
    with pytest.raises(ValueError, match=rf"objective {method} learns from labels.*0 labels.*--report-labels"):
        pretrain(manifest_config(method, root, tmp_path / "run", "optim.steps=2"), progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.parametrize("method", ["clip", "convirt", "gloria", "medclip", "declip", "mlm"])
def test_text_objectives_without_reports_are_refused(method: str, tmp_path: Path) -> None:
    root = tiny_manifest(tmp_path / "site", reports=False)
    with pytest.raises(ValueError, match=rf"objective {method} learns from report text.*report, findings or "
                                         r"impression column"):
        pretrain(manifest_config(method, root, tmp_path / "run", "optim.steps=2"), progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_objectives_with_a_term_without_reports_run_on_it_with_a_warning(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """SLIP's SimCLR term, DLILP's label head, UniCL's prompts and DeCLIP's ISS (without TSS, which masks report
    tokens) train without reports; UniCL without prompts has nothing left."""
    from radlab.data.sources.manifest import ManifestSource
    from radlab.train.engine import refuse_nothing_to_learn

    root = tiny_manifest(tmp_path / "site", reports=False)
    table = ManifestSource().load(root)
    for method, kwargs in (("slip", ""), ("dlilp", ""), ("unicl", ""), ("declip", "{tss_weight: 0.0}")):
        cfg = manifest_config(method, root, tmp_path / method, *([f"objective.kwargs={kwargs}"] if kwargs else []))
        with caplog.at_level(logging.WARNING, logger="radlab.train.engine"):
            refuse_nothing_to_learn(cfg, table, ["cardiomegaly"])
        assert f"objective {method}: no record of the train split has report text" in caplog.text
    with pytest.raises(ValueError, match="objective unicl learns from report text"):
        refuse_nothing_to_learn(manifest_config("unicl", root, tmp_path / "u", "objective.kwargs={prompts: false}"),
                                table, ["cardiomegaly"])


def _pretrain(method: str, root: Path, out: Path, *extra: str) -> str:
    args = ["pretrain", "--config", str(CONFIGS / f"{method}.yaml"), *tiny_overrides(root, out, "manifest"),
            "optim.batch_size=4", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_console_line_says_the_step_reached_and_why_a_run_stopped_early(tmp_path: Path) -> None:
    root = tiny_manifest(tmp_path / "site", n=16)
    done = _pretrain("supervised", root, tmp_path / "done", "optim.steps=2")
    assert done.strip() == f"checkpoint: {tmp_path / 'done' / 'checkpoint'} (step 2 of 2)"
    budget = _pretrain("supervised", root, tmp_path / "budget", "optim.steps=20", "--max-minutes", "0")
    assert "(step 1 of 20: stopped by max_minutes; the same command with --resume continues)" in budget
    stopping = "early_stopping={metric: bce, every: 1, patience: 1, min_delta: 1.0e+9, max_batches: 1}"
    early = _pretrain("supervised", root, tmp_path / "early", "optim.steps=20", stopping,
                      "data.split_fractions={train: 0.5, val: 0.5}")
    assert "(step 2 of 20: stopped by early stopping; exported step 1, the best on validation)" in early


def test_pretraining_on_evaluation_patients_is_one_error_line_naming_the_override(tmp_path: Path) -> None:
    root = tiny_manifest(tmp_path / "site")
    args = ["pretrain", "--config", str(CONFIGS / "supervised.yaml"), *tiny_overrides(root, tmp_path / "run", "manifest"),
            f"data.eval_sources=[{{source: manifest, path: {root}}}]", "optim.steps=2", "optim.batch_size=4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("error: pre-training data overlaps evaluation data")
    assert "data.allow_eval_overlap=true" in result.output and "Traceback" not in result.output
