"""Speech-LLM: adapter output spliced into a causal LLM's chat prompt.

An audio example is rendered through the tokenizer's chat template as
    user: <audio_start> [audio embeddings] <audio_end> \n <prompt>
    assistant: <transcript><eos>
and a text-only example as user: <instruction>, assistant: <answer><eos>.
The loss covers only the answer tokens (and the closing eos). With `adapter.output: ctc_tokens`
the audio slots hold a clip's CTC soft tokens instead of its adapter rows (ctc_tokens.py), and
the loss adds `adapter.ctc_weight` x the CTC loss of the rows against the answer's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from borealis_eval.config import LLMConfig, ModelConfig
from borealis_eval.models.adapter import Adapter, stacked_length
from borealis_eval.models.llm_family import family_of, family_of_model
from borealis_eval.models.tokenizer import load_tokenizer

AUDIO_MARK = "<AUDIO>"
IGNORE = -100
CTC_VOCAB = "adapter.ctc.vocab"


@dataclass
class Example:
    """One training/eval example: audio features + transcript, or instruction + answer."""

    answer: str
    features: torch.Tensor | None = None  # [frames, enc_dim]
    instruction: str | None = None
    id: str = ""
    feature_key: str | None = None  # audio whose features are read from the feature store when batched


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
    family = family_of(llm.config.model_type)  # an unknown family fails here, before any training
    if llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))
    if cfg.train == "frozen":
        llm.requires_grad_(False)
    elif cfg.train == "lora":
        from peft import LoraConfig, get_peft_model

        llm = get_peft_model(
            llm,
            LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                       target_modules=cfg.lora.target_modules or list(family.lora_targets), task_type="CAUSAL_LM"),
        )
    return llm


class SpeechLM(nn.Module):
    def __init__(self, llm: nn.Module, tokenizer, adapter: Adapter, prompt: str, ctc_weight: float = 0.0):
        super().__init__()
        self.llm = llm
        self.adapter = adapter
        self.family = family_of_model(llm)
        self.tok = self.family.prepare_tokenizer(tokenizer)
        self.prompt = prompt
        self.eos_id = self.family.end_id(self.tok)  # the end of the assistant turn, not necessarily tok.eos
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}
        self.ctc_weight = ctc_weight if adapter.ctc is not None else 0.0

    @classmethod
    def from_config(cls, cfg: ModelConfig, enc_dim: int, tokenizer=None, device: str | torch.device = "cpu"):
        """The LLM's weights take `llm.dtype` (see `llm_dtype`); the adapter always trains in fp32."""
        if tokenizer is None:
            tokenizer = load_tokenizer(cfg.llm.tokenizer if isinstance(cfg.llm.tokenizer, str) else cfg.llm.ref)
        llm = build_llm(cfg.llm, tokenizer, llm_dtype(cfg.llm, device))
        hidden = llm.get_input_embeddings().embedding_dim
        a = cfg.adapter
        adapter = Adapter(enc_dim, hidden, a.downsample_k, a.hidden_sizes, a.activation, a.dropout,
                          ctc=a.output == "ctc_tokens")
        return cls(llm, tokenizer, adapter, cfg.prompt, a.ctc_weight)

    # ------------------------------------------------------------ CTC soft tokens (adapter.output: ctc_tokens)
    def prototypes(self) -> torch.Tensor:
        """The LLM's input embeddings of the CTC head's tokens, as the LLM sees text (any scale the
        family's embedding applies included); not trained through the CTC loss."""
        with torch.no_grad():
            return self.llm.get_input_embeddings()(self.adapter.ctc.vocab).float()

    def set_ctc_vocabulary(self, texts: list[str]) -> int:
        """The CTC head's classes: every token of `texts` (the study's training transcripts); returns their number."""
        ids = sorted({t for row in self.tok(texts, add_special_tokens=False)["input_ids"] for t in row})
        with torch.no_grad():
            self.adapter.ctc.set_vocabulary(ids, self.llm.get_input_embeddings()(torch.tensor(ids, dtype=torch.long)))
        return len(ids)

    def freeze_aligned_adapter(self) -> None:
        """Fix the adapter's MLP and CTC head (`train.align.freeze`); the audio markers still train.
        The CTC loss then has nothing to train and is left out of the LM loss."""
        for p in [*self.adapter.mlp.parameters(), *self.adapter.ctc.parameters()]:
            p.requires_grad_(False)
        self.ctc_weight = 0.0

    def ctc_logits(self, rows: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each clip's CTC logits (one matmul for the batch) and the prototypes they were scored against:
        what both the soft tokens (`audio_inputs`) and the CTC loss (`ctc_loss`) of a step read."""
        protos = self.prototypes()
        logits = self.adapter.ctc.logits(torch.cat(rows), protos)
        return list(logits.split([len(r) for r in rows])), protos

    def ctc_loss(self, rows: list[torch.Tensor], answers: list[str],
                 ctc: tuple[list[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """CTC loss of clips' adapter rows against their transcripts' tokens (`ctc`: their `ctc_logits`, if known)."""
        head = self.adapter.ctc
        logits, _ = ctc or self.ctc_logits(rows)
        return head.loss(logits, head.targets(self.tok(answers, add_special_tokens=False)["input_ids"]))

    # ------------------------------------------------------------ token layout
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

    def _layout(self, ex: Example, answer: list[int], n_audio: int | None = None) -> tuple[list[int], int, list[int]]:
        """(ids before the audio, audio slots incl. the two markers, ids after it): the answer ids end
        the ids after the audio; a text-only example has no audio slots. `n_audio`: the clip's audio
        rows (default: its adapter rows)."""
        if ex.features is None:
            return self._prompt_ids(ex.instruction or "")[0], 0, answer
        before, after = self._prompt_ids(f"{AUDIO_MARK}\n{self.prompt}")
        n = stacked_length(ex.features.shape[0], self.adapter.k) if n_audio is None else n_audio
        return before, n + 2, after + answer

    def adapter_rows(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each clip's adapter rows [ceil(T/k), H], from one packed MLP pass."""
        frames = self.adapter.forward_packed(feats)
        return list(frames.split([stacked_length(f.shape[0], self.adapter.k) for f in feats]))

    def audio_inputs(self, rows: list[torch.Tensor],
                     ctc: tuple[list[torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
        """What the LLM reads for each clip: its adapter rows, or (ctc_tokens) its CTC soft tokens
        (`ctc`: the rows' `ctc_logits`, if known)."""
        if self.adapter.ctc is None:
            return rows
        logits, protos = ctc or self.ctc_logits(rows)
        return [self.adapter.ctc.compress(x, protos) for x in logits]

    def _audio_rows(self, inputs: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """Every audio example's slots, concatenated: [start marker, audio rows, end marker] each."""
        a = self.adapter
        start, end = a.audio_start[None].to(dtype), a.audio_end[None].to(dtype)
        pieces = []
        for x in inputs:
            pieces += [start, x.to(dtype), end]
        return torch.cat(pieces)

    def batch(self, examples: list[Example], with_answer: bool = True, left_pad: bool = False,
              audio: list[torch.Tensor] | None = None):
        """(inputs_embeds [B, L, H], attention_mask [B, L], labels [B, L]); labels are the answer + eos
        only. One embedding lookup for the whole batch; the audio slots are then filled in place.
        `audio`: what the LLM reads for each audio example (`audio_inputs`) when the caller has it already."""
        emb = self.llm.get_input_embeddings()
        dev = emb.weight.device
        answers = ([ids + [self.eos_id] for ids in self.tok([ex.answer for ex in examples], add_special_tokens=False)
                    ["input_ids"]] if with_answer else [[] for _ in examples])
        feats = [ex.features for ex in examples if ex.features is not None]
        if feats and audio is None:
            audio = self.audio_inputs(self.adapter_rows(feats))
        inputs = iter(audio or [])
        slots = [next(inputs) if ex.features is not None else None for ex in examples]
        layouts = [self._layout(ex, ans, None if x is None else len(x)) for ex, ans, x in zip(examples, answers, slots)]
        n = max(len(b) + k + len(a) for b, k, a in layouts)
        ids, labels, mask, audio_pos = [], [], [], []
        for i, ((before, k, after), answer) in enumerate(zip(layouts, answers)):
            length = len(before) + k + len(after)
            lead = n - length if left_pad else 0
            trail = n - length - lead
            ids.append([0] * lead + before + [0] * k + after + [0] * trail)
            mask.append([0] * lead + [1] * length + [0] * trail)
            labels.append([IGNORE] * (lead + length - len(answer)) + answer + [IGNORE] * trail)
            audio_pos += [(i, lead + len(before) + j) for j in range(k)]
        mask_t = torch.tensor(mask, dtype=torch.long, device=dev)
        embeds = emb(torch.tensor(ids, dtype=torch.long, device=dev)) * mask_t[..., None].to(emb.weight.dtype)
        if audio_pos:
            at_rows, at_cols = torch.tensor(audio_pos, device=dev).T
            filled = self._audio_rows([x for x in slots if x is not None], embeds.dtype)
            embeds = embeds.index_put((at_rows, at_cols), filled)
        return embeds, mask_t, torch.tensor(labels, dtype=torch.long, device=dev)

    def forward(self, examples: list[Example]) -> torch.Tensor:
        """The LM loss (plus, with ctc_tokens, `ctc_weight` x the CTC loss of the audio examples)."""
        audio = [ex for ex in examples if ex.features is not None]
        if not audio:
            return self.loss(*self.batch(examples))
        rows = self.adapter_rows([ex.features for ex in audio])
        ctc = self.ctc_logits(rows) if self.adapter.ctc is not None else None  # read by the soft tokens and the loss
        loss = self.loss(*self.batch(examples, audio=self.audio_inputs(rows, ctc)))
        if self.ctc_weight:
            loss = loss + self.ctc_weight * self.ctc_loss(rows, [ex.answer for ex in audio], ctc)
        return loss

    def loss(self, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens; the output layer runs only where there is a label."""
        causal = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm  # PEFT wraps it
        hidden = causal.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        # the family's output layer (llm_family.py) on the labelled positions only: with Gemma-3's 262k
        # vocabulary, logits over every position cost most of a CPU step and gigabytes of memory
        logits = self.family.output_logits(causal, hidden[:, :-1][keep])
        return nn.functional.cross_entropy(logits.float(), targets[keep])

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
        """The trained weights: whatever trains now, and the whole adapter (it is always the project's own,
        also when `train.align.freeze` fixed it after its alignment), with the CTC head's vocabulary."""
        trainable = self._trainable  # a dict built per call: once, not per key
        return {k: v for k, v in self.state_dict().items()
                if trainable.get(k, False) or k.startswith("adapter.") and (k in trainable or k == CTC_VOCAB)}

    @property
    def _trainable(self) -> dict[str, bool]:
        return {n: p.requires_grad for n, p in self.named_parameters()}
