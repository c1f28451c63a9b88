"""Follow and stop a study: its claims beside its SLURM jobs' states (`borealis-eval status`), a
launcher that waits for the study to close (`sweep --launcher slurm --wait`), and `cancel`
(scancel the study's jobs, then release the claims their workers still hold)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa

from borealis_eval.claims import CLAIMS, STUDIES, ClaimStore
from borealis_eval.errors import UsageError
from borealis_eval.launch import jobs

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "gone"}


@dataclass
class StudyState:
    name: str
    status: str  # open | closed
    parent_run_id: str | None
    claims: list[dict]  # variant, status, attempts, worker, job, job_state, heartbeat_age_s
    jobs: dict[str, str]  # job id -> SLURM state
    log_dir: str | None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.claims:
            out[c["status"]] = out.get(c["status"], 0) + 1
        return out

    def summary(self) -> str:
        c = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items())) or "nothing claimed yet"
        by_state: dict[str, int] = {}
        for s in self.jobs.values():
            by_state[s] = by_state.get(s, 0) + 1
        j = ", ".join(f"{n} {s.lower()}" for s, n in sorted(by_state.items()))
        return f"study {self.name} {self.status}: {c}" + (f"; jobs: {j}" if j else "")


def resolve_study(store: ClaimStore, study: str | None) -> str:
    if study:
        if store.find_study(study) is None:
            raise UsageError(f"no study named '{study}' in {store.url}")
        return study
    with store.engine.begin() as c:
        name = c.execute(sa.select(STUDIES.c.name).order_by(STUDIES.c.created.desc()).limit(1)).scalar()
    if name is None:
        raise UsageError(f"no study in {store.url} (give --storage, or --tracking-uri for the default beside it)")
    return name


def state(store: ClaimStore, study: str) -> StudyState:
    row = store.find_study(study) or {}
    recorded = jobs.of_study(store.engine, study)
    ids = [j["job_id"] for j in recorded]
    claims = store.rows(study)
    ids += [j for j in {jobs.job_of_worker(c["worker"]) for c in claims} if j and j not in ids]
    job_states = jobs.states(ids)
    now = time.time()
    rows = []
    for c in sorted(claims, key=lambda r: r["variant"]):
        job = jobs.job_of_worker(c["worker"])
        rows.append({"variant": c["variant"], "status": c["status"], "attempts": c["attempts"],
                     "worker": c["worker"].rsplit(":slurm=", 1)[0], "job": job or "",
                     "job_state": job_states.get(job, "") if job else "",
                     "heartbeat_age_s": round(now - c["heartbeat"], 1)})
    return StudyState(study, row.get("status", "?"), row.get("parent_run_id"), rows, job_states,
                      recorded[0]["log_dir"] if recorded else None)


def cancel(store: ClaimStore, study: str, reason: str = "cancelled") -> tuple[list[str], int]:
    """scancel the study's jobs, then mark the claims still held by their workers interrupted (a
    worker that got the signal in time did so itself). Returns (job ids cancelled, claims released)."""
    ids = [j["job_id"] for j in jobs.of_study(store.engine, study)]
    live = [j for j, s in jobs.states(ids).items() if s not in ENDED]
    if live:
        subprocess.run(["scancel", *live], check=False)
        deadline = time.time() + 60  # the workers checkpoint and release their claims on SIGTERM
        while time.time() < deadline and any(s not in ENDED for s in jobs.states(live).values()):
            time.sleep(1.0)
    released = 0
    with store.engine.begin() as c:
        for r in store.rows(study):
            if r["status"] == "claimed" and jobs.job_of_worker(r["worker"]) in ids:
                released += c.execute(CLAIMS.update().where(
                    CLAIMS.c.study == study, CLAIMS.c.config_hash == r["config_hash"], CLAIMS.c.worker == r["worker"],
                    CLAIMS.c.status == "claimed").values(status="interrupted", reason=reason)).rowcount
    return live, released


def wait(store: ClaimStore, study: str, every: float = 10.0, say: Callable[[str], None] = print) -> bool:
    """Print the study's progress whenever it changes until the study has closed and its jobs have
    ended (True; the closing job has then written the report), or until every job has ended with the
    study still open (False: failed variants or jobs that died). Once the study is closed, jobs still
    pending (e.g. requeued) have nothing left to do and are cancelled."""
    last = None
    cancelled: set[str] = set()
    while True:
        s = state(store, study)
        line = s.summary()
        if line != last:
            say(line)
            last = line
        if s.status == "closed":
            idle = [j for j, v in s.jobs.items() if v in ("PENDING", "REQUEUED", "REQUEUE_HOLD") and j not in cancelled]
            if idle:
                subprocess.run(["scancel", *idle], check=False)
                cancelled.update(idle)
        if s.jobs and all(v in ENDED for v in s.jobs.values()):
            return (store.find_study(study) or {}).get("status") == "closed"
        if not s.jobs and s.status == "closed":
            return True
        time.sleep(every)
