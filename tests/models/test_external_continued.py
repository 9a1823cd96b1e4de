"""Continuing a public encoder as a whole (``model.external``): training starts from its weights, with its
tokenizer and preprocessing, and the checkpoint reloads; image-only objectives drop its text tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from external_checkpoints import (
    make_biovil_file,
    make_cxr_bert_dir,
    make_gloria_dir,
    make_hub_dir,
    make_rad_dino_dir,
)
from safetensors.torch import load_file

from radlab.models import load_encoder
from radlab.train.config import TrainConfig
from radlab.train.engine import pretrain
from run_logs import loss_curve

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hub_dir(tmp_path_factory.mktemp("open_clip"), "builtin")[0]


@pytest.fixture(scope="module")
def open_clip_resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ModifiedResNet CLIP at 64 px reading 77 tokens: enough of a phantom report to learn from."""
    return make_hub_dir(tmp_path_factory.mktemp("open_clip_resnet"), "resnet", context_length=77)[0]


def _run(config: str, out: Path, phantom_dir: Path, *extra: str) -> Path:
    overrides = [f"out={out}", f"data.sources=[{{source: phantom, path: {phantom_dir}}}]",
                 "data.split_fractions={train: 1.0}", "optim.batch_size=16", "optim.warmup_steps=2",
                 "optim.log_every=1", "runtime.device=cpu", *extra]
    return pretrain(TrainConfig.from_file(CONFIGS / f"{config}.yaml", overrides), progress=False)



def test_clip_continues_an_open_clip_model_from_its_weights(open_clip_dir: Path, phantom_dir: Path,
                                                           tmp_path: Path) -> None:
    """At lr 0 the checkpoint is the public model (its preprocessing, towers, projections, tokenizer), and the
    CLIP objective's learnable temperature starts at the public model's."""
    source = f"open_clip:{open_clip_dir}"
    reference = load_encoder(source).eval()
    images = torch.rand(3, 1, 32, 32)
    texts = ["small left pleural effusion", "no acute process", "cardiomegaly"]
    checkpoint = _run("clip", tmp_path, phantom_dir, f"model.external={source}", "optim.steps=2", "optim.lr=0.0")
    objective = load_file(str(checkpoint / "objective.safetensors"))
    assert float(objective["logit_scale.log_scale"].exp()) == pytest.approx(reference.pretrained_logit_scale)
    assert reference.pretrained_logit_scale == pytest.approx(50.0)  # not CLIP's default start, 1 / 0.07
    unchanged = load_encoder(checkpoint)
    assert unchanged.preprocess == reference.preprocess and unchanged.preprocess.channels == 3
    with torch.no_grad():
        x = reference.preprocess.normalise(images)
        torch.testing.assert_close(unchanged.encode_image(x), reference.encode_image(x))
        torch.testing.assert_close(unchanged.encode_text(texts), reference.encode_text(texts))


def test_continued_clip_learns_and_its_checkpoint_reloads(open_clip_resnet_dir: Path, phantom_dir: Path,
                                                          tmp_path: Path) -> None:
    """The InfoNCE falls well below chance (log 16 for batch 16), and the folder reloads to its weights."""
    source = f"open_clip:{open_clip_resnet_dir}"
    reference = load_encoder(source).eval()
    texts = ["small left pleural effusion", "no acute process", "cardiomegaly"]
    checkpoint = _run("clip", tmp_path, phantom_dir, f"model.external={source}", "optim.steps=150",
                      "optim.lr=1.0e-3")
    losses = loss_curve(tmp_path)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"CLIP continuing open_clip: first 10 steps {first:.4f}, last 10 {last:.4f}, chance {np.log(16):.4f}")
    assert last < 0.9 * np.log(16) < first
    spec = json.loads((checkpoint / "encoder.json").read_text())
    assert spec["external"] == source and spec["image_tower"] is None and not (checkpoint / "text_tower").exists()
    trained = load_encoder(checkpoint)
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in trained.state_dict().items())
    assert not torch.equal(saved["image_proj.weight"], reference.state_dict()["image_proj.weight"])
    with torch.no_grad():
        assert trained.encode_text(texts).shape == (3, reference.embed_dim)


def test_gloria_continues_a_public_gloria_from_its_local_embedder(phantom_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """GLoRIA's objective starts its word-region matcher from the public model's (weights and τ1/τ2) and hands it
    to the checkpoint; another objective trains without it and exports none."""
    path, parts = make_gloria_dir(tmp_path / "gloria", monkeypatch)
    monkeypatch.setattr("radlab.models.external.gloria.GLORIA_SIZE", 64)
    monkeypatch.setattr("radlab.models.external.gloria.GLORIA_INNER_SIZE", 64)
    source = f"model.external=gloria:{path}"
    checkpoint = _run("gloria", tmp_path / "run", phantom_dir, source, "optim.steps=1", "optim.lr=0.0",
                      "optim.batch_size=4")
    matcher = load_encoder(checkpoint).local_match
    assert (matcher.temp_attention, matcher.temp_words) == (4.5, 5.5)  # the checkpoint's hparams, not 4 and 5
    torch.testing.assert_close(matcher.embedder.weight, parts["local"].weight.detach().flatten(1))
    other = _run("clip", tmp_path / "clip", phantom_dir, source, "optim.steps=1", "optim.batch_size=4")
    assert load_encoder(other).local_match is None


@pytest.mark.parametrize("config", ["clip", "slip", "declip", "dlilp", "gloria"])
def test_biovil_continues_with_its_projection_of_the_feature_map(config: str, phantom_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """BioViL projects every cell of its feature map (1x1 convolutions) and averages them: the objectives that
    read the tower output and the embedding take the embedding through the encoder (``project_image``), never by
    applying BioViL's convolutions to the pooled vector."""
    monkeypatch.setattr("radlab.models.external.biovil.BIOVIL_SIZE", 64)
    folder = make_biovil_file(make_cxr_bert_dir(tmp_path / "BiomedVLP-CXR-BERT-specialized")[0])[0].parent
    source = f"biovil:{folder}"
    reference = load_encoder(source).eval()
    images = reference.preprocess.normalise(torch.rand(2, 1, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(reference.project_image(reference.image_output(images)),
                                   reference.encode_image(images, normalize=False))
    _run(config, tmp_path / "run", phantom_dir, f"model.external={source}", "optim.steps=1", "optim.batch_size=8")
    assert np.isfinite(loss_curve(tmp_path / "run")).all()


def test_image_only_objective_drops_the_text_tower(open_clip_dir: Path, phantom_dir: Path, tmp_path: Path) -> None:
    checkpoint = _run("simclr", tmp_path, phantom_dir, f"model.external=open_clip:{open_clip_dir}",
                      "optim.steps=2")
    model = load_encoder(checkpoint)
    assert not model.has_text and json.loads((checkpoint / "encoder.json").read_text())["text_tower"] is None


def test_refusals(open_clip_dir: Path, phantom_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model.external and init_from"):
        _run("clip", tmp_path / "a", phantom_dir, f"model.external=open_clip:{open_clip_dir}",
             f"init_from={tmp_path}", "optim.steps=1")
    with pytest.raises(ValueError, match="GLoRIA's local term .* Hugging Face tokenizer"):
        _run("gloria", tmp_path / "g", phantom_dir, f"model.external=open_clip:{open_clip_dir}", "optim.steps=1")
    rad_dino = make_rad_dino_dir(tmp_path / "rad_dino")
    with pytest.raises(ValueError, match="needs report text.*no text tower"):
        _run("clip", tmp_path / "b", phantom_dir, f"model.external=rad-dino:{rad_dino}", "optim.steps=1")
    moved = tmp_path / "moved_source"
    make_hub_dir(moved, "builtin")
    checkpoint = _run("simclr", tmp_path / "c", phantom_dir, f"model.external=open_clip:{moved}", "optim.steps=1")
    for path in moved.iterdir():
        path.unlink()
    moved.rmdir()
    with pytest.raises(ValueError, match="start from it with model.external="):
        _run("simclr", tmp_path / "d", phantom_dir, f"init_from={checkpoint}", "optim.steps=1")
    with pytest.raises(RuntimeError, match="continued the public encoder"):
        load_encoder(checkpoint)


def test_parameters_no_embedding_reaches_are_frozen_so_ddp_sees_none_without_a_gradient(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAD-DINO's mask token and GLoRIA's BERT pooler get no gradient from any embedding; a DINOv2 objective that
    masks turns the mask token back on."""
    from radlab.models.build import external_encoder, freeze_unreached
    from radlab.objectives.dinov2 import DINOv2Objective

    rad_dino = external_encoder(f"rad-dino:{make_rad_dino_dir(tmp_path / 'rad-dino')}", keep_text=False)
    assert freeze_unreached(rad_dino) == ["image_tower.model.embeddings.mask_token"]
    rad_dino.encode_image(torch.rand(2, 1, 56, 56)).sum().backward()
    assert all(p.grad is not None for p in rad_dino.parameters() if p.requires_grad)
    DINOv2Objective(rad_dino, n_prototypes=16, hidden_dim=16, bottleneck_dim=8)
    assert rad_dino.image_tower.model.embeddings.mask_token.requires_grad
    gloria = external_encoder(f"gloria:{make_gloria_dir(tmp_path / 'gloria', monkeypatch)[0]}", keep_text=True)
    idle = freeze_unreached(gloria)
    assert idle and all(".pooler." in name for name in idle)
