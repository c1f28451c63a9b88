"""The plan of a sweep: per variant and for the whole study, from the best source available
(given, earlier runs, a probe, else stated assumptions; see the package docstring)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from borealis_eval.config import Variant, load_ablation
from borealis_eval.config.labels import cell_of
from borealis_eval.errors import UsageError
from borealis_eval.plan.assumed import assumed_eval_seconds, assumed_shared_seconds, assumed_tokens
from borealis_eval.plan.devices import CPU, DEVICES, H200, Device
from borealis_eval.plan.history import measured_step_seconds
from borealis_eval.plan.model_cost import (Memory, ParamCount, Tokens, count_params, default_vocab, llm_shape,
                                           memory_estimate, train_flops_per_token)
from borealis_eval.plan.probe import LocalData, Prober, probe_align_seconds, probe_step_seconds
from borealis_eval.plan.formats import eval_set_rows, fmt_count, fmt_duration
from borealis_eval.workers import encode_threads

STARTUP_S = 15.0
OVERHEAD_PER_VARIANT_S = 1.5
REPORT_S = 15.0
DISK_BYTES_PER_S = 200e6


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
    align_seconds: float = 0.0  # the alignment phase before training (`train.align`), 0 without one
    align_source: str = ""

    @property
    def seconds(self) -> float:
        return self.align_seconds + self.train_seconds + self.eval_seconds + self.overhead_seconds


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
        return self._wall([v.seconds for v in self.variants])

    def _wall(self, variant_seconds: list[float]) -> float:
        units = [s for k, s in self.shared_seconds.items() if k == "baseline"] + variant_seconds
        fixed = sum(s for k, s in self.shared_seconds.items() if k != "baseline")
        free = [0.0] * max(1, self.workers)
        for u in units:
            free[free.index(min(free))] += u
        return fixed + max(free)

    def seconds_with_seeds(self, seeds: int) -> float:
        """Wall time of the same study with ``seeds`` seeds per cell: each cell's variants cost what
        the file's seeds of that cell cost (seeds change initialisation and data order, not the step)."""
        cells: dict[str, list[float]] = {}
        for v in self.variants:
            cells.setdefault(cell_of(v.name), []).append(v.seconds)
        return self._wall([costs[i % len(costs)] for costs in cells.values() for i in range(seeds)])

    @property
    def device_hours(self) -> float:
        return self.seconds / 3600

    @property
    def hours_unit(self) -> str:
        """What `device_hours` counts: GPU-hours, or CPU-hours of this machine (wall time with `workers`)."""
        unit = "GPU-hours" if self.device.kind == "cuda" else "CPU-hours"
        return unit + (f" with {self.workers} local workers" if self.workers > 1 else "")

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
        aligns = any(v.align_source for v in self.variants)
        return [{"variant": v.name, "params": fmt_count(v.params.total), "trainable": fmt_count(v.params.trainable),
                 "tokens/step": f"{v.tokens.per_step:,.0f}", "peak memory": f"{v.memory.total / 2**30:.1f} GiB"
                 + ("" if self.fits(v) else " (too big)"), "s/step": f"{v.step_seconds:.3g}" if t else "-",
                 **({"align": fmt_duration(v.align_seconds) if t else "-"} if aligns else {}),
                 "train": fmt_duration(v.train_seconds) if t else "-",
                 "eval": fmt_duration(v.eval_seconds) if t else "-",
                 "total": fmt_duration(v.seconds) if t else "-"}
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
        shared = ", ".join(f"{k} {fmt_duration(s)}" for k, s in self.shared_seconds.items())
        return (f"{self.ablation}: {len(self.variants)} variants, {self.device_hours:.2f} {self.hours_unit} "
                f"({fmt_duration(self.seconds)}; shared: {shared})")

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
                              "align_seconds": v.align_seconds, "align_source": v.align_source,
                              "train_seconds": v.train_seconds, "eval_seconds": v.eval_seconds,
                              "overhead_seconds": v.overhead_seconds} for v in self.variants]}


def _align_seconds(cfg, params: ParamCount, tokens: Tokens, dev: Device,
                   probed: tuple[float, str] | None) -> tuple[float, str]:
    """The alignment phase's seconds and where they came from: probed, else the adapter's FLOPs (forward
    and backward of its MLP and CTC head over a batch's audio rows; no LLM runs) at the device's assumed
    utilisation plus a launch floor per step. (0, "") without `train.align`."""
    a = cfg.train.align
    if a is None:
        return 0.0, ""
    if probed is not None:
        return probed[0] * a.steps, probed[1]
    flops = 6 * params.adapter * a.batch_size * max(tokens.audio, 1.0)
    step = flops / (dev.peak_flops * dev.mfu) + dev.launch_s_per_layer
    return step * a.steps, "assumed (adapter FLOPs at the assumed utilisation + launch floor)"


def default_device(variants: list[Variant]) -> Device:
    """CPU profiles pin `train.threads`; anything else is planned for an H200."""
    return CPU if variants[0].config.train.threads else H200


def plan(path: str | Path, device: Device | str | None = None, step_seconds: float | None = None,
         probe: bool | None = None, probe_steps: int = 12, tracking_uri: str | None = None,
         checkpoint_every: int = 50, report: bool = True, overrides: dict | None = None, workers: int = 1,
         experiment: str | None = None) -> Plan:
    """The cost plan of an ablation file (see the module docstring). `probe` defaults to True on a
    CPU device with local data; `tracking_uri` enables reading step times of earlier runs;
    `checkpoint_every` and `report` as the sweep will be run (`--checkpoint-every`, `--no-report`);
    `experiment`: where the earlier runs are (default: the file's own name)."""
    abl, variants = load_ablation(path, overrides)
    dev = DEVICES[device] if isinstance(device, str) else device or default_device(variants)
    base = variants[0].config
    data = LocalData.load(base) if LocalData.available(base) else None
    probe = (dev.kind == "cpu" and data is not None) if probe is None else probe
    if probe and data is None:
        raise UsageError("a probe needs local data (synth or manifest sources); this file reads hub datasets")
    notes: list[str] = [f"device {dev.describe()}"]
    measured = measured_step_seconds(tracking_uri, experiment or abl.name, variants) if tracking_uri else {}
    prober = (Prober(base, data, dev, notes, timing=probe, encode_threads=encode_threads(workers, base.train.threads))
              if data is not None else None)  # local data: real tokens

    sized, counted = [], {}
    for v in variants:
        cfg = v.config
        tok_len = prober.tokenizer_len(cfg.model) if prober else None
        key = json.dumps([cfg.model.model_dump(mode="json"), tok_len])
        params = counted[key] = counted.get(key) or count_params(cfg.model, tok_len)  # grids rarely vary the model
        llm_kw, _ = llm_shape(cfg.model.llm)
        llm_kw.setdefault("vocab_size", tok_len or default_vocab(cfg.model.llm, llm_kw))
        tokens = prober.tokens(v) if prober else assumed_tokens(cfg, notes)
        memory = memory_estimate(cfg.model, params, llm_kw, cfg.train.batch_size, tokens.padded_length, dev)
        sized.append((v, params, llm_kw, tokens, memory))
    unknown = [(v, t) for v, _, _, t, _ in sized if step_seconds is None and v.config_hash not in measured]
    # the alignment phase first: a probed LM step of an `align.freeze` variant fixes its adapter
    aligned = probe_align_seconds(prober, [v for v, *_ in sized], probe_steps) if probe else {}
    probed = probe_step_seconds(prober, unknown, probe_steps) if probe and unknown else {}

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
        eval_s = prober.eval_seconds(v) if probe else assumed_eval_seconds(cfg, llm_kw, dev, notes)
        checkpoints = (cfg.train_steps - 1) // checkpoint_every if checkpoint_every else 0
        ckpt_s = checkpoints * 12 * params.trainable / DISK_BYTES_PER_S  # weights + two AdamW moments, fp32
        align_s, align_src = _align_seconds(cfg, params, tokens, dev, aligned.get(v.name))
        plans.append(VariantPlan(v.name, params, tokens, memory, step, source, step * cfg.train_steps, eval_s,
                                 OVERHEAD_PER_VARIANT_S + ckpt_s, cfg.train.batch_size, align_s, align_src))
    shared = {"start-up": STARTUP_S, **({"report": REPORT_S} if report else {})}
    if probe:
        shared.update(prober.shared_seconds(variants))
    else:
        shared.update(assumed_shared_seconds(base, dev, notes, data))
    notes.append(f"start-up {STARTUP_S:g} s and {OVERHEAD_PER_VARIANT_S:g} s per variant (MLflow logging, weights, "
                 "paired tests), from the sweep-scaling benchmark (benchmarks/README.md row 4); report rendering "
                 f"{REPORT_S:g} s and checkpoint writes at {DISK_BYTES_PER_S / 1e6:g} MB/s are assumed")
    if workers > 1:
        notes.append(f"{workers} local workers (`sweep --workers {workers}`): the baseline and the variants go to "
                     "the first free worker; each is timed as if alone (two 1-thread workers on 2 cores each ran "
                     "a step in 0.052 s, one alone in 0.055 s)")
    return Plan(abl.name, dev, plans, shared, eval_set_rows(base), sorted(set(notes), key=notes.index), workers)
