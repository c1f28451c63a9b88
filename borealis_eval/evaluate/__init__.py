"""Scoring: normalisers, WER/CER with confidence intervals and paired tests, failure metrics."""

from .failures import cap_hypothesis, failure_metrics
from .metrics import (
    CorpusScore,
    PairedResult,
    UttScore,
    bootstrap_ci,
    corpus_score,
    paired_test,
    score_records,
    score_utterances,
)
from .normalize import NORMALIZERS, Normalizer, get_normalizer, normalizer_for_language
from .textskill import text_ability

__all__ = [
    "NORMALIZERS",
    "CorpusScore",
    "Normalizer",
    "PairedResult",
    "UttScore",
    "bootstrap_ci",
    "cap_hypothesis",
    "corpus_score",
    "failure_metrics",
    "get_normalizer",
    "normalizer_for_language",
    "paired_test",
    "score_records",
    "score_utterances",
    "text_ability",
]
