"""The plain-Whisper baseline's decoding protocol, shared by its two backends.

Protocol (the default): beam search with 5 beams, deterministic (no sampling, no temperature
fallback), the language forced per clip, task transcribe; timestamps "auto" (none up to 30 s,
Whisper's sequential long-form algorithm beyond) or "always". The backends implement it:
transformers (`baseline.py`) and CTranslate2 (`baseline_ct2.py`); `baseline.make_transcriber`
picks one. This module imports neither, so both can import it.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

SAMPLE_RATE = 16_000
DEFAULT_NUM_BEAMS = 5
Timestamps = Literal["auto", "always"]
TIMESTAMPS: tuple[str, ...] = ("auto", "always")
BACKENDS: tuple[str, ...] = ("transformers", "ctranslate2")


class Transcriber(Protocol):
    """What the evaluation needs from a baseline backend."""

    backend: str
    num_beams: int

    def transcribe(self, waves: list[np.ndarray], language: str | None, num_beams: int | None = None,
                   max_new_tokens: int = 440) -> list[str]: ...

    def protocol(self) -> dict: ...


def check_decoding(num_beams: int, timestamps: str) -> None:
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    if timestamps not in TIMESTAMPS:
        raise ValueError(f"timestamps must be one of {TIMESTAMPS}, got {timestamps!r}")


def describe_protocol(p: dict) -> str:
    """One line a report can print beside the baseline's numbers."""
    search = "greedy" if p["num_beams"] == 1 else f"beam {p['num_beams']}"
    ts = "timestamps on every clip" if p["timestamps"] == "always" else "no timestamps up to 30 s"
    return (f"Whisper {search}, deterministic (no temperature fallback), language forced, {ts}; long-form "
            f"sequential 30 s windows; {p['backend']} {p['compute_type']}")
