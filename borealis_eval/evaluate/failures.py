"""Failure metrics: the ways a speech-LLM goes wrong that a single WER number hides.

- ``empty_rate``: hypothesis empty after normalisation (the model said nothing).
- ``loop_rate``: repetition loops. A hypothesis loops when some word n-gram (n = 1..4) repeats
  back to back at least 4 times ("да да да да", "i think that i think that ..."), or when its
  UTF-8 text is at least 100 bytes long and compresses with zlib by more than 2.4x (Whisper's
  compression-ratio threshold; catches loops of longer units and of characters without spaces).
- ``len_ratio_mean`` / ``len_ratio_p95``: hypothesis words / reference words (utterances with
  an empty reference are left out of the ratio).
- ``wrong_script_rate``: share of hypotheses whose letters are less than half in the script the
  language expects (e.g. Latin transliteration or an English translation for Russian audio).
  Hypotheses without letters do not count as wrong-script. NaN for languages without a known
  script.
- ``over100_rate``: share of utterances with utterance WER > 1 (uncapped hypotheses).
- ``capped_rate``: share of hypotheses that ``cap_hypothesis`` truncates at scoring time.
"""

from __future__ import annotations

import unicodedata
import zlib
from typing import Sequence

import numpy as np

from .metrics import score_utterances
from .normalize import Normalizer, normalizer_for_language
from .protocol import cap_hypothesis

__all__ = ["failure_metrics", "is_loop", "script_share", "SCRIPT_BY_LANGUAGE"]

LOOP_MIN_REPEATS = 4
LOOP_MAX_NGRAM = 4
COMPRESSION_RATIO_THRESHOLD = 2.4
COMPRESSION_MIN_BYTES = 100

# Unicode character-name prefix of the script each language is written in.
SCRIPT_BY_LANGUAGE = {
    **dict.fromkeys(("ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "tt", "ba"), "CYRILLIC"),
    **dict.fromkeys(("en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "tr", "sv", "fi"),
                    "LATIN"),
}


def _has_ngram_loop(words: Sequence[str]) -> bool:
    # an n-gram repeated k times back to back <=> a run of >= (k-1)*n positions i where
    # words[i] == words[i+n]
    need = LOOP_MIN_REPEATS - 1
    for n in range(1, LOOP_MAX_NGRAM + 1):
        run = 0
        for i in range(len(words) - n):
            run = run + 1 if words[i] == words[i + n] else 0
            if run >= need * n:
                return True
    return False


def is_loop(text: str) -> bool:
    """True when ``text`` (normalised) shows a repetition loop; see the module docstring."""
    if _has_ngram_loop(text.split()):
        return True
    data = text.encode("utf-8")
    if len(data) < COMPRESSION_MIN_BYTES:
        return False
    return len(data) / len(zlib.compress(data)) > COMPRESSION_RATIO_THRESHOLD


def script_share(text: str, script: str) -> float | None:
    """Share of letters in ``text`` whose Unicode name starts with ``script``; None if no letters."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    hits = sum(unicodedata.name(c, "").startswith(script) for c in letters)
    return hits / len(letters)


def failure_metrics(
    refs: Sequence[str],
    hyps: Sequence[str],
    language: str,
    max_hyp_ratio: float = 3.0,
    normalizer: Normalizer | None = None,
    languages: Sequence[str] | None = None,
) -> dict:
    """Failure metrics over raw reference/hypothesis pairs of one language.

    Texts are normalised with ``normalizer`` (default: the language's normaliser); the script
    check reads the raw hypothesis, against each utterance's own language when ``languages`` is
    given (a mixed set), else against ``language``. ``max_hyp_ratio`` is the ``cap_hypothesis``
    factor used to report ``capped_rate``.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    n = len(refs)
    if n == 0:
        raise ValueError("failure_metrics: no utterances")
    norm = normalizer or normalizer_for_language(language)
    n_refs = [norm(r) for r in refs]
    n_hyps = [norm(h or "") for h in hyps]
    utts = score_utterances(n_refs, n_hyps, alignment=False)

    ratios = np.array([u.hyp_words / u.ref_words for u in utts if u.ref_words > 0], dtype=float)
    langs = list(languages) if languages is not None else [language] * n
    if len(langs) != n:
        raise ValueError(f"{n} utterances but {len(langs)} languages")
    scripts = [SCRIPT_BY_LANGUAGE.get(str(lang).lower().split("-")[0]) for lang in langs]
    if any(sc is None for sc in scripts):
        wrong_script = float("nan")  # a language whose script is unknown: no honest rate
    else:
        shares = [script_share(h or "", sc) for h, sc in zip(hyps, scripts)]
        wrong_script = sum(s is not None and s < 0.5 for s in shares) / n
    capped = sum(
        cap_hypothesis(h, u.ref_words, factor=max_hyp_ratio) != h for h, u in zip(n_hyps, utts)
    )
    return {
        "n_utts": n,
        "empty_rate": sum(not h for h in n_hyps) / n,
        "loop_rate": sum(is_loop(h) for h in n_hyps) / n,
        "len_ratio_mean": float(ratios.mean()) if ratios.size else float("nan"),
        "len_ratio_p95": float(np.percentile(ratios, 95)) if ratios.size else float("nan"),
        "wrong_script_rate": wrong_script,
        "over100_rate": sum(u.wer > 1.0 for u in utts) / n,
        "capped_rate": capped / n,
    }
