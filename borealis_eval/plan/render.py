"""The plan as plain text: summary, per-variant table, memory of the first variant, eval sets, assumptions."""

from __future__ import annotations

from borealis_eval.plan.estimate import Plan
from borealis_eval.plan.model_cost import Memory


def render(p: Plan) -> str:
    """Plain-text plan: summary, per-variant table, eval protocol, assumptions."""
    lines = [p.summary(), ""]
    rows = p.rows()
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines.append("  ".join(c.ljust(widths[c]) for c in cols))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
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
