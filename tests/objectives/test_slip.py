"""SLIP: the loss against a loop-based float64 reference (samples without report included), its three views,
2 gloo ranks against 1 process on the loss's rows, the registry and config, and training through the engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from radlab.models.towers import TowerOutput
from radlab.objectives.slip import SLIPObjective
from ranks import free_port, start_ranks
from run_logs import logged

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# --- a stand-in encoder: images are pooled features, texts their token features -----------------------

class _FeatureEncoder(nn.Module):
    def __init__(self, image_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=False).double()

    def image_output(self, images: torch.Tensor) -> TowerOutput:
        return TowerOutput(images, images[:, None])

    def project_image(self, out: TowerOutput) -> torch.Tensor:
        return self.image_proj(out.pooled)

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(tokens["features"], dim=-1)


def _batch(n: int, d_img: int, d: int, has_text: list[bool], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": [torch.randn(n, d_img, generator=g, dtype=torch.float64) for _ in range(3)],
            "has_text": torch.tensor(has_text),
            "tokens": {"features": torch.randn(n, d, generator=g, dtype=torch.float64)}}


# --- loop references (python floats) ---------------------------------------------------------------------

def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(rows: list[list[float]]) -> list[list[float]]:
    return [[v / math.sqrt(_dot(r, r)) for v in r] for r in rows]


def _ce(logits: list[float], target: int) -> float:
    top = max(logits)
    return -(logits[target] - top - math.log(sum(math.exp(v - top) for v in logits)))


def _clip(u: list, v: list, s: float) -> float:
    """1/N sum_i ½ [(u_i -> v) + (v_i -> u)]; 0 without pairs."""
    n = len(u)
    total = 0.0
    for i in range(n):
        total += 0.5 * _ce([s * _dot(u[i], v[j]) for j in range(n)], i)
        total += 0.5 * _ce([s * _dot(v[i], u[j]) for j in range(n)], i)
    return total / n if n else 0.0


def _nt_xent(z1: list, z2: list, tau: float) -> float:
    z, n = _unit(z1 + z2), len(z1)
    total = 0.0
    for k in range(2 * n):
        others = [m for m in range(2 * n) if m != k]
        total += _ce([_dot(z[k], z[m]) / tau for m in others], others.index((k + n) % (2 * n)))
    return total / (2 * n)


def _linear(rows: list, layer: nn.Linear) -> list:
    return [[_dot(r, w) + b for w, b in zip(layer.weight.tolist(), layer.bias.tolist(), strict=True)] for r in rows]


def _batch_norm_relu(rows: list, bn: nn.BatchNorm1d) -> list:
    """Training-mode BatchNorm (this batch's mean, biased variance), then ReLU."""
    columns = list(zip(*rows, strict=True))
    mean = [sum(c) / len(c) for c in columns]
    var = [sum((v - m) ** 2 for v in c) / len(c) for c, m in zip(columns, mean, strict=True)]
    return [[max(0.0, (v - m) / math.sqrt(vv + bn.eps) * g + b)
             for v, m, vv, g, b in zip(row, mean, var, bn.weight.tolist(), bn.bias.tolist(), strict=True)]
            for row in rows]


def _mlp(rows: list, head: nn.Sequential) -> list:
    lin1, bn1, _, lin2, bn2, _, lin3 = head
    return _linear(_batch_norm_relu(_linear(_batch_norm_relu(_linear(rows, lin1), bn1), lin2), bn2), lin3)


HAS_TEXT = {"all": [True] * 6, "some_without": [True, False, True, True, False, True], "none": [False] * 6}


@pytest.mark.parametrize("has_text", list(HAS_TEXT))
def test_loss_matches_a_loop_reference(has_text: str) -> None:
    """CLIP over the base views of the samples with a report, NT-Xent over both SSL views of every image
    through the 3-layer MLP (BatchNorm statistics per view), weighted sum; float64."""
    torch.manual_seed(0)
    d_img, d, n, s, tau, weight = 7, 4, 6, 3.0, 0.3, 0.7
    model = _FeatureEncoder(d_img, d)
    objective = SLIPObjective(image_dim=d_img, ssl_scale=weight, ssl_temperature=tau, proj_dim=3,
                              hidden_dim=5).double().train()
    with torch.no_grad():
        objective.logit_scale.log_scale.fill_(math.log(s))
        for bn in (objective.image_mlp[1], objective.image_mlp[4]):  # not the identity BN starts from
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    batch = _batch(n, d_img, d, HAS_TEXT[has_text], seed=1)
    terms = objective(model, batch)

    keep = HAS_TEXT[has_text]
    base, view1, view2 = ([r.tolist() for r in v] for v in batch["image"])
    w = model.image_proj.weight.tolist()
    u = _unit([[_dot(row, wr) for wr in w] for row, k in zip(base, keep, strict=True) if k])
    v = _unit([r.tolist() for r, k in zip(batch["tokens"]["features"], keep, strict=True) if k])
    clip = _clip(u, v, s)
    ssl = _nt_xent(_mlp(view1, objective.image_mlp), _mlp(view2, objective.image_mlp), tau)
    expected = {"clip": clip, "ssl": ssl, "loss": clip + weight * ssl, "logit_scale": s}
    for name, value in expected.items():
        got = float(terms[name].detach())
        assert abs(got - value) < 1e-10, (name, got, value)
    assert not any(terms[k].requires_grad for k in ("clip", "ssl", "logit_scale"))

    terms["loss"].backward()  # every parameter takes part, with or without reports (DDP needs all of them)
    grads = [model.image_proj.weight.grad, objective.logit_scale.log_scale.grad,
             *(p.grad for p in objective.image_mlp.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (float(model.image_proj.weight.grad.abs().sum()) > 0) == any(keep)


def test_an_image_without_views_serves_as_all_three() -> None:
    """Evaluation-style batches carry one image tensor: it is the base view and both SSL views."""
    torch.manual_seed(0)
    model = _FeatureEncoder(5, 3)
    objective = SLIPObjective(image_dim=5, proj_dim=3, hidden_dim=4).double()
    batch = _batch(4, 5, 3, [True, False, True, True], seed=2)
    single = {**batch, "image": batch["image"][0]}
    tripled = {**batch, "image": [batch["image"][0]] * 3}
    with torch.no_grad():
        for name in ("loss", "clip", "ssl"):
            assert float(objective(model, single)[name]) == float(objective(model, tripled)[name])
        assert float(objective(model, single)["ssl"]) != float(objective(model, batch)["ssl"])


# --- the three views ---------------------------------------------------------------------------------------

def _ramp(size: int, axis: int) -> torch.Tensor:
    line = torch.linspace(0, 1, size)
    return (line.view(1, 1, size) if axis == 1 else line.view(1, size, 1)).expand(1, size, size).clone()


def _base_areas(transform: object, size: int, draws: int) -> list[float]:
    """The base view's share of the image, from the spans of an x and a y ramp under the same seed."""
    areas = []
    for seed in range(draws):
        spans = []
        for axis in (1, 0):
            torch.manual_seed(seed)
            base = transform(_ramp(size, axis))[0]
            spans.append(float(base.max() - base.min()))
        areas.append(spans[0] * spans[1])
    return areas


def test_views_are_seeded_distinct_and_the_base_view_is_a_plain_crop() -> None:
    size = 24
    transform = SLIPObjective(image_dim=4, hflip=True).train_transform(size)
    image = torch.rand(1, 40, 40)
    torch.manual_seed(3)
    views = transform(image)
    torch.manual_seed(3)
    again = transform(image)
    assert len(views) == 3 and all(v.shape == (1, size, size) for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    assert not any(torch.equal(views[i], views[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    assert not torch.equal(transform(image)[0], views[0])  # the next draw differs

    # base view: intensities untouched and never flipped; the SSL views are jittered and (hflip) flipped
    flat, ramp = torch.full((1, 32, 32), 0.5), _ramp(32, 1)
    base_flat, ssl_changed, base_rising, ssl_flipped = [], [], [], []
    for seed in range(12):
        torch.manual_seed(seed)
        base, *ssl = transform(flat)
        base_flat.append(bool(torch.allclose(base, flat[:, :size, :size], atol=1e-6)))
        ssl_changed.append(any(float((v - 0.5).abs().max()) > 0.01 for v in ssl))
        base, *ssl = transform(ramp)
        base_rising.append(float(base[..., -1].mean()) > float(base[..., 0].mean()))
        ssl_flipped.append(any(float(v[..., -1].mean()) < float(v[..., 0].mean()) for v in ssl))
    assert all(base_flat) and any(ssl_changed)
    assert all(base_rising) and any(ssl_flipped)

    # base crops cover base_crop_scale of the area: SLIP's (0.5, 1) by default, and what a config sets
    default = _base_areas(transform, 32, 16)
    assert min(default) > 0.42 and max(default) - min(default) > 0.1, default
    small = _base_areas(SLIPObjective(image_dim=4, base_crop_scale=(0.1, 0.2)).train_transform(32), 32, 16)
    assert max(small) < 0.3, small
    ssl_view = SLIPObjective(image_dim=4, ssl_crop_scale=(0.2, 0.6)).train_transform(32).view
    assert ssl_view.transforms[0].scale == (0.2, 0.6)


# --- 2 gloo ranks against 1 process (on the loss's inputs: the MLP's BatchNorm is per rank on CPU) -------

N, D_IN, D = 8, 6, 5
RANK_HAS_TEXT = {"uneven": [True, True, False, True, True, True, False, True],
                 "first_rank_none": [False, False, False, True, True, True, False, True]}
SPLIT = [3, 5]


def _step(rows: slice, has_text: str) -> torch.Tensor:
    """Loss and gradients of every parameter from this rank's rows: base-view and report embeddings of the
    samples with a report, SSL-view projections of all."""
    g = torch.Generator().manual_seed(0)
    data = {k: torch.randn(N, D_IN, generator=g, dtype=torch.float64) for k in ("base", "text", "v1", "v2")}
    p = {k: torch.randn(D_IN, D, generator=g, dtype=torch.float64).requires_grad_()
         for k in ("w_image", "w_text", "w_ssl")}
    objective = SLIPObjective(image_dim=D_IN, ssl_scale=0.5).double()
    keep = torch.tensor(RANK_HAS_TEXT[has_text])[rows]
    image = F.normalize(data["base"][rows][keep] @ p["w_image"], dim=-1)
    text = F.normalize(data["text"][rows][keep] @ p["w_text"], dim=-1)
    ssl = (data["v1"][rows] @ p["w_ssl"], data["v2"][rows] @ p["w_ssl"])
    terms = objective.terms(image, text, ssl)
    terms["loss"].backward()
    grads = [p[k].grad for k in sorted(p)] + [objective.logit_scale.log_scale.grad]
    return torch.cat([terms["loss"].detach().flatten()] + [v.flatten() for v in grads])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for has_text in RANK_HAS_TEXT:
        values = _step(slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1])), has_text)
        dist.all_reduce(values)  # what DDP does with the gradients (and the logger with the loss): the mean
        results[has_text] = values / world
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path) -> None:
    """Uneven ranks (3 + 5 samples; 2 + 4 with a report, or 0 + 4): loss and gradients of the image, text and
    SSL weights and of the scale equal one process's. The engine-level 2-rank test does not apply: the SSL
    head's BatchNorm normalises per rank on CPU (gloo), so weights after a step differ (~1e-3) from one
    process's; with the SSL term off they agree (~1e-5)."""
    start_ranks(_worker, (2, free_port(), str(tmp_path)))
    for has_text in RANK_HAS_TEXT:
        single = _step(slice(0, N), has_text)
        for r in range(2):
            ranks = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
            torch.testing.assert_close(ranks[has_text], single, rtol=0, atol=1e-9)


# --- registry, config and training through the engine ---------------------------------------------------

def test_slip_is_registered_and_its_config_builds() -> None:
    from typer.testing import CliRunner

    from radlab.cli import app
    from radlab.train.config import TrainConfig

    assert "slip" in CliRunner().invoke(app, ["list", "objectives"]).output
    cfg = TrainConfig.from_file(CONFIGS / "slip.yaml")
    assert cfg.objective.name == "slip"
    objective = SLIPObjective(image_dim=192, **cfg.objective.kwargs)  # every kwarg is one the objective takes
    widths = [m.out_features for m in objective.image_mlp if isinstance(m, nn.Linear)]
    assert widths == [cfg.objective.kwargs["hidden_dim"]] * 2 + [cfg.objective.kwargs["proj_dim"]]
    assert objective.ssl_temperature == 0.1 and objective.ssl_scale == 1.0


def test_slip_trains_on_phantoms(phantoms_with_label_only: Path, tmp_path: Path) -> None:
    from radlab.models import load_encoder
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain

    steps = 24
    overrides = [f"out={tmp_path}", f"data.sources=[{{source: phantom, path: {phantoms_with_label_only}}}]",
                 "data.split_fractions={train: 1.0}", "model.image_size=32", "model.image_tower.kwargs={depth: 1}",
                 "model.text_tower.kwargs={pooling: mean, layers: 1, hidden_size: 32, heads: 2, max_length: 48}",
                 f"optim.steps={steps}", "optim.batch_size=16", "optim.lr=1.0e-3", "optim.warmup_steps=3",
                 "optim.log_every=1", "runtime.device=cpu", "data.vocab_size=300",
                 "objective.kwargs.hidden_dim=64", "objective.kwargs.proj_dim=32",
                 f"checkpoint={{every: {steps}, keep_last: 1}}"]
    checkpoint = pretrain(TrainConfig.from_file(CONFIGS / "slip.yaml", overrides), progress=False)
    records = logged(tmp_path)
    assert len(records) == steps
    terms = {k: np.array([r[k] for r in records]) for k in ("loss", "clip", "ssl")}
    assert all(np.isfinite(v).all() and (v > 0).all() for v in terms.values())
    np.testing.assert_allclose(terms["loss"], terms["clip"] + terms["ssl"], rtol=1e-5)
    first, last = terms["loss"][:5].mean(), terms["loss"][-5:].mean()
    print(f"slip: first 5 steps {first:.4f}, last 5 {last:.4f}; clip {terms['clip'][:5].mean():.4f} -> "
          f"{terms['clip'][-5:].mean():.4f}, ssl {terms['ssl'][:5].mean():.4f} -> {terms['ssl'][-5:].mean():.4f}")
    assert last < 0.95 * first

    encoder = load_encoder(checkpoint)
    assert encoder.encode_image(torch.rand(2, 1, 32, 32)).shape == (2, 128)
    restored = SLIPObjective(image_dim=encoder.image_tower.embed_dim, hidden_dim=64, proj_dim=32)
    restored.load_state_dict(load_file(str(checkpoint / "objective.safetensors")))  # strict: every key
    assert float(restored.logit_scale().detach()) != pytest.approx(1 / 0.07)  # the trained scale, not the initial one
