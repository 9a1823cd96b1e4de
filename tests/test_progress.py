"""Progress of long work: plain lines when output is redirected, nothing for work shorter than the interval."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from radlab import progress
from radlab.progress import ProgressLines, StepProgress, tracked


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_lines_report_done_total_eta_and_fields() -> None:
    console, out = _console()
    lines = ProgressLines("pretrain", 4, interval=0, console=console)
    for step in (1, 2, 3, 4):
        lines.update(step, loss=1.0 / step)
    written = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in written] == [f"pretrain: {k}/4" for k in (1, 2, 3, 4)]
    assert written[-1].endswith("ETA 0:00:00, loss 0.25")


def test_work_shorter_than_the_interval_writes_nothing() -> None:
    console, out = _console()
    lines = ProgressLines("features", 3, interval=3600, console=console)
    for done in (1, 2, 3):
        lines.update(done)
    assert out.getvalue() == ""


def test_resumed_work_counts_its_rate_from_where_it_started() -> None:
    console, out = _console()
    lines = ProgressLines("pretrain", 100, interval=0, console=console)
    lines.update(91)
    assert lines.first == 90 and out.getvalue().startswith("pretrain: 91/100")


def test_tracked_yields_every_item_and_writes_lines_to_redirected_stderr(monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    assert list(tracked(iter("abc"), 3, "drawing")) == ["a", "b", "c"]
    captured = capsys.readouterr()
    assert captured.out == "" and "drawing: 3/3" in captured.err


def test_step_progress_draws_a_bar_on_a_terminal_with_no_loss_before_the_first_log(
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress, "CONSOLE", Console(file=out, width=200, force_terminal=True))
    with StepProgress("pretrain", 4, 0, enabled=True) as shown:
        assert shown.lines is None
        shown.update(1, 2.0, None)
        shown.bar.refresh()
        before = out.getvalue()
        shown.update(2, 2.0, 0.5)
        shown.bar.refresh()
    assert "loss -" in before and "nan" not in before
    assert "loss 0.5000" in out.getvalue()


def test_step_progress_writes_nothing_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress, "CONSOLE", Console(file=out, width=200, force_terminal=True))
    with StepProgress("pretrain", 2, 0, enabled=False) as shown:
        shown.update(1, 1.0, 0.5)
        shown.update(2, 1.0, 0.4)
    assert out.getvalue() == ""
