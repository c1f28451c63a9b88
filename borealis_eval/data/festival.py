"""Natural-sounding voices from Debian's Festival (``festival`` and ``festvox-*`` packages).

Festival has no Python binding, so one ``festival --pipe`` process serves a whole shard of
clips: starting it and loading a unit-selection voice takes ~1.5 s, a clip then ~0.05-0.3 s.
Each command is followed by a marker line that Festival flushes, so Python knows when a
wave file is complete. Festival's synthesis is deterministic (same text, same bytes).

Installing is the supported route (we are root on these machines):
``apt-get install -y --no-install-recommends festival festvox-ru festvox-kallpc16k
festvox-kdlpc16k festvox-us-slt-hts`` (about 190 MB, mostly the Russian voice's recordings).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass(frozen=True)
class FestivalVoice:
    name: str  # Festival's own name, as (voice.list) prints it
    language: str
    package: str  # the Debian package that ships it
    speaker: str  # who the voice was recorded from (for the train/test voice split)


VOICES = {v.name: v for v in (
    FestivalVoice("msu_ru_nsh_clunits", "ru", "festvox-ru",
                  "msu_ru_nsh: male reader of the festvox-ru recordings (unit selection from them)"),
    FestivalVoice("kal_diphone", "en", "festvox-kallpc16k", "kal: American English male (diphones)"),
    FestivalVoice("ked_diphone", "en", "festvox-kdlpc16k", "ked: American English male (diphones)"),
    FestivalVoice("cmu_us_slt_arctic_hts", "en", "festvox-us-slt-hts", "slt: US English female (CMU ARCTIC, HTS)"),
)}
INSTALL = ("apt-get install -y --no-install-recommends festival "
           + " ".join(sorted({v.package for v in VOICES.values()})))


class FestivalError(RuntimeError):
    """Festival is missing, lacks a voice, or failed on a text."""


@functools.lru_cache(maxsize=1)
def installed_voices() -> frozenset[str]:
    """Voices this machine's Festival offers (empty when the ``festival`` binary is absent)."""
    if shutil.which("festival") is None:
        return frozenset()
    out = subprocess.run(["festival", "--pipe"], input='(format t "%l\\n" (voice.list))\n',
                         capture_output=True, text=True, timeout=60, check=False)
    return frozenset(out.stdout.strip().strip("()").split())


def missing(voices) -> list[str]:
    """Human-readable reasons why ``voices`` cannot be synthesised here (empty when they can)."""
    if not voices:
        return []
    if shutil.which("festival") is None:
        return [f"the festival binary is not installed (as root: {INSTALL})"]
    have = installed_voices()
    return [f"festival voice {v} is missing (package {VOICES[v].package}; as root: {INSTALL})"
            for v in voices if v not in have]


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Festival:
    """One Festival process; ``synthesize`` speaks a text with a voice from ``VOICES``."""

    def __init__(self):
        if shutil.which("festival") is None:
            raise FestivalError(f"the festival binary is not installed (as root: {INSTALL})")
        self._dir = Path(tempfile.mkdtemp(prefix="festival-"))
        self._stderr = open(self._dir / "stderr.txt", "w+", encoding="utf-8")
        self._proc = subprocess.Popen(["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, encoding="utf-8")
        self._n = 0
        self._voice: str | None = None

    def _run(self, command: str) -> None:
        self._n += 1
        marker = f"borealis-done {self._n}"
        try:
            self._proc.stdin.write(f'{command}\n(format t "{marker}\\n")\n(fflush nil)\n')
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if line.strip() != marker:
            self._stderr.seek(0)
            raise FestivalError(f"festival failed on {command[:200]!r}: {self._stderr.read()[-500:]}")

    def synthesize(self, text: str, voice: str) -> tuple[np.ndarray, int]:
        """Speak ``text``; returns float32 mono samples at the voice's own rate, and that rate."""
        if not text.strip():
            raise ValueError("synthesize: empty text")
        if voice not in VOICES:
            raise FestivalError(f"unknown festival voice {voice!r}; known: {sorted(VOICES)}")
        if voice != self._voice:
            self._run(f"(voice_{voice})")
            self._voice = voice
        path = self._dir / "out.wav"
        path.unlink(missing_ok=True)
        self._run(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) {_scheme_string(str(path))} 'riff)")
        if not path.is_file():
            self._stderr.seek(0)
            raise FestivalError(f"festival wrote no audio for {text!r} ({voice}): {self._stderr.read()[-500:]}")
        audio, sr = sf.read(path, dtype="float32")
        return (audio if audio.ndim == 1 else audio.mean(axis=1)), int(sr)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Festival:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

