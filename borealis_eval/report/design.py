"""The seed design a study ran, as the report states it: fixed seeds, or the adaptive design's
initial, added and final seeds per cell and the variance its decision used (evaluate/adaptive.py;
the parent run's tags ``records.SEED_DESIGN`` and ``records.SEED_DECISION``)."""

from __future__ import annotations

from borealis_eval.evaluate.adaptive import SeedDecision
from borealis_eval.report.cells import CellAnalysis
from borealis_eval.report.collect import ReportData
from borealis_eval.report.tables import Cell, Row, Table

_ESTIMATOR = {"pooled": "the within-cell seed variance pooled over the set's cells (it never looks at how far "
                        "cells are apart)",
              "lumped": "the one-sample variance of every seed result around the set's mean (Kieser & Friede "
                        "2003; blind even to which runs share a cell)"}


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def design_line(data: ReportData, cells: CellAnalysis) -> str:
    """One sentence for the report's notes: the design and what it ended with."""
    design = data.parent.get("seed_design") or {}
    decision: SeedDecision | None = data.parent.get("seed_decision")
    lo, hi = cells.seeds_per_cell
    ran = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if not design:
        return ""
    if decision is None:
        return (f"Adaptive seed design (initial {design.get('initial')}, max {design.get('max')}, target "
                f"{design.get('target_pts')} pts): no decision was recorded; the cells ran {ran} seeds.")
    return (f"Adaptive seed design: {decision.initial} initial + {decision.added} added = {decision.final} seeds per "
            f"cell (max {decision.max}; the cells ran {ran}); decided once after the first stage, blind to the "
            f"contrasts, for 80% power at {100 * decision.target:g} pts: {decision.reason}. The statistics are "
            f"computed once, over every seed.")


def design_table(data: ReportData, cells: CellAnalysis) -> Table:
    """Per eval set: the variance the adaptive decision used and the seeds it asked for."""
    decision: SeedDecision | None = data.parent.get("seed_decision")
    if decision is None:
        return Table("Seed design", [], [])
    rows = []
    for s in decision.sets:
        need = (str(max(s.needed, decision.initial)) if s.needed is not None
                else f"> {decision.max} (capped)" if s.reachable else "out of reach")
        rows.append(Row([Cell(s.set, bold=s.set == decision.deciding_set), Cell(_pts(s.seed_sd)), Cell(str(s.df)),
                         Cell(_pts(s.utt_se)), Cell(_pts(s.detectable_initial)), Cell(need)]))
    note = (f"{design_line(data, cells)} Seed std: {_ESTIMATOR.get(decision.estimator, decision.estimator)}, over the "
            f"first {decision.initial} seeds of {decision.n_cells} cells; test-sampling SE: the median utterance term "
            f"of the set's contrasts. Power at the headline family's first Holm level (0.05 / "
            f"{decision.family_size}); the design takes the largest need over the sets where the target is reachable "
            f"(bold: the set that decided), capped at max.")
    return Table(f"Seed design: {decision.initial} + {decision.added} = {decision.final} seeds per cell",
                 ["set", "seed std (pts)", "df", "test-sampling SE (pts)", f"detects at {decision.initial} seeds (pts)",
                  "seeds per cell needed"], rows, note, numeric_from=1)
