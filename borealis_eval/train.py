"""Training recipe for one variant: setup, train, done. One readable loop, no framework.

Fused AdamW on the trainable parameters (adapter, LoRA or the whole LLM), linear warm-up then
cosine decay, gradient clipping and accumulation, bf16 autocast on CUDA (and on a CPU with native
bf16 when train.precision is bf16: about half the CPU time of fp32), fixed seeds. `accelerate`
owns devices and DDP, so the same code runs under `accelerate launch`.

Checkpoints (optional): every `checkpoint_every` steps the main process writes the trainable
weights, optimizer, scheduler, step, losses and RNG states to `checkpoint_dir/state.pt`
atomically (atomic.py); a later call with the same directory resumes from it.
`should_stop()` (e.g. a signal flag) makes the loop checkpoint and raise TrainingInterrupted.
The logged curve points are part of the checkpoint and replayed on resume, so a resumed run has
the whole curve; if the metrics sink fails (tracking store down) the loop checkpoints first, so
a rerun loses no training. A checkpoint that does not load (truncated, corrupt) is set aside and
training starts over rather than trusting it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from borealis_eval import records
from borealis_eval.atomic import atomic_path
from borealis_eval.config import TrainConfig
from borealis_eval.data.loader import BatchStream, batches
from borealis_eval.errors import (
    TrainingDiverged,
    TrainingInterrupted,
    TrainingOOM,
    is_oom,
)
from borealis_eval.machine import bf16_for, native_bf16
from borealis_eval.models.speech_lm import Example, SpeechLM

log_ = logging.getLogger("borealis_eval")


@dataclass
class TrainResult:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0  # the step the run resumed at (0: a fresh start)


CHECKPOINT = "state.pt"


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, core: SpeechLM, opt, sched, step: int, losses: list[float],
                    history: list | None = None) -> None:
    """Atomic: a kill at any moment leaves either the previous checkpoint or this one, never half."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "losses": losses, "history": history or [], "rng": _rng_state(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "model": {k: t.detach().cpu() for k, t in core.trainable_state_dict().items()}}
    with atomic_path(directory / CHECKPOINT) as tmp:  # a failed write leaves the previous checkpoint, no debris
        torch.save(state, tmp)


def has_checkpoint(directory: Path | None) -> bool:
    """Whether `directory` holds a checkpoint to resume from (not read: `load_checkpoint` checks it)."""
    return directory is not None and (directory / CHECKPOINT).is_file()


def load_checkpoint(directory: Path | None) -> dict | None:
    """The saved state, or None; an unreadable file is renamed `state.pt.corrupt` and ignored."""
    path = directory / CHECKPOINT if directory else None
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or not {"step", "model", "optimizer", "scheduler"} <= set(state):
            raise ValueError("not a training checkpoint")
        return state
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a damaged file
        os.replace(path, path.with_name(CHECKPOINT + ".corrupt"))
        log_.warning("checkpoint %s does not load (%s: %s); set aside as %s.corrupt, training starts over",
                     path, type(e).__name__, str(e)[:200], CHECKPOINT)
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def uses_bf16(cfg: TrainConfig) -> bool:
    """Whether training autocasts to bf16 (`train.precision`, auto resolved for this machine)."""
    return bf16_for(cfg.precision)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    bf16 = uses_bf16(cfg)
    if bf16 and not torch.cuda.is_available() and not native_bf16():
        log_.warning("train.precision: bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): autocast emulates it, "
                     "slower than fp32; use train.precision: fp32 on this machine")
    # Launched as several processes without a GPU (torchrun / `accelerate launch --multi_gpu` on CPU): accelerate
    # only forms the gloo group when told it runs on CPU, else each process would silently train alone.
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # A rank whose batch holds only text-only examples never touches the adapter: DDP must allow unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != ("bf16" if bf16 else "no"):
        # accelerate fixes the precision once per process; the variants of one sweep may differ in it.
        # Only the accelerator's state is reset: the process group (PartialState) of a DDP run stays.
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision="bf16" if bf16 else "no", gradient_accumulation_steps=cfg.grad_accum,
                       cpu=cpu_ddp, kwargs_handlers=[ddp])


@contextmanager
def training_attention(llm, acc: Accelerator):
    """Eager attention while training under bf16 autocast on CPU, the model's own outside it.

    The CPU flash-attention kernel behind SDPA has a slow bf16 backward: a CPU-profile step took
    72 ms with SDPA against 53 ms with eager attention (fp32: 115 ms; benchmarks/README.md). Eager's
    softmax stays fp32. Evaluation after training keeps SDPA (no backward there).
    """
    before = llm.config._attn_implementation
    switch = acc.mixed_precision == "bf16" and acc.device.type == "cpu" and before == "sdpa"
    if switch:
        llm.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            llm.set_attn_implementation(before)


def train(model: SpeechLM, examples: list[Example], cfg: TrainConfig, seed: int,
          log: Callable[[dict[str, float], int], None] | None = None,
          accelerator: Accelerator | None = None, progress: bool = True,
          checkpoint_dir: Path | None = None, checkpoint_every: int = 0,
          should_stop: Callable[[], str | None] | None = None,
          on_step: Callable[[int], dict[str, float] | None] | None = None,
          batch_transform: Callable[[list[Example], list[int]], list[Example]] | None = None,
          features: Mapping[str, torch.Tensor] | None = None) -> TrainResult:
    """Train for cfg.steps; `on_step(step)` runs after each optimizer step (e.g. pruning checks, a
    learning-curve score); metrics it returns are logged at that step and replayed on resume.

    `batch_transform(batch, positions)` may replace a batch's examples before the step (e.g.
    augmented audio encoded on the fly); it must be a pure function of its arguments, so the
    batches stay a pure function of the step and a resumed run replays them exactly.

    Examples with a `feature_key` get their features from `features` (a FeatureStore) when their
    batch is built (data/loader.py): resident memory stays flat in audio hours; with
    `train.loader_workers` > 0 (default on CUDA) the batches are read ahead by worker processes.
    """
    if not examples:
        raise ValueError("no training examples")
    seed_everything(seed)
    acc = accelerator or make_accelerator(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    # fused AdamW: one kernel per step instead of a launch per tensor (GPU) or a dozen elementwise passes
    # per tensor (CPU); measured 0.151 -> 0.118 s/step on an H200 and ~10% of a CPU-profile step
    # (benchmarks/README.md #8, benchmarks/variant_cost.py)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * cfg.steps), cfg.steps)
    model, opt, sched = acc.prepare(model, opt, sched)
    core: SpeechLM = acc.unwrap_model(model)
    model.train()

    stream = BatchStream(examples, cfg.batch_size, features, acc.process_index, acc.num_processes)
    losses: list[float] = []
    history: list[tuple[int, dict[str, float]]] = []  # every logged (step, metrics) point
    start = 0
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is not None:
        missing = set(core.trainable_state_dict()) - set(ckpt["model"])
        if missing:
            raise ValueError(f"checkpoint {checkpoint_dir}: does not fit this model (missing {sorted(missing)[:3]})")
        core.load_state_dict(ckpt["model"], strict=False)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, losses, history = ckpt["step"], list(ckpt["losses"]), list(ckpt.get("history", []))
        if log is not None:  # a resumed run (a new MLflow run) gets the curve from step 1, not from `start`
            for at, point in history:
                log(point, at)
        _set_rng_state(ckpt["rng"])
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc="training", unit="step", disable=not progress or not acc.is_main_process,
               leave=False, initial=start, total=cfg.steps)
    pending: list[float] = []

    def checkpoint(step: int, barrier: bool = True) -> None:
        if checkpoint_dir is not None and acc.is_main_process:
            save_checkpoint(checkpoint_dir, core, opt, sched, step, losses, history)
        if barrier:
            acc.wait_for_everyone()

    workers = cfg.loader_workers if cfg.loader_workers is not None else (2 if acc.device.type == "cuda" else 0)
    # the batch stream is a pure function of the batch number: a resumed run starts at its step's batch
    reader = batches(stream, start * cfg.grad_accum, cfg.steps * cfg.grad_accum, workers)
    with training_attention(core.llm, acc):
        for step in bar:
            for _ in range(cfg.grad_accum):
                positions, batch = next(reader)
                try:
                    if batch_transform is not None:  # e.g. augmentation re-encodes audio: it can run out of memory too
                        batch = batch_transform(batch, positions)
                    with acc.accumulate(model), acc.autocast():
                        loss = model(batch) if acc.num_processes > 1 else core(batch)
                        if not torch.isfinite(loss):
                            raise TrainingDiverged(step, "loss", [e.id for e in batch])
                        acc.backward(loss)
                        if acc.sync_gradients:
                            norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
                            if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                                raise TrainingDiverged(step, "gradient norm", [e.id for e in batch])
                        opt.step()
                        sched.step()
                        opt.zero_grad(set_to_none=True)
                except Exception as e:
                    if is_oom(e):
                        raise TrainingOOM(step, cfg, [x.id for x in batch], e) from e
                    raise
                pending.append(loss.detach().float().item())
            step_loss = float(np.mean(pending[-cfg.grad_accum:]))
            losses.append(step_loss)
            bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)  # drawn at the next refresh
            extra = on_step(step + 1) if on_step is not None else None
            if on_step is not None:
                model.train()
            loss_due = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
            if log is not None and (loss_due or extra):
                window = losses[-cfg.log_every:]
                point = {records.TRAIN_LOSS: float(np.mean(window)), records.TRAIN_LR: sched.get_last_lr()[0]} if loss_due else {}
                point.update(extra or {})
                history.append((step + 1, point))
                try:
                    log(point, step + 1)
                except Exception:
                    # The metrics sink failed (e.g. the tracking store went away): keep the training done so
                    # far, this point included, so a rerun resumes here. No barrier: only the main process logs.
                    checkpoint(step + 1, barrier=False)
                    raise
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
                checkpoint(step + 1)
            reason = should_stop() if should_stop is not None else None
            if reason and step + 1 < cfg.steps:
                checkpoint(step + 1)
                bar.close()
                raise TrainingInterrupted(step + 1, reason)
    bar.close()
    if checkpoint_dir is not None and start < cfg.steps:
        checkpoint(cfg.steps)  # an interruption during evaluation does not cost the training
    model.eval()
    head = losses[: max(1, min(10, len(losses) // 10))]
    tail = losses[-max(1, min(10, len(losses) // 10)):]
    return TrainResult(cfg.steps, time.perf_counter() - t0, float(np.mean(head)), float(np.mean(tail)), losses, start)
