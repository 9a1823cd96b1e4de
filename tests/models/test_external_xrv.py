"""torchxrayvision models: radlab's features equal the xrv classes' ``features2`` / ``features``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from radlab.models import load_encoder

xrv = pytest.importorskip("torchxrayvision")


def _xrv_input(images: torch.Tensor) -> torch.Tensor:
    """xrv's scaling of [0, 1] pixels: ``normalize(img * 255, 255)`` -> [-1024, 1024]."""
    return (2 * images - 1) * 1024


def _randomise_batch_norm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None, growth_rate=8, block_config=(1, 2, 1, 1), num_init_features=16)
    _randomise_batch_norm(model)
    return model.eval()


@pytest.mark.parametrize("form", ["state_dict", "pickled_module"])
def test_densenet_matches_xrv(tmp_path: Path, densenet: nn.Module, form: str) -> None:
    """Both a state dict and a whole pickled model (how xrv ships DenseNet weights) load, without unpickling code."""
    path = tmp_path / "densenet.pt"
    torch.save(densenet.state_dict() if form == "state_dict" else densenet, path)
    encoder = load_encoder(f"xrv:{path}")
    assert (encoder.preprocess.image_size, encoder.preprocess.channels, encoder.preprocess.fit) == (224, 1, "crop")
    images = torch.rand(2, 1, 64, 64)
    x = encoder.preprocess.normalise(images)
    torch.testing.assert_close(x, _xrv_input(images), atol=1e-3, rtol=0)
    with torch.no_grad():
        out = encoder.image_output(x)
        theirs = densenet.features2(_xrv_input(images))
    torch.testing.assert_close(out.pooled, theirs, atol=1e-5, rtol=1e-5)
    assert out.tokens.shape == (2, 4, encoder.image_tower.embed_dim) and out.grid == (2, 2)
    assert not encoder.has_text and encoder.embed_dim == theirs.shape[1]


def test_classifier_is_the_label_head_when_its_labels_are_known(tmp_path: Path, densenet: nn.Module) -> None:
    """Saved under xrv's cache name, the NIH classifier's 14 trained outputs become the label head (the 4
    outputs named "" dropped), scoring pooled features exactly as xrv's classifier does; other names: no head."""
    named = tmp_path / "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    torch.save(densenet.state_dict(), named)
    head = load_encoder(f"xrv:{named}").label_head
    labels = xrv.models.model_urls["densenet121-res224-nih"]["labels"]
    kept = [i for i, label in enumerate(labels) if label]
    assert len(kept) == 14 and head.reads == "pooled"
    assert head.class_names[:3] == ["atelectasis", "consolidation", "infiltration"]
    assert head.class_names[labels.index("Effusion")] == "pleural_effusion"
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        features = densenet.features2(_xrv_input(images))
        torch.testing.assert_close(head(features), densenet.classifier(features)[:, kept])
    other = tmp_path / "mine.pt"
    torch.save(densenet.state_dict(), other)
    assert load_encoder(f"xrv:{other}").label_head is None


def test_legacy_pickled_module_is_refused_with_advice(tmp_path: Path, densenet: nn.Module) -> None:
    path = tmp_path / "old.pt"
    torch.save(densenet, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="state_dict"):
        load_encoder(f"xrv:{path}")


def test_resnet_matches_xrv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """xrv ships ResNet weights as a torchvision state dict; xrv's own class loads the same file. (A
    one-block-per-stage Bottleneck ResNet stands in for ResNet-50 to keep the test fast.)"""
    import torchvision
    from torchvision.models.resnet import Bottleneck, ResNet

    def small_resnet50(num_classes: int = 1000, weights: object = None) -> ResNet:
        return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=num_classes)

    torch.manual_seed(0)
    model = small_resnet50(num_classes=18)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    _randomise_batch_norm(model)
    path = tmp_path / "resnet50.pt"
    torch.save(model.state_dict(), path)
    monkeypatch.setattr(xrv.models, "get_weights", lambda weights, cache_dir=None: str(path))
    monkeypatch.setattr(torchvision.models, "resnet50", small_resnet50)
    resnet = xrv.models.ResNet(weights="resnet50-res512-all").eval()
    encoder = load_encoder(f"xrv:{path}")
    assert encoder.preprocess.image_size == 512 and encoder.image_tower.embed_dim == 2048
    images = torch.rand(1, 1, 512, 512)
    with torch.no_grad():
        ours = encoder.image_features(encoder.preprocess.normalise(images))
        theirs = resnet.features(_xrv_input(images))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_unknown_name_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        load_encoder("xrv:not-a-weights-name")
