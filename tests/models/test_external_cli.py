"""`radlab eval --encoder FORMAT:PATH` end to end for every external format, on a small phantom set (the
bundled data has no images). BioViL's, GLoRIA's, MedCLIP's and xrv's input sizes are shrunk to 64 px here to keep
the runs short (their real preprocessing is checked in their own tests); those five formats, and BiomedCLIP, are
marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from external_checkpoints import (
    make_biovil_file,
    make_chexzero_file,
    make_cxr_bert_dir,
    make_gloria_dir,
    make_hub_dir,
    make_medclip_dir,
    make_rad_dino_dir,
)
from typer.testing import CliRunner

from radlab.cli import app

XRV_NIH_FILE = "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"


def _xrv_file(root: Path) -> Path:
    xrv = pytest.importorskip("torchxrayvision")
    import torch

    model = xrv.models.DenseNet(weights=None, growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16)
    path = root / XRV_NIH_FILE  # xrv's cache name: its classifier labels are known, so it answers zero-shot
    torch.save(model.state_dict(), path)
    return path


def _build(fmt: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "rad-dino":
        return str(make_rad_dino_dir(root))
    if fmt in ("open_clip", "biomedclip"):
        return str(make_hub_dir(root, "builtin" if fmt == "open_clip" else "biomedclip")[0])
    if fmt in ("chexzero", "chexzero-resnet"):
        return str(make_chexzero_file(root, vision_tower="resnet" if fmt == "chexzero-resnet" else "vit")[0])
    if fmt == "xrv":
        monkeypatch.setattr("radlab.models.external.xrv.DENSENET_SIZE", 64)
        return str(_xrv_file(root))
    if fmt == "biovil":  # beside CXR-BERT-specialized's files, as its hub repository keeps it
        monkeypatch.setattr("radlab.models.external.biovil.BIOVIL_SIZE", 64)
        return str(make_biovil_file(make_cxr_bert_dir(root / "BiomedVLP-CXR-BERT-specialized")[0])[0])
    if fmt == "gloria":
        path = make_gloria_dir(root, monkeypatch)[0]
        monkeypatch.setattr("radlab.models.external.gloria.GLORIA_SIZE", 64)
        monkeypatch.setattr("radlab.models.external.gloria.GLORIA_INNER_SIZE", 64)
        return str(path)
    monkeypatch.setattr("radlab.models.external.medclip.MEDCLIP_SIZE", 64)
    return str(make_medclip_dir(root, "swin")[0])


FORMATS = {"rad-dino": ["linear_probe"], "open_clip": ["zero_shot", "linear_probe"], "biomedclip": ["zero_shot"],
           "chexzero": ["zero_shot"], "chexzero-resnet": ["zero_shot"], "xrv": ["linear_probe", "zero_shot"],
           "biovil": ["linear_probe", "zero_shot"], "gloria": ["zero_shot"], "medclip": ["zero_shot"]}


FAST = ("rad-dino", "open_clip", "chexzero")


@pytest.mark.parametrize("fmt", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FORMATS])
def test_eval_external_encoder_end_to_end(phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fmt: str) -> None:
    path = _build(fmt, tmp_path / fmt, monkeypatch)
    encoder = f"{fmt.removesuffix('-resnet')}:{path}"
    out = tmp_path / "metrics.json"
    args = ["eval", "--encoder", encoder, "--data", f"phantom:{phantom_dir}", "--out", str(out),
            "--bootstrap", "20", "--no-cache"]
    for task in FORMATS[fmt]:
        args += ["--task", task]
    if fmt == "gloria":  # GLoRIA's own zero-shot: global and word-region similarity
        args += ["--option", "zero_shot.similarity=both"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads(out.read_text())
    assert metrics["encoder"] == encoder
    for task in FORMATS[fmt]:
        auc = metrics["tasks"][task]["macro_auc"]
        assert isinstance(auc, float) and 0.0 <= auc <= 1.0
    if fmt == "gloria":
        assert metrics["tasks"]["zero_shot"]["similarity"] == "both"
