"""Adapter between the frozen encoder and the LLM: k-frame stacking, then an MLP.

Borealis: 1280-d Whisper-large frames, k=4 -> 5120 -> 2560 -> 2560 (GELU) -> LLM hidden.
Two learned vectors mark where the audio starts and ends inside the prompt, so any
tokenizer works without adding (and training) new vocabulary entries. With `ctc=True` the rows
also feed a CTC head over the LLM's token embeddings (ctc_tokens.py: `adapter.output: ctc_tokens`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from borealis_eval.models.ctc_tokens import CTCTokenHead

_ACT = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def stack_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, T, d] -> [B, ceil(T/k), k*d]; the tail is zero-padded so no audio is dropped."""
    b, t, d = x.shape
    pad = (-t) % k
    if pad:
        x = torch.cat([x, x.new_zeros(b, pad, d)], dim=1)
    return x.reshape(b, (t + pad) // k, k * d)


def stacked_length(frames: int, k: int) -> int:
    return math.ceil(frames / k)


class Adapter(nn.Module):
    def __init__(self, enc_dim: int, llm_dim: int, k: int = 4, hidden_sizes: list[int] | None = None,
                 activation: str = "gelu", dropout: float = 0.0, ctc: bool = False):
        super().__init__()
        self.k = k
        sizes = [enc_dim * k, *(hidden_sizes or []), llm_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_ACT[activation]())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.mlp = nn.Sequential(*layers)
        self.audio_start = nn.Parameter(torch.randn(llm_dim) * 0.02)
        self.audio_end = nn.Parameter(torch.randn(llm_dim) * 0.02)
        self.ctc = CTCTokenHead(llm_dim) if ctc else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, T, enc_dim] -> [B, ceil(T/k), llm_dim]."""
        return self.mlp(stack_frames(feats, self.k))

    def forward_packed(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """[T_i, enc_dim] each -> [sum ceil(T_i/k), llm_dim]: the same frames as `forward` on the padded
        batch, without running the MLP on the padding (clips differ in length by up to ~4x)."""
        dtype = self.mlp[0].weight.dtype
        lens = [stacked_length(f.shape[0], self.k) for f in feats]
        buf = torch.zeros(sum(lens) * self.k, feats[0].shape[1], dtype=dtype, device=self.mlp[0].weight.device)
        o = 0
        for f, n in zip(feats, lens):
            buf[o : o + f.shape[0]] = f
            o += n * self.k
        return self.mlp(buf.view(-1, self.k * buf.shape[1]))
