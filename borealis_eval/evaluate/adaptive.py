"""The adaptive seed design's decision rule: how many seeds per cell a study runs after its first stage.

An ablation may give ``seeds: {initial: 2, max: 6, target_pts: 5}`` (config/schema.py
``AdaptiveSeeds``). The sweep trains ``initial`` seeds of every cell, then calls ``decide_seeds``
once with what they scored, adds seeds to *every* cell up to the number it returns, and analyses
once at the end with the usual statistics. This module is pure (no MLflow, no files): the sweep,
the calibration simulator and the tests call the same function.

This is an internal pilot (Wittes & Brittain 1990): the first stage is part of the study, and
only a nuisance parameter, the seed variance, is re-estimated from it. Kieser & Friede (2003)
show that the re-estimation leaves the type-I error of the final test essentially unchanged
when it is *blind*: it never looks at the treatment contrasts. Two estimators, both blind to the
contrasts:

- ``pooled`` (the default): the within-cell seed variance pooled over the cells of a set,
  sum over cells of sum_s (W_cs - mean_c)^2 / sum_c (S_c - 1). It needs to know which runs share
  a cell, never *which* cell is which or how far apart cells are: any shift of a cell's mean, and
  any renaming or reordering of the cells, leaves it unchanged; under normal errors it is
  independent of the cell means the final tests compare. Chosen as the default because in an
  ablation grid the cells often differ by far more than a seed's spread (a language mix moves
  test_ru by tens of points): a lumped estimate then counts those differences as seed noise
  and always asks for ``max``.
- ``lumped``: Kieser & Friede's one-sample variance, every seed result of the set around the set's
  overall mean (ddof 1): blind even to which runs share a cell (any permutation of results across
  cells leaves it unchanged), but biased upwards by the spread of the cell means.

Per eval set, with that variance, the set's test-sampling standard error of a contrast
(``utt_se``: what more seeds on the same utterances cannot shrink) and the headline family's
per-test level ``alpha / family_size`` (``headline_family_size``: the report's headline family,
every factor contrast and every cell against the main baseline on every set),
``evaluate.power.seeds_needed`` gives the seeds per cell for 80% power at ``target``. Across sets
the rule takes the **maximum** over the sets where the target is reachable at all (every set is
in the headline family, so every set's contrasts should get the power), capped at ``max``. A set
whose own test-sampling error already keeps the target out of reach with infinitely many seeds
is left out of the maximum and named: more seeds cannot buy it. Never fewer than ``initial``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from borealis_eval.evaluate.power import seeds_needed
from borealis_eval.evaluate.variance import CellScores, compare_pairs
from borealis_eval.evaluate.verdicts import POWER, detectable_effect

__all__ = ["ESTIMATORS", "SeedDecision", "SeedResult", "SetDecision", "blind_seed_variance", "decide_seeds",
           "factor_pairs", "first_stage_inputs", "headline_family_size"]

ESTIMATORS = ("pooled", "lumped")


class SeedResult(NamedTuple):
    """One finished run's corpus error rate (rate units, 0.05 = 5 pts) on one eval set."""

    set: str
    cell: str
    seed: int
    wer: float


@dataclass(frozen=True)
class SetDecision:
    """What one eval set asks for. ``needed``: seeds per cell for 80% power at the target (None:
    more than ``max``, or ``reachable`` False: not with any number of seeds)."""

    set: str
    seed_var: float
    df: int
    utt_se: float
    detectable_initial: float  # rate units, at ``initial`` seeds
    needed: int | None
    reachable: bool

    @property
    def seed_sd(self) -> float:
        return math.sqrt(self.seed_var)


@dataclass(frozen=True)
class SeedDecision:
    """The design's outcome: ``final`` seeds per cell (``added`` = final - initial), from
    ``deciding_set``'s variance (None: no set could use more seeds), and why, in one sentence."""

    initial: int
    max: int
    target: float  # rate units
    final: int
    estimator: str
    alpha: float  # the per-test level the power was computed at (family alpha / family size)
    family_size: int
    n_cells: int
    deciding_set: str | None
    reason: str
    sets: tuple[SetDecision, ...]

    @property
    def added(self) -> int:
        return self.final - self.initial

    def of(self, set_name: str) -> SetDecision | None:
        return next((s for s in self.sets if s.set == set_name), None)

    def to_json(self) -> str:
        d = asdict(self)
        d["added"] = self.added
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SeedDecision:
        d = json.loads(text)
        d.pop("added", None)
        d["sets"] = tuple(SetDecision(**s) for s in d["sets"])
        return cls(**d)


def factor_pairs(cells: Sequence[tuple[str, Mapping[str, object]]]) -> list[tuple[str, str, str]]:
    """(cell, reference cell, axis) for every pair of cells that differ in exactly one axis, the
    reference at that axis's first level (grid order). ``cells``: (key, {axis: value}) without
    the seed, in grid order. The report's factor contrasts (report/cells.py) are these pairs."""
    names: list[str] = []
    for _, axes in cells:
        names += [a for a in axes if a not in names]
    varying = [a for a in names if len({str(axes.get(a)) for _, axes in cells}) > 1]
    pairs = []
    for axis in varying:
        first = next(axes.get(axis) for _, axes in cells)
        for key, axes in cells:
            if axes.get(axis) == first:
                continue
            ref = next((k for k, r in cells if r.get(axis) == first
                        and all(r.get(a) == axes.get(a) for a in axes if a != axis)), None)
            if ref is not None:
                pairs.append((key, ref, axis))
    return pairs


def headline_family_size(cells: Sequence[tuple[str, Mapping[str, object]]], n_sets: int, baseline: bool) -> int:
    """Contrasts in the report's headline family: every factor contrast and (with a main baseline)
    every cell against it, on each of ``n_sets`` eval sets."""
    return (len(factor_pairs(cells)) + (len(cells) if baseline else 0)) * n_sets


def blind_seed_variance(results: Iterable[SeedResult], estimator: str = "pooled") -> tuple[float, int]:
    """(variance, degrees of freedom) of one set's seed results, blind to the contrasts (module
    docstring). Raises ValueError without a degree of freedom (no cell with two seeds)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    results = list(results)
    if estimator == "lumped":
        w = np.array([r.wer for r in results], dtype=float)
        if len(w) < 2:
            raise ValueError("the lumped seed variance needs at least two seed results")
        return float(w.var(ddof=1)), len(w) - 1
    by_cell: dict[str, list[float]] = {}
    for r in results:
        by_cell.setdefault(r.cell, []).append(r.wer)
    ss, df = 0.0, 0
    for w in by_cell.values():
        a = np.asarray(w, dtype=float)
        ss += float(((a - a.mean()) ** 2).sum())
        df += len(a) - 1
    if df == 0:
        raise ValueError("the pooled seed variance needs a cell with at least two seeds")
    return ss / df, df


def _pts(x: float) -> str:
    return f"{100 * x:.1f} pts"


def decide_seeds(results: Iterable[SeedResult], utt_se: Mapping[str, float], *, initial: int, max_seeds: int,
                 target: float, family_size: int, alpha: float = 0.05, estimator: str = "pooled",
                 target_power: float = POWER) -> SeedDecision:
    """Seeds per cell the study should end with (see the module docstring).

    ``results``: every first-stage run's corpus rate per eval set (rate units); ``utt_se``: per
    eval set, the test-sampling standard error of a contrast (rate units); ``target``: the effect
    to detect (rate units); ``family_size``: contrasts the headline's Holm correction runs over.
    Sets missing from ``utt_se`` are not used.
    """
    if not 2 <= initial <= max_seeds:
        raise ValueError(f"need 2 <= initial <= max, got initial {initial}, max {max_seeds}")
    if target <= 0 or family_size < 1 or not 0 < alpha < 1:
        raise ValueError("target must be > 0, family_size >= 1 and 0 < alpha < 1")
    by_set: dict[str, list[SeedResult]] = {}
    for r in results:
        r = SeedResult(*r)
        if not math.isfinite(r.wer):
            raise ValueError(f"seed result is not finite: {r}")
        by_set.setdefault(r.set, []).append(r)
    level = alpha / family_size
    n_cells = max((len({r.cell for r in rs}) for rs in by_set.values()), default=0)
    sets = []
    for name in sorted(by_set):
        if name not in utt_se:
            continue
        var, df = blind_seed_variance(by_set[name], estimator)
        se_u = float(utt_se[name])
        plan = seeds_needed(math.sqrt(var), se_u, target, seeds=initial, n_cells=len({r.cell for r in by_set[name]}),
                            alpha=level, max_seeds=max_seeds, target_power=target_power)
        reachable = detectable_effect(se_u, math.inf, level, target_power) <= target
        sets.append(SetDecision(name, var, df, se_u, plan.detectable, plan.needed if reachable else None, reachable))
    if not sets:
        raise ValueError("no eval set has both seed results and a test-sampling SE")
    usable = [s for s in sets if s.reachable]
    asks = {s.set: max_seeds if s.needed is None else max(s.needed, initial) for s in usable}
    out = dict(initial=initial, max=max_seeds, target=target, estimator=estimator, alpha=level,
               family_size=family_size, n_cells=n_cells, sets=tuple(sets))
    power_at = f"{target_power:.0%} power at {_pts(target)} (alpha {alpha:g} / {family_size})"
    if not usable:
        return SeedDecision(final=initial, deciding_set=None, reason=(
            f"no seeds added: on every set the test set's own sampling error keeps {power_at} out of reach with "
            f"any number of seeds"), **out)
    deciding = max(usable, key=lambda s: (asks[s.set], s.seed_var))
    final = asks[deciding.set]
    d = deciding
    why = (f"{d.set}: seed sd {_pts(d.seed_sd)} ({estimator}, {d.df} df), test-sampling SE {_pts(d.utt_se)}, "
           f"{initial} seeds detect {_pts(d.detectable_initial)}")
    if d.needed is None:
        reason = f"{why}; {power_at} needs more than {max_seeds} seeds per cell: capped at max {max_seeds}"
    elif final == initial:
        reason = f"{why}; {power_at} needs {d.needed} seeds per cell: the initial {initial} suffice"
    else:
        reason = f"{why}; {power_at} needs {d.needed} seeds per cell"
    skipped = [s.set for s in sets if not s.reachable]
    if skipped:
        reason += f" (out of reach with any seeds, left out: {', '.join(skipped)})"
    return SeedDecision(final=final, deciding_set=d.set, reason=reason, **out)


def first_stage_inputs(by_set: Mapping[str, Mapping[str, Sequence]], runs: Mapping[str, tuple[str, int]],
                       pairs: Sequence[tuple[str, str, str]], baseline: str | None = None,
                       n_boot: int = 1000) -> tuple[list[SeedResult], dict[str, float]]:
    """``decide_seeds``' inputs from per-utterance scores (``metrics.UttScore`` lists: eval set ->
    system -> scores). ``runs``: the first stage's systems, name -> (cell, seed); ``pairs``: the
    factor contrasts (``factor_pairs``); ``baseline``: the main baseline's system name.

    Per set: each run's corpus WER, and the test-sampling SE of a contrast as the report's power
    table takes it: the square root of the median utterance term of the set's factor contrasts
    (cells vs the baseline where the grid has a single cell). A set where some run has no
    scores, or the runs saw other utterances, is left out."""
    results: list[SeedResult] = []
    utt_se: dict[str, float] = {}
    for name, systems in by_set.items():
        if not all(r in systems for r in runs):
            continue
        per_cell: dict[str, list[tuple[int, Sequence]]] = {}
        for r, (cell, seed) in runs.items():
            per_cell.setdefault(cell, []).append((seed, systems[r]))
        ids = {tuple(u.ref_words for u in systems[r]) for r in runs}  # the same references
        if len(ids) != 1:
            continue
        cells = {c: CellScores.from_utt_scores([u for _, u in sorted(v, key=lambda x: x[0])])
                 for c, v in per_cell.items()}
        for c, v in per_cell.items():
            for (seed, _), w in zip(sorted(v, key=lambda x: x[0]), cells[c].seed_rates):
                results.append(SeedResult(name, c, seed, float(w)))
        keys = list(cells)
        objs = [cells[k] for k in keys]
        idx = [(keys.index(a), keys.index(b)) for a, b, _ in pairs if a in cells and b in cells]
        if not idx and baseline and baseline in systems and tuple(u.ref_words for u in systems[baseline]) in ids:
            keys.append(baseline)
            objs.append(CellScores.from_utt_scores([systems[baseline]], trained=False))
            idx = [(i, len(objs) - 1) for i in range(len(objs) - 1)]
        utt = sorted(c.utt_var for c in compare_pairs(objs, idx, n_boot=n_boot) if math.isfinite(c.utt_var))
        if utt:
            utt_se[name] = math.sqrt(utt[len(utt) // 2])
    return results, utt_se
