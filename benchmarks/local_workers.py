"""Two 1-thread workers vs one 2-thread worker on a 2-core machine: training steps per second.

Why the CPU profile sets `train.threads: 1` and `make demo` runs `sweep --workers 2`. Each side
trains the CPU profile's model with the harness's own `train()` on the same cached features (a
fresh process per run, features encoded once beforehand):
- `one`: one process with 2 torch threads;
- `two`: two processes with 1 torch thread each, started together.
Throughput = steps per second summed over the processes that run at once. Interleaved A B A B;
the ratio is the median two/one. Peak RSS is per process.

    .venv/bin/python -m benchmarks.local_workers [--steps 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import MARK, RESULTS, ROOT, machine

CLIPS = 400


def side_train(threads: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from benchmarks.common import cached_training, hwm_mb, reset_peak_rss
    from borealis_eval.models.speech_lm import Example
    from borealis_eval.train import train

    cfg, model, items, store = cached_training(CLIPS)
    examples = [Example(answer=it.text, id=it.id, feature_key=it.id) for it in items]
    reset_peak_rss()
    r = train(model, examples, cfg.train.model_copy(update={"steps": steps, "log_every": steps, "threads": threads}),
              seed=0, progress=False, features=store)
    return {"step_s": r.seconds / steps, "last_loss": r.last_loss, "peak_rss_mb": hwm_mb()}


def _start(threads: int, steps: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "benchmarks._side", "local_workers", "train",
           json.dumps({"threads": threads, "steps": steps})]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _result(p: subprocess.Popen) -> dict:
    out = p.communicate()[0]
    line = [ln for ln in out.splitlines() if ln.startswith(MARK)]
    if p.returncode or not line:
        raise RuntimeError(f"side failed (rc {p.returncode})")
    return json.loads(line[-1][len(MARK):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    _result(_start(2, 2))  # encode the clips into the cache once, outside the timing
    runs: dict[str, list] = {"one": [], "two": []}
    for _ in range(a.repeats):
        runs["one"].append([_result(_start(2, a.steps))])
        procs = [_start(1, a.steps) for _ in range(2)]
        runs["two"].append([_result(p) for p in procs])
    rate = {k: [sum(1 / r["step_s"] for r in rep) for rep in v] for k, v in runs.items()}
    ratios = [b / a_ for a_, b in zip(rate["one"], rate["two"])]
    out = {"benchmark": "local_workers", "steps": a.steps, "repeats": a.repeats,
           "steps_per_s": {k: [round(x, 2) for x in v] for k, v in rate.items()},
           "ratio_median": statistics.median(ratios), "ratios": ratios,
           "peak_rss_mb": {k: max(r["peak_rss_mb"] for rep in v for r in rep) for k, v in runs.items()},
           "runs": runs, "command": "python -m benchmarks.local_workers " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local_workers.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"one 2-thread worker: {out['steps_per_s']['one']} steps/s; two 1-thread workers: "
          f"{out['steps_per_s']['two']} steps/s (sum); ratio {out['ratio_median']:.2f}x; peak RSS per process "
          f"{out['peak_rss_mb']['one']:.0f} / {out['peak_rss_mb']['two']:.0f} MB")


if __name__ == "__main__":
    main()
