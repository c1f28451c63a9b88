"""Run the benchmarks: `python -m benchmarks.run [--only NAME[,NAME]] [--quick] [--out DIR]`.

Each benchmark measures two sides in the same run and prints their ratio; results go to
`<out>/<name>.json` (default benchmarks/results/) and, for the default folder, the table in
benchmarks/README.md is rebuilt from every JSON result there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, machine

BENCHMARKS = ["baseline_decode", "speechlm_decode", "train_cache", "sweep_scaling", "tracking_overhead",
              "train_augment", "feature_streaming"]
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def command() -> str:
    """The command line that produced a result, with the BENCH_* settings it ran under."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return f"{env + ' ' if env else ''}.venv/bin/python -m benchmarks.run {args}".strip()


def run_one(name: str, quick: bool, out: Path) -> dict:
    mod = importlib.import_module(f"benchmarks.{name}")
    t = time.perf_counter()
    result = mod.run(quick=quick)
    result = {"name": name, "title": mod.TITLE, **result, "quick": quick, "seconds": round(time.perf_counter() - t, 1),
              "command": command(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine()}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(out / f"{name}.json")
    return result


def verdict(r: dict) -> str:
    if r.get("target") is None:
        return "no target"
    target = f"< {r['target']:.0%}" if r.get("lower_is_better") else f">= {r['target']:g}x"
    if r.get("quick"):
        return f"not judged (quick sizes; target {target})"
    return f"{'met' if r['met'] else 'MISSED'} (target {target})"


def fmt_ratio(r: dict) -> str:
    if r.get("lower_is_better"):
        return f"{r['ratio']:.2%}"
    return f"{r['ratio']:.2f}x"


def _side_cell(name: str, s: dict, keys: list[str]) -> str:
    t = ", ".join(f"{k} {s[k]:.4g}" for k in keys if k in s)
    if "peak_rss_increase_mb" in s:
        return f"{name}: {t}, peak RSS +{s['peak_rss_increase_mb']:.0f} MB next to the harness (same process)"
    return f"{name}: {t}, peak RSS {s.get('peak_rss_mb', float('nan')):.0f} MB"


def _gpu_rows(out: Path, first: int) -> list[str]:
    """The GPU checks (run by hand on a lent GPU: `benchmarks/gpu_check.py`, `gpu_harness_check.py`)."""
    rows = []
    g = out / "gpu_check.json"
    if g.is_file():
        r = json.loads(g.read_text())
        rows.append(f"| {first} | GPU check: bf16 train step + decode, whisper-base-sized encoder + "
                    f"{r['llm_params'] / 1e6:.0f}M Qwen3 (vocab 151,936), random init (benchmarks/gpu_check.py) | "
                    f"{r['train_step_cached_s'] / r['train_step_with_encoder_s']:.2f}<br>cached / with-encoder step "
                    f"time | no target | step {r['train_step_cached_s']:.3f} s cached, {r['train_step_with_encoder_s']:.3f}"
                    f" s with the encoder (batch {r['train_batch']} x {r['audio_seconds_per_clip']:g} s); decode RTFx "
                    f"{r['decode_rtfx']:.0f} (batch {r['decode_batch']}, {r['decode_new_tokens']} new tokens); peak GPU "
                    f"memory {r['peak_gpu_mem_gib']} GiB | encoder {r['encoder_share_of_step']:.0%} of a step | "
                    f"`python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json` | {r['date']} | {r['device']}, "
                    f"torch {r['torch']} |")
    else:
        rows.append(f"| {first} | GPU check (benchmarks/gpu_check.py) | not run | no GPU lent | | | "
                    "`python benchmarks/gpu_check.py` | | |")
    for i, name in enumerate(("gpu_harness.json", "gpu_harness_lora.json"), first + 1):
        h = out / name
        if not h.is_file():
            continue
        r = json.loads(h.read_text())
        mode = r.get("mode", "full")
        rows.append(f"| {i} | GPU harness path ({mode}): the project's encoder, SpeechLM, train() (bf16 autocast), "
                    f"checkpoint + resume, generate() on CUDA; {r['llm_params_m']:.0f}M Qwen3 "
                    f"({r.get('llm_weight_dtype', 'torch.float32').removeprefix('torch.')} weights, "
                    f"{r.get('trainable_params_m', r['llm_params_m']):g}M trainable), vocab 1,500 "
                    f"(benchmarks/gpu_harness_check.py{' --lora' if mode == 'lora' else ''}) | "
                    f"{'ok' if r['ok'] else 'FAILED'} | no target | train() "
                    f"{r['step_s']:.3f} s/step (loss {r['first_loss']:.2f} -> {r['last_loss']:.2f} in {r['steps']} "
                    f"steps); checkpoint {r['checkpoint_gib']} GiB, resumed at step {r['resumed_from']}; decode "
                    f"{r['decode_tokens_per_s']:.0f} tok/s (batch {r['decode_batch']}); peak GPU memory "
                    f"{r.get('peak_gpu_mem_gib')} GiB | 4 steps with 2 checkpoints "
                    f"{r['train_4_steps_with_2_checkpoints_s']:.1f} s | `python3 benchmarks/gpu_harness_check.py"
                    f"{' --lora' if mode == 'lora' else ''} --out $OUT/{name}` | {r.get('date', '')} | "
                    f"{r['device']}, torch {r['torch']} |")
    return rows


def render_readme(out: Path = RESULTS) -> None:
    rows = ["| # | benchmark | ratio | verdict | sides (timing, peak RSS) | details | command | date | machine |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, name in enumerate(BENCHMARKS, 1):
        p = out / f"{name}.json"
        if not p.is_file():
            rows.append(f"| {i} | {name} | not run | | | | `.venv/bin/python -m benchmarks.run --only {name}` | | |")
            continue
        r = json.loads(p.read_text())
        m = r["machine"]
        keys = importlib.import_module(f"benchmarks.{name}").SIDE_KEYS
        sides = "<br>".join(_side_cell(k, v, keys) for k, v in r["sides"].items())
        quick = " (quick)" if r.get("quick") else ""
        rows.append(f"| {i} | {r['title']}{quick} | {fmt_ratio(r)}<br>{r['ratio_label']} | {verdict(r)} | {sides} | "
                    f"{r['summary']} | `{r['command']}` | {r['date']} | {m['cores']} cores, {m['cpu']}, "
                    f"torch {m['torch']} ({m['torch_threads']} threads) |")
    rows += _gpu_rows(out, len(BENCHMARKS) + 1)
    text = README.read_text() if README.is_file() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{BEGIN}\n" + "\n".join(rows) + f"\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma-separated names: {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke runs; figures are not meaningful)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else BENCHMARKS
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        try:
            r = run_one(name, args.quick, args.out)
        except Exception:  # noqa: BLE001 - one failing benchmark does not stop the others
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"   {r['title']}: {fmt_ratio(r)} ({r['ratio_label']}) - {verdict(r)}\n   {r['summary']}\n"
              f"   [{r['seconds']:.0f} s]", flush=True)
    if args.out.resolve() == RESULTS.resolve():
        render_readme(args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
