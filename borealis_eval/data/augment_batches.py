"""The training hook that augments audio examples and encodes them on the fly.

The feature cache holds clean audio only. For each training batch, `AugmentBatches` plans the
augmentation of every audio example (seeded by the clip, its position in the mixed stream and
the epoch); examples that draw no effect keep their cached features, the others are reloaded
(from a bounded in-memory store), augmented, and passed through the frozen encoder. It is a pure
function of (batch, positions), as train()'s `batch_transform` must be: a resumed run replays
the same augmentation, and under DDP each rank transforms its own batches.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import replace

import numpy as np
import torch

from borealis_eval import records
from borealis_eval.data.augment import Augmenter
from borealis_eval.data.sources import AudioItem
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import Example


class AugmentBatches:
    """`train(..., batch_transform=AugmentBatches(...))`; `metrics()` summarises what it applied."""

    def __init__(self, augmenter: Augmenter, encoder: FrozenWhisperEncoder, items: dict[str, AudioItem],
                 n_examples: int, max_wave_bytes: int = 256 << 20):
        self.augmenter, self.encoder, self.items, self.n = augmenter, encoder, items, n_examples
        self.max_wave_bytes = max_wave_bytes
        self._waves: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.counts: Counter[str] = Counter()  # effect -> clips, plus "clips" and "audio_examples"
        self.seconds = 0.0

    def __call__(self, batch: list[Example], positions: list[int]) -> list[Example]:
        t = time.perf_counter()
        todo: dict[int, np.ndarray] = {}
        for j, (ex, pos) in enumerate(zip(batch, positions)):
            if ex.features is None or ex.id not in self.items:
                continue  # text-only example
            self.counts["audio_examples"] += 1
            # the key names this occurrence: a clip drawn twice in one epoch is augmented twice, differently
            plan = self.augmenter.plan(f"{ex.id}@{pos % self.n}", pos / self.n)
            if not plan:
                continue
            todo[j] = self.augmenter.apply(self._wave(ex.id), plan)
            self.counts["clips"] += 1
            self.counts.update(name for name, _ in plan)
        out = list(batch)
        for j, x in self._encode(todo).items():
            out[j] = replace(batch[j], features=x)
        self.seconds += time.perf_counter() - t
        return out

    def _encode(self, waves: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:
        """Encoder features in the cache's precision (fp16)."""
        feats = self.encoder.encode_many(list(waves.values()))
        return {j: x.to(torch.float16) for j, x in zip(waves, feats)}

    def _wave(self, item_id: str) -> np.ndarray:
        """The clean wave, from a least-recently-used store bounded to `max_wave_bytes`."""
        if item_id in self._waves:
            self._waves.move_to_end(item_id)
            return self._waves[item_id]
        wave = self.items[item_id].load()
        self._waves[item_id] = wave
        self._bytes += wave.nbytes
        while self._bytes > self.max_wave_bytes and len(self._waves) > 1:
            self._bytes -= self._waves.popitem(last=False)[1].nbytes
        return wave

    def metrics(self) -> dict[str, float]:
        """`augment/<effect>` (clips that got it), `augment/clips` (clips with any effect),
        `augment/audio_examples`, summed over DDP ranks (every rank must call this), and
        `augment/seconds` (this rank's time augmenting and encoding). After a resume from a
        checkpoint they cover the steps run since."""
        keys = ["audio_examples", "clips", *self.augmenter.effects]
        values = _sum_over_ranks([float(self.counts[k]) for k in keys])
        out = {records.augment_metric(k): v for k, v in zip(keys, values)}
        out[records.augment_metric("seconds")] = self.seconds
        return out


def _sum_over_ranks(values: list[float]) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    from accelerate import PartialState

    t = torch.tensor(values, dtype=torch.float64, device=PartialState().device)
    dist.all_reduce(t)
    return t.tolist()
