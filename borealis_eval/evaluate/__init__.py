"""Scoring: normalisers, the scoring protocol, WER/CER with intervals and paired tests, failure metrics."""

from .failures import failure_metrics
from .metrics import CorpusScore, PairedResult, UttScore, bootstrap_ci, corpus_score, paired_test, score_utterances
from .normalize import NORMALIZERS, Normalizer, get_normalizer, normalizer_for_language
from .protocol import cap_hypothesis, score, score_records, utt_scores
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
    "score",
    "score_records",
    "score_utterances",
    "text_ability",
    "utt_scores",
]
