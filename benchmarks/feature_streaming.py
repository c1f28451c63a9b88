"""Resident memory of training and evaluation reads against hours of cached encoder features.

Simulated whisper-large-v3-shaped features (1,280 dims x 50 frames per second, fp16, 15-s clips:
~460 MB per audio hour on disk) are written to a feature cache for 1, 10 and 50 hours. Each side
runs in its own process and reads every clip once:
- `stream`: the training path, `data.loader.BatchStream` over a FeatureStore (batches of 16,
  each batch consumed by an adapter-sized matmul), as train() reads it;
- `eval`: the evaluation path, windows read from the FeatureStore in batches of 16, as decoding
  reads them;
- `ram` (1 h only): the old path, every clip held in a dict, for scale.
The claim: peak RSS of the streamed paths does not grow with the hours on disk (ratio = peak at
the largest size / peak at 1 h - 1, target under 10%). Beside it, the price on the CPU profile:
`steps` trains the profile's model with the harness's own `train()` for the same steps on the
same clips, features held in memory vs read from the store per batch, interleaved A B B A
(target: the store no slower than 1.1x). BENCH_FEATURE_DIR chooses where the
simulated cache lives (default /tmp/borealis-feature-bench; ~28 GB for 1+10+50 h; kept for reruns).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.common import hwm_mb, reset_peak_rss, rss_mb, run_side

TITLE = "Streamed features: peak RSS flat from 1 h to 50 h of whisper-large-v3-shaped features"
SIDE_KEYS = ["hours", "clips", "read_gb", "seconds", "mb_per_s", "step_s"]
DIM, FPS, CLIP_S, BATCH = 1280, 50, 15.0, 16


def _root() -> Path:
    return Path(os.environ.get("BENCH_FEATURE_DIR", "/tmp/borealis-feature-bench"))


def _keys(hours: float) -> list[str]:
    return [f"{hours:g}h-{i:06d}" for i in range(int(hours * 3600 / CLIP_S))]


def _ensure(hours: float) -> Path:
    """Write the simulated cache for `hours` once (the same random block under distinct keys)."""
    import torch

    from borealis_eval.data.features import FeatureCache

    cache = FeatureCache("sim-large-v3", root=_root())
    done = cache.dir / f".complete-{hours:g}h"
    if not done.is_file():
        block = torch.randn(int(CLIP_S * FPS), DIM, generator=torch.Generator().manual_seed(0)).to(torch.float16)
        for key in _keys(hours):
            if not cache.path(key).is_file():
                cache.put(key, block)
        done.write_text("ok\n")
    return cache.dir


def _store(hours: float):
    from borealis_eval.data.features import FeatureCache, FeatureStore

    store = FeatureStore(FeatureCache("sim-large-v3", root=_root()))
    store.add({k: k for k in _keys(hours)})
    return store


def side_stream(hours: float, workers: int = 0) -> dict:
    import torch

    from borealis_eval.data.loader import BatchStream, batches
    from borealis_eval.models.speech_lm import Example

    torch.set_num_threads(1)
    store = _store(hours)
    examples = [Example(answer="", id=k, feature_key=k) for k in store]
    proj = torch.randn(DIM, 64)
    stream = BatchStream(examples, BATCH, store)
    n = -(-len(examples) // BATCH)
    reset_peak_rss()
    base, t, read = rss_mb(), time.perf_counter(), 0
    for _, batch in batches(stream, 0, n, workers=workers):
        for ex in batch:
            read += ex.features.numel() * 2
            (ex.features[::25].float() @ proj).sum()  # touch every clip: a sample of frames through a projection
    secs = time.perf_counter() - t
    return {"hours": hours, "clips": len(examples), "read_gb": read / 1e9, "seconds": secs,
            "mb_per_s": read / 1e6 / secs, "rss_before_mb": base, "peak_rss_mb": hwm_mb()}


def side_eval(hours: float) -> dict:
    import torch

    torch.set_num_threads(1)
    store = _store(hours)
    keys = list(store)
    reset_peak_rss()
    base, t, read = rss_mb(), time.perf_counter(), 0
    for s in range(0, len(keys), BATCH):
        feats = [store[k].float() for k in keys[s : s + BATCH]]  # as decode.evaluate_speech_lm reads windows
        read += sum(f.numel() * 2 for f in feats)
        torch.stack([f.mean(0) for f in feats]).sum()
    secs = time.perf_counter() - t
    return {"hours": hours, "clips": len(keys), "read_gb": read / 1e9, "seconds": secs, "mb_per_s": read / 1e6 / secs,
            "rss_before_mb": base, "peak_rss_mb": hwm_mb()}


def side_ram(hours: float) -> dict:
    """The old path: every clip's features held in a dict (what Resources.features was)."""
    store = _store(hours)
    reset_peak_rss()
    base, t = rss_mb(), time.perf_counter()
    held = {k: store[k] for k in store}
    read = sum(x.numel() * 2 for x in held.values())
    secs = time.perf_counter() - t
    return {"hours": hours, "clips": len(held), "read_gb": read / 1e9, "seconds": secs, "mb_per_s": read / 1e6 / secs,
            "rss_before_mb": base, "peak_rss_mb": hwm_mb()}


def side_steps(from_store: bool, n_clips: int, steps: int) -> dict:
    """The CPU profile's model trained `steps` steps by train(), features in memory or from the store."""
    from benchmarks.common import cached_training
    from borealis_eval.models.speech_lm import Example
    from borealis_eval.train import train

    cfg, model, items, store = cached_training(n_clips)
    examples = [Example(answer=it.text, id=it.id, **({"feature_key": it.id} if from_store else
                                                    {"features": store[it.id]})) for it in items]
    tc = cfg.train.model_copy(update={"steps": steps, "log_every": steps})
    reset_peak_rss()
    r = train(model, examples, tc, seed=0, progress=False, features=store if from_store else None)
    return {"step_s": r.seconds / steps, "steps": steps, "last_loss": r.last_loss, "peak_rss_mb": hwm_mb()}


def _steps_ratio(quick: bool) -> tuple[float, dict]:
    params = {"n_clips": 64 if quick else 400, "steps": 4 if quick else 120}
    runs: dict[str, list[dict]] = {"ram": [], "store": []}
    for order in (["ram", "store"], ["store", "ram"], ["ram", "store"]) if not quick else (["ram", "store"],):
        for side in order:
            runs[side].append(run_side("feature_streaming", "steps", {**params, "from_store": side == "store"},
                                       timeout=3600))
    med = {k: sorted(r["step_s"] for r in v)[len(v) // 2] for k, v in runs.items()}
    assert all(a["last_loss"] == b["last_loss"] for a, b in zip(runs["ram"], runs["store"])), \
        "the two paths must train on the same batches"
    return med["store"] / med["ram"], {f"steps {k} (median of {len(v)})": {**v[0], "step_s": med[k]}
                                       for k, v in runs.items()}


def run(quick: bool = False) -> dict:
    sizes = [0.05, 0.2] if quick else [1.0, 10.0, 50.0]
    t = time.perf_counter()
    for h in sizes:
        _ensure(h)
    write_s = time.perf_counter() - t
    sides = {}
    for h in sizes:
        sides[f"stream {h:g} h"] = run_side("feature_streaming", "stream", {"hours": h}, timeout=7200)
        sides[f"eval {h:g} h"] = run_side("feature_streaming", "eval", {"hours": h}, timeout=7200)
    sides[f"ram {sizes[0]:g} h"] = run_side("feature_streaming", "ram", {"hours": sizes[0]}, timeout=7200)
    step_ratio, step_sides = _steps_ratio(quick)
    sides.update(step_sides)
    small, large = sizes[0], sizes[-1]
    growth = max(sides[f"{p} {large:g} h"]["peak_rss_mb"] / sides[f"{p} {small:g} h"]["peak_rss_mb"] - 1
                 for p in ("stream", "eval"))
    ram = sides[f"ram {small:g} h"]
    summary = ("peak RSS, training stream: " + ", ".join(f"{h:g} h {sides[f'stream {h:g} h']['peak_rss_mb']:.0f} MB"
                                                          for h in sizes)
               + "; evaluation reads: " + ", ".join(f"{h:g} h {sides[f'eval {h:g} h']['peak_rss_mb']:.0f} MB"
                                                    for h in sizes)
               + f"; the old in-RAM dict at {small:g} h: {ram['peak_rss_mb']:.0f} MB "
               f"(+{ram['peak_rss_mb'] - ram['rss_before_mb']:.0f} MB for {ram['read_gb']:.2f} GB of features, "
               f"growing with the hours). Simulated cache written in {write_s:.0f} s. CPU-profile training step, "
               f"features read from the store per batch vs held in memory: {step_ratio:.3f}x (target <= 1.1x; "
               f"median step {step_sides[next(k for k in step_sides if 'store' in k)]['step_s']:.4f} s vs "
               f"{step_sides[next(k for k in step_sides if 'ram' in k)]['step_s']:.4f} s; identical losses).")
    return {"ratio": growth, "ratio_label": f"peak RSS growth from {small:g} h to {large:g} h (worst of stream/eval)",
            "target": 0.10, "lower_is_better": True, "met": growth < 0.10 and step_ratio <= 1.1,
            "step_time_ratio": step_ratio, "sides": sides, "summary": summary}
