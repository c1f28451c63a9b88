"""Error rates and comparisons over training seeds x test utterances.

A cell (one configuration) is trained with several seeds; every seed is scored on the same test
utterances. Two sources of variance then move a cell's corpus WER: which utterances the test set
happens to hold, and which training run (seed, data order, hardware) produced the model. A
conclusion has to survive both. Rates follow ``metrics``: corpus rate = total edits / total
reference units (a reference total of 0 gives 0.0 without edits, else 1.0), and utterances are
resampled with a multinomial draw, as ``metrics.bootstrap_ci`` does.

Model and estimators (per-seed corpus rate W_s of a cell on the fixed test set)::

    W_s = mu + a_s + U + e_s

``a_s`` is the seed effect, ``e_s`` the seed-specific error on these utterances (independent
across seeds), ``U`` the test-set sampling error of the cell's expected per-utterance errors,
shared by every seed because every seed saw the same utterances.

- **Utterance resamples are shared across seeds and across the cells of a comparison.** The
  test-set error ``U`` is common to all seeds, so more seeds on the same 64 utterances cannot
  shrink it; resampling utterances independently per seed would average ``U`` over seeds and
  claim a precision about unseen utterances that the study does not have.
- **Seed level: Student t, not a bootstrap over seeds.** The sample variance of W_s over seeds
  estimates var(a) + var(e) with S - 1 degrees of freedom. A bootstrap over 2-3 seeds sees 2-3
  points: it under-estimates that variance by (S-1)/S and has no small-sample inflation
  (t quantile 12.7 at 1 df, 4.3 at 2, against 1.96), so it is anti-conservative exactly where
  the seed variance matters (simulated, 2 seeds, seed std 6 pts: its 95% cell interval covered
  85%, its delta interval fired on 19.5% of null comparisons); a permutation test over 2+2 or
  3+3 seeds cannot reach p < 0.05 at all (6 or 20 arrangements). ``two_level_low``/``_high`` on
  ``CellSummary`` keep the plain two-level bootstrap for comparison only.
- **Utterance level: the paired bootstrap.** Its variance of the seed-mean (or the difference of
  seed means) contains ``U`` plus the seed-specific errors ``e_s`` again; the latter, estimated
  from the spread of per-seed deviations across resamples, is subtracted so it is not counted
  twice (floored at 0).
- The two parts add; the interval is Student t with Welch-Satterthwaite degrees of freedom.
- **Pooled seed variance.** With 2 seeds per cell a per-pair estimate has 1-2 degrees of freedom:
  honest but nearly powerless, and Satterthwaite is anti-conservative when one 1-df term
  dominates. ``pool_seed_variance`` pools the within-cell seed variance over the cells of a study
  (one eval set), the usual one-way-ANOVA assumption that configurations share a seed variance;
  its degrees of freedom are sum(S_c - 1). ``headline_findings`` pools by default. If one
  configuration's seed std is twice the others', its comparisons fire at ~9% instead of 5%
  (per-cell estimates stay at 4%): show each cell's seed spread beside the verdicts.
- **Probability that A beats B** (Bouthillier et al., MLSys 2021): ``prob_a_better`` is the share
  of (seed of A, seed of B, shared utterance resample) triples in which A's corpus rate is lower,
  ties counting half: how often a random training run of A beats one of B on a test-set draw.
  Its interval maps the delta's t interval through the normal model P = Phi(-delta / sigma_run),
  sigma_run the spread of one A run minus one B run; so it excludes 0.5 exactly when the delta
  interval excludes 0 and the two never disagree. (A two-level percentile bootstrap interval of
  P excluded 0.5 on 32-36% of simulated null comparisons with 2 seeds, 19-20% with 3.)
- **Verdict** at level alpha: the delta interval excludes 0 (equivalently P's interval excludes
  0.5). Bouthillier's further threshold gamma (0.75) for a meaningful difference is not applied:
  with 2-3 seeds the interval of P is too wide for it to be informative.
- Measured on simulated null studies (``python -m benchmarks.variance_calibration``, 1000
  studies per row, 64 utterances, seed std 0-6 pts): the 5% verdict fires on 4.4-6.1% with the
  pooled seed variance and 2.9-5.2% per cell (7.2% per cell against the baseline with 2 seeds),
  where the old single-run paired bootstrap over utterances fires on 25-53% (seed std 3-6 pts).
- **One seed** (of a trained cell, with no pooled estimate): intervals come from utterance
  resampling only and ``training_variance_measured`` is False. An untrained system (the Whisper
  baseline, decoded once) has no training variance, so its single "seed" is complete.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special  # Student t and normal distribution functions

__all__ = [
    "A_BETTER",
    "B_BETTER",
    "NO_DIFFERENCE",
    "NO_DIFFERENCE_SAMPLING",
    "CellScores",
    "CellSummary",
    "Comparison",
    "Finding",
    "Findings",
    "SeedVariance",
    "compare",
    "headline_findings",
    "phrase",
    "pool_seed_variance",
    "summarize_cell",
]

A_BETTER = "A better"
B_BETTER = "B better"
NO_DIFFERENCE = "no difference beyond training variance"
NO_DIFFERENCE_SAMPLING = "no difference beyond test sampling"


def _rates(edits: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Edits over units, elementwise, with ``metrics``' convention for zero units."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(units == 0, (edits != 0).astype(float), edits / np.where(units == 0, 1, units))


@dataclass(frozen=True, eq=False)
class CellScores:
    """Per-utterance error counts of one configuration: one row of ``edits`` per training seed.

    ``units`` are the reference words (or characters) per utterance, the same for every seed.
    ``trained=False`` marks a system with no training variance (a baseline decoded once).
    """

    edits: np.ndarray
    units: np.ndarray
    trained: bool = True

    def __post_init__(self):
        edits = np.atleast_2d(np.asarray(self.edits, dtype=np.int64))
        units = np.asarray(self.units, dtype=np.int64)
        if edits.ndim != 2 or units.ndim != 1 or edits.shape[1] != units.shape[0] or edits.size == 0:
            raise ValueError(f"edits must be (seeds, utterances) and units (utterances,); got "
                             f"{np.shape(self.edits)} and {np.shape(self.units)}")
        if (edits < 0).any() or (units < 0).any():
            raise ValueError("edit and unit counts must be non-negative")
        if not self.trained and edits.shape[0] != 1:
            raise ValueError(f"an untrained system is decoded once; got {edits.shape[0]} rows")
        object.__setattr__(self, "edits", edits)
        object.__setattr__(self, "units", units)

    @classmethod
    def from_seeds(cls, per_seed: Sequence[tuple[Sequence[int], Sequence[int]]], trained: bool = True) -> CellScores:
        """From one ``(edits, units)`` pair of per-utterance arrays per seed, in the same utterance order."""
        if not per_seed:
            raise ValueError("no seeds")
        units = np.asarray(per_seed[0][1], dtype=np.int64)
        for k, (_, u) in enumerate(per_seed[1:], start=1):
            if not np.array_equal(np.asarray(u, dtype=np.int64), units):
                raise ValueError(f"seed {k} was scored against other references than seed 0 "
                                 "(reference units differ): seeds must share utterances and normaliser")
        return cls(np.stack([np.asarray(e, dtype=np.int64) for e, _ in per_seed]), units, trained)

    @classmethod
    def from_utt_scores(cls, per_seed: Sequence[Sequence], metric: str = "wer", trained: bool = True) -> CellScores:
        """From ``metrics.UttScore`` lists, one per seed (WER: word edits / reference words; CER: chars)."""
        fields = {"wer": ("word_edits", "ref_words"), "cer": ("char_edits", "ref_chars")}
        if metric not in fields:
            raise ValueError(f"metric must be 'wer' or 'cer', got {metric!r}")
        e, n = fields[metric]
        return cls.from_seeds([([getattr(u, e) for u in utts], [getattr(u, n) for u in utts])
                               for utts in per_seed], trained)

    @property
    def n_seeds(self) -> int:
        return self.edits.shape[0]

    @property
    def n_utts(self) -> int:
        return self.units.shape[0]

    @property
    def seed_rates(self) -> np.ndarray:
        """Corpus rate of each seed on the whole test set."""
        return _rates(self.edits.sum(axis=1), self.units.sum())

    def resampled_rates(self, counts: np.ndarray) -> np.ndarray:
        """(resamples, seeds) corpus rates for utterance counts ``counts`` (resamples, utterances)."""
        return _rates(counts @ self.edits.T, (counts @ self.units)[:, None])


@dataclass(frozen=True)
class SeedVariance:
    """Variance of one training run's corpus rate across seeds, pooled over cells."""

    var: float
    df: int
    n_cells: int


def pool_seed_variance(cells: Iterable[CellScores]) -> SeedVariance | None:
    """Within-cell seed variance pooled over trained cells with >= 2 seeds; None if there are none.

    Assumes the configurations share one seed variance (one-way ANOVA). Pool cells of one eval
    set and one metric only: seed variance in points differs between test sets.
    """
    ss, df, k = 0.0, 0, 0
    for c in cells:
        if c.trained and c.n_seeds >= 2:
            w = c.seed_rates
            ss += float(((w - w.mean()) ** 2).sum())
            df += c.n_seeds - 1
            k += 1
    return SeedVariance(ss / df, df, k) if df else None


def _utterance_counts(n_utts: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_utts) times each utterance is drawn per resample, as ``metrics`` draws them."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_utts, np.full(n_utts, 1.0 / n_utts), size=n_boot)


def _seed_noise(cell: CellScores, resampled: np.ndarray) -> float:
    """Seed-specific error variance of one run's rate (var(e_s) in the module's model).

    Across utterance resamples, a seed's deviation from the seed mean varies by var(e)(S-1)/S.
    Zero for a system decoded once, and unknown (0, so counted once more: conservative) for one seed.
    """
    if not cell.trained or cell.n_seeds < 2:
        return 0.0
    dev = resampled - resampled.mean(axis=1, keepdims=True)
    return float(dev.var(axis=0, ddof=1).sum() / (cell.n_seeds - 1))


def _run_var(cell: CellScores, pooled: SeedVariance | None) -> float | None:
    """Variance of one training run's rate over seeds; 0 untrained, None when not measured."""
    if not cell.trained:
        return 0.0
    if pooled is not None:
        return pooled.var
    if cell.n_seeds >= 2:
        return float(cell.seed_rates.var(ddof=1))
    return None


def _seed_terms(cells: Sequence[CellScores], pooled: SeedVariance | None) -> list[tuple[float, float]] | None:
    """(variance, df) terms that training adds to the (difference of) seed means; None if unmeasured.

    Terms from one pooled estimate are summed before Satterthwaite: they are not independent.
    """
    if any(_run_var(c, pooled) is None for c in cells):
        return None
    trained = [c for c in cells if c.trained]
    if pooled is not None:
        return [(pooled.var * sum(1 / c.n_seeds for c in trained), pooled.df)] if trained else []
    return [(float(c.seed_rates.var(ddof=1)) / c.n_seeds, c.n_seeds - 1) for c in trained]


def _satterthwaite(terms: list[tuple[float, float]]) -> tuple[float, float]:
    """Total variance of independent components and its Welch-Satterthwaite degrees of freedom."""
    total = sum(v for v, _ in terms)
    denom = sum(v * v / d for v, d in terms if v > 0)
    return total, (total * total / denom if denom > 0 else math.inf)


def _t_interval(center: float, var: float, df: float, alpha: float) -> tuple[float, float, float]:
    """(low, high, two-sided p of center == 0) under Student t."""
    if var <= 0:
        return center, center, 1.0 if center == 0 else 0.0
    sd = math.sqrt(var)
    half = float(special.stdtrit(df, 1 - alpha / 2)) * sd
    return center - half, center + half, float(2 * special.stdtr(df, -abs(center) / sd))


def _percentile(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------- one cell


@dataclass(frozen=True)
class CellSummary:
    """A cell's mean corpus rate over seeds, its interval, and the spread of its seeds.

    ``ci_low``/``ci_high``: seeds (Student t) + utterances (bootstrap) as in the module docstring;
    utterances only when ``training_variance_measured`` is False. ``two_level_low``/``_high``:
    the plain two-level percentile bootstrap (seeds with replacement, then one utterance
    resample shared by the drawn seeds); too narrow with 2-3 seeds, kept for comparison.
    Seed spread: min, max and sample std (NaN for one seed) of the per-seed corpus rates.
    """

    mean: float
    ci_low: float
    ci_high: float
    two_level_low: float
    two_level_high: float
    seed_min: float
    seed_max: float
    seed_std: float
    n_seeds: int
    n_utts: int
    df: float
    training_variance_measured: bool


def summarize_cell(
    cell: CellScores,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    seed_variance: SeedVariance | None = None,
) -> CellSummary:
    """Mean over seeds of the corpus rate, with its interval and seed spread (see ``CellSummary``)."""
    w = cell.seed_rates
    mean = float(w.mean())
    counts = _utterance_counts(cell.n_utts, n_boot, seed)
    resampled = cell.resampled_rates(counts)
    utt_means = resampled.mean(axis=1)

    draw = np.random.default_rng([seed, 1]).integers(0, cell.n_seeds, size=(n_boot, cell.n_seeds))
    two_level = _percentile(np.take_along_axis(resampled, draw, axis=1).mean(axis=1), alpha)

    seed_terms = _seed_terms([cell], seed_variance)
    if seed_terms is None or not cell.trained:
        (lo, hi), df = _percentile(utt_means, alpha), float(cell.n_utts - 1)
    else:
        v_utt = max(0.0, float(utt_means.var(ddof=1)) - _seed_noise(cell, resampled) / cell.n_seeds)
        var, df = _satterthwaite([*seed_terms, (v_utt, cell.n_utts - 1)])
        lo, hi, _ = _t_interval(mean, var, df, alpha)
    return CellSummary(
        mean=mean, ci_low=lo, ci_high=hi, two_level_low=two_level[0], two_level_high=two_level[1],
        seed_min=float(w.min()), seed_max=float(w.max()),
        seed_std=float(w.std(ddof=1)) if cell.n_seeds > 1 else math.nan,
        n_seeds=cell.n_seeds, n_utts=cell.n_utts, df=df,
        training_variance_measured=seed_terms is not None,
    )


# ---------------------------------------------------------------- two cells


@dataclass(frozen=True)
class Comparison:
    """Cell A minus cell B on the same utterances; a negative delta means A has fewer errors.

    ``delta``: difference of the seed-mean corpus rates, with its interval (``ci_low``,
    ``ci_high``) and two-sided ``p_value``. ``prob_a_better``: P(a random run of A has a lower
    rate than a random run of B on a test-set draw), with ``prob_ci_low``/``_high``.
    ``training_variance_measured`` is False when a trained cell had one seed and no pooled
    estimate stood in: the interval then covers test sampling only. ``seed_variance``: "pooled",
    "per cell", "none" (not measured: utterances only) or "untrained" (neither system was trained).
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    prob_a_better: float
    prob_ci_low: float
    prob_ci_high: float
    verdict: str
    training_variance_measured: bool
    seed_variance: str
    n_seeds_a: int
    n_seeds_b: int
    n_utts: int
    alpha: float


def _no_difference(seed_variance: str) -> str:
    """Training variance was part of the test only if a trained cell's seed variance was measured."""
    return NO_DIFFERENCE if seed_variance in ("pooled", "per cell") else NO_DIFFERENCE_SAMPLING


def compare(
    a: CellScores,
    b: CellScores,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    seed_variance: SeedVariance | None = None,
) -> Comparison:
    """Is A's rate different from B's beyond training variance and test sampling? (module docstring).

    ``seed_variance`` (from ``pool_seed_variance`` over the study's cells) replaces the per-pair
    seed variance; without it each trained cell needs >= 2 seeds for training variance to count.
    """
    if a.n_utts != b.n_utts or not np.array_equal(a.units, b.units):
        raise ValueError("compare: both cells must be scored on the same utterances with the same "
                         "references (reference units differ)")
    return _compare(a, b, _utterance_counts(a.n_utts, n_boot, seed), alpha, seed_variance)


def _compare(a: CellScores, b: CellScores, counts: np.ndarray, alpha: float,
             seed_variance: SeedVariance | None) -> Comparison:
    n_boot = counts.shape[0]
    ra, rb = a.resampled_rates(counts), b.resampled_rates(counts)
    delta = float(a.seed_rates.mean() - b.seed_rates.mean())
    boot_delta = ra.mean(axis=1) - rb.mean(axis=1)

    seed_terms = _seed_terms([a, b], seed_variance)
    if seed_terms is None:  # test sampling only: the paired bootstrap of ``metrics.paired_test``
        lo, hi = _percentile(boot_delta, alpha)
        flips = int(np.count_nonzero(boot_delta <= 0 if delta > 0 else boot_delta >= 0))
        p = 1.0 if delta == 0 else min(1.0, 2.0 * (flips + 1) / (n_boot + 1))
        df, run_sd = float(a.n_utts - 1), float(boot_delta.std(ddof=1))
        source = "none"
    else:
        noise = sum(_seed_noise(c, r) / c.n_seeds for c, r in ((a, ra), (b, rb)))
        v_utt = max(0.0, float(boot_delta.var(ddof=1)) - noise)
        var, df = _satterthwaite([*seed_terms, (v_utt, a.n_utts - 1)])
        lo, hi, p = _t_interval(delta, var, df, alpha)
        run_sd = math.sqrt(_run_var(a, seed_variance) + _run_var(b, seed_variance) + v_utt)
        source = ("untrained" if not (a.trained or b.trained)
                  else "pooled" if seed_variance is not None else "per cell")

    wins = (ra[:, :, None] < rb[:, None, :]).mean() + 0.5 * (ra[:, :, None] == rb[:, None, :]).mean()
    if run_sd > 0:
        p_lo, p_hi = float(special.ndtr(-hi / run_sd)), float(special.ndtr(-lo / run_sd))
    else:
        p_lo = p_hi = float(wins)
    return Comparison(
        delta=delta, ci_low=lo, ci_high=hi, p_value=p, df=df,
        prob_a_better=float(wins), prob_ci_low=p_lo, prob_ci_high=p_hi,
        verdict=A_BETTER if hi < 0 else B_BETTER if lo > 0 else _no_difference(source),
        training_variance_measured=seed_terms is not None, seed_variance=source,
        n_seeds_a=a.n_seeds, n_seeds_b=b.n_seeds, n_utts=a.n_utts, alpha=alpha,
    )


# ---------------------------------------------------------------- headline


@dataclass(frozen=True)
class Finding:
    """One comparison of the headline; ``verdict`` uses ``p_adjusted`` (multiplicity-corrected)."""

    a: str
    b: str
    comparison: Comparison
    p_adjusted: float
    verdict: str

    @property
    def differs(self) -> bool:
        """A difference at the level asked (beyond test sampling at least)."""
        return self.verdict in (A_BETTER, B_BETTER)

    @property
    def survives(self) -> bool:
        """A difference that holds beyond training variance (and multiplicity)."""
        return self.differs and self.comparison.training_variance_measured


@dataclass(frozen=True)
class Findings:
    findings: tuple[Finding, ...]
    seed_variance: SeedVariance | None
    adjust: str

    @property
    def differences(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.verdict in (A_BETTER, B_BETTER))

    @property
    def no_difference(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.verdict not in (A_BETTER, B_BETTER))

    @property
    def training_variance_measured(self) -> bool:
        return all(f.comparison.training_variance_measured for f in self.findings)


def _holm(p: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error over the given tests)."""
    m = len(p)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p[k])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def headline_findings(
    cells: Mapping[str, CellScores],
    pairs: Sequence[tuple[str, str]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    pool: bool = True,
    adjust: str = "holm",
) -> Findings:
    """Compare each ``(a, b)`` pair of named cells (one eval set, one metric) for the headline.

    ``pool``: seed variance pooled over all ``cells`` (see ``pool_seed_variance``).
    ``adjust``: "holm" controls the family-wise error over ``pairs`` (the headline states them
    together); "none" keeps each comparison at level ``alpha``.
    """
    if adjust not in ("holm", "none"):
        raise ValueError(f"adjust must be 'holm' or 'none', got {adjust!r}")
    missing = sorted({n for pair in pairs for n in pair} - set(cells))
    if missing:
        raise KeyError(f"headline_findings: no cell named {', '.join(map(repr, missing))}")
    units = [cells[n].units for pair in pairs for n in pair]
    if any(not np.array_equal(u, units[0]) for u in units):
        raise ValueError("headline_findings: the compared cells were not all scored on the same "
                         "utterances with the same references")
    pooled = pool_seed_variance(cells.values()) if pool else None
    counts = _utterance_counts(len(units[0]), n_boot, seed) if pairs else None
    comps = [_compare(cells[a], cells[b], counts, alpha, pooled) for a, b in pairs]
    raw = [c.p_value for c in comps]
    adjusted = _holm(raw) if adjust == "holm" else raw
    findings = []
    for (a, b), c, p in zip(pairs, comps, adjusted):
        verdict = c.verdict if p < alpha or adjust == "none" else _no_difference(c.seed_variance)
        findings.append(Finding(a, b, c, p, verdict))
    return Findings(tuple(findings), pooled, adjust)


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def phrase(finding: Finding, metric: str = "WER") -> str:
    """The report's one-sentence wording of a finding (rates in percentage points)."""
    c = finding.comparison
    seeds = f"{c.n_seeds_a} vs {c.n_seeds_b} seed{'s' if max(c.n_seeds_a, c.n_seeds_b) > 1 else ''}"
    level = round(100 * (1 - c.alpha))
    detail = (f"Δ{metric} {_pts(c.delta)} pts, {level}% CI {_pts(c.ci_low)} to {_pts(c.ci_high)}; "
              f"P({finding.a} better) = {c.prob_a_better:.2f}; {seeds}")
    if finding.p_adjusted != c.p_value:
        detail += f"; Holm-adjusted p = {finding.p_adjusted:.3f}"
    if finding.verdict == A_BETTER:
        head = f"{finding.a} has a lower {metric} than {finding.b}"
    elif finding.verdict == B_BETTER:
        head = f"{finding.a} has a higher {metric} than {finding.b}"
    else:
        head = f"{finding.a} vs {finding.b}: no difference"
    if c.seed_variance == "untrained":
        return f"{head} beyond test sampling ({detail})."
    if c.training_variance_measured:
        return f"{head} beyond training variance ({detail})."
    return (f"{head} ({detail}); training variance was not measured (one seed), "
            "so this covers test sampling only.")
