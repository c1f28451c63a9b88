"""Plain-text ability checks: does the speech-LLM still follow text-only instructions?

Scores predictions against reference answers with corpus chrF (sacrebleu, on the raw text:
character n-grams are robust to small wording differences) and exact match after the ``basic``
normaliser (case, punctuation and spacing do not count).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from sacrebleu.metrics import CHRF

from .normalize import get_normalizer

__all__ = ["text_ability"]


def text_ability(records: Iterable[Mapping[str, str]]) -> dict:
    """``records``: dicts with ``answer`` (reference) and ``prediction``.

    Returns ``{"chrf": 0..100, "exact_match": 0..1, "n": count}``.
    """
    records = list(records)
    if not records:
        raise ValueError("text_ability: no records")
    refs = [r["answer"] or "" for r in records]
    preds = [r["prediction"] or "" for r in records]
    basic = get_normalizer("basic")
    exact = sum(basic(p) == basic(a) for p, a in zip(preds, refs))
    return {
        "chrf": float(CHRF().corpus_score(preds, [refs]).score),
        "exact_match": exact / len(records),
        "n": len(records),
    }
