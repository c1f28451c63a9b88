"""Training-audio augmentation: signal effects on 16 kHz float32 mono waves, and the seeded Augmenter.

Effects (pure functions of the wave and an explicit numpy Generator): additive noise at a target
SNR (from noise recordings or generated coloured noise), reverberation with a synthetic room
impulse response, a telephone channel (band-pass + resampling to a narrow-band rate and back),
codec-like mu-law quantisation, speed perturbation (resampling: duration and pitch change) and
gain. The webinar synthesis (webinar.py) builds its recordings from the same functions.

The `Augmenter` turns an `AugmentConfig` into a *plan* per (seed, epoch, key): which effects a
clip gets and with which parameters. A plan depends on nothing else (not on other clips, not on
global RNG state), so a training run that resumes from a checkpoint replays the same
augmentation. Each effect draws from its own generator, so the effects are decided
independently and raising one probability never reshuffles the others.

Codec choice, measured here (libsndfile 1.2.2 via soundfile): an MP3 round trip works and takes
20-28 ms per 2.6 s clip, but below ~40 kbps the decoded stream starts with LAME's 1,105-sample
encoder delay (gapless above it), so alignment would depend on the bitrate and library
version. Mu-law (G.711-style companding, here at 4-8 bits) costs ~0.1 ms and is exact anywhere.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from borealis_eval.audio import SAMPLE_RATE
from borealis_eval.errors import AudioError

from .manifest import load_audio

if TYPE_CHECKING:
    from borealis_eval.config import AugmentConfig

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
EFFECTS = ("speed", "reverb", "noise", "telephone", "codec", "gain")  # the order they are applied in


# ------------------------------------------------------------------ signal effects
def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")


def speech_power(x: np.ndarray) -> float:
    """Mean power of the active samples (pauses do not dilute it); a floor for silent input."""
    active = x[np.abs(x) > 1e-3]
    return float(np.mean(active**2)) if active.size else 1e-4


def fftconvolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution cut to len(x) (the tail past the clip's end is dropped)."""
    from scipy.signal import fftconvolve as conv

    return conv(x, h)[: len(x)]


def coloured_noise(n: int, rng: np.random.Generator, tilt: float = 0.97) -> np.ndarray:
    """White noise with a first-order spectral tilt: > 0 leans to low frequencies (rumble), < 0 to
    high ones (hiss), 0 is white."""
    white = rng.standard_normal(n)
    return white + tilt * np.concatenate([[0.0], white[:-1]])


def noise_at_snr(x: np.ndarray, rng: np.random.Generator, snr_db: float, noise: np.ndarray | None = None,
                 tilt: float = 0.97) -> np.ndarray:
    """Noise (given, same length as x, or generated) scaled to `snr_db` below x's speech power (float64)."""
    p_speech = speech_power(x)
    if noise is None:
        noise = coloured_noise(len(x), rng, tilt)
    p_noise = float(np.mean(noise**2)) if len(noise) else 0.0
    if not p_noise > 0:  # a silent noise file adds nothing (and no NaN)
        return np.zeros(len(x))
    return noise * np.sqrt(p_speech / 10 ** (snr_db / 10) / p_noise)


def loop_to_length(noise: np.ndarray, n: int, offset: int) -> np.ndarray:
    """`n` samples of a noise recording from `offset` on, looping around its end."""
    return noise[(offset + np.arange(n)) % len(noise)]


def add_noise(wave: np.ndarray, rng: np.random.Generator, snr_db: float, noise: np.ndarray | None = None,
              tilt: float = 0.97) -> np.ndarray:
    """Additive noise at `snr_db` (speech power over noise power): a recording (looped or cropped from a
    random offset), or generated coloured noise if none is given."""
    if noise is not None and len(noise) != len(wave):
        noise = loop_to_length(noise, len(wave), int(rng.integers(len(noise))))
    return (wave + noise_at_snr(wave, rng, snr_db, noise, tilt)).astype(np.float32)


def reverberate(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with an exponentially decaying noise tail (60 dB down after `rt60` seconds; direct path
    kept at unit gain, tail ~6 dB below it)."""
    t = np.arange(max(1, int(rt60 * SAMPLE_RATE))) / SAMPLE_RATE
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir *= 0.5 / np.sqrt(np.sum(ir**2))
    ir[0] = 1.0
    return fftconvolve(x, ir).astype(np.float32)


def telephone_band(x: np.ndarray, band_hz: tuple[float, float] = (300, 3400)) -> np.ndarray:
    """4th-order Butterworth band-pass (the telephone voice band by default)."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, list(band_hz), btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, x).astype(np.float32)


def telephone(x: np.ndarray, band_hz: tuple[float, float] = (300, 3400), sample_rate: int = 8000) -> np.ndarray:
    """A narrow-band phone channel: band-pass, resampled down to `sample_rate` and back (same length)."""
    import soxr

    y = telephone_band(x, band_hz)
    if sample_rate < SAMPLE_RATE and len(y):
        y = soxr.resample(soxr.resample(y, SAMPLE_RATE, sample_rate), sample_rate, SAMPLE_RATE)
        y = np.pad(y[: len(x)], (0, max(0, len(x) - len(y))))
    return y.astype(np.float32)


def mu_law(x: np.ndarray, bits: int) -> np.ndarray:
    """Mu-law companding quantised to `bits` (2**bits - 1 levels, zero among them), expanded back.
    Input is clipped to [-1, 1] as a codec would."""
    mu = 2.0**bits - 1
    levels = 2 ** (bits - 1) - 1
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round(y * levels) / levels
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (duration / factor, pitch x factor), as speed perturbation does."""
    import soxr

    if factor == 1.0 or not len(x):
        return x.astype(np.float32)
    return soxr.resample(x.astype(np.float32), SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def apply_gain(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** (db / 20)).astype(np.float32)


def limit(x: np.ndarray) -> np.ndarray:
    """Finite samples within [-1, 1]: non-finite samples become 0, a peak above 1 is scaled down to 1."""
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x / peak if peak > 1.0 else x).astype(np.float32)


# ------------------------------------------------------------------ seeded augmentation
Plan = list[tuple[str, dict]]  # [(effect name, its drawn parameters)] in EFFECTS order


def noise_files(paths: list[str]) -> list[Path]:
    """Audio files named by `paths` (files, or folders searched recursively), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise AudioError(f"augment.noise.files: {p} is neither a file nor a folder")
    if paths and not out:
        raise AudioError(f"augment.noise.files: no audio files ({', '.join(AUDIO_SUFFIXES)}) in {paths}")
    return out


class Augmenter:
    """Seeded, per-clip augmentation from an `AugmentConfig`.

    `plan(key, epoch)` draws the effects of one clip occurrence; `apply` renders them; `augment`
    does both. `key` names the occurrence (the training hook uses the clip id and its position in
    the mixed stream, so a clip drawn twice in one epoch is augmented twice, differently). `epoch`
    may be fractional (passes over the stream so far): its integer part seeds the draws, and with
    `curriculum_epochs` > 0 every probability is scaled by min(1, epoch / curriculum_epochs).
    """

    def __init__(self, cfg: AugmentConfig, seed: int, max_seconds: float = 30.0, cached_noise_files: int = 32):
        self.cfg = cfg
        self.seed = seed & 0xFFFFFFFFFFFFFFFF  # SeedSequence entropy must be non-negative
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.noise_paths = noise_files(cfg.noise.files) if cfg.noise else []
        self._noise: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cached_noise_files = cached_noise_files

    @property
    def effects(self) -> list[str]:
        return [name for name in EFFECTS if getattr(self.cfg, name) is not None]

    def strength(self, epoch: float) -> float:
        """The curriculum's factor on every probability at `epoch`."""
        n = self.cfg.curriculum_epochs
        return min(1.0, max(0.0, epoch) / n) if n > 0 else 1.0

    def plan(self, key: str, epoch: float) -> Plan:
        scale = self.strength(epoch)
        h = stable_hash(key)
        out: Plan = []
        for k, name in enumerate(EFFECTS):
            c = getattr(self.cfg, name)
            if c is None:
                continue
            rng = np.random.default_rng([self.seed, int(epoch), h, k])
            if rng.random() >= c.p * scale:
                continue
            if name == "speed":
                params = {"factor": rng.uniform(*c.factor)}
            elif name == "reverb":
                params = {"rt60": rng.uniform(*c.rt60), "seed": int(rng.integers(2**63))}
            elif name == "noise":
                params = {"snr_db": rng.uniform(*c.snr_db), "seed": int(rng.integers(2**63))}
                if self.noise_paths:
                    params["file"] = int(rng.integers(len(self.noise_paths)))
                else:
                    params["tilt"] = rng.uniform(-0.97, 0.97)
            elif name == "telephone":
                params = {"band_hz": c.band_hz, "sample_rate": c.sample_rate}
            elif name == "codec":
                params = {"bits": int(rng.integers(c.bits[0], c.bits[1] + 1))}
            else:  # gain
                params = {"db": rng.uniform(*c.db)}
            out.append((name, params))
        return out

    def apply(self, wave: np.ndarray, plan: Plan) -> np.ndarray:
        y = np.asarray(wave, dtype=np.float32)
        if not len(y):
            return y
        for name, p in plan:
            if name == "speed":  # never longer than the encoder's 30 s window
                y = change_speed(y, max(p["factor"], len(y) / self.max_samples))
            elif name == "reverb":
                y = reverberate(y, np.random.default_rng(p["seed"]), p["rt60"])
            elif name == "noise":
                noise = self._noise_wave(p["file"]) if "file" in p else None
                y = add_noise(y, np.random.default_rng(p["seed"]), p["snr_db"], noise, p.get("tilt", 0.97))
            elif name == "telephone":
                y = telephone(y, p["band_hz"], p["sample_rate"])
            elif name == "codec":
                y = mu_law(limit(y), p["bits"])
            elif name == "gain":
                y = apply_gain(y, p["db"])
        return limit(y)

    def augment(self, wave: np.ndarray, key: str, epoch: float) -> tuple[np.ndarray, list[str]]:
        """The augmented wave and the names of the effects applied (an empty list: the wave unchanged)."""
        plan = self.plan(key, epoch)
        if not plan:
            return wave, []
        return self.apply(wave, plan), [name for name, _ in plan]

    def _noise_wave(self, index: int) -> np.ndarray:
        path = self.noise_paths[index]
        if path not in self._noise:
            wave = load_audio(path, SAMPLE_RATE)
            self._noise[path] = wave
            while len(self._noise) > self._cached_noise_files:
                self._noise.popitem(last=False)
        self._noise.move_to_end(path)
        return self._noise[path]
