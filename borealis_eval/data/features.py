"""Encoder-feature cache: the encoder is frozen, so each clip is encoded once, ever.

Key: encoder identity (weights + preprocessing) / sha1 of the clip's 16 kHz float32 samples.
Each entry is one fp16 safetensors file written to a temporary name and renamed into place,
so concurrent workers never see a partial file (at worst two compute the same entry).
Long recordings are cut into windows by the caller; each window is its own entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
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
