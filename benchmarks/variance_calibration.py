"""Calibration of the seed x utterance statistics (``evaluate.variance``, ``evaluate.verdicts``).

    nice -n 19 .venv/bin/python -m benchmarks.variance_calibration [--studies 300] [--power-studies 60] \
        [--jobs N] [--out DIR]
    .venv/bin/python -m benchmarks.variance_calibration --legacy [--studies 1000]   # the per-comparison table

The default table is the headline family's: each simulated study is a 2 x 3 grid (6 cells) plus a
plain baseline on one test set, judged as the report judges it (moderated seed variances, the 13
contrasts of the headline family: 7 factor contrasts and 6 cells against the baseline, Holm, three
verdicts). Per scenario (``tests/_variance_sim.Scenario``): the type-I rate of the family under
the null (any "differs" claimed, nominal 5%), and the power to find a planted 3 / 6 / 10-pt effect
of one cell in its factor contrast (declared different, in the right direction), each with its
binomial Monte-Carlo SE. The adaptive-seeds scenario runs issue 23 item 7's design
(``tests._variance_sim.adaptive_seeds``) before judging. Writes
benchmarks/results/variance_calibration.json.

The legacy table (``--legacy``) is the per-comparison one this module printed before issue 23:
Each simulated study has one test set (64 utterances of 5-15 words with shared difficulty) and
six cells trained with 2 or 3 seeds. A seed's WER level is drawn around the cell's level with a
seed std of a few points; each (seed, utterance) gets its own jitter and binomial word errors.
Under the null every cell has the same level, so a verdict "A better" or "B better" is a false
positive. Measured per scenario: the false-positive rate of the between-cell verdict at 5%
(per-cell seed variance, pooled seed variance, and the alternatives that were rejected: the old
single-seed paired bootstrap over utterances, a plain two-level percentile bootstrap of the
delta, a two-level bootstrap interval of P(A<B)), the coverage of the cell intervals, and power
at a planted effect. Prints a Markdown table and writes benchmarks/results/variance_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import numpy as np

from borealis_eval.evaluate.variance import A_BETTER, B_BETTER, CellScores, compare, pool_seed_variance, summarize_cell
from tests._variance_sim import (Scenario, family_fires, found_planted, judge, old_paired_p, simulate_grid,
                                 simulate_study)

RESULTS = Path(__file__).resolve().parent / "results"


def true_rate(level: float, seed_sd: float, n: int = 2_000_000) -> float:
    """The population corpus rate a cell interval should cover (over seeds and utterances)."""
    rng = np.random.default_rng(2024)
    words = rng.integers(5, 16, n)
    p = np.clip((level + rng.normal(0, seed_sd, n)) * rng.gamma(2.0, 0.5, n) * np.exp(rng.normal(0, 0.3, n)), 0, 0.95)
    return float((words * p).sum() / words.sum())


def _two_level_rejects(a: CellScores, b: CellScores, seed: int, n_boot: int = 1000) -> tuple[bool, bool]:
    """Rejected alternatives: (delta percentile interval excludes 0, P(A<B) interval excludes 0.5),
    both from a plain two-level bootstrap (seeds with replacement, one shared utterance resample)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(a.n_utts, np.full(a.n_utts, 1 / a.n_utts), size=n_boot)
    ra, rb = a.resampled_rates(counts), b.resampled_rates(counts)
    da = np.take_along_axis(ra, rng.integers(0, a.n_seeds, (n_boot, a.n_seeds)), 1)
    db = np.take_along_axis(rb, rng.integers(0, b.n_seeds, (n_boot, b.n_seeds)), 1)
    lo, hi = np.quantile(da.mean(1) - db.mean(1), [0.025, 0.975])
    wins = (ra[:, :, None] < rb[:, None, :]).mean(0)  # seeds x seeds, averaged over utterance resamples
    wa = np.stack([np.bincount(r, minlength=a.n_seeds) for r in rng.integers(0, a.n_seeds, (n_boot, a.n_seeds))])
    wb = np.stack([np.bincount(r, minlength=b.n_seeds) for r in rng.integers(0, b.n_seeds, (n_boot, b.n_seeds))])
    p = ((wa @ wins) * wb).sum(1) / (a.n_seeds * b.n_seeds)
    p_lo, p_hi = np.quantile(p, [0.025, 0.975])
    return bool(lo > 0 or hi < 0), bool(p_lo > 0.5 or p_hi < 0.5)


def scenario(name: str, studies: int, n_seeds: int, *, seed_sd: float = 0.03, effect: float = 0.0,
             seed_sds: list[float] | None = None, baseline: bool = False) -> dict:
    """Compare cell 0 with the last cell (or the baseline) in ``studies`` simulated studies."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    fired = {"per_cell": 0, "pooled": 0, "old_paired": 0, "two_level_delta": 0, "two_level_prob": 0}
    covered = {"per_cell": 0, "pooled": 0, "two_level": 0}
    truth = true_rate(0.30 + effect, seed_sd)
    compare_s = 0.0
    for i in range(studies):
        effects = [effect] + [0.0] * 5
        cells = simulate_study(rng, 6, n_seeds, seed_sd=seed_sd, effects=effects, seed_sds=seed_sds, baseline=baseline)
        a, b = cells[0], cells[-1]
        pooled = pool_seed_variance(cells)
        t = time.perf_counter()
        per_cell = compare(a, b, seed=i)
        compare_s += time.perf_counter() - t
        fired["per_cell"] += per_cell.verdict in (A_BETTER, B_BETTER)
        fired["pooled"] += compare(a, b, seed=i, seed_variance=pooled).verdict in (A_BETTER, B_BETTER)
        fired["old_paired"] += old_paired_p(a, b, i) < 0.05
        if b.trained:
            delta_rejects, prob_rejects = _two_level_rejects(a, b, i)
            fired["two_level_delta"] += delta_rejects
            fired["two_level_prob"] += prob_rejects
        s_cell, s_pooled = summarize_cell(a, seed=i), summarize_cell(a, seed=i, seed_variance=pooled)
        covered["per_cell"] += s_cell.ci_low <= truth <= s_cell.ci_high
        covered["pooled"] += s_pooled.ci_low <= truth <= s_pooled.ci_high
        covered["two_level"] += s_cell.two_level_low <= truth <= s_cell.two_level_high
    if not b.trained:
        del fired["two_level_delta"], fired["two_level_prob"]
    return {"scenario": name, "studies": studies, "seeds": n_seeds, "seed_sd": seed_sd, "effect": effect,
            "seed_sds": seed_sds, "vs_baseline": baseline,
            "verdict_rate": {k: v / studies for k, v in fired.items()},
            "cell_ci_coverage": {k: v / studies for k, v in covered.items()},
            "ms_per_compare": 1000 * compare_s / studies}


SCENARIOS = [
    Scenario("equal cells, 3 seeds, 64 utterances"),
    Scenario("heteroscedastic cells (seed sd 1-6 pts) + one diverged seed (+30 pts)",
             seed_sds=(0.06, 0.01, 0.02, 0.04, 0.02, 0.03), diverged=0.30),
    Scenario("cell x utterance interaction (sd 0.3)", interaction_sd=0.3),
    Scenario("heavy tails: 3% of utterances at 100-400% errors", heavy_tail=0.03),
    Scenario("WER ~90%, uncapped Poisson errors, 3% runaways, seed sd 4 pts", level=0.90, seed_sd=0.04,
             uncapped=True, heavy_tail=0.03),
    Scenario("4 recordings (150-400 words each)", n_utts=4, words=(150, 400)),
    Scenario("32 utterances, 2 seeds", n_utts=32, n_seeds=2),
    Scenario("64 utterances clustered by 8 speakers", speakers=8),
    Scenario("adaptive seeds {initial 2, max 6, target 5 pts}, seed sd 1 pt", seed_sd=0.01, adaptive=(2, 6, 0.05)),
]
EFFECTS = (0.03, 0.06, 0.10)


def mc_se(rate: float, n: int) -> float:
    """Monte-Carlo (binomial) standard error of a rate measured on ``n`` simulated studies."""
    return float(np.sqrt(max(rate * (1 - rate), 1e-12) / n))


def family_row(sc: Scenario, studies: int, power_studies: int, n_boot: int = 400, part: str = "both") -> dict:
    """Type-I of the headline family and power at each of EFFECTS, for one scenario (``part``:
    "null", "power" or "both"; the null and the power studies draw from separate streams)."""
    t = time.perf_counter()
    row = {"scenario": sc.name, "n_boot": n_boot,
           "seeds": sc.n_seeds, "utterances": sc.n_utts if not sc.speakers else f"{sc.speakers} speakers"}
    if part in ("null", "both"):
        rng = np.random.default_rng(zlib.crc32(sc.name.encode()))
        fired, seeds = 0, []
        for i in range(studies):
            verdicts, s = judge(simulate_grid(rng, sc), sc, seed=i, n_boot=n_boot)
            fired += family_fires(verdicts)
            seeds.append(s)
        row.update(studies=studies, type_i=fired / studies, type_i_se=mc_se(fired / studies, studies),
                   seeds_chosen={str(k): seeds.count(k) for k in sorted(set(seeds))})
        if sc.adaptive:
            row["seeds"] = f"{sc.adaptive[0]} -> {np.mean(seeds):.1f} (max {sc.adaptive[1]})"
    if part in ("power", "both"):
        rng = np.random.default_rng([zlib.crc32(sc.name.encode()), 1])
        power = {}
        for effect in EFFECTS:
            power[f"{100 * effect:g}"] = sum(
                found_planted(judge(simulate_grid(rng, sc, -effect), sc, seed=i, n_boot=n_boot)[0], -effect)
                for i in range(power_studies)) / power_studies
        row.update(power_studies=power_studies, power=power,
                   power_se={k: mc_se(v, power_studies) for k, v in power.items()})
    row["seconds"] = time.perf_counter() - t
    return row


def _row_md(r: dict) -> str:
    type_i = f"{100 * r['type_i']:.1f}% ± {100 * r['type_i_se']:.1f}" if "type_i" in r else "(not run)"
    power = (" | ".join(f"{100 * r['power'][k]:.0f}% ± {100 * r['power_se'][k]:.0f}" for k in ("3", "6", "10"))
             if "power" in r else "(not run) | | ")
    return f"| {r['scenario']} | {r['seeds']} | {r['utterances']} | {type_i} | {power} |"


def _work(job: tuple) -> tuple[int, dict]:
    k, part, studies, power_studies, n_boot = job
    return k, family_row(SCENARIOS[k], studies, power_studies, n_boot, part)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=300, help="null studies per scenario")
    ap.add_argument("--power-studies", type=int, default=60, help="studies per scenario and planted effect")
    ap.add_argument("--n-boot", type=int, default=400, help="utterance resamples per study")
    ap.add_argument("--scenarios", default="", help="comma-separated indices of SCENARIOS to run (default all)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one scenario each)")
    ap.add_argument("--legacy", action="store_true", help="the per-comparison table of the pooled estimator")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.legacy:
        return legacy(args)
    print("| scenario | seeds | units | type-I of the family (nominal 5%) ± MC SE | power 3 pts | power 6 pts | "
          "power 10 pts |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    chosen = [int(k) for k in args.scenarios.split(",")] if args.scenarios else list(range(len(SCENARIOS)))
    # every scenario's null studies first, then the power studies: a run stopped early keeps the type-I column
    jobs = [(k, part, args.studies, args.power_studies, args.n_boot) for part in ("null", "power") for k in chosen]
    by_k: dict[int, dict] = {}
    rows = []
    command = (f"python -m benchmarks.variance_calibration --studies {args.studies} --power-studies "
               f"{args.power_studies} --n-boot {args.n_boot}"
               + (f" --scenarios {args.scenarios}" if args.scenarios else ""))
    args.out.mkdir(parents=True, exist_ok=True)

    def keep(done: tuple[int, dict]) -> None:  # the JSON is rewritten after every part: a stopped run keeps its rows
        k, r = done
        old = by_k.get(k, {})
        by_k[k] = {**r, **old, "seconds": old.get("seconds", 0.0) + r["seconds"]}  # the null part's labels win
        rows[:] = [by_k[j] for j in chosen if j in by_k]
        print(_row_md(by_k[k]), flush=True)
        (args.out / "variance_calibration.json").write_text(json.dumps(
            {"command": command, "date": time.strftime("%Y-%m-%d"),
             "family": "headline: 7 factor contrasts + 6 cells vs baseline, Holm", "rows": rows}, indent=1))

    if args.jobs > 1:  # worker processes inherit this process's niceness: run it under nice -n 19
        from multiprocessing import Pool
        with Pool(args.jobs) as pool:
            for r in pool.imap(_work, jobs, chunksize=1):
                keep(r)
    else:
        for j in jobs:
            keep(_work(j))


def legacy(args) -> None:
    n = args.studies
    rows = []
    for seeds in (2, 3):
        for sd in (0.0, 0.03, 0.06):
            rows.append(scenario(f"null {seeds} seeds, seed sd {sd:.2f}", n, seeds, seed_sd=sd))
        rows.append(scenario(f"null {seeds} seeds vs baseline", n, seeds, baseline=True))
        rows.append(scenario(f"null {seeds} seeds, one cell's seed sd doubled", n, seeds,
                             seed_sds=[0.06] + [0.03] * 5))
        rows.append(scenario(f"effect -0.06, {seeds} seeds", n, seeds, effect=-0.06))
        rows.append(scenario(f"effect -0.06, {seeds} seeds vs baseline", n, seeds, effect=-0.06, baseline=True))
    cols = ["per_cell", "pooled", "old_paired", "two_level_delta", "two_level_prob"]
    print("| scenario | " + " | ".join(cols) + " | cell CI coverage per_cell / pooled / two_level | ms/compare |")
    print("|---" * (len(cols) + 3) + "|")
    for r in rows:
        rate = " | ".join(f"{100 * r['verdict_rate'][c]:.1f}%" if c in r["verdict_rate"] else "–" for c in cols)
        cov = " / ".join(f"{100 * r['cell_ci_coverage'][c]:.1f}%" for c in ("per_cell", "pooled", "two_level"))
        print(f"| {r['scenario']} | {rate} | {cov} | {r['ms_per_compare']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variance_calibration_legacy.json").write_text(json.dumps(
        {"command": f"python -m benchmarks.variance_calibration --legacy --studies {n}",
         "date": time.strftime("%Y-%m-%d"),
         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
