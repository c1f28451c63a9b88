"""Text pieces of a plan: number formats and the eval-protocol rows (also shown by `sweep --dry-run`)."""

from __future__ import annotations

from typing import Any

from borealis_eval.config import ExperimentConfig, HFSource


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
