"""`borealis-eval evaluate`: score a trained variant or any Whisper model outside a sweep.

A variant is rebuilt from its MLflow logged model alone (resolved config, tokenizer, trained
weights; a run from before logged models from its run artifacts),
so a model trained last month scores on today's eval sets under today's protocol; raw decodes
come from the decode cache when the weights and sets are unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from borealis_eval.config import ExperimentConfig, load_eval_scope
from borealis_eval.data.features import FeatureCache, FeatureStore
from borealis_eval.decode import evaluate_baseline, evaluate_speech_lm, weights_id
from borealis_eval.errors import UsageError
from borealis_eval.evaluate.runner import SetResult
from borealis_eval.logged_model import download_variant, is_variant_ref, load_folder
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import SpeechLM
from borealis_eval.resources import Resources, device, load_eval_data
from borealis_eval.tracking import TrackingConfig, preflight


def load_variant(ref: str, tracking_uri: str | None = None, device: str | torch.device = "cpu"
                 ) -> tuple[ExperimentConfig, FrozenWhisperEncoder, SpeechLM, str]:
    """Rebuild a trained variant from the store: `run:<id>`, `model:<id>` or a `models:/` URI
    (logged_model.py): resolved config, tokenizer, trained weights, and their identity."""
    client = preflight(TrackingConfig.load(tracking_uri=tracking_uri))
    with tempfile.TemporaryDirectory(prefix="borealis-model-") as tmp:  # everything is in memory once loaded
        cfg, encoder, model = load_folder(download_variant(ref, client, Path(tmp)), device, ref)
    return cfg, encoder, model, weights_id(model)


def load_variant_from_run(run_id: str, tracking_uri: str | None = None, device: str | torch.device = "cpu"
                          ) -> tuple[ExperimentConfig, FrozenWhisperEncoder, SpeechLM, str]:
    """`load_variant("run:<run_id>")`: the run's logged model, or an older run's artifacts."""
    return load_variant(f"run:{run_id}", tracking_uri, device)


def evaluate_model(model: str, ablation: str | Path, sets: list[str] | None = None,
                   tracking_uri: str | None = None, overrides: dict | None = None) -> list[SetResult]:
    """Score a trained variant (`run:<id>`, `model:<id>`, `models:/...`) or a Whisper model reference
    on an ablation's eval sets (only its eval section is read: `load_eval_scope`)."""
    cfg = load_eval_scope(ablation, overrides)
    if sets:
        unknown = set(sets) - {s.name for s in cfg.eval.sets}
        if unknown:
            raise UsageError(f"unknown eval set(s) {sorted(unknown)}; {ablation} has {[s.name for s in cfg.eval.sets]}")
        cfg = cfg.model_copy(deep=True)
        cfg.eval.sets = [s for s in cfg.eval.sets if s.name in sets]
    dev = device()
    if is_variant_ref(model):
        trained, encoder, lm, model_id = load_variant(model, tracking_uri, dev)
        # the variant as trained, scored under this file's eval section
        cfg = trained.model_copy(update={"eval": cfg.eval, "data": trained.data.model_copy(
            update={"max_bad_share": cfg.data.max_bad_share})})
        cache = FeatureCache(encoder.identity.key)
        res = Resources(cfg, dev, [], [], [], encoder, cache, FeatureStore(cache))
        load_eval_data(res, cfg)
        return evaluate_speech_lm(lm, res, cfg, model_id=model_id)
    from borealis_eval.models.refs import check_available

    check_available(model)
    res = Resources(cfg, dev, [], [], [], None, None, None)  # type: ignore[arg-type] - Whisper needs only waves
    load_eval_data(res, cfg, encode=False)  # type: ignore[arg-type] - scoring reads only eval and data limits
    return evaluate_baseline(res, cfg, ref=model)  # type: ignore[arg-type]
