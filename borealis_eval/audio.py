"""Audio units shared by every module: the sample rate everything runs at, encoder frame rate.

Whisper-family encoders see 16 kHz audio as 100 log-mel frames per second and halve that in
their convolution stem, so one encoder output frame is 20 ms.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
ENCODER_FRAMES_PER_SECOND = 50


def duration(wave: np.ndarray) -> float:
    """Seconds of a 16 kHz wave."""
    return len(wave) / SAMPLE_RATE


def windows(wave: np.ndarray, seconds: float) -> list[np.ndarray]:
    """Cut long audio into consecutive windows of at most `seconds` (the last may be shorter)."""
    n = int(seconds * SAMPLE_RATE)
    return [wave[s : s + n] for s in range(0, max(1, len(wave)), n)] if len(wave) > n else [wave]
