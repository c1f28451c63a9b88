"""The LLM families (llm_family.py): each family's prompt format and end-of-turn token, checked with
the real tokenizer it ships with (bundled, offline) and a tiny random model of its architecture."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from borealis_eval.models.adapter import Adapter
from borealis_eval.models.bundled import prepare
from borealis_eval.models.llm_family import FIELDS, UnknownLLMFamily, family_of
from borealis_eval.models.speech_lm import IGNORE, Example, SpeechLM

# (model_type, bundled tokenizer, expected end-of-turn token, expected assistant header)
FAMILIES = [
    ("qwen3", "qwen3-tokenizer", "<|im_end|>", "<|im_start|>assistant\n"),
    ("llama", "smollm2-135m", "<|im_end|>", "<|im_start|>assistant\n"),
    ("gemma3_text", "gemma3-270m", "<end_of_turn>", "<start_of_turn>model\n"),
]


def _tiny(model_type: str, tok) -> torch.nn.Module:
    conf = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, intermediate_size=32, head_dim=8,
                                pad_token_id=tok.pad_token_id or 0, tie_word_embeddings=True)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(conf)


@pytest.mark.slow
@pytest.mark.parametrize("model_type,bundled,end,header", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_training_example_round_trips_to_prompt_and_answer(model_type, bundled, end, header):
    tok = AutoTokenizer.from_pretrained(prepare(bundled, progress=False))
    m = SpeechLM(_tiny(model_type, tok), tok, Adapter(enc_dim=8, llm_dim=16, k=2, hidden_sizes=[16]), "Transcribe.")
    assert m.tok.convert_ids_to_tokens(m.eos_id) == end == m.family.end_of_turn
    answer = "Верное средство от бессонницы: считать овец."
    text = Example(answer=answer, instruction="Repeat the sentence: sheep.", id="t")
    audio = Example(answer="The medium is the massage.", features=torch.randn(7, 8), id="a")
    ans_ids = [ids + [m.eos_id] for ids in tok([text.answer, audio.answer], add_special_tokens=False)["input_ids"]]
    # the text example: the ids decode to the template's rendering of the conversation, up to the end of turn
    before, _, after = m._layout(text, ans_ids[0])
    rendered = tok.apply_chat_template([{"role": "user", "content": text.instruction},
                                        {"role": "assistant", "content": answer}], tokenize=False)
    decoded = tok.decode(before + after, skip_special_tokens=False)
    assert decoded == rendered[: rendered.index(answer) + len(answer) + len(end)]
    assert decoded.endswith(header + answer + end)
    # the labels are the answer and the end token only, for audio and text examples alike
    _, mask, labels = m.batch([text, audio])
    for row, ids in zip(labels, ans_ids):
        got = row[row != IGNORE].tolist()
        assert got == ids
        assert tok.decode(got[:-1]) in (answer, audio.answer)
    # the audio example's prompt wraps the audio slots in the user turn and ends with the assistant header
    a_before, k, a_after = m._layout(audio, ans_ids[1])
    assert k == 4 + 2 and tok.decode(a_after[: len(a_after) - len(ans_ids[1])]).endswith(header)
    assert "Transcribe." in tok.decode(a_after)
    assert torch.isfinite(m([text, audio]))


def test_unknown_family_names_the_fields_to_set():
    with pytest.raises(UnknownLLMFamily) as e:
        family_of("gpt2")
    msg = str(e.value)
    assert "'gpt2'" in msg and FIELDS in msg and "llm_family.py" in msg and "\n" not in msg


def test_gemma_family_softcaps_only_when_the_config_says_so():
    fam = family_of("gemma2")
    head = torch.nn.Linear(4, 6, bias=False)

    class Causal(torch.nn.Module):
        def __init__(self, cap):
            super().__init__()
            self.config = type("C", (), {"final_logit_softcapping": cap})()

        def get_output_embeddings(self):
            return head

    h = torch.randn(3, 4) * 50
    assert torch.equal(fam.output_logits(Causal(None), h), head(h))
    capped = fam.output_logits(Causal(2.0), h)
    assert capped.abs().max() <= 2.0 and torch.allclose(capped, 2.0 * torch.tanh(head(h) / 2.0))
