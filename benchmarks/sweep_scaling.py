"""4. Sweep scaling: wall time of an N-variant CPU sweep, fitted as fixed + N x per-variant.

`borealis-eval sweep` (`sweep.run_sweep`, unchanged) on benchmarks/ablations/sweep_scaling.yaml
(the CPU profile with 20 steps, small eval sets, no baseline), first N variants of its grid,
each N in a fresh process against its own empty sqlite MLflow store (created and migrated
untimed, as an existing store would be) and an empty decode cache, with the encoder-feature
cache warm (filled by an untimed warm-up). The side-by-side baseline is
running the same N variants as N separate one-variant sweeps (N x the N=1 time), which pays
the shared part (data, encoder load, cached features, tokenizer, store) every time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

NAME = "sweep_scaling"
TITLE = "Sweep scaling: N-variant CPU sweep wall time"
TARGET = None
SIDE_KEYS = ["sweep_seconds", "process_wall_s"]  # shown per side in the README table
ABLATION = Path(__file__).resolve().parent / "ablations" / "sweep_scaling.yaml"


def _env(root: Path, overrides: dict) -> tuple[dict, str]:
    """A private cache root (shared models/features/tokenizers, fresh decodes), store and ablation."""
    from borealis_eval.paths import cache_root

    real = cache_root()
    cache = root / "cache"
    cache.mkdir(parents=True)
    for sub in ("models", "features", "tokenizers"):
        (real / sub).mkdir(exist_ok=True)
        (cache / sub).symlink_to(real / sub)
    (root / "mlflow.yaml").write_text(f"tracking_uri: sqlite:///{root / 'mlruns.db'}\n"
                                      f"artifact_location: {root / 'mlartifacts'}\n")
    ablation = ABLATION
    if overrides:
        import yaml

        ablation = root / "ablation.yaml"
        ablation.write_text(yaml.safe_dump({"extends": os.path.relpath(ABLATION, root), "base": overrides}))
    env = {"BOREALIS_CACHE_DIR": str(cache), "BOREALIS_MLFLOW_CONFIG": str(root / "mlflow.yaml"),
           "MLFLOW_TRACKING_URI": ""}
    return env, str(ablation)


def side_warm(ablation: str, n: int) -> dict:
    """Untimed: fill the feature cache for every clip the first n variants use."""
    from borealis_eval.config import load_ablation
    from borealis_eval.resources import prepare_resources

    from borealis_eval.tracking import TrackingConfig, preflight

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    t = time.perf_counter()
    preflight(TrackingConfig.load())  # creates the store (schema migration), copied for every N
    store_s = time.perf_counter() - t
    _, variants = load_ablation(ablation)
    t = time.perf_counter()
    res = prepare_resources(variants[:n])
    return {"encoded": res.cache.stats.encoded, "hits": res.cache.stats.hits,
            "prepare_resources_s": round(time.perf_counter() - t, 2), "store_creation_s": round(store_s, 2)}


def side_sweep(ablation: str, n: int) -> dict:
    import logging

    import torch

    from borealis_eval.config import load_ablation
    from borealis_eval.study import StudyOptions
    from borealis_eval.sweep import run_sweep
    from borealis_eval.tracking import TrackingConfig, preflight

    logging.getLogger("borealis_eval").setLevel(logging.WARNING)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _, variants = load_ablation(ablation)
    t = time.perf_counter()
    r = run_sweep(ablation, StudyOptions(progress=False), only=[v.name for v in variants[:n]])
    wall = time.perf_counter() - t
    client = preflight(TrackingConfig.load())
    parent = client.get_run(r.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], "tags.role = 'variant'")
    return {"n": n, "sweep_seconds": round(r.seconds, 3), "wall_s": round(wall, 3), "finished": len(r.finished),
            "failed": r.failed, "cache_encoded": parent.data.metrics.get("cache/encoded"),
            "cache_hits": parent.data.metrics.get("cache/hits"),
            "variant_run_s": sorted(round((c.info.end_time - c.info.start_time) / 1000, 2) for c in children),
            "variant_train_s": sorted(round(c.data.metrics.get("train/seconds", float("nan")), 2) for c in children),
            "torch_threads": torch.get_num_threads()}


def run(quick: bool = False, ns: list[int] | None = None) -> dict:
    import numpy as np

    from benchmarks.common import run_side

    env_ns = os.environ.get("BENCH_SWEEP_NS")  # e.g. "1,2,4" when time is short
    ns = ns or ([int(v) for v in env_ns.split(",")] if env_ns else [1, 2] if quick else [1, 2, 4, 8])
    overrides: dict = {}
    if quick:
        overrides["train"] = {"steps": 2}
        overrides["eval"] = {"sets": [{"name": "test_en", "max_samples": 2, "source": {
            "kind": "synth", "corpus": "data/synth/cpu-v1", "split": "test_en"}}], "text_sets": [], "max_new_tokens": 8}
    if os.environ.get("BENCH_THREADS"):
        overrides.setdefault("train", {})["threads"] = int(os.environ["BENCH_THREADS"])
    sides = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        env, ablation = _env(Path(tmp, "warm"), overrides)
        warm = run_side(NAME, "warm", {"ablation": ablation, "n": max(ns)}, env=env)
        for n in ns:
            env, ablation = _env(Path(tmp, f"n{n}"), overrides)
            shutil.copy(Path(tmp, "warm", "mlruns.db"), Path(tmp, f"n{n}", "mlruns.db"))  # an existing, empty store
            sides[f"n{n}"] = run_side(NAME, "sweep", {"ablation": ablation, "n": n}, env=env)
    x = np.array(ns, dtype=float)
    y = np.array([sides[f"n{n}"]["sweep_seconds"] for n in ns])
    per_variant, fixed = np.polyfit(x, y, 1)
    yp = np.array([sides[f"n{n}"]["process_wall_s"] for n in ns])
    per_variant_p, fixed_p = np.polyfit(x, yp, 1)
    nmax = max(ns)
    ratio = nmax * y[0] / y[-1] if ns[0] == 1 else float("nan")
    ratio_p = nmax * yp[0] / yp[-1] if ns[0] == 1 else float("nan")
    last = sides[f"n{nmax}"]
    run_s, train_s = float(np.mean(last["variant_run_s"])), float(np.mean(last["variant_train_s"]))
    return {
        "ratio": ratio, "ratio_label": f"{nmax} one-variant sweeps / one {nmax}-variant sweep (wall time)",
        "target": TARGET, "met": None,
        "fit": {"fixed_s": round(float(fixed), 2), "per_variant_s": round(float(per_variant), 2),
                "fixed_s_incl_process_start": round(float(fixed_p), 2),
                "per_variant_s_incl_process_start": round(float(per_variant_p), 2),
                "max_abs_residual_s": round(float(np.max(np.abs(np.polyval([per_variant, fixed], x) - y))), 2)},
        "ratio_incl_process_start": ratio_p,
        "variant_mean_run_s": round(run_s, 2), "variant_mean_train_s": round(train_s, 2),
        "warmup": warm, "ns": ns, "sides": sides,
        "summary": f"sweep time = {fixed:.1f} s fixed + {per_variant:.1f} s x N (N = {', '.join(map(str, ns))}: "
                   f"{', '.join(f'{v:.1f}' for v in y)} s); with process start {fixed_p:.1f} + {per_variant_p:.1f} x N "
                   f"({ratio_p:.2f}x vs {nmax} separate invocations); a variant's run {run_s:.1f} s of which "
                   f"training {train_s:.1f} s",
    }
