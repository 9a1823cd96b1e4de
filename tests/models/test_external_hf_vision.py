"""RAD-DINO / Hugging Face vision folders: radlab's encoder equals ``transformers.AutoModel`` on the same image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from external_checkpoints import RAD_DINO_MEAN, RAD_DINO_STD, make_rad_dino_dir
from safetensors.torch import load_file
from transformers import AutoModel, ViTConfig, ViTForImageClassification, ViTModel

from radlab.models import ENCODERS, load_encoder
from radlab.models.external.hf_vision import processor_settings
from radlab.models.image_towers import IMAGE_TOWERS


@pytest.fixture(scope="module")
def rad_dino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rad_dino_dir(tmp_path_factory.mktemp("rad-dino"))


def test_rad_dino_matches_transformers(rad_dino_dir: Path) -> None:
    encoder = load_encoder(f"rad-dino:{rad_dino_dir}")
    assert encoder.preprocess.image_size == 56 and encoder.preprocess.channels == 3
    assert encoder.preprocess.fit == "crop"  # RAD-DINO's processor: shortest edge, centre crop
    assert encoder.preprocess.mean == pytest.approx(RAD_DINO_MEAN) and encoder.preprocess.std == pytest.approx(RAD_DINO_STD)
    reference = AutoModel.from_pretrained(rad_dino_dir).eval()
    images = torch.rand(2, 1, 56, 56)
    with torch.no_grad():
        ours = encoder.image_output(encoder.preprocess.normalise(images))
        theirs = reference(pixel_values=(images.expand(-1, 3, -1, -1) - RAD_DINO_MEAN) / RAD_DINO_STD)
        embedding = encoder.encode_image(encoder.preprocess.normalise(images))
    torch.testing.assert_close(ours.pooled, theirs.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.tokens, theirs.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-5)
    assert ours.grid == (4, 4) and ours.tokens.shape == (2, 16, 32)
    torch.testing.assert_close(embedding, torch.nn.functional.normalize(theirs.pooler_output, dim=-1), atol=1e-5,
                               rtol=1e-5)
    assert not encoder.has_text


def test_rad_dino_published_with_transformers_4_key_names_loads_the_same(rad_dino_dir: Path, tmp_path: Path) -> None:
    """microsoft/rad-dino's file names its attention weights as transformers 4.x did (attention.attention.query,
    attention.output.dense); this transformers renames them on load, and radlab must get the same model."""
    published = make_rad_dino_dir(tmp_path / "published", transformers_4_keys=True)
    assert any(".attention.attention.query." in k for k in load_file(str(published / "model.safetensors")))
    images = torch.rand(2, 1, 56, 56)
    a, b = load_encoder(f"rad-dino:{rad_dino_dir}"), load_encoder(f"rad-dino:{published}")
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(a.preprocess.normalise(images)),
                                   b.encode_image(b.preprocess.normalise(images)), atol=0, rtol=0)


def test_vit_with_imagenet_statistics_is_normalised_per_channel(tmp_path: Path) -> None:
    """A model with RGB statistics gets each channel normalised with its own mean/std, exactly."""
    torch.manual_seed(1)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16)
    ViTModel(config).eval().save_pretrained(tmp_path)
    encoder = ENCODERS.get("hf-vision")(str(tmp_path))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    reference = AutoModel.from_pretrained(tmp_path).eval()
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ours = encoder.image_features(encoder.preprocess.normalise(images))
        rgb = (images.expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        theirs = reference(pixel_values=rgb).last_hidden_state[:, 0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_classification_checkpoint_without_a_pooler_loads(tmp_path: Path) -> None:
    """google/vit-*'s layout: ViTForImageClassification ships no pooler, which the tower never reads; its
    backbone weights all load (a missing encoder weight is still refused, below)."""
    torch.manual_seed(2)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16, num_labels=3)
    classifier = ViTForImageClassification(config).eval()
    classifier.save_pretrained(tmp_path)
    encoder = ENCODERS.get("hf-vision")(str(tmp_path))
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        rgb = encoder.image_tower.adapter(encoder.preprocess.normalise(images))
        theirs = classifier.vit(pixel_values=rgb).last_hidden_state[:, 0]
        torch.testing.assert_close(encoder.image_features(encoder.preprocess.normalise(images)), theirs)


def test_processor_settings_reads_size_crop_and_statistics(rad_dino_dir: Path, tmp_path: Path) -> None:
    assert processor_settings(str(rad_dino_dir)) == (56, "crop", None, [RAD_DINO_MEAN] * 3, [RAD_DINO_STD] * 3)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "size": 40}))
    assert processor_settings(str(tmp_path)) == (40, "pad", None, [0.0] * 3, [1.0] * 3)
    assert processor_settings(str(tmp_path / "missing"), 64)[0] == 64
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(  # a CLIP-style processor: 256 then crop 224
        {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}}))
    assert processor_settings(str(tmp_path))[:3] == (224, "crop", 256)


def test_hf_vision_image_tower_for_continued_pretraining(rad_dino_dir: Path) -> None:
    """The registered image tower takes radlab's 1-channel input normalised with the config's mean/std."""
    tower = IMAGE_TOWERS.build("hf_vision", image_size=56, path=str(rad_dino_dir), input_mean=0.5, input_std=0.25)
    reference = AutoModel.from_pretrained(rad_dino_dir).eval()
    images = torch.rand(1, 1, 56, 56)
    with torch.no_grad():
        out = tower((images - 0.5) / 0.25)
        theirs = reference(pixel_values=(images.expand(-1, 3, -1, -1) - RAD_DINO_MEAN) / RAD_DINO_STD)
    torch.testing.assert_close(out.pooled, theirs.pooler_output, atol=1e-5, rtol=1e-5)
    assert tower.embed_dim == 32


def test_rad_dino_tower_gets_layer_decay_and_patch_embed_scale(rad_dino_dir: Path) -> None:
    """Continued pre-training from RAD-DINO: its Hugging Face blocks get BEiT layer decay like timm's."""
    from radlab.train.optim import param_groups

    model = ENCODERS.build("rad-dino", path=str(rad_dino_dir))
    groups = param_groups(model, weight_decay=0.04, lr=1.0, layer_decay=0.5, patch_embed_lr_scale=0.2)
    by_name = {name: g for name, p in model.named_parameters() for g in groups if any(p is q for q in g["params"])}
    prefix = "image_tower.model."
    assert by_name[prefix + "encoder.layer.0.mlp.fc1.weight"]["lr"] == 0.5 ** 2
    assert by_name[prefix + "encoder.layer.1.mlp.fc1.weight"]["lr"] == 0.5
    assert by_name[prefix + "embeddings.position_embeddings"]["lr"] == 0.5 ** 3
    assert by_name[prefix + "embeddings.patch_embeddings.projection.weight"]["lr"] == pytest.approx(0.2 * 0.5 ** 3)
    assert by_name[prefix + "embeddings.position_embeddings"]["weight_decay"] == 0.0
    assert by_name[prefix + "encoder.layer.0.mlp.fc1.weight"]["weight_decay"] == 0.04


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_encoder(f"hf-vision:{tmp_path / 'nothing-here'}")
    with pytest.raises(ValueError):
        load_encoder("hf-vision:")


def test_hf_vision_tower_checkpoint_round_trip(rad_dino_dir: Path, tmp_path: Path) -> None:
    """Continued pre-training from RAD-DINO: a radlab checkpoint with the ``hf_vision`` tower reloads exactly."""
    from radlab.models.checkpoint import load_encoder_checkpoint, save_encoder
    from radlab.models.encoder import RadEncoder
    from radlab.models.towers import Preprocess

    spec = {"name": "hf_vision", "kwargs": {"path": str(rad_dino_dir), "input_mean": 0.5, "input_std": 0.25}}
    tower = IMAGE_TOWERS.build("hf_vision", image_size=56, **spec["kwargs"])
    model = RadEncoder(tower, None, 8, Preprocess(image_size=56, mean=0.5, std=0.25)).eval()
    with torch.no_grad():
        next(model.image_tower.parameters()).add_(0.1)
    reloaded = load_encoder_checkpoint(save_encoder(model, tmp_path / "checkpoint", spec))
    images = torch.randn(1, 1, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_image(images), model.encode_image(images))


def test_continued_rad_dino_checkpoint_loads_without_the_original_folder(tmp_path: Path) -> None:
    """A checkpoint of continued RAD-DINO training carries the tower's config: moving or deleting the RAD-DINO
    folder it started from must not break loading it."""
    import shutil

    from radlab.models.build import ModelConfig, TowerConfig, build_encoder
    from radlab.models.checkpoint import load_encoder_checkpoint, save_encoder

    start = make_rad_dino_dir(tmp_path / "rad-dino")
    tower = TowerConfig(name="hf_vision", kwargs={"path": str(start)})
    encoder = build_encoder(ModelConfig(image_tower=tower, text_tower=None, image_size=56, embed_dim=16)).eval()
    with torch.no_grad():
        encoder.image_tower.model.embeddings.cls_token.add_(0.5)  # "trained": differs from the start folder
    folder = save_encoder(encoder, tmp_path / "ckpt", tower.model_dump())
    shutil.rmtree(start)
    loaded = load_encoder_checkpoint(folder)
    images = torch.rand(2, 1, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_features(images), encoder.image_features(images))


def test_a_tower_built_from_a_config_feeds_the_model_its_own_statistics(rad_dino_dir: Path) -> None:
    """The config normalises with its mean/std (0.5/0.25); the tower adapts to RAD-DINO's, so it embeds an image
    as RAD-DINO through its own processor does, and so does the checkpoint it is saved to."""
    from radlab.models.build import ModelConfig, TowerConfig, build_encoder
    from radlab.models.checkpoint import load_encoder_checkpoint, save_encoder

    tower = TowerConfig(name="hf_vision", kwargs={"path": str(rad_dino_dir)})
    built = build_encoder(ModelConfig(image_tower=tower, text_tower=None, image_size=56, embed_dim=16)).eval()
    reference = load_encoder(f"rad-dino:{rad_dino_dir}")
    image = torch.rand(2, 1, 56, 56)
    with torch.no_grad():
        expected = reference.image_features(reference.preprocess.normalise(image))
        torch.testing.assert_close(built.image_features(built.preprocess.normalise(image)), expected)
        saved = load_encoder_checkpoint(save_encoder(built, rad_dino_dir.parent / "ckpt", tower.model_dump()))
        torch.testing.assert_close(saved.image_features(saved.preprocess.normalise(image)), expected)


def test_a_checkpoint_saved_before_towers_adapted_their_input_loads_as_it_was_trained(rad_dino_dir: Path,
                                                                                     tmp_path: Path) -> None:
    """Checkpoints now record the statistics the tower adapted from; an older one (none recorded) was trained
    with the model's own statistics fed straight in, and loads so, not re-mapped from 0.5/0.25."""
    from radlab.models.build import ModelConfig, TowerConfig, build_encoder
    from radlab.models.checkpoint import SPEC_FILE, load_encoder_checkpoint, save_encoder

    tower = TowerConfig(name="hf_vision", kwargs={"path": str(rad_dino_dir)})
    built = build_encoder(ModelConfig(image_tower=tower, text_tower=None, image_size=56, embed_dim=16)).eval()
    folder = save_encoder(built, tmp_path / "ckpt", tower.model_dump())
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert (spec["image_tower"]["kwargs"]["input_mean"], spec["image_tower"]["kwargs"]["input_std"]) == (0.5, 0.25)
    assert not load_encoder_checkpoint(folder).image_tower.adapter.identity
    for key in ("input_mean", "input_std"):
        del spec["image_tower"]["kwargs"][key]
    (folder / SPEC_FILE).write_text(json.dumps(spec))
    older = load_encoder_checkpoint(folder)
    assert older.image_tower.adapter.identity  # RAD-DINO's one statistic on every channel, fed as it is


def test_a_folder_missing_weights_is_refused_not_filled_at_random(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = make_rad_dino_dir(tmp_path / "rad-dino")
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layer.1.mlp.fc1" not in k}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="do not fit the model's config.*layer.1.mlp.fc1"):
        load_encoder(f"rad-dino:{folder}")
