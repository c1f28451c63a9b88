"""WER/CER with per-utterance counts, corpus aggregation, bootstrap intervals and paired tests.

Conventions (hold for every number this module returns):
- Inputs are already-normalised strings; tokens are ``str.split()`` words, so any run of
  whitespace is one separator. Characters are counted on the words re-joined by single spaces,
  so CER includes the spaces between words (as jiwer's ``cer`` does) but no leading/trailing or
  repeated whitespace.
- Corpus WER = (S + D + I) / N over the whole set (total edits over total reference words), not
  the mean of per-utterance WERs, which would over-weight short utterances.
- When the reference side is empty (N = 0), the error rate is 0.0 if there are no edits
  (nothing said, nothing hypothesised) and 1.0 otherwise. This keeps rates finite; it applies to
  a single utterance, a corpus, and each bootstrap resample alike.
- Alignment is jiwer's (Levenshtein); empty sides are handled here without calling jiwer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import jiwer
import numpy as np

__all__ = [
    "UttScore",
    "CorpusScore",
    "PairedResult",
    "score_utterances",
    "corpus_score",
    "bootstrap_ci",
    "paired_test",
]

Op = tuple[str, "str | None", "str | None"]  # ("equal"|"substitute"|"delete"|"insert", ref, hyp)


@dataclass(frozen=True)
class UttScore:
    ref_words: int
    hyp_words: int
    sub: int
    dele: int
    ins: int
    hits: int
    ref_chars: int
    char_edits: int
    alignment: tuple[Op, ...] = ()

    @property
    def word_edits(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        return _rate(self.word_edits, self.ref_words)

    @property
    def cer(self) -> float:
        return _rate(self.char_edits, self.ref_chars)


@dataclass(frozen=True)
class CorpusScore:
    wer: float
    cer: float
    n_utts: int
    ref_words: int
    hyp_words: int
    sub: int
    dele: int
    ins: int
    hits: int
    ref_chars: int
    char_edits: int


@dataclass(frozen=True)
class PairedResult:
    """System A minus system B on the same utterances; negative delta means A is better."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    metric: str = "wer"


def _rate(edits: float, n: float) -> float:
    if n == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / n


def _rates(edits: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Vectorised ``_rate``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n == 0, (edits != 0).astype(float), edits / np.where(n == 0, 1, n))


# ---------------------------------------------------------------- per utterance

_WORDS = jiwer.ReduceToListOfListOfWords()
_CHARS = jiwer.ReduceToListOfListOfChars()


def _chunk_counts(chunks) -> dict[str, int]:
    counts = {"equal": 0, "substitute": 0, "delete": 0, "insert": 0}
    for c in chunks:
        counts[c.type] += max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
    return counts


def _expand(chunks, ref: list[str], hyp: list[str]) -> tuple[Op, ...]:
    ops: list[Op] = []
    for c in chunks:
        r, h = ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]
        if c.type == "delete":
            ops.extend((c.type, w, None) for w in r)
        elif c.type == "insert":
            ops.extend((c.type, None, w) for w in h)
        else:
            ops.extend((c.type, a, b) for a, b in zip(r, h))
    return tuple(ops)


def score_utterances(
    refs: Sequence[str], hyps: Sequence[str], *, alignment: bool = True
) -> list[UttScore]:
    """Align each (normalised) reference with its hypothesis; one ``UttScore`` per pair.

    ``alignment=False`` skips building the per-word op list (bootstrap-heavy callers).
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    ref_w = [r.split() for r in refs]
    hyp_w = [h.split() for h in hyps]
    both = [i for i in range(len(refs)) if ref_w[i] and hyp_w[i]]

    word_chunks: dict[int, list] = {}
    char_chunks: dict[int, list] = {}
    if both:
        r_txt = [" ".join(ref_w[i]) for i in both]
        h_txt = [" ".join(hyp_w[i]) for i in both]
        # our own tokenisation (single spaces) is final: no jiwer default transforms
        words = jiwer.process_words(r_txt, h_txt, _WORDS, _WORDS)
        chars = jiwer.process_characters(r_txt, h_txt, _CHARS, _CHARS)
        word_chunks = dict(zip(both, words.alignments))
        char_chunks = dict(zip(both, chars.alignments))

    out: list[UttScore] = []
    for i, (rw, hw) in enumerate(zip(ref_w, hyp_w)):
        n_ref_chars = len(" ".join(rw))
        if i in word_chunks:
            wc = _chunk_counts(word_chunks[i])
            cc = _chunk_counts(char_chunks[i])
            char_edits = cc["substitute"] + cc["delete"] + cc["insert"]
            ops = _expand(word_chunks[i], rw, hw) if alignment else ()
            out.append(UttScore(
                ref_words=len(rw), hyp_words=len(hw), sub=wc["substitute"],
                dele=wc["delete"], ins=wc["insert"], hits=wc["equal"],
                ref_chars=n_ref_chars, char_edits=char_edits, alignment=ops,
            ))
        else:  # at least one side empty: everything is a deletion or an insertion
            ops = tuple(("delete", w, None) for w in rw) + tuple(("insert", None, w) for w in hw)
            out.append(UttScore(
                ref_words=len(rw), hyp_words=len(hw), sub=0, dele=len(rw), ins=len(hw),
                hits=0, ref_chars=n_ref_chars, char_edits=n_ref_chars + len(" ".join(hw)),
                alignment=ops if alignment else (),
            ))
    return out


# ---------------------------------------------------------------- corpus level


def corpus_score(utts: Iterable[UttScore]) -> CorpusScore:
    """Aggregate counts over the set; WER/CER are ratios of totals (see module docstring)."""
    utts = list(utts)
    tot = {f: sum(getattr(u, f) for u in utts) for f in
           ("ref_words", "hyp_words", "sub", "dele", "ins", "hits", "ref_chars", "char_edits")}
    return CorpusScore(
        wer=_rate(tot["sub"] + tot["dele"] + tot["ins"], tot["ref_words"]),
        cer=_rate(tot["char_edits"], tot["ref_chars"]),
        n_utts=len(utts),
        **tot,
    )


def _edits_and_units(utts: Sequence[UttScore], metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == "wer":
        e = [u.word_edits for u in utts]
        n = [u.ref_words for u in utts]
    elif metric == "cer":
        e = [u.char_edits for u in utts]
        n = [u.ref_chars for u in utts]
    else:
        raise ValueError(f"metric must be 'wer' or 'cer', got {metric!r}")
    return np.asarray(e, dtype=np.int64), np.asarray(n, dtype=np.int64)


def _resampled_sums(values: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Sum of each array over ``n_boot`` bootstrap resamples of utterance indices.

    All arrays share the same resampled indices (that is what makes a paired test paired).
    Resample counts come from a multinomial draw, in chunks so memory stays ~O(n) per chunk.
    """
    n = len(values[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    sums: list[list[np.ndarray]] = [[] for _ in values]
    done = 0
    while done < n_boot:
        k = min(chunk, n_boot - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=k)  # (k, n) times each utt drawn
        for acc, v in zip(sums, values):
            acc.append(counts @ v)
        done += k
    return [np.concatenate(acc) for acc in sums]


def bootstrap_ci(
    utts: Sequence[UttScore],
    metric: str = "wer",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus-level rate, resampling whole utterances."""
    if not utts:
        raise ValueError("bootstrap_ci needs at least one utterance")
    edits, units = _edits_and_units(utts, metric)
    e_sum, n_sum = _resampled_sums([edits, units], n_boot, seed)
    lo, hi = np.quantile(_rates(e_sum, n_sum), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_test(
    utts_a: Sequence[UttScore],
    utts_b: Sequence[UttScore],
    metric: str = "wer",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedResult:
    """Paired bootstrap test (Koehn 2004; Bisani & Ney 2004) of corpus rate A - B.

    Both lists must score the same utterances in the same order. Each resample draws utterance
    indices once and applies them to both systems. The two-sided p-value is twice the share of
    resamples whose delta has the opposite sign to (or equals zero against) the observed delta,
    with add-one smoothing so it is never exactly 0: p = min(1, 2 (flips + 1) / (n_boot + 1)).
    An observed delta of exactly 0 gives p = 1.
    """
    if len(utts_a) != len(utts_b):
        raise ValueError(f"paired_test: {len(utts_a)} vs {len(utts_b)} utterances")
    if not utts_a:
        raise ValueError("paired_test needs at least one utterance")
    e_a, n_a = _edits_and_units(utts_a, metric)
    e_b, n_b = _edits_and_units(utts_b, metric)
    mismatch = np.flatnonzero(n_a != n_b)
    if mismatch.size:
        i = int(mismatch[0])
        raise ValueError(
            f"paired_test: references differ at utterance {i} ({n_a[i]} vs {n_b[i]} reference "
            "units); both systems must be scored on the same, identically normalised references"
        )
    delta = _rate(int(e_a.sum()), int(n_a.sum())) - _rate(int(e_b.sum()), int(n_a.sum()))
    ea_s, eb_s, n_s = _resampled_sums([e_a, e_b, n_a], n_boot, seed)
    deltas = _rates(ea_s, n_s) - _rates(eb_s, n_s)
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    if delta == 0:
        p = 1.0
    else:
        flips = int(np.count_nonzero(deltas <= 0 if delta > 0 else deltas >= 0))
        p = min(1.0, 2.0 * (flips + 1) / (n_boot + 1))
    return PairedResult(float(delta), float(lo), float(hi), p, len(utts_a), metric)
