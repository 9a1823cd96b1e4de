"""Config validation: what a pre-training config refuses, with the key and the fix in the message, before any
data are read or anything is built."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_runs import CONFIGS, tiny_config

from radlab.config import load_yaml
from radlab.data.records import RecordTable
from radlab.models.build import tower_arguments
from radlab.models.image_towers import IMAGE_TOWERS
from radlab.train.config import TrainConfig
from radlab.train.setup import training_labels

CLIP = CONFIGS / "clip.yaml"


def clip(*overrides: str) -> TrainConfig:
    return TrainConfig.from_file(CLIP, list(overrides))


@pytest.mark.parametrize("method", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_config_loads_as_is_and_tiny(method: str, tmp_path: Path) -> None:
    """The kwargs checks refuse nothing the shipped configs or the engine tests' tiny overrides pass."""
    TrainConfig.from_file(CONFIGS / f"{method}.yaml")
    tiny_config(method, tmp_path / "data", tmp_path / "out")


@pytest.mark.parametrize(("override", "key", "accepted"), [
    ("objective.kwargs.temperatur=0.1", "objective.kwargs.temperatur", "init_temperature, max_scale"),
    ("model.text_tower.kwargs={layer: 1}", "model.text_tower.kwargs.layer", "layers"),
    ("model.image_tower.kwargs={dept: 1}", "model.image_tower.kwargs.dept", "depth"),
    ("model.image_tower={name: hf_vision, kwargs: {path: x, input_men: 0.5}}", "model.image_tower.kwargs.input_men",
     "input_mean, input_std, path"),
])
def test_misspelt_kwargs_are_refused_by_dotted_key(override: str, key: str, accepted: str) -> None:
    with pytest.raises(ValueError, match=rf"{re.escape(key)}: not an argument of .*{accepted}"):
        clip(override)


def test_timm_tower_takes_timm_and_radlab_options() -> None:
    """A timm tower's **kwargs go to timm: its model class's arguments, create_model's and radlab's are taken."""
    cfg = clip("model.image_tower.kwargs={patch_size: 8, depth: 1, embed_dim: 48, num_heads: 3, "
               "drop_path_rate: 0.1, img_size: 64, pretrained_strict: false}",
               "model.text_tower=null", "objective.name=simclr")
    assert cfg.model.image_tower.kwargs["depth"] == 1
    cfg = clip("model.image_tower={name: resnet18, kwargs: {regions_stage: -2, layers: [1, 1, 1, 1]}}")
    assert cfg.model.image_tower.kwargs["layers"] == [1, 1, 1, 1]


@pytest.mark.parametrize("name", [n for n in IMAGE_TOWERS.names() if n != "hf_vision"])
def test_every_timm_tower_has_checkable_arguments(name: str) -> None:
    arguments = tower_arguments(IMAGE_TOWERS, name)
    assert arguments is not None and {"drop_path_rate", "checkpoint_path", "regions_stage"} <= arguments


def test_tower_kwarg_without_value_is_refused_with_the_yaml_hint() -> None:
    with pytest.raises(ValueError, match=r"model\.image_tower\.kwargs\.depth:1 has no value .*space after the "
                                         r"colon: \{depth: 1\}"):
        clip("model.image_tower.kwargs={depth:1}")
    with pytest.raises(ValueError, match=r"model\.text_tower\.kwargs\.layers has no value"):
        clip("model.text_tower.kwargs={layers: null}")


@pytest.mark.parametrize("override", ["optim.steps=-5", "optim.steps=0", "optim.batch_size=0",
                                      "optim.accumulation=0"])
def test_optimisation_counts_must_be_positive(override: str) -> None:
    key = override.partition("=")[0]
    with pytest.raises(ValueError, match=rf"clip\.yaml: {re.escape(key)}: should be greater than 0"):
        clip(override)


def test_unknown_labels_are_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"data\.labels: not canonical findings .*'foo'; valid: no_finding, "):
        clip("data.labels=[cardiomegaly, foo]")
    with pytest.raises(ValueError, match=r"'pleural_efusion' \(did you mean 'pleural_effusion'\?\)"):
        clip("data.labels=[pleural_efusion]")
    assert clip("data.labels=[cardiomegaly, pleural_effusion]").data.labels == ["cardiomegaly", "pleural_effusion"]


def test_requested_labels_the_training_records_never_annotate_are_refused() -> None:
    table = RecordTable.from_records([
        {"id": id_, "image_path": f"{id_}.png", "source": "phantom", "patient_id": id_, "label_cardiomegaly": value,
         "label_edema": np.nan} for id_, value in [("a", 1.0), ("b", 0.0)]])
    assert training_labels(table, None) == ["cardiomegaly"]
    assert training_labels(table, ["cardiomegaly"]) == ["cardiomegaly"]
    with pytest.raises(ValueError, match=r"data\.labels: no pre-training record annotates edema, pneumothorax"):
        training_labels(table, ["cardiomegaly", "edema", "pneumothorax"])


def test_a_config_needs_a_data_source() -> None:
    with pytest.raises(ValueError, match=r"data\.sources is empty: list at least one"):
        clip("data.sources=[]")


def test_yaml_syntax_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("objective:\n  name: clip\n  kwargs: {temperature: 0.1\n")
    with pytest.raises(yaml.YAMLError, match=re.escape(str(path))):
        load_yaml(path)


def test_an_override_that_is_not_yaml_is_named_by_itself() -> None:
    item = "data.sources=[{source: phantom, path: runs/phantoms}"
    with pytest.raises(ValueError, match=re.escape(f"override {item!r}: its value is not valid YAML")) as err:
        clip(item)
    assert "<unicode string>" not in str(err.value)


def test_misspelt_settings_name_the_file_the_key_and_the_closest_setting(tmp_path: Path) -> None:
    """One readable line per bad key, not pydantic's text: the file, the dotted key, the closest known key at
    that level (from the file, or from an override, which is then named)."""
    config = load_yaml(CLIP)
    config["optim"]["warmup_step"] = 15
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError) as err:
        TrainConfig.from_file(path, ["optim.stepz=5", "runtime.device=gpu", "data.sources=[{source: x, pth: y}]"])
    lines = str(err.value).splitlines()
    assert f"{path}: optim.warmup_step: not a setting (did you mean optim.warmup_steps?)" in lines
    assert f"{path}: optim.stepz: not a setting (did you mean optim.steps?); given by the override " \
           "'optim.stepz=5'" in lines
    assert any(line.startswith(f"{path}: data.sources[0].pth: not a setting (did you mean data.sources[0].path?)")
               for line in lines)
    assert any(line.startswith(f"{path}: runtime.device: should be 'auto', 'cpu' or 'cuda' (got 'gpu')")
               for line in lines)
    assert "errors.pydantic.dev" not in str(err.value) and "Extra inputs" not in str(err.value)
    with pytest.raises(ValueError, match=r"clip\.yaml: ema\.zzz: not a setting \(settings here: decay, warmup\)"):
        clip("ema={zzz: 1}")
