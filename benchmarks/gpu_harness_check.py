"""7. Harness GPU path: the project's own encoder, SpeechLM, train() and generate() on CUDA.

gpu_check.py (6) times the full-scale *shape* with a hand-written loop; this script runs the
harness's code itself on a GPU, so what a user's GPU sweep executes is what gets checked:
`FrozenWhisperEncoder` (whisper-base-sized, random init, short input) encodes clips on CUDA;
`SpeechLM.from_config` builds adapter + a Qwen3 LLM from config (~0.5B with the default
sizes) with a byte-level BPE trained by `train_bpe_tokenizer`; `train()` runs with precision
"auto" (accelerate bf16 autocast on CUDA), checkpoints, and resumes from its checkpoint (CUDA
RNG state included); `SpeechLM.generate` decodes a batch greedily. Random weights and
synthetic clips: nothing is downloaded. Needs torch, transformers, accelerate, tokenizers,
pydantic, PyYAML, filelock, tqdm.

    python benchmarks/gpu_harness_check.py [--lora] [--out FILE]   # on the GPU machine
    python benchmarks/gpu_harness_check.py --smoke         # tiny sizes on CPU: the code path only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENC = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80)
LLM = dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=22, num_attention_heads=16, num_key_value_heads=8,
           head_dim=128, intermediate_size=3072, max_position_embeddings=4096)
SMOKE_ENC = dict(ENC, d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)
SMOKE_LLM = dict(LLM, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                 intermediate_size=64)
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu one two three four five six").split()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")) / "gpu_harness.json")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lora", action="store_true", help="LoRA r16 on q/k/v/o (llm.dtype auto: bf16 weights on CUDA)")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cuda" and not a.smoke:
        print("no CUDA device: run with --smoke for a CPU code-path check", file=sys.stderr)
        return 2
    os.environ.setdefault("BOREALIS_CACHE_DIR", tempfile.mkdtemp(prefix="borealis-gpu-"))
    from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TokenizerTrain, TrainConfig
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import Example, SpeechLM
    from borealis_eval.models.tokenizer import train_bpe_tokenizer
    from borealis_eval.train import train

    enc_cfg, llm_cfg = (SMOKE_ENC, SMOKE_LLM) if a.smoke else (ENC, LLM)
    steps = 4 if a.smoke else a.steps
    out: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "steps": steps}
    rng = np.random.default_rng(0)
    n_clips, sec, sr = 64, 5.0, 16_000
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 12)))) for _ in range(n_clips)]
    waves = [(0.1 * rng.standard_normal(int(sec * sr))).astype(np.float32) for _ in range(n_clips)]

    t = time.perf_counter()
    encoder = FrozenWhisperEncoder(EncoderConfig(config=enc_cfg, short_input=True), device=dev)
    feats: list[torch.Tensor] = []
    for s in range(0, n_clips, 16):
        feats += encoder.encode_batch(waves[s : s + 16])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out["encode_s"] = round(time.perf_counter() - t, 3)
    out["feature_shape"] = list(feats[0].shape)
    out["feature_device"] = str(feats[0].device)

    vocab = 400 if a.smoke else 1500
    tok = train_bpe_tokenizer(texts * 4, vocab)
    mcfg = ModelConfig(encoder=EncoderConfig(config=enc_cfg, short_input=True),
                       adapter=AdapterConfig(downsample_k=4, hidden_sizes=[2 * llm_cfg["hidden_size"]]),
                       llm=LLMConfig(config=llm_cfg, tokenizer=TokenizerTrain(vocab_size=vocab),
                                     train="lora" if a.lora else "full", dtype="auto"))
    torch.manual_seed(0)
    model = SpeechLM.from_config(mcfg, encoder.dim, tok, device=dev).to(dev)
    out["mode"] = "lora" if a.lora else "full"
    out["llm_params_m"] = round(sum(p.numel() for p in model.llm.parameters()) / 1e6, 1)
    out["trainable_params_m"] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)
    out["llm_weight_dtype"] = str(model.llm.get_input_embeddings().weight.dtype)
    examples = [Example(answer=x, features=f.to(torch.float16).cpu(), id=f"clip{i}")  # as the sweep holds them
                for i, (x, f) in enumerate(zip(texts, feats))]
    tc = TrainConfig(steps=steps, batch_size=8, lr=3e-4, warmup_ratio=0.1, log_every=max(1, steps // 3),
                     precision="auto")
    logged: list[tuple[int, dict]] = []

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # warm-up (CUDA context, cuBLAS, optimizer state allocation), then the timed run without checkpoints
    train(model, examples, tc.model_copy(update={"steps": 3}), seed=0, progress=False)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    r = train(model, examples, tc, seed=0, log=lambda m, s: logged.append((s, m)), progress=False)
    sync()
    out.update({"train_s": round(r.seconds, 3), "step_s": round(r.seconds / steps, 4),
                "first_loss": round(r.first_loss, 4), "last_loss": round(r.last_loss, 4),
                "loss_fell": r.last_loss < r.first_loss, "logged_steps": [s for s, _ in logged]})
    # checkpointing: every 2 steps of 4 (a full fine-tune's state holds weights + AdamW moments), then resume
    with tempfile.TemporaryDirectory() as ck:
        short = tc.model_copy(update={"steps": 4})
        rc = train(model, examples, short, seed=0, progress=False, checkpoint_dir=Path(ck), checkpoint_every=2)
        state = Path(ck) / "state.pt"
        out.update({"checkpoint_written": state.is_file(),
                    "checkpoint_gib": round(state.stat().st_size / 2**30, 2) if state.is_file() else None,
                    "train_4_steps_with_2_checkpoints_s": round(rc.seconds, 3)})
        r2 = train(model, examples, tc.model_copy(update={"steps": 6}), seed=0, progress=False, checkpoint_dir=Path(ck))
        out["resumed_from"] = r2.resumed_from
        out["resume_ok"] = r2.resumed_from == 4 and len(r2.losses) == 6

    model.eval()
    batch = examples[:16]
    hyps = model.generate(batch, max_new_tokens=32)  # plain greedy (also the warm-up of the timing below)
    out.update({"hyp_example": hyps[0][:80], "hyps_nonempty": sum(bool(h) for h in hyps)})
    model.llm.generation_config.min_new_tokens = 32  # timed: exactly 32 new tokens per clip
    sync()
    t = time.perf_counter()
    model.generate(batch, max_new_tokens=32)
    sync()
    dec = time.perf_counter() - t
    out.update({"decode_batch": len(batch), "decode_new_tokens": 32, "decode_s": round(dec, 3),
                "decode_tokens_per_s": round(len(batch) * 32 / dec, 1),
                "decode_rtfx_llm_only": round(len(batch) * sec / dec, 1)})
    if dev.type == "cuda":
        out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    # 4 smoke steps of a 32-wide model need not lower the loss; the GPU run must
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out["ok"] = bool((out["loss_fell"] or a.smoke) and out["checkpoint_written"] and out["resume_ok"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
