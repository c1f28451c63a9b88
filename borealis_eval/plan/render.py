"""The plan as text: number formats, the eval-protocol rows (also `sweep --dry-run`), the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from borealis_eval.config import ExperimentConfig, HFSource
from borealis_eval.plan.model_cost import Memory

if TYPE_CHECKING:
    from borealis_eval.plan.estimate import Plan


def fmt_count(n: float) -> str:
    return next(f"{n / d:.3g}{u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")) if abs(n) >= d or d == 1)


def fmt_duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def eval_set_rows(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """What `sweep --dry-run` can show about the eval protocol: one row per set."""
    e = cfg.eval
    rows = []
    for s in cfg.eval.sets:
        src = s.source
        where = (f"{src.id}" + (f" [{src.config}]" if getattr(src, "config", None) else "") + f" {src.split}"
                 if isinstance(src, HFSource) else f"{src.kind}:{getattr(src, 'split', getattr(src, 'path', ''))}")
        first = isinstance(src, HFSource) and src.streaming
        rows.append({"set": s.name, "source": where, "language": s.language or "",
                     "rows": (f"first {s.max_samples}" if first else str(s.max_samples)) if s.max_samples else "all",
                     "long-form": f"{e.long_form} over {e.window_seconds:g} s windows",
                     "reference": "; ".join(f"{r.system} {r.wer:g}%" for r in s.reference)})
    return rows


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
