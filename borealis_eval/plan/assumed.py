"""Stated assumptions, for what neither a probe nor an earlier run can give (hub data, a GPU not
at hand): each use adds its note to the plan's assumptions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from borealis_eval.audio import ENCODER_FRAMES_PER_SECOND
from borealis_eval.config import ExperimentConfig
from borealis_eval.plan.devices import Device
from borealis_eval.plan.model_cost import Tokens

if TYPE_CHECKING:
    from borealis_eval.plan.probe import LocalData

FRAMES_PER_SECOND = ENCODER_FRAMES_PER_SECOND

# Stand-ins for data that is on the hub (not readable offline); each use is listed as an assumption.
HUB_CLIP_SECONDS = 10.0        # mean training/eval clip
HUB_ROWS = 1000                # eval rows when max_samples is not set
ANSWER_TOKENS_PER_SECOND = 4.0  # transcript tokens per second of speech (Qwen BPE, read Russian/English)
TEXT_EXAMPLE_TOKENS = (150, 500)  # instruction, answer tokens of a hub instruction dataset
PROMPT_TOKENS = 20             # chat template around the audio + the prompt, without a tokenizer


def assumed_tokens(cfg: ExperimentConfig, notes: list[str]) -> Tokens:
    notes.append(f"hub training data: clips of {HUB_CLIP_SECONDS:g} s on average, the longest of a batch "
                 f"1.5x that; {ANSWER_TOKENS_PER_SECOND:g} transcript tokens per second; text examples "
                 f"{TEXT_EXAMPLE_TOKENS[0]} + {TEXT_EXAMPLE_TOKENS[1]} tokens; {PROMPT_TOKENS} prompt tokens")
    k = cfg.model.adapter.downsample_k
    audio = math.ceil(HUB_CLIP_SECONDS * FRAMES_PER_SECOND / k)
    answer = HUB_CLIP_SECONDS * ANSWER_TOKENS_PER_SECOND + 1
    audio_len = PROMPT_TOKENS + 2 + 1.5 * (audio + answer)
    text_len = PROMPT_TOKENS + sum(TEXT_EXAMPLE_TOKENS) + 1
    f, b = cfg.data.text_fraction, cfg.train.batch_size
    p_text = 1 - (1 - f) ** b  # a batch holding at least one text example is padded to its length
    padded = p_text * max(text_len, audio_len) + (1 - p_text) * audio_len
    return Tokens(PROMPT_TOKENS + 2, audio, answer, padded, b * cfg.train.grad_accum * padded, f)


def assumed_eval_seconds(cfg: ExperimentConfig, llm_kw: dict[str, Any], dev: Device, notes: list[str]) -> float:
    """Greedy decoding, batch eval.batch_size, as many token steps as the longest transcript of a batch."""
    notes.append(f"hub eval sets: {HUB_ROWS} rows unless max_samples says otherwise, {HUB_CLIP_SECONDS:g} s clips; "
                 "decoding with merged LoRA weights (eval.merge_lora)")
    step = llm_kw["num_hidden_layers"] * dev.decode_s_per_layer
    tokens = min(cfg.eval.max_new_tokens, 1.5 * HUB_CLIP_SECONDS * ANSWER_TOKENS_PER_SECOND + 1)
    rows = sum(s.max_samples or HUB_ROWS for s in cfg.eval.sets)
    text = sum(t.max_samples or HUB_ROWS for t in cfg.eval.text_sets)
    batches = math.ceil(rows / cfg.eval.batch_size) + math.ceil(text / cfg.eval.batch_size)
    text_tokens = min(cfg.eval.max_new_tokens, TEXT_EXAMPLE_TOKENS[1])
    return step * (math.ceil(rows / cfg.eval.batch_size) * (tokens + 1)
                   + math.ceil(text / cfg.eval.batch_size) * (text_tokens + 1)) if batches else 0.0


def assumed_shared_seconds(cfg: ExperimentConfig, dev: Device, notes: list[str],
                            data: "LocalData | None" = None) -> dict[str, float]:
    if data is not None:
        audio = sum(it.duration or 0.0 for _, items in data.eval_sets for it in items)
    else:
        audio = sum((s.max_samples or HUB_ROWS) * HUB_CLIP_SECONDS for s in cfg.eval.sets)
    out = {"baseline": audio / dev.whisper_rtfx if cfg.eval.baseline.enabled else 0.0}
    notes.append(f"baseline at an assumed RTFx {dev.whisper_rtfx:g}; encoding the feature cache and downloading or "
                 "decoding hub audio are not counted" + ("; without a probe a CPU's decoding time is not estimated"
                                                         if dev.kind == "cpu" else ""))
    return out
