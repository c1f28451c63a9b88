"""The corpus's voices: which engine speaks what, and which voices are held out for test.

Three engines: espeak (robotic, pip only), Festival (Debian; Russian unit selection from the
festvox-ru reader, English diphone and HTS voices) and Piper (neural English, pip). A voice is
``engine:name`` plus an optional speed perturbation ``@warp`` (resampling that raises pitch,
formants and tempo together, as a smaller, faster speaker would), e.g.
``festival:msu_ru_nsh_clunits@0.9``, ``espeak:ru+m3``, ``piper:en_US-joe-medium@1.05``.

The split: a test voice is never heard in training. English natural test voices come from an
engine that never speaks in training (Piper); the Russian one is Festival's only Russian voice,
whose speaker also speaks in training (at other warps) and is the reader of the real
``festvox-ru`` recordings. Each test row's ``voice_stratum`` says which case it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from .espeak import TARGET_SR
from .espeak import synthesize as espeak_synthesize
from .festival import VOICES as FESTIVAL_VOICES
from .festival import Festival
from .piper import VOICE_NAME as PIPER_VOICE
from .piper import Piper

ENGINES = ("espeak", "festival", "piper")

# espeak voice variants never heard in training audio (in any language)
ESPEAK_HELDOUT_VARIANTS = ("m5", "m7", "f4")
ESPEAK_TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "f1", "f2", "f3")
ESPEAK_BASES = {"en": ("en-us", "en"), "ru": ("ru",)}


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str  # the engine's voice: "ru+m3", "msu_ru_nsh_clunits", "en_US-joe-medium"
    warp: float = 1.0

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"@{self.warp:g}" if self.warp != 1.0 else "")

    @property
    def speaker(self) -> str:
        """Whose voice it is, whatever the warp (the unit of the train/test split)."""
        return f"{self.engine}:{self.name}"

    @staticmethod
    def parse(voice_id: str) -> Voice:
        engine, _, rest = voice_id.partition(":")
        name, _, warp = rest.partition("@")
        if engine not in ENGINES or not name:
            raise ValueError(f"bad voice id {voice_id!r}: expected ENGINE:NAME[@WARP] with ENGINE in {ENGINES}")
        return Voice(engine, name, float(warp) if warp else 1.0)


def _espeak(language: str, variants) -> list[Voice]:
    return [Voice("espeak", f"{b}+{v}") for b in ESPEAK_BASES[language] for v in variants]


# natural voices: training hears these ...
NATURAL_TRAIN = {
    "ru": [Voice("festival", "msu_ru_nsh_clunits", w) for w in (0.9, 0.95, 1.05, 1.1)],
    "en": [Voice("festival", n, w) for n in ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
           for w in (0.94, 1.0, 1.06)],
}
# ... and test sets (and webinars' held-out speakers) these
NATURAL_TEST = {
    "ru": [Voice("festival", "msu_ru_nsh_clunits")],
    "en": [Voice("piper", PIPER_VOICE, w) for w in (0.95, 1.0, 1.05)],
}


def voices(language: str, heldout: bool, engine: str | None = None) -> list[Voice]:
    """The voices of one side of the split (``engine`` narrows them to espeak or the natural ones)."""
    natural = (NATURAL_TEST if heldout else NATURAL_TRAIN)[language]
    espeak = _espeak(language, ESPEAK_HELDOUT_VARIANTS if heldout else ESPEAK_TRAIN_VARIANTS)
    if engine == "espeak":
        return espeak
    if engine == "natural":
        return list(natural)
    return espeak + list(natural)


def voice_stratum(voice: Voice, language: str) -> str:
    """What is new about a test voice, relative to every voice that speaks ``language`` in training.

    ``new-engine``: the engine never speaks the language in training; ``new-voice``: the
    engine does, this voice never; ``same-speaker``: the voice speaks in training at other warps
    (festival Russian, whose speaker is also the reader of the real festvox-ru recordings);
    ``train``: the voice itself is a training voice.
    """
    train = voices(language, heldout=False)
    if voice in train:
        return "train"
    if voice.speaker in {v.speaker for v in train}:
        return "same-speaker"
    if voice.engine in {v.engine for v in train}:
        return "new-voice"
    return "new-engine"


def describe(voice: Voice) -> str:
    """One line about who speaks (for corpus.json)."""
    if voice.engine == "festival":
        return f"Festival {FESTIVAL_VOICES[voice.name].speaker}"
    if voice.engine == "piper":
        return "Piper joe (en_US-joe-medium, neural VITS, US English male; MIT voice, CC0 data)"
    return f"espeak-ng voice {voice.name}"


def to_16k(audio: np.ndarray, sr: int, warp: float = 1.0) -> np.ndarray:
    """Resample to 16 kHz, played ``warp`` times faster (pitch and formants rise with it, as a
    smaller speaker's would): the speed perturbation that turns one voice into several."""
    if warp == 1.0 and sr == TARGET_SR:
        return audio.astype(np.float32, copy=False)
    out = soxr.resample(audio, sr * warp, TARGET_SR)
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)  # resampling can overshoot full scale


def festival_voices(voice_ids) -> list[str]:
    """Festival's voice names among ``voice_ids`` (what the machine must have installed)."""
    return sorted({v.name for v in map(Voice.parse, voice_ids) if v.engine == "festival"})


class Speakers:
    """The engines of one process, started when first needed; ``speak`` returns 16 kHz float32.

    Festival and Piper keep state between utterances (Piper's noise generators), so a clip's
    samples depend on what the same ``Speakers`` said before it: the corpus renders clips in
    fixed shards, one ``Speakers`` per shard.
    """

    def __init__(self, seed: int = 0):
        self._seed = seed
        self._festival: Festival | None = None
        self._piper: Piper | None = None

    def native(self, voice: Voice, text: str, rate: int = 160, pitch: int = 50,
               length_scale: float = 1.0) -> tuple[np.ndarray, int]:
        """The engine's own output (before warp and resampling) and its sample rate."""
        if voice.engine == "espeak":
            return espeak_synthesize(text, voice.name, rate, pitch), TARGET_SR
        if voice.engine == "festival":
            self._festival = self._festival or Festival()
            return self._festival.synthesize(text, voice.name)
        if voice.engine == "piper":
            if voice.name != PIPER_VOICE:
                raise ValueError(f"unknown piper voice {voice.name!r}; packaged: {PIPER_VOICE}")
            self._piper = self._piper or Piper(self._seed)
            return self._piper.synthesize(text, length_scale), self._piper.sample_rate
        raise ValueError(f"unknown engine {voice.engine!r}")

    def speak(self, voice: Voice, text: str, rate: int = 160, pitch: int = 50, length_scale: float = 1.0) -> np.ndarray:
        audio, sr = self.native(voice, text, rate, pitch, length_scale)
        return to_16k(audio, sr, voice.warp)

    def close(self) -> None:
        if self._festival is not None:
            self._festival.close()
            self._festival = None

    def __enter__(self) -> Speakers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
