"""Text-to-speech through libespeak-ng shipped by PyPI ``espeakng-loader`` (no apt, no binary).

The library is driven through ctypes in synchronous mode: ``espeak_Synth`` returns only after
the whole utterance has been passed to our callback, which appends the 16-bit samples
(22,050 Hz) to a buffer. libespeak-ng keeps global state, so every call holds a module lock and
the library is initialised once per process (re-initialised after a fork).
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
import soxr

TARGET_SR = 16_000

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / flags from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_state: dict = {"pid": None, "lib": None, "sr": None, "cb": None}
_chunks: list[np.ndarray] = []


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded, initialised, or refused a voice/text."""


def _on_samples(wav, numsamples, events):  # called by libespeak-ng inside espeak_Synth
    if wav and numsamples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0  # 0 = continue synthesis


def _library():
    """Load and initialise libespeak-ng once per process; caller holds ``_lock``."""
    if _state["pid"] == os.getpid():
        return _state["lib"]
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise EspeakError("espeakng-loader is not installed: pip install 'espeakng-loader>=0.2.4'") from e
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    data_path = espeakng_loader.get_data_path().encode()
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
    if sr <= 0:
        raise EspeakError(f"espeak_Initialize failed (returned {sr}) with data path {data_path.decode()}")
    cb = _CALLBACK(_on_samples)  # keep a reference: ctypes callbacks die with their Python object
    lib.espeak_SetSynthCallback(cb)
    _state.update(pid=os.getpid(), lib=lib, sr=sr, cb=cb)
    return lib


def native_sample_rate() -> int:
    """Sample rate libespeak-ng produces (22,050 Hz for the bundled voices)."""
    with _lock:
        _library()
        return int(_state["sr"])


def synthesize(text: str, voice: str, rate_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with an espeak voice (e.g. ``"en-us+f2"``, ``"ru+m3"``).

    Returns float32 mono samples in [-1, 1] at 16 kHz, resampled with soxr.
    ``rate_wpm`` is espeak's speed in words per minute, ``pitch`` its base pitch (0-100).
    """
    if not text.strip():
        raise ValueError("synthesize: empty text")
    with _lock:
        lib = _library()
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EspeakError(f"espeak voice not found: {voice!r}")
        lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        _chunks.clear()
        lib.espeak_ng_SetRandSeed(0)  # espeak jitters pitch/noise randomly: fix it per utterance
        err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
        sr = int(_state["sr"])
    if err != _EE_OK:
        raise EspeakError(f"espeak_Synth failed with code {err} for voice {voice!r}")
    audio = pcm.astype(np.float32) / 32768.0
    if sr != TARGET_SR and audio.size:
        audio = soxr.resample(audio, sr, TARGET_SR).astype(np.float32, copy=False)
    return audio
