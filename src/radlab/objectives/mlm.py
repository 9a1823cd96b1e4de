"""Masked language modelling on reports alone: adapting a text tower to radiology text before image-text
training.

BERT's pre-training objective (Devlin et al., NAACL 2019), as domain-specific text towers continue it on
radiology reports (CXR-BERT, Boecking et al., ECCV 2022) and as the low-data study adapts a generic text
encoder to reports by unimodal self-supervision (Windsor et al., MIDL 2023). With M the masked tokens of the
global batch's reports (BERT's 15% with 80/10/10 replacement; ``objectives/masked_language.py``), h_k the
tower's last hidden state at token k of label y_k and E its input word embeddings:

    L_MLM = 1/M sum_k -log softmax( LN(GELU(W h_k + c)) E^T + b )[y_k]

Only the text tower and the prediction head train; the run reads one record per study with a report, with or
without images (reports-only sources such as the bundled IU X-ray reports), and its checkpoint carries the
untouched image tower beside the adapted text tower. Continue with an image-text objective through
``radlab export`` (the ``text/`` folder is a Hugging Face model: ``model.text_tower={name: hf, kwargs: {path:
E/text}}``) or ``init_from``.
"""

from __future__ import annotations

import torch
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective, step_seed
from radlab.objectives.masked_language import MaskedLanguageModelling


@OBJECTIVES.register("mlm", "masked language modelling on reports alone (text-tower domain adaptation)")
class MaskedLanguageObjective(Objective):
    """L_MLM above; the masks of each step are seeded from the global RNG (``step_seed``), so runs and
    resumed runs mask alike."""

    requires_images = False
    requires_text = True

    def __init__(self, model: nn.Module, mask_prob: float = 0.15) -> None:
        super().__init__()
        self.mlm = MaskedLanguageModelling(model.text_tower, mask_prob)

    def unused_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Everything of the encoder but its text tower: image tower, projections, heads."""
        text = {id(p) for p in model.text_tower.parameters()}
        return [p for p in model.parameters() if id(p) not in text]

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["has_text"]
        tokens = {k: v[keep] for k, v in batch["tokens"].items()}
        loss, accuracy = self.mlm(model.text_tower, tokens, step_seed())
        return {"loss": loss, "mlm_accuracy": accuracy.detach()}
