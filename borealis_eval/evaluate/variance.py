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
  its degrees of freedom are sum(S_c - 1). Pooling alone lets one cell's instability widen every
  interval of the set (one diverged seed made every cell's interval ~±70 pts in a real study)
  and lets a noisier cell borrow the others' stability (~9% type-I where one cell's seed std
  doubles), so the report uses ``moderate_seed_variances``: per-cell variances shrunk towards
  the stable cells' pooled value (empirical Bayes), never below their own, with unstable cells
  (F test) keeping their own variance and named. ``headline_findings`` moderates by default.
- **Probability that A beats B** (Bouthillier et al., MLSys 2021): P = Phi(-delta / sigma_run),
  sigma_run the spread of one A run minus one B run on a test-set draw; its interval maps the
  delta's t interval the same way, so point and interval come from one estimator (the point
  lies inside) and P's interval excludes 0.5 exactly when the delta interval excludes 0. (The
  earlier point estimate, the empirical share of seed pairs, could fall outside the interval:
  0.99 [0.03, 0.98] in a real report.) Not estimable (NaN) with one seed and nothing to borrow.
- **Verdict** here is the unadjusted difference test; ``evaluate.verdicts`` judges a family of
  comparisons (Holm, TOST equivalence at a margin, the detectable effect) from ``delta``,
  ``se`` and ``df``.
- **Units and tails.** The utterance term rests on the set's independent units (``groups``:
  speakers or recordings; else utterances): its bootstrap variance is unbiased by n / (n - 1),
  below 20 units the interval is Student t on n - 1 df (percentiles of 4 recordings under-cover),
  and its df shrink with the kurtosis of the units' contributions (runaway utterances).
- **Heavy tails: one error process per set.** A runaway utterance (errors of 100-400% of its
  words: loops, hallucinated insertions) is a rare event of one run. One run's 64 utterances
  often show none while the process has them, so its own bootstrap variance is small exactly
  when its rate is low: with 3% runaways the baseline's variance behaved like a chi-square on ~4
  df (nominal 63) and the headline family fired 9.3% at nominal 5%. ``run_noise`` pools the
  seed-specific error of every trained run of the set (a run's per-unit contribution minus its
  cell's seed mean) to see the tail. It is used three ways (Box 1953: var(s2)/s4 = 2/df +
  kurtosis/n): the moderated seed variances claim at most the stable cells' df cut by the seed
  rates' kurtosis; the test-sampling term of a contrast with a system decoded once takes its
  kurtosis from the set where its own units show less; and that term is at least the set's run
  noise (the variance under the null that the system is a run like the others, as a pooled
  two-proportion test uses the null's variance where a rare event makes the separate estimates
  fail). The floor only ever widens; it costs power against a baseline whose own errors are far
  calmer than the trained runs', where differences are large anyway.
- Calibration of the whole headline family on simulated grid studies (heteroscedastic cells,
  a diverged seed, cell x utterance interaction, heavy tails, 4 / 32 / 64 units, speakers):
  ``python -m benchmarks.variance_calibration``, table in benchmarks/README.md.
- **One seed** (of a trained cell, with no pooled estimate): intervals come from utterance
  resampling only and ``training_variance_measured`` is False. An untrained system (the Whisper
  baseline, decoded once) has no training variance, so its single "seed" is complete.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats  # distributions; brentq for the prior's df

__all__ = [
    "A_BETTER",
    "B_BETTER",
    "NOT_RESOLVED",
    "NOT_RESOLVED_SAMPLING",
    "CellScores",
    "CellSummary",
    "Comparison",
    "Finding",
    "Findings",
    "ModeratedSeedVariance",
    "SeedVariance",
    "compare",
    "compare_pairs",
    "headline_findings",
    "moderate_seed_variances",
    "phrase",
    "pool_seed_variance",
    "summarize_cell",
]

A_BETTER = "A better"
B_BETTER = "B better"
# the unadjusted difference test alone; ``verdicts`` adds equivalence and the detectable effect
NOT_RESOLVED = "not resolved beyond training variance"
NOT_RESOLVED_SAMPLING = "not resolved beyond test sampling"


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
    groups: np.ndarray | None = None  # per utterance, its independent unit (speaker, recording); None: itself

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
        if self.groups is not None:
            groups = np.asarray(self.groups)
            if groups.shape != units.shape:
                raise ValueError(f"groups must give one unit per utterance; got {groups.shape} for {units.shape}")
            object.__setattr__(self, "groups", np.unique(groups, return_inverse=True)[1].astype(np.int64))

    @property
    def n_units(self) -> int:
        """Independent units of the test set: groups (speakers, recordings) if given, else utterances."""
        return self.n_utts if self.groups is None else int(self.groups.max()) + 1

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

    def run_var(self, cell: CellScores) -> float:
        return self.var

    def terms(self, trained: Sequence[CellScores]) -> list[tuple[float, float]]:
        """Terms from one pooled estimate are summed before Satterthwaite: they are not independent."""
        return [(self.var * sum(1 / c.n_seeds for c in trained), self.df)] if trained else []


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


@dataclass(frozen=True)
class CellSeedVariance:
    """One cell's seed variance: its own (``own_var``, ``own_df``), the moderated value the
    statistics use (``var``, ``df``), and whether its spread is far above the other cells'."""

    var: float
    df: float
    own_var: float
    own_df: int
    unstable: bool
    p_unstable: float


@dataclass(frozen=True)
class ModeratedSeedVariance:
    """Per-cell seed variances shrunk towards a prior estimated from the stable cells (empirical
    Bayes, Smyth 2004 "limma"); unstable cells keep their own variance and are named.

    Why this and not per-contrast Welch: with 2-3 seeds a cell's own variance has 1-2 degrees of
    freedom, so Welch on the two cells' seeds is honest but nearly powerless (t quantile 12.7 at
    1 df); moderation keeps the pooled estimate's degrees of freedom where the cells agree. Two
    guards keep one cell's seeds from speaking for another: a cell whose spread is far above the
    rest (F test) leaves the prior and keeps its own variance and df, so it widens only its own
    contrasts (before, one diverged seed widened every interval of the set by ~7x); and no stable
    cell is given less than its own sample variance (moderation alone let a cell with a 3x
    larger seed std borrow the others' stability: 9.5% family-wise type-I in the simulator,
    6.0% with the floor).

    ``prior_var``/``prior_df``: the prior (``prior_df`` inf: the stable cells agree, every stable
    cell gets the pooled value); ``stable_df``: the seed degrees of freedom of the stable cells;
    ``effective_df``: the same cut by the kurtosis of the seed rates (heavy-tailed run noise makes
    a sample variance of seed rates less certain than normal seeds'); ``max_df``, the smaller, is
    the most any moderated variance may claim. ``noise``: the set's run noise (``run_noise``).
    ``by_cell``: per cell object (see ``of``).
    """

    prior_var: float
    prior_df: float
    stable_df: int
    pooled: SeedVariance
    by_cell: tuple[tuple[CellScores, CellSeedVariance], ...]
    noise: RunNoise | None = None
    effective_df: float = math.inf  # stable_df cut by the kurtosis of the seed rates (``_kurtosis_df``)

    def of(self, cell: CellScores) -> CellSeedVariance:
        for c, v in self.by_cell:
            if c is cell:
                return v
        # a trained cell the prior was not estimated with: it gets the prior (as a one-seed cell)
        return CellSeedVariance(self.prior_var, min(self.prior_df, self.max_df), math.nan, 0, False, 1.0)

    @property
    def max_df(self) -> float:
        """The most degrees of freedom a moderated variance may claim: the stable cells' seed df,
        cut where heavy-tailed run noise makes their sample variance less certain than normal seeds'."""
        return min(self.stable_df, self.effective_df)

    @property
    def unstable(self) -> tuple[CellScores, ...]:
        return tuple(c for c, v in self.by_cell if v.unstable)

    def run_var(self, cell: CellScores) -> float:
        return self.of(cell).var

    def terms(self, trained: Sequence[CellScores]) -> list[tuple[float, float]]:
        """Stable cells share the prior, so their terms are summed into one (degrees of freedom
        prior + their own, at most the stable cells' total); an unstable cell is its own term."""
        stable = [c for c in trained if not self.of(c).unstable]
        out = [(self.of(c).var / c.n_seeds, self.of(c).df) for c in trained if self.of(c).unstable]
        if stable:
            own = sum(max(self.of(c).own_df, 0) for c in stable)
            df = min(self.prior_df + own, self.max_df)
            out.append((sum(self.of(c).var / c.n_seeds for c in stable), df))
        return out


@dataclass(frozen=True)
class RunNoise:
    """The seed-specific error of single runs, per independent unit, pooled over the set's trained
    cells (``run_noise``): how heavy its tails are.

    A run's per-unit contribution to its corpus rate (edits minus the run's rate times the unit's
    reference words) minus the mean of its cell's seeds on that unit is the run's own error on that
    unit (the cell's expected errors on the unit cancel, so do whole-run level shifts). Its
    cumulants, corrected for the centring on S seeds, give per unit a variance and a fourth
    cumulant. ``kurtosis``: the excess kurtosis of one run's per-unit error over the set's units
    (what the sample kurtosis of 64 values would estimate if it could see them: runaway
    utterances, errors far above 100%, are rare, so one run's 64 utterances often show none while
    the process has them). ``rate_kurtosis``: the excess kurtosis of one run's error in its
    corpus rate (a sum over units: the fourth cumulants add). ``var``: that error's variance
    (rate units squared). ``runs``: the runs it was estimated from.
    """

    kurtosis: float
    rate_kurtosis: float
    var: float
    runs: int
    unit_k4: float = 0.0  # mean over units of one run's fourth cumulant (edits^4)
    total_units: int = 1  # reference words (or characters) of the set
    values: int = 0  # (run, unit) deviations it rests on
    df: float = math.inf  # of ``var``: sum over cells of (S - 1) x units, cut by ``kurtosis``

    def untrained_kurtosis(self, untrained_runs: int, utt_var: float, n_units: int) -> float:
        """Excess kurtosis of the units' contributions to a contrast's test-sampling term
        ``utt_var`` when ``untrained_runs`` single decodes are in it: the trained cells' run noise
        left that term for the seed term, a system decoded once keeps its own in it; its fourth
        cumulant is taken to be the trained runs' (one error process per set)."""
        if untrained_runs <= 0 or utt_var <= 0 or self.unit_k4 <= 0:
            return 0.0
        per_unit_var = utt_var * self.total_units ** 2 / n_units
        return untrained_runs * self.unit_k4 / per_unit_var ** 2


def run_noise(cells: Iterable[CellScores]) -> RunNoise | None:
    """``RunNoise`` of the trained cells with >= 2 seeds (one eval set, one metric); None without any.

    The moments are pooled over units: with 2-3 seeds a unit's own fourth cumulant cannot be
    estimated, and units of unequal variance (long and short utterances) are part of the
    kurtosis the units' contributions have (so ``rate_kurtosis`` errs on the heavy side).
    """
    m2s, m4s, ws = [], [], []
    runs, total_units, n, dof = 0, 1, 0, 0
    for c in cells:
        if not (c.trained and c.n_seeds >= 2):
            continue
        s = c.n_seeds
        contrib = c.edits - c.seed_rates[:, None] * c.units[None, :]
        if c.groups is not None:
            contrib = np.stack([np.bincount(c.groups, weights=row) for row in contrib])
        d = contrib - contrib.mean(axis=0, keepdims=True)
        m2, m4 = float((d ** 2).mean()), float((d ** 4).mean())
        # d = e_s - mean(e) over S seeds: E d^2 = (S-1)/S var(e), k4(d) = (S-1)((S-1)^3+1)/S^4 k4(e)
        m2s.append(m2 * s / (s - 1))
        m4s.append((m4 - 3 * m2 ** 2) * s ** 4 / ((s - 1) * ((s - 1) ** 3 + 1)))
        ws.append(s)
        runs += s
        total_units, n = max(int(c.units.sum()), 1), d.shape[1]
        dof += (s - 1) * n
    if not ws:
        return None
    var_u, k4_u = float(np.average(m2s, weights=ws)), max(float(np.average(m4s, weights=ws)), 0.0)
    if var_u <= 0:
        return RunNoise(0.0, 0.0, 0.0, runs, 0.0, total_units)
    kurtosis = k4_u / var_u ** 2
    return RunNoise(kurtosis if n >= SMALL_SET_UNITS else 0.0, kurtosis / n, n * var_u / total_units ** 2,
                    runs, k4_u, total_units, runs * n, _kurtosis_df(dof, kurtosis, runs * n))


def _kurtosis_df(df: float, kurtosis: float, n: int) -> float:
    """Degrees of freedom of a sample variance on ``df`` df from ``n`` values of excess kurtosis
    ``kurtosis``: var(s2) / s4 = 2 / df + kurtosis / n (Box 1953), as a scaled chi-square."""
    if kurtosis <= 0 or n <= 0 or not math.isfinite(df):
        return df
    return 2.0 / (2.0 / df + kurtosis / n)


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (y > 0): trigamma is decreasing from inf to 0."""
    return math.exp(optimize.brentq(lambda lx: special.polygamma(1, math.exp(lx)) - y, -30.0, 30.0))


def _prior(s2: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Empirical-Bayes prior (variance, df) of cell variances ``s2`` with ``d`` df (Smyth 2004,
    moments of log s2); df inf when the spread of log s2 is no more than sampling explains."""
    pooled = float((s2 * d).sum() / d.sum())
    if len(s2) < 3 or (s2 <= 0).any():
        return pooled, math.inf
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    excess = float(e.var(ddof=1) - special.polygamma(1, d / 2).mean())
    if excess <= 0:
        return pooled, math.inf
    d0 = 2 * _trigamma_inverse(excess)
    return float(math.exp(e.mean() + special.digamma(d0 / 2) - math.log(d0 / 2))), d0


def moderate_seed_variances(cells: Iterable[CellScores], alpha_unstable: float = 0.05) -> ModeratedSeedVariance | None:
    """Moderated per-cell seed variances of one eval set (see ``ModeratedSeedVariance``).

    Unstable: a cell whose seed variance is far above the pooled variance of the other stable
    cells, by a one-sided F test at ``alpha_unstable`` Bonferroni-corrected over the cells, repeated
    until no cell is added (so two diverged cells do not hide each other). None without any
    trained cell of >= 2 seeds.
    """
    cells = [c for c in cells if c.trained]
    multi = [c for c in cells if c.n_seeds >= 2]
    if not multi:
        return None
    s2 = {id(c): float(c.seed_rates.var(ddof=1)) for c in multi}
    d = {id(c): c.n_seeds - 1 for c in multi}
    flagged: dict[int, float] = {}
    p_of = {id(c): 1.0 for c in multi}
    while True:
        new = False
        stable = [c for c in multi if id(c) not in flagged]
        for c in stable:
            rest = [r for r in stable if r is not c]
            rest_df = sum(d[id(r)] for r in rest)
            if not rest_df:
                continue
            rest_var = sum(s2[id(r)] * d[id(r)] for r in rest) / rest_df
            if rest_var > 0:
                p = float(stats.f.sf(s2[id(c)] / rest_var, d[id(c)], rest_df))
            else:
                p = 0.0 if s2[id(c)] > 0 else 1.0
            p_of[id(c)] = p
            if p < alpha_unstable / len(multi) and len(stable) - 1 >= 1:
                flagged[id(c)] = p
                new = True
                break  # re-test the others without it
        if not new:
            break
    stable = [c for c in multi if id(c) not in flagged]
    sv = np.array([s2[id(c)] for c in stable])
    sd = np.array([d[id(c)] for c in stable], dtype=float)
    stable_df = int(sd.sum())
    prior_var, prior_df = _prior(sv, sd)
    pooled = SeedVariance(float((sv * sd).sum() / stable_df), stable_df, len(stable))
    noise = run_noise(stable)
    effective_df = float(stable_df)
    if noise is not None and pooled.var > 0:
        # the seed rates' kurtosis is the run noise's, diluted by its share of the seed variance
        share = min(noise.var / pooled.var, 1.0)
        effective_df = _kurtosis_df(stable_df, noise.rate_kurtosis * share ** 2, sum(c.n_seeds for c in stable))
    max_df = min(stable_df, effective_df)
    out = []
    for c in cells:
        if id(c) in flagged:
            out.append((c, CellSeedVariance(s2[id(c)], d[id(c)], s2[id(c)], d[id(c)], True, flagged[id(c)])))
        elif c.n_seeds >= 2:
            own, k = s2[id(c)], d[id(c)]
            var = prior_var if math.isinf(prior_df) else (prior_df * prior_var + k * own) / (prior_df + k)
            var = max(var, own)  # never below its own seeds' spread: a noisier cell does not borrow stability
            out.append((c, CellSeedVariance(var, min(prior_df + k, max_df), own, k, False, p_of[id(c)])))
        else:
            out.append((c, CellSeedVariance(prior_var, min(prior_df, max_df), math.nan, 0, False, 1.0)))
    return ModeratedSeedVariance(prior_var, prior_df, stable_df, pooled, tuple(out), noise, effective_df)


SeedModel = SeedVariance | ModeratedSeedVariance


def _utterance_counts(n_utts: int, n_boot: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n_utts) times each utterance is drawn per resample, as ``metrics`` draws them;
    with ``groups`` whole groups (speakers, recordings) are drawn and their utterances come along."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n_utts, np.full(n_utts, 1.0 / n_utts), size=n_boot)
    k = int(groups.max()) + 1
    return rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)[:, groups]


def _seed_noise(cell: CellScores, resampled: np.ndarray) -> float:
    """Seed-specific error variance of one run's rate (var(e_s) in the module's model).

    Across utterance resamples, a seed's deviation from the seed mean varies by var(e)(S-1)/S.
    Zero for a system decoded once, and unknown (0, so counted once more: conservative) for one seed.
    """
    if not cell.trained or cell.n_seeds < 2:
        return 0.0
    dev = resampled - resampled.mean(axis=1, keepdims=True)
    return float(dev.var(axis=0, ddof=1).sum() / (cell.n_seeds - 1))


def _run_var(cell: CellScores, model: SeedModel | None) -> float | None:
    """Variance of one training run's rate over seeds; 0 untrained, None when not measured."""
    if not cell.trained:
        return 0.0
    if model is not None:
        return model.run_var(cell)
    if cell.n_seeds >= 2:
        return float(cell.seed_rates.var(ddof=1))
    return None


def _seed_terms(cells: Sequence[CellScores], model: SeedModel | None) -> list[tuple[float, float]] | None:
    """(variance, df) terms that training adds to the (difference of) seed means; None if unmeasured."""
    if any(_run_var(c, model) is None for c in cells):
        return None
    trained = [c for c in cells if c.trained]
    if model is not None:
        return model.terms(trained)
    return [(float(c.seed_rates.var(ddof=1)) / c.n_seeds, c.n_seeds - 1) for c in trained]


def _utt_var(boot: np.ndarray, n_units: int) -> float:
    """Bootstrap variance of a statistic over n independent units, unbiased: the plug-in
    bootstrap under-states it by (n - 1) / n, which matters for a set of 4 recordings."""
    return float(boot.var(ddof=1)) * n_units / max(n_units - 1, 1)


def _unit_df(cells: Sequence[CellScores], signs: Sequence[float], utt_var: float = 0.0,
             noise: RunNoise | None = None) -> float:
    """Degrees of freedom of the utterance variance, shrunk by the kurtosis of the units'
    contributions: a few runaway utterances (errors far above 100%) make the bootstrap variance
    rest on those few, so it has far fewer than n - 1 df (var(s2) / s4 = 2 / (n - 1) + kurtosis / n).
    Below SMALL_SET_UNITS units the kurtosis is not estimable and n - 1 stands.

    The contribution of a unit to the (difference of) seed-mean corpus rates is its edits minus
    the rate times its reference units, summed over its utterances (the ratio's linearisation).
    """
    first = cells[0]
    z = np.zeros(first.n_utts)
    for c, sign in zip(cells, signs):
        e = c.edits.mean(axis=0)
        z += sign * (e - e.sum() / max(first.units.sum(), 1) * first.units)
    if first.groups is not None:
        z = np.bincount(first.groups, weights=z)
    n = len(z)
    if n < SMALL_SET_UNITS or not np.any(z != z[0]):  # a handful of units: no kurtosis to speak of
        return float(max(n - 1, 1))
    kurt = max(float(stats.kurtosis(z, fisher=True, bias=False)), 0.0)
    if noise is not None:  # what the set's runs show of the error process, where these few runs show none
        kurt = max(kurt, noise.untrained_kurtosis(sum(not c.trained for c in cells), utt_var, n))
    return float(max(1.0, min(n - 1, _kurtosis_df(n - 1, kurt, n))))


SMALL_SET_UNITS = 20  # below this many independent units, test sampling gets a t interval, not percentiles


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
    seed_variance: SeedModel | None = None,
) -> CellSummary:
    """Mean over seeds of the corpus rate, with its interval and seed spread (see ``CellSummary``)."""
    w = cell.seed_rates
    mean = float(w.mean())
    counts = _utterance_counts(cell.n_utts, n_boot, seed, cell.groups)
    resampled = cell.resampled_rates(counts)
    n = cell.n_units
    utt_means = resampled.mean(axis=1)

    draw = np.random.default_rng([seed, 1]).integers(0, cell.n_seeds, size=(n_boot, cell.n_seeds))
    two_level = _percentile(np.take_along_axis(resampled, draw, axis=1).mean(axis=1), alpha)

    seed_terms = _seed_terms([cell], seed_variance)
    if (seed_terms is None or not cell.trained) and n >= SMALL_SET_UNITS:
        (lo, hi), df = _percentile(utt_means, alpha), float(n - 1)
    else:
        noise = _seed_noise(cell, resampled) / cell.n_seeds if seed_terms and cell.trained else 0.0
        v_utt = max(0.0, _utt_var(utt_means, n) - noise)
        seed_part = seed_terms if cell.trained and seed_terms else []
        var, df = _satterthwaite([*seed_part, (v_utt, _unit_df([cell], [1.0]))])
        lo, hi, _ = _t_interval(mean, var, df, alpha)
        lo = max(lo, 0.0)  # an error rate is never negative; a t interval over a few recordings can cross 0
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
    "moderated", "per cell", "none" (not measured: utterances only) or "untrained" (neither
    system was trained). ``se``: the standard error of ``delta`` (with ``df``, what verdicts,
    equivalence and power use); ``run_sd``: the spread of one run of A minus one run of B on a
    test-set draw. P(A better) = Phi(-delta / run_sd), its interval the delta interval mapped the
    same way (one estimator: the point lies inside); ``prob_estimable`` False when single runs'
    spread is unknown (one seed and nothing to borrow from), and the P columns are then NaN.
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
    se: float = math.nan
    run_sd: float = math.nan
    n_units: int = 0
    prob_estimable: bool = True
    utt_var: float = math.nan  # the test-sampling part of se**2 (what more seeds cannot shrink)


def _no_difference(seed_variance: str) -> str:
    """Training variance was part of the test only if a trained cell's seed variance was measured."""
    return NOT_RESOLVED if seed_variance in ("pooled", "moderated", "per cell") else NOT_RESOLVED_SAMPLING


def compare(
    a: CellScores,
    b: CellScores,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    seed_variance: SeedModel | None = None,
) -> Comparison:
    """Is A's rate different from B's beyond training variance and test sampling? (module docstring).

    ``seed_variance`` (from ``pool_seed_variance`` over the study's cells) replaces the per-pair
    seed variance; without it each trained cell needs >= 2 seeds for training variance to count.
    """
    if a.n_utts != b.n_utts or not np.array_equal(a.units, b.units):
        raise ValueError("compare: both cells must be scored on the same utterances with the same "
                         "references (reference units differ)")
    return _compare(a, b, _utterance_counts(a.n_utts, n_boot, seed, _groups(a, b)), alpha, seed_variance)


def compare_pairs(
    cells: Sequence[CellScores],
    pairs: Sequence[tuple[int, int]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    seed_variance: SeedModel | None = None,
) -> list[Comparison]:
    """``compare(cells[i], cells[j])`` for each pair, all on one shared utterance resample (the
    same draws ``compare`` makes with this ``seed``, drawn once)."""
    if not pairs:
        return []
    first = cells[pairs[0][0]]
    for i, j in pairs:
        if not np.array_equal(cells[i].units, first.units) or not np.array_equal(cells[j].units, first.units):
            raise ValueError("compare_pairs: every cell must be scored on the same utterances with the same references")
        _groups(cells[i], first), _groups(cells[j], first)
    counts = _utterance_counts(first.n_utts, n_boot, seed, first.groups)
    return [_compare(cells[i], cells[j], counts, alpha, seed_variance) for i, j in pairs]


def _groups(a: CellScores, b: CellScores) -> np.ndarray | None:
    if (a.groups is None) != (b.groups is None) or (a.groups is not None and not np.array_equal(a.groups, b.groups)):
        raise ValueError("compare: both cells must group their utterances into the same units")
    return a.groups


def _compare(a: CellScores, b: CellScores, counts: np.ndarray, alpha: float,
             seed_variance: SeedModel | None) -> Comparison:
    ra, rb = a.resampled_rates(counts), b.resampled_rates(counts)
    delta = float(a.seed_rates.mean() - b.seed_rates.mean())
    boot_delta = ra.mean(axis=1) - rb.mean(axis=1)

    n = a.n_units
    seed_terms = _seed_terms([a, b], seed_variance)
    if seed_terms is None:  # test sampling only: the paired bootstrap of ``metrics.paired_test``
        # p from Student t on the bootstrap variance (what verdicts and families use: a resampling p
        # bottoms out at 2 / (n_boot + 1), which no Holm family of 20+ contrasts can pass)
        var, df = _utt_var(boot_delta, n), _unit_df([a, b], [1.0, -1.0])
        lo, hi, p = _t_interval(delta, var, df, alpha)
        if n >= SMALL_SET_UNITS:  # the percentile interval of ``metrics.paired_test``; a handful of
            lo, hi = _percentile(boot_delta, alpha)  # recordings keeps the t interval (percentiles under-cover)
        run_sd = math.nan
        source = "none"
    else:
        noise = sum(_seed_noise(c, r) / c.n_seeds for c, r in ((a, ra), (b, rb)))
        v_utt = max(0.0, _utt_var(boot_delta, n) - noise)
        run = seed_variance.noise if isinstance(seed_variance, ModeratedSeedVariance) else run_noise([a, b])
        floor = sum(not c.trained for c in (a, b)) * run.var if run is not None else 0.0
        if floor > v_utt:  # a system decoded once: at least the set's run noise, on that estimate's df
            v_utt, utt_df = floor, min(run.df, float(n - 1) * run.runs)
        else:
            utt_df = _unit_df([a, b], [1.0, -1.0], v_utt, run)
        var, df = _satterthwaite([*seed_terms, (v_utt, utt_df)])
        lo, hi, p = _t_interval(delta, var, df, alpha)
        run_sd = math.sqrt(_run_var(a, seed_variance) + _run_var(b, seed_variance) + v_utt)
        source = ("untrained" if not (a.trained or b.trained)
                  else "moderated" if isinstance(seed_variance, ModeratedSeedVariance)
                  else "pooled" if seed_variance is not None else "per cell")

    estimable = run_sd > 0
    p_point, p_lo, p_hi = prob_better(delta, lo, hi, run_sd) if estimable else (math.nan,) * 3
    return Comparison(
        delta=delta, ci_low=lo, ci_high=hi, p_value=p, df=df,
        prob_a_better=p_point, prob_ci_low=p_lo, prob_ci_high=p_hi,
        verdict=A_BETTER if hi < 0 else B_BETTER if lo > 0 else _no_difference(source),
        training_variance_measured=seed_terms is not None, seed_variance=source,
        n_seeds_a=a.n_seeds, n_seeds_b=b.n_seeds, n_utts=a.n_utts, alpha=alpha,
        se=math.sqrt(var), run_sd=run_sd, n_units=n, prob_estimable=estimable,
        utt_var=var if seed_terms is None else v_utt,
    )


def prob_better(delta: float, lo: float, hi: float, run_sd: float) -> tuple[float, float, float]:
    """P(a run of A beats a run of B) = Phi(-delta / run_sd), and the interval [lo, hi] of delta
    mapped the same way: one estimator, so the point lies inside its interval."""
    return (float(special.ndtr(-delta / run_sd)), float(special.ndtr(-hi / run_sd)),
            float(special.ndtr(-lo / run_sd)))


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
    seed_variance: ModeratedSeedVariance | SeedVariance | None
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


def holm(p: Sequence[float]) -> list[float]:
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

    ``pool``: per-cell seed variances moderated towards the value pooled over all ``cells``
    (``moderate_seed_variances``); unstable cells keep their own.
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
    pooled = moderate_seed_variances(cells.values()) if pool else None
    first = cells[pairs[0][0]] if pairs else None
    counts = _utterance_counts(len(units[0]), n_boot, seed, first.groups) if pairs else None
    comps = [_compare(cells[a], cells[b], counts, alpha, pooled) for a, b in pairs]
    raw = [c.p_value for c in comps]
    adjusted = holm(raw) if adjust == "holm" else raw
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
    prob = f"P({finding.a} better) = {c.prob_a_better:.2f}; " if c.prob_estimable else ""
    detail = (f"Δ{metric} {_pts(c.delta)} pts, unadjusted {level}% CI {_pts(c.ci_low)} to {_pts(c.ci_high)}; "
              f"{prob}{seeds}")
    if finding.p_adjusted != c.p_value:
        detail += f"; Holm-adjusted p = {finding.p_adjusted:.3f}"
    if finding.verdict == A_BETTER:
        head = f"{finding.a} has a lower {metric} than {finding.b}"
    elif finding.verdict == B_BETTER:
        head = f"{finding.a} has a higher {metric} than {finding.b}"
    else:
        head = f"{finding.a} vs {finding.b}: not resolved"
    if c.seed_variance == "untrained":
        return f"{head} beyond test sampling ({detail})."
    if c.training_variance_measured:
        return f"{head} beyond training variance ({detail})."
    return (f"{head} ({detail}); training variance was not measured (one seed), "
            "so this covers test sampling only.")
