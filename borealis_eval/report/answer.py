"""The report's first screen: a short list of what survives training variance, and the cell table.

The headline is a list: how many seeds and which cells were unstable, one line per factor and one
line against the baseline. Every line uses the three verdicts of ``evaluate.verdicts``: differs
(with its direction), equivalent within ±m pts (TOST at the ablation's analysis.margin_pts), not
resolved (with the effect the study would detect at 80% power), judged over the headline family
(every factor contrast and every cell against the main baseline, on every set). With one seed
per cell it says plainly that training variance was not measured.
"""

from __future__ import annotations

import math

import pandas as pd

from borealis_eval.evaluate.variance import A_BETTER
from borealis_eval.evaluate.verdicts import (DIFFERS, EQUIVALENT, NO_POWER, NO_POWER_WORDS, NOT_RESOLVED, POWER,
                                             reach, words)
from borealis_eval.evaluate.power import seeds_needed
from borealis_eval.report.cells import (HEADLINE_FAMILY, CellAnalysis, Contrast, detectable, involves_unstable,
                                        power_inputs)
from borealis_eval.report.collect import ReportData
from borealis_eval.report.tables import Cell, Links, Row, Table

MAX_LISTED = 2  # differing contrasts named per factor in the headline; the verdict tables have them all


def axis_name(dotted: str) -> str:
    """A grid axis in words: its path's last part, underscores as spaces (data.text_fraction -> text fraction)."""
    return dotted.split(".")[-1].replace("_", " ")


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def _label(cells: CellAnalysis, key: str, data: ReportData | None = None) -> str:
    if any(x.key == key for x in cells.cells):
        return cells.cell(key).label
    return baseline_label(data, key) if data is not None else key


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{100 * lo:.0f}" if round(100 * lo) == round(100 * hi) else f"{100 * lo:.0f}-{100 * hi:.0f}"


def _reach(values: list[float], power: str = "") -> str:
    """The effects some contrasts would detect, in words: '≥ 8-60 pts{power}', '≥ 8-60 pts{power} (only
    effects over 100 pts in 2)', or 'only effects over 100 pts' (verdicts.NO_POWER: no usable power)."""
    usable = [v for v in values if v <= NO_POWER]
    if not usable:
        return NO_POWER_WORDS
    blind = len(values) - len(usable)
    return f"≥ {_range(usable)} pts{power}" + (f" ({NO_POWER_WORDS} in {blind})" if blind else "")


def headline_lines(data: ReportData, cells: CellAnalysis) -> list[str]:
    """The answer as a short list: seeds, then one line per factor, then one against the baseline."""
    if cells.empty:
        return ["No per-utterance predictions were logged for this sweep, so no conclusion can be drawn."]
    lo, hi = cells.seeds_per_cell
    lines = []
    if not cells.training_variance_measured:
        lines.append("One training run per cell: training variance was not measured, so every verdict below covers "
                     "test-utterance sampling only and may not survive a rerun.")
    else:
        first = f"{lo}{f'-{hi}' if hi != lo else ''} seeds per cell"
        if cells.unstable:
            first += "; unstable: " + ", ".join(f"{cells.cell(k).label} on {s} ({seeds})"
                                                for (k, s), seeds in cells.unstable.items())
        lines.append(first + ".")
    for axis in cells.axes():
        found = [c for c in cells.contrasts if c.axis == axis and c.judged is not None]
        if found:
            lines.append(f"{axis_name(axis)}: " + _summary(found, cells, data) + ".")
    base = _baseline_line(data, cells)
    if base:
        lines.append(base + ".")
    return lines


def _summary(found: list[Contrast], cells: CellAnalysis, data: ReportData) -> str:
    differ = sorted((c for c in found if c.differs), key=lambda c: -abs(c.comparison.delta))
    equiv = [c for c in found if c.judged.word == EQUIVALENT]
    open_ = [c for c in found if c.judged.word == NOT_RESOLVED]
    parts = []
    if differ:
        said = [f"{cells.cell(c.a).label} {'lower' if c.verdict == A_BETTER else 'higher'} than "
                f"{_label(cells, c.b, data)} on {c.set} ({_pts(c.comparison.delta)} pts)" for c in differ[:MAX_LISTED]]
        more = f", +{len(differ) - MAX_LISTED} more" if len(differ) > MAX_LISTED else ""
        parts.append(f"differs in {len(differ)} of {len(found)} contrasts: " + ", ".join(said) + more)
    if equiv:
        margins = sorted({c.judged.margin for c in equiv})
        parts.append(f"equivalent within ±{'/'.join(f'{100 * m:g}' for m in margins)} pts in {len(equiv)}")
    if open_:
        steady = [c.judged.detectable for c in open_ if not involves_unstable(cells, c)]
        shaky = [c.judged.detectable for c in open_ if involves_unstable(cells, c)]
        said = (f"this study would detect {_reach(steady, f' at {POWER:.0%} power')}" if steady else "")
        said += ("; " if said and shaky else "") + (
            f"{len(shaky)} with an unstable cell: would detect {_reach(shaky)}" if shaky else "")
        parts.append(f"not resolved in {len(open_)} ({said})")
    sampling = " (test sampling only)" if any(c.judged.sampling_only for c in found) else ""
    return "; ".join(parts) + sampling


def _baseline_line(data: ReportData, cells: CellAnalysis) -> str:
    """The best cell of each eval set against plain Whisper, judged in the headline family (where it is
    one of every cell against the baseline, so picking the best afterwards is accounted for), grouped
    by verdict: "higher on test_ru, test_en (+9 to +11 pts); not resolved on webinar (would detect
    ≥ 30 pts)". Each set's cell, interval and p are in the "Against …" table."""
    if not cells.vs_baseline:
        return ""
    first = data.baselines.index[0]
    best = []
    for s in data.eval_sets:
        rows = [c for c in cells.vs_baseline if c.set == s and c.b == first and c.judged is not None]
        if rows:
            best.append(min(rows, key=lambda c: c.comparison.delta))
    if not best:
        return ""
    groups: dict[str, list[Contrast]] = {}
    for c in best:
        v = c.judged
        key = ("lower" if v.direction < 0 else "higher") if v.word == DIFFERS else v.word
        groups.setdefault(key, []).append(c)
    parts = []
    for key in ("lower", "higher", EQUIVALENT, NOT_RESOLVED):
        found = groups.get(key)
        if not found:
            continue
        where = _sets(found)
        if key == EQUIVALENT:
            parts.append(f"equivalent within ±{_margins(found)} pts on {where}")
        elif key == NOT_RESOLVED:
            parts.append(f"not resolved on {where} (would detect {_reach([c.judged.detectable for c in found])})")
        else:
            parts.append(f"{key} on {where} ({_signed_range([c.comparison.delta for c in found])} pts)")
    labels = {c.a for c in best}
    who = (f"; the best cell is {cells.cell(next(iter(labels))).label} on every set" if len(labels) == 1
           else "; the best cell differs by set")
    return f"best cell vs plain Whisper, {baseline_label(data, first)}: " + "; ".join(parts) + who


def _sets(found: list[Contrast]) -> str:
    """Up to three set names, else their count (the table below names every set)."""
    names = [c.set for c in found]
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} sets"


def _margins(found: list[Contrast]) -> str:
    return "/".join(f"{100 * m:g}" for m in sorted({c.judged.margin for c in found}))


def _signed_range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{100 * lo:+.1f}" if round(100 * lo, 1) == round(100 * hi, 1) else f"{100 * lo:+.0f} to {100 * hi:+.0f}"


def headline(data: ReportData, cells: CellAnalysis) -> str:
    """The headline list as Markdown (one "- " line each)."""
    return "\n".join(f"- {line}" for line in headline_lines(data, cells))


def family_note(cells: CellAnalysis) -> str:
    """Which family each p belongs to, in words."""
    if not cells.families:
        return ""
    size = cells.families.get(HEADLINE_FAMILY, 0)
    others = [f"{name} ({n})" for name, n in cells.families.items() if name != HEADLINE_FAMILY]
    text = (f"p-values are Holm-adjusted over the headline family: {size} contrasts (every factor contrast and "
            "every cell against the main baseline, on every eval set)")
    if others:
        text += "; each extra baseline is its own family: " + ", ".join(others)
    return text + (". Intervals in the verdict tables and headline are at the Holm-adjusted level of that family "
                   "(one excludes 0 exactly when its verdict is \"differs\"); the cell table's intervals are "
                   "unadjusted 95%.")


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
            unstable = cells.unstable.get((c.key, s))
            spread += f" unstable cell: {unstable}" if unstable else ""
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
    headers = [_set_header(cells, s) for s in sets]
    unstable = (" An unstable cell's seed spread is far above the other cells' (F test, Bonferroni over the set's "
                "cells): it keeps its own seed variance, the others are moderated towards their pooled value."
                if cells.unstable else "")
    return Table(f"{family.upper()} per cell (%)", ["cell", *headers, "runs"], rows,
                 f"Cells: {seeds}; bold = lowest per set. Under each set: its independent units (n) and the "
                 f"effect its contrasts would detect at {POWER:.0%} power (median over the set's contrasts, at the "
                 f"headline family's level).{unstable} Baselines are decoded once (no training variance)"
                 f"{': ' + protocols if protocols else ''}.{mode}", numeric_from=1)


SMALL_SET = 20


def _set_header(cells: CellAnalysis, s: str) -> str:
    """'test_ru (n=64, detects ≥ 16 pts)'; a set of few units says it is small."""
    n = cells.units.get(s)
    d = detectable(cells, s)
    bits = [f"n={n}{' small set' if n is not None and n < SMALL_SET else ''}"] if n else []
    if not math.isnan(d):
        bits.append(f"detects {reach(d, digits=0)}")
    return f"{s} ({', '.join(bits)})" if bits else s


def baseline_label(data: ReportData, run_id: str) -> str:
    """'baseline (bundled:whisper-base)': the baseline's name and model."""
    name, model = str(data.runs.at[run_id, "variant"]), str(data.runs.at[run_id, "model"] or "")
    return f"{name} ({model})" if model and model != name else name


_MODE_NOTE = {"replace": "text replaces audio in a fixed number of examples",
              "add": "text is added on top of a fixed number of audio examples"}


def power_table(data: ReportData, cells: CellAnalysis) -> Table:
    """Per eval set: what this study could detect, and the seeds per cell 80% power at the margin needs."""
    rows = []
    size = cells.families.get(HEADLINE_FAMILY, 0)
    lo, hi = cells.seeds_per_cell
    planned = data.parent.get("planned") or {}  # the seed plan `sweep` logged before training (plan/power.py)
    source = data.parent.get("plan_variance") or ""
    for s in data.eval_sets:
        got = power_inputs(cells, s)
        if got is None or not size or hi < 2:
            continue
        seed_sd, utt_se = got
        margin = cells.margins.get(s, 0.02)
        plan = seeds_needed(seed_sd, utt_se, margin, seeds=hi, n_cells=len(cells.cells), alpha=0.05 / size)
        need = (f"{plan.needed}" if plan.needed else
                "not reachable: the test set's own sampling error is too large" if not plan.reachable else "> 64")
        row = [Cell(s), Cell(str(cells.units.get(s, ""))), Cell(f"{100 * seed_sd:.1f}"),
               Cell(f"{100 * utt_se:.1f}"), Cell(f"{100 * plan.detectable:.1f}")]
        if planned:
            row.append(Cell(f"{planned[s]:.1f}" if s in planned else ""))
        rows.append(Row(row + [Cell(f"±{100 * margin:g}"), Cell(need)]))
    note = (f"Seed std: the stable cells' pooled seed standard deviation; test-sampling SE: the median utterance "
            f"term of the set's factor contrasts (what more seeds on the same utterances cannot shrink). Detectable: "
            f"the effect a factor contrast finds with 80% power at {lo}{f'-{hi}' if hi != lo else ''} seeds per cell, "
            f"at the headline family's first Holm level (0.05 / {size}); seeds needed: per cell, for 80% power at the "
            f"set's margin (analysis.margin_pts).")
    if planned:
        note += (f" Planned: what the seed plan logged before the sweep expected the same contrasts to detect "
                 f"(its variance: {source or 'not recorded'}).")
    return Table("What this study could detect", ["set", "units", "seed std (pts)", "test-sampling SE (pts)",
                                                  "detects ≥ (pts)", *(["planned (pts)"] if planned else []),
                                                  "margin", "seeds per cell needed"],
                 rows, note, numeric_from=1)


def verdict_tables(data: ReportData, cells: CellAnalysis) -> list[Table]:
    """What the study could detect, then every contrast: one factor at a time, then each cell
    against each baseline."""
    tables = [power_table(data, cells)]
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
    hidden = False
    for c in sorted(found, key=lambda c: (data.eval_sets.index(c.set), c.a)):
        k, v = c.comparison, c.judged
        ref = cells.cell(c.b).label if any(x.key == c.b for x in cells.cells) else "baseline"
        unstable = [cells.cell(x).label for x in (c.a, c.b) if (x, c.set) in cells.unstable]
        if math.isnan(v.prob_a_better):
            hidden = True
            prob = Cell("–")
        else:
            prob = Cell(f"{v.prob_a_better:.2f}", f"[{v.prob_ci_low:.2f}, {v.prob_ci_high:.2f}]")
        verdict = words(v, "cell", "reference") + (f"; unstable: {', '.join(unstable)}" if unstable else "")
        rows.append(Row([Cell(c.set), Cell(cells.cell(c.a).label), Cell(ref),
                         Cell(f"{_pts(k.delta)}", f"[{_pts(v.ci_low)}, {_pts(v.ci_high)}] at {100 * v.level:.2f}%"),
                         prob,
                         Cell(f"{v.p_adjusted:.3f}", f"raw {v.p_raw:.3f}"),
                         Cell(f"{v.p_equivalence:.3f}"),
                         Cell(verdict, bold=c.survives)]))
    family = found[0].judged.family if found else ""
    size = found[0].judged.family_size if found else 0
    note = (f"ΔWER = cell − reference (pts) over seeds and utterances, with its interval at the Holm-adjusted level "
            f"of its family (the level shown; it excludes 0 exactly when the verdict is \"differs\"). "
            f"p = difference test, Holm-adjusted over the family \"{family}\" ({size} contrasts; raw p below it); "
            f"p(≡) = equivalence (TOST at the set's margin), Holm-adjusted over the same family. "
            f"P(better) = chance a random run of the cell beats one of the reference on a test-set draw, from the "
            f"same interval (one estimator)."
            + (" P(better) is not shown (–) where a cell has one seed and nothing to borrow: the spread of single "
               "runs is then unknown." if hidden else "")
            + f" Rows: {what}.")
    return Table(title, ["set", "cell", "reference", "ΔWER", "P(better)", "p", "p(≡)", "verdict"], rows, note,
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
