"""Text towers built with transformers; pooling by CLS or by a mean over real (non-padding) tokens."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from radlab.models.towers import TowerOutput
from radlab.registry import Registry

TEXT_TOWERS: Registry = Registry("text tower")


class HFTextTower(nn.Module):
    """A Hugging Face encoder with its tokenizer. ``pooling`` is "cls" or "mean" (masked mean)."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, pooling: str = "cls",
                 max_length: int = 128) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.embed_dim: int = model.config.hidden_size

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TowerOutput(pooled, hidden, mask)

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


@TEXT_TOWERS.register("bert_small", "BERT-style encoder (4 layers, 256 wide), random init, own WordPiece vocab")
def bert_small(tokenizer: PreTrainedTokenizerBase, pooling: str = "cls", max_length: int = 128,
               hidden_size: int = 256, layers: int = 4, heads: int = 4) -> HFTextTower:
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden_size * 4,
                        max_position_embeddings=max(512, max_length), pad_token_id=tokenizer.pad_token_id)
    return HFTextTower(BertModel(config, add_pooling_layer=False), tokenizer, pooling, max_length)


@TEXT_TOWERS.register("hf", "any local Hugging Face encoder directory (AutoModel + AutoTokenizer)")
def hf_directory(path: str, pooling: str = "cls", max_length: int = 128) -> HFTextTower:
    model = AutoModel.from_pretrained(path)
    return HFTextTower(model, AutoTokenizer.from_pretrained(path), pooling, max_length)
