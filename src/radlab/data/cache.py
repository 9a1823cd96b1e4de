"""A pre-resized uint8 image cache (memory-mapped), and WebDataset shards for data beyond one disk.

``build_cache`` reads every image of a record table once (``read_image`` + ``resize_pad``, DataLoader
workers), stores it as uint8 in ``images-<key>.npy`` [N, S, S] (memory-mapped when read) and writes
``cache.json``: the preprocessing config (size, intensity policy, version), one entry per record (id,
resolved source path, byte size, mtime, and a BLAKE2b hash of the source file's bytes) and a key hashing
config and content hashes together. ``ImageCache.validate`` checks a table against it: a changed config,
a record the cache lacks, a moved file, or a file whose bytes changed (size/mtime differ and the re-hash
differs; a mere touch does not) make it stale, and ``ensure_cache`` rebuilds it. The array is named by the
key, so a rebuild for other records (another run sharing the folder) never changes the pixels a reader mapped:
a reader that reopens it (a new loader worker) gets a clear error instead of another table's images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from radlab import atomic
from radlab.data.images import INTENSITY_POLICY, read_image, resize_pad
from radlab.data.records import RecordTable

log = logging.getLogger(__name__)
CACHE_VERSION = 2
META_FILE = "cache.json"


class StaleCache(ValueError):
    """The cache does not match the table or the preprocessing config; the message says why."""


@dataclass(frozen=True)
class CacheConfig:
    size: int
    policy: str = INTENSITY_POLICY
    version: int = CACHE_VERSION

    def digest(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=16).hexdigest()


def content_hash(path: Path) -> str:
    """BLAKE2b-128 of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_uint8(image01: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image01, 0.0, 1.0) * 255.0).astype(np.uint8)


class _Preprocess(Dataset):
    """Worker job: read, resize, quantise and hash one image."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, dict[str, Any]]:
        path = self.paths[i]
        stat = path.stat()
        image = to_uint8(resize_pad(read_image(path), self.size))
        return i, image, {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                          "hash": content_hash(path)}


def _key(config: CacheConfig, entries: list[dict[str, Any]]) -> str:
    digest = hashlib.blake2b(config.digest().encode(), digest_size=16)
    for entry in entries:
        digest.update(f"{entry['id']}:{entry['hash']}\n".encode())
    return digest.hexdigest()


def build_cache(table: RecordTable, folder: Path | str, size: int, workers: int = 0) -> ImageCache:
    """Preprocess every image of ``table`` into ``folder`` (replacing what is there) and open it; one process
    builds a folder at a time (``atomic.folder_lock``)."""
    with atomic.folder_lock(Path(folder)):
        return _build(table, Path(folder), size, workers)


def _build(table: RecordTable, folder: Path, size: int, workers: int) -> ImageCache:
    """``build_cache`` under the folder's lock: what a builder that died left (``*.npy.tmp``) is removed."""
    for orphan in folder.glob("*.npy.tmp"):
        orphan.unlink()
    rows = np.flatnonzero(table.has_images())
    ids = table.frame["id"].to_numpy()[rows].tolist()
    paths = [table.image_path(int(i)).resolve() for i in rows]
    tmp = folder / "images.npy.tmp"
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), size, size))
    entries: list[dict[str, Any]] = [{} for _ in rows]
    loader = DataLoader(_Preprocess(paths, size), batch_size=None, num_workers=workers,
                        persistent_workers=False, prefetch_factor=8 if workers else None)
    try:
        for i, image, entry in loader:
            array[i] = image.numpy() if isinstance(image, torch.Tensor) else image
            entries[i] = {"id": ids[i], **entry}
    except OSError as err:
        raise OSError(f"{err}\n`radlab data check TABLE` lists every image that cannot be read (--drop OUT writes "
                      "the table without them)") from err
    array.flush()
    del array
    config = CacheConfig(size)
    key = _key(config, entries)
    name = f"images-{key[:16]}.npy"
    os.replace(tmp, folder / name)
    meta = {"config": asdict(config), "config_hash": config.digest(), "key": key, "array": name,
            "shape": [len(rows), size, size], "entries": entries}
    atomic.write_text(folder / META_FILE, json.dumps(meta))
    for stale in folder.glob("images*.npy"):  # earlier builds' arrays; a reader that mapped one keeps its pixels
        if stale.name != name:
            stale.unlink()
    log.info("cached %d images at %d px in %s", len(rows), size, folder)
    cache = ImageCache(folder)
    cache.validated.update(ids)  # read and stat'ed just now
    return cache


class ImageCache:
    """A built cache: ``get(record_id)`` or ``[row]`` give uint8 [S, S]; safe to pass to DataLoader workers
    (the memory map is opened lazily in each process)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if "array" not in meta or not (self.folder / meta["array"]).exists():
            raise FileNotFoundError(f"no image cache in {self.folder} (run `radlab data cache`)")
        self.array_file = self.folder / meta["array"]
        self.config = CacheConfig(**meta["config"])
        self.key: str = meta["key"]
        self.entries: list[dict[str, Any]] = meta["entries"]
        self.rows = {e["id"]: i for i, e in enumerate(self.entries)}
        self.validated: set[str] = set()  # record ids this object has found current (``validate``)
        self._array: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            if not self.array_file.exists():
                raise StaleCache(f"{self.folder} was rebuilt for other records since this run opened it (another "
                                 "run sharing the folder?): give each run's table its own cache folder")
            self._array = np.load(self.array_file, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, row: int) -> np.ndarray:
        return self.array[row]

    def get(self, record_id: str) -> np.ndarray:
        if record_id not in self.rows:
            raise KeyError(f"record {record_id!r} is not in the cache at {self.folder}")
        return self.array[self.rows[record_id]]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None, "validated": set()}

    def validate(self, table: RecordTable, size: int | None = None, deep: bool = False) -> None:
        """Raise StaleCache unless every image record of ``table`` is cached from the same bytes under the
        current config (``size`` if given). ``deep`` re-hashes every file instead of trusting size+mtime.
        Records this object already found current are not looked at again (one run validates once, however
        many datasets share the cache), except with ``deep``."""
        expected = CacheConfig(size if size is not None else self.config.size)
        if expected != self.config:
            raise StaleCache(f"{self.folder}: built with {asdict(self.config)}, now {asdict(expected)}")
        for i in np.flatnonzero(table.has_images()):
            record_id = table.frame["id"].iat[i]
            if record_id in self.validated and not deep:
                continue
            if record_id not in self.rows:
                raise StaleCache(f"{self.folder}: record {record_id!r} is not cached")
            entry, path = self.entries[self.rows[record_id]], table.image_path(int(i)).resolve()
            if entry["path"] != str(path):
                raise StaleCache(f"{self.folder}: record {record_id!r} now points at {path}, cached {entry['path']}")
            stat = path.stat() if path.exists() else None
            if stat is None:
                raise StaleCache(f"{self.folder}: source {path} of record {record_id!r} is gone")
            changed = deep or stat.st_size != entry["bytes"] or stat.st_mtime_ns != entry["mtime_ns"]
            if changed and content_hash(path) != entry["hash"]:
                raise StaleCache(f"{self.folder}: source {path} of record {record_id!r} changed since caching")
            self.validated.add(record_id)


def ensure_cache(table: RecordTable, folder: Path | str, size: int, workers: int = 0) -> ImageCache:
    """The cache in ``folder`` if it is valid for ``table`` at ``size``, else a freshly built one; checked and
    built under the folder's lock, so runs sharing the folder wait for one another's build instead of
    overwriting it."""
    folder = Path(folder)
    with atomic.folder_lock(folder):
        try:
            cache = ImageCache(folder)
            cache.validate(table, size)
            return cache
        except (FileNotFoundError, StaleCache, KeyError, TypeError, ValueError) as reason:  # missing, stale, unreadable
            log.info("rebuilding image cache: %s", reason)
        return _build(table, folder, size, workers)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_webdataset_shards(table: RecordTable, cache: ImageCache, out: Path | str,
                            shard_size: int = 1000) -> list[Path]:
    """Write ``shard-NNNNNN.tar`` files (WebDataset): per record a lossless PNG of the cached image and a JSON
    of id, patient, split, labels (null = not annotated) and report; plus ``shards.json`` with the cache key.
    Shards stream from object storage with URLs such as ``pipe:aws s3 cp s3://bucket/shard-{000000..000009}.tar -``."""
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache.validate(table)
    for stale in out.glob("shard-*.tar"):  # an earlier run's shards would be listed (and read) with these
        stale.unlink()
    names, labels = table.label_names, table.labels()
    frame = table.frame
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for i in np.flatnonzero(table.has_images()):
            meta = {c: frame[c].iat[i] for c in ("id", "patient_id", "study_id", "view", "split", "source")}
            meta["labels"] = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, labels[i], strict=True)}
            meta["text"] = frame["report"].iat[i]
            sink.write({"__key__": f"{i:09d}", "png": _png(cache.get(meta["id"])), "json": json.dumps(meta).encode()})
    shards = sorted(out.glob("shard-*.tar"))
    (out / "shards.json").write_text(json.dumps({"cache_key": cache.key, "config": asdict(cache.config),
                                                 "count": int(table.has_images().sum()),
                                                 "shards": [s.name for s in shards]}))
    return shards


def _decode(sample: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    meta = json.loads(sample["json"])
    image = np.asarray(Image.open(io.BytesIO(sample["png"])), dtype=np.float32) / 255.0
    labels = [meta["labels"].get(n) for n in label_names]
    return {"id": meta["id"], "image": torch.from_numpy(image).unsqueeze(0),
            "labels": torch.tensor([np.nan if v is None else v for v in labels], dtype=torch.float32),
            "text": meta["text"]}


def read_webdataset(urls: str | list[str], label_names: list[str]) -> Any:
    """An iterable of {id, image [1, S, S] in [0, 1], labels, text} over shards (paths, URLs or brace patterns)."""
    import functools

    import webdataset as wds

    return wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(
        functools.partial(_decode, label_names=list(label_names)))
