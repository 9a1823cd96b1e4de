"""CollapseWatch: warns once, past the start of the run, when the averaged teacher-target entropies show
uniform or one-hot collapse (DINOv2 feeding it: tests/objectives/test_dinov2.py)."""

from __future__ import annotations

import math

from radlab.objectives.collapse import CollapseWatch

LOG_K = math.log(64)


def run(watch: CollapseWatch, entropy: float, usage: float, steps: int = 100) -> list[tuple[int, str]]:
    issued = []
    for step in range(1, steps + 1):
        watch.observe(entropy, usage)
        if (message := watch.check(step, steps)) is not None:
            issued.append((step, message))
    return issued


def test_uniform_collapse_warns_once_after_the_start() -> None:
    issued = run(CollapseWatch(64), entropy=0.97 * LOG_K, usage=0.99 * LOG_K)
    assert [step for step, _ in issued] == [20]
    assert "uniform collapse" in issued[0][1] and "lower the teacher temperature" in issued[0][1]


def test_one_hot_collapse_warns() -> None:
    issued = run(CollapseWatch(64), entropy=0.05, usage=0.08)
    assert len(issued) == 1 and "one-hot collapse" in issued[0][1]


def test_healthy_targets_and_short_spikes_do_not_warn() -> None:
    assert run(CollapseWatch(64), entropy=1.5, usage=3.8) == []
    watch = CollapseWatch(64)
    for _ in range(100):
        watch.observe(1.5, 3.8)
    for _ in range(5):  # a few flat batches move a 50-step average only a little
        watch.observe(LOG_K, LOG_K)
    assert watch.check(100, 100) is None

