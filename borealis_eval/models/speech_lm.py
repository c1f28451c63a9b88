"""Speech-LLM: adapter output spliced into a causal LLM's chat prompt.

An audio example is rendered through the tokenizer's chat template as
    user: <audio_start> [audio embeddings] <audio_end> \n <prompt>
    assistant: <transcript><eos>
and a text-only example as user: <instruction>, assistant: <answer><eos>.
The loss covers only the answer tokens (and the closing eos).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from borealis_eval.config import LLMConfig, ModelConfig
from borealis_eval.models.adapter import Adapter, stacked_length
from borealis_eval.models.tokenizer import ensure_chat_ready, load_tokenizer

AUDIO_MARK = "<AUDIO>"
IGNORE = -100


@dataclass
class Example:
    """One training/eval example: audio features + transcript, or instruction + answer."""

    answer: str
    features: torch.Tensor | None = None  # [frames, enc_dim]
    instruction: str | None = None
    id: str = ""


def llm_dtype(cfg: LLMConfig, device: str | torch.device = "cpu") -> torch.dtype:
    """`llm.dtype`: float32 / bfloat16 as written; "auto" keeps bf16 weights where they are not
    trained (frozen or LoRA) on a GPU - half the memory, and autocast computes in bf16 anyway -
    and fp32 everywhere else (full fine-tunes keep fp32 master weights; CPUs are slow in bf16)."""
    if cfg.dtype != "auto":
        return torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    on_gpu = torch.device(device).type == "cuda"
    return torch.bfloat16 if on_gpu and cfg.train in ("frozen", "lora") else torch.float32


def build_llm(cfg: LLMConfig, tokenizer, dtype: torch.dtype = torch.float32) -> nn.Module:
    if cfg.ref is not None:
        from borealis_eval.models.refs import resolve

        r = resolve(cfg.ref)
        llm = AutoModelForCausalLM.from_pretrained(r.path_or_id, dtype=dtype, **r.kwargs())
    else:
        kwargs = dict(cfg.config)
        model_type = kwargs.pop("model_type", "qwen3")
        kwargs.setdefault("tie_word_embeddings", True)
        if "hidden_size" in kwargs and "num_attention_heads" in kwargs:
            kwargs.setdefault("head_dim", kwargs["hidden_size"] // kwargs["num_attention_heads"])
        conf = AutoConfig.for_model(
            model_type,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            **kwargs,
        )
        llm = AutoModelForCausalLM.from_config(conf, dtype=dtype)
    if llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))
    if cfg.train == "frozen":
        llm.requires_grad_(False)
    elif cfg.train == "lora":
        from peft import LoraConfig, get_peft_model

        llm = get_peft_model(
            llm,
            LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                       target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM"),
        )
    return llm


class SpeechLM(nn.Module):
    def __init__(self, llm: nn.Module, tokenizer, adapter: Adapter, prompt: str):
        super().__init__()
        self.llm = llm
        self.adapter = adapter
        self.tok = ensure_chat_ready(tokenizer)
        self.prompt = prompt
        self.eos_id = self.tok.eos_token_id
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}

    @classmethod
    def from_config(cls, cfg: ModelConfig, enc_dim: int, tokenizer=None, device: str | torch.device = "cpu"):
        """The LLM's weights take `llm.dtype` (see `llm_dtype`); the adapter always trains in fp32."""
        if tokenizer is None:
            tokenizer = load_tokenizer(cfg.llm.tokenizer if isinstance(cfg.llm.tokenizer, str) else cfg.llm.ref)
        llm = build_llm(cfg.llm, tokenizer, llm_dtype(cfg.llm, device))
        hidden = llm.get_input_embeddings().embedding_dim
        a = cfg.adapter
        adapter = Adapter(enc_dim, hidden, a.downsample_k, a.hidden_sizes, a.activation, a.dropout)
        return cls(llm, tokenizer, adapter, cfg.prompt)

    # ------------------------------------------------------------ prompt pieces
    def _prompt_ids(self, content: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio mark of the rendered user turn."""
        if content not in self._prompt_cache:
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
            before, _, after = text.partition(AUDIO_MARK)
            enc = lambda s: self.tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
            self._prompt_cache[content] = (enc(before), enc(after))
        return self._prompt_cache[content]

    def _embed(self, ids: list[int]) -> torch.Tensor:
        emb = self.llm.get_input_embeddings()
        return emb(torch.tensor(ids, dtype=torch.long, device=emb.weight.device))

    def _sequences(self, examples: list[Example], with_answer: bool):
        """Per example: (embeddings [L, H], labels [L]) with the answer appended if asked."""
        emb_w = self.llm.get_input_embeddings().weight
        audio_idx = [i for i, ex in enumerate(examples) if ex.features is not None]
        audio_emb: dict[int, torch.Tensor] = {}
        if audio_idx:
            feats = [examples[i].features for i in audio_idx]
            tmax = max(f.shape[0] for f in feats)
            padded = emb_w.new_zeros(len(feats), tmax, feats[0].shape[1])
            for j, f in enumerate(feats):
                padded[j, : f.shape[0]] = f.to(padded.dtype)
            out = self.adapter(padded.to(next(self.adapter.parameters()).dtype)).to(emb_w.dtype)
            for j, i in enumerate(audio_idx):
                audio_emb[i] = out[j, : stacked_length(feats[j].shape[0], self.adapter.k)]
        seqs = []
        for i, ex in enumerate(examples):
            if ex.features is not None:
                before, after = self._prompt_ids(f"{AUDIO_MARK}\n{self.prompt}")
                a = self.adapter
                parts = [self._embed(before), a.audio_start[None].to(emb_w.dtype), audio_emb[i],
                         a.audio_end[None].to(emb_w.dtype), self._embed(after)]
            else:
                before, _ = self._prompt_ids(ex.instruction or "")
                parts = [self._embed(before)]
            prompt = torch.cat(parts)
            labels = torch.full((prompt.shape[0],), IGNORE, dtype=torch.long)
            if with_answer:
                ans = self.tok(ex.answer, add_special_tokens=False)["input_ids"] + [self.eos_id]
                prompt = torch.cat([prompt, self._embed(ans)])
                labels = torch.cat([labels, torch.tensor(ans, dtype=torch.long)])
            seqs.append((prompt, labels))
        return seqs

    def batch(self, examples: list[Example], with_answer: bool = True, left_pad: bool = False):
        seqs = self._sequences(examples, with_answer)
        n, hdim = max(s[0].shape[0] for s in seqs), seqs[0][0].shape[1]
        dev = seqs[0][0].device
        embeds = seqs[0][0].new_zeros(len(seqs), n, hdim)
        mask = torch.zeros(len(seqs), n, dtype=torch.long, device=dev)
        labels = torch.full((len(seqs), n), IGNORE, dtype=torch.long, device=dev)
        for i, (e, l) in enumerate(seqs):
            sl = slice(n - e.shape[0], n) if left_pad else slice(0, e.shape[0])
            embeds[i, sl], mask[i, sl], labels[i, sl] = e, 1, l.to(dev)
        return embeds, mask, labels

    def forward(self, examples: list[Example]) -> torch.Tensor:
        embeds, mask, labels = self.batch(examples)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.inference_mode()
    def generate(self, examples: list[Example], max_new_tokens: int = 128, num_beams: int = 1) -> list[str]:
        """Greedy (or beam) decoding; deterministic, no sampling."""
        embeds, mask, _ = self.batch(examples, with_answer=False, left_pad=True)
        out = self.llm.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
            do_sample=False, eos_token_id=self.eos_id, pad_token_id=self.tok.pad_token_id,
        )
        return [t.strip() for t in self.tok.batch_decode(out, skip_special_tokens=True)]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if self._trainable.get(k, False)}

    @property
    def _trainable(self) -> dict[str, bool]:
        return {n: p.requires_grad for n, p in self.named_parameters()}
