"""Cost plan of a sweep before any GPU is spent: parameters, tokens, peak memory, hours.

`plan(path)` reads an ablation and gives, per variant and for the whole sweep:
- total and trainable parameters, counted on models built on the meta device (shapes only, no
  weights, no memory; the LLM goes through the harness's own `build_llm`, LoRA included);
- tokens per optimizer step (prompt + audio tokens after downsampling + answer, padded per batch);
- estimated peak accelerator memory (`Memory.FORMULA`);
- time, from the best source available, in this order: `step_seconds` given by the caller
  (e.g. measured by benchmarks/gpu_fullscale_check.py); a previous run of the same shape in the
  MLflow store (metric train/steps_per_second); a probe (on a CPU profile with local data: a few
  real training steps of each variant on its real data mix, random features of the real
  lengths, plus timed decoding and encoding); else a stated assumption (FLOPs at an assumed
  utilisation plus a per-layer launch floor measured on an H200, benchmarks/README.md rows 7-9).
Every figure that is assumed rather than read or measured is listed in `Plan.assumptions`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from borealis_eval.audio import ENCODER_FRAMES_PER_SECOND, SAMPLE_RATE
from borealis_eval.errors import UsageError
from borealis_eval.config import (EncoderConfig, ExperimentConfig, HFSource, LLMConfig, ModelConfig, TokenizerTrain,
                                  Variant, load_ablation)
from borealis_eval.workers import encode_threads

log = logging.getLogger("borealis_eval")
FRAMES_PER_SECOND = ENCODER_FRAMES_PER_SECOND

# Shapes of hub models, used when their config is not in the local Hugging Face cache (offline).
# Read from the models' config.json (copies found with the project's search tools, 2026-12-01).
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-4B": dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151_936,
                          max_position_embeddings=40_960, rms_norm_eps=1e-6, rope_theta=1_000_000,
                          tie_word_embeddings=True),
    "openai/whisper-large-v3": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                                    num_mel_bins=128, max_source_positions=1500),
}

# Stand-ins for data that is on the hub (not readable offline); each use is listed as an assumption.
HUB_CLIP_SECONDS = 10.0        # mean training/eval clip
HUB_ROWS = 1000                # eval rows when max_samples is not set
ANSWER_TOKENS_PER_SECOND = 4.0  # transcript tokens per second of speech (Qwen BPE, read Russian/English)
TEXT_EXAMPLE_TOKENS = (150, 500)  # instruction, answer tokens of a hub instruction dataset
PROMPT_TOKENS = 20             # chat template around the audio + the prompt, without a tokenizer


@dataclass(frozen=True)
class Device:
    """What the time and memory estimates assume about the machine."""

    name: str
    kind: Literal["cpu", "cuda"]
    memory_bytes: float
    peak_flops: float          # dense bf16 FLOP/s (GPU) or effective fp32 FLOP/s (CPU)
    mfu: float                 # fraction of peak a training micro-batch reaches
    launch_s_per_layer: float  # per micro-batch and LLM layer: the eager-PyTorch launch floor
    decode_s_per_layer: float  # per generated-token step and LLM layer (batch 16, merged LoRA)
    whisper_rtfx: float        # plain-Whisper baseline: audio seconds per wall second

    def describe(self) -> str:
        if self.kind == "cpu":
            return f"{self.name}: {self.memory_bytes / 2**30:.0f} GiB RAM; times are probed here or given, not derived"
        return (f"{self.name}: {self.memory_bytes / 1e9:.0f} GB, peak {self.peak_flops / 1e12:.0f} TFLOP/s at "
                f"{self.mfu:.0%} utilisation, launch floor {self.launch_s_per_layer * 1e3:.1f} ms/layer/micro-batch, "
                f"decode {self.decode_s_per_layer * 1e3:.2f} ms/layer/token step, Whisper RTFx {self.whisper_rtfx:g}")


# H200 (141 GB HBM3e, 989 TFLOP/s dense bf16). Launch floor: LoRA 350M (22 layers) trained at 0.156 s
# per batch-8 step on an H200, nearly all launch overhead (benchmarks/README.md row 9); decoding: 695
# tok/s at batch 16 for 22 layers (row 8) = 23 ms per token step. The 35% utilisation and the
# baseline RTFx are assumptions, not measurements.
H200 = Device("H200", "cuda", 141e9, 989e12, 0.35, 0.156 / 22, 16 / 695 / 22, 100.0)
CPU = Device("CPU", "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), 20e9, 1.0, 0.0, 0.0, 3.0)
DEVICES = {"h200": H200, "cpu": CPU}


# ------------------------------------------------------------------ parameters
@dataclass
class ParamCount:
    encoder: int
    adapter: int
    llm: int       # LLM with its LoRA layers, if any
    trainable: int
    source: str    # where the shapes came from

    @property
    def total(self) -> int:
        return self.encoder + self.adapter + self.llm


class _VocabOnly:
    """What `build_llm` needs from a tokenizer to size the embeddings: its length and two ids."""

    pad_token_id = 0
    eos_token_id = 1

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def encoder_shape(cfg: EncoderConfig) -> tuple[dict[str, Any], str]:
    """WhisperConfig kwargs of the encoder and where they were read."""
    if cfg.config is not None:
        return dict(cfg.config), "config"
    return _ref_shape(cfg.ref)


def llm_shape(cfg: LLMConfig) -> tuple[dict[str, Any], str]:
    if cfg.config is not None:
        return dict(cfg.config), "config"
    return _ref_shape(cfg.ref)


def _ref_shape(ref: str) -> tuple[dict[str, Any], str]:
    from transformers import AutoConfig

    from borealis_eval.models.refs import _parse, resolve

    kind, target, rev = _parse(ref)
    try:
        if kind == "hf":
            conf = AutoConfig.from_pretrained(target, revision=rev, local_files_only=True)
        else:
            conf = AutoConfig.from_pretrained(resolve(ref).path_or_id)
        return conf.to_dict(), f"{ref} config"
    except (OSError, ValueError):
        if target in KNOWN_SHAPES:
            return dict(KNOWN_SHAPES[target]), f"{ref}: not in the local cache, known shape assumed"
        raise UsageError(f"{ref}: config not in the local Hugging Face cache and its shape is not known; "
                         f"download its config.json (no weights needed) or add it to plan.KNOWN_SHAPES") from None


def count_params(model: ModelConfig, vocab_size: int | None = None) -> ParamCount:
    """Parameters of encoder + adapter + LLM (+ LoRA), built on the meta device with the harness's
    own builders. `vocab_size`: the tokenizer's length (default: the LLM config's vocab, or the
    size a trained BPE is asked for)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from borealis_eval.models.adapter import Adapter
    from borealis_eval.models.speech_lm import build_llm

    enc_kw, enc_src = encoder_shape(model.encoder)
    llm_kw, llm_src = llm_shape(model.llm)
    enc_conf = WhisperConfig.from_dict(enc_kw)
    vocab = vocab_size or _default_vocab(model.llm, llm_kw)
    # build_llm takes the vocabulary from the tokenizer and the ids from it: drop them from the shape
    llm_kw = {k: v for k, v in llm_kw.items() if k not in _TOKEN_KEYS and not k.startswith("_")}
    as_config = model.llm.model_copy(update={"ref": None, "config": llm_kw, "tokenizer": model.llm.tokenizer or "-"})
    with torch.device("meta"):
        encoder = WhisperEncoder(enc_conf)
        llm = build_llm(as_config, _VocabOnly(vocab), torch.bfloat16)
        hidden = llm.get_input_embeddings().embedding_dim
        a = model.adapter
        adapter = Adapter(enc_conf.d_model, hidden, a.downsample_k, a.hidden_sizes, a.activation, a.dropout)
    n = lambda m, trainable=False: sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)  # noqa: E731
    return ParamCount(encoder=n(encoder), adapter=n(adapter), llm=n(llm), trainable=n(adapter) + n(llm, True),
                      source=f"encoder: {enc_src}; LLM: {llm_src}; vocabulary {vocab:,}")


_TOKEN_KEYS = {"vocab_size", "pad_token_id", "eos_token_id", "bos_token_id", "architectures", "torch_dtype", "dtype",
               "transformers_version", "id2label", "label2id"}


def _default_vocab(llm: LLMConfig, shape: dict[str, Any]) -> int:
    """The embedding rows the LLM will get without a tokenizer at hand: a BPE to be trained is
    asked for `vocab_size` (it may come out smaller); a named tokenizer is read if it loads here;
    else the LLM config's own vocabulary."""
    if isinstance(llm.tokenizer, TokenizerTrain):
        return llm.tokenizer.vocab_size
    if isinstance(llm.tokenizer, str) and llm.config is not None:
        from borealis_eval.models.tokenizer import load_tokenizer

        try:
            return len(load_tokenizer(llm.tokenizer))
        except (OSError, ValueError):
            pass
    if not shape.get("vocab_size"):
        raise UsageError("the LLM's vocabulary size is unknown here: give its tokenizer or vocab_size")
    return int(shape["vocab_size"])


# ------------------------------------------------------------------ tokens and memory
@dataclass
class Tokens:
    """Mean tokens of one example, and the padded tokens of one optimizer step."""

    prompt: float
    audio: float
    answer: float
    padded_length: float  # expected longest example of a micro-batch: what the batch is padded to
    per_step: float       # batch_size x grad_accum x padded_length
    text_share: float     # realised share of text-only examples


@dataclass
class Memory:
    """Estimated peak accelerator memory of one training micro-batch, in bytes."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    per_token: float = 0.0  # activation bytes per token of a micro-batch

    FORMULA = ("weights (frozen encoder at its dtype + LLM at llm dtype + adapter fp32) + gradients (4 B x trainable) "
               "+ AdamW moments (8 B x trainable) + activations of one micro-batch: B x L x [layers x (2 B x (4h + "
               "3 q + 3 kv + 4 i) + 4 B x 4h (fp32 norms) + 2 B x targets x h (LoRA dropout)) + 10 B x vocab "
               "(bf16 logits + fp32 loss copy and its gradient)] (+ 2 B x LLM weights when autocast casts fp32 weights), "
               "B = train.batch_size, L = padded length")

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def memory_estimate(model: ModelConfig, params: ParamCount, llm_kw: dict[str, Any], batch: int, length: float,
                    device: Device) -> Memory:
    """`Memory.FORMULA`, with bf16 activations on a GPU and fp32 (twice the bytes) on a CPU;
    `llm_kw` is the LLM's shape including its `vocab_size`."""
    from borealis_eval.models.speech_lm import llm_dtype

    gpu = device.kind == "cuda"
    llm_bytes = 2 if llm_dtype(model.llm, "cuda" if gpu else "cpu") == torch.bfloat16 else 4
    enc_bytes = 4  # FrozenWhisperEncoder keeps fp32 weights
    lora_llm = params.trainable - params.adapter if model.llm.train == "lora" else 0
    base_llm = params.llm - lora_llm
    weights = params.encoder * enc_bytes + base_llm * llm_bytes + (lora_llm + params.adapter) * 4
    h, i = llm_kw["hidden_size"], llm_kw["intermediate_size"]
    heads, kv = llm_kw["num_attention_heads"], llm_kw.get("num_key_value_heads", llm_kw["num_attention_heads"])
    hd = llm_kw.get("head_dim") or h // heads
    q, kvd = heads * hd, kv * hd
    act = 2 if gpu else 4
    targets = len(model.llm.lora.target_modules) if model.llm.train == "lora" else 0
    per_token_layer = act * (4 * h + 3 * q + 3 * kvd + 4 * i) + 4 * 4 * h + act * targets * h
    per_token = llm_kw["num_hidden_layers"] * per_token_layer + 10 * llm_kw["vocab_size"]
    # bf16 autocast keeps a bf16 copy of every fp32 LLM weight it casts, for the backward pass
    casts = 2 * base_llm if gpu and llm_bytes == 4 else 0
    return Memory(weights=weights, gradients=4 * params.trainable, optimizer=8 * params.trainable,
                  activations=batch * length * per_token + casts, per_token=per_token)


def train_flops_per_token(model: ModelConfig, params: ParamCount, llm_kw: dict[str, Any], length: float) -> float:
    """Forward 2N (+ attention 4 x layers x L x q) per token; backward: input gradients through every
    layer (x1) plus weight gradients only where weights train (x1 more for a full fine-tune)."""
    h = llm_kw["hidden_size"]
    q = llm_kw["num_attention_heads"] * (llm_kw.get("head_dim") or h // llm_kw["num_attention_heads"])
    fwd = 2 * params.llm + 2 * params.adapter + 4 * llm_kw["num_hidden_layers"] * length * q
    return fwd * (3 if model.llm.train == "full" else 2)


# ------------------------------------------------------------------ plan
@dataclass
class VariantPlan:
    name: str
    params: ParamCount
    tokens: Tokens
    memory: Memory
    step_seconds: float
    step_source: str
    train_seconds: float
    eval_seconds: float  # decoding every eval set and text set with the trained variant
    overhead_seconds: float
    batch_size: int = 1

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds + self.overhead_seconds


@dataclass
class Plan:
    ablation: str
    device: Device
    variants: list[VariantPlan]
    shared_seconds: dict[str, float]  # once per sweep: start-up, encoding the feature cache, baseline decoding
    eval_sets: list[dict[str, Any]]
    assumptions: list[str] = field(default_factory=list)
    workers: int = 1  # `sweep --workers N`: local processes sharing the baseline and the variants

    @property
    def seconds(self) -> float:
        """Wall time: what runs once (start-up, encoding, report), then the baseline and the variants
        handed to the first free worker in claim order (baseline first), as the claims table does."""
        units = [s for k, s in self.shared_seconds.items() if k == "baseline"] + [v.seconds for v in self.variants]
        fixed = sum(s for k, s in self.shared_seconds.items() if k != "baseline")
        free = [0.0] * max(1, self.workers)
        for u in units:
            free[free.index(min(free))] += u
        return fixed + max(free)

    @property
    def device_hours(self) -> float:
        return self.seconds / 3600

    def fits(self, v: VariantPlan, headroom: float = 0.9) -> bool:
        """Peak estimate within `headroom` of the device memory (allocator slack, CUDA context)."""
        return v.memory.total <= headroom * self.device.memory_bytes

    def max_length(self, v: VariantPlan, headroom: float = 0.9) -> int:
        """The longest padded micro-batch length that still fits: what one text example may reach."""
        m, b = v.memory, v.batch_size
        fixed = m.weights + m.gradients + m.optimizer + (m.activations - b * v.tokens.padded_length * m.per_token)
        return max(0, int((headroom * self.device.memory_bytes - fixed) / (b * m.per_token))) if m.per_token else 0

    def rows(self) -> list[dict[str, Any]]:
        t = self.timed
        return [{"variant": v.name, "params": _si(v.params.total), "trainable": _si(v.params.trainable),
                 "tokens/step": f"{v.tokens.per_step:,.0f}", "peak memory": f"{v.memory.total / 2**30:.1f} GiB"
                 + ("" if self.fits(v) else " (too big)"), "s/step": f"{v.step_seconds:.3g}" if t else "-",
                 "train": _hms(v.train_seconds) if t else "-", "eval": _hms(v.eval_seconds) if t else "-",
                 "total": _hms(v.seconds) if t else "-"}
                for v in self.variants]

    @property
    def timed(self) -> bool:
        """False on a CPU whose step times were neither probed, given nor read from earlier runs: the
        FLOP-based assumption is a GPU model (on the CPU profile it was ~10x too slow), so no time is shown."""
        return self.device.kind == "cuda" or not any(v.step_source.startswith("assumed") for v in self.variants)

    def summary(self) -> str:
        if not self.timed:
            return (f"{self.ablation}: {len(self.variants)} variants; time not estimated (a CPU's step time is "
                    f"probed by `borealis-eval plan FILE`, or read from earlier runs of the same shape)")
        shared = ", ".join(f"{k} {_hms(s)}" for k, s in self.shared_seconds.items())
        unit = "GPU-hours" if self.device.kind == "cuda" else "hours on this CPU"
        if self.workers > 1:
            unit += f" with {self.workers} local workers"
        return (f"{self.ablation}: {len(self.variants)} variants, {self.device_hours:.2f} {unit} "
                f"({_hms(self.seconds)}; shared: {shared})")

    def to_json(self) -> dict[str, Any]:
        """Flat record for MLflow (plan/* metrics) or a JSON artifact."""
        return {"device": self.device.name, "workers": self.workers, "seconds": self.seconds,
                "device_hours": self.device_hours,
                "shared_seconds": self.shared_seconds, "assumptions": self.assumptions, "eval_sets": self.eval_sets,
                "variants": [{"name": v.name, "params_total": v.params.total, "params_trainable": v.params.trainable,
                              "params_source": v.params.source, "tokens_per_step": v.tokens.per_step,
                              "padded_length": v.tokens.padded_length, "memory_bytes": v.memory.total,
                              "memory": {k: getattr(v.memory, k) for k in ("weights", "gradients", "optimizer",
                                                                            "activations")},
                              "fits": self.fits(v), "max_padded_length": self.max_length(v),
                              "step_seconds": v.step_seconds, "step_source": v.step_source,
                              "train_seconds": v.train_seconds, "eval_seconds": v.eval_seconds,
                              "overhead_seconds": v.overhead_seconds} for v in self.variants]}


def _si(n: float) -> str:
    return next(f"{n / d:.3g}{u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")) if abs(n) >= d or d == 1)


def _hms(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def default_device(variants: list[Variant]) -> Device:
    """CPU profiles pin `train.threads`; anything else is planned for an H200."""
    return CPU if variants[0].config.train.threads else H200


def plan(path: str | Path, device: Device | str | None = None, step_seconds: float | None = None,
         probe: bool | None = None, probe_steps: int = 12, tracking_uri: str | None = None,
         checkpoint_every: int = 50, report: bool = True, overrides: dict | None = None, workers: int = 1) -> Plan:
    """The cost plan of an ablation file (see the module docstring). `probe` defaults to True on a
    CPU device with local data; `tracking_uri` enables reading step times of earlier runs;
    `checkpoint_every` and `report` as the sweep will be run (`--checkpoint-every`, `--no-report`)."""
    abl, variants = load_ablation(path, overrides)
    dev = DEVICES[device] if isinstance(device, str) else device or default_device(variants)
    base = variants[0].config
    data = LocalData.load(base) if LocalData.available(base) else None
    probe = (dev.kind == "cpu" and data is not None) if probe is None else probe
    if probe and data is None:
        raise UsageError("a probe needs local data (synth or manifest sources); this file reads hub datasets")
    notes: list[str] = [f"device {dev.describe()}"]
    measured = _measured_step_seconds(tracking_uri, abl.name, variants) if tracking_uri else {}
    prober = (Prober(base, data, dev, notes, timing=probe, encode_threads=encode_threads(workers, base.train.threads))
              if data is not None else None)  # local data: real tokens

    sized, counted = [], {}
    for v in variants:
        cfg = v.config
        tok_len = prober.tokenizer_len(cfg.model.llm) if prober else None
        key = json.dumps([cfg.model.model_dump(mode="json"), tok_len])
        params = counted[key] = counted.get(key) or count_params(cfg.model, tok_len)  # grids rarely vary the model
        llm_kw, _ = llm_shape(cfg.model.llm)
        llm_kw.setdefault("vocab_size", tok_len or _default_vocab(cfg.model.llm, llm_kw))
        tokens = prober.tokens(v) if prober else _assumed_tokens(cfg, notes)
        memory = memory_estimate(cfg.model, params, llm_kw, cfg.train.batch_size, tokens.padded_length, dev)
        sized.append((v, params, llm_kw, tokens, memory))
    unknown = [(v, t) for v, _, _, t, _ in sized if step_seconds is None and v.config_hash not in measured]
    probed = _probe_steps(prober, unknown, probe_steps) if probe and unknown else {}

    plans = []
    for v, params, llm_kw, tokens, memory in sized:
        cfg = v.config
        if step_seconds is not None:
            step, source = step_seconds, "given"
        elif v.config_hash in measured:
            step, source = measured[v.config_hash], "earlier run (train/steps_per_second)"
        elif probe:
            step, source = probed[v.name]
        else:
            flops = train_flops_per_token(cfg.model, params, llm_kw, tokens.padded_length) * tokens.per_step
            micro = cfg.train.grad_accum
            step = flops / (dev.peak_flops * dev.mfu) + micro * llm_kw["num_hidden_layers"] * dev.launch_s_per_layer
            source = "assumed (FLOPs at the assumed utilisation + launch floor)"
        eval_s = prober.eval_seconds(v) if probe else _assumed_eval_seconds(cfg, llm_kw, dev, notes)
        checkpoints = (cfg.train_steps - 1) // checkpoint_every if checkpoint_every else 0
        ckpt_s = checkpoints * 12 * params.trainable / DISK_BYTES_PER_S  # weights + two AdamW moments, fp32
        plans.append(VariantPlan(v.name, params, tokens, memory, step, source, step * cfg.train_steps, eval_s,
                                 OVERHEAD_PER_VARIANT_S + ckpt_s, cfg.train.batch_size))
    shared = {"start-up": STARTUP_S, **({"report": REPORT_S} if report else {})}
    if probe:
        shared.update(prober.shared_seconds(variants))
    else:
        shared.update(_assumed_shared_seconds(base, dev, notes, data))
    notes.append(f"start-up {STARTUP_S:g} s and {OVERHEAD_PER_VARIANT_S:g} s per variant (MLflow logging, weights, "
                 "paired tests), from the sweep-scaling benchmark (benchmarks/README.md row 4); report rendering "
                 f"{REPORT_S:g} s and checkpoint writes at {DISK_BYTES_PER_S / 1e6:g} MB/s are assumed")
    if workers > 1:
        notes.append(f"{workers} local workers (`sweep --workers {workers}`): the baseline and the variants go to "
                     "the first free worker; each is timed as if alone (two 1-thread workers on 2 cores each ran "
                     "a step in 0.052 s, one alone in 0.055 s)")
    return Plan(abl.name, dev, plans, shared, eval_set_rows(base), sorted(set(notes), key=notes.index), workers)


def _probe_steps(prober: "Prober", variants: list[tuple[Variant, Tokens]], steps: int) -> dict[str, tuple[float, str]]:
    """Seconds per step of every variant from at most two probes per model/training shape: the
    variants with the fewest and the most padded tokens per step are timed, the others placed on
    the line through them (a step's cost grows with its padded tokens; the grid's data axes only
    change those)."""
    groups: dict[str, list[tuple[Variant, Tokens]]] = {}
    for v, t in variants:
        key = json.dumps([v.config.model.model_dump(mode="json"),
                          v.config.train.model_dump(mode="json", exclude={"steps", "log_every", "lr", "warmup_ratio"})])
        groups.setdefault(key, []).append((v, t))
    out = {}
    for members in groups.values():
        members.sort(key=lambda m: m[1].per_step)
        ends = [members[0]] if members[0][1].per_step == members[-1][1].per_step else [members[0], members[-1]]
        timed = [(t.per_step, prober.train_step(v, steps)) for v, t in ends]
        for v, t in members:
            if len(timed) == 1 or v.name in {e[0].name for e in ends}:
                sec = timed[0][1] if len(timed) == 1 or v.name == ends[0][0].name else timed[1][1]
                out[v.name] = (sec, f"probe ({steps} steps)")
            else:
                (x0, y0), (x1, y1) = timed
                sec = y0 + (y1 - y0) * (t.per_step - x0) / (x1 - x0)
                out[v.name] = (max(sec, min(y0, y1)), "interpolated by tokens/step between 2 probed variants")
    return out


STARTUP_S = 15.0
OVERHEAD_PER_VARIANT_S = 1.5
REPORT_S = 15.0
DISK_BYTES_PER_S = 200e6


def eval_set_rows(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """What `sweep --dry-run` can show about the eval protocol: one row per set."""
    e = cfg.eval
    rows = []
    for s in cfg.eval.sets:
        src = s.source
        where = (f"{src.id}" + (f" [{src.config}]" if getattr(src, "config", None) else "") + f" {src.split}"
                 if isinstance(src, HFSource) else f"{src.kind}:{getattr(src, 'split', getattr(src, 'path', ''))}")
        first = isinstance(src, HFSource) and src.streaming
        rows.append({"set": s.name, "source": where, "language": s.language or "",
                     "rows": (f"first {s.max_samples}" if first else str(s.max_samples)) if s.max_samples else "all",
                     "long-form": f"{e.long_form} over {e.window_seconds:g} s windows",
                     "reference": "; ".join(f"{r.system} {r.wer:g}%" for r in s.reference)})
    return rows


# ------------------------------------------------------------------ assumptions (hub data, GPU)
def _assumed_tokens(cfg: ExperimentConfig, notes: list[str]) -> Tokens:
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


def _assumed_eval_seconds(cfg: ExperimentConfig, llm_kw: dict[str, Any], dev: Device, notes: list[str]) -> float:
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


def _assumed_shared_seconds(cfg: ExperimentConfig, dev: Device, notes: list[str],
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


def _measured_step_seconds(tracking_uri: str, experiment: str, variants: list[Variant]) -> dict[str, float]:
    """config hash -> median seconds per step of earlier finished runs of that variant."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        df = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.role = 'variant'",
                                output_format="pandas")
    except Exception as e:  # noqa: BLE001 - no store, no experiment: nothing measured
        log.info("plan: no earlier runs read from %s (%s)", tracking_uri, str(e).splitlines()[0][:120])
        return {}
    col = "metrics.train/steps_per_second"
    if df.empty or col not in df or "tags.config_hash" not in df:
        return {}
    wanted = {v.config_hash for v in variants}
    rates = df[df["tags.config_hash"].isin(wanted) & (df[col] > 0)].groupby("tags.config_hash")[col].median()
    return {k: 1.0 / r for k, r in rates.items()}


# ------------------------------------------------------------------ local data and probes
@dataclass
class LocalData:
    """The variants' training items and text pool, and the eval sets, read from local manifests."""

    train: list
    text: list
    eval_sets: list[tuple[Any, list]]  # (EvalSet, items)
    text_sets: list[tuple[Any, list]]

    @staticmethod
    def available(cfg: ExperimentConfig) -> bool:
        sources = [s.source for s in cfg.data.train_sets] + [s.source for s in cfg.eval.sets]
        sources += [cfg.data.text_pool.source] if cfg.data.text_pool else []
        return all(src.kind in ("synth", "manifest") for src in sources)

    @classmethod
    def load(cls, cfg: ExperimentConfig) -> "LocalData":
        from borealis_eval.config import TextPool
        from borealis_eval.data.sources import load_audio_set, load_text_pool

        train = [it for s in cfg.data.train_sets for it in load_audio_set(s)]
        text = load_text_pool(cfg.data.text_pool) if cfg.data.text_pool else []
        evals = [(s, load_audio_set(s)) for s in cfg.eval.sets]
        texts = [(t, load_text_pool(TextPool(source=t.source, max_samples=t.max_samples))) for t in cfg.eval.text_sets]
        return cls(train, text, evals, texts)


def _audio_frames(seconds: float) -> int:
    from borealis_eval.models.encoder import encoder_frames

    return encoder_frames(int(seconds * SAMPLE_RATE))


class Prober:
    """Measures on this machine what the plan needs: seconds per training step of each variant, per
    decoding step, per encoded and per baseline-decoded second of audio."""

    def __init__(self, base: ExperimentConfig, data: LocalData, device: Device, notes: list[str], timing: bool = True,
                 encode_threads: int | None = None):
        self.base, self.data, self.device, self.notes = base, data, device, notes
        self._tok: dict[str, Any] = {}
        self._decode_fit: dict[str, tuple[float, float]] = {}
        self.encode_threads = encode_threads  # local workers: the sweep encodes with all their threads
        enc_kw, _ = encoder_shape(base.model.encoder)
        self.enc_dim = enc_kw["d_model"]
        if not timing:
            return
        if base.train.threads:
            torch.set_num_threads(base.train.threads)
        notes.append("time probed on this machine (training steps of each variant on its real data mix with "
                     "random features of the real lengths; timed decoding, encoding and baseline batches); "
                     "assumes cold feature and decode caches except where the plan found cache entries")

    # ---- tokenizer and training stream: the functions the study's resources use (resources.py, data/mixer.py)
    def tokenizer(self, llm: LLMConfig):
        from borealis_eval.resources import tokenizer_for

        return tokenizer_for(llm, self.data.train, self.data.text, self._tok)

    def stream(self, v: Variant) -> list:
        from borealis_eval.data.mixer import mix_for

        return mix_for(v, self.data.train, self.data.text).examples

    def tokenizer_len(self, llm: LLMConfig) -> int:
        return len(self.tokenizer(llm))

    def _model(self, v: Variant):
        """The variant's model as the recipe builds it (one per variant, reused by every probe)."""
        from borealis_eval.models.speech_lm import SpeechLM

        if getattr(self, "_cached", (None,))[0] != v.name:
            torch.manual_seed(v.config.seed)
            model = SpeechLM.from_config(v.config.model, self.enc_dim, self.tokenizer(v.config.model.llm), device="cpu")
            self._cached = (v.name, model)
        return self._cached[1]

    def _examples(self, v: Variant, n: int) -> list:
        """The first `n` examples of the variant's training stream, features random at their real length."""
        from borealis_eval.data.sources import AudioItem
        from borealis_eval.models.speech_lm import Example

        g = torch.Generator().manual_seed(0)
        out = []
        for e in self.stream(v)[:n]:
            if isinstance(e, AudioItem):
                frames = _audio_frames(e.duration or 3.0)
                out.append(Example(answer=e.text, features=torch.randn(frames, self.enc_dim, generator=g).half(), id=e.id))
            else:
                out.append(Example(answer=e.answer, instruction=e.instruction, id=e.id))
        return out

    def tokens(self, v: Variant) -> Tokens:
        from borealis_eval.data.sources import AudioItem
        from borealis_eval.models.adapter import stacked_length

        cfg = v.config
        model = self._model(v)
        before, after = model._prompt_ids(f"<AUDIO>\n{cfg.model.prompt}")
        stream = self.stream(v)
        sample = stream[: 64 * cfg.train.batch_size]
        tok = model.tok
        lengths, audio, answers, n_text = [], [], [], 0
        for e in sample:
            ans = len(tok(e.answer if not isinstance(e, AudioItem) else e.text, add_special_tokens=False)["input_ids"]) + 1
            if isinstance(e, AudioItem):
                a = stacked_length(_audio_frames(e.duration or 3.0), cfg.model.adapter.downsample_k)
                audio.append(a)
                answers.append(ans)
                lengths.append(len(before) + len(after) + 2 + a + ans)
            else:
                n_text += 1
                lengths.append(len(model._prompt_ids(e.instruction)[0]) + ans)
        b = cfg.train.batch_size
        padded = float(np.mean([max(lengths[s : s + b]) for s in range(0, len(lengths) - b + 1, b)]))
        return Tokens(len(before) + len(after) + 2, float(np.mean(audio or [0])), float(np.mean(answers or [0])),
                      padded, b * cfg.train.grad_accum * padded, n_text / max(1, len(sample)))

    # ---- training
    def train_step(self, v: Variant, steps: int) -> float:
        """Seconds per optimizer step: `train()` on the variant's first batches (2 warm-up steps first)."""
        from borealis_eval.train import train

        cfg = v.config
        model = self._model(v)
        need = (steps + 2) * cfg.train.batch_size * cfg.train.grad_accum
        examples = self._examples(v, need)
        train(model, examples, cfg.train.model_copy(update={"steps": 2}), cfg.seed, progress=False)
        r = train(model, examples, cfg.train.model_copy(update={"steps": steps}), cfg.seed, progress=False)
        return r.seconds / steps

    # ---- decoding with the variant's model (untrained here: forced to emit a set number of tokens)
    def _decode_cost(self, v: Variant) -> tuple[float, float]:
        """(seconds per batch, seconds per generated-token step) for a full eval batch, fitted on two lengths."""
        from borealis_eval.models.speech_lm import Example

        cfg = v.config
        shape = json.dumps([cfg.model.model_dump(mode="json"), cfg.eval.batch_size])
        if shape in self._decode_fit:
            return self._decode_fit[shape]
        model = self._model(v).eval()
        secs = [it.duration or 3.0 for _, items in self.data.eval_sets for it in items]
        frames = _audio_frames(min(float(np.median(secs)), cfg.eval.window_seconds))
        g = torch.Generator().manual_seed(1)
        batch = [Example(answer="", features=torch.randn(frames, self.enc_dim, generator=g)) for _ in range(cfg.eval.batch_size)]
        times = []
        for n in (4, 4, 24):  # the first call warms up
            model.llm.generation_config.min_new_tokens = n
            t = time.perf_counter()
            model.generate(batch, max_new_tokens=n)
            times.append(time.perf_counter() - t)
        model.llm.generation_config.min_new_tokens = None
        per_token = max(0.0, (times[2] - times[1]) / 20)
        fit = (max(0.0, times[1] - 4 * per_token), per_token)
        self._decode_fit[shape] = fit
        return fit

    def eval_seconds(self, v: Variant) -> float:
        """Every eval set decoded as `decode_set` does (duration-sorted batches, one untimed warm-up batch
        of two clips, windows per the long-form mode) plus the text sets; a trained model is assumed to
        stop after the reference transcript (+ end token), within the runaway cap."""
        from borealis_eval.decode import token_cap

        cfg = v.config
        per_batch, per_token = self._decode_cost(v)
        tok = self.tokenizer(cfg.model.llm)
        total = 0.0
        for _, items in self.data.eval_sets:
            order = sorted(items, key=lambda it: -(it.duration or 0))
            batches = [order[s : s + cfg.eval.batch_size] for s in range(0, len(order), cfg.eval.batch_size)]
            for b in batches + ([batches[-1][:2]] if batches else []):
                n_win = [max(1, math.ceil((it.duration or 0) / cfg.eval.window_seconds)) for it in b]
                refs = [len(tok(it.text, add_special_tokens=False)["input_ids"]) + 1 for it in b]
                if cfg.eval.long_form == "concat":
                    cap = token_cap(cfg, max(it.duration or 0 for it in b), windows=max(n_win))
                    calls = [(len(b), min(cap, max(refs)))]
                else:  # per window: one call over all windows, each window holding its share of the text
                    longest = min(cfg.eval.window_seconds, max(it.duration or 0 for it in b))
                    share = max(r / w for r, w in zip(refs, n_win))
                    calls = [(sum(n_win), min(token_cap(cfg, longest), math.ceil(share)))]
                for n_ex, steps in calls:
                    scale = n_ex / cfg.eval.batch_size
                    total += scale * (per_batch + steps * per_token)
        for t, items in self.data.text_sets:
            for s in range(0, len(items), cfg.eval.batch_size):
                chunk = items[s : s + cfg.eval.batch_size]
                steps = min(cfg.eval.max_new_tokens,
                            max(len(tok(it.answer, add_special_tokens=False)["input_ids"]) + 1 for it in chunk))
                total += len(chunk) / cfg.eval.batch_size * (per_batch + steps * per_token)
        return total

    # ---- once per sweep: encoding the feature cache, the Whisper baseline
    def shared_seconds(self, variants: list[Variant]) -> dict[str, float]:
        from borealis_eval.data.features import FeatureCache, audio_hash
        from borealis_eval.data.sources import AudioItem, load_waves
        from borealis_eval.audio import windows
        from borealis_eval.evaluate.decode_cache import DecodeCache
        from borealis_eval.models.encoder import FrozenWhisperEncoder
        from borealis_eval.decode import decode_params as _decode_params

        base = self.base
        needed = {}
        for v in variants:
            for e in self.stream(v):
                if isinstance(e, AudioItem):
                    needed[e.id] = e
        encoder = FrozenWhisperEncoder(base.model.encoder)
        cache = FeatureCache(encoder.identity.key)
        waves = load_waves(list(needed.values()), [], "train")
        for spec, items in self.data.eval_sets:
            for it in items:
                for j, w in enumerate(windows(it.load(), base.eval.window_seconds)):
                    waves[f"{spec.name}/{it.id}#{j}"] = w
        missing = [w for w in waves.values() if not cache.path(audio_hash(w)).is_file()]
        padded = sum(encoder.padded_length(len(w)) for w in missing) / SAMPLE_RATE
        out = {"encoding": 0.0, "baseline": 0.0}
        if missing:
            sample = sorted(missing, key=len)[len(missing) // 2 :][: base.eval.batch_size]
            threads = torch.get_num_threads()
            torch.set_num_threads(self.encode_threads or threads)  # as the sweep encodes (resources.py)
            encoder.encode_many(sample[:2])  # warm-up
            t = time.perf_counter()
            encoder.encode_many(sample, base.eval.batch_size)
            rate = (time.perf_counter() - t) / (sum(encoder.padded_length(len(w)) for w in sample) / SAMPLE_RATE)
            torch.set_num_threads(threads)
            out["encoding"] = rate * padded
        self.notes.append(f"feature cache: {len(missing)} of {len(waves)} clips/windows to encode")
        if base.eval.baseline.enabled:
            out["baseline"] = self._baseline_seconds(DecodeCache(), _decode_params(base))
        del encoder
        return out

    def _baseline_seconds(self, decodes, params: dict) -> float:
        """Whisper decoding of every eval set not already in the decode cache: a timed batch of real
        clips gives seconds per clip (the padded 30 s encoder dominates), times the clips."""
        from borealis_eval.data.features import audio_hash
        from borealis_eval.models.baseline import WhisperTranscriber
        from borealis_eval.decode import token_cap

        base = self.base
        ref = base.eval.baseline.ref
        todo = []
        for spec, items in self.data.eval_sets:
            waves = {it.id: it.load() for it in items}
            key = decodes.key(f"whisper:{ref}", spec.name, items, [audio_hash(waves[it.id]) for it in items], params)
            if decodes.get(key) is None:
                todo.append((spec, items, waves))
        self.notes.append(f"baseline decode cache: {len(self.data.eval_sets) - len(todo)} of "
                          f"{len(self.data.eval_sets)} eval sets already decoded")
        if not todo:
            return 0.0
        whisper = WhisperTranscriber(ref)
        bs = base.eval.baseline.batch_size
        spec, items, waves = todo[0]
        sample = [waves[it.id] for it in sorted(items, key=lambda it: it.duration or 0)][len(items) // 2 :][:bs]
        language = spec.language or items[0].language
        whisper.transcribe(sample[:1], language, base.eval.num_beams, 32)  # warm-up
        t = time.perf_counter()
        whisper.transcribe(sample, language, base.eval.num_beams, token_cap(base, 30.0))
        per_clip = (time.perf_counter() - t) / len(sample)
        clips = sum(max(1, math.ceil(len(w) / SAMPLE_RATE / 30)) for _, _, ws in todo for w in ws.values())
        warmups = 2 * len(todo)  # decode_set's untimed first batch
        return per_clip * (clips + warmups)


def render(p: Plan) -> str:
    """Plain-text plan: summary, per-variant table, eval protocol, assumptions."""
    lines = [p.summary(), ""]
    rows = p.rows()
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines.append("  ".join(c.ljust(widths[c]) for c in cols))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    v0 = p.variants[0] if p.variants else None
    if v0:
        m = v0.memory
        lines += ["", f"memory of {v0.name}: weights {m.weights / 2**30:.1f} GiB, gradients {m.gradients / 2**30:.2f}, "
                  f"AdamW {m.optimizer / 2**30:.2f}, activations {m.activations / 2**30:.1f} (micro-batch padded to "
                  f"{v0.tokens.padded_length:.0f} tokens; at most {p.max_length(v0):,} tokens fit); {Memory.FORMULA}",
                  f"parameters: {v0.params.source}; step time: {v0.step_source}"]
    lines += ["", "eval sets:"] + [f"  {r['set']}: {r['source']}, {r['rows']} rows, {r['long-form']}"
                                    + (f"; published: {r['reference']}" if r["reference"] else "") for r in p.eval_sets]
    lines += ["", "assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)
