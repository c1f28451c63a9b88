"""Smoke run of the benchmark harness (tiny sizes): results are written with the expected keys.

Never gates on timings: these machines are noisy and the quick sizes mean nothing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _positive_numbers(d: dict, keys: list[str]) -> None:
    for k in keys:
        assert isinstance(d[k], (int, float)) and d[k] > 0, (k, d[k])


def test_quick_benchmarks_write_results(tmp_path, corpus):
    out = tmp_path / "results"
    env = {**os.environ, "BENCH_THREADS": "1", "HF_HUB_OFFLINE": "1", "BENCH_CORPUS": str(corpus),
           "BOREALIS_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "speechlm_decode,tracking_overhead,train_cache",
                        "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "speed-up of batch 8 over batch 1" in p.stdout  # each benchmark prints its ratio

    for name in ("speechlm_decode", "tracking_overhead", "train_cache"):
        r = json.loads((out / f"{name}.json").read_text())
        assert {"name", "title", "ratio", "ratio_label", "target", "met", "sides", "summary", "command", "date",
                "machine", "quick"} <= set(r)
        assert r["quick"] is True and r["machine"]["cores"] > 0 and "--quick" in r["command"]
        assert r["ratio"] > 0 and len(r["sides"]) == 2
        for side in r["sides"].values():
            _positive_numbers(side, ["peak_rss_mb", "process_wall_s"])

    dec = json.loads((out / "speechlm_decode.json").read_text())["sides"]
    for side in dec.values():
        _positive_numbers(side, ["seconds", "tokens_per_s"])
        assert side["generated_tokens_checked"] == side["new_tokens_per_utt"]  # equal work on both sides
    trk = json.loads((out / "tracking_overhead.json").read_text())["sides"]
    _positive_numbers(trk["no_logging"], ["train_seconds", "step_s"])
    _positive_numbers(trk["mlflow_sqlite"], ["train_seconds", "tracking_seconds", "share"])
    assert trk["mlflow_sqlite"]["loss_points_logged"] >= 1
    cache = json.loads((out / "train_cache.json").read_text())["sides"]
    _positive_numbers(cache["cached_features"], ["step_s", "harness_train_step_s"])
    _positive_numbers(cache["reencode_every_step"], ["step_s"])
    assert not list(out.glob("*.tmp"))


def test_gpu_scripts_smoke_on_cpu(tmp_path):
    """The GPU checks run by hand on a lent GPU; their --smoke mode keeps the code path alive on CPU."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BOREALIS_CACHE_DIR": str(tmp_path / "cache")}
    for script, name in (("gpu_check.py", "gpu_check.json"), ("gpu_harness_check.py", "gpu_harness.json")):
        p = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke", "--out", str(tmp_path / name)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    h = json.loads((tmp_path / "gpu_harness.json").read_text())
    assert h["ok"] and h["checkpoint_written"] and h["resumed_from"] == 4  # checkpoint + resume through train()
    _positive_numbers(h, ["step_s", "decode_tokens_per_s"])
    g = json.loads((tmp_path / "gpu_check.json").read_text())
    _positive_numbers(g, ["train_step_cached_s", "decode_rtfx"])


def test_gpu_harness_check_lora_smoke_on_cpu(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BOREALIS_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "benchmarks/gpu_harness_check.py", "--smoke", "--lora", "--out",
                        str(tmp_path / "h.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    h = json.loads((tmp_path / "h.json").read_text())
    assert h["mode"] == "lora" and h["ok"] and h["llm_weight_dtype"] == "torch.float32"  # auto: fp32 on CPU


def test_gpu_fullscale_check_smoke_on_cpu(tmp_path):
    """benchmarks/gpu_fullscale_check.py runs by hand on a lent GPU; --smoke keeps its code path alive."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BOREALIS_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "benchmarks/gpu_fullscale_check.py", "--smoke", "--out", str(tmp_path / "f.json")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads((tmp_path / "f.json").read_text())
    assert r["smoke"] and r["plan_counts_match"]  # the plan's meta-device count equals the built model
    assert r["fits_audio_batches"] and r["fits_text_padded_batches"] and r["fits_batch16_accum4"]
    assert r["params_trainable"] < r["params_total"] and r["lora_dtype"] == "torch.float32"
    _positive_numbers(r, ["train_step_s", "text_padded_step_s", "decode_unmerged_tokens_per_s",
                          "decode_merged_tokens_per_s", "encode_rtfx"])
    assert 0 <= r["decode_token_agreement"] <= 1
