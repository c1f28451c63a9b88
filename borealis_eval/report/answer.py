"""The report's first screen: the answer that survives training variance, and the cell table.

The headline states only contrasts whose interval over seeds x utterances excludes zero (after
the Holm correction over a set's contrasts); everything else is "no difference beyond training
variance". With one seed per cell it says plainly that training variance was not measured.
"""

from __future__ import annotations

import pandas as pd

from borealis_eval.evaluate.variance import A_BETTER
from borealis_eval.report.cells import CellAnalysis, Contrast
from borealis_eval.report.collect import ReportData
from borealis_eval.report.tables import Cell, Links, Row, Table

MAX_LISTED = 4  # surviving contrasts named per factor in the headline; the verdict table has them all


def axis_name(dotted: str) -> str:
    """A grid axis in words: its path's last part, underscores as spaces (data.text_fraction -> text fraction)."""
    return dotted.split(".")[-1].replace("_", " ")


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def _delta(c: Contrast) -> str:
    k = c.comparison
    return f"{_pts(k.delta)} pts [{_pts(k.ci_low)}, {_pts(k.ci_high)}]"


def headline(data: ReportData, cells: CellAnalysis) -> str:
    """One sentence (clauses joined by semicolons) of what the study can claim."""
    if cells.empty:
        return "No per-utterance predictions were logged for this sweep, so no conclusion can be drawn."
    lo, hi = cells.seeds_per_cell
    parts = []
    if not cells.training_variance_measured:
        parts.append("One training run per cell: training variance was not measured, so every mark below covers "
                     "test-utterance sampling only and may not survive a rerun")
    else:
        parts.append(f"{lo}{f'-{hi}' if hi != lo else ''} seeds per cell")
    for axis in cells.axes():
        found = [c for c in cells.contrasts if c.axis == axis]
        if not found:
            continue
        holds = [c for c in found if c.survives] if cells.training_variance_measured else [c for c in found if c.differs]
        if not holds:
            verb = "no difference beyond training variance" if cells.training_variance_measured \
                else "no difference beyond test sampling"
            parts.append(f"{axis_name(axis)}: {verb} on any eval set ({len(found)} contrasts)")
            continue
        holds.sort(key=lambda c: -abs(c.comparison.delta))
        said = [f"{cells.cell(c.a).label} {'beats' if c.verdict == A_BETTER else 'trails'} "
                f"{cells.cell(c.b).label} on {c.set} ({_delta(c)})" for c in holds[:MAX_LISTED]]
        more = f", +{len(holds) - MAX_LISTED} more" if len(holds) > MAX_LISTED else ""
        parts.append(f"{axis_name(axis)}: {len(holds)} of {len(found)} contrasts hold: " + ", ".join(said) + more)
    base = _baseline_clause(data, cells)
    if base:
        parts.append(base)
    return "; ".join(parts) + "."


def _baseline_clause(data: ReportData, cells: CellAnalysis) -> str:
    """Per eval set: does the best cell beat plain Whisper, beyond training variance?"""
    if not cells.vs_baseline:
        return ""
    first = data.baselines.index[0]
    bits = []
    for s in data.eval_sets:
        rows = [c for c in cells.vs_baseline if c.set == s and c.b == first]
        if not rows:
            continue
        best = min(rows, key=lambda c: c.comparison.delta)
        word = ("beats" if best.verdict == A_BETTER else "trails") if best.differs else "ties"
        bits.append(f"{s} {word} ({_pts(best.comparison.delta)} pts)")
    return f"best cell vs plain Whisper, {baseline_label(data, first)}: " + ", ".join(bits) if bits else ""


def cell_table(data: ReportData, cells: CellAnalysis, links: Links, family: str = "wer") -> Table:
    """Rows: baselines, then cells; per eval set the mean over seeds [interval] and the seed range."""
    sets = [s for s in data.eval_sets if any((c.key, s) in cells.summaries for c in cells.cells)]
    if not sets:
        return Table("Result per cell", [], [])
    best = {s: min((c for c in cells.cells if (c.key, s) in cells.summaries),
                   key=lambda c: cells.summaries[(c.key, s)].mean).key for s in sets}
    rows = []
    for run_id in data.baselines.index:
        out = [Cell(baseline_label(data, run_id), bold=True, title=str(data.runs.at[run_id, "protocol"] or ""))]
        for s in sets:
            b = cells.baselines.get((run_id, s))
            out.append(Cell("" if b is None else f"{100 * b.mean:.1f}",
                            "" if b is None else f"[{100 * b.ci_low:.1f}, {100 * b.ci_high:.1f}]"))
        out.append(Cell("", links=((run_id[:8], links.run(run_id)),)))
        rows.append(Row(out, baseline=True))
    for c in cells.cells:
        out = [Cell(c.label, title=c.key)]
        for s in sets:
            m = cells.summaries.get((c.key, s))
            if m is None:
                out.append(Cell(""))
                continue
            spread = f" ±{100 * (m.seed_max - m.seed_min) / 2:.1f}" if m.n_seeds > 1 else ""
            out.append(Cell(f"{100 * m.mean:.1f}", f"[{100 * m.ci_low:.1f}, {100 * m.ci_high:.1f}]{spread}",
                            bold=best[s] == c.key))
        out.append(Cell("", links=tuple((f"s{seed}", links.run(r)) for seed, r in zip(c.seeds, c.runs))))
        rows.append(Row(out))
    modes = {c.text_mode for c in cells.cells if c.text_mode}
    mode = f" Text mode: {', '.join(sorted(modes))} ({_MODE_NOTE[next(iter(modes))]})." if len(modes) == 1 and \
        next(iter(modes)) in _MODE_NOTE else ""
    lo, hi = cells.seeds_per_cell
    seeds = (f"mean over {lo}{f'-{hi}' if hi != lo else ''} seeds [95% interval over seeds and test utterances] "
             "±half the seed range" if cells.training_variance_measured else
             "one seed per cell: [95% interval over test utterances only]")
    protocols = "; ".join(f"{baseline_label(data, r)}: {data.runs.at[r, 'protocol']}" for r in data.baselines.index
                          if data.runs.at[r, "protocol"])
    return Table(f"{family.upper()} per cell (%)", ["cell", *sets, "runs"], rows,
                 f"Cells: {seeds}; bold = lowest per set. Baselines are decoded once (no training variance)"
                 f"{': ' + protocols if protocols else ''}.{mode}", numeric_from=1)


def baseline_label(data: ReportData, run_id: str) -> str:
    """'baseline (bundled:whisper-base)': the baseline's name and model."""
    name, model = str(data.runs.at[run_id, "variant"]), str(data.runs.at[run_id, "model"] or "")
    return f"{name} ({model})" if model and model != name else name


_MODE_NOTE = {"replace": "text replaces audio in a fixed number of examples",
              "add": "text is added on top of a fixed number of audio examples"}


def verdict_tables(data: ReportData, cells: CellAnalysis) -> list[Table]:
    """Every contrast: one factor at a time, then each cell against each baseline."""
    tables = []
    for axis in cells.axes():
        found = [c for c in cells.contrasts if c.axis == axis]
        if found:
            tables.append(_contrast_table(f"Contrasts: {axis_name(axis)}", found, cells, data,
                                          "each cell against the cell that differs only in this factor, at its "
                                          "first level"))
    for run_id in data.baselines.index:
        found = [c for c in cells.vs_baseline if c.b == run_id]
        if found:
            tables.append(_contrast_table(f"Against {baseline_label(data, run_id)}", found, cells, data,
                                          "each cell against plain Whisper, decoded once"))
    return tables


def _contrast_table(title: str, found: list[Contrast], cells: CellAnalysis, data: ReportData, what: str) -> Table:
    rows = []
    for c in sorted(found, key=lambda c: (data.eval_sets.index(c.set), c.a)):
        k = c.comparison
        ref = cells.cell(c.b).label if any(x.key == c.b for x in cells.cells) else "baseline"
        rows.append(Row([Cell(c.set), Cell(cells.cell(c.a).label), Cell(ref),
                         Cell(f"{_pts(k.delta)}", f"[{_pts(k.ci_low)}, {_pts(k.ci_high)}]"),
                         Cell(f"{k.prob_a_better:.2f}", f"[{k.prob_ci_low:.2f}, {k.prob_ci_high:.2f}]"),
                         Cell(f"{c.p_adjusted:.3f}" if pd.notna(c.p_adjusted) else ""),
                         Cell(c.verdict.replace("A better", "lower").replace("B better", "higher"),
                              bold=c.survives)]))
    note = (f"ΔWER = cell − reference (pts) with its 95% interval over seeds and utterances; P(better) = chance a "
            f"random run of the cell beats one of the reference on a test-set draw; p Holm-adjusted over a set's "
            f"contrasts where the headline uses them. Rows: {what}.")
    return Table(title, ["set", "cell", "reference", "ΔWER", "P(better)", "p", "verdict"], rows, note,
                 numeric_from=3, folded=len(rows) > 12)


GAP_FLAG_PTS = 2.0


def reference_table(data: ReportData, cells: CellAnalysis) -> Table:
    """Each baseline beside the published figures the ablation cites for a set, under our normaliser
    and Whisper's; a gap over 2 pts for the same system is flagged as a likely protocol mismatch."""
    rows = []
    whisper = data.family("wer_whisper")
    for run_id in data.baselines.index:
        model = str(data.runs.at[run_id, "model"] or data.runs.at[run_id, "variant"])
        label = baseline_label(data, run_id)
        for s in data.eval_sets:
            ours = cells.baselines.get((run_id, s))
            if ours is None:
                continue
            w = whisper.at[run_id, s] if s in whisper and run_id in whisper.index else float("nan")
            refs = data.references.get(s) or [{}]
            for ref in refs:
                pub = ref.get("wer")
                same = bool(ref) and _same_system(model, str(ref.get("system", "")))
                ours_w = w if pd.notna(w) else 100 * ours.mean
                if not ref:
                    verdict = ""
                elif not same:
                    verdict = f"other system ({ref.get('system')}): not comparable"
                elif abs(ours_w - pub) > GAP_FLAG_PTS:
                    verdict = (f"gap {ours_w - pub:+.1f} pts on {s}: likely protocol mismatch (normaliser, sampling, "
                               f"long-form){': ' + ref['note'] if ref.get('note') else ''}")
                else:
                    verdict = f"agrees within {GAP_FLAG_PTS:g} pts"
                rows.append(Row([Cell(label), Cell(s), Cell(f"{100 * ours.mean:.1f}", f"[{100 * ours.ci_low:.1f}, "
                                                                                     f"{100 * ours.ci_high:.1f}]"),
                                 Cell("" if pd.isna(w) else f"{w:.1f}"),
                                 Cell("" if pub is None else f"{pub:g}", href=ref.get("source") or None),
                                 Cell(str(ref.get("system", ""))), Cell(verdict, bold="mismatch" in verdict)],
                                baseline=True))
    note = ("Our baseline under our normaliser (with its interval) and under Whisper's own normaliser (the one "
            "leaderboards use), beside figures published for the same set; a published figure is compared only "
            "with the same system.")
    return Table("Baseline beside published figures", ["baseline", "set", "WER ours", "WER (Whisper norm.)",
                                                       "published", "published system", "check"], rows, note,
                 numeric_from=2)


def _same_system(model_ref: str, system: str) -> bool:
    """'hf:openai/whisper-large-v3' and 'whisper-large-v3' name the same system; 'bundled:whisper-base' does not."""
    name = model_ref.split(":", 1)[-1].split("@")[0].rsplit("/", 1)[-1].lower()
    return bool(system) and name == system.strip().lower()
