"""Every image task end to end on phantoms with one tiny random-init encoder (fast budgets).

Learning-based tasks must beat chance on held-out data: random ViT features of phantoms carry enough signal
for probes of sex and for masks; metrics reported by tasks are re-computed with scikit-learn here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from radlab.data.records import RecordTable
from radlab.evaluation import TASKS
from radlab.evaluation.context import EvalContext
from radlab.evaluation.runner import evaluate, write_json
from radlab.evaluation.zero_shot import EXCLUSIVE_CLASSES, derived_from_seen, exclusive_sample
from radlab.models.checkpoint import load_encoder_checkpoint, save_encoder
from radlab.models.encoder import LabelHead, RadEncoder
from radlab.train.setup import training_labels

IMAGE_TASKS = ["linear_probe", "zero_shot", "knn", "kshot", "demographics", "segmentation", "retrieval",
               "report_generation", "finetune", "text_retrieval"]
FAST = {"kshot": {"shots": [2, 16], "fractions": [0.1, 1.0], "seeds": 2},
        "segmentation": {"steps": 150}, "finetune": {"steps": 3, "batch_size": 16},
        "zero_shot": {"seen_classes": "cardiomegaly,pleural_effusion,no_finding"}}


@pytest.fixture(scope="module")
def labels(split_table: RecordTable) -> list[str]:
    return training_labels(split_table.split("train"), None)


@pytest.fixture(scope="module")
def results(tiny_encoder: RadEncoder, split_table: RecordTable, labels: list[str], cache_dir: Path) -> dict:
    return evaluate(tiny_encoder, split_table, IMAGE_TASKS, labels, seed=0, encoder_name="tiny", options=FAST,
                    n_boot=100, cache_dir=cache_dir)


def test_every_task_is_registered_and_ran(results: dict) -> None:
    assert {"linear_probe", "zero_shot", "vqa"} <= set(TASKS.names())
    for name in IMAGE_TASKS:
        assert "skipped" not in results["tasks"][name], (name, results["tasks"][name])


def test_results_record_provenance(results: dict, tmp_path: Path) -> None:
    assert len(results["encoder_hash"]) == 16 and len(results["data_hash"]) == 16
    assert results["config"]["n_boot"] == 100 and results["config"]["options"] == FAST
    assert results["seed"] == 0 and results["code_version"]
    written = json.loads(write_json(results, tmp_path / "m.json").read_text())
    assert written["tasks"]["linear_probe"]["macro_auc_ci"]["unit"] == "patient"


def test_linear_probe_auc_matches_sklearn(results: dict, tiny_encoder: RadEncoder, split_table: RecordTable,
                                          labels: list[str]) -> None:
    probe = results["tasks"]["linear_probe"]
    assert 0.5 < probe["macro_auc"] <= 1 and probe["macro_auc_ci"]["ci_low"] <= probe["macro_auc"]
    assert probe["macro_auc"] == pytest.approx(np.mean(list(probe["auc"].values())))


def test_zero_shot_modes_and_seen_vs_unseen(results: dict) -> None:
    zs = results["tasks"]["zero_shot"]
    assert zs["mode"] == "prompts" and set(zs["modes"]) == {"names", "ensemble", "descriptions"}
    names = zs["modes"]["names"]
    assert set(names["seen_classes"]) | set(names["unseen_classes"]) == set(names["auc"])
    assert "cardiomegaly" in names["seen_classes"] and "edema" in names["unseen_classes"]
    assert names["single_label"]["n"] > 0
    assert set(zs["ap"]) == set(zs["prevalence"]) == set(zs["auc"])
    assert all(0 < p < 1 for p in zs["prevalence"].values()) and all(0 <= a <= 1 for a in zs["ap"].values())


def test_exclusive_sample_takes_images_positive_for_exactly_one_class() -> None:
    nan = np.nan
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, -1], [0, 0, 1], [1, 0, 0], [0, 1, nan], [1, 0, 0]])
    rows, truth = exclusive_sample(labels, per_class=2, seed=0)
    assert set(rows[truth == 0]) <= {0, 5, 7} and len(rows[truth == 0]) == 2  # capped at 2 of 3
    assert rows[truth == 1].tolist() == [2] and rows[truth == 2].tolist() == [4]  # 1 (two), 3 (uncertain), 6 (nan)
    again = exclusive_sample(labels, per_class=2, seed=0)
    assert np.array_equal(rows, again[0]) and np.array_equal(truth, again[1])


def test_zero_shot_reports_the_exclusive_5x200_style_accuracy(results: dict) -> None:
    exclusive = results["tasks"]["zero_shot"]["exclusive"]
    assert len(exclusive["classes"]) >= 2 and set(exclusive["classes"]) <= set(EXCLUSIVE_CLASSES)
    assert sum(exclusive["n_per_class"]) == exclusive["n"] > 0 and max(exclusive["n_per_class"]) <= 200
    ci = exclusive["accuracy_ci"]
    assert ci["ci_low"] <= exclusive["accuracy"] <= ci["ci_high"] and exclusive["chance"] == 1 / len(exclusive["classes"])


def test_zero_shot_takes_seen_classes_from_a_radlab_checkpoint(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                              labels: list[str], tmp_path: Path) -> None:
    """A checkpoint records the findings its training data annotated; zero-shot splits seen/unseen by them."""
    encoder = copy.deepcopy(tiny_encoder)
    encoder.seen_classes = ["cardiomegaly", "pleural_effusion"]
    spec = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "depth": 2}}
    loaded = load_encoder_checkpoint(save_encoder(encoder, tmp_path / "checkpoint", spec))
    assert loaded.seen_classes == ["cardiomegaly", "pleural_effusion"]
    zs = evaluate(loaded, split_table, ["zero_shot"], labels, n_boot=10,
                  options={"zero_shot": {"modes": ["names"]}})["tasks"]["zero_shot"]
    assert zs["seen_classes"] == ["cardiomegaly", "pleural_effusion"]
    assert "edema" in zs["modes"]["names"]["unseen_classes"]


def test_zero_shot_through_prototypes_with_unseen_defined_from_seen(tiny_encoder: RadEncoder,
                                                                      split_table: RecordTable,
                                                                      labels: list[str], cache_dir: Path) -> None:
    """A label-supervised model scores its head's classes; lung_opacity (unseen) = max of seen children."""
    image_only = copy.deepcopy(tiny_encoder)
    image_only.text_tower, image_only.text_proj = None, None
    image_only.label_head = LabelHead(["cardiomegaly", "consolidation", "edema"], image_only.embed_dim)
    out = evaluate(image_only, split_table, ["zero_shot"], labels, n_boot=20, cache_dir=cache_dir)["tasks"]["zero_shot"]
    assert out["mode"] == "prototypes"
    proto = out["modes"]["prototypes"]
    assert proto["seen_classes"] == ["cardiomegaly", "consolidation", "edema"]
    assert proto["unseen_defined_as"]["lung_opacity"] == "max(edema, consolidation)"
    assert "lung_opacity" in proto["unseen_classes"] and "nodule" not in proto["auc"]
    assert derived_from_seen("pneumonia", ["consolidation"]) == (["consolidation"], "ancestor")


def test_knn_and_kshot(results: dict) -> None:
    assert results["tasks"]["knn"]["macro_auc"] > 0.5
    ks = results["tasks"]["kshot"]
    assert set(ks["kshot"]) == {"2", "16"} and set(ks["fraction"]) == {"0.1", "1.0"}
    assert ks["kshot"]["16"]["n"] == 2 and len(ks["kshot"]["16"]["per_seed"]) == 2
    assert set(ks["kshot_findings"]) <= set(ks["fraction_findings"]) and ks["fraction"]["1.0"]["n_unfit"] == [0, 0]
    assert ks["fraction"]["1.0"]["mean"] > 0.5


def test_demographics_beat_chance(results: dict, tiny_encoder: RadEncoder,
                                                    split_table: RecordTable) -> None:
    demo = results["tasks"]["demographics"]
    assert demo["sex"]["auc"] > 0.6
    assert demo["age"]["mae"] > 0 and demo["age"]["r2"] <= 1


def test_segmentation_beats_all_zero_baseline(results: dict) -> None:
    seg = results["tasks"]["segmentation"]
    assert set(seg["structures"]) == {"lungs", "heart"}
    for metrics in seg["structures"].values():
        assert metrics["dice"] > 0.5 > metrics["all_zero_dice"]
        assert 0 < metrics["iou"] <= metrics["dice"]


def test_retrieval_both_ways_at_two_levels(results: dict) -> None:
    ret = results["tasks"]["retrieval"]
    for level in ("report", "sentence"):
        for direction in ("image_to_text", "text_to_image"):
            block = ret[level][direction]
            assert 0 <= block["R@1"] <= block["R@5"] <= block["R@10"] <= block["R@50"] <= 1
            assert block["median_rank"] >= 1
    assert ret["sentence"]["text_to_image"]["n_queries"] > ret["report"]["text_to_image"]["n_queries"]


def test_report_generation_scores(results: dict) -> None:
    gen = results["tasks"]["report_generation"]
    assert gen["via"] == "image" and 0 < gen["bleu4"] < 1 and 0 < gen["rouge_l"] < 1
    assert 0 <= gen["clinical_f1"] <= 1 and gen["clinical_f1_source"] in ("labeller", "record_labels")


def test_finetune_runs_and_reports_auc(results: dict) -> None:
    ft = results["tasks"]["finetune"]
    assert ft["steps"] == 3 and 0 <= ft["macro_auc"] <= 1
    assert ft["best_step"] == ft["steps_run"] == 3 and ft["selection"] == "best validation macro AUC"


def test_feature_cache_on_disk(tiny_encoder: RadEncoder, split_table: RecordTable, labels: list[str],
                               cache_dir: Path, results: dict) -> None:
    again = evaluate(tiny_encoder, split_table, ["linear_probe"], labels, n_boot=10, cache_dir=cache_dir)
    assert again["feature_extractions"] == 0
    assert again["tasks"]["linear_probe"]["macro_auc"] == results["tasks"]["linear_probe"]["macro_auc"]
    changed = copy.deepcopy(tiny_encoder)
    with torch.no_grad():
        changed.image_proj.weight.add_(1.0)
    other = evaluate(changed, split_table, ["linear_probe"], labels, n_boot=10, cache_dir=cache_dir)
    assert other["encoder_hash"] != again["encoder_hash"] and other["feature_extractions"] > 0


def test_paired_comparison(tiny_encoder: RadEncoder, split_table: RecordTable, labels: list[str],
                           cache_dir: Path) -> None:
    out = evaluate(tiny_encoder, split_table, ["linear_probe", "knn"], labels, n_boot=50, cache_dir=cache_dir,
                   compare=tiny_encoder, compare_name="same")
    diff = out["paired_difference"]["linear_probe/macro_auc"]
    assert diff["difference"] == 0 and diff["ci_low"] == diff["ci_high"] == 0
    assert "knn/macro_auc" in out["paired_difference"]


def test_probe_auc_cross_checked_with_sklearn(tiny_encoder: RadEncoder, split_table: RecordTable,
                                              labels: list[str], cache_dir: Path) -> None:
    from radlab.evaluation.features import FeatureCache
    from radlab.evaluation.linear_probe import probe_scores, standardised

    ctx = EvalContext(tiny_encoder, split_table, labels, features=FeatureCache(cache_dir))
    x, y = standardised(ctx)
    scores, fitted = probe_scores(ctx, x, y)
    report = evaluate(tiny_encoder, split_table, ["linear_probe"], labels, n_boot=10, cache_dir=cache_dir)
    for name in fitted:
        k = labels.index(name)
        known = np.isin(y["test"][:, k], (0, 1))
        expected = roc_auc_score(y["test"][known, k], scores[known, k])
        assert report["tasks"]["linear_probe"]["auc"][name] == pytest.approx(expected)
        ap = average_precision_score(y["test"][known, k], scores[known, k])
        assert report["tasks"]["linear_probe"]["ap"][name] == pytest.approx(ap)
        assert report["tasks"]["linear_probe"]["prevalence"][name] == pytest.approx(y["test"][known, k].mean())
    probe = report["tasks"]["linear_probe"]
    assert probe["macro_ap"] == pytest.approx(np.mean([probe["ap"][n] for n in fitted]))
    assert probe["macro_ap_ci"]["n_valid"] > 0 and probe["macro_ap_ci"]["ci_low"] <= probe["macro_ap_ci"]["ci_high"]


def test_kshot_draws_k_positives_and_k_negatives_from_train(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                            labels: list[str], cache_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from radlab.evaluation import kshot
    from radlab.evaluation.features import FeatureCache
    from radlab.evaluation.linear_probe import standardised

    seen: list[np.ndarray] = []
    real = kshot.fit_binary_probe

    def spy(x_train, y_train, *args, **kwargs):
        seen.append(np.asarray(y_train))
        return real(x_train, y_train, *args, **kwargs)

    monkeypatch.setattr(kshot, "fit_binary_probe", spy)
    ctx = EvalContext(tiny_encoder, split_table, labels, features=FeatureCache(cache_dir))
    x, y = standardised(ctx)
    columns = kshot.kshot_findings(ctx, y, 16)
    first = kshot.kshot_scores(ctx, x, y, columns, 4, seed=1)
    assert len(seen) == len(columns) > 0 and all(len(v) == 8 and v.sum() == 4 for v in seen)
    assert first.shape == (len(x["test"]), len(columns))
    assert np.array_equal(kshot.kshot_scores(ctx, x, y, columns, 4, seed=1), first)
    assert not np.array_equal(kshot.kshot_scores(ctx, x, y, columns, 4, seed=2), first)


def test_kshot_validation_can_be_k_shot_too(tiny_encoder: RadEncoder, split_table: RecordTable, labels: list[str],
                                            cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validation=kshot: each probe chooses C on K positive and K other negative validation patients, drawn with
    the seed, not on the whole validation split; the training shots are the same either way."""
    from radlab.evaluation import kshot
    from radlab.evaluation.features import FeatureCache
    from radlab.evaluation.linear_probe import standardised

    calls: list[tuple[np.ndarray, np.ndarray]] = []
    real = kshot.fit_binary_probe

    def spy(x_train, y_train, x_val, y_val, *args, **kwargs):
        calls.append((np.asarray(x_train), np.asarray(y_val)))
        return real(x_train, y_train, x_val, y_val, *args, **kwargs)

    monkeypatch.setattr(kshot, "fit_binary_probe", spy)
    ctx = EvalContext(tiny_encoder, split_table, labels, features=FeatureCache(cache_dir))
    x, y = standardised(ctx)
    columns = kshot.kshot_findings(ctx, y, 4)
    kshot.kshot_scores(ctx, x, y, columns, 2, seed=3)
    full = list(calls)
    calls.clear()
    kshot.kshot_scores(ctx, x, y, columns, 2, seed=3, validation="kshot")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(full, calls, strict=True))
    assert all(len(v) > 4 for _, v in full)
    assert all(len(v) == 4 and v.sum() == 2 for _, v in calls)
    ctx.options = {"kshot": {"validation": "tiny"}}
    ctx.task = "kshot"
    with pytest.raises(ValueError, match="kshot.validation must be one of"):
        kshot.kshot(ctx)


def test_shots_come_from_distinct_patients() -> None:
    from radlab.evaluation.kshot import draw_shots

    patients = np.repeat([f"p{i}" for i in range(6)], 3)
    candidates = np.arange(0, 18, 2)
    for seed in range(50):
        rows = draw_shots(np.random.default_rng(seed), candidates, patients, 4)
        assert len(set(patients[rows])) == 4 and set(rows) <= set(candidates)


def test_no_patient_gives_both_a_positive_and_a_negative_shot() -> None:
    """Longitudinal data: each of 6 patients has a positive and a negative visit; K = 3 takes them all."""
    from types import SimpleNamespace

    from radlab.evaluation.kshot import draw_shots, kshot_findings

    patients = np.repeat([f"p{i}" for i in range(6)], 2)
    labels = np.tile([1.0, 0.0], 6)
    for seed in range(50):
        rng = np.random.default_rng(seed)
        positives = draw_shots(rng, np.flatnonzero(labels == 1), patients, 3)
        negatives = draw_shots(rng, np.flatnonzero(labels == 0), patients, 3, exclude=patients[positives])
        assert not set(patients[positives]) & set(patients[negatives])
    ctx = SimpleNamespace(label_names=["a"], rows=lambda split: np.arange(12), patients=lambda rows: patients[rows])
    y = {"train": labels[:, None], "test": np.array([[1.0], [0.0]])}
    assert kshot_findings(ctx, y, 3) == [0] and kshot_findings(ctx, y, 4) == []


def test_every_shot_and_fraction_averages_the_same_findings(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                            labels: list[str], cache_dir: Path) -> None:
    from radlab.evaluation import kshot
    from radlab.evaluation.features import FeatureCache
    from radlab.evaluation.linear_probe import standardised, two_class
    from radlab.evaluation.metrics import macro_auc

    ctx = EvalContext(tiny_encoder, split_table, labels, features=FeatureCache(cache_dir))
    x, y = standardised(ctx)
    patients = ctx.patients(ctx.rows("train"))
    rare = min(range(len(labels)), key=lambda j: len(np.unique(patients[y["train"][:, j] == 1])))
    n_rare = len(np.unique(patients[y["train"][:, rare] == 1]))
    assert rare not in kshot.kshot_findings(ctx, y, n_rare + 1) and rare in kshot.kshot_findings(ctx, y, n_rare)
    columns = [j for j in range(len(labels)) if two_class(y["train"][:, j]) and two_class(y["test"][:, j])]
    tiny, unfit = kshot.fraction_scores(ctx, x, y, columns, 0.01, seed=0)
    assert unfit > 0 and 0.0 <= macro_auc(y["test"][:, columns], tiny) <= 1.0  # missed findings count as chance
    assert (tiny == 0).all(0).sum() == unfit
    full, none = kshot.fraction_scores(ctx, x, y, columns, 1.0, seed=0)
    assert none == 0 and macro_auc(y["test"][:, columns], full) > 0.5


def test_finetune_ignores_unannotated_labels(tiny_encoder: RadEncoder, split_table: RecordTable,
                                             labels: list[str]) -> None:
    """CheXpert/MIMIC leave labels blank (NaN): they must drop out of the loss, not turn it into NaN."""
    frame = split_table.frame.copy()
    train = np.flatnonzero((frame["split"] == "train").to_numpy())
    frame.loc[frame.index[train[::3]], f"label_{labels[0]}"] = np.nan
    table = RecordTable(frame, split_table.root)
    out = evaluate(tiny_encoder, table, ["finetune"], labels, n_boot=10, options={"finetune": {"steps": 3}})
    ft = out["tasks"]["finetune"]
    assert np.isfinite([ft["train_loss_first"], ft["train_loss_last"], ft["macro_auc"]]).all()


def test_segmentation_reads_0_1_masks_and_scores_the_empty_prediction(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from radlab.evaluation.metrics import dice_iou
    from radlab.evaluation.segmentation import load_masks
    from radlab.models.towers import Preprocess

    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1  # a 0/1 PNG, as many tools write them
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "empty.png")
    records = [{"id": f"r{k}", "image_path": "m.png", "source": "s", "patient_id": f"p{k}", "mask_heart": name}
               for k, name in enumerate(["m.png", "empty.png"])]
    ctx = SimpleNamespace(table=RecordTable.from_records(records, tmp_path),
                          encoder=SimpleNamespace(preprocess=Preprocess(image_size=16)))
    masks = load_masks(ctx, np.arange(2), ["heart"])  # type: ignore[arg-type]
    assert masks[0, 0].sum() == 64 and masks[1, 0].sum() == 0
    dice, _ = dice_iou(masks[:, 0], np.zeros_like(masks[:, 0]))
    assert list(dice) == [0.0, 1.0]  # what all_zero_dice averages: predicting nothing is right on empty masks


def _mask_context(folder: Path, image: np.ndarray, masks: dict[str, np.ndarray], size: int = 16) -> object:
    """An evaluation context over one record per mask file (``masks``: file name -> array), all of ``image``."""
    from types import SimpleNamespace

    from radlab.models.towers import Preprocess

    Image.fromarray(image).save(folder / "image.png")
    for name, array in masks.items():
        Image.fromarray(array).save(folder / name)
    records = [{"id": f"r{k}", "image_path": "image.png", "source": "s", "patient_id": f"p{k}", "mask_heart": name}
               for k, name in enumerate(masks)]
    return SimpleNamespace(table=RecordTable.from_records(records, folder),
                           encoder=SimpleNamespace(preprocess=Preprocess(image_size=size)))


def test_masks_are_read_as_stored_values_at_any_bit_depth(tmp_path: Path) -> None:
    """A 16-bit mask that is all foreground is all foreground (read as a radiograph, min-max made it empty); a
    scaled copy of the image's shape lines up with it."""
    from radlab.evaluation.segmentation import load_masks

    full16 = np.full((30, 20), 65535, np.uint16)
    half = np.zeros((60, 40), np.uint8)
    half[:, :20] = 255
    ctx = _mask_context(tmp_path, np.zeros((30, 20), np.uint8), {"full16.png": full16, "half.png": half})
    masks = load_masks(ctx, np.arange(2), ["heart"])  # type: ignore[arg-type]
    padded_width = 16 * 20 // 30  # the 30x20 portrait image is fitted into 16 px high, padded to 16 wide
    assert masks[0, 0].sum() == pytest.approx(16 * padded_width, abs=16)
    assert masks[1, 0].sum() == pytest.approx(masks[0, 0].sum() / 2, abs=16)


def test_a_mask_of_another_shape_than_its_image_is_refused(tmp_path: Path) -> None:
    from radlab.evaluation.segmentation import load_masks

    ctx = _mask_context(tmp_path, np.zeros((120, 90), np.uint8), {"square.png": np.full((120, 120), 255, np.uint8)})
    with pytest.raises(ValueError, match=r"square\.png: a 120x120 px mask for the 90x120 px image .*image\.png"):
        load_masks(ctx, np.arange(1), ["heart"])  # type: ignore[arg-type]


def test_a_lossy_mask_is_refused(tmp_path: Path) -> None:
    from radlab.evaluation.segmentation import load_masks

    ctx = _mask_context(tmp_path, np.zeros((16, 16), np.uint8), {"m.jpg": np.full((16, 16), 255, np.uint8)})
    with pytest.raises(OSError, match=r"m\.jpg: masks are read from lossless files"):
        load_masks(ctx, np.arange(1), ["heart"])  # type: ignore[arg-type]


def test_options_no_task_reads_are_named(tiny_encoder: RadEncoder, split_table: RecordTable, labels: list[str],
                                          cache_dir: Path) -> None:
    out = evaluate(tiny_encoder, split_table, ["knn"], labels, n_boot=10, cache_dir=cache_dir,
                   options={"knn": {"kk": 3, "k_grid": [1, 3]}})
    assert out["unread_options"] == ["knn.kk"] and out["tasks"]["knn"]["k"] in (1, 3)
