"""Reference tests: DINO and iBOT losses against lightly's implementations on the same inputs; KoLeo and
Sinkhorn-Knopp against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from radlab.objectives.dino_losses import (
    CENTERINGS,
    DINOLoss,
    IBOTPatchLoss,
    effective_rank,
    koleo_loss,
    mean_entropy,
    sinkhorn_knopp,
)

lightly_loss = pytest.importorskip("lightly.loss")


@pytest.mark.parametrize("n_local", [0, 3])
def test_dino_loss_matches_lightly_over_steps(n_local: int) -> None:
    """Same crops, temperatures and center momentum; lightly also reads the center before updating it, so
    the losses and the centers agree step after step (lightly's center is [1, 1, K], ours [1, K])."""
    torch.manual_seed(0)
    k, b = 32, 6
    ours = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    reference = lightly_loss.DINOLoss(output_dim=k, student_temp=0.1, center_momentum=0.9)
    for step, teacher_temp in enumerate([0.04, 0.055, 0.07]):
        teacher = [torch.randn(b, k) * 3 for _ in range(2)]
        student = [torch.randn(b, k) * 3 for _ in range(2 + n_local)]
        expected = reference(teacher, student, teacher_temp=teacher_temp)
        got = ours(student, teacher, teacher_temp)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=f"step {step}")
        torch.testing.assert_close(ours.center, reference.center.view(1, k))


def test_ibot_loss_matches_lightly_with_unmasked_images() -> None:
    """lightly takes the mask as [B, H, W]; images without masked patches count in the mean over images."""
    torch.manual_seed(1)
    k, b, side = 16, 5, 4
    mask = torch.rand(b, side, side) < 0.4
    mask[1] = False
    m = int(mask.sum())
    ours = IBOTPatchLoss(k, student_temp=0.1, center_momentum=0.9)
    reference = lightly_loss.IBOTPatchLoss(output_dim=k, student_temp=0.1, center_momentum=0.9)
    for teacher_temp in (0.04, 0.07):
        teacher, student = torch.randn(m, k) * 2, torch.randn(m, k) * 2
        expected = reference(teacher, student, mask, teacher_temp=teacher_temp)
        got = ours(student, teacher, mask.flatten(1), teacher_temp)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.center, reference.center.value.view(1, k))


def test_dino_loss_gradient_reaches_student_only() -> None:
    student = [torch.randn(4, 8, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    DINOLoss(8)(student, teacher, 0.04).backward()
    assert all(s.grad is not None for s in student) and all(t.grad is None for t in teacher)


def test_sinkhorn_knopp_hand_computed() -> None:
    """exp(t / tau) = [[2, 1], [1, 1]] (B = K = 2). Q = A^T / 5; one iteration: prototype rows scaled to 1/K
    -> [[1/3, 1/6], [1/4, 1/4]]; sample columns scaled to 1/B -> [[2/7, 1/5], [3/14, 3/10]]; times B and
    transposed: [[4/7, 3/7], [2/5, 3/5]]. Iterations 2 and 3 (same arithmetic, exact fractions) give
    [[24/41, 17/41], [12/29, 17/29]] and [[140/239, 99/239], [70/169, 99/169]]."""
    logits = torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    expected = {1: [[4 / 7, 3 / 7], [2 / 5, 3 / 5]], 2: [[24 / 41, 17 / 41], [12 / 29, 17 / 29]],
                3: [[140 / 239, 99 / 239], [70 / 169, 99 / 169]]}
    for iterations, values in expected.items():
        got = sinkhorn_knopp(logits, temperature=1.0, iterations=iterations)
        torch.testing.assert_close(got.double(), torch.tensor(values, dtype=torch.float64), rtol=1e-6, atol=1e-7)


def test_sinkhorn_knopp_balances_prototypes() -> None:
    # Peaked logits need ~200 iterations: at 50, draws of this size left columns up to 0.12 off (flaky unseeded)
    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 5
    q = sinkhorn_knopp(logits, temperature=0.5, iterations=200)
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    torch.testing.assert_close(q.sum(0), torch.full((8,), 64 / 8), rtol=1e-3, atol=1e-3)
    assert DINOLoss(8, centering="sinkhorn_knopp")([logits, logits], [logits, logits], 0.07).isfinite()


def test_koleo_hand_computed() -> None:
    """Unit vectors at 0°, 60° and 180° (scaled, since KoLeo normalises): nearest-neighbour distances are
    1, 1 and 2 sin 60° = sqrt(3), so L = -(0 + 0 + log sqrt 3) / 3 = -ln(3) / 6."""
    angles = torch.tensor([0.0, math.pi / 3, math.pi], dtype=torch.float64)
    x = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [3.0], [0.5]], dtype=torch.float64)
    torch.testing.assert_close(koleo_loss(x).double(), torch.tensor(-math.log(3) / 6, dtype=torch.float64),
                               rtol=1e-6, atol=1e-7)
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(koleo_loss(square), torch.tensor(-0.5 * math.log(2)))


def test_koleo_of_a_single_row_is_zero_not_a_constant() -> None:
    """One row per rank (batch_size = ranks x accumulation) has no nearest neighbour."""
    x = torch.randn(1, 8, requires_grad=True)
    loss = koleo_loss(x)
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_koleo_matches_lightly() -> None:
    x = torch.randn(16, 12)
    torch.testing.assert_close(koleo_loss(x), lightly_loss.KoLeoLoss()(x), rtol=1e-5, atol=1e-6)


def test_collapse_monitors() -> None:
    k = 16
    assert float(mean_entropy(torch.full((4, k), 1.0 / k))) == pytest.approx(math.log(k))
    assert float(mean_entropy(torch.eye(k)[:4])) == pytest.approx(0.0, abs=1e-6)
    line = torch.randn(32, 1) * torch.randn(1, 10)
    assert float(effective_rank(line)) == pytest.approx(1.0, abs=1e-3)
    assert float(effective_rank(torch.randn(256, 10))) > 8.0


def test_koleo_and_nt_xent_keep_float32_under_bf16_autocast() -> None:
    """Near-identical class tokens (early training): bf16 similarities would pick wrong nearest neighbours."""
    from radlab.objectives.simclr import nt_xent

    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 64, generator=g) + 0.03 * torch.randn(64, 64, generator=g)
    views = [features + 0.01 * torch.randn(64, 64, generator=g) for _ in range(2)]
    plain_koleo, plain_nt = koleo_loss(features), nt_xent(*views, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert koleo_loss(features) == plain_koleo
        torch.testing.assert_close(nt_xent(*views, 0.1), plain_nt)


@pytest.mark.parametrize("centering", CENTERINGS)
def test_ibot_without_masked_patches_is_zero_and_leaves_the_center(centering: str) -> None:
    loss = IBOTPatchLoss(8, centering=centering)
    loss.center.fill_(0.5)
    empty = torch.zeros(0, 8, requires_grad=True)
    value = loss(empty, torch.zeros(0, 8), torch.zeros(3, 4, dtype=torch.bool), 0.04)
    assert float(value.detach()) == 0.0 and torch.equal(loss.center, torch.full((1, 8), 0.5))
    value.backward()
    assert empty.grad is not None
    assert sinkhorn_knopp(torch.zeros(0, 8), 0.04).shape == (0, 8)
