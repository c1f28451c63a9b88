"""Smoke run of benchmarks/variant_cost.py (one CPU-profile variant end to end, vs a git ref) at
tiny size, on the tests' tiny corpus: both sides train, evaluate and report; never gates on timings."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_variant_cost_runs_this_checkout_against_a_git_ref(tmp_path, corpus):
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                                     capture_output=True).returncode:
        pytest.skip("not a git checkout: --vs-ref needs one")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BENCH_CORPUS": str(corpus), "BOREALIS_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "runs.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.variant_cost", "--steps", "2", "--threads", "1", "--dev", "2",
                        "--sets", "test_ru", "test_en", "--proposed", "--vs-ref", "HEAD", "--json", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "VARIANT s (train + eval)" in p.stdout and "speed-up HEAD -> this checkout" in p.stdout
    runs = json.loads(out.read_text())
    assert set(runs) == {"this checkout", "HEAD"}
    after, before = runs["this checkout"][0], runs["HEAD"][0]
    assert after["precision"] == "bf16" and before["precision"] == "auto"  # --proposed: this checkout only
    assert after["steps"] == before["steps"] == 2
    for r in (after, before):
        assert set(r["wer"]) == {"test_ru", "test_en", "dev"}
        assert set(r["eval_s"]) == {"test_ru", "test_en", "dev", "text:heldout"}
        assert r["train_s"] > 0 and r["peak_rss_mb"] > 0 and r["examples"] == r["steps"] * r["batch_size"]
