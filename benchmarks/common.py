"""Shared pieces: run one side of a benchmark in its own process, the CPU-profile model, data.

Each side runs in a fresh interpreter (`python -m benchmarks._side MODULE SIDE PARAMS`), so its
peak RSS is its own and neither side inherits the other's warm caches or allocator state.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CPU_ABLATION = ROOT / "ablations" / "cpu" / "text_ratio.yaml"
MARK = "@@BENCH@@"
SAMPLE_RATE = 16_000


class SideFailed(RuntimeError):
    pass


def run_side(module: str, side: str, params: dict, env: dict | None = None, timeout: float = 900) -> dict:
    """Run `benchmarks.<module>.side_<side>(**params)` in a subprocess; its dict + peak RSS + wall."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    cmd = [sys.executable, "-m", "benchmarks._side", module, side, json.dumps(params)]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
    if p.returncode or not lines:
        raise SideFailed(f"{module}.{side} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    out = json.loads(lines[-1][len(MARK):])
    out["process_wall_s"] = round(wall, 3)
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (KiB there) in MB; NaN where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    """Resident set size now."""
    return _proc_status_mb("VmRSS")


def hwm_mb() -> float:
    """The RSS high-water mark since the last `reset_peak_rss()` (unlike ru_maxrss, which never resets)."""
    return _proc_status_mb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (so a later peak covers only what follows)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    import platform

    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem, 1), "torch": torch.__version__,
            "torch_threads": int(os.environ.get("BENCH_THREADS") or torch.get_num_threads()),
            "python": platform.python_version(), "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


# ------------------------------------------------------------------ the CPU profile
def cpu_config():
    """The first variant of the CPU profile (ablations/cpu/text_ratio.yaml), fully resolved.

    BENCH_CORPUS=<folder> swaps the profile's synthetic corpus for the manifests of another
    corpus (the smoke test points it at a tiny one it synthesises).
    """
    return cpu_variants()[0].config


def cpu_variants(ablation: Path = CPU_ABLATION):
    """Every variant of the CPU profile (or of another copy of its file), resolved; BENCH_CORPUS as in `cpu_config`."""
    from borealis_eval.config import ExperimentConfig, load_ablation

    variants = load_ablation(ablation)[1]
    corpus = os.environ.get("BENCH_CORPUS")
    if not corpus:
        return variants

    def swap(node):
        if isinstance(node, dict):
            if node.get("kind") == "synth":
                return {"kind": "manifest", "path": str(Path(corpus) / f"{node['split']}.jsonl")}
            return {k: swap(v) for k, v in node.items()}
        return [swap(v) for v in node] if isinstance(node, list) else node

    return [v.model_copy(update={"config": ExperimentConfig.model_validate(swap(v.config.model_dump(mode="json")))})
            for v in variants]


def corpus_tokenizer(cfg):
    """The byte-level BPE the sweep trains on the corpus text (cached by content: usually a hit)."""
    from borealis_eval.data.sources import load_audio_set, load_text_pool
    from borealis_eval.resources import tokenizer_for

    audio = [it for s in cfg.data.train_sets for it in load_audio_set(s)]
    text = load_text_pool(cfg.data.text_pool) if cfg.data.text_pool else []
    return tokenizer_for(cfg.model, audio, text, {})


def speech_lm(cfg, tokenizer, enc_dim: int = 512, seed: int = 0):
    """The CPU profile's speech-LM (adapter + 4-layer Qwen3), random init."""
    import torch

    from borealis_eval.models.speech_lm import SpeechLM

    torch.manual_seed(seed)
    return SpeechLM.from_config(cfg.model, enc_dim, tokenizer)


def eval_items(cfg, name: str, max_samples: int | None):
    """Items of one of the profile's eval sets (a seeded random subset when max_samples is set)."""
    from borealis_eval.data.sources import load_audio_set

    return load_audio_set(next(s for s in cfg.eval.sets if s.name == name).model_copy(update={"max_samples": max_samples}))


def eval_set(cfg, name: str, max_samples: int | None):
    """One of the profile's eval sets, waves loaded."""
    from borealis_eval.data.sources import set_language
    from borealis_eval.resources import EvalData

    spec = next(s for s in cfg.eval.sets if s.name == name)
    items = eval_items(cfg, name, max_samples)
    waves = {it.id: it.load() for it in items}
    return EvalData(name, spec.language or set_language(items), items, waves)


def train_items(cfg, n: int, seed: int = 0):
    """A seeded random subset of n training clips (items only; waves loaded by the caller)."""
    import numpy as np

    from borealis_eval.data.sources import load_audio_set

    items = [it for s in cfg.data.train_sets for it in load_audio_set(s)]
    keep = sorted(np.random.default_rng(seed).choice(len(items), min(n, len(items)), replace=False))
    return [items[i] for i in keep]


def cached_training(n_clips: int):
    """The CPU profile's config and model, and n training clips encoded into the feature cache:
    (cfg, model, items, store); the encoder is dropped before training."""
    from borealis_eval.data.features import FeatureCache, FeatureStore, cache_features
    from borealis_eval.models.encoder import FrozenWhisperEncoder

    cfg = cpu_config()
    items = train_items(cfg, n_clips)
    encoder = FrozenWhisperEncoder(cfg.model.encoder)
    store = FeatureStore(FeatureCache(encoder.identity.key))
    store.add(cache_features(encoder, {it.id: it.load() for it in items}, store.cache, cfg.eval.batch_size))
    model = speech_lm(cfg, corpus_tokenizer(cfg), encoder.dim)
    return cfg, model, items, store


def encoder_frames(seconds: float) -> int:
    from borealis_eval.models.encoder import encoder_frames as frames

    return frames(int(round(seconds * SAMPLE_RATE)))
