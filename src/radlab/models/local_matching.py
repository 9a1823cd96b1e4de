"""Word-region matching (GLoRIA's local similarity): how well each word of a report finds the image regions
it attends to, summed over the report's words.

With region features v_j (the image tower's region tokens through a bias-free linear map into the text
tower's width: GLoRIA's local embedder) and word features t_i (text-tower tokens, word pieces summed into
words as GLoRIA's ``aggregate_tokens`` does; special tokens, padding and punctuation dropped):

    s_ij = t_i · v_j                                            (raw dot products, features not normalised)
    a_ij = softmax_j( τ1 · softmax_i'(s_i'j)_i )                attention of word i over regions j
    c_i  = sum_j a_ij v_j                                       the region context of word i
    Z(x_v, x_t) = log sum_i exp( τ2 · cos(c_i, t_i) )

The paper's Eq. 3 writes the attention as softmax_j(τ1 s_ij); the released code (``gloria/loss/gloria_loss.py``
``attention_fn``, whose τ1 = 4 the published models were trained with) first normalises each region's scores
over the words, then applies τ1 and the softmax over regions. ``word_softmax=True`` is the released code,
False the paper's equation. The paper's Eq. 5 also raises the sum to 1/τ2 (Z = log (sum_i exp(τ2 R_i))^(1/τ2));
the released code (``local_loss``, after AttnGAN's) drops that exponent, as Z above does: Z is then τ2 times the
paper's, a scale the objective's τ3 absorbs. The GLoRIA objective trains a ``LocalMatcher``; the encoder keeps it
(``RadEncoder.local_match``) so zero-shot and retrieval can score with it as GLoRIA's own evaluation does
(there over words by the best word, not the log-sum-exp: ``over_words="max"``).

The words are those of GLoRIA's preprocessing (``create_path_2_sent_mapping``: lower-cased ``\\w+`` tokens, ASCII
only), so a word with no ASCII letter, digit or underscore (":", ".", "(") is none. Special tokens are no words
either: the released loss's slice ``words_emb[i, :, :cap_len]`` (cap_len = words + 1) scores [CLS] with the words
while its evaluation (``get_local_similarities``, ``1:cap_len + 1``) scores [SEP] instead; the paper's Z runs over
the report's words, as here.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from radlab.models.towers import TowerOutput

CONTINUATION = "##"  # WordPiece's prefix for a piece that continues the previous word
WORD_CHARACTER = re.compile(r"\w", re.ASCII)  # what GLoRIA's words are made of (RegexpTokenizer(r"\w+"), ASCII)


def word_membership(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """[B, W, L] 0/1 matrix: word w of report b is the sum of the tokens l marked in row w. A token starting
    with "##" joins the previous word; special tokens, padding and words without an ASCII letter, digit or
    underscore (punctuation) belong to no word; W is the batch's largest word count. Unknown pieces ([UNK])
    are words. A report with no word has no row marked."""
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    rows: list[list[list[int]]] = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        words: list[list[int]] = []
        pieces = tokenizer.convert_ids_to_tokens(ids)
        for position, (token_id, real, piece) in enumerate(zip(ids, mask, pieces, strict=True)):
            if not real or token_id in special:
                continue
            if piece.startswith(CONTINUATION) and words and words[-1][-1] == position - 1:
                words[-1].append(position)
            else:
                words.append([position])
        rows.append([w for w in words
                     if WORD_CHARACTER.search("".join(pieces[p].removeprefix(CONTINUATION) for p in w))])
    membership = torch.zeros(len(rows), max((len(r) for r in rows), default=1), input_ids.shape[1])
    for b, words in enumerate(rows):
        for w, positions in enumerate(words):
            membership[b, w, positions] = 1.0
    return membership.to(input_ids.device)


def local_similarity(regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, temp_attention: float,
                     temp_words: float, word_softmax: bool = True, chunk_elements: int = 2**24,
                     over_words: str = "logsumexp") -> torch.Tensor:
    """Z(x_v, x_t) of every image against every report: [Bi, Bt] from regions [Bi, R, D], words [Bt, W, D] and
    word_mask [Bt, W] (True for real words). ``over_words``: "logsumexp" (Z above, GLoRIA's loss) or "max"
    (log max_i exp(τ2 cos), i.e. τ2 times the best word's cosine: GLoRIA's evaluation, ``get_local_similarities``).
    Reports are scored in chunks of at most ``chunk_elements`` attention entries (Bi x chunk x W x R) so memory
    stays bounded on large batches."""
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
        columns.append(torch.logsumexp(cosine, dim=2) if over_words == "logsumexp" else cosine.amax(dim=2))
    return torch.cat(columns, dim=1)


class LocalMatcher(nn.Module):
    """The trained local embedder and the temperatures of Z (module docstring). ``regions`` reads a tower's
    region features (``TowerOutput.regions``, else its tokens); ``words`` sums a report's word pieces."""

    def __init__(self, region_dim: int, word_dim: int, temp_attention: float = 4.0, temp_words: float = 5.0,
                 word_softmax: bool = True) -> None:
        super().__init__()
        self.embedder = nn.Linear(region_dim, word_dim, bias=False)
        self.temp_attention, self.temp_words, self.word_softmax = temp_attention, temp_words, word_softmax

    def spec(self) -> dict:
        """What rebuilds this module (the checkpoint's ``encoder.json``); the weights travel with the model's."""
        return {"region_dim": self.embedder.in_features, "word_dim": self.embedder.out_features,
                "temp_attention": self.temp_attention, "temp_words": self.temp_words,
                "word_softmax": self.word_softmax}

    def regions(self, image_out: TowerOutput) -> torch.Tensor:
        """[B, R, word_dim]: the embedded region features."""
        return self.embedder(image_out.regions if image_out.regions is not None else image_out.tokens)

    @staticmethod
    def words(text_out: TowerOutput, tokens: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerBase,
              names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(words [B, W, D], mask [B, W]): token features summed into words. Raises, naming the texts (by
        ``names``, else their batch positions), when a text has no word: Z is undefined for it."""
        membership = word_membership(tokens["input_ids"], tokens["attention_mask"], tokenizer)
        mask = membership.any(-1)
        empty = (~mask.any(-1)).nonzero().flatten().tolist()
        if empty:
            which = [names[i] for i in empty] if names is not None else [f"text {i} of the batch" for i in empty]
            raise ValueError(f"no word after tokenisation, so no word-region similarity, for {', '.join(which[:5])}")
        return membership.to(text_out.tokens.dtype) @ text_out.tokens, mask

    def similarity(self, regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor,
                   over_words: str = "logsumexp") -> torch.Tensor:
        """Z of every image against every report, [Bi, Bt] (``local_similarity``'s ``over_words``)."""
        return local_similarity(regions, words, word_mask, self.temp_attention, self.temp_words, self.word_softmax,
                                over_words=over_words)
