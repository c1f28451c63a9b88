"""Several processes training one variant (DDP under `accelerate launch` / torchrun): who is who.

Only the main process (rank 0) claims variants, talks to MLflow and evaluates; it tells the
other ranks which variant to train next (`broadcast`). The ranks read RANK and WORLD_SIZE as
the launchers set them.
"""

from __future__ import annotations

import os


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def broadcast(value: str | None) -> str | None:
    """The main process's `value` on every rank (forms the process group on first use)."""
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())  # forms the process group once
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class NullRun:
    """What non-main ranks log to: nothing (the main process owns the MLflow run)."""

    run_id = ""

    def metrics(self, *a, **k) -> None: ...
    def params(self, *a, **k) -> None: ...
    def tags(self, *a, **k) -> None: ...
    def flush(self) -> None: ...
    def datasets(self, *a, **k) -> None: ...
