"""Device choice and the CUDA paths: clear errors when a rank has no GPU, CPU runs that leave CUDA alone, and
(on a GPU machine only; CI has none) a run under bf16 autocast that learns, resumes exactly and moves to the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import CONFIGS, interrupted_copy, tiny_config

from markers import cuda
from radlab.models.checkpoint import load_encoder_checkpoint
from radlab.objectives.clip import ClipObjective
from radlab.train import distributed
from radlab.train.engine import Trainer, pretrain
from radlab.train.state import load_state, rng_state, set_rng_state
from run_logs import logged, loss_curve


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="runtime.device is 'cuda' but PyTorch sees no CUDA device"):
        distributed.init_distributed("cuda")


def test_more_local_ranks_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK 1 has no GPU.*--nproc_per_node=1"):
        distributed.init_distributed("auto")


def test_a_single_process_job_gets_the_gpu_asked_for_or_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.process_device("auto") == torch.device("cuda")
    assert distributed.process_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"shows 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        distributed.process_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.process_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="device 'cuda' asked for but PyTorch sees no CUDA device"):
        distributed.process_device("cuda")


def test_rng_state_holds_cuda_generators_only_once_cuda_is_in_use() -> None:
    """A CPU run on a GPU machine must not start CUDA (a context per rank, and forked ranks fail on it)."""
    assert ("cuda" in rng_state()) == torch.cuda.is_initialized()


@pytest.mark.parametrize("method", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_objective_trains_under_bf16_autocast(method: str, tmp_path: Path, phantom16: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's mixed precision on the CPU (CI has no GPU): bf16 matmuls beside fp32 norms and losses must not
    meet in an op that wants one dtype (MAE's scatter of decoder tokens once did, on the GPU only)."""
    monkeypatch.setattr(Trainer, "autocast", lambda self: torch.autocast("cpu", dtype=torch.bfloat16))
    size = 64 if method == "dinov2" else 32  # at 32 px a local crop would be one 16 px patch
    pretrain(tiny_config(method, phantom16, tmp_path, "optim.steps=2", "optim.batch_size=8", f"model.image_size={size}"),
             progress=False)
    losses = loss_curve(tmp_path)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))), losses


@cuda
def test_a_cuda_run_learns_under_bf16_autocast(tmp_path: Path, phantom16: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, str]] = []
    forward = ClipObjective.forward

    def spy(self: ClipObjective, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        seen.append((torch.is_autocast_enabled("cuda"), next(model.parameters()).device.type))
        return forward(self, model, batch)

    monkeypatch.setattr(ClipObjective, "forward", spy)
    folder = pretrain(tiny_config("clip", phantom16, tmp_path, "optim.steps=100", "optim.batch_size=8",
                                  "optim.lr=1e-3", "runtime.device=cuda"), progress=False)
    assert seen and all(s == (True, "cuda") for s in seen), seen[:3]
    losses = loss_curve(tmp_path)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, losses
    encoder = load_encoder_checkpoint(folder)  # on the CPU
    weights = load_file(str(folder / "model.safetensors"))
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in weights.values())
    images = torch.randn(4, 1, 32, 32)
    on_cpu = encoder.eval().encode_image(images)
    on_gpu = encoder.cuda().encode_image(images.cuda()).cpu()
    assert torch.allclose(on_cpu, on_gpu, atol=1e-4), float((on_cpu - on_gpu).abs().max())


@cuda
def test_a_cuda_run_resumes_exactly_and_its_state_resumes_on_the_cpu(tmp_path: Path, phantom16: Path) -> None:
    """6 steps straight on the GPU vs the step-3 state resumed on the GPU (same weights) and on the CPU (runs on:
    the state's tensors and generators come back from the GPU)."""
    extra = ["optim.steps=6", "optim.batch_size=8", "ema={decay: 0.9}", "checkpoint={every: 3, keep_last: 5}",
             "runtime.device=cuda"]
    straight = pretrain(tiny_config("clip", phantom16, tmp_path / "a", *extra), progress=False)
    interrupted_copy(tmp_path / "a", tmp_path / "b", 3)
    resumed = pretrain(tiny_config("clip", phantom16, tmp_path / "b", *extra, "resume=true"), progress=False)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"CUDA resume vs straight: max |weight difference| {worst:.2e}")
    assert a.keys() == b.keys() and worst < 1e-6
    assert loss_curve(tmp_path / "b") == pytest.approx(loss_curve(tmp_path / "a")[3:], abs=1e-5)

    interrupted_copy(tmp_path / "a", tmp_path / "c", 3)
    on_cpu = pretrain(tiny_config("clip", phantom16, tmp_path / "c", *extra, "resume=true", "runtime.device=cpu"),
                      progress=False)
    assert [r["step"] for r in logged(tmp_path / "c")] == [4, 5, 6]
    c = load_file(str(on_cpu / "model.safetensors"))
    assert max(float((a[k] - c[k]).abs().max()) for k in a) < 0.05  # bf16 autocast on the GPU, fp32 on the CPU


@cuda
def test_rng_state_loaded_onto_the_gpu_restores_every_generator(tmp_path: Path) -> None:
    torch.zeros(1, device="cuda")
    saved = rng_state()
    expected = (torch.rand(3), torch.rand(3, device="cuda").cpu())
    torch.save({"rng": saved}, tmp_path / "state.pt")
    set_rng_state(load_state(tmp_path / "state.pt", torch.device("cuda"))["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(3, device="cuda").cpu(), expected[1])
