"""GLoRIA (Huang et al., ICCV 2021, "GLoRIA: A Multimodal Global-Local Representation Learning Framework for
Label-efficient Medical Image Recognition"): a global image-report InfoNCE plus a local one whose similarity
matches every word of a report with the image regions it attends to.

Local similarity of image x_v and report x_t, with region features v_j (the image tower's patch tokens or
feature-map cells, through a bias-free linear map into the text tower's width: GLoRIA's local embedder) and
word features t_i (the text tower's last-layer tokens, word pieces summed into words as GLoRIA's
``aggregate_tokens`` does; special tokens and padding dropped):

    s_ij = t_i · v_j                                            (raw dot products, features not normalised)
    a_ij = softmax_j( τ1 · softmax_i'(s_i'j)_i )                attention of word i over regions j
    c_i  = sum_j a_ij v_j                                       the region context of word i
    Z(x_v, x_t) = log sum_i exp( τ2 · cos(c_i, t_i) )

The paper's Eq. 3 writes the attention as softmax_j(τ1 s_ij); the released code (``gloria/loss/gloria_loss.py``
``attention_fn``, whose τ1 = 4 the published models were trained with) first normalises each region's scores
over the words, then applies τ1 and the softmax over regions. ``word_softmax=True`` (default) is the released
code, False the paper's equation.

Over the N image-report pairs of the global batch, with global embeddings u_k (image) and w_k (report), the
encoder's normalised projections:

    L_global = sum_{dir} 1/N sum_k -log softmax_k( τ3 · cos(u, w) )        image->report and report->image
    L_local  = sum_{dir} 1/N sum_k -log softmax_k( τ3 · Z(x_v, x_t) )       image->report and report->image
    L = λ_local L_local + λ_global L_global

with τ1 = 4, τ2 = 5, τ3 = 10 and λ = 1 (the released CheXpert pre-training config); both directions are summed,
not averaged, as in the released code. Temperatures act as scale factors there and here.

Differences from the released model, which come from radlab's towers: the words are the last layer's tokens
(GLoRIA sums the last four BERT layers), and the regions are the image tower's last tokens (GLoRIA's ResNet uses
``layer3``). Zero-shot and retrieval read the global embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import clip_loss
from radlab.train.distributed import gather_sizes, gather_with_grad, global_mean, world_size

CONTINUATION = "##"  # WordPiece's prefix for a piece that continues the previous word


def word_membership(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """[B, W, L] 0/1 matrix: word w of report b is the sum of the tokens l marked in row w. A token starting
    with "##" joins the previous word; special tokens and padding belong to no word; W is the batch's largest
    word count. Unknown pieces ([UNK]) are words. Raises when a report has no word."""
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    rows: list[list[list[int]]] = []
    for b, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
        words: list[list[int]] = []
        pieces = tokenizer.convert_ids_to_tokens(ids)
        for position, (token_id, real, piece) in enumerate(zip(ids, mask, pieces, strict=True)):
            if not real or token_id in special:
                continue
            if piece.startswith(CONTINUATION) and words and words[-1][-1] == position - 1:
                words[-1].append(position)
            else:
                words.append([position])
        if not words:
            raise ValueError(f"GLoRIA: report {b} of the batch has no word after tokenisation")
        rows.append(words)
    membership = torch.zeros(len(rows), max((len(r) for r in rows), default=1), input_ids.shape[1])
    for b, words in enumerate(rows):
        for w, positions in enumerate(words):
            membership[b, w, positions] = 1.0
    return membership.to(input_ids.device)


def local_similarity(regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, temp_attention: float,
                     temp_words: float, word_softmax: bool = True, chunk_elements: int = 2**24) -> torch.Tensor:
    """Z(x_v, x_t) of every image against every report: [Bi, Bt] from regions [Bi, R, D], words [Bt, W, D] and
    word_mask [Bt, W] (True for real words). Reports are scored in chunks of at most ``chunk_elements``
    attention entries (Bi x chunk x W x R) so memory stays bounded on large batches."""
    n_images, n_regions, _ = regions.shape
    n_words = words.shape[1]
    chunk = max(1, chunk_elements // max(1, n_images * n_words * n_regions))
    columns = []
    # Without reports, one empty pass still keeps ``regions`` in the graph: a rank holding no reports must run
    # the backward all-reduce of the gathered regions as the other ranks do.
    for start in range(0, len(words), chunk) or [0]:
        t, mask = words[start: start + chunk], word_mask[start: start + chunk]
        scores = torch.einsum("ird,twd->itwr", regions, t)
        if word_softmax:
            scores = scores.masked_fill(~mask[None, :, :, None], float("-inf")).softmax(dim=2)
            scores = scores.masked_fill(~mask[None, :, :, None], 0.0)
        attention = (temp_attention * scores).softmax(dim=3)
        context = torch.einsum("itwr,ird->itwd", attention, regions)
        cosine = F.cosine_similarity(context, t[None].expand_as(context), dim=-1, eps=1e-8)
        cosine = (temp_words * cosine).masked_fill(~mask[None], float("-inf"))
        columns.append(torch.logsumexp(cosine, dim=2))
    return torch.cat(columns, dim=1)


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


@OBJECTIVES.register("gloria", "GLoRIA: global image-report InfoNCE plus word-region attention InfoNCE")
class GloriaObjective(Objective):
    """GLoRIA's global + local contrastive loss (equations in the module docstring). Owns the local embedder
    (image token width -> text token width, bias-free, as GLoRIA's 1x1 convolution); the global embeddings
    are the encoder's projections, so zero-shot and retrieval read the space the global loss trained."""

    requires_text = True

    def __init__(self, model: nn.Module, temp_attention: float = 4.0, temp_words: float = 5.0,
                 temp_contrast: float = 10.0, local_weight: float = 1.0, global_weight: float = 1.0,
                 word_softmax: bool = True) -> None:
        super().__init__()
        if not isinstance(getattr(model.text_tower, "tokenizer", None), PreTrainedTokenizerBase):
            raise ValueError("GLoRIA sums word pieces into words with a Hugging Face tokenizer; the text tower "
                             f"{type(model.text_tower).__name__} has none")
        self.local_embedder = nn.Linear(model.image_tower.embed_dim, model.text_tower.embed_dim, bias=False)
        self.temp_attention, self.temp_words, self.temp_contrast = temp_attention, temp_words, temp_contrast
        self.local_weight, self.global_weight = local_weight, global_weight
        self.word_softmax = word_softmax

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["has_text"]
        tokens = {k: v[keep] for k, v in batch["tokens"].items()}
        image_out = model.image_output(batch["image"][keep])
        text_out = model.text_output(tokens)
        image = F.normalize(model.image_proj(image_out.pooled), dim=-1)
        text = F.normalize(model.text_proj(text_out.pooled), dim=-1)
        scale = torch.tensor(self.temp_contrast, device=image.device)
        global_term = 2 * clip_loss(image, text, scale)  # both directions summed
        membership = word_membership(tokens["input_ids"], tokens["attention_mask"], model.text_tower.tokenizer)
        words = membership.to(text_out.tokens.dtype) @ text_out.tokens
        local_term = local_loss(self.local_embedder(image_out.tokens), words, membership.any(-1),
                                self.temp_attention, self.temp_words, self.temp_contrast, self.word_softmax)
        loss = self.local_weight * local_term + self.global_weight * global_term
        return {"loss": loss, "global": global_term.detach(), "local": local_term.detach()}
