"""The training stream as a torch Dataset of batches, features read from the feature cache on demand.

Batch `g` of the stream holds examples `g * batch_size ... (g + 1) * batch_size - 1` of the mixed
examples, cycled (a position counts examples from the start, so position // len(examples) is the
epoch). Under DDP, rank r of w reads batches r, r + w, r + 2w, ...; a resumed run starts at the
batch of its step. The stream is therefore a pure function of the batch number: a DataLoader may
read it with workers and prefetch, in any process, and every run of the same config trains on the
same batches. Audio examples carry a `feature_key` and no features; their fp16 features are read
from the store when their batch is built, so resident memory stays flat in audio hours.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class BatchStream(Dataset):
    """`stream[i]` = (positions, examples) of this rank's i-th batch, features loaded."""

    def __init__(self, examples: Sequence[Any], batch_size: int, features: Mapping[str, torch.Tensor] | None = None,
                 rank: int = 0, world: int = 1, batches: int | None = None):
        if not examples:
            raise ValueError("no training examples")
        self.examples, self.batch_size, self.features = examples, batch_size, features
        self.rank, self.world, self.batches = rank, world, batches

    def __len__(self) -> int:
        if self.batches is None:
            raise TypeError("an endless stream has no length; give `batches`")
        return self.batches

    def positions(self, i: int) -> list[int]:
        g = i * self.world + self.rank
        return list(range(g * self.batch_size, (g + 1) * self.batch_size))

    def __getitem__(self, i: int) -> tuple[list[int], list[Any]]:
        positions = self.positions(i)
        n = len(self.examples)
        return positions, [self._loaded(self.examples[p % n]) for p in positions]

    def _loaded(self, ex: Any) -> Any:
        key = getattr(ex, "feature_key", None)
        if key is None or ex.features is not None:
            return ex
        if self.features is None:
            raise ValueError(f"example {ex.id} refers to cached features but the stream has no feature store")
        return replace(ex, features=self.features[key])


def _first(batch):  # the dataset already returns whole batches
    return batch


def batches(stream: BatchStream, start: int, stop: int, workers: int = 0, prefetch: int = 2) -> Iterator:
    """This rank's batches `start` .. `stop - 1`, read ahead by `workers` processes (0: in this process)."""
    if workers <= 0:
        return (stream[i] for i in range(start, stop))
    loader = DataLoader(stream, batch_size=None, sampler=range(start, stop), num_workers=workers,
                        prefetch_factor=prefetch, collate_fn=_first, persistent_workers=False)
    return iter(loader)
