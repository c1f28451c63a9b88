"""What a variant's model costs, from its shapes alone: parameters (counted on the meta device
with the harness's own builders), tokens per step, peak training memory, training FLOPs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from borealis_eval.config import EncoderConfig, LLMConfig, ModelConfig, TokenizerTrain
from borealis_eval.errors import UsageError
from borealis_eval.plan.devices import Device

# Shapes of hub models, used when their config is not in the local Hugging Face cache (offline).
# Read from the models' config.json (copies found with the project's search tools, 2026-12-01).
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-4B": dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151_936,
                          max_position_embeddings=40_960, rms_norm_eps=1e-6, rope_theta=1_000_000,
                          tie_word_embeddings=True),
    "openai/whisper-large-v3": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                                    num_mel_bins=128, max_source_positions=1500),
}


# ------------------------------------------------------------------ parameters
@dataclass
class ParamCount:
    encoder: int
    adapter: int
    llm: int       # LLM with its LoRA layers, if any
    trainable: int
    source: str    # where the shapes came from

    @property
    def total(self) -> int:
        return self.encoder + self.adapter + self.llm


class _VocabOnly:
    """What `build_llm` needs from a tokenizer to size the embeddings: its length and two ids."""

    pad_token_id = 0
    eos_token_id = 1

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def encoder_shape(cfg: EncoderConfig) -> tuple[dict[str, Any], str]:
    """WhisperConfig kwargs of the encoder and where they were read."""
    if cfg.config is not None:
        return dict(cfg.config), "config"
    return _ref_shape(cfg.ref)


def llm_shape(cfg: LLMConfig) -> tuple[dict[str, Any], str]:
    if cfg.config is not None:
        return dict(cfg.config), "config"
    return _ref_shape(cfg.ref)


def _ref_shape(ref: str) -> tuple[dict[str, Any], str]:
    from transformers import AutoConfig

    from borealis_eval.models.refs import _parse, resolve

    kind, target, rev = _parse(ref)
    try:
        if kind == "hf":
            conf = AutoConfig.from_pretrained(target, revision=rev, local_files_only=True)
        else:
            conf = AutoConfig.from_pretrained(resolve(ref).path_or_id)
        return conf.to_dict(), f"{ref} config"
    except (OSError, ValueError):
        if target in KNOWN_SHAPES:
            return dict(KNOWN_SHAPES[target]), f"{ref}: not in the local cache, known shape assumed"
        raise UsageError(f"{ref}: config not in the local Hugging Face cache and its shape is not known; "
                         f"download its config.json (no weights needed) or add it to plan.KNOWN_SHAPES") from None


def count_params(model: ModelConfig, vocab_size: int | None = None) -> ParamCount:
    """Parameters of encoder + adapter + LLM (+ LoRA), built on the meta device with the harness's
    own builders. `vocab_size`: the tokenizer's length (default: the LLM config's vocab, or the
    size a trained BPE is asked for)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from borealis_eval.models.adapter import Adapter
    from borealis_eval.models.speech_lm import build_llm

    enc_kw, enc_src = encoder_shape(model.encoder)
    llm_kw, llm_src = llm_shape(model.llm)
    enc_conf = WhisperConfig.from_dict(enc_kw)
    vocab = vocab_size or default_vocab(model.llm, llm_kw)
    # build_llm takes the vocabulary from the tokenizer and the ids from it: drop them from the shape
    llm_kw = {k: v for k, v in llm_kw.items() if k not in _TOKEN_KEYS and not k.startswith("_")}
    as_config = model.llm.model_copy(update={"ref": None, "config": llm_kw, "tokenizer": model.llm.tokenizer or "-"})
    with torch.device("meta"):
        encoder = WhisperEncoder(enc_conf)
        llm = build_llm(as_config, _VocabOnly(vocab), torch.bfloat16)
        hidden = llm.get_input_embeddings().embedding_dim
        a = model.adapter
        adapter = Adapter(enc_conf.d_model, hidden, a.downsample_k, a.hidden_sizes, a.activation, a.dropout)
    n = lambda m, trainable=False: sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)  # noqa: E731
    return ParamCount(encoder=n(encoder), adapter=n(adapter), llm=n(llm), trainable=n(adapter) + n(llm, True),
                      source=f"encoder: {enc_src}; LLM: {llm_src}; vocabulary {vocab:,}")


_TOKEN_KEYS = {"vocab_size", "pad_token_id", "eos_token_id", "bos_token_id", "architectures", "torch_dtype", "dtype",
               "transformers_version", "id2label", "label2id"}


def default_vocab(llm: LLMConfig, shape: dict[str, Any]) -> int:
    """The embedding rows the LLM will get without a tokenizer at hand: a BPE to be trained is
    asked for `vocab_size` (it may come out smaller); a named tokenizer is read if it loads here;
    else the LLM config's own vocabulary."""
    if isinstance(llm.tokenizer, TokenizerTrain):
        return llm.tokenizer.vocab_size
    if isinstance(llm.tokenizer, str) and llm.config is not None:
        from borealis_eval.models.tokenizer import load_tokenizer

        try:
            return len(load_tokenizer(llm.tokenizer))
        except (OSError, ValueError):
            pass
    if not shape.get("vocab_size"):
        raise UsageError("the LLM's vocabulary size is unknown here: give its tokenizer or vocab_size")
    return int(shape["vocab_size"])


# ------------------------------------------------------------------ tokens and memory
@dataclass
class Tokens:
    """Mean tokens of one example, and the padded tokens of one optimizer step."""

    prompt: float
    audio: float
    answer: float
    padded_length: float  # expected longest example of a micro-batch: what the batch is padded to
    per_step: float       # batch_size x grad_accum x padded_length
    text_share: float     # realised share of text-only examples


@dataclass
class Memory:
    """Estimated peak accelerator memory of one training micro-batch, in bytes."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    per_token: float = 0.0  # activation bytes per token of a micro-batch

    FORMULA = ("weights (frozen encoder at its dtype + LLM at llm dtype + adapter fp32) + gradients (4 B x trainable) "
               "+ AdamW moments (8 B x trainable) + activations of one micro-batch: B x L x [layers x (2 B x (4h + "
               "3 q + 3 kv + 4 i) + 4 B x 4h (fp32 norms) + 2 B x targets x h (LoRA dropout)) + 10 B x vocab "
               "(bf16 logits + fp32 loss copy and its gradient)] (+ 2 B x LLM weights when autocast casts fp32 weights), "
               "B = train.batch_size, L = padded length")

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def memory_estimate(model: ModelConfig, params: ParamCount, llm_kw: dict[str, Any], batch: int, length: float,
                    device: Device) -> Memory:
    """`Memory.FORMULA`, with bf16 activations on a GPU and fp32 (twice the bytes) on a CPU;
    `llm_kw` is the LLM's shape including its `vocab_size`."""
    from borealis_eval.models.speech_lm import llm_dtype

    gpu = device.kind == "cuda"
    llm_bytes = 2 if llm_dtype(model.llm, "cuda" if gpu else "cpu") == torch.bfloat16 else 4
    enc_bytes = 4  # FrozenWhisperEncoder keeps fp32 weights
    lora_llm = params.trainable - params.adapter if model.llm.train == "lora" else 0
    base_llm = params.llm - lora_llm
    weights = params.encoder * enc_bytes + base_llm * llm_bytes + (lora_llm + params.adapter) * 4
    h, i = llm_kw["hidden_size"], llm_kw["intermediate_size"]
    heads, kv = llm_kw["num_attention_heads"], llm_kw.get("num_key_value_heads", llm_kw["num_attention_heads"])
    hd = llm_kw.get("head_dim") or h // heads
    q, kvd = heads * hd, kv * hd
    act = 2 if gpu else 4
    targets = len(model.llm.lora.target_modules) if model.llm.train == "lora" else 0
    per_token_layer = act * (4 * h + 3 * q + 3 * kvd + 4 * i) + 4 * 4 * h + act * targets * h
    per_token = llm_kw["num_hidden_layers"] * per_token_layer + 10 * llm_kw["vocab_size"]
    # bf16 autocast keeps a bf16 copy of every fp32 LLM weight it casts, for the backward pass
    casts = 2 * base_llm if gpu and llm_bytes == 4 else 0
    return Memory(weights=weights, gradients=4 * params.trainable, optimizer=8 * params.trainable,
                  activations=batch * length * per_token + casts, per_token=per_token)


def train_flops_per_token(model: ModelConfig, params: ParamCount, llm_kw: dict[str, Any], length: float) -> float:
    """Forward 2N (+ attention 4 x layers x L x q) per token; backward: input gradients through every
    layer (x1) plus weight gradients only where weights train (x1 more for a full fine-tune)."""
    h = llm_kw["hidden_size"]
    q = llm_kw["num_attention_heads"] * (llm_kw.get("head_dim") or h // llm_kw["num_attention_heads"])
    fwd = 2 * params.llm + 2 * params.adapter + 4 * llm_kw["num_hidden_layers"] * length * q
    return fwd * (3 if model.llm.train == "full" else 2)
