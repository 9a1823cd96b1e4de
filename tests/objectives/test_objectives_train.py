"""Each label/text objective (issue 5, and GLoRIA) trains through the engine on phantoms with its loss falling.

16 phantom records (a quarter with their report removed, i.e. label-only samples: prompts for UniCL, the
label head only for DLILP, image side only for MedCLIP, skipped by CLIP/ConVIRT/GLoRIA), 64 px, a 2-block ViT-Tiny
and a 2-layer text tower, 50 steps of batch 16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from radlab.models import load_encoder
from radlab.train.config import TrainConfig
from radlab.train.engine import pretrain
from run_logs import loss_curve

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = ["supervised", "clip", "convirt", "unicl", "dlilp", "medclip", "gloria"]


@pytest.mark.parametrize("method", METHODS)
def test_objective_loss_falls_on_phantoms(method: str, phantoms_with_label_only: Path, tmp_path: Path) -> None:
    overrides = [f"out={tmp_path}", f"data.sources=[{{source: phantom, path: {phantoms_with_label_only}}}]",
                 "data.split_fractions={train: 1.0}", "model.image_size=64", "model.image_tower.kwargs={depth: 2}",
                 "optim.steps=50", "optim.batch_size=16", "optim.lr=1.0e-3", "optim.warmup_steps=5",
                 "optim.log_every=1", "runtime.device=cpu", "data.vocab_size=500"]
    if method != "supervised":
        summed = ", hidden_layers: 2" if method == "gloria" else ""  # GLoRIA's words: last layers summed
        overrides.append("model.text_tower.kwargs={pooling: mean, layers: 2, hidden_size: 64, heads: 2, "
                         f"max_length: 64{summed}}}")
    checkpoint = pretrain(TrainConfig.from_file(CONFIGS / f"{method}.yaml", overrides), progress=False)
    losses = loss_curve(tmp_path)
    assert len(losses) == 50 and np.isfinite(losses).all()
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"{method}: first 10 steps {first:.4f}, last 10 steps {last:.4f} ({100 * (1 - last / first):.1f}% lower)")
    assert last < 0.97 * first
    assert (checkpoint / "model.safetensors").exists()
    if method == "gloria":  # the trained word-region matcher is the encoder's, for zero-shot and retrieval
        trained = load_file(str(checkpoint / "objective.safetensors"))["matcher.embedder.weight"]
        encoder = load_encoder(checkpoint)
        assert torch.equal(encoder.local_match.embedder.weight, trained)
        assert encoder.text_tower.hidden_layers == 2


def test_gloria_on_a_resnet_trains_and_reloads_its_layer3_matcher(phantoms_with_label_only: Path,
                                                                   tmp_path: Path) -> None:
    """GLoRIA's own image side: a ResNet whose ``layer3`` cells are the regions; the checkpoint rebuilds the
    tower with them and the matcher reads their width."""
    overrides = [f"out={tmp_path}", f"data.sources=[{{source: phantom, path: {phantoms_with_label_only}}}]",
                 "data.split_fractions={train: 1.0}", "model.image_size=64", "data.vocab_size=500",
                 "model.image_tower={name: resnet18, kwargs: {regions_stage: -2}}", "optim.steps=3",
                 "optim.batch_size=8", "optim.warmup_steps=1", "optim.log_every=1", "runtime.device=cpu",
                 "model.text_tower.kwargs={pooling: mean, layers: 2, hidden_size: 64, heads: 2, hidden_layers: 2}"]
    checkpoint = pretrain(TrainConfig.from_file(CONFIGS / "gloria.yaml", overrides), progress=False)
    losses = loss_curve(tmp_path)
    assert len(losses) == 3 and np.isfinite(losses).all()
    encoder = load_encoder(checkpoint).eval()
    assert encoder.image_tower.regions_stage == -2 and encoder.local_match.embedder.in_features == 256
    assert encoder.image_output(torch.randn(2, 1, 64, 64)).regions.shape == (2, 16, 256)
