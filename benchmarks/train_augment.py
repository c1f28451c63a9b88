"""6. Training with augmentation: step time of on-the-fly augmentation + encoding vs cached clean features.

Both sides run the harness's own `train()` on the same examples: the CPU profile's model
(adapter + small Qwen3, full training), batch 8, real training clips whose clean features come
from the feature cache, as the sweep prepares them. The augmented side also passes the hook the
sweep uses (`AugmentBatches`) with the "on" block of `ablations/cpu/augment.yaml`: each clip
that draws an effect is reloaded, augmented (numpy/scipy/soxr) and re-encoded by the frozen
bundled whisper-base (short input) inside the step; clips that draw none keep cached features.
The ratio is the cost of augmentation (higher is costlier): no target, it is what a study pays.
"""

from __future__ import annotations

import time

NAME = "train_augment"
TITLE = "Training step: on-the-fly augmentation vs cached clean features"
TARGET = None
SIDE_KEYS = ["step_s", "augmented_share", "hook_share", "loop_peak_rss_mb"]  # shown per side in the README table


def augment_config():
    from benchmarks.common import ROOT
    from borealis_eval.config import load_ablation

    _, variants = load_ablation(ROOT / "ablations" / "cpu" / "augment.yaml")
    return next(v.config.data.augment for v in variants if v.config.data.augment is not None)


def side_train(n_clips: int, batch_size: int, steps: int, warmup: int, augment: bool) -> dict:
    import torch

    from benchmarks.common import corpus_tokenizer, cpu_config, hwm_mb, reset_peak_rss, rss_mb, speech_lm, train_items
    from borealis_eval.data.augment import Augmenter
    from borealis_eval.data.augment_batches import AugmentBatches
    from borealis_eval.data.features import FeatureCache, encode_cached
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import Example
    from borealis_eval.train import train

    cfg = cpu_config()
    items = train_items(cfg, n_clips)
    encoder = FrozenWhisperEncoder(cfg.model.encoder)
    cache = FeatureCache(encoder.identity.key)
    feats = {k: v.half() for k, v in encode_cached(encoder, {it.id: it.load() for it in items}, cache,
                                                   cfg.eval.batch_size).items()}
    examples = [Example(answer=it.text, features=feats[it.id], id=it.id) for it in items]
    model = speech_lm(cfg, corpus_tokenizer(cfg), encoder.dim)

    def hook():
        if not augment:
            return None
        return AugmentBatches(Augmenter(augment_config(), cfg.seed), encoder, {it.id: it for it in items},
                              len(examples))

    tc = cfg.train.model_copy(update={"batch_size": batch_size, "log_every": 1})
    train(model, examples, tc.model_copy(update={"steps": warmup}), cfg.seed, progress=False, batch_transform=hook())
    rss_before, peak_reset = rss_mb(), reset_peak_rss()
    h = hook()
    res = train(model, examples, tc.model_copy(update={"steps": steps}), cfg.seed, progress=False, batch_transform=h)
    loop_peak = hwm_mb() if peak_reset else float("nan")
    out = {"steps": steps, "batch_size": batch_size, "seconds": round(res.seconds, 4),
           "step_s": round(res.seconds / steps, 5), "torch_threads": torch.get_num_threads(),
           "rss_before_loop_mb": round(rss_before, 1), "loop_peak_rss_mb": round(loop_peak, 1),
           "cache_hits": cache.stats.hits, "cache_encoded": cache.stats.encoded}
    if h is not None:
        m = h.metrics()
        out.update({"augmented_share": round(m["augment/clips"] / m["augment/audio_examples"], 3),
                    "hook_share": round(m["augment/seconds"] / res.seconds, 3),
                    **{k.split("/", 1)[1]: v for k, v in m.items() if k != "augment/seconds"}})
        # the signal processing alone (no encoder), per augmented clip
        aug, waves = h.augmenter, [it.load() for it in items]
        plans = [(w, aug.plan(f"{it.id}@{i}", 1.0)) for i, (it, w) in enumerate(zip(items, waves))]
        plans = [(w, p) for w, p in plans if p]
        t = time.perf_counter()
        for w, p in plans:
            aug.apply(w, p)
        out["effects_ms_per_clip"] = round(1000 * (time.perf_counter() - t) / max(1, len(plans)), 2)
    else:
        out.update({"augmented_share": 0.0, "hook_share": 0.0})
    return out


def run(quick: bool = False) -> dict:
    from benchmarks.common import run_side

    p = dict(n_clips=96, batch_size=8, steps=12, warmup=2)
    if quick:
        p.update(n_clips=16, steps=2, warmup=1)
    cached = run_side(NAME, "train", {**p, "augment": False})
    aug = run_side(NAME, "train", {**p, "augment": True})
    ratio = aug["step_s"] / cached["step_s"]
    return {
        "ratio": ratio, "ratio_label": "step-time cost of augmentation (augmented / cached)",
        "target": TARGET, "met": None,
        "sides": {"cached_clean": cached, "augmented_on_the_fly": aug},
        "summary": f"{cached['step_s']:.3f} s/step cached vs {aug['step_s']:.3f} s/step augmented (batch "
                   f"{p['batch_size']}, {aug['augmented_share']:.0%} of clips augmented and re-encoded; the hook "
                   f"is {aug['hook_share']:.0%} of the augmented step; the effects alone "
                   f"{aug['effects_ms_per_clip']:.1f} ms per augmented clip)",
    }
