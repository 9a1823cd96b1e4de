"""GLoRIA (Huang et al., ICCV 2021, "GLoRIA: A Multimodal Global-Local Representation Learning Framework for
Label-efficient Medical Image Recognition"): a global image-report InfoNCE plus a local one whose similarity
matches every word of a report with the image regions it attends to.

Local similarity Z(x_v, x_t) of an image and a report: every word of the report attends to the image regions
and is compared with its attended context (``radlab.models.local_matching``, with its equations; τ1 and τ2 and
the released code's word softmax there).

Over the N image-report pairs of the global batch, with global embeddings u_k (image) and w_k (report), the
encoder's normalised projections:

    L_global = sum_{dir} 1/N sum_k -log softmax_k( τ3 · cos(u, w) )        image->report and report->image
    L_local  = sum_{dir} 1/N sum_k -log softmax_k( τ3 · Z(x_v, x_t) )       image->report and report->image
    L = λ_local L_local + λ_global L_global

with τ1 = 4, τ2 = 5, τ3 = 10 and λ = 1 (the released CheXpert pre-training config); both directions are summed,
not averaged, as in the released code. Temperatures act as scale factors there and here.

The text x_t is one sentence of the report drawn at every step (``text_view: sentence``,
``report_text.sample_sentences``), as the released pre-training reads reports (``data.text.full_report: false``:
``MultimodalPretrainingDataset.get_caption`` picks one of the report's sentences at random); both terms read
that sentence. As the released preprocessing (``create_path_2_sent_mapping``), sentences of one word are not
drawn (a report without a longer one is read whole); unlike it, section headers are stripped from sentences.
``text_view: report`` contrasts whole reports. Evaluation scores whole reports (or prompts) either way.

The words are the text tower's tokens: GLoRIA sums the last four BERT layers, which a text tower does with
``hidden_layers: 4`` (``configs/gloria.yaml``; the default 1 is the last layer alone), and their word pieces
are summed into words by the matcher. The regions are the image tower's ``regions`` where it gives them (a CNN
tower with ``regions_stage: -2``: ResNet ``layer3``, as GLoRIA's), else its last tokens (a ViT's patches, a
CNN's last feature map). Zero-shot and retrieval read
the global embeddings; with ``similarity: both`` (or ``local``) they add the trained local similarity, as
GLoRIA's own evaluation does (``RadEncoder.local_match``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from radlab.models.local_matching import LocalMatcher, local_similarity
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import clip_loss
from radlab.objectives.report_text import check_text_view, text_view_tokens
from radlab.train.distributed import gather_sizes, gather_with_grad, global_mean, world_size


def _gather_words(words: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's words and masks, padded to the largest word count of any rank."""
    width = max(gather_sizes(words.shape[1], words.device))
    words = F.pad(words, (0, 0, 0, width - words.shape[1]))
    mask = F.pad(mask, (0, width - mask.shape[1]), value=False)
    return gather_with_grad(words)[0], gather_with_grad(mask)[0]


def local_loss(regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, temp_attention: float,
               temp_words: float, scale: float, word_softmax: bool = True) -> torch.Tensor:
    """Image->report plus report->image InfoNCE on ``scale`` · Z over the global batch (rows i of ``regions``
    and ``words`` are pairs). Like ``clip_loss``, each rank scores its own images against all reports and its
    own reports against all images, and returns its share of the global mean of each direction."""
    all_regions, offset = gather_with_grad(regions)
    all_words, all_mask = _gather_words(words, word_mask)
    target = torch.arange(len(regions), device=regions.device) + offset
    args = (temp_attention, temp_words, word_softmax)
    image_rows = scale * local_similarity(regions, all_words, all_mask, *args)
    if world_size() == 1:  # one matrix serves both directions
        report_rows = image_rows.T
    else:  # every rank uses both gathers (even one holding all rows), so their backward all-reduces pair up
        report_rows = scale * local_similarity(all_regions, words, word_mask, *args).T
    per_row = F.cross_entropy(image_rows, target, reduction="none") + F.cross_entropy(report_rows, target,
                                                                                      reduction="none")
    return global_mean(per_row, len(all_regions))


def start_matcher(model: nn.Module, temp_attention: float | None = None, temp_words: float | None = None,
                  word_softmax: bool | None = None) -> LocalMatcher:
    """The word-region matcher a GLoRIA local term trains on ``model``: a continued public GLoRIA's (its
    embedder and τ1/τ2), else a fresh one with τ1 4, τ2 5 and the word softmax; values given win."""
    if not isinstance(getattr(model.text_tower, "tokenizer", None), PreTrainedTokenizerBase):
        raise ValueError("GLoRIA's local term sums word pieces into words with a Hugging Face tokenizer; the text "
                         f"tower {type(model.text_tower).__name__} has none")
    given = getattr(model, "local_match", None)
    region_dim = getattr(model.image_tower, "region_dim", model.image_tower.embed_dim)
    start = given.spec() if given is not None else {"region_dim": region_dim,
                                                     "temp_attention": 4.0, "temp_words": 5.0, "word_softmax": True}
    chosen = {"temp_attention": temp_attention, "temp_words": temp_words, "word_softmax": word_softmax}
    start.update({k: v for k, v in chosen.items() if v is not None}, word_dim=model.text_tower.embed_dim)
    matcher = LocalMatcher(**start)
    if given is not None:
        matcher.embedder.load_state_dict(given.embedder.state_dict())
    return matcher


@OBJECTIVES.register("gloria", "GLoRIA: global image-report InfoNCE plus word-region attention InfoNCE")
class GloriaObjective(Objective):
    """GLoRIA's global + local contrastive loss (equations in the module docstring). Owns the local matcher
    (its embedder: image token width -> text token width, bias-free, as GLoRIA's 1x1 convolution), started from
    the encoder's own when a public GLoRIA is continued, and hands it to the encoder at export; the global
    embeddings are the encoder's projections, so zero-shot and retrieval read the space the global loss
    trained."""

    requires_text = True

    def __init__(self, model: nn.Module, temp_attention: float | None = None, temp_words: float | None = None,
                 temp_contrast: float = 10.0, local_weight: float = 1.0, global_weight: float = 1.0,
                 word_softmax: bool | None = None, text_view: str = "sentence") -> None:
        """τ1 (``temp_attention``), τ2 (``temp_words``) and ``word_softmax`` left None take the continued
        public GLoRIA's, else 4, 5 and True. ``text_view``: "sentence" (one per report per step, the released
        pre-training's) or "report"."""
        super().__init__()
        self.matcher = start_matcher(model, temp_attention, temp_words, word_softmax)
        self.text_view = check_text_view(text_view)
        self.temp_contrast = temp_contrast
        self.local_weight, self.global_weight = local_weight, global_weight

    def attach(self, model: nn.Module) -> None:
        model.local_match = self.matcher

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        tokens = text_view_tokens(model, batch, self.text_view, min_words=2)
        image_out = model.image_output(batch["image"][batch["has_text"]])
        text_out = model.text_output(tokens)
        image = F.normalize(model.project_image(image_out), dim=-1)
        text = F.normalize(model.text_proj(text_out.pooled), dim=-1)
        scale = torch.tensor(self.temp_contrast, device=image.device)
        global_term = 2 * clip_loss(image, text, scale)  # both directions summed
        words, word_mask = self.matcher.words(text_out, tokens, model.text_tower.tokenizer)
        m = self.matcher
        local_term = local_loss(m.regions(image_out), words, word_mask, m.temp_attention, m.temp_words,
                                self.temp_contrast, m.word_softmax)
        loss = self.local_weight * local_term + self.global_weight * global_term
        return {"loss": loss, "global": global_term.detach(), "local": local_term.detach()}
