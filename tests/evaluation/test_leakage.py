"""`radlab eval` checks that an encoder did not pre-train on the test patients: checkpoints whose recorded
training config covers them are refused (or, forced, reported with the counts), the check follows init_from
chains, and what cannot be checked (public encoders, no config, data not here) is said, never taken as clean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data import fixtures as fx
from radlab.cli import app
from radlab.data.records import RecordTable
from radlab.data.sources.rsna import RSNAPneumoniaSource
from radlab.data.splits import DEFAULT_FRACTIONS, assign_splits
from radlab.evaluation.leakage import check_pretraining, public_encoder_note
from radlab.models.checkpoint import save_encoder
from radlab.models.encoder import RadEncoder
from radlab.train.config import TrainConfig

runner = CliRunner()


def _checkpoint(encoder: RadEncoder, tower: dict, out: Path, data: Path, source: str = "phantom",
                **data_options: object) -> Path:
    """A checkpoint whose recorded training config pre-trained on ``data`` (phantoms unless ``source`` says)."""
    init_from = data_options.pop("init_from", None)
    cfg = TrainConfig.model_validate({"objective": {"name": "supervised"}, "init_from": init_from,
                                      "data": {"sources": [{"source": source, "path": str(data)}], **data_options}})
    return save_encoder(encoder, out, tower, {"train_config": cfg.model_dump(), "step": 1, "external": None})


@pytest.fixture(scope="module")
def eval_table(phantom_table: RecordTable) -> RecordTable:
    return assign_splits(phantom_table, DEFAULT_FRACTIONS, seed=0)


def test_the_same_split_is_clean_and_another_split_overlaps(tiny_encoder: RadEncoder, tiny_tower_spec: dict,
                                                            phantom_dir: Path, phantom_table: RecordTable,
                                                            eval_table: RecordTable, tmp_path: Path) -> None:
    same = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "same", phantom_dir)
    found = check_pretraining(same, eval_table)
    assert found.clean() and not found.unchecked and len(found.checked) == 1
    assert found.test_patients == eval_table.split("test").frame["patient_id"].nunique()

    everything = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "all", phantom_dir,
                             split_fractions={"train": 1.0})
    found = check_pretraining(everything, eval_table)
    assert found.shared_patients == found.test_patients > 0 and not found.clean()

    reseeded = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "seed1", phantom_dir, split_seed=1)
    found = check_pretraining(reseeded, eval_table)
    train_1 = set(assign_splits(phantom_table, DEFAULT_FRACTIONS, seed=1).split("train").frame["patient_id"])
    assert found.shared_patients == len(train_1 & set(eval_table.split("test").frame["patient_id"])) > 0


def test_a_continued_run_is_followed_back_to_its_first_data(tiny_encoder: RadEncoder, tiny_tower_spec: dict,
                                                            phantom_dir: Path, eval_table: RecordTable,
                                                            tmp_path: Path) -> None:
    first = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "first", phantom_dir, split_fractions={"train": 1.0})
    second = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "second", phantom_dir, init_from=str(first))
    found = check_pretraining(second, eval_table)
    assert len(found.checked) == 2 and found.shared_patients == found.test_patients

    shutil.rmtree(first)
    found = check_pretraining(second, eval_table)
    assert found.clean() and len(found.checked) == 1
    assert any("not a radlab checkpoint folder here" in line for line in found.unchecked)


def test_what_cannot_be_checked_is_listed(tiny_encoder: RadEncoder, tiny_tower_spec: dict, phantom_dir: Path,
                                          eval_table: RecordTable, tmp_path: Path) -> None:
    assert "whose pre-training data are not known" in check_pretraining("open_clip:/x", eval_table).unchecked[0]
    assert "none of this evaluation's sources" in check_pretraining("chexzero:/x", eval_table).unchecked[0]
    bare = save_encoder(tiny_encoder, tmp_path / "bare", tiny_tower_spec)
    assert "records no training config" in check_pretraining(bare, eval_table).unchecked[0]
    moved = tmp_path / "moved_phantoms"
    shutil.copytree(phantom_dir, moved)
    elsewhere = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "elsewhere", moved)
    shutil.rmtree(moved)
    found = check_pretraining(elsewhere, eval_table)
    assert not found.checked and "pre-training data are not here" in found.unchecked[0]


def test_eval_refuses_an_encoder_that_saw_the_test_patients_unless_forced(tiny_encoder: RadEncoder,
                                                                          tiny_tower_spec: dict, phantom_dir: Path,
                                                                          tmp_path: Path) -> None:
    leaky = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "leaky", phantom_dir, split_fractions={"train": 1.0})
    args = ["eval", "--checkpoint", str(leaky), "--data", f"phantom:{phantom_dir}", "--task", "demographics",
            "--bootstrap", "20", "--no-cache", "--out", str(tmp_path / "m.json")]
    clean = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "clean", phantom_dir)
    passed = runner.invoke(app, ["eval", "--checkpoint", str(clean), *args[3:]])
    assert passed.exit_code == 0 and "leakage checked: none of the" in passed.output
    assert json.loads((tmp_path / "m.json").read_text())["pretraining_overlap"]["encoder"]["shared_patients"] == 0
    (tmp_path / "m.json").unlink()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "test figures would be optimistic" in refused.output
    assert not (tmp_path / "m.json").exists()

    forced = runner.invoke(app, [*args, "--allow-overlap"])
    assert forced.exit_code == 0, forced.output
    recorded = json.loads((tmp_path / "m.json").read_text())["pretraining_overlap"]["encoder"]
    assert recorded["shared_patients"] == recorded["test_patients"] > 0 and "warning:" in forced.output


def test_public_encoders_name_the_evaluation_sources_they_pre_trained_on() -> None:
    rsna_on_rad_dino = public_encoder_note("rad-dino", "rad-dino:/x", {"rsna_pneumonia", "phantom"})
    assert "its split of rsna_pneumonia is not known here" in rsna_on_rad_dino, "RSNA's images are NIH's"
    assert "its split of chexpert" in public_encoder_note("gloria", "gloria:/x", {"chexpert"})
    assert "none of this evaluation's sources" in public_encoder_note("gloria", "gloria:/x", {"mimic_cxr"})


def test_torchxrayvision_weights_name_their_datasets(tmp_path: Path) -> None:
    assert "its split of iu_xray is not known" in public_encoder_note("xrv", "xrv:densenet121-res224-all", {"iu_xray"})
    named = tmp_path / "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt"
    named.write_bytes(b"")
    note = public_encoder_note("xrv", f"xrv:{named}", {"siim", "chexpert"})
    assert "pre-trained on padchest, nih, rsna_pneumonia, siim, vindr; its split of siim is" in note
    folder = tmp_path / "chex"
    folder.mkdir()
    (folder / "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt").write_bytes(b"")
    assert "its split of chexpert" in public_encoder_note("xrv", f"xrv:{folder}", {"chexpert"})
    renamed = tmp_path / "out.pt"
    renamed.write_bytes(b"")
    assert "not known here" in public_encoder_note("xrv", f"xrv:{renamed}", {"nih"})


@pytest.mark.parametrize("source", ["auto", "table", "rsna_pneumonia"])
def test_images_are_audited_by_the_records_sources_not_the_configs_name(source: str, tiny_encoder: RadEncoder,
                                                                         tiny_tower_spec: dict, tmp_path: Path) -> None:
    """RSNA's images are NIH's under other ids: pre-training read through `auto` (or an imported table) must
    still be audited image by image against an NIH test split, as when the config names rsna_pneumonia."""
    rsna = fx.build_rsna(tmp_path / "rsna")
    seen = sorted((rsna / "stage_2_train_images").glob("*.dcm"))[0]
    copy = tmp_path / "nih" / "00000007_000.dcm"
    copy.parent.mkdir()
    shutil.copy(seen, copy)
    test = RecordTable.from_records([{"id": "nih_00000007_000", "image_path": copy.name, "source": "nih",
                                      "patient_id": "nih_00007", "split": "test"}], copy.parent)
    if source == "table":  # what `radlab data import rsna_pneumonia` writes
        rsna = RSNAPneumoniaSource().load(rsna).write(tmp_path / "imported").parent
    ckpt = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "ckpt", rsna, source=source,
                       split_fractions={"train": 1.0})
    found = check_pretraining(ckpt, test)
    assert found.shared_patients == 0 and found.exact_duplicates == 1 and not found.clean()


def _renamed(table: RecordTable, root: Path) -> RecordTable:
    """The same images as a manifest would list them: the user's own ids and source name."""
    frame = table.with_absolute_paths().frame.assign(source="manifest")
    frame = frame.assign(patient_id="M" + frame["patient_id"], id="M" + frame["id"], study_id="", split="")
    return assign_splits(RecordTable(frame, root), DEFAULT_FRACTIONS, seed=0)


def test_a_manifest_of_the_pre_training_images_under_other_ids_is_caught(tiny_encoder: RadEncoder,
                                                                        tiny_tower_spec: dict, phantom_dir: Path,
                                                                        phantom_table: RecordTable,
                                                                        tmp_path: Path) -> None:
    everything = _checkpoint(tiny_encoder, tiny_tower_spec, tmp_path / "all", phantom_dir,
                             split_fractions={"train": 1.0})
    renamed = _renamed(phantom_table, tmp_path)
    found = check_pretraining(everything, renamed)
    test_images = len(renamed.split("test"))
    assert found.shared_patients == 0 and found.exact_duplicates == test_images > 0 and not found.clean()


def test_the_split_an_early_stopped_run_chose_its_weights_on_is_audited(tiny_encoder: RadEncoder,
                                                                         tiny_tower_spec: dict, phantom_dir: Path,
                                                                         eval_table: RecordTable,
                                                                         tmp_path: Path) -> None:
    """{train 0.7, val 0.3} trains on the evaluation's train patients and stops early on its val + test ones."""
    cfg = TrainConfig.model_validate({"objective": {"name": "supervised"}, "early_stopping": {"every": 5},
                                      "data": {"sources": [{"source": "phantom", "path": str(phantom_dir)}],
                                               "split_fractions": {"train": 0.7, "val": 0.3}}})
    spec = {"train_config": cfg.model_dump(), "step": 1, "external": None}
    found = check_pretraining(save_encoder(tiny_encoder, tmp_path / "stopped", tiny_tower_spec, spec), eval_table)
    assert found.shared_patients == 0 and found.selected_on_patients == found.test_patients > 0
    assert not found.clean() and "chose its weights (early stopping) on" in found.message("x")


def test_starting_weights_of_towers_and_unreadable_pre_training_images_are_listed(
        tiny_encoder: RadEncoder, tiny_tower_spec: dict, phantom_dir: Path, phantom_table: RecordTable,
        tmp_path: Path) -> None:
    copy = tmp_path / "phantoms"
    shutil.copytree(phantom_dir, copy)
    copy.joinpath(phantom_table.frame["image_path"].iat[0]).write_bytes(b"truncated")
    cfg = TrainConfig.model_validate({
        "objective": {"name": "clip"}, "data": {"sources": [{"source": "phantom", "path": str(copy)}]},
        "model": {"image_tower": {"name": "vit_tiny_patch16_224", "kwargs": {"checkpoint_path": "/w/cxr.safetensors"}},
                  "text_tower": {"name": "cxr_bert"}}})
    spec = {"train_config": cfg.model_dump(), "step": 1, "external": None}
    found = check_pretraining(save_encoder(tiny_encoder, tmp_path / "ck", tiny_tower_spec, spec),
                              _renamed(phantom_table, tmp_path))
    notes = "\n".join(found.unchecked)
    assert "image tower started from /w/cxr.safetensors" in notes and "text tower cxr_bert" in notes
    assert "1 of its pre-training images cannot be read" in notes and len(found.checked) == 1


def test_records_changed_since_pre_training_are_said(tiny_encoder: RadEncoder, tiny_tower_spec: dict,
                                                     phantom_dir: Path, eval_table: RecordTable,
                                                     tmp_path: Path) -> None:
    """A checkpoint records which records it trained on; "cleaning" the data in place afterwards is not clean."""
    from radlab.train.setup import pretraining_tables

    data = tmp_path / "phantoms"
    shutil.copytree(phantom_dir, data)
    cfg = TrainConfig.model_validate({"objective": {"name": "supervised"},
                                      "data": {"sources": [{"source": "phantom", "path": str(data)}]}})
    spec = {"train_config": cfg.model_dump(), "step": 1, "external": None,
            "trained_on": pretraining_tables(cfg, None)[1].digest()}
    ckpt = save_encoder(tiny_encoder, tmp_path / "ck", tiny_tower_spec, spec)
    assert check_pretraining(ckpt, eval_table).unchecked == []
    table = RecordTable.read(data)
    table.subset(list(range(10, len(table)))).write(data)
    notes = check_pretraining(ckpt, eval_table).unchecked
    assert len(notes) == 1 and "not those it trained on" in notes[0]
