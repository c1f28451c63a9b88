"""A launched study's SLURM jobs: recorded beside the claims (one row per job) and their states.

The table lives in the claims database, so `borealis-eval status` and `cancel` find a study's
jobs from any machine that reaches that database. States come from squeue (pending, running,
requeued...) and, for a job no longer queued, `scontrol show job` (completed, failed, cancelled,
timeout) while the controller still remembers it; a job it has forgotten shows as `gone`.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import sqlalchemy as sa

_meta = sa.MetaData()
JOBS = sa.Table(
    "borealis_jobs", _meta,
    sa.Column("study", sa.String(255), primary_key=True),
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("log_dir", sa.Text, nullable=False),
    sa.Column("submitted", sa.Float, nullable=False),
)


def record(engine: sa.Engine, study: str, job_ids: list[str], log_dir: str) -> None:
    _meta.create_all(engine)
    now = time.time()
    with engine.begin() as c:
        for j in job_ids:
            c.execute(JOBS.insert().values(study=study, job_id=j, log_dir=log_dir, submitted=now))


def of_study(engine: sa.Engine, study: str) -> list[dict]:
    _meta.create_all(engine)
    with engine.begin() as c:
        return [dict(r._mapping) for r in c.execute(sa.select(JOBS).where(JOBS.c.study == study)
                                                     .order_by(JOBS.c.submitted, JOBS.c.job_id))]


def states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (upper case, as squeue prints it), `gone` once SLURM forgot it,
    `unknown` where SLURM's commands are not installed here."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return {j: "unknown" for j in job_ids}
    out: dict[str, str] = {}
    p = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in job_ids:
            out[parts[0]] = parts[1]
    for j in job_ids:
        if j in out:
            continue
        q = subprocess.run(["scontrol", "-o", "show", "job", j], capture_output=True, text=True)
        state = next((f.split("=", 1)[1] for f in q.stdout.split() if f.startswith("JobState=")), None)
        out[j] = state or "gone"
    return out


def job_of_worker(worker: str) -> str | None:
    """The SLURM job id inside a claim's worker id (claims.worker_id), if it ran under SLURM."""
    tail = worker.rsplit(":", 1)[-1]
    return tail.removeprefix("slurm=") if tail.startswith("slurm=") else None
