"""Frozen features, extracted once per (encoder weights, record content, preprocessing, kind) and cached in
memory and, given a folder, on disk under a hash of that key."""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from radlab import atomic
from radlab.data.dataset import Collator, RecordDataset
from radlab.data.images import INTENSITY_POLICY
from radlab.data.records import RecordTable
from radlab.models.encoder import RadEncoder
from radlab.progress import tracked

FEATURE_KINDS = ("pooled", "embedding", "tokens")
TEXT_KINDS = ("embedding", "pooled")
# Part of every cache key with the image reading policy: bump it when what an extractor computes changes (2: local
# scores are max over words; 3: long reports keep their impression, keys carry ``behaviour``; 4: local scores skip
# punctuation "words").
FEATURE_FORMAT = "4"
log = logging.getLogger(__name__)


def encoder_hash(encoder: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of every weight and buffer, by name; the same weights give the same hash."""
    digest = hashlib.sha256()
    for name, value in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def behaviour(encoder: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of what shapes features besides the saved weights: the module structure, buffers not
    saved with the weights, the text tower's options and vocabulary, the word-region matcher's settings and
    the device."""
    digest = hashlib.sha256(repr(encoder).encode())
    saved = set(encoder.state_dict())
    for name, buffer in sorted(encoder.named_buffers()):
        if name not in saved:
            digest.update(name.encode() + buffer.detach().cpu().float().numpy().tobytes())
    tower = getattr(encoder, "text_tower", None)
    if tower is not None:
        digest.update(json.dumps(tower.spec() if hasattr(tower, "spec") else {}, sort_keys=True).encode())
        tokenizer = getattr(tower, "tokenizer", None)
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else repr(tokenizer)
        digest.update(json.dumps(vocab, sort_keys=True).encode())
    matcher = getattr(encoder, "local_match", None)
    if matcher is not None:
        digest.update(json.dumps(matcher.spec(), sort_keys=True).encode())
    digest.update(str(next(encoder.parameters()).device.type).encode())
    return digest.hexdigest()[:16]


def weights_version(encoder: torch.nn.Module) -> tuple:
    """Changes whenever a weight does (an optimiser step, ``load_state_dict``, a replaced tensor): each
    tensor's storage and in-place version counter."""
    return tuple((t.data_ptr(), t._version) for t in encoder.state_dict().values())


def table_hash(table: RecordTable) -> str:
    """SHA-256 (16 hex) of the record table's content (every column, row order included)."""
    values = pd.util.hash_pandas_object(table.frame.astype(str), index=False).to_numpy()
    digest = hashlib.sha256(values.tobytes())
    digest.update(",".join(table.frame.columns).encode())
    return digest.hexdigest()[:16]


def texts_hash(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def files_signature(table: RecordTable) -> str:
    """Hash of each image's resolved path, size and modification time: a file rewritten in place (e.g.
    phantoms drawn again into the same folder) gets new features instead of stale cached ones."""
    digest = hashlib.sha256()
    for i in range(len(table)):
        path = table.image_path(i).resolve()
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def image_batches(encoder: RadEncoder, table: RecordTable, batch_size: int, what: str,
                  workers: int = 0) -> Iterator[torch.Tensor]:
    """The table's preprocessed images in batches on the encoder's device, with progress; ``workers`` loader
    processes decode them (full-size PNG and DICOM decoding, not the encoder, bounds a CPU evaluation)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    loader = DataLoader(RecordDataset(table, encoder.preprocess), batch_size=batch_size, collate_fn=Collator(),
                        num_workers=workers, pin_memory=device.type == "cuda")
    for batch in tracked(loader, len(loader), f"{what} of {len(table)} images"):
        yield batch["image"].to(device)


@torch.no_grad()
def extract_features(encoder: RadEncoder, table: RecordTable, kind: str = "pooled",
                     batch_size: int = 64, workers: int = 0) -> np.ndarray:
    """``pooled``: tower features before projection (probes); ``embedding``: normalised joint embeddings;
    ``tokens``: patch tokens [N, P, D] (``encoder.image_output(...).tokens``)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
    chunks = []
    for images in image_batches(encoder, table, batch_size, f"{kind} features", workers):
        if kind == "pooled":
            out = encoder.image_features(images)
        elif kind == "embedding":
            out = encoder.encode_image(images)
        else:
            out = encoder.image_output(images).tokens
        chunks.append(out.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


@torch.no_grad()
def extract_local(encoder: RadEncoder, table: RecordTable, texts: list[str], batch_size: int = 64,
                  workers: int = 0) -> np.ndarray:
    """Word-region similarity Z of every image against every text, [N, T] (``RadEncoder.local_match``); a
    text with no word after the text tower's tokenisation is an error naming it."""
    matcher, tower = encoder.local_match, encoder.text_tower
    if matcher is None or tower is None:
        raise ValueError("word-region similarity needs an encoder with a text tower and a local matcher")
    encoder.eval()
    device = next(encoder.parameters()).device
    reports = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        tokens = {k: v.to(device) for k, v in tower.tokenize(chunk).items()}
        names = [f"text {start + i} ({text[:60]!r})" for i, text in enumerate(chunk)]
        reports.append(matcher.words(encoder.text_output(tokens), tokens, tower.tokenizer, names))
    rows = []
    for images in image_batches(encoder, table, batch_size, f"word-region scores against {len(texts)} texts",
                                workers):
        regions = matcher.regions(encoder.image_output(images))
        rows.append(torch.cat([matcher.similarity(regions, *words, over_words="max") for words in reports], 1)
                    .float().cpu().numpy())  # GLoRIA's evaluation: the best word's
    return np.concatenate(rows) if rows else np.zeros((0, len(texts)), np.float32)


@torch.no_grad()
def extract_text(encoder: RadEncoder, texts: list[str], batch_size: int = 64, kind: str = "embedding") -> np.ndarray:
    """``embedding``: normalised joint-space text embeddings; ``pooled``: the text tower's features before
    projection (probes). In batches."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"text feature kind must be one of {TEXT_KINDS}, got {kind!r}")
    encoder.eval()
    embed = encoder.encode_text if kind == "embedding" else encoder.text_features
    chunks = [embed(texts[i:i + batch_size]).float().cpu().numpy() for i in range(0, len(texts), batch_size)]
    if chunks:
        return np.concatenate(chunks)
    width = encoder.embed_dim if kind == "embedding" else encoder.text_tower.embed_dim
    return np.zeros((0, width), np.float32)


class FeatureCache:
    """In-memory cache, backed by ``cache_dir`` (``.npy`` per key) when one is given; what is missing is
    extracted with ``workers`` image-decoding processes."""

    def __init__(self, cache_dir: Path | str | None = None, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 (decode in this process) or more, got {workers}")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.workers = workers
        self._store: dict[str, np.ndarray] = {}
        self._encoder_hashes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # encoder -> (version, hash)
        self.extractions = 0

    def encoder_key(self, encoder: torch.nn.Module) -> str:
        """The weights' hash (``encoder_hash``), computed again once any weight changed (``weights_version``)."""
        version = weights_version(encoder)
        known = self._encoder_hashes.get(encoder)
        if known is None or known[0] != version:
            known = self._encoder_hashes[encoder] = (version, encoder_hash(encoder))
        return known[1]

    def key(self, encoder: RadEncoder, content: str, kind: str) -> str:
        text = (f"{FEATURE_FORMAT}|{INTENSITY_POLICY}|{self.encoder_key(encoder)}|{behaviour(encoder)}|{content}|"
                f"{kind}|{encoder.preprocess!r}")
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _cached(self, key: str, compute) -> np.ndarray:
        if key in self._store:
            return self._store[key]
        path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        value = _load(path) if path is not None and path.exists() else None
        if value is None:
            value = compute()
            self.extractions += 1
            if path is not None:
                _save(value, path)
        self._store[key] = value
        return value

    def get(self, encoder: RadEncoder, table: RecordTable, rows: np.ndarray, kind: str,
            batch_size: int) -> np.ndarray:
        subset = table.subset(rows)
        key = self.key(encoder, f"{table_hash(subset)}|{files_signature(subset)}", kind)
        return self._cached(key, lambda: extract_features(encoder, subset, kind, batch_size, self.workers))

    def text(self, encoder: RadEncoder, texts: list[str], batch_size: int = 64, kind: str = "embedding") -> np.ndarray:
        key_kind = "text" if kind == "embedding" else f"text_{kind}"
        return self._cached(self.key(encoder, texts_hash(texts), key_kind),
                            lambda: extract_text(encoder, texts, batch_size, kind))

    def local(self, encoder: RadEncoder, table: RecordTable, rows: np.ndarray, texts: list[str],
              batch_size: int = 64) -> np.ndarray:
        """Word-region similarities of the rows' images against ``texts`` (``extract_local``)."""
        subset = table.subset(rows)
        key = self.key(encoder, f"{table_hash(subset)}|{files_signature(subset)}|{texts_hash(texts)}", "local")
        return self._cached(key, lambda: extract_local(encoder, subset, texts, batch_size, self.workers))


def _load(path: Path) -> np.ndarray | None:
    """A cached array; None (and the file removed) when it cannot be read, so it is extracted again."""
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as err:
        log.warning("cached features %s cannot be read (%s); extracting them again", path, err)
        path.unlink(missing_ok=True)
        return None


def _save(value: np.ndarray, path: Path) -> None:
    """Written to a temp file of this process's own, then renamed: evaluations sharing the folder never write
    into one another's file, and a reader sees a whole array or none."""
    with atomic.writing(path) as stream:
        np.save(stream, value)
    log.info("cached features %s", path)
