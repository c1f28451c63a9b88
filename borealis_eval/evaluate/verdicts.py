"""Three verdicts over a family of comparisons: differs, equivalent within ±m, not resolved.

Input: ``variance.Comparison`` objects (a difference of seed-mean rates with its standard error
and degrees of freedom over seeds x utterances), the practical margin of each, and the family
they are claimed in together. Output: one ``Verdict`` per comparison. Pure functions; the
distributions come from scipy (``scipy.special``'s Student t and non-central t ufuncs).

- **differs** (with a direction): the difference test's p, Holm-adjusted over the family, is
  below alpha.
- **equivalent within ±m**: two one-sided tests (TOST, Schuirmann 1987) at the margin m reject
  both |delta| >= m; the TOST p (the larger one-sided p) is Holm-adjusted over the same family.
- **not resolved**: neither. It carries the effect the study would have detected with 80% power
  at the family's per-test level alpha / m (Bonferroni: the level Holm's first step uses, so the
  stated effect is one the corrected test really reaches), from the non-central t.
- **Intervals agree with verdicts.** The interval shown is at the level the Holm step used for
  that comparison: a comparison with raw p and adjusted p~ is declared different exactly when
  p < alpha * p / p~, so its interval is computed at confidence 1 - alpha * p / p~ and excludes 0
  exactly when the verdict says "differs". ``level`` says which; ``unadjusted`` intervals are
  labelled as such by the report. P(A better) is mapped from that same interval (one estimator).
- A comparison whose training variance was not measured (one seed) gets the same words with
  ``sampling_only``: they cover test-utterance sampling only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import optimize, special

from borealis_eval.evaluate.variance import Comparison, holm, prob_better

__all__ = ["DIFFERS", "EQUIVALENT", "NO_POWER", "NO_POWER_WORDS", "NOT_RESOLVED", "POWER", "Verdict", "detectable_effect",
           "family_verdicts", "holm", "power", "reach", "tost_p", "words"]

DIFFERS = "differs"
EQUIVALENT = "equivalent"
NOT_RESOLVED = "not resolved"
POWER = 0.80
# Rate units. A contrast that would find only a true difference above 100 pts of WER has no usable
# power: the report says so instead of printing "≥ 21284 pts" (an unstable cell's own seed variance,
# estimated from 2 seeds, has 1 degree of freedom, and its t quantile at a Holm level is huge).
NO_POWER = 1.0
NO_POWER_WORDS = f"only effects over {100 * NO_POWER:.0f} pts"


def reach(detectable: float, digits: int = 1) -> str:
    """What a contrast would detect at 80% power, in words: '≥ 14.2 pts', or NO_POWER_WORDS."""
    return NO_POWER_WORDS if detectable > NO_POWER else f"≥ {100 * detectable:.{digits}f} pts"


def tost_p(delta: float, se: float, df: float, margin: float) -> float:
    """TOST p for |true delta| < margin: the larger of the two one-sided t-test p-values."""
    if margin <= 0:
        return 1.0
    if se <= 0:
        return 0.0 if abs(delta) < margin else 1.0
    # scipy.special's t cdf, called directly (a frozen scipy.stats.t is built anew per call, and
    # this runs for every contrast of every report and simulated study)
    cdf = (lambda x: special.stdtr(df, x)) if math.isfinite(df) else special.ndtr
    return float(max(cdf(-(delta + margin) / se), cdf((delta - margin) / se)))


def power(effect: float, se: float, df: float, alpha: float) -> float:
    """Power of the two-sided t test at level alpha against a true difference ``effect``
    (non-central t; ``scipy.special``'s ufuncs, called directly: this runs in every verdict)."""
    if se <= 0:
        return 1.0 if effect else alpha
    nc = abs(effect) / se
    if not math.isfinite(df):
        z = special.ndtri(1 - alpha / 2)
        return float(special.ndtr(nc - z) + special.ndtr(-z - nc))
    tc = special.stdtrit(df, 1 - alpha / 2)
    upper = float(1 - special.nctdtr(df, nc, tc))
    lower = float(special.nctdtr(df, nc, -tc))
    # the non-central t's far tails can come back NaN (scipy 1.17: df 3, nc 12); the wrong-side tail
    # is then negligible (< 1e-15), and an upper tail far past the critical value is 1
    if not math.isfinite(lower):
        lower = 0.0
    if not math.isfinite(upper):
        upper = 1.0 if nc > tc else alpha / 2
    return min(max(upper + lower, 0.0), 1.0)


def detectable_effect(se: float, df: float, alpha: float, target: float = POWER) -> float:
    """Smallest true difference the two-sided t test at level alpha finds with probability ``target``."""
    if se <= 0:
        return 0.0
    hi = se
    while power(hi, se, df, alpha) < target:
        hi *= 2
        if hi > 1e6 * se:
            return math.inf
    return float(optimize.brentq(lambda e: power(e, se, df, alpha) - target, 0.0, hi, xtol=1e-4 * se))


@dataclass(frozen=True)
class Verdict:
    """One comparison judged within its family (``family`` names it, ``family_size`` counts it).

    ``word``: DIFFERS, EQUIVALENT or NOT_RESOLVED; ``direction``: -1 (A lower), +1 (A higher), 0.
    ``p_adjusted`` / ``p_equivalence``: Holm-adjusted difference and TOST p over the family.
    ``ci_low``/``ci_high``: the interval at confidence ``level`` (the Holm step's level, see the
    module docstring); ``prob_*``: P(A better) mapped from it, NaN when not estimable.
    ``detectable``: the effect (rate units) found with 80% power at alpha / family_size.
    """

    word: str
    direction: int
    p_raw: float
    p_adjusted: float
    p_equivalence: float
    margin: float
    detectable: float
    ci_low: float
    ci_high: float
    level: float
    prob_a_better: float
    prob_ci_low: float
    prob_ci_high: float
    family: str
    family_size: int
    sampling_only: bool

    @property
    def differs(self) -> bool:
        return self.word == DIFFERS


def family_verdicts(comparisons: Sequence[Comparison], margins: Sequence[float], family: str,
                    alpha: float = 0.05, adjust: bool = True) -> list[Verdict]:
    """Judge ``comparisons`` as one family of claims at family-wise level ``alpha``.

    ``margins``: the practical margin (rate units) of each; ``adjust`` False keeps each at level
    alpha (its intervals are then the unadjusted ones).
    """
    if len(margins) != len(comparisons):
        raise ValueError(f"one margin per comparison: got {len(margins)} for {len(comparisons)}")
    m = len(comparisons)
    raw = [c.p_value for c in comparisons]
    eq = [tost_p(c.delta, c.se, c.df, mg) for c, mg in zip(comparisons, margins)]
    adj, adj_eq = (holm(raw), holm(eq)) if adjust else (raw, eq)
    out = []
    for c, mg, p, pa, pe in zip(comparisons, margins, raw, adj, adj_eq):
        level_alpha = alpha if not adjust else (alpha * p / pa if pa > 0 else alpha / m)
        if c.se > 0 and math.isfinite(c.se):
            t = (special.stdtrit(c.df, 1 - level_alpha / 2) if math.isfinite(c.df)
                 else special.ndtri(1 - level_alpha / 2))
            lo, hi = c.delta - t * c.se, c.delta + t * c.se
        else:
            lo, hi = c.ci_low, c.ci_high
        if pa < alpha:
            word, direction = DIFFERS, (-1 if c.delta < 0 else 1)
        elif pe < alpha:
            word, direction = EQUIVALENT, 0
        else:
            word, direction = NOT_RESOLVED, 0
        if c.prob_estimable:
            pb, pb_lo, pb_hi = prob_better(c.delta, lo, hi, c.run_sd)
        else:
            pb = pb_lo = pb_hi = math.nan
        out.append(Verdict(
            word=word, direction=direction, p_raw=p, p_adjusted=pa, p_equivalence=pe, margin=mg,
            detectable=detectable_effect(c.se, c.df, alpha / m if adjust else alpha),
            ci_low=lo, ci_high=hi, level=1 - level_alpha, prob_a_better=pb, prob_ci_low=pb_lo,
            prob_ci_high=pb_hi, family=family, family_size=m, sampling_only=not c.training_variance_measured))
    return out


def words(v: Verdict, a: str = "A", b: str = "B") -> str:
    """The verdict in the report's words (rates in percentage points)."""
    if v.word == DIFFERS:
        text = f"differs: {a} {'lower' if v.direction < 0 else 'higher'}"
    elif v.word == EQUIVALENT:
        text = f"equivalent within ±{100 * v.margin:g} pts"
    else:
        text = f"not resolved: would detect {reach(v.detectable)} at {POWER:.0%} power"
    return text + (" (test sampling only)" if v.sampling_only else "")
