"""Plain-Whisper baseline: `WhisperForConditionalGeneration.generate` with the language forced.

Clips up to 30 s go through Whisper's own 30 s padded input in batches; longer recordings use
transformers' sequential long-form generation (unpadded features + attention mask).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

SAMPLE_RATE = 16_000


class WhisperTranscriber:
    def __init__(self, ref: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        from borealis_eval.models.refs import resolve

        r = resolve(ref)
        self.ref = ref
        self.processor = WhisperProcessor.from_pretrained(r.path_or_id, **r.kwargs())
        self.model = WhisperForConditionalGeneration.from_pretrained(r.path_or_id, dtype=dtype, **r.kwargs())
        self.model.to(device).eval()
        self.device, self.dtype = torch.device(device), dtype
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", True))

    def _gen_kwargs(self, language: str | None, num_beams: int, max_new_tokens: int) -> dict:
        kw = dict(num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens)
        if self.multilingual:
            kw.update(language=language, task="transcribe")
        return kw

    @torch.inference_mode()
    def transcribe(self, waves: list[np.ndarray], language: str | None, num_beams: int = 1,
                   max_new_tokens: int = 440) -> list[str]:
        """Transcribe clips; those over 30 s one by one through long-form generation.

        `max_new_tokens` caps each clip (each 30 s segment in long-form): a looping decoder
        otherwise runs to Whisper's 448-token limit, which costs minutes per batch on CPU.
        """
        out: list[str | None] = [None] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= 30 * SAMPLE_RATE]
        kw = self._gen_kwargs(language, num_beams, min(max_new_tokens, 440))
        if short:
            feats = self.processor.feature_extractor(
                [waves[i] for i in short], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features.to(self.device, self.dtype)
            ids = self.model.generate(feats, **kw)
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
