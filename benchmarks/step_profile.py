"""Where a CPU-profile training step spends its time (torch.profiler + a phase breakdown).

    python -m benchmarks.step_profile [--steps 30] [--threads 1] [--batch-size 8] [--bf16]
    python -m benchmarks.step_profile --code DIR --no-fused     # the package exported from a git ref

Same model and batches as `benchmarks.variant_cost` (the sweep's own setup). Phases are
timed with perf_counter around the pieces of `train()`'s step, in the order it runs them:
batch assembly (`SpeechLM.batch`: token layout, embed, adapter, splice, pad), the LLM forward and loss,
backward, gradient clipping, AdamW + scheduler. Then torch.profiler's operator table over the
same steps (self and total CPU time per operator, number of operator calls per step).
"""

from __future__ import annotations

import argparse
import math
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="language_mix=ru50_en50__text_fraction=0.15")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (train.precision: bf16)")
    p.add_argument("--no-fused", action="store_true", help="for-loop AdamW (train() before it used fused on CPU)")
    p.add_argument("--code", help="import borealis_eval from this folder (e.g. `git archive REF borealis_eval`)")
    a = p.parse_args()
    if a.code:
        sys.path.insert(0, a.code)
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from benchmarks.variant_cost import setup

    cfg, res, model, examples = setup(a.variant, batch_size=a.batch_size, steps=a.steps * 3, threads=a.threads,
                                      sets=[])
    tc = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=not a.no_fused or None)
    # SpeechLM.loss (labelled positions only) where the code has it, else the LLM's own loss as before
    loss_of = getattr(model, "loss", None) or (lambda e, m, l: model.llm(inputs_embeds=e, attention_mask=m, labels=l).loss)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(tc.warmup_ratio * tc.steps), tc.steps)
    model.train()
    if a.bf16:  # as train() does under bf16 autocast on CPU (train.training_attention)
        model.llm.set_attn_implementation("eager")
    bs = tc.batch_size
    batches = [examples[i : i + bs] for i in range(0, len(examples) - bs + 1, bs)]

    phases = {"batch assembly": 0.0, "llm forward+loss": 0.0, "backward": 0.0, "clip_grad_norm": 0.0,
              "optimizer+sched": 0.0}

    def step(batch, timed: bool):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            embeds, mask, labels = model.batch(batch)
            t1 = time.perf_counter()
            loss = loss_of(embeds, mask, labels)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
        t4 = time.perf_counter()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if timed:
            for k, d in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                phases[k] += d
        return int(mask.sum()), int((labels != -100).sum())

    for b in batches[:3]:
        step(b, False)
    n_in = n_ans = 0
    t = time.perf_counter()
    for b in batches[3 : 3 + a.steps]:
        i, j = step(b, True)
        n_in, n_ans = n_in + i, n_ans + j
    total = time.perf_counter() - t
    print(f"threads {torch.get_num_threads()}, batch {bs}, {a.steps} steps: {total / a.steps:.4f} s/step; "
          f"{n_in / a.steps:.0f} input tokens/step (padded {bs} x ~{n_in / a.steps / bs:.0f}), "
          f"{n_ans / a.steps:.0f} answer tokens/step")
    for k, d in phases.items():
        print(f"  {k:20} {d / a.steps * 1000:8.1f} ms/step  {d / total:6.1%}")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for b in batches[3 + a.steps : 3 + 2 * a.steps]:
            step(b, False)
        prof_total = time.perf_counter() - t
    ka = prof.key_averages()
    print(f"\nprofiled {a.steps} steps: {prof_total / a.steps:.4f} s/step under the profiler; "
          f"{sum(e.count for e in ka) / a.steps:.0f} operator calls per step")
    print(ka.table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
