"""What one CPU-profile variant costs end to end: `train()` then the sweep's own evaluation.

    python -m benchmarks.variant_cost                                           # this checkout, one run
    python -m benchmarks.variant_cost --vs-ref 5d038b1 --proposed --repeats 3   # today vs proposed, interleaved
    python -m benchmarks.variant_cost --vs-ref 5d038b1 --proposed --seeds 0 1 2 # WER over seeds

A run is one fresh process (its own peak RSS, no warm state from the other side) that does
what `recipe.run_claimed` does minus MLflow: the variant's mix, `SpeechLM.from_config`,
`train()`, then `evaluate_speech_lm` on each of the profile's eval sets and
`evaluate_text_skill` on its text set (no decode cache). The variant's cost is training +
that evaluation; data loading and encoding (the feature cache, shared by a sweep's variants)
is reported apart. The dev set (`--dev N` utterances of the corpus's dev split: training
templates and voices, unseen sentences) is decoded after the timed part, as the quality check.

`--vs-ref REF` also runs the `borealis_eval` package and the ablation files as committed at REF
(`git archive` into a temporary folder put first on sys.path): today's variant. Sides alternate
A B B A ... so load from other jobs falls on both alike; the summary gives timing medians with
min/max, WER seed means with min/max and the paired speed-up. The method settings (batch, lr,
precision; `--proposed` = the profile change proposed) apply to this checkout only, unless
`--same-settings`; steps, threads, seeds, sets and dev apply to both.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "@@VARIANT_COST@@"
DEFAULT_VARIANT = "language_mix=ru50_en50__text_fraction=0.15"


def _peak_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith(f"{field}:"))


class _NoTracking:
    """Stands in for the MLflow RunLogger: the evaluation functions write artifacts through it."""

    def metrics(self, *a, **k) -> None: ...
    def artifact_json_lines(self, *a, **k) -> None: ...


def setup(variant: str = DEFAULT_VARIANT, seed: int = 0, batch_size: int | None = None, steps: int | None = None,
          lr: float | None = None, threads: int | None = None, precision: str | None = None, dev: int = 0,
          sets: list[str] | None = None, ablation: Path | None = None):
    """(config, resources, fresh model, training examples) exactly as `recipe.run_claimed` builds them;
    None keeps the profile's setting. `dev` utterances of the dev split join the eval sets.
    `ablation`: another copy of the profile's file (the one committed with an older package)."""
    import torch

    from benchmarks.common import CPU_ABLATION, cpu_variants
    from borealis_eval.config import EvalSet
    from borealis_eval.data.sources import AudioItem
    from borealis_eval.models.speech_lm import Example, SpeechLM

    try:  # the package as it is now
        from borealis_eval.resources import load_eval_data, prepare_resources

        def mix_for(v, res):
            return res.mix_for(v)
    except ImportError:  # a package from before the recipe split (e.g. 5d038b1, the --vs-ref side)
        from borealis_eval.sweep import load_eval_data, mix_for, prepare_resources

    every = cpu_variants(ablation or CPU_ABLATION)
    # a variant's name, or its cell's (a profile with seeds names variants <cell>__seed=N): the first seed
    v = next((x for x in every if x.name == variant), None) or next((x for x in every if x.cell == variant), None)
    if v is None:
        raise SystemExit(f"no variant or cell {variant!r} in the profile (see `sweep --dry-run`)")
    over = {"batch_size": batch_size, "steps": steps, "lr": lr, "threads": threads, "precision": precision}
    tc = v.config.train.model_copy(update={k: x for k, x in over.items() if x is not None})
    data = v.config.data.model_copy(update={"num_examples": tc.steps * tc.batch_size * tc.grad_accum})
    kept = [s for s in v.config.eval.sets if sets is None or s.name in sets]
    cfg = v.config.model_copy(update={"train": tc, "data": data, "seed": seed,
                                      "eval": v.config.eval.model_copy(update={"sets": kept})})
    v = v.model_copy(update={"config": cfg})
    res = prepare_resources([v])
    torch.set_num_threads(tc.threads or torch.get_num_threads())
    if dev:
        dev_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={
            "sets": [EvalSet(name="dev", source=_dev_source(cfg), max_samples=dev)], "text_sets": []})})
        load_eval_data(res, dev_cfg)
    m = mix_for(v, res)
    # a package from before tokenizer_for took the model config (the --vs-ref side) takes the LLM's
    tok = res.tokenizer_for(cfg.model if "model" in inspect.signature(res.tokenizer_for).parameters else cfg.model.llm)
    torch.manual_seed(cfg.seed)
    model = SpeechLM.from_config(cfg.model, res.encoder.dim, tok, device=res.device).to(res.device)
    examples = [Example(answer=e.text, features=res.features[e.id], id=e.id) if isinstance(e, AudioItem)
                else Example(answer=e.answer, instruction=e.instruction, id=e.id)
                for e in m.examples if not isinstance(e, AudioItem) or e.id in res.features]
    return cfg, res, model, examples


def _dev_source(cfg):
    """The dev split of the profile's corpus (a synth split, or a manifest beside the test sets')."""
    src = cfg.eval.sets[0].source
    if src.kind == "manifest":
        return src.model_copy(update={"path": str(Path(src.path).with_name("dev.jsonl"))})
    return src.model_copy(update={"split": "dev"})


def one_run(a: argparse.Namespace) -> dict:
    """Train and evaluate one variant in this process; every figure the summary needs."""
    import torch

    from borealis_eval.train import train

    try:
        from borealis_eval.decode import evaluate_speech_lm, evaluate_text_skill
        new_text_api = True  # returns {set: (scores, rows)}
    except ImportError:  # before the recipe split
        from borealis_eval.sweep import evaluate_speech_lm, evaluate_text_skill
        new_text_api = False

    t_setup = time.perf_counter()
    ablation = a.code / "ablations" / "cpu" / "text_ratio.yaml" if a.code else None  # the ref's own settings
    cfg, res, model, examples = setup(a.variant, a.seed, a.batch_size, a.steps, a.lr, a.threads, a.precision, a.dev,
                                      a.sets, ablation)
    tc = cfg.train
    setup_s = time.perf_counter() - t_setup
    rss_before = _peak_mb("VmRSS")
    t, c = time.perf_counter(), time.process_time()
    result = train(model, examples, tc, cfg.seed, log=None, progress=False)
    train_wall, train_cpu = time.perf_counter() - t, time.process_time() - c
    c = time.process_time()

    eval_s: dict[str, float] = {}
    wer: dict[str, float] = {}
    profile_sets = [s.name for s in cfg.eval.sets]
    for name in profile_sets + (["dev"] if a.dev else []):
        t = time.perf_counter()
        (r,) = evaluate_speech_lm(model, res, cfg, model_id=None, sets=[name])
        eval_s[name] = time.perf_counter() - t
        wer[name] = r.metrics["wer"]
    text = {}
    if res.text_sets:
        t = time.perf_counter()
        if new_text_api:  # the same keys the old function returned
            text = {f"{k}/{name}": score[x] for name, (score, _) in evaluate_text_skill(model, res, cfg).items()
                    for k, x in (("text_chrf", "chrf"), ("text_exact", "exact_match"))}
        else:
            text = evaluate_text_skill(model, res, cfg, _NoTracking())
        eval_s["text:" + res.text_sets[0][0]] = time.perf_counter() - t
    eval_cost = sum(s for k, s in eval_s.items() if k != "dev")
    eval_cpu = time.process_time() - c  # the dev set included
    return {
        "variant": a.variant, "seed": cfg.seed, "steps": tc.steps, "batch_size": tc.batch_size, "lr": tc.lr,
        "precision": tc.precision,
        "threads": torch.get_num_threads(), "examples": len(examples),
        "train_s": round(train_wall, 3), "train_s_per_step": round(result.seconds / tc.steps, 5),
        "first_loss": round(result.first_loss, 4), "last_loss": round(result.last_loss, 4),
        "eval_s": {k: round(x, 3) for k, x in eval_s.items()}, "eval_s_total": round(eval_cost, 3),
        "variant_s": round(train_wall + eval_cost, 3), "train_cpu_s": round(train_cpu, 2),
        "eval_cpu_s_with_dev": round(eval_cpu, 2), "wer": {k: round(x, 4) for k, x in wer.items()},
        **{k: round(x, 4) for k, x in text.items()}, "setup_s": round(setup_s, 1),
        "rss_before_train_mb": round(rss_before, 1), "peak_rss_mb": round(_peak_mb(), 1),
    }


# ------------------------------------------------------------------ parent: sides, repeats, summary
def export_ref(ref: str, into: Path) -> Path:
    """The `borealis_eval` package and the ablation files as committed at `ref`, unpacked under `into`."""
    archive = subprocess.run(["git", "archive", ref, "borealis_eval", "ablations"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_side(argv: list[str], code: Path | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "benchmarks.variant_cost", *argv, "--child"] + (["--code", str(code)] if code else [])
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
    if p.returncode or not lines:
        raise RuntimeError(f"side failed (rc {p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def _spread(xs: list[float], fmt: str = ".3f", centre=statistics.median) -> str:
    return f"{centre(xs):{fmt}} [{min(xs):{fmt}}, {max(xs):{fmt}}]" if len(xs) > 1 else f"{xs[0]:{fmt}}"


def summary(runs: dict[str, list[dict]]) -> str:
    """One column per side. Timings: median [min, max] over all its runs. Quality (WER, text skill,
    loss): mean over seeds [min, max] (a seed's repeats give identical numbers, checked below)."""
    sides = list(runs)
    first = runs[sides[0]][0]
    w, cw = 34, 32
    timing = [("train s/step", lambda r: r["train_s_per_step"]), ("train s", lambda r: r["train_s"])]
    timing += [(f"eval s {k}", (lambda k: lambda r: r["eval_s"][k])(k)) for k in first["eval_s"]]
    timing += [("eval s (profile sets + text)", lambda r: r["eval_s_total"]),
               ("VARIANT s (train + eval)", lambda r: r["variant_s"]), ("train CPU s", lambda r: r["train_cpu_s"]),
               ("eval CPU s (with dev)", lambda r: r["eval_cpu_s_with_dev"]), ("peak RSS MB", lambda r: r["peak_rss_mb"])]
    out = [f"{'':{w}}" + "".join(f"{s:>{cw}}" for s in sides)]
    for label, get in timing:
        out.append(f"{label:{w}}" + "".join(f"{_spread([get(r) for r in runs[s]]):>{cw}}" for s in sides))

    def per_seed(side: str, get) -> list[float]:
        return [get(next(r for r in runs[side] if r["seed"] == sd)) for sd in sorted({r["seed"] for r in runs[side]})]

    quality = [(f"WER {k}", (lambda k: lambda r: r["wer"][k])(k)) for k in first["wer"]]
    quality += [(k, (lambda k: lambda r: r[k])(k)) for k in first if k.startswith("text_")]
    quality += [("last_loss", lambda r: r["last_loss"])]
    for label, get in quality:
        out.append(f"{label + ' (seed mean)':{w}}" + "".join(
            f"{_spread(per_seed(s, get), '.4f', statistics.mean):>{cw}}" for s in sides))
    for k in ("steps", "batch_size", "lr", "precision", "threads", "examples"):
        out.append(f"{k:{w}}" + "".join(f"{runs[s][0][k]!s:>{cw}}" for s in sides))
    seeds = sorted({r["seed"] for r in runs[sides[0]]})
    out.append(f"{'seeds':{w}}" + "".join(f"{','.join(map(str, seeds)):>{cw}}" for _ in sides))
    if len(sides) == 2:
        a, b = sides
        ratios = [rb["variant_s"] / ra["variant_s"] for ra, rb in zip(runs[a], runs[b])]
        cpu = [(rb["train_cpu_s"] + rb["eval_cpu_s_with_dev"]) / (ra["train_cpu_s"] + ra["eval_cpu_s_with_dev"])
               for ra, rb in zip(runs[a], runs[b])]
        out.append(f"speed-up {b} -> {a}, paired runs: variant wall {_spread(ratios, '.2f')}x, "
                   f"train+eval CPU {_spread(cpu, '.2f')}x")
    for s in sides:
        for sd in seeds:
            rs = [r for r in runs[s] if r["seed"] == sd]
            if len({json.dumps(r["wer"]) for r in rs}) > 1:
                out.append(f"NOTE: {s}, seed {sd}: repeats gave different WERs (not deterministic)")
    return "\n".join(out)


# the settings proposed for ablations/cpu/text_ratio.yaml (applied to this checkout's side by --proposed)
PROPOSED = {"precision": "bf16"}
SETTINGS = ("batch_size", "lr", "precision")  # the method: this checkout's side only (unless --same-settings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default=DEFAULT_VARIANT, help="a variant name of ablations/cpu/text_ratio.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="train with each (WER is reported per seed mean)")
    p.add_argument("--batch-size", type=int, help="train.batch_size (num_examples follows: steps x batch)")
    p.add_argument("--steps", type=int, help="train.steps, both sides (a quick look; the profile has 550)")
    p.add_argument("--lr", type=float)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="train.precision")
    p.add_argument("--proposed", action="store_true", help=f"the proposed profile settings {PROPOSED}; "
                   "the flags above override them")
    p.add_argument("--threads", type=int, help="torch threads, both sides (default: the profile's train.threads)")
    p.add_argument("--dev", type=int, default=200, help="dev utterances decoded after the timed part (0: none)")
    p.add_argument("--sets", nargs="+", help="only these of the profile's eval sets (default: all)")
    p.add_argument("--vs-ref", help="also run the package as committed at this git ref, with the profile's settings "
                   "as committed there (today's variant); the settings above apply to this checkout only")
    p.add_argument("--same-settings", action="store_true", help="apply the settings to the --vs-ref side too")
    p.add_argument("--repeats", type=int, default=1, help="runs per seed and side, interleaved A B B A ...")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        if a.code:
            sys.path.insert(0, str(a.code))
        print(MARK + json.dumps(one_run(a)), flush=True)
        return
    settings = {**(PROPOSED if a.proposed else {}),
                **{k: getattr(a, k) for k in SETTINGS if getattr(a, k) is not None}}
    common = ["--variant", a.variant, "--dev", str(a.dev)] + (["--threads", str(a.threads)] if a.threads else [])
    common += ["--sets", *a.sets] if a.sets else []
    common += ["--steps", str(a.steps)] if a.steps else []
    as_args = lambda d: [x for k, v in d.items() for x in (f"--{k.replace('_', '-')}", str(v))]  # noqa: E731
    sides = {"this checkout": (as_args(settings), None)}
    runs: dict[str, list[dict]] = {"this checkout": []}
    with tempfile.TemporaryDirectory() as tmp:
        if a.vs_ref:
            sides[a.vs_ref] = (as_args(settings) if a.same_settings else [], export_ref(a.vs_ref, Path(tmp)))
            runs[a.vs_ref] = []
        i = 0
        for seed in a.seeds:
            for _ in range(a.repeats):
                for side in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                    extra, code = sides[side]
                    r = run_side(common + ["--seed", str(seed)] + extra, code)
                    runs[side].append(r)
                    print(f"[{side}, seed {seed}] variant {r['variant_s']:.1f} s (train {r['train_s']:.1f} s, "
                          f"eval {r['eval_s_total']:.1f} s), WER {r['wer']}", file=sys.stderr, flush=True)
                i += 1
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")
    print(summary(runs))


if __name__ == "__main__":
    main()
