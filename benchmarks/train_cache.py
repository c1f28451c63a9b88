"""3. Training: step time with cached encoder features vs re-encoding the audio every step.

Same CPU-profile model (adapter + 4-layer Qwen3, full training), same batches of 8 real
training clips, same optimiser step (AdamW, grad clipping) on both sides; the only difference
is where the features come from:
- cached: the feature cache, read once up front as the sweep does (`encode_cached`, hits);
- re-encode: the frozen bundled whisper-base encoder (short input, as in the CPU profile) run
  on the batch's waves inside every step, grouped by padded length as the cache fills it.
The cached side also times the harness's own `train()` on the same examples as a cross-check.
"""

from __future__ import annotations

import time

NAME = "train_cache"
TITLE = "Training step: cached features vs re-encoding audio"
TARGET = 3.0
SIDE_KEYS = ["step_s", "answer_tokens_per_s", "loop_peak_rss_mb"]  # shown per side in the README table


def _step(model, opt, params, batch, max_norm):
    import torch

    loss = model(batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def side_train(n_clips: int, batch_size: int, steps: int, warmup: int, cached: bool) -> dict:

    import torch

    from benchmarks.common import corpus_tokenizer, cpu_config, hwm_mb, reset_peak_rss, rss_mb, speech_lm, train_items
    from borealis_eval.data.features import FeatureCache, encode_cached
    from borealis_eval.models.encoder import FrozenWhisperEncoder, encoder_frames
    from borealis_eval.models.speech_lm import Example
    from borealis_eval.train import train

    cfg = cpu_config()
    items = train_items(cfg, n_clips)
    waves = {it.id: it.load() for it in items}
    frames = {i: encoder_frames(len(w)) for i, w in waves.items()}
    encoder = FrozenWhisperEncoder(cfg.model.encoder)
    model = speech_lm(cfg, corpus_tokenizer(cfg), encoder.dim)
    cache_stats = {}
    if cached:
        cache = FeatureCache(encoder.identity.key)
        feats = {k: v.half() for k, v in encode_cached(encoder, waves, cache, cfg.eval.batch_size).items()}
        cache_stats = {"cache_hits": cache.stats.hits, "cache_encoded": cache.stats.encoded}
        del encoder, waves  # the sweep keeps the encoder; training never touches it
    batches = [items[s : s + batch_size] for s in range(0, len(items) - batch_size + 1, batch_size)]

    def examples(batch):
        if cached:
            return [Example(answer=it.text, features=feats[it.id], id=it.id) for it in batch]
        encoded = encoder.encode_many([waves[it.id] for it in batch])
        return [Example(answer=it.text, features=x, id=it.id) for it, x in zip(batch, encoded)]

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    model.train()
    for i in range(warmup):  # untimed
        _step(model, opt, params, examples(batches[i % len(batches)]), cfg.train.max_grad_norm)
    rss_before, peak_reset = rss_mb(), reset_peak_rss()
    t = time.perf_counter()
    for i in range(steps):
        _step(model, opt, params, examples(batches[i % len(batches)]), cfg.train.max_grad_norm)
    secs = time.perf_counter() - t
    loop_peak = hwm_mb() if peak_reset else float("nan")

    # tokens per step (untimed): every LLM input position, and the supervised answer tokens
    n_in = n_ans = 0
    with torch.no_grad():
        for i in range(steps):
            batch = batches[i % len(batches)]
            _, mask, labels = model.batch([Example(answer=it.text, features=torch.zeros(frames[it.id], 512))
                                           for it in batch])
            n_ans += int((labels != -100).sum())
            n_in += int(mask.sum())
    out = {"steps": steps, "batch_size": batch_size, "seconds": round(secs, 4), "step_s": round(secs / steps, 5),
           "answer_tokens_per_s": round(n_ans / secs, 1), "input_tokens_per_s": round(n_in / secs, 1),
           "torch_threads": torch.get_num_threads(), "rss_before_loop_mb": round(rss_before, 1),
           "loop_peak_rss_mb": round(loop_peak, 1), **cache_stats}
    if cached:
        t = time.perf_counter()  # the Python-side batch assembly inside each step (tokenise, splice, pad)
        with torch.no_grad():
            for i in range(steps):
                model.batch(examples(batches[i % len(batches)]))
        out["batch_build_share"] = round((time.perf_counter() - t) / secs, 3)
        exs = [ex for b in batches for ex in examples(b)]
        tc = cfg.train.model_copy(update={"steps": steps, "batch_size": batch_size})
        res = train(model, exs, tc, cfg.seed, log=None, progress=False)
        out["harness_train_step_s"] = round(res.seconds / steps, 5)
    return out


def run(quick: bool = False) -> dict:
    from benchmarks.common import run_side

    p = dict(n_clips=16, batch_size=8, steps=2, warmup=1) if quick else dict(n_clips=96, batch_size=8, steps=12, warmup=2)
    cached = run_side(NAME, "train", {**p, "cached": True})
    reenc = run_side(NAME, "train", {**p, "cached": False})
    ratio = reenc["step_s"] / cached["step_s"]
    return {
        "ratio": ratio, "ratio_label": "step-time speed-up of cached features over re-encoding",
        "target": TARGET, "met": ratio >= TARGET,
        "sides": {"cached_features": cached, "reencode_every_step": reenc},
        "summary": f"{cached['step_s']:.3f} s/step cached vs {reenc['step_s']:.3f} s/step re-encoding "
                   f"(batch {p['batch_size']}); {cached['answer_tokens_per_s']:.0f} vs "
                   f"{reenc['answer_tokens_per_s']:.0f} answer tok/s; harness train() "
                   f"{cached['harness_train_step_s']:.3f} s/step",
    }
