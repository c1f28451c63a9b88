"""Gemma-3 270M + LoRA training step through the harness's SpeechLM and train(): logits on every
position (what the loss did for Gemma before llm_family.py: HF's own loss, 262k-wide logits for
every prompt, audio and padding position) against logits on the labelled positions only.

Each side runs in its own fresh process (its own peak RSS). The batch is the pilot's shape:
Whisper-base features (512-d, 50 frames/s) of 2-6 s clips, k=8 concat, open-vocabulary answers.

    nice -n 10 .venv/bin/python -m benchmarks.gemma_step            # both sides, 6 steps each
    nice -n 10 .venv/bin/python -m benchmarks.gemma_step --side labelled --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SENTENCES = [
    "The medium is the massage.",
    "Something unpleasant is coming when men are anxious to tell the truth.",
    "Верное средство от бессонницы - считать овец.",
    "Парадоксы нужны, чтобы привлечь внимание к идеям.",
    "If you are in a fit of the blues, go nowhere else.",
    "Для других эта книга будет столь же излишня, как история, рассказанная ослу.",
    "Engineering meets art in the parking lot and things explode.",
    "Давайте воевать, но, давайте жить дружно!",
]


def side(name: str, steps: int, batch: int, threads: int, precision: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TrainConfig
    from borealis_eval.models.speech_lm import Example, SpeechLM
    from borealis_eval.train import train, uses_bf16

    t0 = time.perf_counter()
    cfg = ModelConfig(encoder=EncoderConfig(ref="bundled:whisper-base"),
                      adapter=AdapterConfig(downsample_k=8, hidden_sizes=[512]),
                      llm=LLMConfig(ref="bundled:gemma3-270m", train="lora",
                                    lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}))
    model = SpeechLM.from_config(cfg, enc_dim=512)
    load_s = time.perf_counter() - t0
    if name == "full_logits":  # the pre-fix loss: the LLM's own forward over every position
        model.loss = lambda e, m, l: model.llm(inputs_embeds=e, attention_mask=m, labels=l).loss  # noqa: E731
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=SENTENCES[i % len(SENTENCES)],
                   features=torch.randn(int(50 * (2 + 4 * ((i * 7) % 10) / 10)), 512, generator=g), id=str(i))
           for i in range((steps + 2) * batch)]
    tcfg = TrainConfig(steps=2, batch_size=batch, lr=1e-3, precision=precision)
    train(model, exs[: 2 * batch], tcfg, 0, progress=False)  # warm-up
    c0 = time.process_time()
    r = train(model, exs[2 * batch:], tcfg.model_copy(update={"steps": steps}), 0, progress=False)
    cpu = time.process_time() - c0  # CPU seconds of this process: robust to other jobs on a shared machine
    return {"side": name, "s_per_step": round(r.seconds / steps, 3), "cpu_s_per_step": round(cpu / steps, 3), "steps": steps, "batch": batch, "threads": threads,
            "bf16": uses_bf16(tcfg), "load_seconds": round(load_s, 1), "first_loss": r.first_loss, "last_loss": r.last_loss,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["full_logits", "labelled"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    if a.side:
        print(json.dumps(side(a.side, a.steps, a.batch, a.threads, a.precision)), flush=True)
        return
    for s in ("labelled", "full_logits"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.gemma_step", "--side", s, "--steps", str(a.steps),
                              "--batch", str(a.batch), "--threads", str(a.threads), "--precision", a.precision],
                             capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"{s} failed: {out.stderr[-2000:]}",
              flush=True)


if __name__ == "__main__":
    main()
