"""Optuna search over an ablation's `search:` space, through the same study and recipe as sweeps.

Each trial applies the sampled values (dotted paths, like grid axes, through `apply_overrides`)
to `base`, validates the result as an ExperimentConfig and runs it as a nested MLflow run under
the study's parent run (tags `optuna.trial`, `optuna.study`, `axis.*`). The objective is the
mean WER (or CER) over the chosen eval sets; `objective.cost: train_seconds` makes it a
two-objective study (Pareto front). Optional pruning scores one eval set every N training steps.

Workers coordinate through the study's claims table, as sweeps do: a trial claims its config
hash before training, so a configuration sampled twice trains once (the second trial reads the
first one's objective), a trial stopped by a signal resumes from its checkpoint when Optuna
re-queues it, and a trial of a killed worker (failed by Optuna's heartbeat, retried with the
same parameters) takes the stale claim over. Optuna samples and keeps the trial history, in the
same database (`search.storage`, `--storage`, $BOREALIS_STORAGE; default `borealis-studies.db`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError

from borealis_eval import records
from borealis_eval.config import ExperimentConfig, SearchAxis, SearchConfig, Variant, apply_overrides, load_ablation
from borealis_eval.config.grid import BlockedPath, UnknownPath
from borealis_eval.decode import evaluate_speech_lm
from borealis_eval.errors import ConfigError, TrainingInterrupted
from borealis_eval.recipe import VariantWork, run_claimed
from borealis_eval.resources import Resources, prepare_resources
from borealis_eval.study import Study, StudyOptions, start_study
from borealis_eval.tracking import RunLogger


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
    """The trial's config; raises ConfigError when a sampled path cannot be set (never drops it)."""
    cfg = ExperimentConfig.model_validate(apply_overrides(base, values))
    return Variant(name=f"trial-{number:03d}", axes=values, config=cfg)


def _check(path: Path, scfg: SearchConfig, base: dict, cfg: ExperimentConfig) -> None:
    """Every search path can be set on `base` and every named eval set exists, before any trial."""
    for dotted, axis in scfg.space.items():
        sample = axis.choices[0] if axis.choices is not None else axis.low
        try:
            apply_overrides(base, {dotted: sample})
        except UnknownPath as e:
            raise ConfigError(f"{path}: search.space.{dotted}: {e.problem}") from None
        except BlockedPath as e:
            raise ConfigError(f"{path}: search.space.{dotted}: base.{'.'.join(e.blocked)} must be a mapping to sample "
                              f"it (got {e.value!r}); give the section in base") from None
    names = [s.name for s in cfg.eval.sets]
    for s in scfg.objective.sets + ([scfg.prune.set] if scfg.prune else []):
        if s not in names:
            raise ConfigError(f"{path}: search: unknown eval set '{s}' (eval sets: {', '.join(names)})")


def run_search(path: str | Path, opts: StudyOptions | None = None, *, n_trials: int | None = None,
               overrides: dict | None = None) -> SearchResult:
    opts = opts or StudyOptions()
    t0 = time.perf_counter()
    path = Path(path)
    abl, variants = load_ablation(path, overrides)
    if abl.search is None:
        raise ConfigError(f"{path}: no 'search:' section (give n_trials, objective and space)")
    scfg = abl.search
    base_variant = variants[0]
    _check(path, scfg, abl.base, base_variant.config)
    n_trials = n_trials or scfg.n_trials
    fp = hashlib.sha1(json.dumps({"base": abl.base, "search": scfg.model_dump(mode="json")}, sort_keys=True,
                                 default=str).encode()).hexdigest()[:12]
    st, _ = start_study("search", path, abl, [base_variant], fp, replace(opts, storage=opts.storage or scfg.storage))
    out = SearchResult(abl.name, st.name, st.parent.run_id)
    directions = ["minimize"] + (["minimize"] if scfg.objective.cost else [])
    ost = _optuna_study(st, scfg, directions)
    _requeue_interrupted(ost)
    state: dict[str, Resources] = {}

    def resources() -> Resources:
        if "res" not in state:
            state["res"] = prepare_resources([base_variant], all_train=True)
        return state["res"]

    sets = scfg.objective.sets or [s.name for s in base_variant.config.eval.sets]

    def objective(trial: optuna.Trial):
        values = {k: suggest(trial, k, ax) for k, ax in scfg.space.items()}
        try:
            v = trial_variant(abl.base, values, trial.number)
        except ValidationError as e:
            raise VariantFailed(f"sampled values give an invalid config: {e.errors()[0]['msg']}") from None
        trial.set_user_attr("config_hash", v.config_hash)
        run_id = _run_trial(st, trial, v, resources, scfg)
        value = _objective_value(st, run_id, sets, scfg.objective.metric)
        if scfg.objective.cost:
            return value, st.client.get_run(run_id).data.metrics.get(records.TRAIN_SECONDS, math.nan)
        return value

    budget = optuna.study.MaxTrialsCallback(
        n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    with st.session():
        done = _count(ost, (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
        if done < n_trials:
            ost.optimize(objective, n_trials=n_trials - done + _count(ost, (optuna.trial.TrialState.WAITING,)),
                         callbacks=[budget], catch=(VariantFailed,), gc_after_trial=False)
    out.interrupted = st.interrupted
    _summarise(st, ost, directions, out)
    if not out.interrupted and out.n_complete + out.n_pruned >= n_trials:
        st.parent.end("FINISHED")
        st.store.close_study(st.name)
    elif not out.interrupted:
        st.parent.flush()
    out.seconds = time.perf_counter() - t0
    return out


def _run_trial(st: Study, trial: optuna.Trial, v: Variant, resources, scfg: SearchConfig) -> str:
    """Claim the trial's config and train it, or wait for a peer training the same config; its run id."""
    key = v.config_hash
    while True:
        claim = st.store.claim(st.name, key, v.name)
        row = next((r for r in st.store.rows(st.name) if r["config_hash"] == key), None)
        if claim is not None:
            break
        if row is None or row["status"] == "claimed":  # a peer trains this config now: wait for its result
            time.sleep(min(2.0, max(0.5, st.store.stale_after / 4)))
            if st.stop.reason:
                raise KeyboardInterrupt(st.stop.reason)
            continue
        if row["status"] == "finished":  # sampled again: the same config trains once
            trial.set_user_attr("run_id", row["run_id"])
            trial.set_user_attr("duplicate_of", row["variant"])
            return row["run_id"]
        if row["status"] == "pruned":
            raise optuna.TrialPruned(f"same config as {row['variant']}, which was pruned")
        raise VariantFailed(f"trial {trial.number}: same config as {row['variant']}, which failed: {row['reason']}")
    hook = _pruning_hook(trial, resources, v.config, scfg) if scfg.pruner != "none" else None
    tags = {records.OPTUNA_TRIAL: trial.number, records.OPTUNA_STUDY: st.name}
    try:
        results = run_claimed(st, VariantWork(v, tags), resources, claim, on_step=hook,
                              started=lambda rid: trial.set_user_attr("run_id", rid))
    except (TrainingInterrupted, KeyboardInterrupt):
        trial.set_user_attr("interrupted", True)
        raise
    if results is None:
        raise VariantFailed(f"trial {trial.number}: variant failed (see run {trial.user_attrs.get('run_id')})")
    return trial.user_attrs["run_id"]


def _objective_value(st: Study, run_id: str, sets: list[str], metric: str) -> float:
    """Mean `metric` over `sets`, read from the trial's run and logged on it as `objective`."""
    logged = st.client.get_run(run_id).data.metrics
    value = sum(logged[records.set_metric(metric, s)] for s in sets) / len(sets)
    run = RunLogger(st.client, run_id)
    run.metrics({records.OBJECTIVE: value})
    run.flush()
    return value


def _optuna_study(st: Study, scfg: SearchConfig, directions: list[str]) -> optuna.Study:
    """Optuna's study in the claims database; a trial whose worker died is failed by its heartbeat,
    its MLflow run closed, and retried with the same parameters."""

    def on_stale_trial(ost: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rid = trial.user_attrs.get("run_id")
        if rid and st.client.get_run(rid).info.status == "RUNNING":
            st.client.set_tag(rid, records.ERROR, "worker stopped without reporting (killed or lost: Optuna heartbeat "
                                                  "expired); the trial is retried with the same parameters")
            st.client.set_terminated(rid, "FAILED")
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
        retry(max_retry=2)(ost, trial)

    stale_kw = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                in inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(st.store.url, heartbeat_interval=30, grace_period=90,
                                         **{stale_kw: on_stale_trial})
    sampler = (optuna.samplers.TPESampler(seed=scfg.seed) if scfg.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=scfg.seed))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if scfg.pruner == "median" \
        else optuna.pruners.NopPruner()
    return optuna.create_study(storage=rdb, study_name=st.name, directions=directions, sampler=sampler, pruner=pruner,
                               load_if_exists=True)


def _summarise(st: Study, ost: optuna.Study, directions: list[str], out: SearchResult) -> None:
    """Counts, the best trial (or Pareto front) on the parent run."""
    states = [t.state for t in ost.trials]
    out.n_complete = states.count(optuna.trial.TrialState.COMPLETE)
    out.n_pruned = states.count(optuna.trial.TrialState.PRUNED)
    out.n_failed = states.count(optuna.trial.TrialState.FAIL)
    if not out.n_complete:
        return
    best = [ost.best_trial] if len(directions) == 1 else ost.best_trials
    out.best = [{"number": t.number, "values": t.values, "params": t.params, "run_id": t.user_attrs.get("run_id")}
                for t in best]
    b = best[0]
    st.parent.tags({records.BEST_TRIAL: b.number, records.BEST_RUN: b.user_attrs.get("run_id", ""),
                    records.BEST_PARAMS: json.dumps(b.params)[:5000]})
    st.parent.metrics({records.BEST_OBJECTIVE: b.values[0], records.SEARCH_COMPLETE: out.n_complete,
                       records.SEARCH_PRUNED: out.n_pruned, records.SEARCH_FAILED: out.n_failed})
    st.parent.artifact_json_lines(out.best, records.BEST_TRIALS)


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
