"""Evaluation decoding: LoRA merged into a copy decodes to the same greedy tokens as the adapters."""

from __future__ import annotations

import torch

from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig
from borealis_eval.decode import decoder
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.models.tokenizer import train_bpe_tokenizer

TINY_LLM = {"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "intermediate_size": 64, "max_position_embeddings": 512}
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "кошка сидит на окне", "two plus two is four"] * 4


class _Cfg:  # the one setting decoder() reads
    class eval:  # noqa: N801
        merge_lora = True


def test_merged_lora_decodes_the_same_greedy_tokens_as_the_adapters():
    tok = train_bpe_tokenizer(TEXTS, 300)
    cfg = ModelConfig(encoder=EncoderConfig(config={"d_model": 16}), adapter=AdapterConfig(downsample_k=2, hidden_sizes=[16]),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="lora",
                                    lora=LoraConfig(r=4, alpha=8, dropout=0.0)))
    torch.manual_seed(0)
    model = SpeechLM.from_config(cfg, enc_dim=16, tokenizer=tok).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained adapters: B is zero at init, which would make the merge trivially exact
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    exs = [Example(answer="", features=torch.randn(12, 16, generator=g), id=str(i)) for i in range(4)]
    exs.append(Example(answer="", instruction="two plus two is", id="t"))
    merged = decoder(model, _Cfg)
    assert merged is not model and not hasattr(merged.llm, "merge_and_unload")  # a merged copy, plain weights
    assert hasattr(model.llm, "merge_and_unload")  # the trained model keeps its adapters
    unmerged_out = model.generate(exs, max_new_tokens=12)
    assert merged.generate(exs, max_new_tokens=12) == unmerged_out
    assert any(unmerged_out)  # the comparison is about real tokens, not two empty strings
    _Cfg.eval.merge_lora = False
    try:
        assert decoder(model, _Cfg) is model
    finally:
        _Cfg.eval.merge_lora = True
