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


# ---------------------------------------------------------------- realistic grid studies (issue 23)

from dataclasses import dataclass, field  # noqa: E402

from borealis_eval.evaluate.variance import compare_pairs, moderate_seed_variances  # noqa: E402
from borealis_eval.evaluate.verdicts import DIFFERS, family_verdicts  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    """A simulated 2 x 3 grid study (factor A: 2 levels, factor B: 3 levels) and a plain baseline.

    ``seed_sds``: seed std per cell (heteroscedastic cells); ``diverged``: one seed of cell 0 this
    many points above its level; ``interaction_sd``: per (cell, utterance) log-normal effect shared
    by a cell's seeds (cell x utterance interaction: the cells are equal on average over utterances,
    not on each); ``heavy_tail``: a share of (seed, utterance) pairs runs away (insertions, errors
    of 100-400% of the words); ``n_utts`` and ``words``: the set's size and utterance length;
    ``speakers``: utterances clustered by speaker (a speaker's difficulty and its interaction with
    each cell), analysed with the speakers as the independent units. ``uncapped``: word errors
    ~ Poisson(words x p) with no cap on p (insertions: an utterance can exceed 100%, as cells at
    60-130% WER do) instead of Binomial(words, min(p, 0.95)). ``adaptive``: (initial, max,
    target) seeds design of issue 23 item 7 (``adaptive_seeds``): ``max`` seeds are simulated,
    the design picks how many of them the analysis sees.
    """

    name: str
    n_seeds: int = 3
    level: float = 0.30
    seed_sd: float = 0.02
    seed_sds: tuple[float, ...] | None = None
    diverged: float = 0.0
    interaction_sd: float = 0.0
    heavy_tail: float = 0.0
    n_utts: int = 64
    words: tuple[int, int] = (5, 16)
    speakers: int = 0
    margin: float = 0.02
    cells: int = 6
    uncapped: bool = False
    adaptive: tuple[int, int, float] | None = None
    extra: dict = field(default_factory=dict)


GRID = [(a, b) for a in range(2) for b in range(3)]  # cell index = 3 a + b
FACTOR_PAIRS = ([(3 * a + b, 3 * a) for a in range(2) for b in (1, 2)]  # B against its first level
                + [(3 + b, b) for b in range(3)])  # A against its first level
PLANTED = 1  # the cell (a0, b1) that carries a planted effect; its contrast is FACTOR_PAIRS[0]


def simulate_grid(rng: np.random.Generator, sc: Scenario, effect: float = 0.0) -> list[CellScores]:
    """Six trained cells (grid order) and the baseline last, all scored on one simulated test set."""
    n = sc.n_utts
    words = rng.integers(sc.words[0], sc.words[1], n)
    difficulty = rng.gamma(2.0, 0.5, n)
    groups = None
    if sc.speakers:
        groups = np.arange(n) % sc.speakers
        difficulty = difficulty * rng.gamma(4.0, 0.25, sc.speakers)[groups]  # speakers differ in difficulty

    def cell(levels: np.ndarray, trained: bool) -> CellScores:
        p = levels[:, None] * difficulty[None, :]
        if sc.interaction_sd:
            p = p * np.exp(rng.normal(0.0, sc.interaction_sd, n) - sc.interaction_sd ** 2 / 2)[None, :]
        if sc.speakers:  # each speaker suits each cell differently
            p = p * np.exp(rng.normal(0.0, 0.3, sc.speakers) - 0.045)[groups][None, :]
        p = p * np.exp(rng.normal(0.0, 0.3, (len(levels), n)))
        edits = (rng.poisson(words[None, :] * p) if sc.uncapped
                 else rng.binomial(words[None, :], np.clip(p, 0.0, 0.95)))
        if sc.heavy_tail:
            runaway = rng.random(edits.shape) < sc.heavy_tail
            edits = edits + runaway * np.round(words[None, :] * rng.uniform(1.0, 4.0, edits.shape)).astype(int)
        return CellScores(edits, words, trained=trained, groups=groups)

    out = []
    n_seeds = sc.adaptive[1] if sc.adaptive else sc.n_seeds
    for c in range(sc.cells):
        sd = sc.seed_sds[c] if sc.seed_sds else sc.seed_sd
        levels = sc.level + (effect if c == PLANTED else 0.0) + rng.normal(0.0, sd, n_seeds)
        if c == 0 and sc.diverged:
            levels[-1] += sc.diverged
        out.append(cell(np.maximum(levels, 0.01), True))
    out.append(cell(np.array([sc.level]), False))
    return out


def headline_family(cells: list[CellScores], margin: float, seed: int = 0, n_boot: int = 400):
    """The report's headline family on one simulated set: factor contrasts and every cell against
    the baseline, moderated seed variances, Holm; returns the verdicts (factor contrasts first)."""
    model = moderate_seed_variances(cells[:-1])
    pairs = FACTOR_PAIRS + [(c, len(cells) - 1) for c in range(len(cells) - 1)]
    comps = compare_pairs(cells, pairs, seed=seed, n_boot=n_boot, seed_variance=model)
    return family_verdicts(comps, [margin] * len(comps), "headline")


def family_fires(verdicts) -> bool:
    """Any claim of a difference in the family (under the null every one is false)."""
    return any(v.word == DIFFERS for v in verdicts)


def found_planted(verdicts, effect: float) -> bool:
    """The planted contrast is declared different in the planted direction."""
    v = verdicts[0]
    return v.word == DIFFERS and v.direction == (-1 if effect < 0 else 1)


def first_seeds(cell: CellScores, k: int) -> CellScores:
    """The cell as it stands after its first ``k`` seeds."""
    return CellScores(cell.edits[:k], cell.units, trained=cell.trained, groups=cell.groups) if cell.trained else cell


def adaptive_seeds(cells: list[CellScores], initial: int, max_seeds: int, target: float, n_boot: int = 200,
                   seed: int = 0, estimator: str = "pooled") -> int:
    """Seeds per cell chosen by the harness's adaptive design (issue 23 item 7) from the first
    ``initial`` seeds: ``evaluate.adaptive.decide_seeds`` (the seed variance re-estimated blind to
    the contrasts, 80% power at ``target`` at Holm's first-step level over the headline family,
    capped at ``max_seeds``), fed as the sweep feeds it: each first-stage run's corpus rate, and the
    test-sampling se of a contrast as the median utterance term of the factor contrasts."""
    from borealis_eval.evaluate.adaptive import SeedResult, decide_seeds

    pilot = [first_seeds(c, initial) for c in cells]
    trained = [c for c in pilot if c.trained]
    results = [SeedResult("set", f"cell{k}", s, float(w)) for k, c in enumerate(trained)
               for s, w in enumerate(c.seed_rates)]
    utt = sorted(c.utt_var for c in compare_pairs(pilot, FACTOR_PAIRS, seed=seed, n_boot=n_boot))
    family = len(FACTOR_PAIRS) + len(trained)  # adaptive.headline_family_size of this grid with a baseline
    decision = decide_seeds(results, {"set": float(np.sqrt(utt[len(utt) // 2]))}, initial=initial,
                            max_seeds=max_seeds, target=target, family_size=family, estimator=estimator)
    return decision.final


def judge(cells: list[CellScores], sc: Scenario, seed: int = 0, n_boot: int = 400):
    """The headline family of one simulated study as the harness would run it: with the adaptive
    design, on the seeds it chose. Returns (verdicts, seeds per cell analysed)."""
    seeds = sc.n_seeds
    if sc.adaptive:
        seeds = adaptive_seeds(cells, sc.adaptive[0], sc.adaptive[1], sc.adaptive[2], n_boot=n_boot, seed=seed)
        cells = [first_seeds(c, seeds) for c in cells]
    return headline_family(cells, sc.margin, seed=seed, n_boot=n_boot), seeds
