"""Optuna search over an ablation's `search:` space, through the same variant runner as sweeps.

Each trial applies the sampled values (dotted paths, like grid axes) to `base`, validates the
result as an ExperimentConfig and runs it as a nested MLflow run under the study's parent run
(tags `optuna.trial`, `optuna.study`, `axis.*`). The objective is the mean WER (or CER) over the
chosen eval sets; `objective.cost: train_seconds` makes it a two-objective study (Pareto front).
Optional pruning evaluates one eval set every N training steps and reports it to the pruner.

Storage: any RDB URL (`search.storage`, `--storage`, $BOREALIS_STORAGE), by default the
embedded `borealis-studies.db` beside the MLflow store. Several `search` workers on one storage
share the study, its parent run and the trial budget. A trial left RUNNING by a killed worker is
failed by Optuna's heartbeat and retried with the same parameters; one stopped by a signal is
re-queued at the next start; both resume from the variant's checkpoint (keyed by config hash).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError

from borealis_eval.claims import ClaimStore, default_storage_url
from borealis_eval.config import (ConfigError, ExperimentConfig, SearchAxis, SearchConfig, Variant, _check_axis_path,
                                  _set_dotted, load_ablation)
from borealis_eval.paths import cache_root
from borealis_eval.sweep import (Resources, StopFlag, StudyContext, _fail, check_model_refs, evaluate_speech_lm,
                                 execute_variant, open_study, prepare_resources)
from borealis_eval.tracking import RunLogger, TrackingConfig, experiment_id, preflight
from borealis_eval.train import TrainingInterrupted

log = logging.getLogger("borealis_eval")


class VariantFailed(RuntimeError):
    """The trial's variant failed (recorded in its MLflow run); Optuna marks the trial FAIL."""


@dataclass
class SearchResult:
    experiment: str
    study: str
    parent_run_id: str
    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    best: list[dict] = field(default_factory=list)  # one trial, or the Pareto front
    interrupted: str | None = None
    seconds: float = 0.0


def suggest(trial: optuna.Trial, name: str, axis: SearchAxis) -> Any:
    if axis.choices is not None:
        labels = [json.dumps(c, sort_keys=True) for c in axis.choices]  # Optuna choices must be scalars
        return axis.choices[labels.index(trial.suggest_categorical(name, labels))]
    if axis.is_int:
        return trial.suggest_int(name, int(axis.low), int(axis.high), step=int(axis.step or 1), log=axis.log)
    return trial.suggest_float(name, float(axis.low), float(axis.high), step=axis.step, log=axis.log)


def trial_variant(base: dict, values: dict[str, Any], number: int) -> Variant:
    merged = copy.deepcopy(base)
    for dotted, value in values.items():
        _set_dotted(merged, dotted, value)
    cfg = ExperimentConfig.model_validate(merged)
    return Variant(name=f"trial-{number:03d}", axes=values, config=cfg)


def _check(path: Path, scfg: SearchConfig, cfg: ExperimentConfig) -> None:
    for dotted in scfg.space:
        problem = _check_axis_path(dotted)
        if problem:
            raise ConfigError(f"{path}: search.space.{dotted}: {problem}")
    names = [s.name for s in cfg.eval.sets]
    for s in scfg.objective.sets + ([scfg.prune.set] if scfg.prune else []):
        if s not in names:
            raise ConfigError(f"{path}: search: unknown eval set '{s}' (eval sets: {', '.join(names)})")


def run_search(path: str | Path, tracking_uri: str | None = None, n_trials: int | None = None, progress: bool = True,
               study: str | None = None, new: bool = False, storage: str | None = None,
               checkpoint_dir: str | Path | None = None, checkpoint_every: int = 50) -> SearchResult:
    t0 = time.perf_counter()
    path = Path(path)
    abl, variants = load_ablation(path)
    if abl.search is None:
        raise ConfigError(f"{path}: no 'search:' section (give n_trials, objective and space)")
    scfg = abl.search
    base_variant = variants[0]
    _check(path, scfg, base_variant.config)
    n_trials = n_trials or scfg.n_trials
    tc = TrackingConfig.load(tracking_uri=tracking_uri)
    client = preflight(tc)
    check_model_refs([base_variant])
    exp_id = experiment_id(client, tc, abl.name, abl.description)
    url = storage or scfg.storage or os.environ.get("BOREALIS_STORAGE") or default_storage_url(tc.tracking_uri)
    store = ClaimStore(url)
    fp = hashlib.sha1(json.dumps({"base": abl.base, "search": scfg.model_dump(mode="json")}, sort_keys=True,
                                 default=str).encode()).hexdigest()[:12]
    key = f"named:{study}" if study else f"search:{abl.name}:{fp}"
    if new:
        key += f":{time.time_ns()}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, parent, _ = open_study(
        store, client, exp_id, key, study or f"{abl.name}-search-{stamp}-{os.urandom(2).hex()}", f"search-{stamp}",
        {"role": "parent", "kind": "search", "borealis.ablation": str(path), "borealis.description": abl.description,
         "mlflow.note.content": abl.description, "borealis.fingerprint": fp},
        (path.read_text(encoding="utf-8"), "ablation/" + path.name))
    out = SearchResult(abl.name, name, parent.run_id)

    def on_stale_trial(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rid = trial.user_attrs.get("run_id")
        if rid and client.get_run(rid).info.status == "RUNNING":
            client.set_tag(rid, "error", "worker stopped without reporting (killed or lost: Optuna heartbeat expired); "
                                         "the trial is retried with the same parameters")
            client.set_terminated(rid, "FAILED")
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
        retry(max_retry=2)(st, trial)

    stale_kw = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                in inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90, **{stale_kw: on_stale_trial})
    directions = ["minimize"] + (["minimize"] if scfg.objective.cost else [])
    sampler = (optuna.samplers.TPESampler(seed=scfg.seed) if scfg.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=scfg.seed))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if scfg.pruner == "median" \
        else optuna.pruners.NopPruner()
    ost = optuna.create_study(storage=rdb, study_name=name, directions=directions, sampler=sampler, pruner=pruner,
                              load_if_exists=True)
    _requeue_interrupted(ost)
    state: dict[str, Resources] = {}

    def resources() -> Resources:
        if "res" not in state:
            state["res"] = prepare_resources([base_variant], all_train=True)
        return state["res"]

    sets = scfg.objective.sets or [s.name for s in base_variant.config.eval.sets]
    metric = scfg.objective.metric

    with StopFlag() as stop:
        ctx = StudyContext(name, client, exp_id, parent, None, Path(checkpoint_dir or cache_root() / "checkpoints"),
                           checkpoint_every, stop, progress)

        def objective(trial: optuna.Trial):
            values = {k: suggest(trial, k, ax) for k, ax in scfg.space.items()}
            try:
                v = trial_variant(abl.base, values, trial.number)
            except ValidationError as e:
                raise VariantFailed(f"sampled values give an invalid config: {e.errors()[0]['msg']}") from None
            trial.set_user_attr("config_hash", v.config_hash)
            hook = _pruning_hook(trial, resources, v.config, scfg) if scfg.pruner != "none" else None
            tags = {"optuna.trial": trial.number, "optuna.study": name}
            try:
                results = execute_variant(ctx, v, resources, None, tags, on_step=hook,
                                          started=lambda rid: trial.set_user_attr("run_id", rid))
            except (TrainingInterrupted, KeyboardInterrupt):
                trial.set_user_attr("interrupted", True)
                raise
            if results is None:
                raise VariantFailed(f"trial {trial.number}: variant failed (see run {trial.user_attrs.get('run_id')})")
            value = sum(r.metrics[metric] for r in results if r.name in sets) / len(sets)
            run = RunLogger(client, trial.user_attrs["run_id"])
            run.metrics({"objective": value})
            run.flush()
            if scfg.objective.cost:
                return value, client.get_run(run.run_id).data.metrics.get("train/seconds", math.nan)
            return value

        budget = optuna.study.MaxTrialsCallback(
            n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
        try:
            done = _count(ost, (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
            if done < n_trials:
                ost.optimize(objective, n_trials=n_trials - done + _count(ost, (optuna.trial.TrialState.WAITING,)),
                             callbacks=[budget], catch=(VariantFailed,), gc_after_trial=False)
        except (KeyboardInterrupt, TrainingInterrupted) as e:
            out.interrupted = str(e) or stop.reason or "interrupted"
            _fail(parent, e, "KILLED")
        except BaseException as e:
            _fail(parent, e)
            raise
    states = [t.state for t in ost.trials]
    out.n_complete = states.count(optuna.trial.TrialState.COMPLETE)
    out.n_pruned = states.count(optuna.trial.TrialState.PRUNED)
    out.n_failed = states.count(optuna.trial.TrialState.FAIL)
    if out.n_complete:
        best = [ost.best_trial] if len(directions) == 1 else ost.best_trials
        out.best = [{"number": t.number, "values": t.values, "params": t.params, "run_id": t.user_attrs.get("run_id")}
                    for t in best]
        b = best[0]
        parent.tags({"best.trial": b.number, "best.run_id": b.user_attrs.get("run_id", ""),
                     "best.params": json.dumps(b.params)[:5000]})
        parent.metrics({"best/objective": b.values[0], "search/complete": out.n_complete,
                        "search/pruned": out.n_pruned, "search/failed": out.n_failed})
        parent.artifact_json_lines(out.best, "search/best_trials.jsonl")
    if not out.interrupted and out.n_complete + out.n_pruned >= n_trials:
        parent.end("FINISHED")
        store.close_study(name)
    elif not out.interrupted:
        parent.flush()
    out.seconds = time.perf_counter() - t0
    return out


def _count(st: optuna.Study, states) -> int:
    return len(st.get_trials(deepcopy=False, states=states))


def _requeue_interrupted(st: optuna.Study) -> None:
    """Trials stopped by a signal go back in the queue with the same parameters (they resume from checkpoints)."""
    trials = st.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            st.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)


def _pruning_hook(trial: optuna.Trial, resources, cfg: ExperimentConfig, scfg: SearchConfig):
    """model -> hook(step): every N steps score the pruning set, report it, stop a hopeless trial."""
    every, set_name, metric = scfg.prune.every, scfg.prune.set, scfg.objective.metric

    def factory(model):
        def hook(step: int) -> None:
            if step % every or step >= cfg.train.steps:
                return
            model.eval()
            r = evaluate_speech_lm(model, resources(), cfg, sets=[set_name])[0]
            trial.report(r.metrics[metric], step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {metric}/{set_name} {r.metrics[metric]:.3f}")
        return hook

    return factory
