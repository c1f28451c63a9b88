"""6. GPU check (prepared for a lent GPU; one short script, a few minutes at most).

bf16 training step time and decode RTFx for the full-scale shape of the harness at ~0.5B:
a whisper-base-sized encoder (frozen, 30 s padded input as at full scale) -> the harness's
k=4 adapter -> a Qwen3 LLM built from config (~0.5B parameters, Qwen vocabulary 151,936),
all random init (no weights needed, nothing downloaded). Needs only torch + transformers.

    python benchmarks/gpu_check.py [--out results.json]     # on the GPU machine
    python benchmarks/gpu_check.py --smoke                   # tiny sizes on CPU: checks the code path

Training: AdamW on adapter + full LLM, bf16 autocast (as train.py does on CUDA), batch 8 of
5 s clips with ~30-token answers; timed both with the encoder in the step and with cached
features (encoder outside the step). Decoding: batch 16 of 5 s clips, encoder + greedy
generation with KV cache, exactly `new_tokens` per clip; RTFx = audio s / (encode + generate s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from borealis_eval.models.adapter import Adapter  # noqa: E402 - pure torch, no other harness deps

WHISPER_BASE = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80,
                    max_source_positions=1500, decoder_layers=1, decoder_attention_heads=8, decoder_ffn_dim=2048)
QWEN3_05B = dict(hidden_size=1024, num_hidden_layers=22, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                 intermediate_size=3072, vocab_size=151_936, max_position_embeddings=4096, tie_word_embeddings=True)
SMOKE_ENC = dict(WHISPER_BASE, d_model=64, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128)
SMOKE_LLM = dict(QWEN3_05B, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=32, intermediate_size=128, vocab_size=1000)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


class Model(nn.Module):
    def __init__(self, enc_cfg: dict, llm_cfg: dict):
        super().__init__()
        from transformers import Qwen3Config, Qwen3ForCausalLM, WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.encoder = WhisperEncoder(WhisperConfig(**enc_cfg)).requires_grad_(False).eval()
        self.llm = Qwen3ForCausalLM(Qwen3Config(**llm_cfg))
        self.adapter = Adapter(enc_cfg["d_model"], llm_cfg["hidden_size"], 4, [2 * llm_cfg["hidden_size"]])

    def encode(self, mel: torch.Tensor, frames: int) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder(mel).last_hidden_state[:, :frames]

    def embeds(self, feats: torch.Tensor, prompt: torch.Tensor, answer: torch.Tensor | None = None):
        emb = self.llm.get_input_embeddings()
        parts = [emb(prompt), self.adapter(feats.to(emb.weight.dtype))]
        if answer is not None:
            parts.append(emb(answer))
        return torch.cat(parts, dim=1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed: check the code path only")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")) / "gpu_check.json")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=48)
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cuda" and not a.smoke:
        print("no CUDA device: run with --smoke for a CPU code-path check", file=sys.stderr)
        return 2
    enc_cfg, llm_cfg = (SMOKE_ENC, SMOKE_LLM) if a.smoke else (WHISPER_BASE, QWEN3_05B)
    steps, new_tokens = (2, 4) if a.smoke else (a.steps, a.new_tokens)
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device(dev):
        model = Model(enc_cfg, llm_cfg)
    model.to(dev)
    model.encoder.to(torch.bfloat16)  # frozen: bf16 weights
    build_s = time.perf_counter() - t
    n_llm = sum(p.numel() for p in model.llm.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)

    sec, bs_train, bs_dec, prompt_len, ans_len = 5.0, 8, 16, 20, 30
    frames = int(sec * 50)
    mel_frames = 2 * enc_cfg["max_source_positions"]  # 30 s padded, as at full scale
    vocab = llm_cfg["vocab_size"]
    g = torch.Generator(device="cpu").manual_seed(0)
    mel = lambda b: torch.randn(b, enc_cfg["num_mel_bins"], mel_frames, generator=g).to(dev, torch.bfloat16)  # noqa: E731
    ids = lambda b, n: torch.randint(10, vocab, (b, n), generator=g).to(dev)  # noqa: E731

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=dev.type == "cuda")
    model.llm.train()
    audio_tokens = -(-frames // 4)

    def step(feats, prompt, answer):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            x = model.embeds(feats, prompt, answer)
            labels = torch.full(x.shape[:2], -100, device=dev)
            labels[:, -ans_len:] = answer
            loss = model.llm(inputs_embeds=x, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    batch = [(mel(bs_train), ids(bs_train, prompt_len), ids(bs_train, ans_len)) for _ in range(4)]
    cached = [(model.encode(m, frames), p, an) for m, p, an in batch]
    out = {}
    for label, with_encoder in (("train_step_cached_s", False), ("train_step_with_encoder_s", True)):
        for i in range(3):  # warm-up: kernels, allocator
            m, p, an = batch[i % 4]
            step(model.encode(m, frames) if with_encoder else cached[i % 4][0], p, an)
        sync(dev)
        t = time.perf_counter()
        for i in range(steps):
            m, p, an = batch[i % 4]
            step(model.encode(m, frames) if with_encoder else cached[i % 4][0], p, an)
        sync(dev)
        out[label] = (time.perf_counter() - t) / steps
    seq = prompt_len + audio_tokens + ans_len
    out["train_tokens_per_s_cached"] = bs_train * seq / out["train_step_cached_s"]

    # decoding: bf16 weights, batch of 16 x 5 s, encoder + greedy generation with KV cache
    model.llm.to(torch.bfloat16).eval()
    model.adapter.to(torch.bfloat16)
    dec_mel, dec_prompt = mel(bs_dec), ids(bs_dec, prompt_len)

    def decode():
        with torch.inference_mode():
            x = model.embeds(model.encode(dec_mel, frames), dec_prompt)
            return model.llm.generate(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long, device=dev),
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                      pad_token_id=0, eos_token_id=1)

    decode()
    sync(dev)
    t = time.perf_counter()
    gen = decode()
    sync(dev)
    dec_s = time.perf_counter() - t
    out.update({"decode_batch": bs_dec, "decode_s": dec_s, "decode_new_tokens": int(gen.shape[1]),
                "decode_rtfx": bs_dec * sec / dec_s, "decode_tokens_per_s": bs_dec * gen.shape[1] / dec_s})
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (smoke)",
        "smoke": a.smoke, "torch": torch.__version__, "llm_params": n_llm, "trainable_params": n_train,
        "build_s": build_s, "train_batch": bs_train, "audio_seconds_per_clip": sec, "train_seq_len": seq,
        "steps": steps, **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()},
        "encoder_share_of_step": round(1 - out["train_step_cached_s"] / out["train_step_with_encoder_s"], 3),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
