"""Run by tests/test_ddp.py: under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU) or plainly.

Trains the tiny speech-LM with the project's unchanged train() and writes the per-rank losses and a
digest of the trained weights to OUT/rank<k>.json.
"""

import json
import sys
from pathlib import Path

import torch

from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TrainConfig
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.models.tokenizer import train_bpe_tokenizer
from borealis_eval.train import train

TINY_LLM = {"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "intermediate_size": 64, "max_position_embeddings": 512}
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "two plus two is four", "hello world",
         "one two three four five six", "red green blue"]


def main(out: Path, batch_size: int, steps: int) -> None:
    torch.set_num_threads(1)
    tok = train_bpe_tokenizer(TEXTS * 3, 300)
    cfg = ModelConfig(encoder=EncoderConfig(config={"d_model": 32}), adapter=AdapterConfig(downsample_k=2, hidden_sizes=[48]),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="full"))
    torch.manual_seed(0)
    model = SpeechLM.from_config(cfg, enc_dim=32, tokenizer=tok)
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=t, features=torch.randn(8, 32, generator=g), id=str(i)) for i, t in enumerate(TEXTS)]
    res = train(model, exs, TrainConfig(steps=steps, batch_size=batch_size, lr=3e-3, warmup_ratio=0.0), seed=0,
                progress=False)
    from accelerate import PartialState

    state = PartialState()
    digest = float(sum(p.detach().double().sum() for p in model.trainable_state_dict().values()))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{state.process_index}.json").write_text(json.dumps(
        {"world": state.num_processes, "losses": res.losses, "digest": digest, "backend": str(state.backend)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
