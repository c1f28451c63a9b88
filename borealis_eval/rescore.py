"""`borealis-eval evaluate`: score a trained variant or any Whisper model outside a sweep.

A variant is rebuilt from its MLflow run alone (resolved config, tokenizer, trained weights),
so a model trained last month scores on today's eval sets under today's protocol; raw decodes
come from the decode cache when the weights and sets are unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import yaml

from borealis_eval import records
from borealis_eval.config import ExperimentConfig, load_ablation
from borealis_eval.data.features import FeatureCache, FeatureStore
from borealis_eval.decode import evaluate_baseline, evaluate_speech_lm, weights_id
from borealis_eval.errors import RunRecordError, UsageError
from borealis_eval.evaluate.runner import SetResult
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import SpeechLM
from borealis_eval.resources import Resources, device, load_eval_data
from borealis_eval.tracking import TrackingConfig, preflight


def load_variant_from_run(run_id: str, tracking_uri: str | None = None, device: str | torch.device = "cpu"
                          ) -> tuple[ExperimentConfig, FrozenWhisperEncoder, SpeechLM, str]:
    """Rebuild a trained variant from its MLflow run: resolved config, tokenizer, trained weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    client = preflight(TrackingConfig.load(tracking_uri=tracking_uri))
    tmp = Path(tempfile.mkdtemp(prefix="borealis-run-"))
    try:
        cfg_path = client.download_artifacts(run_id, records.RESOLVED_CONFIG, str(tmp))
        weights = client.download_artifacts(run_id, f"{records.WEIGHTS_DIR}/{records.WEIGHTS_FILE}", str(tmp))
        tok_dir = client.download_artifacts(run_id, records.TOKENIZER_DIR, str(tmp))
    except Exception as e:  # noqa: BLE001 - mlflow raises several types for a missing run/artifact
        raise RunRecordError(f"run {run_id}: not a finished variant run with config, weights and tokenizer "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    cfg = ExperimentConfig.model_validate(yaml.safe_load(Path(cfg_path).read_text(encoding="utf-8")))
    encoder = FrozenWhisperEncoder(cfg.model.encoder, device=device)
    model = SpeechLM.from_config(cfg.model, encoder.dim, AutoTokenizer.from_pretrained(tok_dir), device=device)
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = set(model.trainable_state_dict())
    if unexpected or (trainable - set(state)):
        raise RunRecordError(f"run {run_id}: weights do not fit the config (missing "
                             f"{sorted(trainable - set(state))[:3]}, unexpected {unexpected[:3]})")
    return cfg, encoder, model.to(device).eval(), weights_id(model)


def evaluate_model(model: str, ablation: str | Path, sets: list[str] | None = None,
                   tracking_uri: str | None = None, overrides: dict | None = None) -> list[SetResult]:
    """Score a trained variant (`run:<id>`) or a Whisper model reference on an ablation's eval sets."""
    _, variants = load_ablation(ablation, overrides)
    cfg = variants[0].config
    if sets:
        unknown = set(sets) - {s.name for s in cfg.eval.sets}
        if unknown:
            raise UsageError(f"unknown eval set(s) {sorted(unknown)}; {ablation} has {[s.name for s in cfg.eval.sets]}")
        cfg = cfg.model_copy(deep=True)
        cfg.eval.sets = [s for s in cfg.eval.sets if s.name in sets]
    dev = device()
    if model.startswith("run:"):
        _, encoder, lm, model_id = load_variant_from_run(model.removeprefix("run:"), tracking_uri, dev)
        cache = FeatureCache(encoder.identity.key)
        res = Resources(cfg, dev, [], [], [], encoder, cache, FeatureStore(cache))
        load_eval_data(res, cfg)
        return evaluate_speech_lm(lm, res, cfg, model_id=model_id)
    from borealis_eval.models.refs import check_available

    check_available(model)
    res = Resources(cfg, dev, [], [], [], None, None, None)  # type: ignore[arg-type] - Whisper needs only waves
    load_eval_data(res, cfg, encode=False)
    return evaluate_baseline(res, cfg, ref=model)
