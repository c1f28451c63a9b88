"""The alignment phase (`train.align`): the adapter and its CTC head trained alone, before the LM phase.

With `model.adapter.output: ctc_tokens` (models/ctc_tokens.py), `align.steps` steps of CTC on the
audio examples of the variant's stream teach the adapter rows to lie near the LLM's embeddings of
the tokens they hear. No LLM forward or backward runs, so a step is a small fraction of an LM step
(Gemma-3 270M, batch 16, 2 CPU threads: ~0.12 s against ~3 s); the LM phase then starts from rows
the LLM can already read. Seeded and a pure function of (seed, examples): a rerun repeats it.

A variant resumed from an LM-phase checkpoint skips it (the checkpoint holds the aligned adapter).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from borealis_eval import records
from borealis_eval.config import AlignConfig
from borealis_eval.errors import TrainingDiverged
from borealis_eval.machine import bf16_for
from borealis_eval.models.speech_lm import Example, SpeechLM


@dataclass
class AlignResult:
    steps: int
    seconds: float
    vocabulary: int
    losses: list[float] = field(default_factory=list)


def align(model: SpeechLM, examples: list[Example], cfg: AlignConfig, seed: int, precision: str = "auto",
          features: Mapping[str, torch.Tensor] | None = None, log: Callable[[dict[str, float], int], None] | None = None,
          log_every: int = 10, progress: bool = True) -> AlignResult:
    """Train the adapter (and its CTC head) by CTC for `cfg.steps` on the audio examples; the LLM is untouched."""
    head = model.adapter.ctc
    if head is None:
        raise ValueError("align needs an adapter with a CTC head (model.adapter.output: ctc_tokens)")
    audio = [e for e in examples if e.features is not None or e.feature_key is not None]
    if not audio:
        raise ValueError("align: the training stream has no audio examples")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = list(model.adapter.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warm = max(1, math.ceil(0.05 * cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    bf16 = bf16_for(precision)
    device = next(model.adapter.parameters()).device
    model.adapter.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="aligning", unit="step", disable=not progress, leave=False):
        batch = rng.sample(audio, min(cfg.batch_size, len(audio)))
        feats = [(e.features if e.features is not None else features[e.feature_key]).float().to(device) for e in batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.ctc_loss(model.adapter_rows(feats), [e.answer for e in batch])
        if not torch.isfinite(loss):
            raise TrainingDiverged(step, "alignment (CTC) loss", [e.id for e in batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == cfg.steps):
            window = losses[-log_every:]
            log({records.ALIGN_LOSS: sum(window) / len(window)}, step + 1)
    return AlignResult(cfg.steps, time.perf_counter() - t0, len(head.vocab), losses)
