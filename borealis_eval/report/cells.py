"""Cells and what survives training variance, computed from the runs' own predictions.

A cell is one configuration of the grid; its runs differ only by training seed. Every run's raw
predictions are re-scored under the scoring protocol (the set's normaliser, the cap), stacked
per cell and eval set, and summarised with `evaluate.variance`: the mean over seeds with an
interval that covers seeds and test utterances, and the seed spread. Contrasts answer the grid's
question one factor at a time: each cell against the cell that differs from it only in one axis,
at that axis's first level (e.g. text fraction 0.15 vs 0 within a language mix), per eval set,
with per-cell seed variances moderated towards the set's pooled value (unstable cells keep their
own and are named). Cells are also compared with each plain-Whisper baseline (decoded once: no
training variance). Verdicts (`evaluate.verdicts`: differs / equivalent within the margin / not
resolved) are judged in families: the headline family holds every factor contrast on every set
and every cell against the main baseline on every set (the headline summarises all of them,
and the best cell against the baseline is one of them: choosing it afterwards costs nothing
extra); each extra baseline is a family of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from borealis_eval.config.labels import cell_of
from borealis_eval.evaluate.adaptive import factor_pairs
from borealis_eval.evaluate.protocol import score, utt_scores
from borealis_eval.evaluate.variance import (A_BETTER, B_BETTER, CellScores, CellSummary, Comparison, Finding,
                                             compare, moderate_seed_variances, summarize_cell)
from borealis_eval.evaluate.verdicts import DIFFERS, Verdict, family_verdicts
from borealis_eval.report.collect import ReportData

SEED_AXIS = "seed"
DEFAULT_MARGIN_PTS = 2.0  # analysis.margin_pts: the practical margin of "equivalent", in WER points
HEADLINE_FAMILY = "headline"


@dataclass(frozen=True)
class Cell:
    key: str
    label: str  # short display name, e.g. "ru100 · text 0.15"
    axes: dict[str, str]  # axis (dotted path) -> value label, seed excluded
    runs: tuple[str, ...]  # run ids, by seed
    seeds: tuple[str, ...]
    text_mode: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # axis -> its value (numbers stay numbers)


@dataclass(frozen=True)
class Contrast(Finding):
    """A finding (cell `a` against `b`: a cell key, or a baseline's run id) on eval set `set`;
    `axis` is the factor they differ in ("baseline" against a baseline)."""

    set: str = ""
    axis: str = ""
    judged: Verdict | None = None  # differs / equivalent / not resolved, within its family


@dataclass
class CellAnalysis:
    cells: list[Cell] = field(default_factory=list)  # in grid order
    summaries: dict[tuple[str, str], CellSummary] = field(default_factory=dict)  # (cell key, set)
    baselines: dict[tuple[str, str], CellSummary] = field(default_factory=dict)  # (baseline run id, set)
    contrasts: list[Contrast] = field(default_factory=list)
    vs_baseline: list[Contrast] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a run or set could not be used
    unstable: dict[tuple[str, str], str] = field(default_factory=dict)  # (cell key, set) -> "seeds 91 / 193"
    margins: dict[str, float] = field(default_factory=dict)  # eval set -> margin (rate units)
    families: dict[str, int] = field(default_factory=dict)  # family name -> contrasts in it
    units: dict[str, int] = field(default_factory=dict)  # eval set -> independent units (utterances)
    seed_sd: dict[str, float] = field(default_factory=dict)  # eval set -> stable cells' pooled seed std (rate)

    @property
    def empty(self) -> bool:
        return not self.summaries

    @property
    def seeds_per_cell(self) -> tuple[int, int]:
        n = [len(c.runs) for c in self.cells] or [0]
        return min(n), max(n)

    @property
    def training_variance_measured(self) -> bool:
        return self.seeds_per_cell[1] >= 2

    def cell(self, key: str) -> Cell:
        return next(c for c in self.cells if c.key == key)

    def axes(self) -> list[str]:
        """Axes whose level changes between cells, in grid order."""
        names: list[str] = []
        for c in self.cells:
            names += [a for a in c.axes if a not in names]
        return [a for a in names if len({c.axes.get(a) for c in self.cells}) > 1]


def cell_key(run: pd.Series) -> str:
    """The run's cell: its `cell` tag, else its variant name without the seed (config/labels.py)."""
    return str(run.get("cell") or cell_of(str(run["variant"])))


def _label(axes: dict[str, str]) -> str:
    """'language_mix=ru100 · text_fraction=0.15': every axis the same way, by its path's last part."""
    return " · ".join(f"{dotted.split('.')[-1]}={value}" for dotted, value in axes.items())


def build_cells(data: ReportData) -> list[Cell]:
    variants = data.variants.sort_values("start_time", kind="stable") if "start_time" in data.variants \
        else data.variants
    groups: dict[str, list[str]] = {}
    for run_id, run in variants.iterrows():
        groups.setdefault(cell_key(run), []).append(run_id)
    cells = []
    for key, run_ids in groups.items():
        first = data.runs.loc[run_ids[0]]
        axes = dict(first.get("axes") or {})
        order = sorted(run_ids, key=lambda r: pd.to_numeric(data.runs.at[r, "seed"], errors="coerce"))
        cells.append(Cell(key, _label(axes) or str(first["variant"]), axes, tuple(order),
                          tuple(str(data.runs.at[r, "seed"]) for r in order), str(first.get("text_mode") or ""),
                          dict(first.get("axis_values") or {})))
    return cells


def margins_of(data: ReportData, s: str) -> float:
    """The set's practical margin (rate units): the ablation's analysis.margin_pts, per set or default."""
    given = data.parent.get("margins") or {}
    pts = given.get("sets", {}).get(s, given.get("default", DEFAULT_MARGIN_PTS))
    return float(pts) / 100


def analyse_cells(data: ReportData, n_boot: int = 1000, metric: str = "wer") -> CellAnalysis:
    out = CellAnalysis(cells=build_cells(data))
    raw: list[tuple[str, str, Comparison, str, str]] = []  # (a, b, comparison, set, axis)
    for s in data.eval_sets:
        norm = data.normalizers.get(s)
        scores: dict[str, CellScores] = {}
        for cell in out.cells:
            per_seed, ids = [], None
            for run_id in cell.runs:
                rows = data.predictions.get(run_id, {}).get(s)
                if rows is None:
                    out.skipped.append(f"{data.runs.at[run_id, 'variant']}: no predictions for {s}")
                    continue
                these = [str(r.get("id")) for r in rows]
                if ids is not None and these != ids:
                    out.skipped.append(f"{data.runs.at[run_id, 'variant']}: other utterances in {s} than its cell")
                    continue
                ids = these
                per_seed.append(_utts(rows, norm))
            if per_seed:
                scores[cell.key] = CellScores.from_utt_scores(per_seed, metric)
        base: dict[str, CellScores] = {}
        for run_id in data.baselines.index:
            rows = data.predictions.get(run_id, {}).get(s)
            if rows is not None:
                base[run_id] = CellScores.from_utt_scores([_utts(rows, norm)], metric, trained=False)
        units = {k: tuple(c.units) for k, c in {**scores, **base}.items()}
        common = max(set(units.values()), key=list(units.values()).count) if units else ()
        scores = {k: c for k, c in scores.items() if tuple(c.units) == common}
        base = {k: c for k, c in base.items() if tuple(c.units) == common}
        out.margins[s] = margins_of(data, s)
        if common:
            out.units[s] = len(common)
        moderated = moderate_seed_variances(scores.values())
        if moderated is not None:
            out.seed_sd[s] = math.sqrt(moderated.pooled.var)
        for key, c in scores.items():
            out.summaries[(key, s)] = summarize_cell(c, n_boot=n_boot, seed_variance=moderated)
            if moderated is not None and moderated.of(c).unstable:
                out.unstable[(key, s)] = "seeds " + " / ".join(f"{100 * w:.0f}" for w in c.seed_rates)
        for run_id, c in base.items():
            out.baselines[(run_id, s)] = summarize_cell(c, n_boot=n_boot)
        for a, b, axis in contrast_pairs(out):
            if a in scores and b in scores:
                raw.append((a, b, compare(scores[a], scores[b], n_boot=n_boot, seed_variance=moderated), s, axis))
        for run_id, b in base.items():
            for key, c in scores.items():
                raw.append((key, run_id, compare(c, b, n_boot=n_boot, seed_variance=moderated), s, "baseline"))
    main = data.baselines.index[0] if len(data.baselines.index) else None
    families: dict[str, list[int]] = {}
    for i, (_, b, _, _, axis) in enumerate(raw):
        name = HEADLINE_FAMILY if axis != "baseline" or b == main else f"vs {data.runs.at[b, 'variant']}"
        families.setdefault(name, []).append(i)
    judged: dict[int, tuple[Verdict, str]] = {}
    for name, idx in families.items():
        out.families[name] = len(idx)
        for i, v in zip(idx, family_verdicts([raw[i][2] for i in idx], [out.margins[raw[i][3]] for i in idx], name)):
            judged[i] = (v, name)
    for i, (a, b, cmp, s, axis) in enumerate(raw):
        v, _ = judged[i]
        word = (A_BETTER if v.direction < 0 else B_BETTER) if v.word == DIFFERS else v.word
        c = Contrast(a, b, cmp, v.p_adjusted, word, set=s, axis=axis, judged=v)
        (out.vs_baseline if axis == "baseline" else out.contrasts).append(c)
    return out


def power_inputs(cells: CellAnalysis, s: str) -> tuple[float, float] | None:
    """(seed std, test-sampling se of a factor contrast) on set ``s``, for ``evaluate.power``:
    the stable cells' pooled seed std and the median utterance term of the set's factor contrasts."""
    utt = sorted(c.comparison.utt_var for c in cells.contrasts
                 if c.set == s and not involves_unstable(cells, c) and not math.isnan(c.comparison.utt_var))
    if s not in cells.seed_sd or not utt:
        return None
    return cells.seed_sd[s], math.sqrt(utt[len(utt) // 2])


def involves_unstable(cells: CellAnalysis, c: Contrast) -> bool:
    return (c.a, c.set) in cells.unstable or (c.b, c.set) in cells.unstable


def detectable(cells: CellAnalysis, s: str) -> float:
    """The median effect (rate units) the set's factor contrasts would detect at 80% power, leaving out
    those with an unstable cell (their own seeds decide them); NaN if none."""
    def of(rows: list[Contrast]) -> list[float]:
        return sorted(c.judged.detectable for c in rows if c.set == s and c.judged is not None
                      and not involves_unstable(cells, c))
    found = of(cells.contrasts) or of(cells.vs_baseline)
    return found[len(found) // 2] if found else math.nan


def contrast_pairs(out: CellAnalysis) -> list[tuple[str, str, str]]:
    """(cell, reference cell, axis): cells that differ in exactly one axis, against its first level
    (`evaluate.adaptive.factor_pairs`, which the adaptive seed design sizes the headline family with)."""
    return factor_pairs([(c.key, c.axes) for c in out.cells])


def _utts(rows: list[dict], normalizer: str | None) -> list:
    """Per-utterance scores under the normaliser the run logged (its language's when unknown here)."""
    if normalizer:
        try:
            return score(rows, normalizer).utts
        except KeyError:  # logged by another version of the harness
            pass
    langs = {r.get("language") or "" for r in rows}
    return utt_scores(rows, next(iter(langs)) if len(langs) == 1 else "mixed")
