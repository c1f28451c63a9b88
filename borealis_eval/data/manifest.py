"""JSONL manifests and audio loading shared by every data source.

Speech rows: {"id", "audio" (relative to the manifest's folder), "text", "language",
"duration", "speaker"}; text rows: {"id", "language", "instruction", "answer"}.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or contains NaN samples."""


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
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
            if "audio" in row:
                row["audio_path"] = str(base / row["audio"])
            rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows as JSONL atomically (temp file + os.replace); drops the derived "audio_path"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                row = {k: v for k, v in row.items() if k != "audio_path"}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_audio(path: str | os.PathLike, target_sr: int = 16_000) -> np.ndarray:
    """Decode an audio file to float32 mono at ``target_sr`` (soundfile + soxr)."""
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file is missing")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports corrupt/unknown formats as several exception types
        raise AudioError(f"{path}: unreadable or corrupt audio ({e})") from e
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: audio file is empty (0 samples)")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if np.isnan(audio).any():
        raise AudioError(f"{path}: audio contains NaN samples")
    if sr != target_sr:
        audio = soxr.resample(audio, sr, target_sr)
    return np.ascontiguousarray(audio, dtype=np.float32)
