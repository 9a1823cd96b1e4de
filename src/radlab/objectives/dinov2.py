"""DINOv2 self-supervised pre-training, as RAD-DINO (Pérez-García et al., 2025, "Exploring scalable medical
image encoders beyond text supervision") applied it to chest X-rays.

DINOv2 (Oquab et al., 2023) distils an EMA teacher into a student over multi-crop views:

    L = w_dino L_DINO(class tokens) + w_ibot L_iBOT(masked patches) + w_koleo sum_{global views} L_KoLeo

(see ``radlab.objectives.dino_losses``). The teacher sees the two global crops unmasked; the student sees
the global crops with block-masked patches and the local crops. After each step the teacher follows
theta_t <- m theta_t + (1 - m) theta_s with m rising from 0.992 to 1 on a cosine, and the teacher
temperature warms linearly from 0.04 to 0.07.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from radlab.data.augment import MultiCrop, local_crop_size
from radlab.models.checkpoint import strip_prefix
from radlab.models.dino_checkpoint import HEAD_FILE, head_shape, load_head_state
from radlab.models.vit_masking import hf_dinov2, masked_forward, patch_grid, patch_size
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.collapse import CollapseWatch
from radlab.objectives.dino_losses import (
    DINOLoss,
    IBOTPatchLoss,
    effective_rank,
    koleo_loss,
    mean_entropy,
    row_entropy,
)
from radlab.train import distributed as distrib


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight W = g · v / ||v|| per output row (Salimans & Kingma, 2016), stored
    as ``weight_g`` [K, 1] and ``weight_v`` [K, d] like the official DINO heads."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    """MLP (GELU) -> L2 normalisation -> weight-normalised prototypes (Caron et al., 2021; DINOv2's head).

    ``use_bn`` puts a BatchNorm1d after each hidden Linear layer and ``bias=False`` drops the MLP biases, as
    DINOv2's ``use_bn``/``mlp_bias`` do; the layers sit at DINOv2's ``mlp.<i>`` indices (a single Linear
    layer is ``mlp.0``)."""

    def __init__(self, in_dim: int, n_prototypes: int, hidden_dim: int = 1024, bottleneck_dim: int = 256,
                 n_layers: int = 3, use_bn: bool = False, bias: bool = True) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < n_layers - 1:
                layers += ([nn.BatchNorm1d(b)] if use_bn else []) + [nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, n_prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, eps=1e-6))


def block_mask(h: int, w: int, n_target: int, rng: random.Random, max_aspect: float = 3.0,
               tries: int = 50) -> torch.Tensor:
    """BEiT-style block masking (Bao et al., 2022): add random rectangles (area up to what is still
    missing, log-uniform aspect ratio) until about ``n_target`` of the h x w patches are masked."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    count = 0
    for _ in range(tries):
        remaining = n_target - count
        if remaining <= 0:
            break
        area = rng.uniform(min(4, remaining), remaining)
        aspect = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
        bh = max(1, min(h, round(math.sqrt(area * aspect))))
        bw = max(1, min(w, round(math.sqrt(area / aspect))))
        top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
        new = bh * bw - int(mask[top:top + bh, left:left + bw].sum())
        if 0 < new <= remaining:
            mask[top:top + bh, left:left + bw] = True
            count += new
    return mask


def batch_masks(n: int, grid: tuple[int, int], probability: float, ratio: tuple[float, float],
                rng: random.Random) -> torch.Tensor:
    """[n, h*w] masks as DINOv2's collate draws them: int(n * probability) samples masked, their target
    ratios spread over ``ratio`` (sample i in the i-th of equal sub-intervals), the rest unmasked; shuffled."""
    h, w = grid
    n_masked = int(n * probability)
    edges = torch.linspace(ratio[0], ratio[1], n_masked + 1).tolist()
    masks = [block_mask(h, w, int(h * w * rng.uniform(edges[i], edges[i + 1])), rng) for i in range(n_masked)]
    masks += [torch.zeros(h, w, dtype=torch.bool)] * (n - n_masked)
    rng.shuffle(masks)
    return torch.stack(masks).flatten(1)


@OBJECTIVES.register("dinov2", "DINOv2 (RAD-DINO): DINO + iBOT + KoLeo self-distillation, multi-crop, EMA teacher")
class DINOv2Objective(Objective):
    """DINOv2 self-distillation with an EMA teacher (see the module docstring for the loss).

    Owns the student heads, the mask token (timm towers; HF Dinov2 towers use their own) and the teacher
    (a copy of the image tower and heads, ``requires_grad=False``). ``init_heads`` names a checkpoint folder
    or head file (``radlab.models.dino_checkpoint``) whose heads replace the fresh ones, for continued
    pre-training. ``norm_last_layer`` keeps the prototype norms g fixed (DINO's stable choice; training g can
    flatten the student's outputs into uniform collapse on short, homogeneous runs). ``attach`` exports the
    teacher's backbone into the encoder (``export="teacher"``, as DINOv2 and RAD-DINO release) when training
    ends. Extra terms are collapse monitors: ``teacher_entropy`` (mean per-sample entropy of the teacher
    targets; -> log K on uniform collapse), ``teacher_usage_entropy`` (entropy of their batch mean; -> 0 when
    one prototype takes all; close to ``teacher_entropy`` whenever the targets ignore the image) and
    ``feature_rank`` (effective rank of the teacher class tokens; -> 1 on collapse). A ``CollapseWatch``
    (``radlab.objectives.collapse``) warns once when the first two stay collapsed.
    """

    tower_only = True

    def __init__(self, model: nn.Module, n_prototypes: int = 4096, hidden_dim: int = 1024,
                 bottleneck_dim: int = 256, head_layers: int = 3, ibot_separate_head: bool = False,
                 ibot_n_prototypes: int | None = None, student_temp: float = 0.1, teacher_temp: float = 0.07,
                 warmup_teacher_temp: float = 0.04, teacher_temp_warmup: float = 0.3, momentum: float = 0.992,
                 centering: str = "centering", center_momentum: float = 0.9, dino_weight: float = 1.0,
                 ibot_weight: float = 1.0, koleo_weight: float = 0.1, mask_probability: float = 0.5,
                 mask_ratio: tuple[float, float] = (0.1, 0.5), n_local: int = 6, local_size: int | None = None,
                 global_scale: tuple[float, float] = (0.32, 1.0), local_scale: tuple[float, float] = (0.05, 0.32),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.4, gamma: float = 1.4,
                 hflip: bool = False, freeze_last_layer_steps: int = 0, norm_last_layer: bool = True,
                 init_heads: str | None = None, export: str = "teacher", seed: int = 0) -> None:
        super().__init__()
        if export not in ("teacher", "student"):
            raise ValueError(f"export must be 'teacher' or 'student', got {export!r}")
        dim = model.image_tower.embed_dim
        shape = dict(hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, n_layers=head_layers)
        loaded = load_head_state(init_heads) if init_heads else {}
        heads = {"dino_head": DINOHead(dim, n_prototypes, **shape)}
        if ibot_separate_head or "ibot_head" in loaded:
            heads["ibot_head"] = DINOHead(dim, ibot_n_prototypes or n_prototypes, **shape)
        for name, state in loaded.items():
            spec = head_shape(state)
            if spec["in_dim"] != dim:
                raise ValueError(f"{init_heads}: {name} expects {spec['in_dim']}-d features, the tower gives {dim}")
            heads[name] = DINOHead(spec.pop("in_dim"), **spec)
            heads[name].load_state_dict(state)
        if norm_last_layer:
            for head in heads.values():
                head.last_layer.weight_g.requires_grad_(False)
        self.heads = nn.ModuleDict(heads)
        self.teacher = nn.ModuleDict({"image_tower": copy.deepcopy(model.image_tower),
                                      **copy.deepcopy(heads)}).requires_grad_(False)
        self.patch = patch_size(model.image_tower)
        if local_size is not None and local_size % self.patch:
            raise ValueError(f"local_size {local_size} is not a multiple of the tower's {self.patch} px patches: "
                             f"the pixels past the last whole patch would never be seen")
        hf = hf_dinov2(model.image_tower)
        self.mask_token = nn.Parameter(torch.zeros(dim)) if hf is None else None
        if hf is not None and ibot_weight > 0 and mask_probability > 0:
            hf.embeddings.mask_token.requires_grad_(True)  # iBOT masks with it (a continued tower froze it idle)
        dino_k = heads["dino_head"].last_layer.weight_v.shape[0]
        self.dino_loss = DINOLoss(dino_k, student_temp, center_momentum, centering)
        self.watch = CollapseWatch(dino_k)
        ibot_k = self.heads["ibot_head" if "ibot_head" in heads else "dino_head"].last_layer.weight_v.shape[0]
        self.ibot_loss = IBOTPatchLoss(ibot_k, student_temp, center_momentum, centering)
        self.weights = {"dino": dino_weight, "ibot": ibot_weight, "koleo": koleo_weight}
        self.temps = (warmup_teacher_temp, teacher_temp, teacher_temp_warmup)
        self.base_momentum = momentum
        self.register_buffer("teacher_temp", torch.tensor(warmup_teacher_temp))
        self.register_buffer("momentum", torch.tensor(momentum))
        self.register_buffer("steps_done", torch.tensor(0))
        self.mask_probability, self.mask_ratio = mask_probability, tuple(mask_ratio)
        self.crops = dict(n_local=n_local, local_size=local_size, global_scale=tuple(global_scale),
                          local_scale=tuple(local_scale), ratio=tuple(crop_ratio), jitter=jitter, gamma=gamma,
                          hflip=hflip)
        self.export = export
        self.seed, self._draws = seed, {True: (-1, 0), False: (-1, 0)}  # per mode: (step, draws in it)
        self.freeze_last_layer_steps = freeze_last_layer_steps

    def unused_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Besides the projections: when iBOT is off (nothing is masked), the mask tokens and a separate iBOT head
        (one a continued checkpoint's head file brought)."""
        unused = super().unused_parameters(model)
        if not (self.weights["ibot"] > 0 and self.mask_probability > 0):
            hf = hf_dinov2(model.image_tower)
            unused += [self.mask_token] if self.mask_token is not None else [hf.embeddings.mask_token]
            if "ibot_head" in self.heads:
                unused += list(self.heads["ibot_head"].parameters())
        return unused

    def before_optimizer_step(self) -> None:
        """DINO keeps the prototypes still for the first steps to stabilise the start: their gradients are
        dropped (None, as DINO's ``cancel_gradients_last_layer``), so AdamW neither moves, decays nor counts them."""
        if int(self.steps_done) < self.freeze_last_layer_steps:
            for head in self.heads.values():
                for param in head.last_layer.parameters():
                    param.grad = None

    def train(self, mode: bool = True) -> DINOv2Objective:
        super().train(mode)
        self.teacher.eval()
        return self

    def train_transform(self, image_size: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        local = self.crops["local_size"] or local_crop_size(image_size, self.patch)
        return MultiCrop(image_size, local, **{k: v for k, v in self.crops.items() if k != "local_size"})

    def _mask_rng(self) -> random.Random:
        """A generator keyed by (seed, rank, mode, step, draw within the step): each rank masks differently,
        validation draws apart from training, and a resumed run draws the masks the uninterrupted run would
        have drawn (``steps_done`` is saved state)."""
        step, mode = int(self.steps_done), self.training
        last, count = self._draws[mode]
        draw = count + 1 if last == step else 0
        self._draws[mode] = (step, draw)
        kind = "train" if mode else "val"
        return random.Random(f"dinov2-masks:{self.seed}:{distrib.rank()}:{kind}:{step}:{draw}")

    def _ibot_head(self, heads: nn.ModuleDict) -> nn.Module:
        return heads["ibot_head"] if "ibot_head" in heads else heads["dino_head"]

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["image"] if isinstance(batch["image"], list) else [batch["image"]] * 2
        globals_, locals_ = torch.cat(views[:2]), views[2:]
        n_global, temp = 2, float(self.teacher_temp)
        update = self.training
        tower = model.image_tower
        use_ibot = self.weights["ibot"] > 0 and self.mask_probability > 0
        mask = None
        if use_ibot:
            grid = patch_grid(tower, globals_.shape[-1])
            mask = batch_masks(len(globals_), grid, self.mask_probability, self.mask_ratio, self._mask_rng())
            mask = mask.to(globals_.device)
        with torch.no_grad():
            t_cls, t_patches = masked_forward(self.teacher["image_tower"], globals_)
            t_dino = self.teacher["dino_head"](t_cls)
            targets = self.dino_loss.targets(t_dino, temp, update=update)
        s_cls, s_patches = masked_forward(tower, globals_, mask, self.mask_token)
        student = list(self.heads["dino_head"](s_cls).chunk(n_global))
        if locals_:
            l_cls, _ = masked_forward(tower, torch.cat(locals_))
            student += list(self.heads["dino_head"](l_cls).chunk(len(locals_)))
        dino = self.dino_loss.cross_entropy(student, list(targets.chunk(n_global)))
        koleo = sum(koleo_loss(x) for x in s_cls.chunk(n_global))
        loss = self.weights["dino"] * dino + self.weights["koleo"] * koleo
        terms = {"dino": dino.detach(), "koleo": koleo.detach()}
        if use_ibot and mask is not None:  # also where this rank masked nothing: the loss's collectives run
            with torch.no_grad():
                t_ibot = self._ibot_head(self.teacher)(t_patches[mask])
            s_ibot = self._ibot_head(self.heads)(s_patches[mask])
            ibot = self.ibot_loss(s_ibot, t_ibot, mask, temp, update=update)
            loss = loss + self.weights["ibot"] * ibot
            terms["ibot"] = ibot.detach()
        entropy = distrib.global_row_mean(row_entropy(targets)[:, None])[0]
        usage = mean_entropy(distrib.global_row_mean(targets))  # over the global batch, as the rank is
        if update:
            self.watch.observe(float(entropy), float(usage))
        with torch.no_grad():
            rank = effective_rank(distrib.gather_with_grad(t_cls)[0])
        terms.update(teacher_entropy=entropy, teacher_usage_entropy=usage, feature_rank=rank,
                     teacher_temp=self.teacher_temp.detach().clone(), momentum=self.momentum.detach().clone())
        return {"loss": loss, **terms}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """EMA teacher update with the current momentum, then the schedules for the next step."""
        m = float(self.momentum)
        students = [model.image_tower, *[self.heads[k] for k in self.heads]]
        teachers = [self.teacher["image_tower"], *[self.teacher[k] for k in self.heads]]
        for s_module, t_module in zip(students, teachers, strict=True):
            s_params, t_params = list(s_module.parameters()), list(t_module.parameters())
            torch._foreach_mul_(t_params, m)
            torch._foreach_add_(t_params, s_params, alpha=1 - m)
            for s_buf, t_buf in zip(s_module.buffers(), t_module.buffers(), strict=True):
                t_buf.copy_(s_buf)
        progress = min(1.0, step / max(1, total_steps))
        self.momentum.fill_(1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2)
        start, end, warm = self.temps
        warm_steps = warm * total_steps
        self.teacher_temp.fill_(end if step >= warm_steps else start + (end - start) * step / warm_steps)
        self.steps_done.fill_(step)
        if distrib.rank() == 0:
            self.watch.check(step, total_steps)

    def restart(self) -> None:
        """Step 0 of the schedules: the base momentum, the warm-up teacher temperature, no step done (so the
        last layer is frozen again for ``freeze_last_layer_steps`` and masks are drawn as a new run's)."""
        self.momentum.fill_(self.base_momentum)
        self.teacher_temp.fill_(self.temps[0])
        self.steps_done.fill_(0)

    def checkpoint_files(self, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """The heads that match the exported backbone (teacher or student) as ``HEAD_FILE``, in DINOv2's names
        (``dino_head.*``, ``ibot_head.*``), so ``init_heads=<checkpoint folder>`` continues with them."""
        exported = strip_prefix(state, "teacher." if self.export == "teacher" else "heads.")
        return {HEAD_FILE: {k: v for k, v in exported.items() if k.split(".")[0] in self.heads}}

    def attach(self, model: nn.Module) -> None:
        """Export the teacher backbone (the better model, which DINOv2 and RAD-DINO release) into the encoder.
        Call once training ends: it overwrites the student's weights."""
        if self.export == "teacher":
            model.image_tower.load_state_dict(self.teacher["image_tower"].state_dict())
