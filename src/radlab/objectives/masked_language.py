"""Masked language modelling (BERT's MLM; DeCLIP's text self-supervision) on a Hugging Face text tower: seeded
token masking, and a prediction head that decodes with the tower's own input word embeddings.

Masking (BERT, Devlin et al. 2019): every real token that is not a special token ([CLS], [SEP], [PAD], [MASK],
[UNK]: the tokenizer's ``all_special_ids``, padding by the attention mask) is chosen with probability p (0.15);
a chosen token becomes [MASK] with probability 0.8, a random non-special token of the vocabulary with 0.1, and
stays itself with 0.1. Labels hold the original id at chosen positions and ``IGNORE`` elsewhere.

Head (BERT's ``BertLMPredictionHead``): with h the tower's last hidden state at a chosen position,

    logits = LayerNorm(GELU(W h + c)) E^T + b

where E is the tower's input word-embedding matrix, read from the model at every call, so the decoder is tied
to the embeddings without the head holding a second reference to them (a parameter shared between the
encoder and the objective breaks FSDP and duplicates checkpoint state). W, c, the LayerNorm and b are the
head's own. The loss is the cross-entropy mean over the chosen tokens of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from radlab.train.distributed import global_count, global_mean

IGNORE = -100
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1


def check_mlm_tower(text_tower: nn.Module | None) -> None:
    """Raise ValueError unless the tower holds a Hugging Face model (``.model``) with input embeddings and a
    Hugging Face tokenizer (``.tokenizer``) with a mask token."""
    name = type(text_tower).__name__
    tokenizer = getattr(text_tower, "tokenizer", None)
    if not isinstance(tokenizer, PreTrainedTokenizerBase) or tokenizer.mask_token_id is None:
        raise ValueError(f"masked language modelling needs a Hugging Face tokenizer with a mask token; the text "
                         f"tower {name} has none")
    model = getattr(text_tower, "model", None)
    if not isinstance(model, PreTrainedModel) or model.get_input_embeddings() is None:
        raise ValueError(f"masked language modelling decodes with the text tower's input word embeddings; the "
                         f"text tower {name} holds no Hugging Face model with them")


def replacement_ids(count: torch.Tensor, vocab_size: int, special_ids: list[int],
                    generator: torch.Generator) -> torch.Tensor:
    """``count``-shaped uniform draws from the ids in [0, ``vocab_size``) that are not special: a draw from the
    remaining ones, shifted past each special id at or below it (ascending)."""
    ids = torch.randint(0, vocab_size - len(special_ids), count.shape, generator=generator)
    for special in special_ids:
        ids += (ids >= special).long()
    return ids


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_id: int, vocab_size: int,
                special_ids: list[int], generator: torch.Generator,
                mask_prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (module docstring) of a token batch: the masked ids and the labels. Every draw comes
    from ``generator`` (CPU), so a seed fixes the result on any device."""
    ids = input_ids.cpu()
    specials = sorted({i for i in special_ids if 0 <= i < vocab_size})
    maskable = attention_mask.cpu().bool() & ~torch.isin(ids, torch.tensor(specials, dtype=ids.dtype))
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & maskable
    action = torch.rand(ids.shape, generator=generator)
    random_ids = replacement_ids(ids, vocab_size, specials, generator)
    masked = torch.where(chosen & (action < MASK_SHARE), torch.full_like(ids, mask_id), ids)
    masked = torch.where(chosen & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE), random_ids, masked)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return masked.to(input_ids.device), labels.to(input_ids.device)


class MLMHead(nn.Module):
    """BERT's prediction-head transform and output bias; the decoder matrix is passed in (module docstring)."""

    def __init__(self, hidden_dim: int, embedding_dim: int, vocab_size: int, eps: float = 1e-12,
                 init_std: float = 0.02) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_dim, embedding_dim)
        self.norm = nn.LayerNorm(embedding_dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=init_std)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden))) @ embeddings.T + self.bias


class MaskedLanguageModelling(nn.Module):
    """MLM on a text tower that passes ``check_mlm_tower``: owns the head; ``forward`` masks a token batch with
    a seed, runs the tower's model on the masked ids and returns this rank's shares of the global-batch
    cross-entropy and accuracy over the masked tokens (``global_mean``: DDP's gradient averaging then equals
    one process holding the whole batch)."""

    def __init__(self, text_tower: nn.Module, mask_prob: float = 0.15) -> None:
        super().__init__()
        check_mlm_tower(text_tower)
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob {mask_prob}: need a probability in (0, 1)")
        tokenizer, config = text_tower.tokenizer, text_tower.model.config
        vocab_size, embedding_dim = text_tower.model.get_input_embeddings().weight.shape
        self.mask_id, self.mask_prob = tokenizer.mask_token_id, mask_prob
        self.vocab_size = min(len(tokenizer), vocab_size)  # random replacements: ids the tokenizer can emit
        self.special_ids = sorted(set(tokenizer.all_special_ids))
        self.head = MLMHead(config.hidden_size, embedding_dim, vocab_size,
                            eps=getattr(config, "layer_norm_eps", 1e-12),
                            init_std=getattr(config, "initializer_range", 0.02))

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return mask_tokens(input_ids, attention_mask, self.mask_id, self.vocab_size, self.special_ids, generator,
                           self.mask_prob)

    def loss(self, text_tower: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's shares of the global mean cross-entropy and (detached) accuracy over the tokens with a
        label, from the tower's last hidden state on ``input_ids`` (already masked)."""
        embeddings = text_tower.model.get_input_embeddings().weight
        chosen = labels != IGNORE
        if len(input_ids):
            hidden = text_tower.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            hidden = hidden[chosen]
        else:  # BERT refuses an empty batch: a stand-in row, sliced away, runs the tower as other ranks do
            width = max(1, input_ids.shape[1])
            stand_in = text_tower.model(input_ids=input_ids.new_zeros(1, width),
                                        attention_mask=attention_mask.new_ones(1, width)).last_hidden_state
            hidden = stand_in[:0, 0]
        logits = self.head(hidden, embeddings)
        targets = labels[chosen]
        n_global = global_count(len(targets), labels.device)
        cross_entropy = F.cross_entropy(logits, targets, reduction="none")
        correct = (logits.detach().argmax(-1) == targets).float()
        return global_mean(cross_entropy, n_global), global_mean(correct, n_global)

    def forward(self, text_tower: nn.Module, tokens: dict[str, torch.Tensor],
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        masked, labels = self.mask(tokens["input_ids"], tokens["attention_mask"], seed)
        return self.loss(text_tower, masked, tokens["attention_mask"], labels)
