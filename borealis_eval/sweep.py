"""Grid sweep: shared resources once, then the variant runner once per grid cell.

Order of work: validate everything and check the tracking store and model references (fail
before any training), load data, encode every needed clip once through the feature cache,
score the plain-Whisper baseline, then train + evaluate each variant in its own nested MLflow
run. A variant that fails is marked FAILED with the reason and the others go on.

Scaling out and recovery: a sweep is a *study* recorded in a claims store (claims.py). Workers
on the same ablation and storage join the open study, share its parent run and claim variants
by config hash; a rerun after a crash joins it again, skips what finished and resumes what was
interrupted from its checkpoint. The variant runner (`execute_variant`) is shared with search.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from borealis_eval.claims import RECLAIMABLE_NOTE, Claim, ClaimStore, default_storage_url

from borealis_eval.config import (Ablation, ExperimentConfig, LLMConfig, TextPool, TokenizerTrain, Variant, flatten,
                                  load_ablation)
from borealis_eval.data.augment import Augmenter, noise_files
from borealis_eval.data.augment_batches import AugmentBatches
from borealis_eval.data.features import FeatureCache, audio_hash, encode_cached
from borealis_eval.data.mixer import mix
from borealis_eval.data.sources import (AudioItem, BadDataError, TextItem, check_bad, load_audio_set, load_text_pool,
                                        load_waves)
from borealis_eval.evaluate.runner import (DecodeCache, SetResult, decode_set, metrics_for_mlflow, paired_rows, score_set, set_language,
                                          utt_scores, windows)
from borealis_eval.evaluate.textskill import text_ability
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.models.tokenizer import load_tokenizer, train_bpe_tokenizer
from borealis_eval.tracking import RunLogger, StoreError, TrackingConfig, experiment_id, preflight
from borealis_eval.paths import cache_root
from borealis_eval.train import TrainingDiverged, TrainingInterrupted, TrainingOOM, is_oom, train

log = logging.getLogger("borealis_eval")
SAMPLE_RATE = 16_000


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


def prepare_resources(variants: list[Variant], all_train: bool = False) -> Resources:
    """Load and encode what the variants need; `all_train` encodes every training clip (searches,
    whose variants are not known in advance). Unusable clips and text rows are skipped and listed
    in `bad_items`; a set with more of them than `data.max_bad_share` stops the sweep here."""
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
    text_items = load_text_pool(pool, "text_pool", bad, base.data.max_bad_share) if pool else []
    encoder = FrozenWhisperEncoder(base.model.encoder, device=device)
    cache = FeatureCache(encoder.identity.key)
    res = Resources(base, device, train_items, text_items, [], encoder, cache, bad_items=bad)

    # Only clips that some variant's mix draws are loaded and encoded.
    needed: dict[str, AudioItem] = {it.id: it for it in train_items} if all_train else {}
    for v in variants if not all_train else []:
        for ex in mix_for(v, res).examples:
            if isinstance(ex, AudioItem):
                needed[ex.id] = ex
    ids = sorted(needed)
    for s in range(0, len(ids), 512):  # bounded memory: waves of one chunk at a time
        chunk = [needed[i] for i in ids[s : s + 512]]
        waves = load_waves(chunk, bad, "train")
        res.features.update(_half(encode_cached(encoder, waves, cache, base.eval.batch_size, "encoding train")))
    n_train_bad = sum(b["set"] == "train" for b in bad)
    check_bad(bad, "train", len(ids), base.data.max_bad_share)
    if n_train_bad:
        res.train_items = [it for it in train_items if it.id in res.features or it.id not in needed]

    load_eval_data(res, base)
    return res


def load_eval_data(res: Resources, base: ExperimentConfig, encode: bool = True) -> None:
    """Eval sets: waves kept for the baseline, window features encoded once through the cache."""
    bad, encoder, cache = res.bad_items, res.encoder, res.cache
    for spec in base.eval.sets:
        items = load_audio_set(spec)
        if not items:
            raise BadDataError(f"eval set '{spec.name}' is empty")
        waves = load_waves(items, bad, spec.name)
        check_bad(bad, spec.name, len(items), base.data.max_bad_share)
        items = [it for it in items if it.id in waves]
        res.eval_sets.append(EvalData(spec.name, spec.language or set_language(items), items, waves))
        if not encode:
            continue
        win = {f"{i}#{j}": w for i, wave in waves.items()
               for j, w in enumerate(windows(wave, base.eval.window_seconds))}
        res.features.update(_half(encode_cached(encoder, win, cache, base.eval.batch_size, f"encoding {spec.name}")))
    for ts in base.eval.text_sets:
        pool = TextPool(source=ts.source, max_samples=ts.max_samples)
        res.text_sets.append((ts.name, load_text_pool(pool, ts.name, bad, base.data.max_bad_share)))


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
            "window": e.window_seconds, "long_form": e.long_form}


def weights_id(model: torch.nn.Module) -> str:
    """Identity of trained weights (for the decode cache): hash of the trainable tensors."""
    h = hashlib.sha1()
    for k, t in sorted(model.trainable_state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def evaluate_speech_lm(model: SpeechLM, res: Resources, cfg: ExperimentConfig, model_id: str | None = None,
                       sets: list[str] | None = None) -> list[SetResult]:
    results = []
    for es in res.eval_sets:
        if sets is not None and es.name not in sets:
            continue
        n_win = {i: sum(1 for k in _window_keys(res, i)) for i in es.waves}

        def transcribe(ids: list[str], language: str, es=es, n_win=n_win) -> list[str]:
            if cfg.eval.long_form == "concat":  # every window's encoder output in one prompt, one decode
                exs = [Example(answer="", id=i, features=torch.cat(
                    [res.features[k] for k in _window_keys(res, i)]).float().to(res.device)) for i in ids]
                longest = max(x.features.shape[0] for x in exs) / 50  # encoder frames -> seconds
                cap = token_cap(cfg, longest, windows=max(n_win[i] for i in ids))
                return model.generate(exs, cap, cfg.eval.num_beams)
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


def token_cap(cfg: ExperimentConfig, seconds: float, windows: int = 1) -> int:
    """New-token budget for audio of `seconds`: the runaway cap, never above max_new_tokens per
    window (a concatenated long-form prompt of n windows gets n times the budget)."""
    return min(cfg.eval.max_new_tokens * windows, int(cfg.eval.max_tokens_per_second * seconds) + 16)


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
        item_lang = {it.id: it.language for it in es.items}

        def fn(ids: list[str], lang: str, es=es, item_lang=item_lang) -> list[str]:
            nonlocal whisper
            whisper = whisper or WhisperTranscriber(ref, device=res.device)  # loaded only on a cache miss
            out: dict[str, str] = {}
            for language in sorted({item_lang[i] for i in ids}):  # Whisper is told each clip's own language
                group = [i for i in ids if item_lang[i] == language]
                waves = [es.waves[i] for i in group]
                longest = min(30.0, max(len(w) for w in waves) / SAMPLE_RATE)  # long-form: per 30 s segment
                out.update(zip(group, whisper.transcribe(waves, language, cfg.eval.num_beams, token_cap(cfg, longest))))
            return [out[i] for i in ids]

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
@dataclass
class TrainOptions:
    """How the variant runner trains: checkpoints, stop requests, per-step hooks."""

    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    should_stop: Callable[[], str | None] | None = None
    on_step: Callable[[SpeechLM], Callable[[int], None]] | None = None  # model -> hook(step)


def run_variant(v: Variant, res: Resources, run: RunLogger, progress: bool = True,
                opts: TrainOptions | None = None) -> list[SetResult]:
    opts = opts or TrainOptions()
    cfg = v.config
    m = mix_for(v, res)
    run.metrics({f"data/{k}": x for k, x in m.stats.items()})
    tok = res.tokenizer_for(cfg.model.llm)
    torch.manual_seed(cfg.seed)
    model = SpeechLM.from_config(cfg.model, res.encoder.dim, tok, device=res.device).to(res.device)
    examples = [
        Example(answer=e.text, features=res.features[e.id], id=e.id) if isinstance(e, AudioItem)
        else Example(answer=e.answer, instruction=e.instruction, id=e.id)
        for e in m.examples if not isinstance(e, AudioItem) or e.id in res.features
    ]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.params({"model.trainable_params": n_params})
    augment = None
    if cfg.data.augment is not None:  # augmented clips are re-encoded on the fly; the others keep cached features
        augment = AugmentBatches(Augmenter(cfg.data.augment, cfg.seed), res.encoder,
                                 {e.id: e for e in m.examples if isinstance(e, AudioItem)}, len(examples))
    result = train(model, examples, cfg.train, cfg.seed, log=run.metrics, progress=progress,
                   checkpoint_dir=opts.checkpoint_dir, checkpoint_every=opts.checkpoint_every,
                   should_stop=opts.should_stop, on_step=opts.on_step(model) if opts.on_step else None,
                   batch_transform=augment)
    if augment is not None:
        run.metrics(augment.metrics())  # every rank takes part (counts are summed over ranks)
    if result.resumed_from:
        run.tags({"resumed_from_step": result.resumed_from})
    run.metrics({"train/first_loss": result.first_loss, "train/last_loss": result.last_loss,
                 "train/seconds": result.seconds,
                 "train/steps_per_second": (result.steps - result.resumed_from) / max(result.seconds, 1e-9)})
    if not is_main_process():
        return []  # under DDP only the main process evaluates and logs
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


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _broadcast(value: str | None) -> str | None:
    """Under `accelerate launch` (several ranks): the main process tells the others which variant is next."""
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())  # forms the process group once
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _NullRun:
    """What non-main ranks log to: nothing (the main process owns the MLflow run)."""

    def metrics(self, *a, **k) -> None: ...
    def params(self, *a, **k) -> None: ...
    def tags(self, *a, **k) -> None: ...
    def flush(self) -> None: ...


def _follow(variants: list[Variant], checkpoint_root: Path, checkpoint_every: int, progress: bool) -> SweepResult:
    """A non-main DDP rank: train whatever variant the main process announces, until it says stop.

    Only the main process talks to MLflow and the claims store; this rank just joins the DDP
    group in train() (same config, same checkpoint directory, so a resume is resumed on every rank).
    """
    by_key = {v.config_hash: v for v in variants}
    res = None
    while True:
        msg = _broadcast(None)
        if msg is None:
            return SweepResult("", "", [], {}, 0.0, complete=False)
        study, key = msg.split("/", 1)
        res = res or prepare_resources(variants)
        run_variant(by_key[key], res, _NullRun(), False,  # type: ignore[arg-type]
                    TrainOptions(checkpoint_root / study / key, checkpoint_every))


class StopFlag:
    """SIGINT/SIGTERM during training: finish the step, checkpoint, mark the run KILLED.

    Outside training (data, encoding, evaluation) and on a second signal the handler raises
    KeyboardInterrupt at once, so Ctrl-C twice always exits immediately.
    """

    def __init__(self):
        self.reason: str | None = None
        self.graceful = False
        self._old: dict[int, object] = {}

    def __call__(self) -> str | None:
        return self.reason

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None or not self.graceful:
            self.reason = self.reason or f"{name} received"
            raise KeyboardInterrupt(self.reason)
        self.reason = f"{name} received"
        log.warning("%s: stopping after this step (checkpoint, run KILLED); send SIGINT again to exit at once", name)

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Heartbeat:
    """Background thread that keeps a claim fresh while its variant runs."""

    def __init__(self, store: ClaimStore | None, study: str, key: str, every: float):
        self.store, self.study, self.key, self.every = store, study, key, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.heartbeat(self.study, self.key)
            except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one retries
                log.warning("heartbeat for %s failed", self.key, exc_info=True)

    def __enter__(self) -> "Heartbeat":
        if self.store is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


@dataclass
class StudyContext:
    """One study (sweep or search): its MLflow parent, its claims, where checkpoints go."""

    name: str
    client: MlflowClient
    exp_id: str
    parent: RunLogger
    store: ClaimStore | None
    checkpoint_root: Path
    checkpoint_every: int
    stop: StopFlag
    progress: bool = True
    systems: dict[str, dict[str, list]] = field(default_factory=dict)  # eval set -> system -> utt scores

    def checkpoint_dir(self, key: str) -> Path:
        return self.checkpoint_root / self.name / key

    def heartbeat(self, key: str) -> Heartbeat:
        every = max(0.5, self.store.stale_after / 4) if self.store else 60.0
        return Heartbeat(self.store, self.name, key, every)


def close_previous_attempt(client: MlflowClient, claim: Claim) -> None:
    """A run left RUNNING by a worker that died (kill -9, lost node) is marked FAILED with the reason."""
    if not claim.previous_run_id:
        return
    try:
        run = client.get_run(claim.previous_run_id)
    except Exception:  # noqa: BLE001 - the run was never created or the store lost it
        return
    if run.info.status in ("RUNNING", "SCHEDULED"):
        if "error" not in run.data.tags:  # else the worker recorded why but could not close the run (store down)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(claim.previous_heartbeat or 0))
            client.set_tag(run.info.run_id, "error", f"worker {claim.previous_worker} stopped without reporting "
                           f"(killed or lost; last heartbeat {when} UTC); variant taken over by a restarted worker")
        client.set_terminated(run.info.run_id, "FAILED")


def execute_variant(ctx: StudyContext, v: Variant, res_fn: Callable[[], Resources], claim: Claim | None,
                    extra_tags: dict | None = None, on_step=None,
                    started: Callable[[str], None] | None = None) -> list[SetResult] | None:
    """Run one variant in its own nested MLflow run; the runner grid sweeps and searches share.

    Returns the results, or None when it failed (recorded in MLflow and the claim). Signals and
    pruning propagate after the run and the claim are marked.
    """
    key = v.config_hash
    if claim is not None:
        close_previous_attempt(ctx.client, claim)
    tags = {**variant_tags(v), "borealis.study": ctx.name, **(extra_tags or {})}
    if claim is not None:
        tags["attempt"] = claim.attempts
        if claim.previous_run_id:
            tags["previous_attempt_run"] = claim.previous_run_id
    ckdir = ctx.checkpoint_dir(key)
    with ctx.heartbeat(key):
        res = res_fn()
        try:
            run = RunLogger.start(ctx.client, ctx.exp_id, v.name, tags, ctx.parent.run_id)
        except StoreError as e:
            if ctx.store is not None:
                ctx.store.interrupt(ctx.name, key, str(e))
            raise
        if ctx.store is not None:
            ctx.store.set_run(ctx.name, key, run.run_id)
        if started is not None:
            started(run.run_id)
        try:
            run.params(flatten(v.config.model_dump(mode="json")))
            run.artifact_text(yaml.safe_dump(v.config.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
                              "config/resolved.yaml")
            ctx.stop.graceful = True
            try:
                results = run_variant(v, res, run, ctx.progress, TrainOptions(
                    ckdir, ctx.checkpoint_every, ctx.stop, on_step))
            finally:
                ctx.stop.graceful = False
            run.metrics(_paired_vs_baseline(v.name, results, ctx.systems, v.config.eval.bootstrap))
            run.end("FINISHED")
            if ctx.store is not None:
                ctx.store.finish(ctx.name, key, run.run_id)
            shutil.rmtree(ckdir, ignore_errors=True)
            return results
        except (TrainingInterrupted, KeyboardInterrupt) as e:
            _fail(run, e, "KILLED")
            if ctx.store is not None:
                ctx.store.interrupt(ctx.name, key, str(e) or "interrupted")
            raise
        except StoreError as e:  # the tracking store failed, not the variant: stop loudly, resumable (checkpoint kept)
            _fail(run, e)
            if ctx.store is not None:
                ctx.store.interrupt(ctx.name, key, str(e))
            raise
        except Exception as e:
            if type(e).__name__ == "TrialPruned":
                run.tags({"optuna.pruned": "true"})
                run.end("KILLED")
                shutil.rmtree(ckdir, ignore_errors=True)
                raise
            _fail(run, e)
            if ctx.store is not None:
                ctx.store.fail(ctx.name, key, failure_reason(e))
            return None


def _scores_from_run(client: MlflowClient, run_id: str, res: Resources) -> dict[str, list]:
    """Per-utterance scores of a finished run (another worker's), read back from its predictions."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for es in res.eval_sets:
            try:
                path = client.download_artifacts(run_id, f"predictions/{es.name}.jsonl", tmp)
            except Exception:  # noqa: BLE001 - no predictions for this set
                continue
            rows = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
            out[es.name] = utt_scores(rows, es.language)
    return out


def baseline_key(cfg: ExperimentConfig) -> str:
    blob = json.dumps({"ref": cfg.eval.baseline.ref, "sets": [s.model_dump(mode="json") for s in cfg.eval.sets],
                       "decode": _decode_params(cfg)}, sort_keys=True)
    return "baseline-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


@dataclass
class SweepResult:
    experiment: str
    parent_run_id: str
    finished: list[str]
    failed: dict[str, str]
    seconds: float
    study: str = ""
    skipped: list[str] = field(default_factory=list)  # finished earlier or by other workers
    complete: bool = True  # every variant of the study finished or failed (the report can be built)
    interrupted: str | None = None


def open_study(store: ClaimStore, client: MlflowClient, exp_id: str, key: str, default_name: str,
               run_name: str, tags: dict, artifact: tuple[str, str] | None = None) -> tuple[str, RunLogger, bool]:
    """Join the open study for `key` (its parent run back to RUNNING), or create it with a parent run."""
    name, created = store.open_study(key, default_name, client.get_experiment(exp_id).name)
    if created:
        parent = RunLogger.start(client, exp_id, run_name, {**tags, "borealis.study": name})
        if artifact:
            parent.artifact_text(*artifact)
        store.set_parent(name, parent.run_id)
    else:
        parent = RunLogger(client, store.parent(name))
        if client.get_run(parent.run_id).info.status != "RUNNING":
            client.update_run(parent.run_id, status="RUNNING")
        log.info("joining study %s (parent run %s)", name, parent.run_id)
    return name, parent, created


def run_sweep(path: str | Path, tracking_uri: str | None = None, only: list[str] | None = None,
              progress: bool = True, study: str | None = None, new: bool = False, storage: str | None = None,
              checkpoint_dir: str | Path | None = None, checkpoint_every: int = 50,
              stale_after: float = 300.0) -> SweepResult:
    """Run (or join, or resume) the study of an ablation grid.

    Workers started on the same ablation and storage share one open study: each claims variants
    (by config hash) until none is left, so they split the grid with no duplicates. A rerun after
    a crash joins the still-open study: finished variants are skipped, interrupted ones resume
    from their checkpoint. The study closes (and a rerun starts afresh) once every variant finished.
    """
    t0 = time.perf_counter()
    abl, variants = load_ablation(path)
    if only:
        variants = [v for v in variants if v.name in only]
        if not variants:
            raise ValueError(f"--only matched no variant (names: see `sweep {path} --dry-run`)")
    ckroot = Path(checkpoint_dir) if checkpoint_dir else cache_root() / "checkpoints"
    if _world() > 1 and not is_main_process():
        return _follow(variants, ckroot, checkpoint_every, progress)
    tc = TrackingConfig.load(tracking_uri=tracking_uri)
    client = preflight(tc)
    check_model_refs(variants)
    exp_id = experiment_id(client, tc, abl.name, abl.description)
    base_cfg = variants[0].config
    items: list[tuple[str, str]] = []  # (claim key, name), baseline first
    if base_cfg.eval.baseline.enabled:
        items.append((baseline_key(base_cfg), "baseline"))
    items += [(v.config_hash, v.name) for v in variants]
    by_key = {v.config_hash: v for v in variants}
    fingerprint = hashlib.sha1("\n".join(sorted(k for k, _ in items)).encode()).hexdigest()[:12]
    key = f"named:{study}" if study else f"sweep:{abl.name}:{fingerprint}"
    if new:
        key += f":{time.time_ns()}"
    store = ClaimStore(storage or os.environ.get("BOREALIS_STORAGE") or default_storage_url(tc.tracking_uri),
                       stale_after=stale_after)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, parent, created = open_study(
        store, client, exp_id, key, study or f"{abl.name}-{stamp}-{os.urandom(2).hex()}", f"sweep-{stamp}",
        {"role": "parent", "borealis.ablation": str(Path(path)), "borealis.description": abl.description,
         "mlflow.note.content": abl.description, "borealis.fingerprint": fingerprint},
        (Path(path).read_text(encoding="utf-8"), "ablation/" + Path(path).name))
    if study and not created:
        got = client.get_run(parent.run_id).data.tags.get("borealis.fingerprint")
        if got and got != fingerprint:
            raise ValueError(f"study '{study}' was started with another variant set (fingerprint {got}, this file "
                             f"{fingerprint}); use another --study name")
    out = SweepResult(abl.name, parent.run_id, [], {}, 0.0, study=name)
    state: dict[str, Resources] = {}

    def resources() -> Resources:
        if "res" not in state:
            res = state["res"] = prepare_resources(variants)
            if res.bad_items:
                parent.artifact_json_lines(res.bad_items, "data/bad_items.jsonl")
            parent.metrics({"data/bad_items": len(res.bad_items), "data/train_items": len(res.train_items),
                            "data/text_items": len(res.text_items), "cache/encoded": res.cache.stats.encoded,
                            "cache/hits": res.cache.stats.hits})
        return state["res"]

    with StopFlag() as stop:
        ctx = StudyContext(name, client, exp_id, parent, store, ckroot, checkpoint_every, stop, progress)
        try:
            try:
                _work_loop(ctx, items, by_key, base_cfg, resources, out)
            finally:
                if _world() > 1:
                    _broadcast(None)  # release the other ranks
            rows = {r["config_hash"]: r for r in store.rows(name)}
            done = all(rows.get(k, {}).get("status") == "finished" for k, _ in items)
            settled = all(rows.get(k, {}).get("status") in ("finished", "failed") for k, _ in items)
            out.skipped = [n for k, n in items if rows.get(k, {}).get("status") == "finished"
                           and n not in out.finished]
            if settled:
                _close_sweep(ctx, items, rows, resources, base_cfg, done)
            out.complete = settled  # every variant finished or failed: the report can be built
        except (KeyboardInterrupt, TrainingInterrupted) as e:
            out.interrupted = getattr(e, "reason", None) or str(e) or stop.reason or "interrupted"
            if not store.others_alive(name):
                _fail(parent, e, "KILLED")
        except BaseException as e:
            _fail(parent, e)
            raise
    out.seconds = time.perf_counter() - t0
    return out


def _work_loop(ctx: StudyContext, items: list[tuple[str, str]], by_key: dict[str, Variant],
               base_cfg: ExperimentConfig, resources: Callable[[], Resources], out: SweepResult) -> None:
    store = ctx.store
    while True:
        progressed = False
        for key, name in items:
            if ctx.stop.reason:
                raise KeyboardInterrupt(ctx.stop.reason)
            claim = store.claim(ctx.name, key, name)
            if claim is None:
                continue
            progressed = True
            if claim.previous_status:
                log.info("%s: taking over (%s)", name, RECLAIMABLE_NOTE.get(claim.previous_status, claim.previous_status))
            if name == "baseline" and key not in by_key:
                ok = _run_baseline(ctx, key, base_cfg, resources, claim)
                (out.finished.append(name) if ok else out.failed.setdefault(name, "see the baseline run"))
                continue
            v = by_key[key]
            log.info("variant %s (%s)", v.name, key)
            _load_peer_baseline(ctx, items, resources)
            if _world() > 1:
                _broadcast(f"{ctx.name}/{key}")
            results = execute_variant(ctx, v, resources, claim)
            if results is None:
                out.failed[v.name] = next((r["reason"] or "" for r in store.rows(ctx.name) if r["config_hash"] == key), "")
            else:
                out.finished.append(v.name)
                log.info("  %s", "  ".join(f"wer/{r.name}={r.metrics['wer']:.3f}" for r in results))
        if progressed:
            continue
        if not store.others_alive(ctx.name):
            return
        time.sleep(min(2.0, max(0.5, store.stale_after / 4)))  # a peer may die: its claim then turns stale


def _load_peer_baseline(ctx: StudyContext, items, resources) -> None:
    """Another worker scored the baseline: read its predictions back for the paired tests."""
    if any("baseline" in by for by in ctx.systems.values()) or not items or items[0][1] != "baseline":
        return
    row = next((r for r in ctx.store.rows(ctx.name) if r["config_hash"] == items[0][0]), None)
    if row and row["status"] == "finished" and row["run_id"]:
        for set_name, scores in _scores_from_run(ctx.client, row["run_id"], resources()).items():
            ctx.systems.setdefault(set_name, {})["baseline"] = scores


def _run_baseline(ctx: StudyContext, key: str, cfg: ExperimentConfig, resources, claim: Claim) -> bool:
    close_previous_attempt(ctx.client, claim)
    with ctx.heartbeat(key):
        res = resources()
        run = RunLogger.start(ctx.client, ctx.exp_id, "baseline-whisper",
                              {"role": "baseline", "variant": "baseline", "model": cfg.eval.baseline.ref,
                               "config_hash": key, "borealis.study": ctx.name}, ctx.parent.run_id)
        ctx.store.set_run(ctx.name, key, run.run_id)
        try:
            run.params({"baseline.ref": cfg.eval.baseline.ref, "eval.num_beams": cfg.eval.num_beams})
            results = evaluate_baseline(res, cfg)
            _log_results(run, results)
            for r in results:
                ctx.systems.setdefault(r.name, {})["baseline"] = utt_scores(r.records, r.language)
            run.end("FINISHED")
            ctx.store.finish(ctx.name, key, run.run_id)
            return True
        except KeyboardInterrupt as e:
            _fail(run, e, "KILLED")
            ctx.store.interrupt(ctx.name, key, str(e) or "interrupted")
            raise
        except StoreError as e:
            _fail(run, e)
            ctx.store.interrupt(ctx.name, key, str(e))
            raise
        except Exception as e:
            _fail(run, e)
            ctx.store.fail(ctx.name, key, failure_reason(e))
            return False


def _close_sweep(ctx: StudyContext, items, rows: dict[str, dict], resources, base_cfg: ExperimentConfig,
                 done: bool) -> None:
    """Last worker out: paired tests across every system (other workers' read back), parent status."""
    names = {k: n for k, n in items}
    finished = [(names[k], r["run_id"]) for k, r in rows.items() if k in names and r["status"] == "finished"]
    have = {n for by in ctx.systems.values() for n in by}
    missing = [(n, rid) for n, rid in finished if n not in have and rid]
    if missing or ctx.systems:
        res = resources() if missing else None
        for n, rid in missing:
            for set_name, scores in _scores_from_run(ctx.client, rid, res).items():
                ctx.systems.setdefault(set_name, {})[n] = scores
    for set_name, by_system in ctx.systems.items():
        if len(by_system) > 1:
            ctx.parent.artifact_json_lines(paired_rows(by_system, base_cfg.eval.bootstrap), f"paired/{set_name}.jsonl")
    n_failed = sum(rows.get(k, {}).get("status") == "failed" for k, _ in items)
    ctx.parent.metrics({"sweep/finished": len(finished), "sweep/failed": n_failed})
    if done:
        if "error" in ctx.client.get_run(ctx.parent.run_id).data.tags:  # left by an earlier, failed attempt
            ctx.client.delete_tag(ctx.parent.run_id, "error")
        ctx.parent.end("FINISHED")
        ctx.store.close_study(ctx.name)
    else:  # the study stays open: a rerun retries the failed variants only
        ctx.parent.tags({"error": f"{n_failed} variant(s) failed; rerun the same command to retry them"})
        ctx.parent.end("FAILED")


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


EVAL_OOM_HINT = ("out of memory outside training: lower eval.batch_size (eval.baseline.batch_size for the Whisper "
                 "baseline) or eval.window_seconds")


def failure_reason(e: BaseException) -> str:
    """One line for the run's error tag and the claim: the exception, plus a hint for an out-of-memory."""
    if is_oom(e) and not isinstance(e, TrainingOOM):  # training OOMs carry their own hint; first, as the
        return f"{type(e).__name__} ({EVAL_OOM_HINT}): {e}"  # allocator's message is long and gets cut
    return f"{type(e).__name__}: {e}"


def _fail(run: RunLogger, e: BaseException, status: str | None = None) -> None:
    status = status or ("KILLED" if isinstance(e, (KeyboardInterrupt, TrainingInterrupted)) else "FAILED")
    extra = {}
    if isinstance(e, (TrainingDiverged, TrainingOOM)):
        extra = {"error.step": e.step, "error.batch_ids": ",".join(e.ids[:50])}
    elif is_oom(e):
        extra = {"error.hint": EVAL_OOM_HINT}
    try:
        run.tags({"error": failure_reason(e)[:5000], **extra})
        run.artifact_text("".join(traceback.format_exception(e)), "error.txt")
        run.end(status)
    except Exception as err:  # noqa: BLE001 - never mask the original error
        log.warning("could not record the failure in MLflow: %s", str(err).splitlines()[0] if str(err) else err)


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
    for v in variants:  # noise recordings named for augmentation exist (else every such variant fails late)
        aug = v.config.data.augment
        if aug is not None and aug.noise is not None and aug.noise.files:
            noise_files(aug.noise.files)


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
    model = SpeechLM.from_config(cfg.model, encoder.dim, AutoTokenizer.from_pretrained(tok_dir), device=device)
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
