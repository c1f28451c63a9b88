"""Plain-Whisper baseline, decoded the way Whisper's users run it.

Protocol (the default: plain Whisper as its users run it): beam search
with 5 beams, deterministic (no sampling, no temperature fallback), the language forced per
clip, task transcribe. That is what OpenAI's `transcribe`, faster-whisper and transformers' ASR
`pipeline` default to (the pipeline's docstring: "follows openai's whisper implementation").
Greedy decoding (`num_beams=1`) stays available as a setting of its own, independent of the
speech-LLM's `eval.num_beams`.

Timestamps (`timestamps`):
- "auto": clips up to 30 s are decoded without timestamp tokens (`<|notimestamps|>`), as the
  pipeline does; longer recordings go through Whisper's sequential long-form algorithm, which
  needs timestamp tokens to know where to resume.
- "always": every clip goes through the timestamp-predicting sequential algorithm (as OpenAI's
  `transcribe` and faster-whisper do by default).

Clips up to 30 s go through Whisper's own 30 s padded input in batches; longer recordings use
transformers' sequential long-form generation (unpadded features + attention mask, not
conditioned on the previous window). `make_transcriber` picks the backend: this module's
transformers one, or CTranslate2 (`borealis_eval.models.baseline_ct2`); both implement the
protocol of `baseline_protocol.py`.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber
from borealis_eval.models.baseline_protocol import (BACKENDS, DEFAULT_NUM_BEAMS, SAMPLE_RATE, TIMESTAMPS, Timestamps,
                                                    Transcriber, check_decoding, describe_protocol)

__all__ = ["BACKENDS", "DEFAULT_NUM_BEAMS", "SAMPLE_RATE", "TIMESTAMPS", "Timestamps", "Transcriber", "check_decoding",
           "describe_protocol", "WhisperTranscriber", "make_transcriber"]


class WhisperTranscriber:
    backend = "transformers"

    def __init__(self, ref: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 num_beams: int = DEFAULT_NUM_BEAMS, timestamps: Timestamps = "auto"):
        from borealis_eval.models.refs import resolve

        check_decoding(num_beams, timestamps)
        r = resolve(ref)
        self.ref = ref
        self.num_beams, self.timestamps = num_beams, timestamps
        self.processor = WhisperProcessor.from_pretrained(r.path_or_id, **r.kwargs())
        self.model = WhisperForConditionalGeneration.from_pretrained(r.path_or_id, dtype=dtype, **r.kwargs())
        self.model.to(device).eval()
        self.device, self.dtype = torch.device(device), dtype
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", True))

    def protocol(self) -> dict:
        """The decoding settings, for the run's params and the report."""
        return {"backend": self.backend, "compute_type": str(self.dtype).removeprefix("torch."),
                "num_beams": self.num_beams, "timestamps": self.timestamps}

    def _gen_kwargs(self, language: str | None, num_beams: int, max_new_tokens: int) -> dict:
        kw = dict(num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens)
        if self.multilingual:
            kw.update(language=language, task="transcribe")
        return kw

    @torch.inference_mode()
    def transcribe(self, waves: list[np.ndarray], language: str | None, num_beams: int | None = None,
                   max_new_tokens: int = 440) -> list[str]:
        """Transcribe clips; those over 30 s one by one through long-form generation.

        `num_beams` None means the transcriber's own setting. `max_new_tokens` caps each clip
        (each 30 s window in long-form): a looping decoder otherwise runs to Whisper's
        448-token limit, which costs minutes per batch on CPU.
        """
        out: list[str | None] = [None] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= 30 * SAMPLE_RATE]
        kw = self._gen_kwargs(language, self.num_beams if num_beams is None else num_beams, min(max_new_tokens, 440))
        if short:
            feats = self.processor.feature_extractor(
                [waves[i] for i in short], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features.to(self.device, self.dtype)
            ids = self.model.generate(feats, return_timestamps=self.timestamps == "always", **kw)
            for i, text in zip(short, self.processor.batch_decode(ids, skip_special_tokens=True)):
                out[i] = text.strip()
        for i, w in enumerate(waves):
            if out[i] is not None:
                continue
            inputs = self.processor.feature_extractor(
                w, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                padding="longest", return_attention_mask=True,
            )
            ids = self.model.generate(
                inputs.input_features.to(self.device, self.dtype),
                attention_mask=inputs.attention_mask.to(self.device),
                condition_on_prev_tokens=False, return_timestamps=True, **kw,
            )
            out[i] = self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        return out  # type: ignore[return-value]


def make_transcriber(ref: str, backend: str = "transformers", compute_type: str = "default",
                     device: str | torch.device = "cpu", num_beams: int = DEFAULT_NUM_BEAMS,
                     timestamps: Timestamps = "auto") -> Transcriber:
    """The baseline transcriber for `eval.baseline` (backend, compute_type, num_beams, timestamps).

    transformers runs float32 ("default" or "float32"); ctranslate2 takes its own compute types
    (see `baseline_ct2.COMPUTE_TYPES`)."""
    if backend == "transformers":
        if compute_type not in ("default", "float32"):
            raise ValueError(f"the transformers baseline runs float32; compute_type {compute_type!r} needs "
                             f"backend ctranslate2")
        return WhisperTranscriber(ref, device=device, num_beams=num_beams, timestamps=timestamps)
    if backend == "ctranslate2":
        return CT2WhisperTranscriber(ref, device=device, compute_type=compute_type, num_beams=num_beams,
                                     timestamps=timestamps)
    raise ValueError(f"unknown baseline backend {backend!r}; choose one of {BACKENDS}")
