"""Continued DINOv2 pre-training from a Hugging Face Dinov2 folder (RAD-DINO layout) with its DINO heads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

from radlab.models import load_encoder
from radlab.models.dino_checkpoint import HEAD_FILE, head_shape, load_head_state, save_head_state
from radlab.models.vit_masking import masked_forward
from radlab.objectives.dinov2 import DINOHead, DINOv2Objective

SIZE, PATCH, DIM = 28, 14, 32


def official_head_state(prefix: str, in_dim: int, k: int, hidden: int = 24, bottleneck: int = 16,
                        n_layers: int = 3, use_bn: bool = False, bias: bool = True) -> dict:
    """Head tensors named as DINOv2's ``DINOHead`` (``_build_mlp``) and its training checkpoints name them
    (``teacher.dino_head.mlp.0.weight`` ...): Linear layers at mlp.0, 2, 4, or at mlp.0, 3, 6 with a
    BatchNorm1d (weight, bias, running stats, num_batches_tracked) after each hidden one; a single Linear
    layer is ``mlp`` itself."""
    g = torch.Generator().manual_seed(len(prefix))
    dims = [in_dim] + [hidden] * (n_layers - 1) + [bottleneck]
    step = 3 if use_bn else 2
    state = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        linear = "mlp" if n_layers == 1 else f"mlp.{step * i}"
        state[f"{linear}.weight"] = torch.randn(b, a, generator=g)
        if bias:
            state[f"{linear}.bias"] = torch.randn(b, generator=g)
        if use_bn and i < n_layers - 1:
            state.update({f"mlp.{step * i + 1}.weight": torch.randn(b, generator=g),
                          f"mlp.{step * i + 1}.bias": torch.randn(b, generator=g),
                          f"mlp.{step * i + 1}.running_mean": torch.randn(b, generator=g),
                          f"mlp.{step * i + 1}.running_var": torch.rand(b, generator=g) + 0.5,
                          f"mlp.{step * i + 1}.num_batches_tracked": torch.tensor(7)})
    state["last_layer.weight_g"] = torch.randn(k, 1, generator=g)
    state["last_layer.weight_v"] = torch.randn(k, bottleneck, generator=g)
    return {f"{prefix}{key}": value for key, value in state.items()}


def official_forward(state: dict, x: torch.Tensor, n_layers: int, use_bn: bool) -> torch.Tensor:
    """What DINOv2's head (in eval mode) computes from ``official_head_state`` tensors (prefix removed)."""
    step = 3 if use_bn else 2
    for i in range(n_layers):
        linear = "mlp" if n_layers == 1 else f"mlp.{step * i}"
        x = F.linear(x, state[f"{linear}.weight"], state.get(f"{linear}.bias"))
        if i < n_layers - 1:
            if use_bn:
                bn = f"mlp.{step * i + 1}"
                x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"],
                                 state[f"{bn}.weight"], state[f"{bn}.bias"])
            x = F.gelu(x)
    v, g = state["last_layer.weight_v"], state["last_layer.weight_g"]
    return F.normalize(x, dim=-1, eps=1e-6) @ (g * F.normalize(v, dim=1)).T


@pytest.fixture(scope="module")
def rad_dino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Dinov2 saved like microsoft/rad-dino, plus a head file with teacher and student heads."""
    root = tmp_path_factory.mktemp("rad-dino")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=SIZE, patch_size=PATCH)
    Dinov2Model(config).eval().save_pretrained(root)
    heads = {**official_head_state("teacher.dino_head.", DIM, 40), **official_head_state("teacher.ibot_head.", DIM, 24),
             **official_head_state("student.dino_head.", DIM, 40)}
    save_file(heads, str(root / HEAD_FILE))
    return root


def test_head_state_strips_prefixes_and_infers_shapes(rad_dino_dir: Path) -> None:
    heads = load_head_state(rad_dino_dir)
    assert set(heads) == {"dino_head", "ibot_head"}
    assert head_shape(heads["dino_head"]) == {"in_dim": DIM, "hidden_dim": 24, "bottleneck_dim": 16,
                                              "n_prototypes": 40, "n_layers": 3, "use_bn": False,
                                              "bias": True}
    expected = official_head_state("teacher.dino_head.", DIM, 40)["teacher.dino_head.mlp.0.weight"]
    torch.testing.assert_close(heads["dino_head"]["mlp.0.weight"], expected)


def test_round_trip_and_plain_last_layer(tmp_path: Path) -> None:
    head = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    save_head_state(tmp_path, {"dino_head": head})
    loaded = load_head_state(tmp_path)["dino_head"]
    assert head_shape(loaded) == {"in_dim": 12, "hidden_dim": 8, "bottleneck_dim": 6, "n_prototypes": 10,
                                  "n_layers": 2, "use_bn": False, "bias": True}
    plain = {f"dino_head.{k}": v for k, v in loaded.items() if not k.startswith("last_layer")}
    plain["dino_head.last_layer.weight"] = torch.randn(10, 6)
    save_file(plain, str(tmp_path / "plain.safetensors"))
    state = load_head_state(tmp_path / "plain.safetensors")["dino_head"]
    rebuilt = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    rebuilt.load_state_dict(state)
    x = torch.randn(3, 6)
    torch.testing.assert_close(rebuilt.last_layer(x), x @ plain["dino_head.last_layer.weight"].T)


def test_parametrized_weight_norm_names_load(tmp_path: Path) -> None:
    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(6, 10, bias=False))
    layer.parametrizations.weight.original0.data.uniform_(0.5, 2.0)
    head = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    flat = {f"student.dino_head.{k}": v for k, v in head.state_dict().items() if not k.startswith("last_layer")}
    flat.update({f"student.dino_head.last_layer.{k}": v.detach() for k, v in layer.state_dict().items()})
    assert "student.dino_head.last_layer.parametrizations.weight.original1" in flat
    save_file(flat, str(tmp_path / HEAD_FILE))
    rebuilt = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    rebuilt.load_state_dict(load_head_state(tmp_path)["dino_head"])
    x = torch.randn(3, 6)
    torch.testing.assert_close(rebuilt.last_layer(x), layer(x).detach())


@pytest.mark.parametrize(("n_layers", "use_bn", "bias"),
                         [(1, False, True), (3, False, False), (3, True, True), (2, True, False)])
def test_official_mlp_layouts_load(tmp_path: Path, n_layers: int, use_bn: bool, bias: bool) -> None:
    """nlayers=1 (a bare Linear: mlp.weight), mlp_bias=False and use_bn=True (BatchNorm1d at mlp.1, mlp.4)."""
    flat = official_head_state("teacher.dino_head.", 12, 10, hidden=8, bottleneck=6, n_layers=n_layers,
                               use_bn=use_bn, bias=bias)
    save_file(flat, str(tmp_path / HEAD_FILE))
    state = load_head_state(tmp_path)["dino_head"]
    spec = head_shape(state)
    assert spec == {"in_dim": 12, "hidden_dim": 8 if n_layers > 1 else 6, "bottleneck_dim": 6,
                    "n_prototypes": 10, "n_layers": n_layers, "use_bn": use_bn, "bias": bias}
    head = DINOHead(spec.pop("in_dim"), **spec)
    head.load_state_dict(state)
    x = torch.randn(5, 12)
    official = {k.removeprefix("teacher.dino_head."): v for k, v in flat.items()}
    torch.testing.assert_close(head.eval()(x), official_forward(official, x, n_layers, use_bn))


def test_non_dinov2_mlp_layout_is_refused(tmp_path: Path) -> None:
    flat = official_head_state("dino_head.", 12, 10, hidden=8, bottleneck=6)
    flat["dino_head.mlp.1.weight"] = flat.pop("dino_head.mlp.2.weight")
    save_file(flat, str(tmp_path / HEAD_FILE))
    with pytest.raises(ValueError, match=rf"{HEAD_FILE}: dino_head is not a DINOv2 DINOHead: Linear layers"):
        load_head_state(tmp_path)


def test_official_pth_checkpoints_load(tmp_path: Path) -> None:
    """The training checkpoint ({"model": {"teacher.dino_head.*", ...}, "iteration": i}) and
    teacher_checkpoint.pth ({"teacher": {"dino_head.*", "ibot_head.*", "backbone.*"}}), as DINOv2 saves
    them."""
    teacher = {**official_head_state("teacher.dino_head.", DIM, 40),
               **official_head_state("teacher.ibot_head.", DIM, 24),
               "teacher.backbone.cls_token": torch.randn(1, 1, DIM)}
    model = {**teacher, **official_head_state("student.dino_head.", DIM, 40),
             "dino_loss.center": torch.zeros(1, 40)}
    torch.save({"model": model, "iteration": 99}, tmp_path / "model_0000099.pth")
    torch.save({"teacher": {k.removeprefix("teacher."): v for k, v in teacher.items()}},
               tmp_path / "teacher_checkpoint.pth")
    for name in ("model_0000099.pth", "teacher_checkpoint.pth"):
        heads = load_head_state(tmp_path / name)
        assert set(heads) == {"dino_head", "ibot_head"}
        for head, state in heads.items():
            expected = {k.removeprefix(f"teacher.{head}."): v for k, v in teacher.items()
                        if k.startswith(f"teacher.{head}.")}
            assert state.keys() == expected.keys()
            for key, value in state.items():
                torch.testing.assert_close(value, expected[key])


def test_pth_needing_unpickling_is_refused(tmp_path: Path) -> None:
    """DINO (v1) checkpoints also pickle their argparse.Namespace: radlab does not unpickle them."""
    file = tmp_path / "checkpoint.pth"
    args = argparse.Namespace(arch="vit_small")
    torch.save({"teacher": official_head_state("dino_head.", DIM, 40), "args": args}, file)
    with pytest.raises(ValueError, match=r"checkpoint\.pth cannot be read with torch\.load\(weights_only"):
        load_head_state(file)


def test_continued_pretraining_with_bn_and_single_linear_heads(rad_dino_dir: Path, tmp_path: Path) -> None:
    """Heads from teacher_checkpoint.pth: a bias-free BatchNorm DINO head and a one-layer iBOT head."""
    teacher = {**official_head_state("dino_head.", DIM, 40, use_bn=True, bias=False),
               **official_head_state("ibot_head.", DIM, 24, n_layers=1)}
    torch.save({"teacher": teacher}, tmp_path / "teacher_checkpoint.pth")
    model = load_encoder(f"rad-dino:{rad_dino_dir}")
    objective = DINOv2Objective(model, init_heads=str(tmp_path / "teacher_checkpoint.pth"), n_local=1,
                                local_size=PATCH).train()
    for heads in (objective.heads, objective.teacher):
        bn, linear = heads["dino_head"].mlp[4], heads["dino_head"].mlp[3]
        torch.testing.assert_close(bn.running_var, teacher["dino_head.mlp.4.running_var"])
        assert linear.bias is None
        torch.testing.assert_close(heads["ibot_head"].mlp[0].weight, teacher["ibot_head.mlp.weight"])
    batch = {"image": [torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, PATCH, PATCH)]}
    terms = objective(model, batch)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()


def test_continued_pretraining_loads_backbone_and_heads(rad_dino_dir: Path) -> None:
    model = load_encoder(f"rad-dino:{rad_dino_dir}")
    objective = DINOv2Objective(model, init_heads=str(rad_dino_dir), n_local=1, local_size=PATCH * 1).train()
    heads = load_head_state(rad_dino_dir)
    torch.testing.assert_close(objective.heads["dino_head"].mlp[0].weight, heads["dino_head"]["mlp.0.weight"])
    torch.testing.assert_close(objective.teacher["ibot_head"].last_layer.weight_v,
                               heads["ibot_head"]["last_layer.weight_v"])
    assert objective.mask_token is None
    images = torch.randn(2, 3, SIZE, SIZE)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 1] = True
    with torch.no_grad():
        plain, _ = masked_forward(model.image_tower, images)
        masked, _ = masked_forward(model.image_tower, images, mask)
    torch.testing.assert_close(plain, model.image_features(images))
    assert not torch.allclose(masked[0], plain[0]) and torch.allclose(masked[1], plain[1], atol=1e-6)
    batch = {"image": [torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, PATCH, PATCH)]}
    terms = objective(model, batch)
    terms["loss"].backward()
    assert model.image_tower.model.embeddings.mask_token.grad is not None or "ibot" not in terms
    with torch.no_grad():
        for p in model.image_tower.parameters():
            p.add_(0.5)
    objective.after_step(model, 1, 10)
    first_t = next(objective.teacher["image_tower"].parameters())
    first_s = next(model.image_tower.parameters())
    torch.testing.assert_close(first_t, 0.992 * (first_s - 0.5) + 0.008 * first_s)
