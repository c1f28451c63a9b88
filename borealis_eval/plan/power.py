"""Seeds before spending: per eval set, the effect the file's seeds can detect, and the seeds per
cell that 80% power needs at the margin and at a target, with what they cost.

Nothing here is a second copy of the report's statistics:
- **variance**: from earlier runs, the report's own estimators on their per-utterance predictions
  (``report.cells.analyse_cells``: per-cell seed variances moderated towards the stable cells'
  pooled value; ``report.cells.power_inputs``: that pooled seed std and the median utterance
  term of the set's factor contrasts); else a stated prior (``--seed-sd``, ``--utt-se``); with
  neither, the default prior below, shown and labelled as a prior;
- **family**: the headline family the report will judge (every factor contrast and every cell
  against the main baseline, on every eval set), at its first Holm level alpha / m;
- **power**: ``evaluate.power.seeds_needed`` (non-central t, n_cells (S - 1) seed df), as the
  report's "What this study could detect" table;
- **cost**: the cost plan's time per variant (``Plan.seconds_with_seeds``: every cell with S seeds).

Reading earlier runs goes through ``report`` (the one reader of a finished sweep): a plan looks
back at results the way the report does, never the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from borealis_eval.config import Ablation, ExperimentConfig, Variant, load_ablation
from borealis_eval.errors import UsageError
from borealis_eval.evaluate.power import SeedPlan, seeds_needed
from borealis_eval.evaluate.verdicts import POWER
from borealis_eval.plan.assumed import HUB_ROWS
from borealis_eval.plan.estimate import Plan

ALPHA = 0.05  # the family-wise level the report's verdicts use (verdicts.family_verdicts)
# The default prior: a stated guess, shown as such wherever it is used. The seed std is that of one
# run's corpus WER over training seeds; the per-utterance SD is that of the difference of two cells'
# per-utterance error rates (weighted by length), so a set of n utterances has a test-sampling SE of
# DEFAULT_UTT_SD_PTS / sqrt(n) for a contrast.
DEFAULT_SEED_SD_PTS = 1.0
DEFAULT_UTT_SD_PTS = 15.0
MEASURED, STATED, DEFAULT = "earlier runs", "stated prior", "default prior"
MAX_SEEDS = 64  # the most seeds per cell a plan searches


@dataclass(frozen=True)
class SetVariance:
    """One eval set's two variance terms (rate units) and where each came from."""

    seed_sd: float
    utt_se: float
    units: int | None
    seed_source: str  # MEASURED, STATED or DEFAULT
    utt_source: str

    @property
    def prior(self) -> bool:
        """Either term not measured: the plan rests (partly) on a prior."""
        return self.seed_source != MEASURED or self.utt_source != MEASURED

    @property
    def source(self) -> str:
        if self.seed_source == self.utt_source:
            return self.seed_source
        return f"seed std: {self.seed_source}; test SE: {self.utt_source}"


@dataclass(frozen=True)
class SetPower:
    name: str
    variance: SetVariance
    margin: SeedPlan  # detectable at the file's seeds; seeds needed at analysis.margin_pts
    target: SeedPlan  # seeds needed at --target-pts (the margin by default)


@dataclass
class PowerPlan:
    """The seed plan of one ablation file (see the module docstring)."""

    ablation: str
    seeds: int  # per cell, as the file says
    cells: int
    family_size: int
    alpha: float
    sets: list[SetPower]
    variance_from: str  # one sentence: which runs, or which prior
    notes: list[str] = field(default_factory=list)
    cost: Plan | None = None

    @property
    def per_test_alpha(self) -> float:
        return self.alpha / max(1, self.family_size)

    @property
    def prior(self) -> bool:
        return any(s.variance.prior for s in self.sets)

    def hours(self, seeds: int | None) -> float | None:
        """Hours (the cost plan's unit) of the whole study with ``seeds`` seeds per cell; None when the
        cost plan has no time (a CPU without a probe) or the seeds are out of reach."""
        if seeds is None or self.cost is None or not self.cost.timed:
            return None
        return self.cost.seconds_with_seeds(seeds) / 3600

    @property
    def hours_unit(self) -> str:
        return self.cost.hours_unit if self.cost is not None else "device-hours"

    def to_json(self) -> dict[str, Any]:
        """The record `sweep` logs on the parent run (records.PLAN_POWER)."""
        def seeds(p: SeedPlan) -> dict[str, Any]:
            return {"effect_pts": 100 * p.target, "seeds_needed": p.needed, "reachable": p.reachable,
                    "hours": self.hours(p.needed)}
        return {"ablation": self.ablation, "seeds": self.seeds, "cells": self.cells, "family_size": self.family_size,
                "alpha": self.alpha, "per_test_alpha": self.per_test_alpha, "power": POWER,
                "variance_from": self.variance_from, "prior": self.prior, "hours_unit": self.hours_unit,
                "hours_at_file_seeds": self.hours(self.seeds), "notes": self.notes,
                "sets": [{"set": s.name, "units": s.variance.units, "seed_sd_pts": 100 * s.variance.seed_sd,
                          "utt_se_pts": 100 * s.variance.utt_se, "seed_sd_source": s.variance.seed_source,
                          "utt_se_source": s.variance.utt_source, "detectable_pts": _pts(s.margin.detectable),
                          "floor_pts": _pts(s.margin.floor), "margin": seeds(s.margin), "target": seeds(s.target)}
                         for s in self.sets]}


def _pts(v: float) -> float | None:
    return 100 * v if math.isfinite(v) else None


def headline_family(variants: list[Variant]) -> tuple[int, int]:
    """(cells, contrasts per eval set in the headline family) of a grid, as the report will form them:
    the factor contrasts (``report.cells.contrast_pairs``) plus every cell against the main baseline."""
    from borealis_eval.report.cells import SEED_AXIS, Cell, CellAnalysis, contrast_pairs

    axes: dict[str, dict[str, str]] = {}
    for v in variants:
        axes.setdefault(v.cell, {a: label for a, label in v.labels.items() if a != SEED_AXIS})
    cells = [Cell(k, k, a, (), ()) for k, a in axes.items()]
    pairs = contrast_pairs(CellAnalysis(cells=cells))
    baseline = variants[0].config.eval.baseline.enabled
    return len(cells), len(pairs) + (len(cells) if baseline else 0)


def set_units(cfg: ExperimentConfig, notes: list[str]) -> dict[str, int]:
    """Utterances per eval set: counted where the set is local, else max_samples (or the hub stand-in)."""
    from borealis_eval.data.sources import load_audio_set

    out, assumed = {}, []
    for s in cfg.eval.sets:
        if s.source.kind in ("synth", "manifest"):
            try:
                out[s.name] = len(load_audio_set(s))
                continue
            except Exception:  # noqa: BLE001 - not built here yet: sized like a hub set
                pass
        out[s.name] = s.max_samples or HUB_ROWS
        assumed.append(s.name)
    if assumed:
        notes.append(f"set sizes not read here ({', '.join(assumed)}): max_samples, else {HUB_ROWS} utterances")
    return out


def measured_variance(experiment: str, tracking_uri: str | None,
                      exclude: str | None = None) -> tuple[dict[str, tuple[float, float, int | None]], str]:
    """Per eval set (seed std, test-sampling SE, units) from the newest sweep of ``experiment`` that
    trained 2+ seeds per cell (not ``exclude``), by the report's estimators; and which sweep it was."""
    from mlflow.tracking import MlflowClient

    from borealis_eval import records
    from borealis_eval.report.cells import analyse_cells, power_inputs
    from borealis_eval.report.collect import ReportError, load_report_data

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}, f"no experiment {experiment!r} in {client.tracking_uri}"
    parents = client.search_runs([exp.experiment_id], f"tags.{records.ROLE} = '{records.PARENT}'",
                                 order_by=["attributes.start_time DESC"], max_results=20)
    for parent in parents:
        if parent.info.run_id == exclude or not _has_seeds(client, exp.experiment_id, parent.info.run_id):
            continue
        try:
            data = load_report_data(experiment, tracking_uri, parent.info.run_id)
        except ReportError:
            continue
        cells = analyse_cells(data)
        found = {s: (*got, cells.units.get(s)) for s in data.eval_sets if (got := power_inputs(cells, s))}
        if found:
            lo, hi = cells.seeds_per_cell
            seeds = f"{lo}{f'-{hi}' if hi != lo else ''}"
            return found, (f"earlier runs: experiment {experiment!r}, sweep {parent.info.run_id[:8]} "
                           f"({len(cells.cells)} cells x {seeds} seeds), by the report's estimators")
    return {}, f"no sweep of {experiment!r} with 2+ seeds per cell and per-utterance predictions"


def _has_seeds(client, exp_id: str, parent_id: str) -> bool:
    """Some cell of the sweep finished 2+ seeds (read from tags, before any prediction is loaded)."""
    from borealis_eval import records

    runs = client.search_runs([exp_id], f"tags.{records.PARENT_RUN} = '{parent_id}' and "
                                        f"tags.{records.ROLE} = '{records.VARIANT}' and attributes.status = 'FINISHED'",
                              max_results=5000)
    cells = [r.data.tags.get(records.CELL) for r in runs]
    return any(cells.count(c) >= 2 for c in set(cells) if c)


def power_plan(path: str | Path, cost: Plan | None = None, *, overrides: dict | None = None,
               from_runs: str | None = None, tracking_uri: str | None = None, seed_sd_pts: float | None = None,
               utt_se_pts: float | None = None, target_pts: float | None = None,
               exclude_parent: str | None = None, require_runs: bool = True) -> PowerPlan:
    """The seed plan of an ablation file (module docstring). ``from_runs``: an experiment whose newest
    sweep gives the variance (``require_runs``: a missing one is an error, else the prior stands in);
    ``seed_sd_pts`` / ``utt_se_pts``: a stated prior, which also overrides the runs' value."""
    for flag, v in (("--seed-sd", seed_sd_pts), ("--utt-se", utt_se_pts)):
        if v is not None and not (0 <= v <= 100):
            raise UsageError(f"{flag} is in WER points, 0-100; got {v:g}")
    if target_pts is not None and not (0 < target_pts <= 100):
        raise UsageError(f"--target-pts is an effect in WER points, above 0 and at most 100; got {target_pts:g}")
    abl, variants = load_ablation(path, overrides)
    cfg = variants[0].config
    notes: list[str] = []
    n_cells, per_set = headline_family(variants)
    seeds = _seeds_per_cell(abl, variants)
    measured, said = measured_variance(from_runs, tracking_uri, exclude_parent) if from_runs else ({}, "")
    if from_runs and not measured and require_runs:
        raise UsageError(f"--from-runs {from_runs}: {said}")
    units = set_units(cfg, notes)
    sets, defaulted = [], set()
    for s in cfg.eval.sets:
        got = measured.get(s.name)
        n = got[2] if got and got[2] else units.get(s.name)
        if seed_sd_pts is not None:
            seed_sd, seed_src = seed_sd_pts / 100, STATED
        elif got:
            seed_sd, seed_src = got[0], MEASURED
        else:
            seed_sd, seed_src = DEFAULT_SEED_SD_PTS / 100, DEFAULT
        if utt_se_pts is not None:
            utt_se, utt_src = utt_se_pts / 100, STATED
        elif got:
            utt_se, utt_src = got[1], MEASURED
        else:
            utt_se, utt_src = DEFAULT_UTT_SD_PTS / 100 / math.sqrt(max(n or 1, 1)), DEFAULT
        defaulted |= {t for t, src in (("seed", seed_src), ("utt", utt_src)) if src == DEFAULT}
        var = SetVariance(seed_sd, utt_se, n, seed_src, utt_src)
        margin = abl.analysis.margin(s.name) / 100
        target = target_pts / 100 if target_pts is not None else margin
        alpha = ALPHA / max(1, per_set * len(cfg.eval.sets))
        at_margin = seeds_needed(seed_sd, utt_se, margin, seeds=seeds, n_cells=n_cells, alpha=alpha,
                                 max_seeds=MAX_SEEDS)
        if seeds < 2:  # one run per cell measures no training variance: no effect is detectable beyond it
            at_margin = replace(at_margin, detectable=math.nan)
        sets.append(SetPower(s.name, var, at_margin,
                             seeds_needed(seed_sd, utt_se, target, seeds=seeds, n_cells=n_cells, alpha=alpha,
                                          max_seeds=MAX_SEEDS)))
    parts = [said] if measured else []
    if seed_sd_pts is not None or utt_se_pts is not None:
        parts.append("stated prior: " + ", ".join(f"{k} {v:g} pts" for k, v in (("seed std", seed_sd_pts),
                                                                                  ("test SE", utt_se_pts))
                                                   if v is not None))
    if defaulted:
        terms = ([f"seed std {DEFAULT_SEED_SD_PTS:g} pts"] if "seed" in defaulted else []) + \
            ([f"test SE {DEFAULT_UTT_SD_PTS:g} pts / sqrt(utterances)"] if "utt" in defaulted else [])
        parts.append("default prior (a guess, not a measurement): " + "; ".join(terms) + "; state yours with "
                     "--seed-sd/--utt-se, or read them from earlier runs with --from-runs EXPERIMENT"
                     + (f" ({said})" if from_runs and not measured else ""))
    return PowerPlan(abl.name, seeds, n_cells, per_set * len(cfg.eval.sets), ALPHA, sets, "; ".join(parts),
                     notes, cost)


def _seeds_per_cell(abl: Ablation, variants: list[Variant]) -> int:
    if abl.seeds:  # a list, or an adaptive design's first stage (`initial` seeds per cell)
        return len(abl.seed_values())
    counts: dict[str, int] = {}
    for v in variants:
        counts[v.cell] = counts.get(v.cell, 0) + 1
    return max(counts.values())
