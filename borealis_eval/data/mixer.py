"""The training stream: language mix x plain-text fraction, deterministic for a seed.

Counts are exact up to rounding. `replace` (a fixed budget of N examples): n_text =
round(text_fraction * N) and N - n_text audio examples. `add` (a fixed audio exposure): N audio
examples and n_text = round(text_fraction * N / (1 - text_fraction)) on top, so text is still
`text_fraction` of the stream. The audio examples are split over languages by largest remainder. Each language's pool is walked through
shuffled epochs, so an item repeats only after its whole pool has been used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from borealis_eval.config import LANGUAGES, Variant, added_text
from borealis_eval.data.sources import AudioItem, TextItem
from borealis_eval.errors import MixError


def largest_remainder(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `weights` (normalised), so the counts sum to `total`."""
    norm = sum(weights.values())
    if total and not norm > 0:
        raise MixError(f"cannot split {total} examples over weights {weights}: no positive weight")
    raw = {k: total * w / norm for k, w in weights.items()} if total else {k: 0.0 for k in weights}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    left = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:left]:
        counts[k] += 1
    return counts


def _draw(pool: list, n: int, rng: np.random.Generator) -> list:
    out: list = []
    while len(out) < n:
        out.extend(pool[i] for i in rng.permutation(len(pool)))
    return out[:n]


@dataclass
class Mix:
    examples: list[AudioItem | TextItem]

    @property
    def stats(self) -> dict[str, float]:
        """Realised counts per language and the realised text fraction (logged with the run)."""
        audio = Counter(e.language for e in self.examples if isinstance(e, AudioItem))
        n_text = sum(isinstance(e, TextItem) for e in self.examples)
        # every project language appears (0 when unused) so variants' logged metrics line up
        out = {f"count_{lang}": float(audio.get(lang, 0)) for lang in sorted({*LANGUAGES, *audio})}
        out["count_text"] = float(n_text)
        out["count_total"] = float(len(self.examples))
        out["text_fraction_realised"] = n_text / max(1, len(self.examples))
        return out


def mix_for(v: Variant, audio: list[AudioItem], text: list[TextItem]) -> Mix:
    """A variant's training stream (its language mix, text fraction and mode, drawn with its seed)
    from the study's audio and text pools: what the recipe trains on and the plan measures."""
    d = v.config.data
    return mix(audio, text, d.language_mix, d.text_fraction, d.num_examples, v.config.seed, d.text_mode)


def mix(audio: list[AudioItem], text: list[TextItem], language_mix: dict[str, float], text_fraction: float,
        n: int, seed: int, text_mode: str = "replace") -> Mix:
    if not 0.0 <= text_fraction <= 1.0:
        raise MixError(f"text_fraction must be in [0, 1], got {text_fraction}")
    if n < 0:
        raise MixError(f"number of examples must be >= 0, got {n}")
    if text_mode not in ("replace", "add") or (text_mode == "add" and text_fraction >= 1.0):
        raise MixError(f"text_mode must be 'replace' or 'add' (with text_fraction < 1), got {text_mode!r}")
    rng = np.random.default_rng(seed)
    if text_mode == "add":
        n_text = added_text(n, text_fraction)
        n += n_text
    else:
        n_text = round(text_fraction * n)
    if n_text and not text:
        raise MixError("text_fraction > 0 but the text pool is empty")
    by_lang: dict[str, list[AudioItem]] = {}
    for it in audio:
        by_lang.setdefault(it.language, []).append(it)
    counts = largest_remainder(n - n_text, {k: w for k, w in language_mix.items() if w > 0})
    chosen: list[AudioItem | TextItem] = []
    for lang in sorted(counts):
        if counts[lang] and not by_lang.get(lang):
            have = ", ".join(f"{k}: {len(v)}" for k, v in sorted(by_lang.items())) or "none"
            raise MixError(f"language_mix asks for '{lang}' audio but the training sets have none (have {have})")
        chosen.extend(_draw(by_lang[lang], counts[lang], rng) if counts[lang] else [])
    chosen.extend(_draw(text, n_text, rng))
    order = rng.permutation(len(chosen))
    return Mix([chosen[i] for i in order])
