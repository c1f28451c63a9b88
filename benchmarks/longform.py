"""Speech-LLM long-form decoding: per-window decoding vs one concatenated prompt, and window sizes.

    .venv/bin/python -m benchmarks.longform RUN_ID [RUN_ID ...] [--ablation FILE] [--set webinar]

Unlike the ratio benchmarks in `benchmarks.run` this needs trained variants: pass the MLflow run
ids of finished variants (e.g. from `make demo`: `borealis-eval runs text_ratio`). Each run is
loaded once and its webinar set decoded under every mode in the same process (the feature cache
holds each window size's encoder outputs, so only decoding is timed). WER, its 95% CI, the
hypothesis/reference word counts, decoding seconds and the process's peak RSS are printed as a
Markdown table and written to benchmarks/results/longform.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks.common import CPU_ABLATION, RESULTS, machine, peak_rss_mb

MODES = [("window", 6.0), ("window", 10.0), ("window", 15.0), ("window", 30.0), ("concat", 6.0), ("concat", 15.0)]


def measure(run_id: str, ablation: str, set_name: str) -> list[dict]:
    import torch

    from borealis_eval.config import load_ablation
    from borealis_eval.data.features import FeatureCache, FeatureStore
    from borealis_eval.decode import evaluate_speech_lm
    from borealis_eval.rescore import load_variant_from_run
    from borealis_eval.resources import Resources, load_eval_data

    _, variants = load_ablation(ablation)
    base = variants[0].config
    _, encoder, lm, model_id = load_variant_from_run(run_id, device="cpu")
    rows = []
    for mode, window in MODES:
        cfg = base.model_copy(deep=True)
        cfg.eval.sets = [s for s in cfg.eval.sets if s.name == set_name]
        cfg.eval.text_sets = []
        cfg.eval.long_form, cfg.eval.window_seconds = mode, window
        cache = FeatureCache(encoder.identity.key)
        res = Resources(cfg, torch.device("cpu"), [], [], [], encoder, cache, FeatureStore(cache))
        load_eval_data(res, cfg)
        t = time.perf_counter()
        r = evaluate_speech_lm(lm, res, cfg, model_id=None)[0]  # no decode cache: time the decoding
        m = r.metrics
        rows.append({"run": run_id[:8], "mode": mode, "window_s": window, "wer": m["wer"], "ci_low": m["wer_ci_low"],
                     "ci_high": m["wer_ci_high"], "cer": m["cer"], "hyp_words": m["hyp_words"],
                     "ref_words": m["ref_words"], "decode_s": round(time.perf_counter() - t, 2),
                     "peak_rss_mb": round(peak_rss_mb(), 0)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| run | mode | window | WER [95% CI] | CER | hyp/ref words | decode s | peak RSS |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['run']} | {r['mode']} | {r['window_s']:g} s | {r['wer']:.1%} [{r['ci_low']:.1%}, "
                   f"{r['ci_high']:.1%}] | {r['cer']:.1%} | {r['hyp_words']:.0f}/{r['ref_words']:.0f} | "
                   f"{r['decode_s']:.1f} | {r['peak_rss_mb']:.0f} MB |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.longform", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="MLflow run ids of finished variants")
    ap.add_argument("--ablation", default=str(CPU_ABLATION), help="ablation whose eval set to decode")
    ap.add_argument("--set", default="webinar", help="eval set (default webinar)")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [r for run in a.runs for r in measure(run, a.ablation, a.set)]
    md = table(rows)
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = ".venv/bin/python -m benchmarks.longform " + " ".join(argv if argv is not None else sys.argv[1:])
    (RESULTS / "longform.json").write_text(json.dumps(
        {"rows": rows, "command": cmd, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine()},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
