"""The scoring protocol, written once: normalise both sides -> cap runaway hypotheses -> align.

Every number the harness reports about transcripts (a set's WER/CER and its interval, the
per-utterance scores behind paired tests and seed statistics, the error analysis in the
report) goes through `score`, so they can never disagree on what was compared. Stored
hypotheses stay raw; normalisation happens only here.

Capping: a hypothesis longer than ``CAP_FACTOR`` times its reference (at least
``CAP_MIN_WORDS`` words) is cut to that length before alignment, so one decoding loop of
hundreds of words cannot dominate a corpus WER; the uncapped rate is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from .metrics import UttScore, bootstrap_ci, corpus_score, score_utterances
from .normalize import Normalizer, get_normalizer, normalizer_for_language

CAP_FACTOR = 3.0
CAP_MIN_WORDS = 10


def cap_hypothesis(text: str, ref_len: int, factor: float = CAP_FACTOR, min_words: int = CAP_MIN_WORDS) -> str:
    """Truncate a runaway hypothesis to ``max(factor * ref_len, min_words)`` words.

    Text under the cap is returned unchanged.
    """
    limit = max(int(math.ceil(factor * ref_len)), min_words)
    words = text.split()
    if len(words) <= limit:
        return text
    return " ".join(words[:limit])


@dataclass(frozen=True)
class Scored:
    """One set of records under the protocol: normalised texts, capped hypotheses, scores."""

    normalizer: Normalizer
    refs: list[str]
    hyps: list[str]  # normalised, uncapped
    capped: list[str]  # what is aligned and scored
    utts: list[UttScore]

    @property
    def n_capped(self) -> int:
        return sum(a != b for a, b in zip(self.hyps, self.capped))


def resolve_normalizer(normalizer: Normalizer | str) -> Normalizer:
    return get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer


def score(records: Iterable[Mapping], normalizer: Normalizer | str, *, cap_factor: float | None = CAP_FACTOR,
          alignment: bool = False) -> Scored:
    """Normalise raw ``ref``/``hyp`` of each record, cap, align; ``cap_factor=None`` disables capping."""
    norm = resolve_normalizer(normalizer)
    records = list(records)
    refs = [norm(r.get("ref") or "") for r in records]
    hyps = [norm(r.get("hyp") or "") for r in records]
    capped = hyps if cap_factor is None else [
        cap_hypothesis(h, len(r.split()), factor=cap_factor) for r, h in zip(refs, hyps)]
    return Scored(norm, refs, hyps, capped, score_utterances(refs, capped, alignment=alignment))


def utt_scores(records: list[dict], language: str) -> list[UttScore]:
    """Per-utterance scores under the set's protocol (the language's normaliser, the cap)."""
    return score(records, normalizer_for_language(language)).utts


def score_records(
    records: Iterable[Mapping[str, str]],
    normalizer: Normalizer | str,
    *,
    cap_factor: float | None = CAP_FACTOR,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Score raw records under one normaliser and summarise them as flat metrics.

    Keys follow the MLflow metric names (``wer``, ``wer_ci_low``, ...) plus ``normalizer``;
    ``capped_rate`` and the uncapped ``wer_uncapped`` are reported beside the capped WER.
    """
    records = list(records)
    if not records:
        raise ValueError("score_records: no records")
    s = score(records, normalizer, cap_factor=cap_factor)
    total = corpus_score(s.utts)
    wer_lo, wer_hi = bootstrap_ci(s.utts, "wer", n_boot, alpha, seed)
    cer_lo, cer_hi = bootstrap_ci(s.utts, "cer", n_boot, alpha, seed)
    wer_uncapped = corpus_score(score_utterances(s.refs, s.hyps, alignment=False)).wer if s.n_capped else total.wer
    return {
        "wer": total.wer,
        "cer": total.cer,
        "wer_ci_low": wer_lo,
        "wer_ci_high": wer_hi,
        "cer_ci_low": cer_lo,
        "cer_ci_high": cer_hi,
        "n_utts": total.n_utts,
        "ref_words": total.ref_words,
        "hyp_words": total.hyp_words,
        "sub": total.sub,
        "dele": total.dele,
        "ins": total.ins,
        "hits": total.hits,
        "ref_chars": total.ref_chars,
        "char_edits": total.char_edits,
        "capped_rate": s.n_capped / len(records),
        "wer_uncapped": wer_uncapped,
        "normalizer": s.normalizer.tag,
    }
