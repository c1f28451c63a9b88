"""2. Speech-LLM decoding: batched greedy generation with KV cache vs one utterance at a time.

Model: the CPU profile's speech-LM (whisper-base-sized features -> k=4 adapter -> 4-layer
Qwen3, corpus BPE), random init. Inputs: random encoder features with the frame counts of
real test_en clips. Both sides run in one process on the same model, chunk of 8 by chunk of
8, alternating which goes first (so load from other jobs falls on both alike); the peak RSS
is that process's. Every utterance generates exactly `new_tokens` tokens on both sides
(min_new_tokens = max_new_tokens in the LLM's generation config), so the two sides do the
same work; only the batching differs. `SpeechLM.generate` is called unchanged.
"""

from __future__ import annotations

import time

NAME = "speechlm_decode"
TITLE = "Speech-LLM decoding: batch 8 vs one at a time"
TARGET = 2.0
SIDE_KEYS = ["seconds", "tokens_per_s"]  # shown per side in the README table


def side_generate(n_utts: int, batch_size: int, new_tokens: int, seed: int = 0) -> dict:
    import torch

    from benchmarks.common import cpu_config, corpus_tokenizer, encoder_frames, eval_items, speech_lm
    from borealis_eval.models.speech_lm import Example

    cfg = cpu_config()
    model = speech_lm(cfg, corpus_tokenizer(cfg)).eval()
    model.llm.generation_config.min_new_tokens = new_tokens  # equal work on both sides
    items = eval_items(cfg, "test_en", None)
    items = [items[i % len(items)] for i in range(n_utts)]  # a tiny corpus repeats its clips
    items.sort(key=lambda it: -it.duration)  # duration-sorted, as the evaluation runner batches
    g = torch.Generator().manual_seed(seed)
    exs = [Example(answer="", features=torch.randn(encoder_frames(it.duration), 512, generator=g) * 0.5, id=it.id)
           for it in items]
    model.generate(exs[-min(2, batch_size):], new_tokens)  # warm-up, untimed
    secs = {"batched": 0.0, "single": 0.0}

    def batched(chunk):
        t = time.perf_counter()
        model.generate(chunk, new_tokens)
        secs["batched"] += time.perf_counter() - t

    def single(chunk):
        for ex in chunk:
            t = time.perf_counter()
            model.generate([ex], new_tokens)
            secs["single"] += time.perf_counter() - t

    # both sides in this process, chunk by chunk, alternating which goes first: load from other
    # jobs on a shared machine falls on both alike
    for i, s in enumerate(range(0, len(exs), batch_size)):
        for fn in ((batched, single) if i % 2 == 0 else (single, batched)):
            fn(exs[s : s + batch_size])
    # the token count both sides generate (checked on one batch, untimed)
    embeds, mask, _ = model.batch(exs[:batch_size], with_answer=False, left_pad=True)
    with torch.inference_mode():
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=new_tokens,
                                 do_sample=False, eos_token_id=model.eos_id, pad_token_id=model.tok.pad_token_id)
    audio = sum(it.duration for it in items)
    side = lambda k, b: {"seconds": round(secs[k], 4), "batch_size": b, "utterances": len(exs),  # noqa: E731
                         "new_tokens_per_utt": new_tokens, "generated_tokens_checked": int(out.shape[1]),
                         "tokens_per_s": round(len(exs) * new_tokens / secs[k], 2), "rtfx": round(audio / secs[k], 2)}
    return {"batched_8": side("batched", batch_size), "one_at_a_time": side("single", 1),
            "audio_seconds": round(audio, 2), "torch_threads": torch.get_num_threads()}


def run(quick: bool = False) -> dict:
    from benchmarks.common import run_side

    p = dict(n_utts=8, new_tokens=4) if quick else dict(n_utts=32, new_tokens=32)
    r = run_side(NAME, "generate", {**p, "batch_size": 8})
    batched, single = r["batched_8"], r["one_at_a_time"]
    for side in (batched, single):  # one process: the peak covers both sides
        side.update(peak_rss_mb=r["peak_rss_mb"], process_wall_s=r["process_wall_s"])
    ratio = single["seconds"] / batched["seconds"]
    return {
        "ratio": ratio, "ratio_label": "speed-up of batch 8 over batch 1 (same tokens generated)",
        "target": TARGET, "met": ratio >= TARGET,
        "sides": {"batched_8": batched, "one_at_a_time": single},
        "summary": f"batch 8 {batched['tokens_per_s']:.0f} tok/s vs batch 1 {single['tokens_per_s']:.0f} tok/s "
                   f"({p['n_utts']} utterances x {p['new_tokens']} new tokens)",
    }
