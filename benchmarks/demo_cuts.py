"""Three CPU-demo costs measured side by side in one process (issue 24), 1 torch thread:

    python -m benchmarks.demo_cuts steps      # training step: the prompt's fixed text as whole tokens or not
    python -m benchmarks.demo_cuts encode     # encoder features: short-input buckets of 2 s vs 0.5 s
    python -m benchmarks.demo_cuts precision  # encoder features: fp32 vs bf16 autocast (0.5 s buckets)

`steps`: two models of the CPU profile (same seed, same examples of ru50_en50 at text 0.15), one
with the corpus BPE as before (`tokenizer: {prompt_tokens: false}`: "Transcribe the audio." and
the role names split into ~30 tokens) and one with `prompt_tokens: true`; 4 rounds of 20 steps,
alternating which side goes first; CPU seconds per step (time.process_time) and positions per step.
`encode`: 240 training clips encoded by whisper-base with `bucket_seconds` 2.0 and 0.5, in two halves,
alternating the order; CPU seconds, and the cosine between the two features of every clip.
`precision`: the same 240 clips and halves, `model.encoder.precision` fp32 vs bf16 (autocast; half the
CPU only where the CPU computes bf16 natively: the JSON says whether this one does); cosine and the
relative error of every clip's features.
"""

from __future__ import annotations

import argparse
import json
import time


def steps() -> dict:
    import torch

    from benchmarks.variant_cost import setup
    from borealis_eval.models.speech_lm import SpeechLM
    from borealis_eval.resources import tokenizer_for

    torch.set_num_threads(1)
    cfg, res, _, examples = setup("language_mix=ru50_en50__text_fraction=0.15", batch_size=8, steps=200, threads=1,
                                  sets=[])
    sides = {}
    for flag in (False, True):
        tcfg = cfg.model.llm.tokenizer.model_copy(update={"prompt_tokens": flag})
        mc = cfg.model.model_copy(update={"llm": cfg.model.llm.model_copy(update={"tokenizer": tcfg})})
        tok = tokenizer_for(mc, res.train_items, res.text_items, {})
        torch.manual_seed(0)
        m = SpeechLM.from_config(mc, res.encoder.dim, tok, device="cpu")
        m.train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, fused=True)
        sides[flag] = {"model": m, "opt": opt, "cpu": 0.0, "positions": 0, "steps": 0, "vocab": len(tok)}
    batches = [examples[i : i + 8] for i in range(0, len(examples) - 7, 8)]

    def step(s, batch):
        e, mask, labels = s["model"].batch(batch)
        s["model"].loss(e, mask, labels).backward()
        s["opt"].step()
        s["opt"].zero_grad(set_to_none=True)
        return int(mask.sum())

    for s in sides.values():
        for b in batches[:3]:
            step(s, b)
    for rnd in range(4):
        for flag in (False, True) if rnd % 2 == 0 else (True, False):
            s = sides[flag]
            t = time.process_time()
            for b in batches[3 + rnd * 20 : 23 + rnd * 20]:
                s["positions"] += step(s, b)
            s["cpu"] += time.process_time() - t
            s["steps"] += 20
    out = {f"prompt_tokens={f}": {"vocab": s["vocab"], "cpu_ms_per_step": 1000 * s["cpu"] / s["steps"],
                                   "positions_per_step": s["positions"] / s["steps"]} for f, s in sides.items()}
    out["ratio_cpu_whole_over_split"] = sides[True]["cpu"] / sides[False]["cpu"]
    return out


def _encode_ab(settings: dict[str, dict]) -> tuple[dict[str, float], dict[str, list]]:
    """CPU seconds and features of 240 training clips under two encoder settings, in two halves,
    the second half in the other order."""
    import soundfile as sf
    import torch

    from borealis_eval.config import EncoderConfig
    from borealis_eval.data.manifest import read_manifest
    from borealis_eval.models.encoder import FrozenWhisperEncoder

    torch.set_num_threads(1)
    rows = read_manifest("data/synth/cpu-v1/train.jsonl")[:240]
    waves = [sf.read(r["audio_path"], dtype="float32")[0] for r in rows]
    encs = {k: FrozenWhisperEncoder(EncoderConfig(ref="bundled:whisper-base", short_input=True, **v))
            for k, v in settings.items()}
    names = list(encs)
    cpu, feats = {k: 0.0 for k in names}, {k: [] for k in names}
    for half in range(2):
        for k in names if half == 0 else names[::-1]:
            t = time.process_time()
            feats[k] += encs[k].encode_many(waves[half * 120 : (half + 1) * 120], batch_size=16)
            cpu[k] += time.process_time() - t
    return cpu, feats


def _agreement(xs: list, ys: list) -> dict:
    import torch

    cos = sorted(float(torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0)) for x, y in zip(xs, ys))
    rel = sorted(float((x - y).norm() / x.norm()) for x, y in zip(xs, ys))
    return {"cosine_min": cos[0], "cosine_median": cos[len(cos) // 2], "rel_err_median": rel[len(rel) // 2],
            "rel_err_max": rel[-1]}


def encode() -> dict:
    cpu, feats = _encode_ab({"2.0": {"bucket_seconds": 2.0}, "0.5": {"bucket_seconds": 0.5}})
    return {"clips": len(feats["2.0"]), "cpu_s_bucket_2.0": cpu["2.0"], "cpu_s_bucket_0.5": cpu["0.5"],
            "ratio_0.5_over_2.0": cpu["0.5"] / cpu["2.0"], **_agreement(feats["2.0"], feats["0.5"])}


def precision() -> dict:
    from borealis_eval.machine import cpu_name, native_bf16

    cpu, feats = _encode_ab({p: {"bucket_seconds": 0.5, "precision": p} for p in ("fp32", "bf16")})
    return {"clips": len(feats["fp32"]), "cpu": cpu_name(), "native_bf16": native_bf16(), "cpu_s_fp32": cpu["fp32"],
            "cpu_s_bf16": cpu["bf16"], "ratio_bf16_over_fp32": cpu["bf16"] / cpu["fp32"],
            **_agreement(feats["fp32"], feats["bf16"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["steps", "encode", "precision"])
    a = p.parse_args()
    print(json.dumps({"steps": steps, "encode": encode, "precision": precision}[a.what](), indent=1))


if __name__ == "__main__":
    main()
