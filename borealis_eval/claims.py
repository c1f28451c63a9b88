"""Shared study state in an RDB: which worker runs which variant, and one parent run per study.

Several `sweep`/`search` workers (processes or machines) point at one database (a sqlite file
for one machine, PostgreSQL for several) and coordinate through two tables:

- `borealis_studies`: one row per study (name, fingerprint of its variant set, parent MLflow
  run, open/closed). `borealis_open` maps a study key to the open study under a primary key, so
  workers started at the same moment join one study instead of creating two.
- `borealis_claims`: one row per (study, config hash). A worker owns a variant by inserting its
  row (the primary key lets exactly one insert win) or by a compare-and-swap UPDATE that takes
  over a row that is reclaimable: failed before this worker started, interrupted by a signal,
  or claimed by a worker whose heartbeat is stale (or, on the same host, whose pid is gone).

Nothing here knows about training; study.py and recipe.py drive it for sweep.py and search.py.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

_meta = sa.MetaData()
STUDIES = sa.Table(
    "borealis_studies", _meta,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("experiment", sa.String(255), nullable=False),
    sa.Column("parent_run_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # open | closed
    sa.Column("created", sa.Float, nullable=False),
)
OPEN = sa.Table(
    "borealis_open", _meta,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
)
CLAIMS = sa.Table(
    "borealis_claims", _meta,
    sa.Column("study", sa.String(255), primary_key=True),
    sa.Column("config_hash", sa.String(64), primary_key=True),
    sa.Column("variant", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # claimed | finished | failed | interrupted | pruned
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
)
CLOSERS = sa.Table(  # who closes a study: the first worker to find every unit settled (one row per study)
    "borealis_closers", _meta,
    sa.Column("study", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # claimed | finished | failed | interrupted
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
)

RECLAIMABLE_NOTE = {"failed": "failed in an earlier attempt", "interrupted": "interrupted by a signal",
                    "claimed": "its worker stopped (stale heartbeat or dead pid)"}


def worker_id() -> str:
    """host:pid:random[:slurm=JOB] - unique per process; host and pid let a restart see a dead local
    worker; under SLURM the job id lets `borealis-eval status` show the job's state beside the claim."""
    wid = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    job = slurm_job_id()
    return f"{wid}:slurm={job}" if job else wid


def slurm_job_id() -> str | None:
    """This process's SLURM job id as squeue/scancel name it (`123`, or `123_4` in a job array)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def _dead_local(worker: str) -> bool:
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def default_storage_url(tracking_uri: str) -> str:
    """Embedded default: `borealis-studies.db` beside a sqlite MLflow store, else in the working dir."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    else:
        folder = Path.cwd()
    return f"sqlite:///{(folder / 'borealis-studies.db').resolve()}"


@dataclass
class Claim:
    config_hash: str
    variant: str
    previous_status: str | None  # None: first attempt
    previous_run_id: str | None
    previous_worker: str | None
    previous_heartbeat: float | None
    attempts: int


class ClaimStore:
    def __init__(self, url: str, worker: str | None = None, stale_after: float = 300.0):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.url = url
        self.worker = worker or worker_id()
        self.stale_after = stale_after
        self.started = time.time()
        try:
            _meta.create_all(self.engine)
        except Exception:  # noqa: BLE001 - a concurrent worker created the tables between check and create
            _meta.create_all(self.engine)

    # ------------------------------------------------------------ studies
    def open_study(self, key: str, name: str, experiment: str) -> tuple[str, bool]:
        """Join the open study for `key`, or create `name`. Returns (study name, created).

        A study that already exists under `name` (however it was keyed) is joined if it is open;
        the caller checks `find_study` first for a closed one."""
        found = self.find_study(name)
        if found is not None and found["status"] == "open":
            return name, False
        with self.engine.begin() as c:
            try:
                c.execute(OPEN.insert().values(key=key, name=name))
                c.execute(STUDIES.insert().values(name=name, key=key, experiment=experiment, parent_run_id=None,
                                                  status="open", created=time.time()))
                return name, True
            except IntegrityError:
                pass
        with self.engine.begin() as c:
            row = c.execute(sa.select(OPEN.c.name).where(OPEN.c.key == key)).first()
        if row is None:  # closed between our insert and select: try again
            return self.open_study(key, name, experiment)
        return row[0], False

    def set_parent(self, study: str, run_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(STUDIES.update().where(STUDIES.c.name == study).values(parent_run_id=run_id))

    def parent(self, study: str, wait: float = 120.0) -> str:
        """The study's parent run id; waits while the creating worker is still making it."""
        deadline = time.time() + wait
        while True:
            with self.engine.begin() as c:
                rid = c.execute(sa.select(STUDIES.c.parent_run_id).where(STUDIES.c.name == study)).scalar()
            if rid:
                return rid
            if time.time() > deadline:
                raise RuntimeError(f"study {study}: no parent run appeared within {wait:.0f} s")
            time.sleep(0.5)

    def close_study(self, study: str) -> None:
        with self.engine.begin() as c:
            c.execute(OPEN.delete().where(OPEN.c.name == study))
            c.execute(STUDIES.update().where(STUDIES.c.name == study).values(status="closed"))

    def find_study(self, name: str) -> dict | None:
        with self.engine.begin() as c:
            row = c.execute(sa.select(STUDIES).where(STUDIES.c.name == name)).first()
        return dict(row._mapping) if row is not None else None

    def open_studies(self, key_prefix: str) -> list[dict]:
        """Open studies whose key is `key_prefix` or starts with `key_prefix:` (e.g. started with --new), newest first."""
        with self.engine.begin() as c:
            rows = c.execute(sa.select(STUDIES).join(OPEN, OPEN.c.name == STUDIES.c.name)
                             .where(sa.or_(OPEN.c.key == key_prefix, OPEN.c.key.startswith(key_prefix + ":")))
                             .order_by(STUDIES.c.created.desc())).all()
        return [dict(r._mapping) for r in rows]

    def latest_study(self, experiment: str) -> str | None:
        with self.engine.begin() as c:
            return c.execute(sa.select(STUDIES.c.name).where(STUDIES.c.experiment == experiment)
                             .order_by(STUDIES.c.created.desc()).limit(1)).scalar()

    # ------------------------------------------------------------ claims
    def claim(self, study: str, config_hash: str, variant: str) -> Claim | None:
        """Own this variant, or None (finished, or someone else's live claim, or failed since we started)."""
        now = time.time()
        with self.engine.begin() as c:
            try:
                c.execute(CLAIMS.insert().values(study=study, config_hash=config_hash, variant=variant, status="claimed",
                                                 worker=self.worker, run_id=None, heartbeat=now, attempts=1))
                return Claim(config_hash, variant, None, None, None, None, 1)
            except IntegrityError:
                pass
        with self.engine.begin() as c:
            row = c.execute(sa.select(CLAIMS).where(CLAIMS.c.study == study, CLAIMS.c.config_hash == config_hash)).first()
        if row is None or not self._reclaimable(row, now):
            return None
        with self.engine.begin() as c:  # compare-and-swap: exactly one taker wins
            won = c.execute(CLAIMS.update().where(
                CLAIMS.c.study == study, CLAIMS.c.config_hash == config_hash, CLAIMS.c.status == row.status,
                CLAIMS.c.worker == row.worker, CLAIMS.c.heartbeat == row.heartbeat, CLAIMS.c.attempts == row.attempts,
            ).values(status="claimed", worker=self.worker, heartbeat=now, attempts=row.attempts + 1, reason=None)).rowcount
        if won != 1:
            return None
        return Claim(config_hash, variant, row.status, row.run_id, row.worker, row.heartbeat, row.attempts + 1)

    def claim_close(self, study: str) -> bool:
        """Become the worker that closes `study` (paired tests, parent status, report): exactly one wins.
        A closer that died (stale heartbeat, dead local pid) or was interrupted is taken over; one that
        found failed variants (`close_failed`) is retried by a later invocation, as failed claims are."""
        now = time.time()
        with self.engine.begin() as c:
            try:
                c.execute(CLOSERS.insert().values(study=study, status="claimed", worker=self.worker, heartbeat=now,
                                                  attempts=1))
                return True
            except IntegrityError:
                pass
        with self.engine.begin() as c:
            row = c.execute(sa.select(CLOSERS).where(CLOSERS.c.study == study)).first()
        if row is None or not self._reclaimable(row, now):
            return False
        with self.engine.begin() as c:
            return c.execute(CLOSERS.update().where(
                CLOSERS.c.study == study, CLOSERS.c.status == row.status, CLOSERS.c.worker == row.worker,
                CLOSERS.c.heartbeat == row.heartbeat, CLOSERS.c.attempts == row.attempts,
            ).values(status="claimed", worker=self.worker, heartbeat=now, attempts=row.attempts + 1)).rowcount == 1

    def end_close(self, study: str, status: str) -> None:
        """finished (the study is closed), failed (variants failed: a rerun retries them and closes
        again) or interrupted."""
        with self.engine.begin() as c:
            c.execute(CLOSERS.update().where(CLOSERS.c.study == study, CLOSERS.c.worker == self.worker)
                      .values(status=status, heartbeat=time.time()))

    def heartbeat_close(self, study: str) -> None:
        with self.engine.begin() as c:
            c.execute(CLOSERS.update().where(CLOSERS.c.study == study, CLOSERS.c.worker == self.worker,
                                             CLOSERS.c.status == "claimed").values(heartbeat=time.time()))

    def _reclaimable(self, row, now: float) -> bool:
        if row.status == "interrupted":
            return True
        if row.status == "failed":
            return row.heartbeat < self.started  # retried by a later invocation, not by a peer of this one
        if row.status == "claimed":
            return row.worker != self.worker and (now - row.heartbeat > self.stale_after or _dead_local(row.worker))
        return False

    def _update(self, study: str, config_hash: str, **values) -> None:
        with self.engine.begin() as c:
            c.execute(CLAIMS.update().where(CLAIMS.c.study == study, CLAIMS.c.config_hash == config_hash,
                                            CLAIMS.c.worker == self.worker)
                      .values(heartbeat=time.time(), **values))

    def set_run(self, study: str, config_hash: str, run_id: str) -> None:
        self._update(study, config_hash, run_id=run_id)

    def heartbeat(self, study: str, config_hash: str) -> None:
        self._update(study, config_hash)

    def finish(self, study: str, config_hash: str, run_id: str | None = None) -> None:
        self._update(study, config_hash, status="finished", **({"run_id": run_id} if run_id else {}))

    def fail(self, study: str, config_hash: str, reason: str) -> None:
        self._update(study, config_hash, status="failed", reason=reason[:2000])

    def interrupt(self, study: str, config_hash: str, reason: str) -> None:
        self._update(study, config_hash, status="interrupted", reason=reason[:2000])

    def settle(self, study: str, config_hash: str, note: str) -> None:
        """A unit that is a decision, not a run (the adaptive seed design's, sweep.py): finished, with
        the decision kept in `reason` for every worker and every rerun to read."""
        self._update(study, config_hash, status="finished", reason=note)

    def prune(self, study: str, config_hash: str) -> None:
        """A search trial stopped early by its pruner: settled, never retried."""
        self._update(study, config_hash, status="pruned", reason="pruned")

    def rows(self, study: str) -> list[dict]:
        with self.engine.begin() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(CLAIMS).where(CLAIMS.c.study == study))]

    def others_alive(self, study: str) -> bool:
        """Does another worker hold a live claim in this study (so waiting may still pay off)?"""
        now = time.time()
        return any(r["status"] == "claimed" and r["worker"] != self.worker for r in self.rows(study)
                   if not (now - r["heartbeat"] > self.stale_after))
