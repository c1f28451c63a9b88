"""A trained variant as an MLflow logged model: written by the recipe, found and loaded by `evaluate`.

The model folder holds only what training changed plus what rebuilds the rest:
``weights/trainable.safetensors`` (adapter, and LoRA or LLM weights when trained),
``tokenizer/``, ``config/resolved.yaml`` (the frozen encoder and the base LLM are rebuilt from
their references) and an ``MLmodel`` with two flavours: ``borealis_speech_lm`` (what `evaluate`
reads) and ``python_function``, so ``mlflow.pyfunc.load_model("models:/<model id>")`` transcribes
audio too. The variant's axes are the model's params and its eval metrics are attached per
dataset, so MLflow's model views compare variants.

References `evaluate` accepts: ``run:<run id>`` (the run's logged model; runs written before
logged models keep the same files as run artifacts), ``model:<model id>``, ``models:/<model id>``,
``models:/<registered name>/<version>`` and ``models:/<registered name>@<alias>``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from borealis_eval import records
from borealis_eval.errors import RunRecordError, UsageError

if TYPE_CHECKING:
    import torch
    from mlflow.tracking import MlflowClient

    from borealis_eval.config import ExperimentConfig, Variant
    from borealis_eval.data.lineage import DatasetRef
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import SpeechLM
    from borealis_eval.tracking import RunLogger

VARIANT_PREFIXES = ("run:", "model:", "models:/")
WEIGHTS = f"{records.WEIGHTS_DIR}/{records.WEIGHTS_FILE}"


def is_variant_ref(ref: str) -> bool:
    return ref.startswith(VARIANT_PREFIXES)


def model_name(variant: str) -> str:
    """A variant's name as a logged-model name, which MLflow forbids / : . % " ' in
    ('text_fraction=0.25' -> 'text_fraction=0_25'; the exact name stays in the model's tags)."""
    return re.sub(r"[/:.%\"']", "_", variant)


# ------------------------------------------------------------------ writing
def write_model_folder(folder: Path, cfg: ExperimentConfig, model: SpeechLM, tokenizer, run_id: str) -> Path:
    """The trained weights, the tokenizer, the resolved config and an MLmodel, in `folder`."""
    import mlflow.pyfunc
    from mlflow.models import Model
    from safetensors.torch import save_file

    (folder / records.WEIGHTS_DIR).mkdir(parents=True, exist_ok=True)
    save_file({k: t.detach().cpu().contiguous() for k, t in model.trainable_state_dict().items()},
              str(folder / WEIGHTS))
    tokenizer.save_pretrained(folder / records.TOKENIZER_DIR)
    (folder / records.RESOLVED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (folder / records.RESOLVED_CONFIG).write_text(
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
    meta = Model(run_id=run_id)
    meta.add_flavor(records.MODEL_FLAVOR, weights=WEIGHTS, tokenizer=records.TOKENIZER_DIR,
                    config=records.RESOLVED_CONFIG, encoder=cfg.model.encoder.ref, llm=cfg.model.llm.ref)
    mlflow.pyfunc.add_to_model(meta, loader_module=__name__)
    meta.save(str(folder / "MLmodel"))
    return folder


def metric_datasets(keys: list[str], datasets: list[DatasetRef]) -> dict[str, DatasetRef]:
    """The run's eval metrics (set metrics, text-skill scores) and the dataset each one scores."""
    from borealis_eval.data.lineage import EVALUATION

    by_name = {d.name: d for d in datasets if d.context == EVALUATION}
    out = {}
    for key in keys:
        family, column = records.split_metric(key)
        if family and column in by_name and not family.startswith(("train", "data", "system")):
            out[key] = by_name[column]
    return out


def log_variant_model(run: RunLogger, v: Variant, model: SpeechLM, tokenizer, datasets: list[DatasetRef]) -> str:
    """Log a trained variant as its run's logged model; returns the model id."""
    params = {**records.variant_identity(v),
              records.TRAINABLE_PARAMS: sum(p.numel() for p in model.parameters() if p.requires_grad)}
    tags = {records.VARIANT_NAME: v.name, records.CONFIG_HASH: v.config_hash}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model_folder(Path(tmp), v.config, model, tokenizer, run.run_id)
        return run.log_model(model_name(v.name), folder, params, tags, records.MODEL_TYPE,
                             metric_datasets(sorted(run.latest), datasets))


# ------------------------------------------------------------------ finding
def _client_download(client: MlflowClient, uri: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=client.tracking_uri))


def model_id_of(ref: str, client: MlflowClient) -> str | None:
    """The logged model a reference names (None: a run without one, i.e. written before logged models)."""
    if ref.startswith("model:"):
        return ref.removeprefix("model:")
    if ref.startswith("run:"):
        outputs = client.get_run(ref.removeprefix("run:")).outputs
        models = outputs.model_outputs if outputs else []
        return models[-1].model_id if models else None
    path = ref.removeprefix("models:/")
    if "@" in path:
        name, alias = path.rsplit("@", 1)
        return _version_model_id(client.get_model_version_by_alias(name, alias))
    if "/" in path:
        name, version = path.split("/", 1)
        return _version_model_id(client.get_model_version(name, version))
    return path


def _version_model_id(mv) -> str:
    """A registered version's logged model: its model_id, or (the sqlite registry does not keep
    that field) its source `models:/<model id>`."""
    if mv.model_id:
        return mv.model_id
    if mv.source.startswith("models:/") and "/" not in mv.source.removeprefix("models:/"):
        return mv.source.removeprefix("models:/")
    raise RunRecordError(f"registered model {mv.name} version {mv.version} has no logged model (source {mv.source})")


def download_variant(ref: str, client: MlflowClient, dst: Path) -> Path:
    """A folder with config/resolved.yaml, weights/ and tokenizer/ for `ref` (see the module docstring)."""
    if not is_variant_ref(ref):
        raise UsageError(f"{ref}: not a trained variant (expected run:<id>, model:<id> or models:/...)")
    try:
        model_id = model_id_of(ref, client)
        if model_id is not None:
            return _client_download(client, client.get_logged_model(model_id).artifact_location, dst / "model")
        run_id = ref.removeprefix("run:")  # a run from before logged models: the same files as run artifacts
        for path in (records.RESOLVED_CONFIG, WEIGHTS, records.TOKENIZER_DIR):  # each into its own place
            (dst / path).parent.mkdir(parents=True, exist_ok=True)
            client.download_artifacts(run_id, path, str((dst / path).parent))
        return dst
    except Exception as e:  # noqa: BLE001 - mlflow raises several types for a missing run, model or artifact
        raise RunRecordError(f"{ref}: not a finished variant with config, weights and tokenizer "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


# ------------------------------------------------------------------ loading
def load_folder(folder: Path, device: str | torch.device = "cpu", what: str = ""
                ) -> tuple[ExperimentConfig, FrozenWhisperEncoder, SpeechLM]:
    """Rebuild a variant from a model folder (or an old run's artifacts): config, encoder, trained weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from borealis_eval.config import ExperimentConfig
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import SpeechLM

    what = what or str(folder)
    cfg = ExperimentConfig.model_validate(yaml.safe_load((folder / records.RESOLVED_CONFIG).read_text(encoding="utf-8")))
    encoder = FrozenWhisperEncoder(cfg.model.encoder, device=device)
    model = SpeechLM.from_config(cfg.model, encoder.dim, AutoTokenizer.from_pretrained(folder / records.TOKENIZER_DIR),
                                 device=device)
    state = load_file(str(folder / WEIGHTS))
    _, unexpected = model.load_state_dict(state, strict=False)
    trainable = set(model.trainable_state_dict())
    if unexpected or (trainable - set(state)):
        raise RunRecordError(f"{what}: weights do not fit the config (missing "
                             f"{sorted(trainable - set(state))[:3]}, unexpected {unexpected[:3]})")
    return cfg, encoder, model.to(device).eval()


class SpeechLMTranscriber:
    """The python_function flavour: `predict(audio)` -> transcripts. `audio` is a list (or a
    DataFrame's ``audio`` column) of file paths or 16 kHz float waves; long audio is decoded in
    the config's ``eval.window_seconds`` windows, as `evaluate` does."""

    def __init__(self, cfg: ExperimentConfig, encoder: FrozenWhisperEncoder, model: SpeechLM):
        self.cfg, self.encoder, self.model = cfg, encoder, model

    def predict(self, model_input, params: dict | None = None) -> list[str]:
        import torch

        from borealis_eval.audio import ENCODER_FRAMES_PER_SECOND, windows
        from borealis_eval.data.manifest import load_audio
        from borealis_eval.decode import token_cap
        from borealis_eval.models.speech_lm import Example

        clips = model_input["audio"] if hasattr(model_input, "columns") else model_input
        out = []
        for clip in list(clips):
            wave = load_audio(clip) if isinstance(clip, (str, os.PathLike)) else np.asarray(clip, dtype=np.float32)
            parts = windows(wave, self.cfg.eval.window_seconds)
            # fp16 round trip: the same features the feature cache gives `evaluate`
            feats = [f.to(torch.float16).float() for f in self.encoder.encode_many(parts)]
            if self.cfg.eval.long_form == "concat":  # every window in one prompt
                whole = torch.cat(feats)
                cap = token_cap(self.cfg, whole.shape[0] / ENCODER_FRAMES_PER_SECOND, len(parts))
                out += self.model.generate([Example(answer="", features=whole.to(self.model_device))], cap,
                                           self.cfg.eval.num_beams)
                continue
            seconds = max(f.shape[0] for f in feats) / ENCODER_FRAMES_PER_SECOND
            hyps = self.model.generate([Example(answer="", features=f.to(self.model_device)) for f in feats],
                                       token_cap(self.cfg, seconds), self.cfg.eval.num_beams)
            out.append(" ".join(h for h in hyps if h))
        return out

    @property
    def model_device(self):
        return next(self.model.parameters()).device


def _load_pyfunc(path: str) -> SpeechLMTranscriber:
    """MLflow's python_function entry point (`mlflow.pyfunc.load_model`)."""
    return SpeechLMTranscriber(*load_folder(Path(path)))


# ------------------------------------------------------------------ the model registry
SELECTION_RULE = "the lowest mean WER over the eval sets, among the study's finished variants (the report's headline)"


def register_best(client: MlflowClient, parent_run_id: str, name: str):
    """Register the best variant of a finished study as a version of `name`; its description is the
    selection rule, the parent's description (the headline) and where the report is."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.`{records.PARENT_RUN}` = '{parent_run_id}' and tags.{records.ROLE} = "
                              f"'{records.VARIANT}' and attributes.status = 'FINISHED'")
    scored = []
    for r in runs:
        wers = {col: v for k, v in r.data.metrics.items() for fam, col in [records.split_metric(k)] if fam == "wer"}
        if wers:
            scored.append((sum(wers.values()) / len(wers), r, sorted(wers)))
    if not scored:
        raise RunRecordError(f"study {parent_run_id}: no finished variant with WER metrics to register")
    mean, best, sets = min(scored, key=lambda t: t[0])
    model_id = model_id_of(f"run:{best.info.run_id}", client)
    if model_id is None:
        raise RunRecordError(f"run {best.info.run_id}: the best variant has no logged model (logged before this "
                             "version of borealis-eval); register its weights by hand")
    variant = best.data.tags.get(records.VARIANT_NAME, best.info.run_name)
    description = (f"Selected by rule: {SELECTION_RULE}; eval sets {', '.join(sets)}.\n\n"
                   f"Best: {variant} (mean WER {mean * 100:.1f}%), run {best.info.run_id}, "
                   f"study run {parent_run_id}.\n\n{parent.data.tags.get(records.NOTE, '').split(chr(10))[0]}\n\n"
                   f"Report: runs:/{parent_run_id}/{records.REPORT_DIR}/report.html")
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=f"Best variants of borealis-eval studies ({SELECTION_RULE}).")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    # the registry resolves a models:/ source through the global tracking URI, not this client's
    with _use_tracking_uri(client.tracking_uri):
        return client.create_model_version(
            name, f"models:/{model_id}", run_id=best.info.run_id, model_id=model_id, description=description,
            tags={records.VARIANT_NAME: variant, records.STUDY: parent.data.tags.get(records.STUDY, ""),
                  records.SELECTION_RULE: SELECTION_RULE})
