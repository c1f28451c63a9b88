"""GPU check at the real full-scale shapes (prepared for a lent GPU; about 3-5 minutes on an H200).

The shapes of ablations/text_ratio.yaml with random weights, nothing downloaded (configs inline):
a whisper-large-v3-shaped encoder (32 layers, d 1280, 128 mel bins; fp32 weights as
`FrozenWhisperEncoder` keeps them) and a Qwen3-4B-shaped LLM (36 layers, hidden 2560, vocabulary
151,936) in bf16, wrapped with LoRA r16 on q/k/v/o by the harness's own `build_llm` (peft), the
harness's adapter (4 x 1280 -> 2560 -> 2560 -> 2560) in fp32. It reports:
- training: seconds per optimizer step at batch 16 x grad_accum 4 (cached features of 10 s clips,
  bf16 autocast, fused AdamW on the trainable parameters, as train.py runs on CUDA), tokens/s;
- peak memory of that step, and of a step whose micro-batches are padded to a text example's
  length (a variant with text_fraction > 0), against the card's memory, with the plan's estimate
  (borealis_eval.plan.memory_estimate) beside each measured peak;
- decoding: greedy tokens/s at batch 16 through unmerged LoRA layers and after merging them, and
  how many greedy tokens agree between the two (bf16 rounding can flip near-ties of random weights);
- encoding: 30 s padded windows per second through the encoder (RTFx of the feature cache build).

    python benchmarks/gpu_fullscale_check.py [--out FILE]    # on the GPU machine
    python benchmarks/gpu_fullscale_check.py --smoke         # tiny sizes on CPU: the code path only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WHISPER_LARGE_V3 = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                        num_mel_bins=128, max_source_positions=1500)
QWEN3_4B = dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40_960,
                rms_norm_eps=1e-6, rope_theta=1_000_000, tie_word_embeddings=True)
VOCAB = 151_936
SMOKE_ENC = dict(WHISPER_LARGE_V3, d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                 num_mel_bins=80, max_source_positions=150)
SMOKE_LLM = dict(QWEN3_4B, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8)
SMOKE_VOCAB = 500


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed: check the code path only")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")) / "gpu_fullscale_check.json")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after one warm-up step)")
    ap.add_argument("--new-tokens", type=int, default=48, help="greedy tokens per clip when decoding")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--text-tokens", type=int, default=650, help="length of a text example (instruction + answer)")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cuda" and not a.smoke:
        print("no CUDA device: run with --smoke for a CPU code-path check", file=sys.stderr)
        return 2
    from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig
    from borealis_eval.models.adapter import Adapter, stacked_length
    from borealis_eval.models.speech_lm import build_llm
    from borealis_eval.plan import H200, count_params, memory_estimate
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    enc_cfg, llm_cfg, vocab = (SMOKE_ENC, SMOKE_LLM, SMOKE_VOCAB) if a.smoke else (WHISPER_LARGE_V3, QWEN3_4B, VOCAB)
    steps, new_tokens = (1, 4) if a.smoke else (a.steps, a.new_tokens)
    if a.smoke:
        torch.set_num_threads(1)  # a shared CPU: two OpenMP threads stall each other (benchmarks/README.md)
    batch, accum = (2, 2) if a.smoke else (16, 4)
    clip_s, text_tokens = (1.0, 40) if a.smoke else (a.clip_seconds, a.text_tokens)
    hidden = llm_cfg["hidden_size"]
    mcfg = ModelConfig(encoder=EncoderConfig(config=enc_cfg), adapter=AdapterConfig(downsample_k=4, hidden_sizes=[hidden, hidden]),
                       llm=LLMConfig(config=llm_cfg, tokenizer="-", train="lora",
                                     dtype="float32" if a.smoke else "bfloat16",  # CPUs are slow in bf16
                                     lora=LoraConfig(r=16, alpha=32, dropout=0.05)))
    out: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (smoke)",
                 "smoke": a.smoke, "torch": torch.__version__, "batch": batch, "grad_accum": accum}
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)  # noqa: E731
    gib = lambda b: round(b / 2**30, 2)  # noqa: E731

    class _Vocab:  # what build_llm reads from a tokenizer
        pad_token_id, eos_token_id = 0, 1

        def __len__(self):
            return vocab

    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        encoder = WhisperEncoder(WhisperConfig(**enc_cfg)).requires_grad_(False).eval()  # fp32, as the harness keeps it
        llm = build_llm(mcfg.llm, _Vocab(), torch.float32 if a.smoke else torch.bfloat16)
        adapter = Adapter(enc_cfg["d_model"], hidden, 4, [hidden, hidden])
    sync()
    out["build_s"] = round(time.perf_counter() - t, 1)
    params = [p for m in (adapter, llm) for p in m.parameters() if p.requires_grad]
    out["params_total"] = sum(p.numel() for m in (encoder, adapter, llm) for p in m.parameters())
    out["params_trainable"] = sum(p.numel() for p in params)
    out["lora_dtype"] = str(next(p.dtype for n, p in llm.named_parameters() if "lora_A" in n))
    counted = count_params(mcfg, vocab_size=vocab)
    out["plan_counts_match"] = (counted.total, counted.trainable) == (out["params_total"], out["params_trainable"])

    emb = llm.get_input_embeddings()
    g = torch.Generator(device="cpu").manual_seed(0)
    prompt_len, frames = 20, int(clip_s * 50)
    answer_len = int(clip_s * 4) + 1
    audio_len = stacked_length(frames, 4)

    # cached features (fp16, as the feature cache holds them) and token ids, made once, outside the timing
    pool = [(torch.randn(batch, frames, enc_cfg["d_model"], generator=g).to(dev, torch.float16),
             torch.randint(10, vocab, (batch, prompt_len), generator=g).to(dev),
             torch.randint(10, vocab, (batch, answer_len), generator=g).to(dev)) for _ in range(accum)]

    def micro_batch(i: int, padded_to: int | None = None):
        """One micro-batch as SpeechLM.batch builds it: prompt, adapted audio, answer; labels on the answer."""
        feats, prompt, answer = pool[i]
        x = torch.cat([emb(prompt), adapter(feats.float()).to(emb.weight.dtype), emb(answer)], dim=1)
        labels = torch.full(x.shape[:2], -100, dtype=torch.long, device=dev)
        labels[:, -answer_len:] = answer
        if padded_to and padded_to > x.shape[1]:  # a text example in the batch: everything is padded to its length
            pad = padded_to - x.shape[1]
            x = torch.cat([x, x.new_zeros(batch, pad, x.shape[2])], dim=1)
            labels = torch.cat([labels, labels.new_full((batch, pad), -100)], dim=1)
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=dev)
        return x, mask, labels

    opt = torch.optim.AdamW(params, lr=1e-4, fused=dev.type == "cuda" or None)

    def optimizer_step(padded_to: int | None = None) -> float:
        total = 0.0
        for i in range(accum):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                x, mask, labels = micro_batch(i, padded_to)
                loss = llm(inputs_embeds=x, attention_mask=mask, labels=labels).loss / accum
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    def peak_of(fn):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() if dev.type == "cuda" else None

    llm.train()
    seq = prompt_len + audio_len + answer_len
    try:
        optimizer_step()  # warm-up: kernels, allocator, AdamW state
        sync()
        t = time.perf_counter()
        peak = peak_of(lambda: [optimizer_step() for _ in range(steps)])
        step_s = (time.perf_counter() - t) / steps
        out.update({"train_seq_len": seq, "train_step_s": round(step_s, 4),
                    "train_tokens_per_s": round(batch * accum * seq / step_s), "train_peak_gib": peak and gib(peak),
                    "fits_audio_batches": True})
    except torch.OutOfMemoryError as e:
        out.update({"fits_audio_batches": False, "train_error": str(e).splitlines()[0][:200]})
    long_len = prompt_len + text_tokens
    try:
        t = time.perf_counter()
        peak = peak_of(lambda: optimizer_step(padded_to=long_len))
        out.update({"text_padded_len": long_len, "text_padded_step_s": round(time.perf_counter() - t, 3),
                    "text_padded_peak_gib": peak and gib(peak), "fits_text_padded_batches": True})
    except torch.OutOfMemoryError as e:
        out.update({"fits_text_padded_batches": False, "text_padded_error": str(e).splitlines()[0][:200]})
    kw = {**llm_cfg, "vocab_size": vocab}
    for key, length in (("train_plan_estimate_gib", seq), ("text_padded_plan_estimate_gib", long_len)):
        out[key] = gib(memory_estimate(mcfg, counted, kw, batch, length, H200).total)
    card = torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else None
    out["card_gib"] = card and gib(card)
    opt.zero_grad(set_to_none=True)
    opt.state.clear()  # the AdamW moments: free them before decoding

    # decoding: a batch of 16 prompts with audio, exactly new_tokens greedy tokens, unmerged then merged LoRA
    llm.eval()
    dec_batch = 2 if a.smoke else 16
    with torch.inference_mode():
        feats = torch.randn(dec_batch, frames, enc_cfg["d_model"], generator=g).to(dev)
        prompt = torch.randint(10, vocab, (dec_batch, prompt_len), generator=g).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            x = torch.cat([emb(prompt), adapter(feats).to(emb.weight.dtype)], dim=1)
    mask = torch.ones(x.shape[:2], dtype=torch.long, device=dev)

    def decode():
        with torch.inference_mode():
            return llm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=1)

    results = {}
    for mode in ("unmerged", "merged"):
        if mode == "merged":
            llm.merge_adapter()
        decode()  # warm-up
        sync()
        t = time.perf_counter()
        results[mode] = decode()
        sync()
        s = time.perf_counter() - t
        out[f"decode_{mode}_tokens_per_s"] = round(dec_batch * new_tokens / s, 1)
    same = (results["merged"] == results["unmerged"]).float().mean().item()
    out.update({"decode_batch": dec_batch, "decode_new_tokens": new_tokens, "decode_token_agreement": round(same, 4),
                "decode_merged_speedup": round(out["decode_merged_tokens_per_s"] / out["decode_unmerged_tokens_per_s"], 2)})

    # encoding: 30 s padded windows through the fp32 encoder (the feature cache build)
    enc_batch = 2 if a.smoke else 16
    mel = torch.randn(enc_batch, enc_cfg["num_mel_bins"], 2 * enc_cfg["max_source_positions"], generator=g).to(dev)
    with torch.inference_mode():
        encoder(mel)
        sync()
        t = time.perf_counter()
        encoder(mel)
        sync()
    enc_s = time.perf_counter() - t
    out.update({"encode_batch": enc_batch, "encode_s": round(enc_s, 3), "encode_rtfx": round(enc_batch * 30 / enc_s, 1)})

    out["fits_batch16_accum4"] = bool(out.get("fits_audio_batches") and out.get("fits_text_padded_batches"))
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
