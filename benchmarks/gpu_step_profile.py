"""GPU step profile (run by hand on a lent GPU): where a harness training step's time goes.

    python3 benchmarks/gpu_step_profile.py [--smoke]

Same model and data as gpu_harness_check.py (346M Qwen3 from config, whisper-base-sized encoder,
batch 8 x 5 s). In one process it times, 20 steps each after warm-up: the harness's `train()`;
a hand loop over `SpeechLM.forward` with foreach AdamW; the same with fused AdamW; and
`SpeechLM.batch` alone (the Python-side batch assembly). Then torch.profiler over 5 steps of
`train()`, sorted by self CPU time. Output: benchmarks/results/gpu_step_profile.txt (by hand).
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("BOREALIS_CACHE_DIR", tempfile.mkdtemp())
import numpy as np, torch
from benchmarks.gpu_harness_check import ENC, LLM, WORDS, SMOKE_ENC, SMOKE_LLM
from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TokenizerTrain, TrainConfig
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.models.tokenizer import train_bpe_tokenizer
from borealis_eval.train import train
smoke = "--smoke" in sys.argv
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
enc_cfg, llm_cfg = (SMOKE_ENC, SMOKE_LLM) if smoke else (ENC, LLM)
rng = np.random.default_rng(0)
texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 12)))) for _ in range(64)]
waves = [(0.1 * rng.standard_normal(80000)).astype(np.float32) for _ in range(64)]
encoder = FrozenWhisperEncoder(EncoderConfig(config=enc_cfg, short_input=True), device=dev)
feats = []
for s in range(0, 64, 16):
    feats += encoder.encode_batch(waves[s : s + 16])
tok = train_bpe_tokenizer(texts * 4, 1500)
mcfg = ModelConfig(encoder=EncoderConfig(config=enc_cfg, short_input=True),
                   adapter=AdapterConfig(downsample_k=4, hidden_sizes=[2 * llm_cfg["hidden_size"]]),
                   llm=LLMConfig(config=llm_cfg, tokenizer=TokenizerTrain(vocab_size=1500), train="full", dtype="float32"))
torch.manual_seed(0)
model = SpeechLM.from_config(mcfg, encoder.dim, tok).to(dev)
exs = [Example(answer=x, features=f.to(torch.float16).cpu(), id=f"c{i}") for i, (x, f) in enumerate(zip(texts, feats))]
tc = TrainConfig(steps=20, batch_size=8, lr=3e-4, log_every=10, precision="auto")
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


out = {}
train(model, exs, tc.model_copy(update={"steps": 3}), seed=0, progress=False)
sync()
t = time.perf_counter()
train(model, exs, tc, seed=0, progress=False)
sync()
out["train_fn_step_s"] = (time.perf_counter() - t) / 20
batches = [exs[i:i+8] for i in range(0, 64, 8)]
params = [p for p in model.parameters() if p.requires_grad]
for fused in (False, True):
    opt = torch.optim.AdamW(params, lr=1e-5, fused=fused and dev.type == "cuda")
    def step(b):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(3):
        step(batches[i % 8])
    sync()
    t = time.perf_counter()
    for i in range(20):
        step(batches[i % 8]).item()
    sync()
    out[f"hand_loop_speechlm_fused{fused}_step_s"] = (time.perf_counter() - t) / 20
model.eval()
sync()
t = time.perf_counter()
with torch.no_grad():
    for i in range(20):
        model.batch(batches[i % 8])
sync()
out["batch_build_s"] = (time.perf_counter() - t) / 20
model.train()
from torch.profiler import profile, ProfilerActivity
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
with profile(activities=acts) as prof:
    train(model, exs, tc.model_copy(update={"steps": 5}), seed=0, progress=False)
print(json.dumps({k: round(v, 4) for k, v in out.items()}, indent=1))
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
