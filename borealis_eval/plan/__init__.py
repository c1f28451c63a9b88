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

`power_plan(path, cost)` adds the seed plan: per eval set, the effect the file's seeds detect at
80% power and the seeds per cell that the margin (or a target) needs, with their cost; the
variance from earlier runs (the report's estimators) or a stated prior (plan/power.py).

One module per concern: devices.py (the machines), model_cost.py (parameters, tokens, memory,
FLOPs from shapes), probe.py (measured here), history.py (earlier runs), assumed.py (stated
assumptions), estimate.py (the plan itself), power.py (seeds and power), formats.py and render.py
(text).
"""

from borealis_eval.plan.devices import CPU, DEVICES, H200, Device
from borealis_eval.plan.estimate import Plan, VariantPlan, default_device, plan
from borealis_eval.plan.model_cost import (KNOWN_SHAPES, Memory, ParamCount, Tokens, _VocabOnly, count_params,
                                           encoder_shape, llm_shape, memory_estimate, train_flops_per_token)
from borealis_eval.plan.probe import LocalData, Prober, probe_step_seconds
from borealis_eval.plan.formats import eval_set_rows
from borealis_eval.plan.power import PowerPlan, power_plan
from borealis_eval.plan.render import render, render_power

__all__ = ["CPU", "DEVICES", "H200", "Device", "Plan", "VariantPlan", "default_device", "plan", "KNOWN_SHAPES",
           "Memory", "ParamCount", "Tokens", "_VocabOnly", "count_params", "encoder_shape", "llm_shape",
           "memory_estimate", "train_flops_per_token", "LocalData", "Prober", "probe_step_seconds", "eval_set_rows",
           "render", "PowerPlan", "power_plan", "render_power"]
