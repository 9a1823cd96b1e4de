"""Reference tests: CLIP against open_clip's ClipLoss, ConVIRT's weighting, UniCL and DLILP against hand-written
numpy versions of their equations, MedCLIP's soft targets and unpaired batches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.checkpoint import load_encoder_checkpoint, save_encoder
from radlab.models.tokenizer import train_wordpiece
from radlab.models.towers import TowerOutput
from radlab.objectives.clip import clip_loss
from radlab.objectives.convirt import ConVIRTObjective
from radlab.objectives.dlilp import DLILPObjective
from radlab.objectives.medclip import medclip_loss, semantic_targets
from radlab.objectives.unicl import unicl_loss, unicl_targets


def _features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_loss_equals_open_clip(seed: int) -> None:
    image, text = _features(12, 32, seed)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ours = clip_loss(image.float(), text.float(), scale.float())
    reference = ClipLoss()(image.float(), text.float(), scale.float())
    assert abs(float(ours) - float(reference)) < 1e-6


def test_convirt_weighting_is_lambda_image_to_text() -> None:
    image, text = _features(5, 8, 3)
    logits = (image @ text.T).numpy() / 0.1
    i2t = -np.diag(_log_softmax(logits))
    t2i = -np.diag(_log_softmax(logits.T))
    expected = np.mean(0.75 * i2t + 0.25 * t2i)
    assert abs(float(clip_loss(image, text, torch.tensor(10.0, dtype=torch.float64), 0.75)) - expected) < 1e-10


def test_convirt_trains_the_encoders_mlp_projection_which_checkpoints_keep(tmp_path: Path) -> None:
    """The loss is computed on the encoder's own g(h) = W2 ReLU(W1 h), so zero-shot after a checkpoint round
    trip reads the trained space; a linear projection is refused."""
    torch.manual_seed(0)
    texts = ["small left pleural effusion", "no acute process", "cardiomegaly", "right pneumothorax"]
    cfg = ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 1}),
                      text_tower=TowerConfig(name="bert_small", kwargs={"hidden_size": 32, "layers": 1, "heads": 2}),
                      image_size=32, embed_dim=16, projection="mlp_wide")
    model = build_encoder(cfg, train_wordpiece(texts * 5, vocab_size=120))
    objective = ConVIRTObjective(model)
    widths = [(m.in_features, m.out_features) for m in (model.image_proj[0], model.image_proj[2])]
    assert widths == [(192, 192), (192, 16)]  # W1 as wide as the tower's features, as the released heads
    assert not list(objective.parameters())
    batch = {"image": torch.randn(4, 1, 32, 32), "has_text": torch.tensor([True, True, True, False]),
             "text": texts, "index": torch.arange(4), "tokens": model.text_tower.tokenize(texts)}
    objective(model, batch)["loss"].backward()
    assert isinstance(model.image_proj, nn.Sequential) and isinstance(model.image_proj[1], nn.ReLU)
    assert all(p.grad is not None for proj in (model.image_proj, model.text_proj) for p in proj.parameters())
    folder = save_encoder(model, tmp_path / "ckpt", {"name": "vit_tiny_patch16_224", "kwargs": {"depth": 1}})
    loaded = load_encoder_checkpoint(folder)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(batch["image"]), model.encode_image(batch["image"]))
        torch.testing.assert_close(loaded.encode_text(texts), model.encode_text(texts))
    with pytest.raises(ValueError, match="projection=mlp_wide or mlp"):
        ConVIRTObjective(build_encoder(cfg.model_copy(update={"projection": "linear", "text_tower": None})))


def test_clip_loss_is_float32_under_mixed_precision() -> None:
    """The engine runs objectives under bf16 autocast on a GPU; like ``nt_xent``, ``clip_loss`` normalises and
    scores in float32 there, so the loss is the float32 one (bf16 logits moved it by 0.02 here)."""
    image, text = (x.float() for x in _features(64, 32, 7))
    scale = torch.tensor(100.0)
    exact = clip_loss(image, text, scale, 0.75)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = clip_loss(image, text, scale, 0.75)
    assert mixed.dtype == torch.float32 and abs(float(mixed) - float(exact)) < 1e-6, float(mixed - exact)


def test_unicl_matches_hand_computed_case() -> None:
    image, text = _features(3, 4, 4)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    s = 5.0
    # T = clip(Y Y^T + I, 0, 1): samples 0 and 1 share class 0; sample 2 matches only itself.
    t = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=float)
    assert np.array_equal(unicl_targets(y, y).numpy(), t)
    logits = s * (image @ text.T).numpy()
    i2t = -(t / t.sum(1, keepdims=True) * _log_softmax(logits)).sum(1)
    t2i = -(t.T / t.T.sum(1, keepdims=True) * _log_softmax(logits.T)).sum(1)
    expected = np.mean(0.5 * (i2t + t2i))
    got = unicl_loss(image, text, y, y, torch.tensor(s, dtype=torch.float64))
    assert abs(float(got) - expected) < 1e-10


def test_unicl_with_identity_targets_is_clip() -> None:
    image, text = _features(6, 8, 5)
    y = torch.zeros(6, 3, dtype=torch.float64)
    scale = torch.tensor(7.0, dtype=torch.float64)
    assert torch.allclose(unicl_loss(image, text, y, y, scale), clip_loss(image, text, scale), atol=1e-12)


class _FeatureEncoder(nn.Module):
    """Stands in for RadEncoder: "images" are already pooled features, text tokens carry their embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Identity()

    def image_output(self, images: torch.Tensor) -> TowerOutput:
        return TowerOutput(images, images[:, None])

    def project_image(self, out: TowerOutput) -> torch.Tensor:
        return self.image_proj(out.pooled)

    def encode_text(self, tokens: dict, normalize: bool = True) -> torch.Tensor:
        return F.normalize(tokens["features"], dim=-1)


def test_dlilp_matches_hand_computed_case() -> None:
    torch.manual_seed(0)
    features = torch.tensor([[1.0, 0.5], [-0.3, 1.0], [0.8, -0.6]], dtype=torch.float64)
    text = torch.tensor([[0.9, 0.4], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), 0.0]], dtype=torch.float64)
    has_text = torch.tensor([True, True, False])
    objective = DLILPObjective(["a", "b"], embed_dim=2, image_dim=2, weight=0.5, init_temperature=0.1,
                               label_temperature=0.2).double()
    with torch.no_grad():
        objective.label_proj.weight.copy_(torch.tensor([[1.0, 0.2], [0.1, 1.0]], dtype=torch.float64))
        objective.head.prototypes.copy_(torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64))
        objective.logit_scale.log_scale.fill_(math.log(10.0))  # exact in float64 (init was float32)
        objective.head.logit_scale.fill_(math.log(5.0))
    batch = {"image": features, "labels": labels, "label_mask": ~torch.isnan(labels), "has_text": has_text,
             "tokens": {"features": text}, "text": ["r0", "r1", ""]}
    terms = objective(_FeatureEncoder(2), batch)

    f, tx, y = features.numpy(), text.numpy(), labels.numpy()
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    # CLIP term over the two samples with report text, scale 1/0.1, on the text head (identity here).
    logits = 10.0 * unit(f[:2]) @ unit(tx[:2]).T
    clip = np.mean(0.5 * (-np.diag(_log_softmax(logits)) - np.diag(_log_softmax(logits.T))))
    # Label term: scale 1/0.2 times cosine to the prototypes, BCE over annotated entries only.
    z = f @ np.array([[1.0, 0.2], [0.1, 1.0]]).T
    label_logits = 5.0 * unit(z) @ unit(np.array([[1.0, 0.0], [0.6, 0.8]])).T
    known = ~np.isnan(y)
    target = np.nan_to_num(y)
    bce = np.log1p(np.exp(-label_logits)) * target + np.log1p(np.exp(label_logits)) * (1 - target)
    expected_bce = np.mean([bce[i, known[i]].mean() for i in range(3)])  # per sample, then over samples
    assert abs(float(terms["clip"]) - clip) < 1e-10
    assert abs(float(terms["bce"]) - expected_bce) < 1e-10
    assert abs(float(terms["loss"].detach()) - (0.5 * clip + expected_bce)) < 1e-10


def test_medclip_targets_and_unpaired_batches() -> None:
    y_image = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y_text = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    ids_image, ids_text = torch.arange(4), torch.tensor([0, 2])
    s = semantic_targets(y_image, y_text, ids_image, ids_text).numpy()
    expected = np.array([[1, 0], [2 ** -0.5, 0], [0, 1], [0, 0]], dtype=float)
    assert np.allclose(s, expected)
    image, _ = _features(4, 6, 6)
    text, _ = _features(2, 6, 7)
    scale, tau = 4.0, 0.5
    logits = scale * (image @ text.T).numpy()
    soft = lambda a: np.exp(a / tau) / np.exp(a / tau).sum(1, keepdims=True)  # noqa: E731
    i2t = -(soft(expected) * _log_softmax(logits)).sum(1).mean()
    t2i = -(soft(expected.T) * _log_softmax(logits.T)).sum(1).mean()
    got = medclip_loss(image, text, y_image, y_text, ids_image, ids_text, torch.tensor(scale, dtype=torch.float64),
                       tau)
    assert abs(float(got) - 0.5 * (i2t + t2i)) < 1e-10


def test_temperature_gradient_stays_live_at_the_bound_and_a_step_clamps_it() -> None:
    from radlab.models.encoder import LabelHead
    from radlab.objectives.clip import LogitScale

    scale = LogitScale(init_temperature=1 / 120)  # past the bound of 100
    scale().backward()
    assert scale.log_scale.grad.item() == pytest.approx(120.0)  # d exp(t)/dt, not 0 as with a forward clamp
    scale.clamp_scale_()
    assert scale().item() == pytest.approx(100.0)
    head = LabelHead(["a", "b"], 4, init_temperature=2.0)  # below 1: clamped up to exp(0)
    head.clamp_scale_()
    assert head.logit_scale.exp().item() == pytest.approx(1.0)


TEXT_OBJECTIVES = ["clip", "convirt", "unicl", "dlilp", "medclip", "gloria", "declip", "slip"]


@pytest.mark.parametrize("method", TEXT_OBJECTIVES)
def test_a_batch_without_reports_trains_and_keeps_every_text_parameter_in_the_graph(method: str) -> None:
    """Label-only micro-batches (or a rank that drew no report) must neither crash the text tower on zero
    rows nor drop its parameters from the graph: DDP needs a (zero) gradient for each on every rank."""
    from radlab.train.config import TrainConfig
    from radlab.train.setup import build_objective

    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = TrainConfig.from_file(configs / f"{method}.yaml", [
        "model.image_size=32", "model.image_tower.kwargs={patch_size: 8, depth: 1}",
        "model.text_tower.kwargs={hidden_size: 32, layers: 1, heads: 2, max_length: 16}"])
    torch.manual_seed(0)
    model = build_encoder(cfg.model, train_wordpiece(["small left pleural effusion", "heart is enlarged"] * 5,
                                                     vocab_size=80))
    names = ["cardiomegaly", "pleural_effusion"]
    objective = build_objective(cfg, names, model)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    batch = {"image": torch.rand(4, 1, 32, 32), "labels": labels, "label_mask": torch.ones(4, 2, dtype=torch.bool),
             "has_text": torch.zeros(4, dtype=torch.bool), "text": [""] * 4, "index": torch.arange(4),
             "study": torch.arange(4),
             "tokens": model.text_tower.tokenize([""] * 4)}
    terms = objective(model, batch)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    assert all(p.grad is not None for p in model.text_tower.parameters())


@pytest.mark.parametrize("method", [m for m in TEXT_OBJECTIVES if m not in ("convirt", "gloria")])  # fixed τ
def test_every_config_starts_a_continued_public_model_at_its_own_temperature(method: str) -> None:
    """docs/training.md: image-text objectives continuing a public model start from its learned scale; a config
    that wrote out the default temperature would silently replace it."""
    from radlab.train.config import TrainConfig
    from radlab.train.setup import build_objective

    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = TrainConfig.from_file(configs / f"{method}.yaml", [
        "model.image_size=32", "model.image_tower.kwargs={patch_size: 8, depth: 1}",
        "model.text_tower.kwargs={hidden_size: 32, layers: 1, heads: 2, max_length: 16}"])
    model = build_encoder(cfg.model, train_wordpiece(["small left pleural effusion", "heart is enlarged"] * 5,
                                                     vocab_size=80))
    model.pretrained_logit_scale = 50.0
    objective = build_objective(cfg, ["cardiomegaly", "pleural_effusion"], model)
    assert objective.logit_scale.log_scale.exp().item() == pytest.approx(50.0)


def test_label_targets_stay_exact_under_mixed_precision() -> None:
    """The engine runs objectives under bf16 autocast on a GPU: the label similarities that set MedCLIP's and
    UniCL's targets are computed in float32 regardless (two equal label vectors score 1, not 1.008)."""
    labels = (torch.rand(64, 14, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    labels[1] = labels[0]
    ids = torch.arange(64)
    exact = F.normalize(labels.double(), dim=-1) @ F.normalize(labels.double(), dim=-1).T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        medclip = semantic_targets(labels, labels, ids, ids)
        unicl = unicl_targets(labels, labels)
    assert medclip.dtype == torch.float32 and unicl.dtype == torch.float32, "labels come as float32"
    off_diagonal = ~torch.eye(64, dtype=torch.bool)
    torch.testing.assert_close(medclip.double()[off_diagonal], exact[off_diagonal], atol=1e-6, rtol=0)
    assert float(medclip[0, 1]) == pytest.approx(1.0, abs=1e-6)
    expected = (labels.double() @ labels.double().T + torch.eye(64).double()).clamp(0, 1)
    torch.testing.assert_close(unicl.double(), expected)


def test_medclip_without_any_report_keeps_its_scale_in_the_graph() -> None:
    """DDP needs a gradient for every parameter, also on a step whose global batch brought no report."""
    from radlab.objectives.medclip import medclip_loss

    scale = torch.tensor(14.0, requires_grad=True)
    image = torch.randn(3, 4, requires_grad=True)
    labels = torch.ones(3, 2)
    loss = medclip_loss(image, image[:0], labels, labels[:0], torch.arange(3), torch.arange(0), scale, 0.1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and scale.grad is not None and image.grad is not None
