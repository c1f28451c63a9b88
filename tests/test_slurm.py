"""`sweep --launcher slurm`: a tiny CPU sweep on a real one-node SLURM cluster, and the launcher's refusals.

The cluster is scripts/start_slurm.sh's (the Makefile's test target starts it and passes its
slurm.conf as BOREALIS_TEST_SLURM_CONF; without it the SLURM test skips and says why). The claims
database is PostgreSQL when BOREALIS_TEST_PG_URL is set (as `make test` does), else sqlite: the
cluster has one node, so the jobs share its disk (a launch onto several nodes refuses sqlite, tested
below). The MLflow store is a sqlite file for the same reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
import torch

from _tiny import tiny_ablation
from test_workers import worker_env

REPO = Path(__file__).resolve().parents[1]
SLURM_CONF = os.environ.get("BOREALIS_TEST_SLURM_CONF", "")


def _scontrol(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, env={**os.environ,
                                                                                     "SLURM_CONF": SLURM_CONF})


def _job_state(job: str) -> str:
    out = _scontrol("-o", "show", "job", job).stdout
    return next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "gone")


def _claims(storage: str, study: str) -> list[dict]:
    eng = sa.create_engine(storage)
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT variant, status, worker, attempts FROM borealis_claims WHERE study = :s"),
                         {"s": study}).mappings().all()
    eng.dispose()
    return [dict(r) for r in rows]


@pytest.mark.skipif(not SLURM_CONF or not Path(SLURM_CONF).is_file(),
                    reason="BOREALIS_TEST_SLURM_CONF is not set (make test starts a one-node cluster with "
                           "scripts/start_slurm.sh)")
def test_slurm_sweep_two_workers_requeue_resumes_and_closes(tmp_path, corpus):
    """Two SLURM jobs split a 2-variant grid. In the middle of training one job is requeued by SLURM
    (`scontrol requeue`: SIGTERM) and the other gets the warning signal of a time limit or preemption
    (USR2: submitit's checkpoint, then it requeues itself). Each worker checkpoints and releases its
    claim; both variants resume from their checkpoints and FINISH exactly once; one parent run carries
    the job ids; the last worker closes the study and writes the report."""
    name = f"tiny_slurm_{uuid.uuid4().hex[:6]}"
    abl = tiny_ablation(tmp_path, corpus, name, grid={"seed": [0, 1]}, steps=24)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = os.environ.get("BOREALIS_TEST_PG_URL") or f"sqlite:///{tmp_path}/studies.db"
    report = tmp_path / "report"
    env = {**worker_env(tmp_path), "SLURM_CONF": SLURM_CONF, "BOREALIS_WAIT_EVERY": "1",
           "PYTHONPATH": f"{REPO / 'tests' / '_slow_site'}:{REPO}",
           # training steps after the 3rd take 0.3 s (tests/_slow_site): long enough to signal mid-training
           "BOREALIS_TEST_SLOW_AFTER": "3", "BOREALIS_TEST_SLOW_SECONDS": "0.3"}
    cmd = [sys.executable, "-m", "borealis_eval.cli", "--tracking-uri", uri, "sweep", str(abl), "--launcher", "slurm",
           "--workers", "2", "--storage", storage, "--no-progress", "--checkpoint-every", "1", "--stale-after", "30",
           "--out", str(report), "--log-dir", str(tmp_path / "logs"), "--time-min", "10", "--wait"]
    log = tmp_path / "launcher.log"
    t0 = time.time()
    with open(log, "w") as out:
        launcher = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    jobs: list[str] = []
    try:
        deadline = time.time() + 600  # a hang guard: a loaded machine (make test runs two test files at once) is slow
        m = None
        while m is None:
            assert launcher.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            m = re.search(r"study (\S+) \(new; parent run (\w+)\): 2 SLURM job\(s\) (\S+), (\S+); logs in (\S+)",
                          " ".join(log.read_text().split()))
            time.sleep(0.1)
        t_submit = time.time()
        study, parent_id, jobs = m.group(1), m.group(2), [m.group(3), m.group(4)]
        # both variants are training (each has a checkpoint past step 2): signal both jobs
        ck = tmp_path / "cache" / "checkpoints" / study
        first_step = None
        holders: dict[str, str] = {}
        while len(holders) < 2:
            assert launcher.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            steps = {}
            for state in ck.glob("*/state.pt"):
                try:
                    steps[state.parent.name] = torch.load(state, weights_only=False)["step"]
                except Exception:  # noqa: BLE001 - being replaced this instant
                    continue
            first_step = first_step or (time.time() if steps else None)
            if len(steps) == 2 and min(steps.values()) >= 3:
                holders = {c["worker"].rsplit("slurm=", 1)[1]: c["variant"] for c in _claims(storage, study)
                           if c["status"] == "claimed" and "slurm=" in c["worker"]}
            time.sleep(0.1)
        t_signal = time.time()
        requeued, warned = jobs
        assert _scontrol("requeue", requeued).returncode == 0
        assert subprocess.run(["scancel", "--signal=USR2", warned], env={**os.environ, "SLURM_CONF": SLURM_CONF}
                              ).returncode == 0
        # SLURM holds a requeued job back for 2 minutes (BeginTime): lift that so the test stays short
        lifted, seen = set(), {}
        while len(lifted) < 2 and time.time() < deadline:
            for j in jobs:
                if j in lifted:
                    continue
                state = _job_state(j)
                if seen.get(j, [None])[-1] != state:
                    seen.setdefault(j, []).append(state)
                if state == "PENDING":
                    up = _scontrol("update", f"jobid={j}", "StartTime=now")
                    if up.returncode == 0:
                        lifted.add(j)
                    else:
                        seen[j].append(f"update failed: {up.stderr.strip()}")
            time.sleep(0.2)
        assert lifted == set(jobs), f"states seen after the signals: {seen}\n{log.read_text()[-2000:]}"
        launcher.wait(timeout=max(1, deadline - time.time()))
    finally:
        if launcher.poll() is None:
            launcher.kill()
        subprocess.run(["scancel", *jobs], env={**os.environ, "SLURM_CONF": SLURM_CONF}, capture_output=True)
    text = log.read_text()
    assert launcher.returncode == 0, text[-3000:]
    assert f"study {study} closed" in text

    rows = _claims(storage, study)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    assert [r["attempts"] for r in rows] == [2, 2]  # each variant was claimed again after its interruption
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[name], output_format="pandas")
    parents, variants = runs[runs["tags.role"] == "parent"], runs[runs["tags.role"] == "variant"]
    assert len(parents) == 1 and parents["run_id"].item() == parent_id and parents["status"].item() == "FINISHED"
    assert parents["tags.slurm.job_ids"].item().split(",") == jobs
    finished = variants[variants["status"] == "FINISHED"]
    assert len(finished) == 2 and finished["tags.config_hash"].nunique() == 2  # each variant FINISHED exactly once
    assert (finished["tags.resumed_from_step"].astype(float) >= 3).all()  # both resumed from their checkpoints
    killed = variants[variants["status"] != "FINISHED"]  # the interrupted attempts stay as a record
    assert len(killed) == 2 and (killed["status"] == "KILLED").all()
    assert killed["tags.error"].str.contains("SIGTERM received; stopped at step").all()
    assert (report / "report.md").is_file()
    assert "Job has timed out" in " ".join(p.read_text() for p in (tmp_path / "logs").glob("*_log.err")) or \
        "Caught signal SIGUSR2" in " ".join(p.read_text() for p in (tmp_path / "logs").glob("*_log.err"))
    resumed_at = (finished["start_time"].min().timestamp() - t_signal)
    print(f"\nlaunch overhead (submitted -> first checkpointed training step): {first_step - t_submit:.1f} s; "
          f"signal -> first resumed run started: {resumed_at:.1f} s; launch -> study closed: {time.time() - t0:.1f} s")


def test_checkpoint_from_the_signal_handler_returns_once_the_worker_exits(monkeypatch):
    """submitit calls `WorkerJob.checkpoint` from its USR2 handler, i.e. inside `__call__`'s
    `Popen.wait()`. It must see the child exit at once, not sleep out STOP_WAIT_S beside a zombie (a
    second Popen.wait there cannot take the wait lock the interrupted one holds: every time-limit
    warning cost 60 s, and the SLURM test above timed out in CI behind it)."""
    import signal as sig

    from borealis_eval.launch import slurm

    monkeypatch.setattr(slurm, "STOP_WAIT_S", 20.0)  # a regression then fails in 20 s, not 60
    job = slurm.WorkerJob(["--help"], ".", 0)
    job._proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kills: list[str] = []
    monkeypatch.setattr(job._proc, "kill", lambda: kills.append("kill"))  # checkpoint's give-up path

    class Requeued(Exception):
        pass

    def handler(signum, frame):  # what submitit does: checkpoint, requeue, exit from the handler
        job.checkpoint()
        raise Requeued

    old = sig.signal(sig.SIGUSR2, handler)
    try:
        sender = subprocess.Popen(["bash", "-c", f"sleep 0.5; kill -USR2 {os.getpid()}"])
        with pytest.raises(Requeued):
            job._proc.wait()
        sender.wait()
    finally:
        sig.signal(sig.SIGUSR2, old)
        subprocess.Popen.kill(job._proc)  # Popen's own kill: no signal once the child is reaped
    assert kills == []  # checkpoint saw the child exit on SIGTERM; it never gave up on it
    with pytest.raises(ChildProcessError):
        os.waitpid(job._proc.pid, os.WNOHANG)  # reaped: no zombie left behind


def test_multi_node_launch_refuses_sqlite_stores(tmp_path, monkeypatch, capsys):
    from borealis_eval import cli
    from borealis_eval.launch import slurm

    monkeypatch.setattr(slurm, "require_slurm", lambda: None)
    monkeypatch.setattr(slurm, "partition_nodes", lambda partition: 4)
    corpus = tmp_path / "no-corpus"  # refused before any data is read
    abl = tiny_ablation(tmp_path, corpus, "tiny_multi", grid={"seed": [0, 1]})
    rc = cli.main(["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "sweep", str(abl), "--launcher", "slurm",
                   "--workers", "2", "--partition", "gpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "partition gpu has 4 nodes" in err and "MLflow server" in err and "PostgreSQL" in err
    assert not (tmp_path / "mlflow.db").exists() or "tiny_multi" not in str(mlflow.MlflowClient(
        f"sqlite:///{tmp_path}/mlflow.db").search_experiments())  # refused before any study was opened


def test_launcher_without_slurm_names_what_to_install(tmp_path, monkeypatch, capsys):
    from borealis_eval import cli

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    corpus = tmp_path / "no-corpus"
    abl = tiny_ablation(tmp_path, corpus, "tiny_noslurm", grid={"seed": [0, 1]})
    rc = cli.main(["sweep", str(abl), "--launcher", "slurm", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "sbatch" in err and "apt-get install slurm-client" in err


def test_launcher_options_from_the_file_and_the_command_line(tmp_path):
    from borealis_eval.config import load_ablation
    from borealis_eval.errors import ConfigError
    from borealis_eval.launch.slurm import SlurmOptions, worker_command

    corpus = tmp_path / "no-corpus"  # options only: nothing is read
    abl = tiny_ablation(tmp_path, corpus, "tiny_opts", grid={"seed": [0, 1]}, overrides={"launcher": {
        "partition": "gpu", "time_min": 600, "gpus_per_worker": 4, "sbatch": {"qos": "high"}}})
    a, _ = load_ablation(abl)
    o = SlurmOptions.resolve(a.launcher, {"partition": None, "time_min": 30, "sbatch": {"constraint": "a100"}})
    assert (o.partition, o.time_min, o.gpus_per_worker) == ("gpu", 30, 4)
    assert o.sbatch == {"qos": "high", "constraint": "a100"}
    cmd = worker_command(["sweep", "x.yaml"], o.gpus_per_worker)
    assert cmd[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m", "borealis_eval.cli"]
    assert worker_command(["sweep", "x.yaml"], 1)[1:] == ["-m", "borealis_eval.cli", "sweep", "x.yaml"]
    bad = tiny_ablation(tmp_path, corpus, "tiny_bad", grid={"seed": [0, 1]}, overrides={"launcher": {"gpus": 2}})
    with pytest.raises(ConfigError, match="gpus"):
        load_ablation(bad)


@pytest.mark.skipif(not SLURM_CONF or not Path(SLURM_CONF).is_file(),
                    reason="BOREALIS_TEST_SLURM_CONF is not set (make test starts a one-node cluster with "
                           "scripts/start_slurm.sh)")
def test_status_shows_job_states_and_cancel_releases_claims(tmp_path, monkeypatch, capsys):
    """`status` beside a real job's state; `cancel` scancels the study's jobs and frees the claims their
    workers held (a worker killed before it could release its claim). No training: a sleeping job
    stands in for a worker."""
    import json

    from borealis_eval import cli
    from borealis_eval.claims import ClaimStore
    from borealis_eval.launch import jobs

    monkeypatch.setenv("SLURM_CONF", SLURM_CONF)
    storage = f"sqlite:///{tmp_path}/studies.db"
    p = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "sleep.out"), "--wrap", "sleep 120"],
                       capture_output=True, text=True, check=True)
    job = p.stdout.strip().split(";")[0]
    try:
        store = ClaimStore(storage, worker=f"node1:1:abcdef:slurm={job}")
        store.open_study("k", "st", "exp")
        assert store.claim("st", "h1", "v1") is not None
        other = ClaimStore(storage, worker="node2:2:abcdef")  # a worker outside the study's jobs keeps its claim
        assert other.claim("st", "h2", "v2") is not None
        jobs.record(store.engine, "st", [job], str(tmp_path / "logs"))
        deadline = time.time() + 60
        while _job_state(job) != "RUNNING":
            assert time.time() < deadline, _job_state(job)
            time.sleep(0.2)
        assert cli.main(["status", "st", "--storage", storage, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["status"] == "open" and got["jobs"] == {job: "RUNNING"}
        assert {c["variant"]: (c["status"], c["job"], c["job_state"]) for c in got["claims"]} == {
            "v1": ("claimed", job, "RUNNING"), "v2": ("claimed", "", "")}
        assert cli.main(["cancel", "st", "--storage", storage]) == 0
        assert f"cancelled 1 job(s) {job}, released 1 claim(s)" in " ".join(capsys.readouterr().out.split())
        assert _job_state(job) == "CANCELLED"
        rows = {r["variant"]: r for r in store.rows("st")}
        assert rows["v1"]["status"] == "interrupted" and rows["v1"]["reason"] == "cancelled"
        assert rows["v2"]["status"] == "claimed"
    finally:
        subprocess.run(["scancel", job], capture_output=True)
