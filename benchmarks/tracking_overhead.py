"""5. Tracking overhead: MLflow logging time as a share of training time.

Both sides run the harness's `train()` on the CPU-profile model with the same seed and
batches (shapes of real training clips, random feature values): one with `log=None`, one
exactly as the sweep runs a variant against a fresh sqlite store (run creation, the
flattened config as params, the loss curve through `RunLogger.metrics` with the profile's
`log_every`, flush and end). The share is the tracking seconds over the training seconds;
the cost of creating a fresh store (schema migration, once per store) is reported apart.
"""

from __future__ import annotations

import time

NAME = "tracking_overhead"
TITLE = "Tracking overhead: MLflow logging / training time"
TARGET = 0.02  # share of training time
SIDE_KEYS = ["train_seconds", "tracking_seconds"]  # shown per side in the README table


def _setup(steps: int, batch_size: int, n_clips: int):
    import torch

    from benchmarks.common import corpus_tokenizer, cpu_config, encoder_frames, speech_lm, train_items
    from borealis_eval.models.speech_lm import Example

    cfg = cpu_config()
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps, "batch_size": batch_size})})
    model = speech_lm(cfg, corpus_tokenizer(cfg))
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=it.text, features=(torch.randn(encoder_frames(it.duration), 512, generator=g) * 0.5).half(),
                   id=it.id) for it in train_items(cfg, n_clips)]
    return cfg, model, exs


def side_train(steps: int, batch_size: int, n_clips: int, mlflow: bool) -> dict:
    import tempfile
    from pathlib import Path

    import torch

    from borealis_eval.records import flatten
    from borealis_eval.train import train

    cfg, model, exs = _setup(steps, batch_size, n_clips)
    out = {"steps": steps, "batch_size": batch_size, "log_every": cfg.train.log_every,
           "torch_threads": torch.get_num_threads()}
    if not mlflow:
        res = train(model, exs, cfg.train, cfg.seed, log=None, progress=False)
        return {**out, "train_seconds": round(res.seconds, 4), "step_s": round(res.seconds / steps, 5)}

    from borealis_eval.tracking import RunLogger, TrackingConfig, experiment_id, preflight

    with tempfile.TemporaryDirectory() as tmp:
        tc = TrackingConfig(f"sqlite:///{Path(tmp) / 'mlruns.db'}", Path(tmp, "art").as_uri())
        t = time.perf_counter()
        client = preflight(tc)
        exp = experiment_id(client, tc, "bench_tracking", "tracking overhead benchmark")
        store_setup = time.perf_counter() - t
        t = time.perf_counter()
        run = RunLogger.start(client, exp, "variant", {"role": "variant"})
        start = time.perf_counter() - t
        run.params(flatten(cfg.model_dump(mode="json")))
        res = train(model, exs, cfg.train, cfg.seed, log=run.metrics, progress=False)
        t = time.perf_counter()
        run.metrics({"train/first_loss": res.first_loss, "train/last_loss": res.last_loss,
                     "train/seconds": res.seconds})
        run.flush()
        end = time.perf_counter() - t
        t = time.perf_counter()  # artifacts as the recipe stores them (not counted in the share)
        from safetensors.torch import save_file

        path = Path(tmp) / "trainable.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}, str(path))
        run.artifact_file(path, "weights")
        model.tok.save_pretrained(Path(tmp) / "tokenizer")
        client.log_artifacts(run.run_id, str(Path(tmp) / "tokenizer"), "tokenizer")
        artifacts = time.perf_counter() - t
        weights_mb = path.stat().st_size / 2**20
        t = time.perf_counter()
        run.end("FINISHED")
        end += time.perf_counter() - t
        # log_seconds covers params + metric flushes; end() flushes the tail and closes the run
        tracking = start + end + run.log_seconds
        n_points = len(client.get_metric_history(run.run_id, "train/loss"))
    return {**out, "train_seconds": round(res.seconds, 4), "step_s": round(res.seconds / steps, 5),
            "tracking_seconds": round(tracking, 4), "run_start_s": round(start, 4), "run_end_s": round(end, 4),
            "params_and_flush_s": round(run.log_seconds, 4), "store_setup_s": round(store_setup, 3),
            "loss_points_logged": n_points, "share": tracking / res.seconds, "artifacts_s": round(artifacts, 4),
            "weights_mb": round(weights_mb, 2)}


def run(quick: bool = False) -> dict:
    from benchmarks.common import run_side

    p = dict(steps=6, batch_size=4, n_clips=16) if quick else dict(steps=60, batch_size=16, n_clips=256)
    plain = run_side(NAME, "train", {**p, "mlflow": False})
    logged = run_side(NAME, "train", {**p, "mlflow": True})
    share = logged["share"]
    profile_steps = 300  # ablations/cpu/text_ratio.yaml train.steps
    share_profile = logged["tracking_seconds"] / (profile_steps * logged["step_s"])
    by_diff = (logged["train_seconds"] - plain["train_seconds"]) / plain["train_seconds"]
    return {
        "ratio": share, "ratio_label": "MLflow seconds / training seconds (lower is better)",
        "target": TARGET, "met": share < TARGET, "lower_is_better": True,
        "share_at_profile_steps": share_profile,
        "train_slowdown_by_difference": by_diff,
        "sides": {"no_logging": plain, "mlflow_sqlite": logged},
        "summary": f"{logged['tracking_seconds']:.3f} s tracking over {logged['train_seconds']:.2f} s training "
                   f"({p['steps']} steps) = {share:.2%}; at the profile's {profile_steps} steps {share_profile:.2%}; "
                   f"store creation {logged['store_setup_s']:.2f} s once per store; weights + tokenizer artifacts "
                   f"{logged['artifacts_s']:.2f} s ({logged['weights_mb']:.0f} MB)",
    }
