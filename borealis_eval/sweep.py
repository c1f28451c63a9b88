"""Grid sweep: shared resources once, then the variant runner once per grid cell.

Order of work: validate everything and check the tracking store and model references (fail
before any training), load data, encode every needed clip once through the feature cache,
score the plain-Whisper baseline, then train + evaluate each variant in its own nested MLflow
run. A variant that fails is marked FAILED with the reason and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from borealis_eval.config import (Ablation, ExperimentConfig, LLMConfig, TextPool, TokenizerTrain, Variant, flatten,
                                  load_ablation)
from borealis_eval.data.features import FeatureCache, audio_hash, encode_cached
from borealis_eval.data.manifest import AudioError
from borealis_eval.data.mixer import mix
from borealis_eval.data.sources import AudioItem, TextItem, load_audio_set, load_text_pool
from borealis_eval.evaluate.runner import (DecodeCache, SetResult, decode_set, metrics_for_mlflow, paired_rows, score_set, set_language,
                                          utt_scores, windows)
from borealis_eval.evaluate.textskill import text_ability
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.models.tokenizer import load_tokenizer, train_bpe_tokenizer
from borealis_eval.tracking import RunLogger, TrackingConfig, experiment_id, preflight
from borealis_eval.train import TrainingDiverged, train

log = logging.getLogger("borealis_eval")
SAMPLE_RATE = 16_000


class BadDataError(RuntimeError):
    pass


@dataclass
class EvalData:
    name: str
    language: str
    items: list[AudioItem]
    waves: dict[str, np.ndarray]

    @property
    def audio_keys(self) -> list[str]:
        return [audio_hash(self.waves[it.id]) for it in self.items]

    @property
    def durations(self) -> dict[str, float]:
        return {k: len(w) / SAMPLE_RATE for k, w in self.waves.items()}


@dataclass
class Resources:
    """Everything the variants of one sweep share: data, encoder, cached features, tokenizers."""

    base: ExperimentConfig
    device: torch.device
    train_items: list[AudioItem]
    text_items: list[TextItem]
    eval_sets: list[EvalData]
    encoder: FrozenWhisperEncoder
    cache: FeatureCache
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # item id (or id#window) -> fp16
    bad_items: list[dict] = field(default_factory=list)
    text_sets: list[tuple[str, list[TextItem]]] = field(default_factory=list)
    decodes: DecodeCache = field(default_factory=DecodeCache)
    tokenizers: dict[str, object] = field(default_factory=dict)

    def tokenizer_for(self, llm: LLMConfig):
        key = json.dumps(llm.tokenizer.model_dump() if isinstance(llm.tokenizer, TokenizerTrain) else llm.tokenizer or llm.ref)
        if key not in self.tokenizers:
            if isinstance(llm.tokenizer, TokenizerTrain):
                texts = [it.text for it in self.train_items]
                texts += [t for it in self.text_items for t in (it.instruction, it.answer)]
                self.tokenizers[key] = train_bpe_tokenizer(texts, llm.tokenizer.vocab_size)
            else:
                self.tokenizers[key] = load_tokenizer(llm.tokenizer or llm.ref)
        return self.tokenizers[key]


def _load_waves(items: list[AudioItem], bad: list[dict], set_name: str) -> dict[str, np.ndarray]:
    waves = {}
    for it in items:
        try:
            w = it.load()
            if w.size == 0:
                raise AudioError(f"{it.id}: empty audio")
            waves[it.id] = w
        except (AudioError, OSError, RuntimeError) as e:
            bad.append({"set": set_name, "id": it.id, "reason": str(e)})
    return waves


def _check_bad(bad: list[dict], total: int, max_share: float) -> None:
    if total and len(bad) / total > max_share:
        eg = "; ".join(f"{b['id']}: {b['reason']}" for b in bad[:3])
        raise BadDataError(f"{len(bad)} of {total} audio items could not be used (> {max_share:.0%}): {eg}")


def prepare_resources(variants: list[Variant], max_bad_share: float = 0.05) -> Resources:
    base = variants[0].config
    for v in variants[1:]:
        if v.config.model.encoder != base.model.encoder or v.config.data.train_sets != base.data.train_sets:
            raise ValueError("variants of one sweep must share the encoder and training sets (grid over them "
                             "is not supported yet); split the study into several ablation files")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base.train.threads:
        torch.set_num_threads(base.train.threads)
    bad: list[dict] = []
    train_items = [it for s in base.data.train_sets for it in load_audio_set(s)]
    pool = next((v.config.data.text_pool for v in variants if v.config.data.text_pool), None)
    text_items = load_text_pool(pool) if pool else []
    encoder = FrozenWhisperEncoder(base.model.encoder, device=device)
    cache = FeatureCache(encoder.identity.key)
    res = Resources(base, device, train_items, text_items, [], encoder, cache, bad_items=bad)

    # Only clips that some variant's mix draws are loaded and encoded.
    needed: dict[str, AudioItem] = {}
    for v in variants:
        for ex in mix_for(v, res).examples:
            if isinstance(ex, AudioItem):
                needed[ex.id] = ex
    ids = sorted(needed)
    for s in range(0, len(ids), 512):  # bounded memory: waves of one chunk at a time
        chunk = [needed[i] for i in ids[s : s + 512]]
        waves = _load_waves(chunk, bad, "train")
        res.features.update(_half(encode_cached(encoder, waves, cache, base.eval.batch_size, "encoding train")))
    n_train_bad = sum(b["set"] == "train" for b in bad)
    _check_bad([b for b in bad if b["set"] == "train"], len(ids), max_bad_share)
    if n_train_bad:
        res.train_items = [it for it in train_items if it.id in res.features or it.id not in needed]

    load_eval_data(res, base, max_bad_share)
    return res


def load_eval_data(res: Resources, base: ExperimentConfig, max_bad_share: float = 0.05, encode: bool = True) -> None:
    """Eval sets: waves kept for the baseline, window features encoded once through the cache."""
    bad, encoder, cache = res.bad_items, res.encoder, res.cache
    for spec in base.eval.sets:
        items = load_audio_set(spec)
        if not items:
            raise BadDataError(f"eval set '{spec.name}' is empty")
        waves = _load_waves(items, bad, spec.name)
        _check_bad([b for b in bad if b["set"] == spec.name], len(items), max_bad_share)
        items = [it for it in items if it.id in waves]
        res.eval_sets.append(EvalData(spec.name, spec.language or set_language(items), items, waves))
        if not encode:
            continue
        win = {f"{i}#{j}": w for i, wave in waves.items()
               for j, w in enumerate(windows(wave, base.eval.window_seconds))}
        res.features.update(_half(encode_cached(encoder, win, cache, base.eval.batch_size, f"encoding {spec.name}")))
    for ts in base.eval.text_sets:
        res.text_sets.append((ts.name, load_text_pool(TextPool(source=ts.source, max_samples=ts.max_samples))))


def _half(feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float16) for k, v in feats.items()}


def mix_for(v: Variant, res: Resources):
    d = v.config.data
    return mix(res.train_items, res.text_items, d.language_mix, d.text_fraction, d.num_examples, v.config.seed)


# ------------------------------------------------------------------ evaluation
def _decode_cached(res: Resources, es: EvalData, model_id: str | None, params: dict, decode) -> tuple[list[dict], float]:
    if model_id is None:
        return decode()
    key = res.decodes.key(model_id, es.name, es.items, es.audio_keys, params)
    hit = res.decodes.get(key)
    if hit is not None:
        return hit
    records, secs = decode()
    res.decodes.put(key, records, secs)
    return records, secs


def _decode_params(cfg: ExperimentConfig) -> dict:
    e = cfg.eval
    return {"max_new_tokens": e.max_new_tokens, "tps": e.max_tokens_per_second, "beams": e.num_beams,
            "window": e.window_seconds}


def weights_id(model: torch.nn.Module) -> str:
    """Identity of trained weights (for the decode cache): hash of the trainable tensors."""
    h = hashlib.sha1()
    for k, t in sorted(model.trainable_state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def evaluate_speech_lm(model: SpeechLM, res: Resources, cfg: ExperimentConfig, model_id: str | None = None) -> list[SetResult]:
    results = []
    for es in res.eval_sets:
        n_win = {i: sum(1 for k in _window_keys(res, i)) for i in es.waves}

        def transcribe(ids: list[str], language: str, es=es, n_win=n_win) -> list[str]:
            keys = [(i, f"{i}#{j}") for i in ids for j in range(n_win[i])]
            exs = [Example(answer="", features=res.features[k].float().to(res.device), id=k) for _, k in keys]
            longest = max(x.features.shape[0] for x in exs) / 50  # encoder frames -> seconds
            hyps = model.generate(exs, token_cap(cfg, longest), cfg.eval.num_beams)
            joined: dict[str, list[str]] = {i: [] for i in ids}
            for (i, _), h in zip(keys, hyps):
                joined[i].append(h)
            return [" ".join(x for x in joined[i] if x) for i in ids]

        records, secs = _decode_cached(res, es, model_id, _decode_params(cfg), lambda es=es, fn=transcribe: decode_set(
            es.items, es.durations, fn, es.language, cfg.eval.batch_size, f"decoding {es.name}"))
        results.append(score_set(es.name, records, es.language, secs, cfg.eval.bootstrap))
    return results


def evaluate_text_skill(model: SpeechLM, res: Resources, cfg: ExperimentConfig, run: RunLogger) -> dict[str, float]:
    """Answer held-out text-only instructions; chrF and exact match per text set."""
    out = {}
    for name, items in res.text_sets:
        preds: list[str] = []
        for s in range(0, len(items), cfg.eval.batch_size):
            chunk = items[s : s + cfg.eval.batch_size]
            preds += model.generate([Example(answer="", instruction=it.instruction, id=it.id) for it in chunk],
                                    cfg.eval.max_new_tokens, cfg.eval.num_beams)
        records = [{"id": it.id, "instruction": it.instruction, "answer": it.answer, "prediction": p}
                   for it, p in zip(items, preds)]
        score = text_ability(records)
        out.update({f"text_chrf/{name}": score["chrf"], f"text_exact/{name}": score["exact_match"]})
        run.artifact_json_lines(records, f"predictions/text_{name}.jsonl")
    return out


def token_cap(cfg: ExperimentConfig, seconds: float) -> int:
    """New-token budget for audio of `seconds`: the runaway cap, never above max_new_tokens."""
    return min(cfg.eval.max_new_tokens, int(cfg.eval.max_tokens_per_second * seconds) + 16)


def _window_keys(res: Resources, item_id: str):
    j = 0
    while f"{item_id}#{j}" in res.features:
        yield f"{item_id}#{j}"
        j += 1


def evaluate_baseline(res: Resources, cfg: ExperimentConfig, ref: str | None = None) -> list[SetResult]:
    from borealis_eval.models.baseline import WhisperTranscriber

    ref = ref or cfg.eval.baseline.ref
    whisper = None
    results = []
    for es in res.eval_sets:
        def fn(ids: list[str], lang: str, es=es) -> list[str]:
            waves = [es.waves[i] for i in ids]
            longest = min(30.0, max(len(w) for w in waves) / SAMPLE_RATE)  # long-form: per 30 s segment
            nonlocal whisper
            whisper = whisper or WhisperTranscriber(ref, device=res.device)  # loaded only on a cache miss
            return whisper.transcribe(waves, lang, cfg.eval.num_beams, token_cap(cfg, longest))

        records, secs = _decode_cached(res, es, f"whisper:{ref}", _decode_params(cfg), lambda es=es, fn=fn: decode_set(
            es.items, es.durations, fn, es.language, cfg.eval.baseline.batch_size, f"baseline {es.name}"))
        results.append(score_set(es.name, records, es.language, secs, cfg.eval.bootstrap))
    return results


def _log_results(run: RunLogger, results: list[SetResult]) -> None:
    for r in results:
        run.metrics(metrics_for_mlflow(r))
        run.tags({f"normalizer/{r.name}": r.normalizer})
        run.artifact_json_lines(r.records, f"predictions/{r.name}.jsonl")
    run.flush()


# ------------------------------------------------------------------ variant runner
def run_variant(v: Variant, res: Resources, run: RunLogger, progress: bool = True) -> list[SetResult]:
    cfg = v.config
    m = mix_for(v, res)
    run.metrics({f"data/{k}": x for k, x in m.stats.items()})
    tok = res.tokenizer_for(cfg.model.llm)
    torch.manual_seed(cfg.seed)
    model = SpeechLM.from_config(cfg.model, res.encoder.dim, tok).to(res.device)
    examples = [
        Example(answer=e.text, features=res.features[e.id], id=e.id) if isinstance(e, AudioItem)
        else Example(answer=e.answer, instruction=e.instruction, id=e.id)
        for e in m.examples if not isinstance(e, AudioItem) or e.id in res.features
    ]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.params({"model.trainable_params": n_params})
    result = train(model, examples, cfg.train, cfg.seed, log=run.metrics, progress=progress)
    run.metrics({"train/first_loss": result.first_loss, "train/last_loss": result.last_loss,
                 "train/seconds": result.seconds, "train/steps_per_second": result.steps / result.seconds})
    results = evaluate_speech_lm(model, res, cfg, model_id=weights_id(model))
    _log_results(run, results)
    if res.text_sets:
        run.metrics(evaluate_text_skill(model, res, cfg, run))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trainable.safetensors"
        save_file({k: t.detach().cpu().contiguous() for k, t in model.trainable_state_dict().items()}, str(path))
        run.artifact_file(path, "weights")
        tok.save_pretrained(Path(tmp) / "tokenizer")
        run.client.log_artifacts(run.run_id, str(Path(tmp) / "tokenizer"), "tokenizer")
    return results


def variant_tags(v: Variant, role: str = "variant") -> dict[str, str]:
    tags = {"role": role, "variant": v.name, "config_hash": v.config_hash, "language_mix": v.language_mix_label,
            "text_fraction": f"{v.config.data.text_fraction:g}", "seed": str(v.config.seed)}
    tags.update({f"axis.{k}": (json.dumps(x) if isinstance(x, (dict, list)) else str(x)) for k, x in v.axes.items()})
    return tags


@dataclass
class SweepResult:
    experiment: str
    parent_run_id: str
    finished: list[str]
    failed: dict[str, str]
    seconds: float


def run_sweep(path: str | Path, tracking_uri: str | None = None, only: list[str] | None = None,
              progress: bool = True) -> SweepResult:
    t0 = time.perf_counter()
    abl, variants = load_ablation(path)
    if only:
        variants = [v for v in variants if v.name in only]
        if not variants:
            raise ValueError(f"--only matched no variant (names: see `sweep {path} --dry-run`)")
    tc = TrackingConfig.load(tracking_uri=tracking_uri)
    client = preflight(tc)
    check_model_refs(variants)
    exp_id = experiment_id(client, tc, abl.name, abl.description)
    parent = RunLogger.start(client, exp_id, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                             {"role": "parent", "borealis.ablation": str(Path(path)), "borealis.description": abl.description,
                              "mlflow.note.content": abl.description})
    parent.artifact_text(Path(path).read_text(encoding="utf-8"), "ablation/" + Path(path).name)
    finished, failed = [], {}
    systems: dict[str, dict[str, list]] = {}  # eval set -> system name -> per-utterance scores
    try:
        res = prepare_resources(variants)
        if res.bad_items:
            parent.artifact_json_lines(res.bad_items, "data/bad_items.jsonl")
        parent.metrics({"data/bad_items": len(res.bad_items), "data/train_items": len(res.train_items),
                        "data/text_items": len(res.text_items), "cache/encoded": res.cache.stats.encoded,
                        "cache/hits": res.cache.stats.hits})
        base_cfg = variants[0].config
        if base_cfg.eval.baseline.enabled:
            run = RunLogger.start(client, exp_id, "baseline-whisper",
                                  {"role": "baseline", "variant": "baseline", "model": base_cfg.eval.baseline.ref}, parent.run_id)
            try:
                run.params({"baseline.ref": base_cfg.eval.baseline.ref, "eval.num_beams": base_cfg.eval.num_beams})
                base_results = evaluate_baseline(res, base_cfg)
                _log_results(run, base_results)
                for r in base_results:
                    systems.setdefault(r.name, {})["baseline"] = utt_scores(r.records, r.language)
                run.end("FINISHED")
            except Exception as e:
                _fail(run, e)
                failed["baseline"] = str(e)
        for i, v in enumerate(variants):
            log.info("variant %d/%d: %s", i + 1, len(variants), v.name)
            run = RunLogger.start(client, exp_id, v.name, variant_tags(v), parent.run_id)
            try:
                run.params(flatten(v.config.model_dump(mode="json")))
                run.artifact_text(yaml.safe_dump(v.config.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
                                  "config/resolved.yaml")
                results = run_variant(v, res, run, progress)
                run.metrics(_paired_vs_baseline(v.name, results, systems, base_cfg.eval.bootstrap))
                run.end("FINISHED")
                finished.append(v.name)
                log.info("  %s", "  ".join(f"wer/{r.name}={r.metrics['wer']:.3f}" for r in results))
            except (Exception, KeyboardInterrupt) as e:
                _fail(run, e)
                failed[v.name] = str(e)
                if isinstance(e, KeyboardInterrupt):
                    raise
        for set_name, by_system in systems.items():
            if len(by_system) > 1:
                parent.artifact_json_lines(paired_rows(by_system, base_cfg.eval.bootstrap), f"paired/{set_name}.jsonl")
        parent.metrics({"sweep/finished": len(finished), "sweep/failed": len(failed)})
        parent.end("FINISHED" if not failed else "FAILED")
    except BaseException as e:
        _fail(parent, e)
        raise
    return SweepResult(abl.name, parent.run_id, finished, failed, time.perf_counter() - t0)


def _paired_vs_baseline(name: str, results: list[SetResult], systems: dict[str, dict[str, list]],
                        n_boot: int) -> dict[str, float]:
    """Record the variant's per-utterance scores; ΔWER and p-value against the baseline."""
    out = {}
    for r in results:
        by_system = systems.setdefault(r.name, {})
        by_system[name] = utt_scores(r.records, r.language)
        if "baseline" in by_system:
            row = paired_rows({name: by_system[name], "baseline": by_system["baseline"]}, n_boot)[0]
            out[f"delta_wer_vs_baseline/{r.name}"] = row["delta_wer"]
            out[f"p_vs_baseline/{r.name}"] = row["p_value"]
    return out


def _fail(run: RunLogger, e: BaseException) -> None:
    status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
    extra = {}
    if isinstance(e, TrainingDiverged):
        extra = {"error.step": e.step, "error.batch_ids": ",".join(e.ids[:50])}
    try:
        run.tags({"error": f"{type(e).__name__}: {e}"[:5000], **extra})
        run.artifact_text("".join(traceback.format_exception(e)), "error.txt")
        run.end(status)
    except Exception:  # noqa: BLE001 - never mask the original error
        log.exception("could not record the failure in MLflow")


def check_model_refs(variants: list[Variant]) -> None:
    """Every model reference resolves (offline hub refs are in the local cache) before any work."""
    from borealis_eval.models.refs import check_available

    refs = set()
    for v in variants:
        m = v.config.model
        refs.update(r for r in (m.encoder.ref, m.llm.ref, m.llm.tokenizer if isinstance(m.llm.tokenizer, str) else None)
                    if r)
        if v.config.eval.baseline.enabled:
            refs.add(v.config.eval.baseline.ref)
    for r in sorted(refs):
        check_available(r)


def dry_run(path: str | Path) -> tuple[Ablation, list[dict]]:
    from borealis_eval.config import variants_table

    abl, variants = load_ablation(path)
    return abl, variants_table(variants)


# ------------------------------------------------------------------ evaluate outside a sweep
def load_variant_from_run(run_id: str, tracking_uri: str | None = None, device: str | torch.device = "cpu"
                          ) -> tuple[ExperimentConfig, FrozenWhisperEncoder, SpeechLM, str]:
    """Rebuild a trained variant from its MLflow run: resolved config, tokenizer, trained weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from borealis_eval.tracking import TrackingConfig

    tc = TrackingConfig.load(tracking_uri=tracking_uri)
    client = preflight(tc)
    tmp = Path(tempfile.mkdtemp(prefix="borealis-run-"))
    try:
        cfg_path = client.download_artifacts(run_id, "config/resolved.yaml", str(tmp))
        weights = client.download_artifacts(run_id, "weights/trainable.safetensors", str(tmp))
        tok_dir = client.download_artifacts(run_id, "tokenizer", str(tmp))
    except Exception as e:  # noqa: BLE001 - mlflow raises several types for a missing run/artifact
        raise ValueError(f"run {run_id}: not a finished variant run with config, weights and tokenizer ({e})") from None
    cfg = ExperimentConfig.model_validate(yaml.safe_load(Path(cfg_path).read_text(encoding="utf-8")))
    encoder = FrozenWhisperEncoder(cfg.model.encoder, device=device)
    model = SpeechLM.from_config(cfg.model, encoder.dim, AutoTokenizer.from_pretrained(tok_dir))
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = set(model.trainable_state_dict())
    if unexpected or (trainable - set(state)):
        raise ValueError(f"run {run_id}: weights do not fit the config (missing {sorted(trainable - set(state))[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return cfg, encoder, model.to(device).eval(), weights_id(model)


def evaluate_model(model: str, ablation: str | Path, sets: list[str] | None = None,
                   tracking_uri: str | None = None, progress: bool = True) -> list[SetResult]:
    """Score a trained variant (`run:<id>`) or a Whisper model reference on an ablation's eval sets."""
    _, variants = load_ablation(ablation)
    cfg = variants[0].config
    if sets:
        unknown = set(sets) - {s.name for s in cfg.eval.sets}
        if unknown:
            raise ValueError(f"unknown eval set(s) {sorted(unknown)}; {ablation} has {[s.name for s in cfg.eval.sets]}")
        cfg = cfg.model_copy(deep=True)
        cfg.eval.sets = [s for s in cfg.eval.sets if s.name in sets]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if model.startswith("run:"):
        _, encoder, lm, model_id = load_variant_from_run(model.removeprefix("run:"), tracking_uri, device)
        res = Resources(cfg, device, [], [], [], encoder, FeatureCache(encoder.identity.key))
        load_eval_data(res, cfg)
        return evaluate_speech_lm(lm, res, cfg, model_id=model_id)
    from borealis_eval.models.refs import check_available

    check_available(model)
    res = Resources(cfg, device, [], [], [], None, None)  # type: ignore[arg-type] - Whisper needs only waves
    load_eval_data(res, cfg, encode=False)
    return evaluate_baseline(res, cfg, ref=model)
