"""Frozen Whisper encoder: log-mel -> hidden states sliced to the real audio length.

Two input modes:
- padded (Whisper's own): every clip padded to 30 s, output sliced to the real frames;
- short_input: only the real mel frames (rounded up to `bucket_seconds`) go through the
  encoder, with position embeddings sliced to that length. About 10x cheaper on CPU for
  short clips; the encoding differs slightly from the padded one (cosine ~0.97).
A clip's encoding never depends on what else is in its batch: batches only group clips
padded to the same length, so cached features are reproducible.
`precision` (fp32, bf16, auto) runs the transformer under bf16 autocast where chosen: about half
the CPU on a CPU with native bf16, features within cosine 0.999 of fp32 (benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from borealis_eval.audio import SAMPLE_RATE
from borealis_eval.config import EncoderConfig
from borealis_eval.machine import bf16_for

HOP = 160  # samples per mel frame
MAX_SECONDS = 30.0


def encoder_frames(n_samples: int) -> int:
    """Encoder output frames for a clip (conv2 has stride 2): about 50 per second."""
    return max(1, math.ceil(n_samples / (2 * HOP)))


def weights_digest(module: nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, dtypes, shapes, values).

    The feature cache is keyed by this, not by the model reference: a re-saved local folder or
    an unpinned `hf:` reference that now points at other weights gets new cache entries.
    """
    h = hashlib.sha1()
    for name, t in sorted({**dict(module.named_parameters()), **dict(module.named_buffers())}.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class EncoderIdentity:
    """What the cached features depend on: the weights' content and the preprocessing."""

    weights: str
    preprocessing: str

    @property
    def key(self) -> str:
        return hashlib.sha1(f"{self.weights}|{self.preprocessing}".encode()).hexdigest()[:16]


class FrozenWhisperEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        if cfg.ref is not None:
            from borealis_eval.models.refs import resolve

            ref = resolve(cfg.ref)
            whisper = WhisperModel.from_pretrained(ref.path_or_id, **ref.kwargs())
            try:
                self.features = WhisperFeatureExtractor.from_pretrained(ref.path_or_id, **ref.kwargs())
            except OSError:
                self.features = WhisperFeatureExtractor(feature_size=whisper.config.num_mel_bins)
        else:
            wcfg = WhisperConfig(**cfg.config)
            torch.manual_seed(0)  # a random encoder is still reproducible (and cacheable)
            whisper = WhisperModel.__new__(WhisperModel)  # only the encoder is needed
            nn.Module.__init__(whisper)
            whisper.encoder = WhisperEncoder(wcfg)
            self.features = WhisperFeatureExtractor(feature_size=wcfg.num_mel_bins)
        self.encoder = whisper.encoder.to(device=device, dtype=dtype).eval()
        del whisper
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        self.dim = self.encoder.config.d_model
        # bf16 autocast around the transformer (not the log-mel, which transformers computes in fp32)
        self.autocast_bf16 = dtype == torch.float32 and bf16_for(cfg.precision)
        self.precision = "bf16" if self.autocast_bf16 else str(dtype).removeprefix("torch.").replace("float32", "fp32")
        mode = f"short:{cfg.bucket_seconds:g}" if cfg.short_input else "padded30"
        self.identity = EncoderIdentity(weights_digest(self.encoder),
                                        f"{mode}|mel{self.encoder.config.num_mel_bins}|{dtype}"
                                        + ("|autocast-bf16" if self.autocast_bf16 else ""))

    def padded_length(self, n_samples: int) -> int:
        """Samples a clip is padded to before the mel transform (its batching key)."""
        full = int(MAX_SECONDS * SAMPLE_RATE)
        if not self.cfg.short_input:
            return full
        bucket = int(self.cfg.bucket_seconds * SAMPLE_RATE)
        return min(full, max(bucket, math.ceil(n_samples / bucket) * bucket))

    def encode_many(self, waves: list[np.ndarray], batch_size: int | None = None,
                    on_batch: Callable[[list[int], list[torch.Tensor]], None] | None = None) -> list[torch.Tensor]:
        """Clips of any lengths -> their features in input order. Clips are grouped by padded
        length (shortest group first; `encode_batch` takes one length) and each group is encoded
        in batches of at most `batch_size` (the whole group if None); `on_batch(indices, feats)`
        sees every batch as soon as it is done (e.g. to cache it before the next one)."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, w in enumerate(waves):
            groups[self.padded_length(len(w))].append(i)
        out: list[torch.Tensor | None] = [None] * len(waves)
        for _, idx in sorted(groups.items()):
            step = batch_size or len(idx)
            for s in range(0, len(idx), step):
                chunk = idx[s : s + step]
                feats = self.encode_batch([waves[i] for i in chunk])
                for i, x in zip(chunk, feats):
                    out[i] = x
                if on_batch is not None:
                    on_batch(chunk, feats)
        return out  # type: ignore[return-value] - every slot is filled

    @torch.inference_mode()
    def encode_batch(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """Clips of the same padded length -> one [frames_i, d] fp32 CPU tensor per clip."""
        lengths = {self.padded_length(len(w)) for w in waves}
        if len(lengths) != 1:
            raise ValueError(f"encode_batch needs clips of one padded length, got {sorted(lengths)}")
        target = lengths.pop()
        for w in waves:
            if len(w) > MAX_SECONDS * SAMPLE_RATE:
                raise ValueError(f"clip of {len(w) / SAMPLE_RATE:.1f} s is over 30 s: split long audio into windows first")
        mel = self.features(
            [np.asarray(w, dtype=np.float32) for w in waves],
            sampling_rate=SAMPLE_RATE,
            padding="max_length",
            max_length=target,
            truncation=True,
            return_tensors="pt",
        ).input_features.to(self.device, self.dtype)
        hidden = self._forward(mel)
        return [hidden[i, : encoder_frames(len(w))].float().cpu() for i, w in enumerate(waves)]

    def _forward(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            return self._layers(mel)

    def _layers(self, mel: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if mel.shape[-1] == enc.config.max_source_positions * 2:
            return enc(mel).last_hidden_state
        # Short input: the same computation as WhisperEncoder.forward, with positions sliced.
        x = nn.functional.gelu(enc.conv1(mel))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, None)
        return enc.layer_norm(x)
