"""CTC soft tokens: adapter rows read as the LLM's own token embeddings (`model.adapter.output: ctc_tokens`).

Why: a pretrained LLM reads its input embeddings well, and an adapter trained only through the LM
loss learns slowly to produce anything it can read (the pilot's first CPU runs: dev WER flat at
105-140% after 600 steps). Here every adapter row is classified by CTC over {blank} and the tokens
of the study's training transcripts, against the LLM's own input embeddings: the logit of token v
is (2 r.e_v - |e_v|^2) / tau, minus the squared distance |r - e_v|^2 up to a constant, so a row
that hears v lies near e_v. The LLM then reads, per clip, one row per run of equal non-blank
frames: the run's posterior-weighted mix of those embeddings (blank frames are dropped, repeats
merged), a sequence about as long as the transcript's tokens. Gradients reach the adapter through
the posteriors.

The design follows CTC-compressed prompts for decoder-only ASR (Wu et al., "Decoder-only
architecture for speech recognition with CTC prompts and text data augmentation", 2023). The
vocabulary is fixed when a variant is set up (every training transcript of the study, all
languages, so the cells of a language-mix grid classify over the same tokens) and saved with the
adapter's weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BLANK = 0


class CTCTokenHead(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("vocab", torch.zeros(0, dtype=torch.long))  # LLM token ids; class i + 1 is vocab[i]
        self.blank = nn.Parameter(torch.zeros(dim))
        self.log_tau = nn.Parameter(torch.tensor(math.log(64.0)))
        self._index: dict[int, int] | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "vocab"  # a saved head's vocabulary decides the buffer's size
        if key in state_dict:
            self.vocab = state_dict[key].clone().to(self.vocab.device)
            self._index = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_vocabulary(self, ids: list[int], prototypes: torch.Tensor) -> None:
        """The classes (distinct LLM token ids, in the order of `prototypes`, their embeddings) and a
        start for the blank (their embeddings' mean) and tau (a tenth of their median squared norm:
        logits of a few nats between neighbours)."""
        if not ids:
            raise ValueError("ctc_tokens: the training transcripts give no tokens")
        self.vocab = torch.tensor(ids, dtype=torch.long, device=self.blank.device)
        self._index = None
        with torch.no_grad():
            self.blank.copy_(prototypes.float().mean(0))
            self.log_tau.fill_(math.log(float(prototypes.float().norm(dim=1).median()) ** 2 / 10))

    @property
    def index(self) -> dict[int, int]:
        if self._index is None:
            self._index = {int(t): i + 1 for i, t in enumerate(self.vocab.tolist())}
        return self._index

    def logits(self, rows: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """[N, H] rows -> [N, 1 + V] logits (class 0 is the blank); computed in fp32."""
        protos = torch.cat([self.blank[None].float(), prototypes.float()])
        return (2 * rows.float() @ protos.T - (protos * protos).sum(1)) / self.log_tau.exp()

    def compress(self, logits: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """One clip's [T, 1 + V] logits (`logits` of its rows) -> [n, H]: a row per run of equal
        non-blank argmax, the run's mean posterior over the tokens (blank left out, renormalised)
        times their embeddings. A clip with no non-blank frame gives one row from all its frames, so
        no clip is empty."""
        post = logits.softmax(-1)
        best = post.argmax(-1)
        change = torch.ones_like(best, dtype=torch.bool)
        change[1:] = best[1:] != best[:-1]
        run = torch.cumsum(change.long(), 0) - 1  # run number of every frame
        keep = best[change] != BLANK
        sums = post.new_zeros(int(run[-1]) + 1, post.shape[1]).index_add_(0, run, post)[keep]
        if not len(sums):
            sums = post.sum(0, keepdim=True)
        tokens = sums[:, 1:]
        return (tokens / tokens.sum(1, keepdim=True).clamp_min(1e-9)) @ prototypes.float()

    def targets(self, token_ids: list[list[int]]) -> list[list[int]]:
        """Answer token ids -> class numbers (a token outside the vocabulary is left out)."""
        return [[self.index[t] for t in ids if t in self.index] for ids in token_ids]

    def loss(self, logits: list[torch.Tensor], targets: list[list[int]]) -> torch.Tensor:
        """Mean CTC loss of clips' logits against their class sequences (an impossible alignment,
        more targets than rows, counts zero instead of inf)."""
        lens = [len(x) for x in logits]
        logp = torch.cat(logits).log_softmax(-1)
        padded = logp.new_zeros(max(lens), len(logits), logp.shape[1])
        o = 0
        for b, n in enumerate(lens):
            padded[:n, b] = logp[o : o + n]
            o += n
        flat = torch.tensor([t for s in targets for t in s], dtype=torch.long)
        return nn.functional.ctc_loss(padded, flat, torch.tensor(lens), torch.tensor([len(s) for s in targets]),
                                      blank=BLANK, zero_infinity=True)

    @torch.no_grad()
    def greedy(self, logits: torch.Tensor) -> list[int]:
        """The CTC head's own transcript of one clip from its logits: LLM token ids (blanks and repeats removed)."""
        best = logits.argmax(-1).tolist()
        vocab = self.vocab.tolist()
        return [vocab[c - 1] for j, c in enumerate(best) if c != BLANK and (j == 0 or c != best[j - 1])]
