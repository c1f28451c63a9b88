"""Simulated studies for the seed x utterance statistics (tests/test_variance.py and
benchmarks/variance_calibration.py): per-seed, per-utterance word errors with known truth."""

from __future__ import annotations

import numpy as np

from borealis_eval.evaluate.metrics import UttScore, paired_test
from borealis_eval.evaluate.variance import CellScores


def simulate_study(
    rng: np.random.Generator,
    n_cells: int,
    n_seeds: int,
    *,
    level: float = 0.30,
    seed_sd: float = 0.03,
    n_utts: int = 64,
    effects: list[float] | None = None,
    seed_sds: list[float] | None = None,
    baseline: bool = False,
) -> list[CellScores]:
    """Cells scored on one simulated test set; ``baseline`` appends an untrained cell at ``level``.

    Per-utterance word errors ~ Binomial(words, p) with p = seed level x utterance difficulty x
    a per-(seed, utterance) log-normal jitter (clipped to 0.95): seed-level variance, shared
    utterance difficulty and seed-specific utterance noise, as in a real study.
    """
    words = rng.integers(5, 16, n_utts)
    difficulty = rng.gamma(2.0, 0.5, n_utts)  # mean 1: some utterances are much harder

    def cell(levels: np.ndarray, trained: bool) -> CellScores:
        jitter = np.exp(rng.normal(0.0, 0.3, (len(levels), n_utts)))
        p = np.clip(levels[:, None] * difficulty[None, :] * jitter, 0.0, 0.95)
        return CellScores(rng.binomial(words[None, :], p), words, trained=trained)

    cells = []
    for c in range(n_cells):
        mu = level + (effects[c] if effects else 0.0)
        sd = seed_sds[c] if seed_sds else seed_sd
        cells.append(cell(mu + rng.normal(0.0, sd, n_seeds), True))
    if baseline:
        cells.append(cell(np.array([level]), False))
    return cells


def seed_utt_scores(cell: CellScores, seed: int = 0) -> list[UttScore]:
    """One seed's row as ``metrics.UttScore`` (its edits as substitutions), for the old functions."""
    return [UttScore(int(n), int(n), int(e), 0, 0, 0, 0, 0) for e, n in zip(cell.edits[seed], cell.units)]


def old_paired_p(a: CellScores, b: CellScores, seed: int) -> float:
    """The pre-seed harness: paired bootstrap over utterances of seed 0 of A vs seed 0 of B."""
    return paired_test(seed_utt_scores(a), seed_utt_scores(b), "wer", n_boot=1000, seed=seed).p_value
