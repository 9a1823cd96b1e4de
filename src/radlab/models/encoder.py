"""The encoder radlab trains and evaluates: an image tower, an optional text tower, and projections into a
joint embedding space. External encoders (issue [towers]) are wrapped into this same class, so evaluation
sees one interface whatever supervised the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from radlab.models.local_matching import LocalMatcher
from radlab.models.text_towers import HFTextTower
from radlab.models.towers import Preprocess, TowerOutput


class ClampedScale:
    """A module with a learnable log inverse temperature t, used as exp(t) without a clamp in forward (so its
    gradient stays live at the bound); the engine calls ``clamp_scale_`` after every optimiser step to keep
    exp(t) in [1, ``max_scale``], open_clip's rule."""

    max_scale: float = 100.0

    def scale_parameter(self) -> nn.Parameter:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def clamp_scale_(self) -> None:
        self.scale_parameter().clamp_(0.0, math.log(self.max_scale))


class LabelHead(nn.Module, ClampedScale):
    """Learnable class prototypes in the joint space with a learnable temperature.

    logits = exp(t) * normalise(z) · normalise(p_k); ``logit_scale`` is stored as a log (``ClampedScale``).
    It reads the joint embedding z (``reads``), as evaluation's zero-shot feeds it.
    """

    reads = "embedding"

    def __init__(self, class_names: list[str], dim: int, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.prototypes = nn.Parameter(torch.randn(len(class_names), dim) * dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor([1.0 / init_temperature]).log())  # 1-d: FSDP shards it

    def scale_parameter(self) -> nn.Parameter:
        return self.logit_scale

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        scale = self.logit_scale.exp()[0]
        return scale * F.normalize(embeddings, dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class ClassifierHead(nn.Module):
    """A supervised model's own linear classifier (logits = W h + b) on the pooled tower features h (``reads``):
    how an external classifier (torchxrayvision) answers zero-shot for the findings it was trained on."""

    reads = "pooled"

    def __init__(self, class_names: list[str], linear: nn.Linear) -> None:
        super().__init__()
        if linear.out_features != len(class_names):
            raise ValueError(f"{len(class_names)} class names for {linear.out_features} classifier outputs")
        self.class_names = list(class_names)
        self.linear = linear

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


PROJECTIONS = ("linear", "mlp", "mlp_wide")


def projection(dim_in: int, dim_out: int, kind: str) -> nn.Module:
    """A tower's projection into the joint space: "linear" (bias-free, CLIP) or a non-linear g(h) = W2 ReLU(W1 h)
    (ConVIRT's) whose hidden layer is as wide as the output ("mlp") or as the tower's features ("mlp_wide", as
    ConVIRT's released heads: Linear(in, in), ReLU, Linear(in, out))."""
    if kind == "linear":
        return nn.Linear(dim_in, dim_out, bias=False)
    if kind in ("mlp", "mlp_wide"):
        hidden = dim_in if kind == "mlp_wide" else dim_out
        return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))
    raise ValueError(f"unknown projection {kind!r}; choose one of {PROJECTIONS}")


class RadEncoder(nn.Module):
    """Image tower (+ text tower) with projections (``projection``: linear or MLP) to an ``embed_dim`` joint
    space.

    - ``image_features``: pooled tower features before projection (what frozen probes read).
    - ``encode_image`` / ``encode_text``: projected, L2-normalised joint embeddings (zero-shot, retrieval).
    - ``label_head``: class prototypes when the encoder was trained with label supervision.
    - ``local_match``: the word-region matcher of an encoder trained with GLoRIA's local loss
      (``radlab.models.local_matching``), for zero-shot and retrieval with ``similarity: local|both``.
    - ``seen_classes``: the findings its pre-training data annotated (radlab checkpoints), for zero-shot's
      seen-versus-unseen protocol; None when unknown.
    - ``pretrained_logit_scale``: the inverse temperature a public image-text model was trained with (its
      ``logit_scale``), where its format keeps one, so continued training (``model.external``) starts from it.
    """

    def __init__(self, image_tower: nn.Module, text_tower: HFTextTower | nn.Module | None = None,
                 embed_dim: int = 128, preprocess: Preprocess | None = None,
                 label_head: LabelHead | ClassifierHead | None = None,
                 image_proj: nn.Module | None = None, text_proj: nn.Module | None = None,
                 projection_kind: str = "linear") -> None:
        """``image_proj`` / ``text_proj`` default to new ``projection_kind`` projections; external encoders pass
        their own trained projections (e.g. a CLIP projection matrix, or Identity for image-only models)."""
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.embed_dim = embed_dim
        self.preprocess = preprocess or Preprocess()
        self.projection_kind = projection_kind
        self.image_proj = image_proj if image_proj is not None else projection(image_tower.embed_dim, embed_dim,
                                                                                projection_kind)
        if text_proj is None and text_tower is not None:
            text_proj = projection(text_tower.embed_dim, embed_dim, projection_kind)
        self.text_proj = text_proj
        self.label_head = label_head
        self.local_match: LocalMatcher | None = None
        self.seen_classes: list[str] | None = None
        self.pretrained_logit_scale: float | None = None

    @property
    def has_text(self) -> bool:
        return self.text_tower is not None

    def image_output(self, images: torch.Tensor) -> TowerOutput:
        return self.image_tower(images)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_tower(images).pooled

    def project_image(self, out: TowerOutput) -> torch.Tensor:
        """The joint-space embedding (unnormalised) of an image tower output: ``image_proj`` of the pooled
        features here; an encoder whose projection reads the feature map (BioViL) overrides it. Objectives that
        need the tower output as well call this instead of ``encode_image``."""
        return self.image_proj(out.pooled)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.project_image(self.image_tower(images))
        return F.normalize(z, dim=-1) if normalize else z

    def text_output(self, tokens: dict[str, torch.Tensor]) -> TowerOutput:
        """The text tower's output. A micro-batch without any report runs one stand-in row, sliced away, so the
        tower stays in the graph: its parameters get zero gradients, as DDP needs on every rank."""
        if self.text_tower is None:
            raise ValueError("this encoder has no text tower")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        if len(ids):
            return self.text_tower(ids, mask)
        width = max(1, ids.shape[1])
        out = self.text_tower(ids.new_zeros(1, width), mask.new_ones(1, width))
        return TowerOutput(out.pooled[:0], out.tokens[:0], None if out.mask is None else out.mask[:0])

    def text_features(self, texts: list[str] | dict[str, torch.Tensor]) -> torch.Tensor:
        """The text tower's pooled features before projection (texts, or their tokens)."""
        if self.text_tower is None:
            raise ValueError("this encoder has no text tower")
        tokens = self.text_tower.tokenize(texts) if isinstance(texts, list) else texts
        device = next(self.text_tower.parameters()).device
        return self.text_output({k: v.to(device) for k, v in tokens.items()}).pooled

    def encode_text(self, texts: list[str] | dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        if self.text_proj is None:
            raise ValueError("this encoder has no text tower")
        z = self.text_proj(self.text_features(texts))
        return F.normalize(z, dim=-1) if normalize else z
