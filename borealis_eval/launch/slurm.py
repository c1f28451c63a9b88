"""`sweep FILE --launcher slurm --workers N`: N SLURM jobs, each one worker of the shared study.

The launcher opens (or joins) the study itself, so its name and parent run exist before any job
starts; it then submits N jobs through submitit (one job array). Each job runs the ordinary worker
loop, `borealis-eval sweep FILE --study NAME` with the launcher's stores, in a child process
(`torchrun --nproc_per_node G` for G > 1 GPUs per worker): it claims variants through the claims
table like any other worker, and whichever worker finds nothing left closes the study and writes
the report (study.py). The job ids go on the parent run and into the claims database (jobs.py).

Preemption and time limits: SLURM sends the job's warning signal (submitit asks for USR2 90 s
ahead); submitit calls `WorkerJob.checkpoint`, which stops the child with SIGTERM (the worker
finishes its step, checkpoints, marks its claim interrupted) and hands submitit a fresh copy of
the job, which requeues it; the requeued job claims the interrupted variant again and resumes it
from the checkpoint. A job requeued by SLURM itself (`scontrol requeue`, a preempting partition
with PreemptMode=REQUEUE) gets SIGTERM and takes the same path.

Every worker must reach the same MLflow store, claims database and checkpoint folder. A launch
onto a partition of several nodes therefore refuses sqlite (or file) stores; on a one-node
partition they are allowed (the jobs share the node's disk).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from borealis_eval.errors import UsageError, UserError

log = logging.getLogger("borealis_eval")

STOP_WAIT_S = 60.0  # how long a stopping worker may take to checkpoint before the job gives up on it


class SlurmMissing(UserError):
    pass


class SharedStoreRequired(UserError):
    pass


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    time_min: int = 240
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    mem_gb: float | None = None
    sbatch: dict = field(default_factory=dict)
    log_dir: str | None = None

    @classmethod
    def resolve(cls, block, cli: dict) -> "SlurmOptions":
        """The ablation's `launcher:` block (config/schema.py LauncherConfig), overridden by the
        command line's options that were given (None: not given)."""
        base = cls(**block.model_dump()) if block is not None else cls()
        for k, v in cli.items():
            if v is None:
                continue
            if k == "sbatch":
                base.sbatch = {**base.sbatch, **v}
            else:
                setattr(base, k, v)
        return base


def require_slurm() -> None:
    """SLURM's client commands and submitit, or a one-line error naming what to install."""
    missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(c) is None]
    if missing:
        raise SlurmMissing(f"--launcher slurm needs SLURM's client commands ({', '.join(missing)} not found on PATH): "
                           "run it on the cluster's login node, or install them (Debian/Ubuntu: apt-get install "
                           "slurm-client, configured for your cluster)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmMissing("--launcher slurm needs the Python package submitit: pip install submitit") from None


def partition_nodes(partition: str | None) -> int:
    """Nodes in the partition the jobs go to (the default partition when None)."""
    p = subprocess.run(["sinfo", "-h", "-o", "%P %D"], capture_output=True, text=True)
    if p.returncode != 0:
        raise UserError(f"sinfo failed: {(p.stderr.strip().splitlines() or ['no output'])[0]}")
    nodes: dict[str, int] = {}
    default = None
    for line in p.stdout.splitlines():
        name, _, n = line.partition(" ")
        if name.endswith("*"):
            name = name[:-1]
            default = name
        nodes[name] = nodes.get(name, 0) + int(n or 0)
    part = partition or default
    if part not in nodes:
        raise UsageError(f"SLURM partition '{partition}' does not exist (partitions: {', '.join(sorted(nodes))})")
    return nodes[part]


def local_store(url: str) -> bool:
    """A store that lives in a file on one machine (sqlite, a folder), not a server."""
    return url.startswith(("sqlite:", "file:")) or "://" not in url


def check_shared_stores(tracking_uri: str, storage: str, nodes: int, partition: str | None) -> None:
    if nodes <= 1:
        return
    bad = []
    if local_store(tracking_uri):
        bad.append(f"the MLflow store {tracking_uri} (use an MLflow server: --tracking-uri http://HOST:5000)")
    if local_store(storage):
        bad.append(f"the claims database {storage} (use PostgreSQL: --storage postgresql+psycopg://USER@HOST/DB)")
    if bad:
        raise SharedStoreRequired(f"partition {partition or '(default)'} has {nodes} nodes, and workers on other nodes "
                                  f"cannot safely share {' or '.join(bad)}")


def worker_command(argv: list[str], gpus: int) -> list[str]:
    """The child a job runs: one worker process, or torchrun with one process per GPU (DDP)."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
                "-m", "borealis_eval.cli", *argv]
    return [sys.executable, "-m", "borealis_eval.cli", *argv]


def _ignore_usr2() -> None:
    # SLURM signals every process of the job step; the warning signal is the job's (WorkerJob.checkpoint)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class WorkerJob:
    """What one SLURM job runs (pickled by submitit): the worker loop on the shared study, as a child."""

    def __init__(self, argv: list[str], cwd: str, gpus: int):
        self.argv, self.cwd, self.gpus = argv, cwd, gpus
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        return {"argv": self.argv, "cwd": self.cwd, "gpus": self.gpus}

    def __setstate__(self, state):
        self.__init__(**state)

    def __call__(self) -> int:
        cmd = worker_command(self.argv, self.gpus)
        print("worker:", shlex.join(cmd), flush=True)
        self._proc = subprocess.Popen(cmd, cwd=self.cwd, preexec_fn=_ignore_usr2)
        rc = self._proc.wait()
        if rc not in (0, 1, 130):  # 1: a variant failed (recorded in MLflow); 130: stopped by a signal, resumable
            raise RuntimeError(f"worker exited with status {rc}")
        return rc

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on SLURM's warning signal (time limit, preemption): stop the worker
        gracefully (it checkpoints and marks its claim interrupted), then requeue a fresh copy."""
        import submitit

        p = self._proc
        if p is not None and p.returncode is None:
            with suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            if not _reaped_within(p.pid, STOP_WAIT_S):
                with suppress(ProcessLookupError):
                    p.kill()  # its claim turns stale; a peer or the requeued job takes it over
        return submitit.helpers.DelayedSubmission(WorkerJob(self.argv, self.cwd, self.gpus))


def _reaped_within(pid: int, seconds: float) -> bool:
    """Wait up to `seconds` for the child `pid` to exit, reaping it. Not Popen.wait/poll: submitit
    calls `checkpoint` from its signal handler, which interrupts `__call__`'s `Popen.wait()` while
    that holds the Popen's wait lock, so a second wait could never take the lock and would sleep its
    whole timeout beside a child that had long exited (measured: every USR2 cost STOP_WAIT_S)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already
            return True
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@dataclass
class Launched:
    study: str
    parent_run_id: str
    experiment: str
    job_ids: list[str]
    log_dir: str
    storage: str
    tracking_uri: str
    created: bool


def worker_argv(path: Path, study: str, tracking_uri: str, storage: str, checkpoint_dir: str | None,
                checkpoint_every: int, stale_after: float, overrides: dict | None, only: list[str] | None,
                report_args: list[str]) -> list[str]:
    argv = ["--tracking-uri", tracking_uri, "sweep", str(path), "--study", study, "--storage", storage,
            "--no-progress", "--checkpoint-every", str(checkpoint_every), "--stale-after", str(stale_after)]
    if checkpoint_dir:
        argv += ["--checkpoint-dir", str(Path(checkpoint_dir).resolve())]
    if only:
        argv += ["--only", *only]
    for k, v in (overrides or {}).items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    return argv + report_args


def launch_sweep(path: str | Path, workers: int, cli_options: dict, *, tracking_uri: str | None = None,
                 only: list[str] | None = None, study: str | None = None, new: bool = False,
                 storage: str | None = None, checkpoint_dir: str | None = None, checkpoint_every: int = 50,
                 stale_after: float = 300.0, overrides: dict | None = None,
                 report_args: list[str] | None = None) -> Launched:
    """Open (or join) the grid's study here, then submit `workers` jobs that work on it."""
    from borealis_eval import records
    from borealis_eval.claims import default_storage_url
    from borealis_eval.config import load_ablation
    from borealis_eval.launch import jobs
    from borealis_eval.study import StudyOptions
    from borealis_eval.sweep import open_sweep_study, select
    from borealis_eval.tracking import TrackingConfig

    require_slurm()
    import submitit

    path = Path(path).resolve()
    abl, variants = load_ablation(path, overrides)
    variants = select(variants, only, path)
    opts = SlurmOptions.resolve(abl.launcher, cli_options)
    tc = TrackingConfig.load(tracking_uri=tracking_uri)
    uri = tc.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # the jobs may start elsewhere: absolute
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    store_url = storage or os.environ.get("BOREALIS_STORAGE") or default_storage_url(uri)
    check_shared_stores(uri, store_url, partition_nodes(opts.partition), opts.partition)

    study_opts = StudyOptions(tracking_uri=uri, study=study, new=new, storage=store_url, checkpoint_dir=checkpoint_dir,
                              checkpoint_every=checkpoint_every, stale_after=stale_after, progress=False)
    st, created = open_sweep_study(path, abl, variants, study_opts, overrides=overrides, workers=workers)
    folder = Path(opts.log_dir or Path("slurm-logs") / st.name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict = {"name": f"borealis-{st.name}"[:64], "timeout_min": opts.time_min, "nodes": 1,
                    "tasks_per_node": 1, "cpus_per_task": opts.cpus_per_worker}
    if opts.gpus_per_worker:
        params["gpus_per_node"] = opts.gpus_per_worker
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.account:
        params["slurm_account"] = opts.account
    if opts.sbatch:
        params["slurm_additional_parameters"] = dict(opts.sbatch)
    ex.update_parameters(**params)
    argv = worker_argv(path, st.name, uri, store_url, checkpoint_dir, checkpoint_every, stale_after, overrides,
                       only, report_args or [])
    job = WorkerJob(argv, str(Path.cwd()), opts.gpus_per_worker)
    try:
        with ex.batch():
            handles = [ex.submit(job) for _ in range(workers)]
    except Exception as e:  # noqa: BLE001 - sbatch refused: its own message says why (partition, account...)
        raise UserError(f"sbatch refused the jobs: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") \
            from None
    ids = [h.job_id for h in handles]
    jobs.record(st.store.engine, st.name, ids, str(folder))
    old = st.client.get_run(st.parent.run_id).data.tags.get(records.SLURM_JOB_IDS)
    st.parent.tags({records.LAUNCHER: "slurm", records.SLURM_JOB_IDS: ",".join(([old] if old else []) + ids),
                    records.SLURM_LOG_DIR: str(folder)})
    st.parent.flush()
    log.info("slurm options: %s", json.dumps({k: v for k, v in asdict(opts).items() if v not in (None, {}, 0)}))
    return Launched(st.name, st.parent.run_id, abl.name, ids, str(folder), store_url, uri, created)
