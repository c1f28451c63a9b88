"""Encoder-feature cache: the encoder is frozen, so each clip is encoded once, ever.

Key: encoder identity (weights' content + preprocessing) / sha1 of the clip's 16 kHz float32
samples. Each entry is one fp16 safetensors file written atomically (atomic.py), so concurrent
workers never see a partial file (at worst two compute the same entry). Long recordings are cut
into windows by the caller; each window is its own entry.

`FeatureStore` is how training and evaluation read the cache: it holds only the keys (memory
flat in audio hours) and reads an entry when asked, so the variants of a study, and the DDP
ranks of one machine, share the files (and the OS page cache) instead of holding copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from borealis_eval.atomic import atomic_path
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.paths import cache_root


def audio_hash(wave: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(wave, dtype=np.float32).tobytes()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    encoded: int = 0
    encoded_keys: list[str] = field(default_factory=list)


class FeatureCache:
    def __init__(self, encoder_key: str, root: Path | None = None):
        self.dir = (root or cache_root() / "features") / encoder_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        """A whole entry exists: its header parses and the file covers it (read without the data)."""
        p = self.path(key)
        if not p.is_file():
            return False
        try:
            with safe_open(str(p), "pt") as f:
                return "x" in f.keys()
        except Exception:  # noqa: BLE001 - a truncated or corrupt entry is a miss
            return False

    def get(self, key: str) -> torch.Tensor | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return load_file(str(p))["x"].float()
        except Exception:  # a corrupt entry is recomputed, never trusted
            return None

    def put(self, key: str, x: torch.Tensor) -> None:
        with atomic_path(self.path(key)) as tmp:
            save_file({"x": x.to(torch.float16).contiguous()}, str(tmp))


class FeatureStore(Mapping[str, torch.Tensor]):
    """Item id (or `<id>#<window>`) -> its fp16 features, read from the feature cache on access."""

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        self.keys: dict[str, str] = {}  # item id -> cache key

    def __getitem__(self, item_id: str) -> torch.Tensor:
        x = self.cache.get(self.keys[item_id])
        if x is None:
            raise KeyError(f"{item_id}: its feature-cache entry {self.keys[item_id]} is gone or damaged; "
                           "rerun to re-encode it")
        return x.to(torch.float16)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.keys

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: dict[str, str]) -> None:
        self.keys.update(keys)


def cache_features(encoder: FrozenWhisperEncoder, waves: dict[str, np.ndarray], cache: FeatureCache,
                   batch_size: int = 8, desc: str = "encoding") -> dict[str, str]:
    """Make sure every clip is in the cache ({item id: wave} -> {item id: cache key}); only misses
    are encoded, and nothing is loaded (a hit costs a stat, not a read)."""
    keys = {i: audio_hash(w) for i, w in waves.items()}
    misses = [i for i, k in keys.items() if not cache.has(k)]
    cache.stats.hits += len(keys) - len(misses)
    with tqdm(total=len(misses), desc=desc, unit="clip", disable=not misses, leave=False) as bar:

        def store(indices: list[int], feats: list[torch.Tensor]) -> None:  # cached batch by batch: an
            for i, x in zip(indices, feats):  # interruption keeps what was encoded
                cache.put(keys[misses[i]], x)
                cache.stats.encoded += 1
                cache.stats.encoded_keys.append(keys[misses[i]])
            bar.update(len(indices))

        encoder.encode_many([waves[i] for i in misses], batch_size, store)
    return keys


def encode_cached(encoder: FrozenWhisperEncoder, waves: dict[str, np.ndarray], cache: FeatureCache,
                  batch_size: int = 8, desc: str = "encoding") -> dict[str, torch.Tensor]:
    """Features for every clip ({item id: wave} -> {item id: [frames, d]}), cache first."""
    keys = {i: audio_hash(w) for i, w in waves.items()}
    out: dict[str, torch.Tensor] = {}
    misses: list[str] = []
    for item_id, key in keys.items():
        hit = cache.get(key)
        if hit is not None:
            out[item_id] = hit
            cache.stats.hits += 1
        else:
            misses.append(item_id)
    with tqdm(total=len(misses), desc=desc, unit="clip", disable=not misses, leave=False) as bar:

        def store(indices: list[int], feats: list[torch.Tensor]) -> None:  # cached batch by batch: an
            for i, x in zip(indices, feats):  # interruption keeps what was encoded
                item_id = misses[i]
                cache.put(keys[item_id], x)
                cache.stats.encoded += 1
                cache.stats.encoded_keys.append(keys[item_id])
                out[item_id] = x.to(torch.float16).float()  # same precision as a cache hit
            bar.update(len(indices))

        encoder.encode_many([waves[i] for i in misses], batch_size, store)
    return out


def cache_info(root: Path | None = None) -> list[dict]:
    base = root or cache_root() / "features"
    rows = []
    for d in sorted(p for p in base.glob("*") if p.is_dir()):
        files = list(d.rglob("*.safetensors"))
        rows.append({"encoder": d.name, "entries": len(files), "bytes": sum(f.stat().st_size for f in files)})
    return rows
