"""Seeds a study needs: the power of a between-cell contrast as a function of seeds per cell.

Pure functions for planning (``borealis-eval plan``): from a seed standard deviation (earlier
runs, or a stated prior) and the test-sampling standard error of a contrast on the eval set,
the standard error of a contrast with S seeds per cell is

    se(S)^2 = 2 sd_seed^2 / S + se_utt^2

(the seed means of two cells, plus the test-set term that more seeds on the same utterances
cannot shrink), on about n_cells (S - 1) degrees of freedom (the moderated seed variance's, as
``variance.moderate_seed_variances`` uses them when cells agree). Power and the detectable effect
come from ``verdicts.power`` (non-central t) at the family's per-test level alpha / m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from borealis_eval.evaluate.verdicts import POWER, detectable_effect, power

__all__ = ["SeedPlan", "contrast_se", "seeds_needed"]


def contrast_se(seed_sd: float, utt_se: float, seeds: int) -> float:
    """Standard error of the difference of two cells' seed means with ``seeds`` seeds each."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return math.sqrt(2 * seed_sd ** 2 / seeds + utt_se ** 2)


@dataclass(frozen=True)
class SeedPlan:
    """``detectable``: the effect found with 80% power at ``seeds`` seeds per cell; ``needed``:
    the seeds per cell for 80% power at ``target`` (None: not reachable within ``max_seeds``);
    ``floor``: the effect found with 80% power with infinitely many seeds (the test set's own
    sampling error): a target at or below it is out of reach however many seeds are trained."""

    seeds: int
    detectable: float
    target: float
    needed: int | None
    alpha: float
    floor: float = math.nan

    @property
    def reachable(self) -> bool:
        return self.target > self.floor


def seeds_needed(seed_sd: float, utt_se: float, target: float, *, seeds: int, n_cells: int, alpha: float,
                 max_seeds: int = 64, target_power: float = POWER) -> SeedPlan:
    """The detectable effect at ``seeds`` and the seeds per cell for ``target_power`` at ``target``.

    All effects and standard deviations in rate units (0.05 = 5 pts); ``alpha`` is the per-test
    level (the family's alpha / m).
    """
    if seed_sd < 0 or utt_se < 0 or target <= 0:
        raise ValueError("seed_sd and utt_se must be >= 0 and the target effect > 0")

    def df(s: int) -> float:
        return max(n_cells * (s - 1), 1) if seed_sd > 0 else math.inf

    needed = next((s for s in range(2, max_seeds + 1)
                   if power(target, contrast_se(seed_sd, utt_se, s), df(s), alpha) >= target_power), None)
    return SeedPlan(seeds, detectable_effect(contrast_se(seed_sd, utt_se, seeds), df(seeds), alpha, target_power),
                    target, needed, alpha, detectable_effect(utt_se, math.inf, alpha, target_power))
