"""Training recipe for one variant: setup, train, done. One readable loop, no framework.

AdamW on the trainable parameters (adapter, LoRA or the whole LLM), linear warm-up then cosine
decay, gradient clipping and accumulation, bf16 autocast on CUDA, fixed seeds. `accelerate`
owns devices and DDP, so the same code runs under `accelerate launch`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from borealis_eval.config import TrainConfig
from borealis_eval.models.speech_lm import Example, SpeechLM


class TrainingDiverged(RuntimeError):
    """Loss or gradients became NaN/inf; carries the step and the batch's example ids."""

    def __init__(self, step: int, what: str, ids: list[str]):
        self.step, self.ids = step, ids
        super().__init__(f"{what} is not finite at step {step} (batch ids: {', '.join(ids[:8])}"
                         f"{' ...' if len(ids) > 8 else ''})")


@dataclass
class TrainResult:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    losses: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_available())
    return Accelerator(mixed_precision="bf16" if bf16 else "no", gradient_accumulation_steps=cfg.grad_accum)


def _batches(examples: list[Example], batch_size: int, rank: int, world: int):
    """Endless stream of batches; each process takes every world-th batch."""
    i = 0
    n = len(examples)
    while True:
        batch = [examples[(i + j) % n] for j in range(batch_size)]
        if (i // batch_size) % world == rank:
            yield batch
        i += batch_size


def train(model: SpeechLM, examples: list[Example], cfg: TrainConfig, seed: int,
          log: Callable[[dict[str, float], int], None] | None = None,
          accelerator: Accelerator | None = None, progress: bool = True) -> TrainResult:
    if not examples:
        raise ValueError("no training examples")
    seed_everything(seed)
    acc = accelerator or make_accelerator(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * cfg.steps), cfg.steps)
    model, opt, sched = acc.prepare(model, opt, sched)
    core: SpeechLM = acc.unwrap_model(model)
    model.train()

    stream = _batches(examples, cfg.batch_size, acc.process_index, acc.num_processes)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="training", unit="step", disable=not progress or not acc.is_main_process,
               leave=False)
    pending: list[float] = []
    for step in bar:
        for _ in range(cfg.grad_accum):
            batch = next(stream)
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
            pending.append(loss.detach().float().item())
        step_loss = float(np.mean(pending[-cfg.grad_accum:]))
        losses.append(step_loss)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            window = losses[-cfg.log_every:]
            log({"train/loss": float(np.mean(window)), "train/lr": sched.get_last_lr()[0]}, step + 1)
    bar.close()
    model.eval()
    head = losses[: max(1, min(10, len(losses) // 10))]
    tail = losses[-max(1, min(10, len(losses) // 10)):]
    return TrainResult(cfg.steps, time.perf_counter() - t0, float(np.mean(head)), float(np.mean(tail)), losses)
