"""The plan as plain text: summary, per-variant table, memory of the first variant, eval sets,
assumptions; and the seed plan (power per eval set, seeds needed and their cost)."""

from __future__ import annotations

import math

from borealis_eval.evaluate.verdicts import POWER
from borealis_eval.plan.estimate import Plan
from borealis_eval.plan.model_cost import Memory
from borealis_eval.evaluate.power import SeedPlan
from borealis_eval.plan.power import MAX_SEEDS, PowerPlan


def render(p: Plan) -> str:
    """Plain-text plan: summary, per-variant table, eval protocol, assumptions."""
    lines = [p.summary(), "", *_table(p.rows())]
    v0 = p.variants[0] if p.variants else None
    if v0:
        m = v0.memory
        lines += ["", f"memory of {v0.name}: weights {m.weights / 2**30:.1f} GiB, gradients {m.gradients / 2**30:.2f}, "
                  f"AdamW {m.optimizer / 2**30:.2f}, activations {m.activations / 2**30:.1f} (micro-batch padded to "
                  f"{v0.tokens.padded_length:.0f} tokens; at most {p.max_length(v0):,} tokens fit); {Memory.FORMULA}",
                  f"parameters: {v0.params.source}; step time: {v0.step_source}"]
    lines += ["", "eval sets:"] + [f"  {r['set']}: {r['source']}, {r['rows']} rows, {r['long-form']}"
                                    + (f"; published: {r['reference']}" if r["reference"] else "") for r in p.eval_sets]
    lines += ["", "assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)


def _table(rows: list[dict]) -> list[str]:
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    return ["  ".join(c.ljust(widths[c]) for c in cols)] + ["  ".join(str(r[c]).ljust(widths[c]) for c in cols)
                                                            for r in rows]


def render_power(pp: PowerPlan) -> str:
    """Per eval set: the variance used (and whether it is a prior), the effect the file's seeds detect,
    the seeds per cell for 80% power at the margin and at the target, and what those seeds cost."""
    unit = pp.hours_unit.split(" with ")[0]
    show_target = any(s.target.target != s.margin.target for s in pp.sets)
    rows = []
    for s in pp.sets:
        v = s.variance
        row = {"set": s.name, "utts": v.units or "?", "seed std": f"{100 * v.seed_sd:.1f}",
               "test SE": f"{100 * v.utt_se:.1f}", "variance": "prior" if v.prior else "runs",
               f"detects ≥ at {pp.seeds} seed{'s' if pp.seeds > 1 else ''}":
                   f"{100 * s.margin.detectable:.1f}" if math.isfinite(s.margin.detectable) else "n/a (1 seed)"}
        row.update(_seeds(pp, s.margin, f"seeds for ±{100 * s.margin.target:g} margin", unit))
        if show_target:
            what = f"{100 * s.target.target:g} pts"
            row.update(_seeds(pp, s.target, f"seeds for {what}", f"{unit} ({what})"))
        rows.append(row)
    now = pp.hours(pp.seeds)
    head = (f"seeds and power ({POWER:.0%} power, two-sided, at the headline family's first Holm level "
            f"{pp.alpha:g} / {pp.family_size} = {pp.per_test_alpha:.2g}; {pp.cells} cells x {pp.seeds} "
            f"seed{'s' if pp.seeds > 1 else ''}"
            + (f" = {now:.2f} {pp.hours_unit}" if now is not None else "") + "); effects in WER points")
    lines = [head, f"variance: {pp.variance_from}", *_table(rows)]
    if pp.seeds < 2:
        lines.append("n/a (1 seed): one run per cell cannot measure training variance, so its verdicts cover test "
                     "sampling only; the seeds below are what 80% power beyond training variance needs")
    if pp.prior:
        lines.append("variance \"prior\": a stated or default prior, not measured on runs of this study")
    if any(not s.margin.reachable or not s.target.reachable for s in pp.sets):
        lines.append("not reachable: the test set's own sampling error (its SE) alone keeps the effect below "
                     f"{POWER:.0%} power at any number of seeds; a larger test set is needed")
    if pp.cost is not None and not pp.cost.timed:
        lines.append(f"{unit}: not estimated (a CPU's step time is probed by `plan`, or read from earlier runs)")
    lines += [f"  - {n}" for n in pp.notes]
    return "\n".join(lines)


def _seeds(pp: PowerPlan, p: SeedPlan, seeds_col: str, hours_col: str) -> dict[str, str]:
    need = str(p.needed) if p.needed is not None else "not reachable" if not p.reachable else f"> {MAX_SEEDS}"
    h = pp.hours(p.needed)
    return {seeds_col: need, hours_col: "-" if h is None else f"{h:.2f}"}
