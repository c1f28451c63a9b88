"""The life of a study, shared by `sweep` (a grid) and `search` (Optuna's samples): one mechanism.

A study is one parent MLflow run plus a claims table (claims.py) that several workers share.
`start_study` checks everything before the first unit of work and `open_study` joins the open
study of a key or creates it; `Study.session` installs the signal handling (`StopFlag`) and
records how the parent run ended; `Study.heartbeat` keeps a claim fresh while its unit runs.
What happens to one claimed unit (a variant, a trial, a baseline), from opening its run to
recording how it ended, is recipe.py's `run_claimed`; this module does not know what a unit does.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mlflow.tracking import MlflowClient

from borealis_eval import records
from borealis_eval.claims import Claim, ClaimStore
from borealis_eval.config import Variant
from borealis_eval.errors import TrainingDiverged, TrainingInterrupted, TrainingOOM, is_oom
from borealis_eval.tracking import RunLogger

log = logging.getLogger("borealis_eval")

EVAL_OOM_HINT = ("out of memory outside training: lower eval.batch_size (eval.baseline.batch_size for the Whisper "
                 "baseline) or eval.window_seconds")


def failure_reason(e: BaseException) -> str:
    """One line for the run's error tag and the claim: the exception, plus a hint for an out-of-memory."""
    if is_oom(e) and not isinstance(e, TrainingOOM):  # training OOMs carry their own hint; first, as the
        return f"{type(e).__name__} ({EVAL_OOM_HINT}): {e}"  # allocator's message is long and gets cut
    return f"{type(e).__name__}: {e}"


def record_failure(run: RunLogger, e: BaseException, status: str | None = None) -> None:
    """Tag the run with the error (and the step/batch of a training fault), keep the traceback, end it."""
    status = status or ("KILLED" if isinstance(e, (KeyboardInterrupt, TrainingInterrupted)) else "FAILED")
    extra = {}
    if isinstance(e, (TrainingDiverged, TrainingOOM)):
        extra = {records.ERROR_STEP: e.step, records.ERROR_BATCH_IDS: ",".join(e.ids[:50])}
    elif is_oom(e):
        extra = {records.ERROR_HINT: EVAL_OOM_HINT}
    try:
        run.tags({records.ERROR: failure_reason(e)[:5000], **extra})
        run.artifact_text("".join(traceback.format_exception(e)), records.ERROR_TEXT)
        run.end(status)
    except Exception as err:  # noqa: BLE001 - never mask the original error
        log.warning("could not record the failure in MLflow: %s", str(err).splitlines()[0] if str(err) else err)


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

    def __init__(self, store: ClaimStore, study: str, key: str | None, every: float):  # key None: the close claim
        self.store, self.study, self.key, self.every = store, study, key, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if self.key is None:
                    self.store.heartbeat_close(self.study)
                else:
                    self.store.heartbeat(self.study, self.key)
            except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one retries
                log.warning("heartbeat for %s failed", self.key, exc_info=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def close_previous_attempt(client: MlflowClient, claim: Claim) -> None:
    """A run left RUNNING by a worker that died (kill -9, lost node) is marked FAILED with the reason."""
    if not claim.previous_run_id:
        return
    try:
        run = client.get_run(claim.previous_run_id)
    except Exception:  # noqa: BLE001 - the run was never created or the store lost it
        return
    if run.info.status in ("RUNNING", "SCHEDULED"):
        if records.ERROR not in run.data.tags:  # else the worker recorded why but could not close the run (store down)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(claim.previous_heartbeat or 0))
            client.set_tag(run.info.run_id, records.ERROR, f"worker {claim.previous_worker} stopped without reporting "
                           f"(killed or lost; last heartbeat {when} UTC); variant taken over by a restarted worker")
        client.set_terminated(run.info.run_id, "FAILED")


@dataclass(frozen=True)
class StudyOptions:
    """How this worker takes part in a study (sweep or search): built once from the command line
    (cli.py, the options shared by `sweep` and `search`) and passed down whole."""

    tracking_uri: str | None = None  # else mlflow.yaml / $MLFLOW_TRACKING_URI
    study: str | None = None  # join (or start) the study of this name
    new: bool = False  # a fresh study even if one is open (no resume)
    storage: str | None = None  # the claims database; else $BOREALIS_STORAGE or beside the tracking store
    checkpoint_dir: str | Path | None = None  # else <cache>/checkpoints
    checkpoint_every: int = 50
    stale_after: float = 300.0  # seconds without a heartbeat before a claim may be taken over
    progress: bool = True

    def checkpoint_root(self) -> Path:
        from borealis_eval.paths import cache_root

        return Path(self.checkpoint_dir) if self.checkpoint_dir else cache_root() / "checkpoints"


@dataclass
class Study:
    """One study (sweep or search): its MLflow parent, its claims, where checkpoints go."""

    name: str
    client: MlflowClient
    exp_id: str
    parent: RunLogger
    store: ClaimStore
    checkpoint_root: Path
    checkpoint_every: int
    progress: bool = True
    stop: StopFlag = field(default_factory=StopFlag)
    interrupted: str | None = None
    system_metrics: bool = False  # MLflow's system-metrics monitor on each variant/baseline run (mlflow.yaml)

    def checkpoint_dir(self, key: str) -> Path:
        return self.checkpoint_root / self.name / key

    def heartbeat(self, key: str | None) -> Heartbeat:
        return Heartbeat(self.store, self.name, key, max(0.5, self.store.stale_after / 4))

    @contextmanager
    def session(self) -> Iterator["Study"]:
        """Signals are handled while inside; an interruption ends the block quietly (`self.interrupted`
        says why; the parent run is KILLED unless a peer is still working), any other error marks the
        parent run FAILED and propagates."""
        with self.stop:
            try:
                yield self
            except (KeyboardInterrupt, TrainingInterrupted) as e:
                self.interrupted = getattr(e, "reason", None) or str(e) or self.stop.reason or "interrupted"
                if not self.store.others_alive(self.name):
                    record_failure(self.parent, e, "KILLED")
            except BaseException as e:
                record_failure(self.parent, e)
                raise

    @contextmanager
    def closing(self) -> Iterator[bool]:
        """Whichever worker finds every unit of the study settled closes it (paired tests, parent run,
        report): the one that wins the close claim (claims.py) gets True, the others False. The claim
        is kept fresh while the block runs; it ends `finished` if the block closed the study, `failed`
        if the study stays open (failed variants: a rerun retries them and closes again), and
        `interrupted` on an error (the next worker or rerun closes)."""
        if not self.store.claim_close(self.name):
            yield False
            return
        with self.heartbeat(None):
            try:
                yield True
            except BaseException:
                self.store.end_close(self.name, "interrupted")
                raise
        closed = (self.store.find_study(self.name) or {}).get("status") == "closed"
        self.store.end_close(self.name, "finished" if closed else "failed")


def open_study(store: ClaimStore, client: MlflowClient, exp_id: str, key: str, default_name: str,
               run_name: str, tags: dict, artifact: tuple[str, str] | None, checkpoint_root: Path,
               checkpoint_every: int, progress: bool = True) -> tuple[Study, bool]:
    """Join the open study for `key` (its parent run back to RUNNING), or create it with a parent run."""
    name, created = store.open_study(key, default_name, client.get_experiment(exp_id).name)
    if created:
        parent = RunLogger.start(client, exp_id, run_name, {**tags, records.STUDY: name})
        if artifact:
            parent.artifact_text(*artifact)
        store.set_parent(name, parent.run_id)
    else:
        parent = RunLogger(client, store.parent(name))
        if client.get_run(parent.run_id).info.status != "RUNNING":
            client.update_run(parent.run_id, status="RUNNING")
        log.info("joining study %s (parent run %s)", name, parent.run_id)
    return Study(name, client, exp_id, parent, store, checkpoint_root, checkpoint_every, progress), created


class StudyClosed(Exception):
    """`--study NAME` names a study that is closed (every unit finished): there is nothing to run."""

    def __init__(self, name: str, parent_run_id: str | None, experiment: str):
        super().__init__(f"study {name} is closed")
        self.name, self.parent_run_id, self.experiment = name, parent_run_id, experiment


def resume_command(study: str, argv: list[str] | None = None) -> str:
    """The command line that rejoins `study`: this one, without --new, with --study NAME."""
    args, out, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--study":
            skip = True
        elif a != "--new" and not a.startswith("--study="):
            out.append(a)
    return shlex.join(["borealis-eval", *out, "--study", study])


def _unfinished(store: ClaimStore, kind: str, ablation: str, fingerprint: str, key: str, new: bool) -> str:
    """The study key to open. An unfinished study of the same ablation is never silently left behind:
    without --new, a study of the same variant set started with --new is joined (and named); with
    --new, or for another variant set, the log names the unfinished ones."""
    others = [s for s in store.open_studies(f"{kind}:{ablation}") if not s["key"].startswith(key)]
    if others:
        log.warning("unfinished study of ablation %s with another variant set: %s (resume it with --study NAME)",
                    ablation, ", ".join(s["name"] for s in others))
    same = store.open_studies(key)
    if same and not new and not any(s["key"] == key for s in same):
        s = same[0]
        log.warning("joining unfinished study %s of this file (started %s UTC with --new); pass --new to start "
                    "another", s["name"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(s["created"])))
        return s["key"]
    if same and new:
        log.warning("unfinished study of this file: %s; starting another one (--new); resume the old one with "
                    "--study NAME", ", ".join(s["name"] for s in same))
    return key


def check_model_refs(variants: list[Variant]) -> None:
    """Every model reference resolves (offline hub refs are in the local cache), and every noise
    recording named for augmentation exists, before any work starts."""
    from borealis_eval.data.augment import noise_files
    from borealis_eval.models.refs import check_available

    refs = set()
    for v in variants:
        m = v.config.model
        refs.update(r for r in (m.encoder.ref, m.llm.ref, m.llm.tokenizer if isinstance(m.llm.tokenizer, str) else None)
                    if r)
        refs.update(b.ref for b in v.config.eval.baselines)
    for r in sorted(refs):
        check_available(r)
    for v in variants:
        aug = v.config.data.augment
        if aug is not None and aug.noise is not None and aug.noise.files:
            noise_files(aug.noise.files)


def start_study(kind: str, path: str | Path, abl, check: list[Variant], fingerprint: str,
                opts: StudyOptions) -> tuple[Study, bool]:
    """Everything before the first variant, for a sweep or a search (`kind`): the tracking store
    and the model references are checked (fail before any work), the experiment exists, and the
    study is joined (same ablation, same variant set or search: same `fingerprint`) or created.

    A named `study` must have been started with the same fingerprint.
    """
    from borealis_eval.claims import default_storage_url
    from borealis_eval.errors import UsageError
    from borealis_eval.tracking import TrackingConfig, experiment_id, preflight

    path = Path(path)
    study = opts.study
    tc = TrackingConfig.load(tracking_uri=opts.tracking_uri)
    client = preflight(tc)
    check_model_refs(check)
    exp_id = experiment_id(client, tc, abl.name, abl.description)
    store = ClaimStore(opts.storage or os.environ.get("BOREALIS_STORAGE") or default_storage_url(tc.tracking_uri),
                       stale_after=opts.stale_after)
    key = f"named:{study}" if study else f"{kind}:{abl.name}:{fingerprint}"
    if study:
        found = store.find_study(study)
        if found is not None and found["status"] == "closed":
            raise StudyClosed(study, found["parent_run_id"], found["experiment"])
    else:
        key = _unfinished(store, kind, abl.name, fingerprint, key, opts.new)
    if opts.new:
        key += f":{time.time_ns()}"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())  # run and study names carry UTC time
    tags = {records.ROLE: records.PARENT, records.ABLATION: str(path), records.DESCRIPTION: abl.description,
            records.NOTE: abl.description, records.FINGERPRINT: fingerprint,
            # the report's margins of "equivalent within ±m" (analysis.margin_pts; no effect on training)
            records.MARGINS: json.dumps({"default": abl.analysis.margin_pts, "sets": abl.analysis.sets})}
    if kind != "sweep":
        tags[records.KIND] = kind
    default_name = study or f"{abl.name}-{'' if kind == 'sweep' else kind + '-'}{stamp}-{os.urandom(2).hex()}"
    opened, created = open_study(store, client, exp_id, key, default_name, f"{kind}-{stamp}", tags,
                                 (path.read_text(encoding="utf-8"), records.ablation_copy(path.name)),
                                 opts.checkpoint_root(), opts.checkpoint_every, opts.progress)
    opened.system_metrics = tc.monitors_system
    if created and opts.new:
        log.warning("new study %s; resume it with: %s", opened.name, resume_command(opened.name))
    if study and not created:
        got = client.get_run(opened.parent.run_id).data.tags.get(records.FINGERPRINT)
        if got and got != fingerprint:
            raise UsageError(f"study '{study}' was started with another {kind} (fingerprint {got}, this file "
                             f"{fingerprint}); use another --study name")
    return opened, created
