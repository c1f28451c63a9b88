"""The grid sweep: every variant of an ablation, plus the plain-Whisper baseline, as one study.

Order of work: validate the file, check the tracking store and every model reference (fail
before any work), join or create the study (study.py), then claim the baseline and each
variant in turn and run it through recipe.py's `run_claimed` (one unit's whole life, the
baseline's as a variant's) until nothing is left to claim. Shared
data and encoder features are prepared once, on the first claim (resources.py). The last
worker to finish writes the paired tests between every system and closes the study; the CLI
then renders the report.

Several workers on one storage split the grid (claims by config hash); a rerun after a crash
joins the open study, skips what finished and resumes what was interrupted. Under DDP, only the
main rank claims; the other ranks train whatever it announces (`_follow`, through recipe.py's
`run_on_follower`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from borealis_eval import records
from borealis_eval.claims import RECLAIMABLE_NOTE
from borealis_eval.config import BaselineConfig, ExperimentConfig, Variant, load_ablation
from borealis_eval.config.labels import SEED_AXIS
from borealis_eval.config.schema import AdaptiveSeeds
from borealis_eval.decode import baseline_params
from borealis_eval.distributed import broadcast, is_main_process, world_size
from borealis_eval.errors import TrainingInterrupted, UsageError, UserError
from borealis_eval.evaluate.adaptive import SeedDecision, decide_seeds, factor_pairs, first_stage_inputs, headline_family_size
from borealis_eval.evaluate.protocol import utt_scores
from borealis_eval.evaluate.runner import PairedScores, paired_rows
from borealis_eval.recipe import BaselineWork, VariantWork, run_claimed, run_on_follower
from borealis_eval.resources import Resources, prepare_resources
from borealis_eval.study import Study, StudyClosed, StudyOptions, failure_reason, start_study
from borealis_eval.tracking import RunLogger
from borealis_eval.workers import encode_threads, start_helpers

log = logging.getLogger("borealis_eval")


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
    closed_here: bool = False  # this worker closed the study (so it writes the report)
    already_closed: bool = False  # `--study NAME` named a closed study: nothing was run


def baseline_key(cfg: ExperimentConfig, b: BaselineConfig | None = None) -> str:
    """A baseline's claim key: its name and model, the eval sets and its decoding settings."""
    b = b or cfg.eval.baseline
    blob = json.dumps({"ref": b.ref, "name": b.name,  # citing a published figure does not change the decode
                       "sets": [s.model_dump(mode="json", exclude={"reference"}) for s in cfg.eval.sets],
                       "decode": baseline_params(b, cfg)}, sort_keys=True)
    return "baseline-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def grid_items(variants: list[Variant], design: AdaptiveSeeds | None = None):
    """The units of work of a grid study: (baselines by claim key, [(claim key, name)] baselines first,
    variants by config hash, the study fingerprint of that set). With an adaptive seed design,
    `variants` are its first stage and the design is part of the fingerprint (another target,
    another study)."""
    base_cfg = variants[0].config
    baselines = {baseline_key(base_cfg, b): b for b in base_cfg.eval.baselines}
    items: list[tuple[str, str]] = [(k, b.name) for k, b in baselines.items()]  # (claim key, name), baselines first
    items += [(v.config_hash, v.name) for v in variants]
    by_key = {v.config_hash: v for v in variants}
    keys = sorted(k for k, _ in items) + ([design.model_dump_json()] if design is not None else [])
    fingerprint = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]
    return baselines, items, by_key, fingerprint


def open_sweep_study(path: str | Path, abl, variants: list[Variant], opts: StudyOptions, *,
                     overrides: dict | None = None, workers: int = 1) -> tuple[Study, bool]:
    """Join or create the study of a grid (a worker, or a launcher that submits the workers); a new
    study gets the cost plan and the eval sets' published figures on its parent run."""
    _, _, _, fingerprint = grid_items(variants, abl.adaptive)
    st, created = start_study("sweep", path, abl, variants, fingerprint, opts)
    if created:
        base_cfg = variants[0].config
        if abl.adaptive is not None:
            st.parent.tags({records.SEED_DESIGN: abl.adaptive.model_dump_json()})
        _log_plan(st, path, overrides, opts.checkpoint_every, workers, abl.name)
        refs = {s.name: [r.model_dump(mode="json") for r in s.reference] for s in base_cfg.eval.sets if s.reference}
        if refs:
            st.parent.artifact_text(json.dumps(refs, indent=1, ensure_ascii=False), records.REFERENCES)
    return st, created


def select(variants: list[Variant], only: list[str] | None, path) -> list[Variant]:
    """The variants named by --only (all without it)."""
    if not only:
        return variants
    variants = [v for v in variants if v.name in only]
    if not variants:
        raise UsageError(f"--only matched no variant (names: see `sweep {path} --dry-run`)")
    return variants


def run_sweep(path: str | Path, opts: StudyOptions | None = None, *, only: list[str] | None = None,
              overrides: dict | None = None, workers: int = 1, helper_args: list[str] | None = None) -> SweepResult:
    """Run (or join, or resume) the study of an ablation grid (`--only` some variants, `--set`
    overrides); see the module docstring. `workers` > 1 starts local helper processes (workers.py)
    once the shared features are encoded (`helper_args`: more arguments for them, e.g. where the
    report goes). Any worker, a helper too, that finds every variant settled may close the study;
    exactly one does (`Study.closing`)."""
    opts = opts or StudyOptions()
    t0 = time.perf_counter()
    abl, variants = load_ablation(path, overrides)
    variants = select(variants, only, path)
    if world_size() > 1 and not is_main_process():
        if abl.adaptive is not None:  # the main rank may announce any seed the design can add
            variants = same_cells(load_ablation(path, overrides, seeds_per_cell=abl.adaptive.max)[1], variants)
        return _follow(variants, opts.checkpoint_root(), opts.checkpoint_every)
    base_cfg = variants[0].config
    baselines, items, by_key, _ = grid_items(variants, abl.adaptive)
    try:
        st, created = open_sweep_study(path, abl, variants, opts, overrides=overrides, workers=workers)
    except StudyClosed as e:  # e.g. the command printed to resume a study that another worker has since closed
        return SweepResult(e.experiment, e.parent_run_id or "", [], {}, time.perf_counter() - t0, study=e.name,
                           skipped=[n for _, n in items], already_closed=True)
    out = SweepResult(abl.name, st.parent.run_id, [], {}, 0.0, study=st.name)
    sweep = _Sweep(st, items, by_key, baselines, base_cfg, variants)
    if abl.adaptive is not None:
        sweep.design = abl.adaptive
        sweep.more_seeds = lambda n: same_cells(load_ablation(path, overrides, seeds_per_cell=n)[1], variants)
    helpers = None
    with st.session():
        try:
            if workers > 1:
                sweep.resources(encode_threads=encode_threads(workers, base_cfg.train.threads))
                helpers = start_helpers(workers - 1, path, st.name, opts, overrides, only, helper_args)
            sweep.work(out)
        finally:
            if world_size() > 1:
                broadcast(None)  # release the other ranks
            if helpers is not None:
                if st.stop.reason:
                    helpers.stop()
                failed = [c for c in helpers.wait() if c not in (0, 1)]  # 1: a variant failed (recorded)
                if failed:
                    log.warning("%d local worker(s) exited with %s; rerun the command to resume", len(failed), failed)
        items = sweep.items  # with an adaptive design: both stages (the second once decided)
        rows = {r["config_hash"]: r for r in st.store.rows(st.name)}
        done = all(rows.get(k, {}).get("status") == "finished" for k, _ in items)
        settled = all(rows.get(k, {}).get("status") in ("finished", "failed") for k, _ in items)
        if done and sweep.design is not None and sweep.decision is None:
            settled = done = False  # the first stage finished but no decision yet (interrupted while deciding)
        out.skipped = [n for k, n in items if rows.get(k, {}).get("status") == "finished" and n not in out.finished]
        if settled:  # whichever worker finds nothing left to run and no live claim closes the study
            with st.closing() as closer:
                if closer:
                    sweep.close(rows, done)
                    out.closed_here = True
        out.complete = settled  # every variant finished or failed: the report can be built
    out.interrupted = st.interrupted
    out.seconds = time.perf_counter() - t0
    return out


def same_cells(more: list[Variant], chosen: list[Variant]) -> list[Variant]:
    """The variants of `more` (every seed of the adaptive design) whose cell is among `chosen`'s
    (`--only` picks first-stage variants; their cells get the added seeds)."""
    cells = {v.cell for v in chosen}
    return [v for v in more if v.cell in cells]


def _log_plan(st: Study, path, overrides: dict | None, checkpoint_every: int, workers: int,
              experiment: str) -> None:
    """The cost plan and the seed plan (plan/) on the parent run, one line of each in the log, before
    any work. The seed plan's variance comes from the experiment's newest earlier sweep with 2+ seeds
    per cell, else a prior (labelled so in the artifact and the tag)."""
    from borealis_eval.plan import plan, power_plan

    p = None
    try:
        p = plan(path, probe=False, tracking_uri=st.client.tracking_uri, checkpoint_every=checkpoint_every,
                 overrides=overrides, workers=workers)
    except UserError as e:  # e.g. a hub model's shape unknown offline: the sweep itself may still run
        log.info("no cost plan: %s", e)
    if p is not None:
        log.info("plan: %s", p.summary())
        st.parent.artifact_text(json.dumps(p.to_json(), indent=1, ensure_ascii=False), records.PLAN)
        if p.timed:
            st.parent.metrics({records.PLAN_SECONDS: p.seconds, records.PLAN_DEVICE_HOURS: p.device_hours})
    try:
        pp = power_plan(path, p, overrides=overrides, from_runs=experiment, tracking_uri=st.client.tracking_uri,
                        exclude_parent=st.parent.run_id, require_runs=False)
    except UserError as e:
        log.info("no seed plan: %s", e)
        return
    log.info("seed plan: %s", "; ".join(f"{s.name} detects ≥ {100 * s.margin.detectable:.1f} pts" for s in pp.sets)
             + f" ({'prior' if pp.prior else 'earlier runs'})")
    st.parent.artifact_text(json.dumps(pp.to_json(), indent=1, ensure_ascii=False), records.PLAN_POWER)
    st.parent.tags({records.PLAN_VARIANCE: pp.variance_from})
    values = {}
    for s in pp.sets:
        if math.isfinite(s.margin.detectable):
            values[records.plan_detectable(s.name)] = 100 * s.margin.detectable
        if s.margin.needed is not None:
            values[records.plan_seeds_needed(s.name)] = s.margin.needed
    if values:
        st.parent.metrics(values)


class _Sweep:
    """One worker's part of a sweep study: claim, run, and (the last one out) close."""

    def __init__(self, st: Study, items: list[tuple[str, str]], by_key: dict[str, Variant],
                 baselines: dict[str, BaselineConfig], base_cfg: ExperimentConfig, variants: list[Variant]):
        self.st, self.items, self.by_key, self.base_cfg, self.variants = st, items, by_key, base_cfg, variants
        self.baselines = baselines
        self.main = base_cfg.eval.baseline.name  # the reference of the Δ-vs-baseline metrics
        self.design: AdaptiveSeeds | None = None  # an adaptive seed design (run_sweep sets it and more_seeds)
        self.more_seeds = None  # n -> the variants of n seeds per cell
        self.decision: SeedDecision | None = None
        self.first_stage = list(items)
        self.scores = PairedScores(self.main, base_cfg.eval.bootstrap)  # every system's per-utterance scores
        self._res: Resources | None = None

    def resources(self, encode_threads: int | None = None) -> Resources:
        """Prepared on first use (a worker that finds nothing to claim never loads data)."""
        if self._res is None:
            res = self._res = prepare_resources(self.variants, encode_threads=encode_threads)
            if res.bad_items:
                self.st.parent.artifact_json_lines(res.bad_items, records.BAD_ITEMS)
            self.st.parent.metrics({records.data_metric("bad_items"): len(res.bad_items),
                                    records.data_metric("train_items"): len(res.train_items),
                                    records.data_metric("text_items"): len(res.text_items),
                                    records.CACHE_ENCODED: res.cache.stats.encoded, records.CACHE_HITS: res.cache.stats.hits})
        return self._res

    def work(self, out: SweepResult) -> None:
        """Claim and run until nothing is left; wait while peers hold live claims (one may die)."""
        st = self.st
        while True:
            progressed = False
            for key, name in self.items:
                if st.stop.reason:
                    raise KeyboardInterrupt(st.stop.reason)
                claim = st.store.claim(st.name, key, name)
                if claim is None:
                    continue
                progressed = True
                if claim.previous_status:
                    log.info("%s: taking over (%s)", name,
                             RECLAIMABLE_NOTE.get(claim.previous_status, claim.previous_status))
                if key in self.baselines:
                    work = BaselineWork(self.baselines[key], self.base_cfg, key)
                    ok = run_claimed(st, work, self.resources, claim, compare=self.scores) is not None
                    (out.finished.append(name) if ok else out.failed.setdefault(name, "see the baseline run"))
                    continue
                v = self.by_key[key]
                log.info("variant %s (%s)", v.name, key)
                self._load_peer_baseline()
                if world_size() > 1:
                    broadcast(f"{st.name}/{key}")
                results = run_claimed(st, VariantWork(v), self.resources, claim, compare=self.scores)
                if results is None:
                    out.failed[v.name] = next((r["reason"] or "" for r in st.store.rows(st.name)
                                               if r["config_hash"] == key), "")
                else:
                    out.finished.append(v.name)
                    log.info("  %s", "  ".join(f"{records.set_metric('wer', r.name)}={r.metrics['wer']:.3f}" for r in results))
            if progressed:
                continue
            if self.design is not None and self.decision is None and self.second_stage(out):
                continue  # the adaptive design's added seeds: claimed by every worker, as the first stage was
            if not st.store.others_alive(st.name):
                return
            time.sleep(min(2.0, max(0.5, st.store.stale_after / 4)))  # a peer may die: its claim then turns stale

    def second_stage(self, out: SweepResult) -> bool:
        """An adaptive design after its first stage: the decision (made here by exactly one worker,
        through the claims row `records.SEED_DESIGN_KEY`, or read back from it), then the added
        seeds of every cell join the work (True if any did). False while the first stage is not
        all finished (a failed variant keeps the study open; a rerun retries it, then decides)."""
        st = self.st
        while self.decision is None:
            rows = {r["config_hash"]: r for r in st.store.rows(st.name)}
            if any(rows.get(k, {}).get("status") != "finished" for k, _ in self.first_stage):
                return False
            row = rows.get(records.SEED_DESIGN_KEY)
            if row is not None and row["status"] == "finished":
                self.decision = SeedDecision.from_json(row["reason"])
                if records.SEED_DECISION not in st.client.get_run(st.parent.run_id).data.tags:
                    st.parent.tags({records.SEED_DECISION: row["reason"]})  # the decider stopped before tagging
                    st.parent.flush()
                break
            claim = st.store.claim(st.name, records.SEED_DESIGN_KEY, "adaptive seed design")
            if claim is None:
                if row is not None and row["status"] == "failed":  # a peer's decision failed: its error says why
                    return False
                if st.stop.reason:
                    raise KeyboardInterrupt(st.stop.reason)
                time.sleep(min(2.0, max(0.5, st.store.stale_after / 4)))  # a peer is deciding
                continue
            try:
                with st.heartbeat(records.SEED_DESIGN_KEY):
                    decision = self._decide(rows)
            except (KeyboardInterrupt, TrainingInterrupted) as e:
                st.store.interrupt(st.name, records.SEED_DESIGN_KEY, str(e) or "interrupted")
                raise
            except BaseException as e:
                st.store.fail(st.name, records.SEED_DESIGN_KEY, failure_reason(e))
                raise
            st.parent.tags({records.SEED_DECISION: decision.to_json()})
            st.parent.flush()
            st.store.settle(st.name, records.SEED_DESIGN_KEY, decision.to_json())
            self.decision = decision
            log.info("adaptive seeds: %d -> %d per cell (%s)", decision.initial, decision.final, decision.reason)
        if self.decision.final <= self.decision.initial:
            return False
        have = {k for k, _ in self.items}
        added = [v for v in self.more_seeds(self.decision.final) if v.config_hash not in have]
        self.items += [(v.config_hash, v.name) for v in added]
        self.by_key.update({v.config_hash: v for v in added})
        self.variants = self.variants + added
        return bool(added)

    def _decide(self, rows: dict[str, dict]) -> SeedDecision:
        """The decision from the first stage's per-utterance scores (peers' read back)."""
        self._read_back(rows)
        stage = [self.by_key[k] for k, _ in self.first_stage if k in self.by_key]
        runs = {v.name: (v.cell, v.config.seed) for v in stage}
        cells = list({v.cell: {a: x for a, x in v.axes.items() if a != SEED_AXIS} for v in stage}.items())
        pairs = factor_pairs(cells)
        main = self.main if self.main in self.scores.systems() else None
        results, utt_se = first_stage_inputs(self.scores.by_set, runs, pairs, main, self.base_cfg.eval.bootstrap)
        if not utt_se:
            raise RuntimeError("adaptive seeds: no eval set has scores from every first-stage variant")
        d = self.design
        return decide_seeds(results, utt_se, initial=d.initial, max_seeds=d.max, target=d.target_pts / 100,
                            family_size=headline_family_size(cells, len(utt_se), main is not None),
                            estimator=d.estimator)

    def _read_back(self, rows: dict[str, dict]) -> None:
        """Per-utterance scores of every finished unit that another worker ran."""
        names = {k: n for k, n in self.items}
        have = self.scores.systems()
        missing = [(names[k], r["run_id"]) for k, r in rows.items()
                   if k in names and r["status"] == "finished" and r["run_id"] and names[k] not in have]
        if missing:
            res = self.resources()
            for n, rid in missing:
                for set_name, scores in _scores_from_run(self.st.client, rid, res).items():
                    self.scores.put(set_name, n, scores)

    def _load_peer_baseline(self) -> None:
        """Another worker scored the main baseline: read its predictions back for the paired tests."""
        key = next((k for k, b in self.baselines.items() if b.name == self.main), None)
        if key is None or self.main in self.scores.systems():
            return
        row = next((r for r in self.st.store.rows(self.st.name) if r["config_hash"] == key), None)
        if row and row["status"] == "finished" and row["run_id"]:
            for set_name, scores in _scores_from_run(self.st.client, row["run_id"], self.resources()).items():
                self.scores.put(set_name, self.main, scores)

    def close(self, rows: dict[str, dict], done: bool) -> None:
        """Last worker out: paired tests across every system (other workers' read back), parent status."""
        st = self.st
        names = {k: n for k, n in self.items}
        finished = [(names[k], r["run_id"]) for k, r in rows.items() if k in names and r["status"] == "finished"]
        have = self.scores.systems()
        missing = [(n, rid) for n, rid in finished if n not in have and rid]
        if missing or self.scores.by_set:
            res = self.resources() if missing else None
            for n, rid in missing:
                for set_name, scores in _scores_from_run(st.client, rid, res).items():
                    self.scores.put(set_name, n, scores)
            baselines = {b.name for b in self.baselines.values()}
            for n, rid in finished:  # a variant scored before the baseline finished (by a peer, or by this
                if n in baselines or not rid:  # worker, which may be a helper) has no Δ yet
                    continue
                todo = {k: v for k, v in self.scores.vs_main(n).items() if k not in st.client.get_run(rid).data.metrics}
                if todo:
                    peer = RunLogger(st.client, rid)
                    peer.metrics(todo)
                    peer.flush()
        for set_name, by_system in self.scores.by_set.items():
            if len(by_system) > 1:
                st.parent.artifact_json_lines(paired_rows(by_system, self.base_cfg.eval.bootstrap),
                                              records.paired(set_name))
        n_failed = sum(rows.get(k, {}).get("status") == "failed" for k, _ in self.items)
        st.parent.metrics({records.SWEEP_FINISHED: len(finished), records.SWEEP_FAILED: n_failed})
        if done:
            if records.ERROR in st.client.get_run(st.parent.run_id).data.tags:  # left by an earlier, failed attempt
                st.client.delete_tag(st.parent.run_id, records.ERROR)
            st.parent.end("FINISHED")
            st.store.close_study(st.name)
        else:  # the study stays open: a rerun retries the failed variants only
            st.parent.tags({records.ERROR: f"{n_failed} variant(s) failed; rerun the same command to retry them"})
            st.parent.end("FAILED")


def _scores_from_run(client: MlflowClient, run_id: str, res: Resources) -> dict[str, list]:
    """Per-utterance scores of a finished run (another worker's), read back from its predictions."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for es in res.eval_sets:
            try:
                path = client.download_artifacts(run_id, records.predictions(es.name), tmp)
            except Exception:  # noqa: BLE001 - no predictions for this set
                continue
            rows = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
            out[es.name] = utt_scores(rows, es.language)
    return out


def _follow(variants: list[Variant], checkpoint_root: Path, checkpoint_every: int) -> SweepResult:
    """A non-main DDP rank: train whatever variant the main process announces, until it says stop.

    Only the main process talks to MLflow and the claims store; this rank just joins the DDP
    group in train() (same config, same checkpoint directory, so a resume is resumed on every rank).
    """
    by_key = {v.config_hash: v for v in variants}
    res = None
    while True:
        msg = broadcast(None)
        if msg is None:
            return SweepResult("", "", [], {}, 0.0, complete=False)
        study, key = msg.split("/", 1)
        res = res or prepare_resources(variants)
        run_on_follower(by_key[key], res, checkpoint_root / study / key, checkpoint_every)
