"""``radlab eval`` end to end: a radlab checkpoint and an external-format (open_clip) encoder, on the bundled
real IU X-ray reports (text tasks; the bundle has no images, so image tasks report why they were skipped)
and on phantoms (image tasks, paired comparison of the two encoders)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from typer.testing import CliRunner

from markers import cuda
from radlab.cli import app
from radlab.evaluation.runner import HEADLINES
from radlab.models.checkpoint import save_encoder
from radlab.models.encoder import RadEncoder

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tiny_encoder: RadEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "depth": 2}}
    return save_encoder(tiny_encoder, tmp_path_factory.mktemp("ckpt") / "checkpoint", spec)


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP in open_clip's hub layout (open_clip_config.json + open_clip_pytorch_model.bin)."""
    root = tmp_path_factory.mktemp("open_clip")
    torch.manual_seed(0)
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
                 "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.save(open_clip.model.CLIP(**model_cfg).state_dict(), root / "open_clip_pytorch_model.bin")
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    return root


def _eval(args: list[str], out: Path) -> dict:
    return _eval_printing(args, out)[0]


def _eval_printing(args: list[str], out: Path) -> tuple[dict, str]:
    """The metrics written and what the command printed."""
    result = runner.invoke(app, ["eval", *args, "--out", str(out), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


@pytest.mark.parametrize("which", ["checkpoint", "external"])
def test_text_tasks_on_bundled_iu_reports(which: str, data_root: Path, checkpoint: Path, open_clip_dir: Path,
                                          tmp_path: Path) -> None:
    spec = ["--checkpoint", str(checkpoint)] if which == "checkpoint" else ["--encoder", f"open_clip:{open_clip_dir}"]
    data = f"iu_xray:{data_root / 'iu_xray_reports'}"
    metrics = _eval([*spec, "--data", data, "--task", "text_retrieval", "--task", "report_generation",
                     "--task", "linear_probe", "--task", "text_probe", "--cache-dir", str(tmp_path / "cache")],
                    tmp_path / "iu.json")
    tasks = metrics["tasks"]
    assert "no images" in tasks["linear_probe"]["skipped"]
    assert tasks["text_retrieval"]["findings_to_impression"]["n_queries"] > 300
    gen = tasks["report_generation"]
    assert gen["via"] == "text" and gen["n_test"] > 300 and 0 < gen["rouge_l"] < 1 and gen["bleu4"] > 0
    assert gen["rouge_l_ci"]["ci_low"] <= gen["rouge_l"] <= gen["rouge_l_ci"]["ci_high"]
    probe = tasks["text_probe"]
    assert probe["n_reports"]["test"] > 500 and probe["macro_auc_ci"]["ci_low"] <= probe["macro_auc"] <= 1
    assert metrics["n_text_records"]["test"] > 0 and metrics["n_records"]["test"] == 0
    assert metrics["config"]["n_boot"] == 50 and len(metrics["data_hash"]) == 16


def test_image_tasks_on_phantoms_with_paired_comparison(phantom_dir: Path, checkpoint: Path, open_clip_dir: Path,
                                                        tmp_path: Path) -> None:
    metrics, printed = _eval_printing(
        ["--checkpoint", str(checkpoint), "--compare", f"open_clip:{open_clip_dir}", "--data", f"phantom:{phantom_dir}",
         "--task", "linear_probe", "--task", "zero_shot", "--task", "retrieval", "-o", "zero_shot.modes=[names]",
         "--seen-classes", "cardiomegaly", "--subgroups", "sex", "-o", "linear_probe.min_patients=5", "--no-cache",
         "--store", str(tmp_path / "store.jsonl")], tmp_path / "ph.json")
    b_probe = metrics["baseline"]["tasks"]["linear_probe"]["macro_auc"]
    assert f"linear_probe of B (open_clip:{open_clip_dir}): macro_auc {b_probe:.3f}" in printed
    assert metrics["tasks"]["linear_probe"]["macro_auc"] > 0.5
    assert metrics["tasks"]["zero_shot"]["seen_classes"] == ["cardiomegaly"]
    assert metrics["config"]["options"] == {"zero_shot": {"modes": ["names"], "seen_classes": "cardiomegaly",
                                                          "subgroups": "sex"},
                                            "linear_probe": {"min_patients": 5, "subgroups": "sex"}}
    sexes = metrics["tasks"]["linear_probe"]["subgroups"]["sex"]
    assert set(sexes["groups"]) == {"F", "M"} and sexes["gap_ci"]["ci_low"] <= sexes["gap"]
    assert metrics["baseline"]["encoder"].startswith("open_clip:")
    diff = metrics["paired_difference"]["linear_probe/macro_auc"]
    assert diff["ci_low"] <= diff["difference"] <= diff["ci_high"] and diff["unit"] == "patient"
    assert "retrieval/report/i2t/R@1" in metrics["paired_difference"]
    report = (tmp_path / "store.md").read_text()
    assert "| linear_probe | macro_auc |" in report and (tmp_path / "store.png").stat().st_size > 0
    assert "## Subgroups" in report and "| linear_probe | sex=F |" in report and "| linear_probe | sex gap |" in report
    assert "linear_probe/subgroups/sex/gap" in metrics["paired_difference"]


@pytest.mark.parametrize(("args", "problem"), [(["-o", "knn-k=5"], "TASK.KEY=VALUE"),
                                               (["-o", "kshot.seeds=2"], "does not ask for"),
                                               (["--labels", "cardiomegaly,nosuch"], "['nosuch'] not among"),
                                               (["--subgroups", "sex,race"], "unknown attribute"),
                                               (["--subgroups", "sex", "--task", "retrieval"], "none was asked"),
                                               (["--workers", "-1"], "greater than or equal to 0")])
def test_bad_option_is_rejected(args: list[str], problem: str, phantom_dir: Path, checkpoint: Path) -> None:
    result = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--data", f"phantom:{phantom_dir}",
                                 *(args if "retrieval" in args else ["--task", "knn", *args])])
    assert result.exit_code != 0 and problem in result.output


@pytest.mark.parametrize("where", ["nowhere", "not_a_checkpoint", "radlab:nowhere"])
def test_a_wrong_checkpoint_path_is_the_only_error(where: str, phantom_dir: Path, tmp_path: Path) -> None:
    """A path that is no radlab checkpoint folder is refused before the leakage check, which would otherwise
    first print that it could not check it."""
    (tmp_path / "not_a_checkpoint").mkdir()
    spec = f"radlab:{tmp_path / 'nowhere'}" if where.startswith("radlab:") else str(tmp_path / where)
    result = runner.invoke(app, ["eval", "--checkpoint", spec, "--data", f"phantom:{phantom_dir}",
                                 "--task", "linear_probe", "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 1 and "is not a radlab checkpoint (no encoder.json)" in result.output, result.output
    assert "leakage" not in result.output and not (tmp_path / "m.json").exists()


def test_a_wrong_compare_path_is_the_only_error(phantom_dir: Path, checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--compare", str(tmp_path / "nowhere"),
                                 "--data", f"phantom:{phantom_dir}", "--task", "linear_probe"])
    assert result.exit_code == 1 and "is not a radlab checkpoint (no encoder.json)" in result.output, result.output
    assert "leakage" not in result.output  # the first encoder's notes came before the error


@pytest.mark.parametrize(("device", "problem"), [("cuda", "no CUDA device"), ("cuda:3", "no CUDA device"),
                                                  ("tpu", "auto, cpu, cuda or cuda:N")])
def test_unusable_device_is_rejected_before_any_work(device: str, problem: str, phantom_dir: Path, checkpoint: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--data", f"phantom:{phantom_dir}",
                                 "--task", "linear_probe", "--device", device, "--out", str(out)])
    assert result.exit_code != 0 and not out.exists()
    assert problem in " ".join(result.output.replace("│", " ").split())


def test_encoders_run_on_the_device_asked_for(phantom_dir: Path, checkpoint: Path, open_clip_dir: Path,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[str] = []
    to = RadEncoder.to

    def spy(self: RadEncoder, *args: object, **kwargs: object) -> RadEncoder:
        moved.append(str(args[0]))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(RadEncoder, "to", spy)
    metrics = _eval(["--checkpoint", str(checkpoint), "--compare", f"open_clip:{open_clip_dir}", "--data",
                     f"phantom:{phantom_dir}", "--task", "linear_probe", "--device", "auto", "--no-cache"],
                    tmp_path / "m.json")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert moved == [expected, expected] and metrics["config"]["device"].startswith(expected)


@cuda
def test_gpu_evaluation_matches_the_cpu(phantom_dir: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Every image task on the GPU, against the same run on the CPU: the same figures up to float noise
    (fine-tuning, nondeterministic on a GPU, only has to finish)."""
    tasks = ["linear_probe", "zero_shot", "retrieval", "knn", "kshot", "demographics", "segmentation",
             "report_generation", "finetune"]
    args = ["--checkpoint", str(checkpoint), "--data", f"phantom:{phantom_dir}", "--no-cache", "-o", "kshot.shots=[4]",
            "-o", "kshot.seeds=1", "-o", "finetune.steps=20", *[arg for task in tasks for arg in ("--task", task)]]
    runs = {device: _eval([*args, "--device", device], tmp_path / f"{device}.json")["tasks"]
            for device in ("cpu", "cuda")}
    assert "macro_auc" in runs["cuda"]["finetune"]
    for task in tasks[:-1]:
        cpu, gpu = runs["cpu"][task], runs["cuda"][task]
        assert "skipped" not in gpu, (task, gpu)
        for key in HEADLINES:
            if key in cpu:
                assert gpu[key] == pytest.approx(cpu[key], abs=0.02), (task, key)
    assert runs["cuda"]["demographics"]["sex"]["auc"] == pytest.approx(runs["cpu"]["demographics"]["sex"]["auc"],
                                                                       abs=0.02)


def test_user_mistakes_end_with_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    typo = runner.invoke(app, ["pretrain", "--config", "configs/simclr.yaml", "optim.stepz=3"])
    missing = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    for result, problem in ((typo, "optim.stepz"), (missing, "no record table at")):
        assert result.exit_code == 1 and "error:" in result.output and problem in result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_a_damaged_checkpoint_or_unknown_format_is_named(checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from radlab.models import load_encoder

    with pytest.raises(ValueError, match="'raddino' is not an encoder format"):
        load_encoder("raddino:/models/x")
    no_text = tmp_path / "no_text"
    shutil.copytree(checkpoint, no_text)
    shutil.rmtree(no_text / "text_tower")
    with pytest.raises(FileNotFoundError, match="incomplete radlab checkpoint: text_tower missing"):
        load_encoder(no_text)
    (no_text / "encoder.json").write_text('{"preprocess": ')
    with pytest.raises(ValueError, match="encoder.json: not valid JSON"):
        load_encoder(no_text)
