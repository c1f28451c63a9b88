"""What differs between the causal-LM families the harness trains, in one place.

A family is picked by the LLM's ``config.model_type``. For each it says:
  chat_template    the prompt format used when the tokenizer ships none (Gemma-3 base ships none);
                   a tokenizer's own template always wins
  end_of_turn      the token that closes the assistant's turn: the training target's last token and
                   the stop token of decoding
  lora_targets     the linear layers LoRA adapts by default (``llm.lora.target_modules`` overrides)
  tied_embeddings  whether the family's released checkpoints tie the output layer to the embeddings
  logits           how the output layer turns hidden states into logits: "linear" (lm_head only) or
                   "softcap" (lm_head, then cap * tanh(x / cap) with ``config.final_logit_softcapping``);
                   the training loss applies it to the labelled positions only, so the vocabulary
                   projection (262k rows for Gemma-3) runs on a few positions instead of all of them

An LLM whose family is not listed fails with ``UnknownLLMFamily``, which names the fields to add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from borealis_eval.errors import UserError

# ChatML (Qwen, SmolLM2 and the tokenizers trained here); Qwen3's own adds the think block (bundled.py).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma's turn format (as in Gemma's instruction-tuned releases): <bos>, roles user/model.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' "
    "+ message['content'] + '<end_of_turn>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


class UnknownLLMFamily(UserError, ValueError):
    """The LLM's model_type is not one the harness knows how to prompt and train."""


@dataclass(frozen=True)
class LLMFamily:
    name: str
    model_types: tuple[str, ...]
    chat_template: str
    end_of_turn: str
    lora_targets: tuple[str, ...]
    tied_embeddings: bool
    logits: str  # "linear" | "softcap"

    def prepare_tokenizer(self, tok):
        """Give the tokenizer a pad token and (if it ships none) this family's chat template."""
        if not getattr(tok, "chat_template", None):
            tok.chat_template = self.chat_template
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def end_id(self, tok) -> int:
        """Id of the token that ends the assistant turn, read off the rendered template: the one token
        that follows the answer. A template that closes the turn with several tokens is refused."""
        probe = "xq"
        text = tok.apply_chat_template(
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": probe}], tokenize=False
        )
        tail = text[text.rindex(probe) + len(probe):]
        ids = tok(tail, add_special_tokens=False)["input_ids"] if tail else []
        if not ids or ids[0] not in tok.all_special_ids and tok.convert_ids_to_tokens(ids[0]) != self.end_of_turn:
            raise UnknownLLMFamily(
                f"the chat template of this {self.name} tokenizer does not close the assistant turn with a special "
                f"token (after the answer it renders {tail!r}); give the tokenizer a chat template that ends each "
                f"turn with one (the {self.name} family uses {self.end_of_turn!r})"
            )
        return ids[0]

    def output_logits(self, causal: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The causal LM's logits for `hidden` (any leading shape), exactly as its forward computes them."""
        logits = causal.get_output_embeddings()(hidden)
        if self.logits == "softcap":
            cap = getattr(causal.config, "final_logit_softcapping", None)
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
        return logits


FAMILIES: tuple[LLMFamily, ...] = (
    LLMFamily("qwen", ("qwen2", "qwen3"), CHATML_TEMPLATE, "<|im_end|>", tuple(ATTENTION), True, "linear"),
    # SmolLM2 (Llama architecture) ships a ChatML template; Meta's Llama-3 ships its own (<|eot_id|>)
    LLMFamily("llama", ("llama", "mistral"), CHATML_TEMPLATE, "<|im_end|>", tuple(ATTENTION), True, "linear"),
    LLMFamily("gemma", ("gemma", "gemma2", "gemma3", "gemma3_text"), GEMMA_TEMPLATE, "<end_of_turn>",
              tuple(ATTENTION), True, "softcap"),
)
_BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}
FIELDS = "model_types, chat_template, end_of_turn, lora_targets, tied_embeddings, logits"


def family_of(model_type: str) -> LLMFamily:
    if model_type not in _BY_TYPE:
        raise UnknownLLMFamily(
            f"LLM family of model_type {model_type!r} is unknown (known: {', '.join(sorted(_BY_TYPE))}); add an "
            f"LLMFamily to FAMILIES in borealis_eval/models/llm_family.py with the fields {FIELDS}"
        )
    return _BY_TYPE[model_type]


def family_of_model(llm: nn.Module) -> LLMFamily:
    causal = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # PEFT wraps it
    return family_of(causal.config.model_type)
