"""JSONL manifests and audio loading shared by every data source.

Speech rows: {"id", "audio" (relative to the manifest's folder), "text", "language",
"duration", "speaker"}; text rows: {"id", "language", "instruction", "answer"}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from borealis_eval import atomic
from borealis_eval.audio import SAMPLE_RATE
from borealis_eval.errors import AudioError, DataError


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL manifest; rows with "audio" gain "audio_path" (absolute)."""
    path = Path(path)
    base = path.resolve().parent
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
            if "audio" in row:
                row["audio_path"] = str(base / row["audio"])
            rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows as JSONL atomically (see atomic.py); drops the derived "audio_path"."""
    atomic.write_text(path, "".join(json.dumps({k: v for k, v in row.items() if k != "audio_path"},
                                               ensure_ascii=False) + "\n" for row in rows))


def load_audio(src: str | os.PathLike | BinaryIO, target_sr: int = SAMPLE_RATE,
               limits: tuple[float, float] | None = None) -> np.ndarray:
    """Decode a file (or file-like bytes) to float32 mono at ``target_sr`` (soundfile + soxr).

    Channels are averaged (a speech encoder wants one channel; the mean keeps both sides of a
    stereo recording). ``limits`` = (min, max) seconds is checked on the header, before
    decoding, so an hour-long file in a set of short clips costs nothing.
    """
    import soundfile as sf
    import soxr

    is_path = isinstance(src, (str, os.PathLike))
    name = str(src) if is_path else "<bytes>"
    if is_path and not os.path.isfile(src):
        raise AudioError(f"{name}: audio file is missing", "missing")
    if is_path and os.path.getsize(src) == 0:
        raise AudioError(f"{name}: audio file is empty (0 bytes)", "empty")
    try:
        with sf.SoundFile(name if is_path else src) as f:
            sr, frames = f.samplerate, f.frames
            _check_header(name, sr, frames, limits)
            audio = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # libsndfile reports corrupt/unknown formats as several exception types
        raise AudioError(f"{name}: unreadable or corrupt audio ({e})", "corrupt") from e
    if audio.shape[0] == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)", "empty")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples", "nan")
    if sr != target_sr:
        audio = soxr.resample(audio, sr, target_sr)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _check_header(name, sr: int, frames: int, limits: tuple[float, float] | None) -> None:
    """Reject what the header already condemns: no speech is recorded below 4 kHz or above
    384 kHz (such a rate means a broken header), and clips outside the set's duration range."""
    if not 4_000 <= sr <= 384_000:
        raise AudioError(f"{name}: implausible sample rate {sr} Hz", "sample_rate")
    if frames == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)", "empty")
    seconds = frames / sr
    if limits and seconds > limits[1]:
        raise AudioError(f"{name}: {seconds:.1f} s is over the set's max_duration {limits[1]:g} s", "too_long")
    if limits and seconds < limits[0]:
        raise AudioError(f"{name}: {seconds:.2f} s is under the set's min_duration {limits[0]:g} s", "too_short")
