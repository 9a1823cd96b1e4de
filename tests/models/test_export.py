"""Export: timm towers load with ``timm.create_model``, transformers towers with ``AutoModel``, plus a model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from external_checkpoints import make_rad_dino_dir
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from radlab.evaluation.features import FeatureCache
from radlab.evaluation.leakage import PretrainingOverlap
from radlab.models import load_encoder
from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.checkpoint import WEIGHTS_FILE, load_encoder_checkpoint, save_encoder
from radlab.models.dino_checkpoint import HEAD_FILE
from radlab.models.encoder import LabelHead
from radlab.models.export import EXPORT_FILE, HEADS_FILE, export_checkpoint, export_encoder
from radlab.models.tokenizer import train_wordpiece

TEXTS = ["small left pleural effusion", "no acute cardiopulmonary process", "cardiomegaly"]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    cfg = ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 2}),
                      text_tower=TowerConfig(name="bert_small", kwargs={"hidden_size": 32, "layers": 1, "heads": 2}),
                      image_size=32, embed_dim=16)
    model = build_encoder(cfg, train_wordpiece(TEXTS * 5, vocab_size=120))
    model.label_head = LabelHead(["effusion", "cardiomegaly"], 16)
    return model.eval()


def test_timm_tower_export_loads_with_timm(tmp_path: Path, encoder) -> None:
    out = export_encoder(encoder, tmp_path / "export", train_config={"objective": {"name": "clip"}},
                         results={"encoder": "x", "seed": 0, "tasks": {"linear_probe": {"macro_auc": 0.75}}})
    config = json.loads((out / "image" / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["pretrained_cfg"]["mean"] == [0.5] and config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ours = encoder.image_features(images)
        local = timm.create_model(f"local-dir:{out / 'image'}", pretrained=True).eval()
        overlay = timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=0, in_chans=1,
                                    img_size=32, depth=2,
                                    pretrained_cfg_overlay={"file": str(out / "image" / "model.safetensors")}).eval()
        for model in (local, overlay):
            theirs = model.forward_head(model.forward_features(images), pre_logits=True)
            torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    heads = load_file(str(out / HEADS_FILE))
    assert set(heads) == {"image_proj.weight", "text_proj.weight", "label_head.prototypes", "label_head.logit_scale"}
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm") and "| linear_probe | 0.750 |" in card and "objective:" in card


@pytest.mark.parametrize("kind", ["mlp", "mlp_wide"])
def test_mlp_projection_export_names_its_layers(tmp_path: Path, kind: str) -> None:
    """A ConVIRT-style encoder exports both MLP layers and its card says which keys make the projection."""
    cfg = ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 1}), text_tower=None,
                      image_size=32, embed_dim=16, projection=kind)
    out = export_encoder(build_encoder(cfg), tmp_path / "export")
    heads = load_file(str(out / HEADS_FILE))
    assert set(heads) == {"image_proj.0.weight", "image_proj.0.bias", "image_proj.2.weight", "image_proj.2.bias"}
    assert heads["image_proj.0.weight"].shape[0] == (192 if kind == "mlp_wide" else 16)
    assert "ReLU, Linear: `*_proj.0.*`, `*_proj.2.*`" in (out / "README.md").read_text()
    assert json.loads((out / "radlab_export.json").read_text())["projection"] == kind


def test_text_tower_export_loads_with_transformers(tmp_path: Path, encoder) -> None:
    out = export_encoder(encoder, tmp_path / "export")
    model = AutoModel.from_pretrained(out / "text").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "text")
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state[:, 0]
        ours = encoder.text_output(encoder.text_tower.tokenize(TEXTS)).pooled
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert "## Text tower" in card
    assert tokenizer.model_max_length == encoder.text_tower.max_length  # truncation=True truncates there
    snippet = card.split("## Text tower")[1].split("```python\n")[1].split("```")[0]
    scope = {"texts": TEXTS}
    with torch.no_grad():
        exec(snippet.replace('"text"', repr(str(out / "text"))), scope)  # the card's code, as a user runs it
    torch.testing.assert_close(scope["features"], ours, atol=1e-5, rtol=1e-5)


def test_summed_hidden_layers_survive_checkpoint_and_export(tmp_path: Path) -> None:
    """A tower summing its last 2 layers (GLoRIA's word features) reloads with them, and the exported card's
    code, run as a user runs it, gives the same features."""
    torch.manual_seed(0)
    text = TowerConfig(name="bert_small", kwargs={"hidden_size": 32, "layers": 2, "heads": 2, "pooling": "mean",
                                                  "hidden_layers": 2})
    cfg = ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 1}), text_tower=text,
                      image_size=32, embed_dim=16)
    model = build_encoder(cfg, train_wordpiece(TEXTS * 5, vocab_size=120)).eval()
    spec = {"name": "vit_tiny_patch16_224", "kwargs": {"depth": 1}}
    loaded = load_encoder_checkpoint(save_encoder(model, tmp_path / "checkpoint", spec))
    assert loaded.text_tower.hidden_layers == 2
    with torch.no_grad():
        ours = model.text_output(model.text_tower.tokenize(TEXTS)).pooled
        torch.testing.assert_close(loaded.text_output(loaded.text_tower.tokenize(TEXTS)).pooled, ours)
    out = export_encoder(model, tmp_path / "export")
    assert json.loads((out / "radlab_export.json").read_text())["text"]["hidden_layers"] == 2
    snippet = (out / "README.md").read_text().split("## Text tower")[1].split("```python\n")[1].split("```")[0]
    assert "hidden_states[-2:]" in snippet
    scope = {"texts": TEXTS}
    with torch.no_grad():
        exec(snippet.replace('"text"', repr(str(out / "text"))), scope)
    torch.testing.assert_close(scope["features"], ours, atol=1e-5, rtol=1e-5)


def test_hf_vision_tower_export_loads_with_automodel(tmp_path: Path) -> None:
    encoder = load_encoder(f"rad-dino:{make_rad_dino_dir(tmp_path / 'rad-dino')}")
    out = export_encoder(encoder, tmp_path / "export")
    model = AutoModel.from_pretrained(out / "image").eval()
    processor = json.loads((out / "image" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx([0.5307] * 3)
    images = torch.rand(1, 1, 56, 56)
    with torch.no_grad():
        theirs = model(pixel_values=(images.expand(-1, 3, -1, -1) - 0.5307) / 0.2583).pooler_output
        torch.testing.assert_close(encoder.image_features(encoder.preprocess.normalise(images)), theirs, atol=1e-5,
                                   rtol=1e-5)
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: transformers")


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_the_cards_transformers_code_feeds_the_geometry_the_encoder_trained_with(tmp_path: Path, fit: str) -> None:
    """A RAD-DINO tower (a 56 px model) trained at 28 px from a config (padded), or RAD-DINO itself (its
    shortest-edge crop): the card's code on a non-square radiograph gives the input radlab gives, and so its
    features."""
    import numpy as np
    from PIL import Image

    from radlab.data.images import fit_square

    start = make_rad_dino_dir(tmp_path / "rd")
    if fit == "pad":
        tower = TowerConfig(name="hf_vision", kwargs={"path": str(start)})
        encoder = build_encoder(ModelConfig(image_tower=tower, text_tower=None, image_size=28, embed_dim=16)).eval()
    else:
        encoder = load_encoder(f"rad-dino:{start}")
    p = encoder.preprocess
    assert p.fit == fit
    out = export_encoder(encoder, tmp_path / "export")
    card = (out / "README.md").read_text()
    snippet = card.split("## Image tower")[1].split("```python\n")[1].split("```")[0]
    pixels = (np.linspace(0, 255, 80 * 56).reshape(80, 56) % 256).astype(np.uint8)
    scope = {"images": [Image.fromarray(pixels)]}
    with torch.no_grad():
        exec(snippet.replace('"image"', repr(str(out / "image"))), scope)  # the card's code, as a user runs it
        assert tuple(scope["x"].shape) == (1, 3, p.image_size, p.image_size)
        ours = torch.from_numpy(fit_square(pixels / 255.0, p.image_size, fit, p.resize)).float()[None, None]
        ours = encoder.image_features(encoder.preprocess.normalise(ours))
    assert torch.nn.functional.cosine_similarity(scope["features"], ours).item() > 0.995


def test_export_checkpoint_carries_train_config_and_results(tmp_path: Path, encoder) -> None:
    checkpoint = save_encoder(encoder, tmp_path / "run" / "checkpoint",
                              {"name": "vit_tiny_patch16_224", "kwargs": {"depth": 2}},
                              {"train_config": {"objective": {"name": "clip"}, "seed": 3}})
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"encoder": str(checkpoint), "encoder_hash": _eval_hash(checkpoint), "seed": 0,
                                   "tasks": {"zero_shot": {"macro_auc": 0.6}}}))
    out = export_checkpoint(checkpoint, tmp_path / "export", metrics)
    card = (out / "README.md").read_text()
    assert "# run" in card and "seed: 3" in card and "| zero_shot | 0.600 |" in card
    assert json.loads((out / "radlab_export.json").read_text())["label_names"] == ["effusion", "cardiomegaly"]


def _eval_hash(checkpoint: Path) -> str:
    """The weights hash ``radlab eval --checkpoint`` records for a checkpoint (``evaluate``'s ``encoder_hash``)."""
    return FeatureCache().encoder_key(load_encoder(str(checkpoint)))


def test_the_card_takes_the_checkpoints_own_figures_and_marks_forced_leakage(tmp_path: Path, encoder) -> None:
    """Metrics of another encoder are refused; where the checkpoint was the baseline (``--compare``), its own
    figures and leakage check go in the card, and figures reported past an overlap are marked and warned of."""
    checkpoint = save_encoder(encoder, tmp_path / "run" / "checkpoint",
                              {"name": "vit_tiny_patch16_224", "kwargs": {"depth": 2}})
    forced = PretrainingOverlap(40, checked=["phantom:/d"], shared_patients=4).as_dict()
    clean = PretrainingOverlap(40, checked=["phantom:/d"]).as_dict()
    other = {"encoder": "other", "encoder_hash": "0123456789abcdef", "seed": 0,
             "tasks": {"linear_probe": {"macro_auc": 0.9}}, "pretraining_overlap": {"encoder": clean}}
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"evaluate other \(weights hash 0123456789abcdef\), not .*checkpoint"):
        export_checkpoint(checkpoint, tmp_path / "export", metrics)
    assert not (tmp_path / "export").exists()
    baseline = {"encoder": str(checkpoint), "encoder_hash": _eval_hash(checkpoint),
                "tasks": {"linear_probe": {"macro_auc": 0.7}}}
    metrics.write_text(json.dumps({**other, "baseline": baseline,
                                   "pretraining_overlap": {"encoder": clean, "compare": forced}}))
    card = (export_checkpoint(checkpoint, tmp_path / "export", metrics) / "README.md").read_text()
    assert "| linear_probe | 0.700 |  | overlap: 4 test patients |" in card and "0.900" not in card
    assert "Warning: this encoder pre-trained on test patients" in card
    card = (export_encoder(encoder, tmp_path / "clean", results=other) / "README.md").read_text()
    assert "| linear_probe | 0.900 |  | clean |" in card and "Warning" not in card


def test_export_replaces_an_earlier_export_and_refuses_other_folders(tmp_path: Path, encoder) -> None:
    """Nothing of an earlier export (its text tower, another run's DINO heads) survives a new one into its
    folder; a folder holding anything else is left alone."""
    out = export_encoder(encoder, tmp_path / "export")
    (out / HEAD_FILE).write_bytes(b"another run's heads")
    cfg = ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 1}), text_tower=None,
                      image_size=32, embed_dim=16)
    export_encoder(build_encoder(cfg), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["image", HEADS_FILE, EXPORT_FILE, "README.md"])
    assert [p.name for p in tmp_path.iterdir()] == ["export"], "no temporary folder is left behind"
    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="results holds other files and no radlab_export.json"):
        export_encoder(encoder, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_export_command(tmp_path: Path, encoder) -> None:
    from typer.testing import CliRunner

    from radlab.cli import app

    checkpoint = save_encoder(encoder, tmp_path / "checkpoint", {"name": "vit_tiny_patch16_224", "kwargs": {"depth": 2}})
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "image" / "model.safetensors").is_file() and (tmp_path / "hf" / "README.md").is_file()


def test_checkpoints_load_offline_and_from_earlier_versions(tmp_path: Path, encoder) -> None:
    """Every weight comes from model.safetensors: the tower's starting-weights file is not needed again, and
    an earlier layout (0-d label-head scale, a BERT pooler) still loads."""

    start = tmp_path / "start.safetensors"
    timm_model = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=32, depth=2)
    save_file(timm_model.state_dict(), str(start))
    spec = {"name": "vit_tiny_patch16_224", "kwargs": {"depth": 2, "checkpoint_path": str(start)}}
    folder = save_encoder(encoder, tmp_path / "ckpt", spec)
    start.unlink()
    state = load_file(str(folder / WEIGHTS_FILE))
    state["label_head.logit_scale"] = state["label_head.logit_scale"].reshape(())
    state["text_tower.model.pooler.dense.weight"] = torch.zeros(32, 32)
    save_file(state, str(folder / WEIGHTS_FILE))
    loaded = load_encoder_checkpoint(folder)
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_features(images), encoder.image_features(images))
    torch.testing.assert_close(loaded.label_head.logit_scale, encoder.label_head.logit_scale)
