"""Two concurrent `sweep` workers split a 6-variant grid: each variant runs exactly once, one parent run.

Runs against the embedded sqlite claims store and, when `BOREALIS_TEST_PG_URL` is set (the Makefile's
test target starts a server with scripts/start_postgres.sh), against a real PostgreSQL server.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa

from _tiny import claims_of, tiny_ablation

GRID = {"data.text_fraction": [0.0, 0.1, 0.25], "seed": [0, 1]}


def sweep_cmd(uri: str, abl: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "borealis_eval.cli", "--tracking-uri", uri, "sweep", str(abl), "--no-progress",
            "--no-report", *extra]


def worker_env(tmp: Path) -> dict:
    repo = Path(__file__).resolve().parents[1]
    return {**os.environ, "BOREALIS_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}


def run_two_workers(tmp: Path, corpus: Path, storage: str, name: str):
    abl = tiny_ablation(tmp, corpus, name, grid=GRID, baseline=False)
    uri = f"sqlite:///{tmp}/mlflow.db"
    study = f"{name}-{uuid.uuid4().hex[:8]}"
    cmd = sweep_cmd(uri, abl, "--storage", storage, "--study", study)
    procs = [subprocess.Popen(cmd, cwd=tmp, env=worker_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    # what each worker says it ran adds up to the grid (baseline + 5 variants): no duplicates, no gaps
    here = [int(re.search(r"(\d+) variants finished here", " ".join(o.split())).group(1)) for o in outs]
    assert sum(here) == 6, outs

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[name], output_format="pandas")
    parents = runs[runs["tags.role"] == "parent"]
    variants = runs[runs["tags.role"] == "variant"]
    assert len(parents) == 1 and parents["status"].item() == "FINISHED"  # one study, one parent, closed
    assert len(variants) == 6 and (variants["status"] == "FINISHED").all()
    assert variants["tags.config_hash"].nunique() == 6  # every variant exactly once: no duplicates, no gaps
    assert (variants["tags.mlflow.parentRunId"] == parents["run_id"].item()).all()
    assert variants["metrics.wer/test_en"].notna().all()
    eng = sa.create_engine(storage)
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT status, worker FROM borealis_claims WHERE study = :s"), {"s": study}).all()
    eng.dispose()
    assert len(rows) == 6 and {r[0] for r in rows} == {"finished"}
    pids = {p.pid for p in procs}  # every claim was won by one of the two workers started here
    assert {int(r[1].split(":")[1]) for r in rows} <= pids
    # both workers encoded into one feature cache: every entry is whole, no temporary file is left over
    from safetensors.torch import load_file

    entries = list((tmp / "cache" / "features").rglob("*.safetensors"))
    assert entries and not [e for e in entries if e.name.startswith(".")]
    assert all(load_file(str(e))["x"].numel() > 0 for e in entries)
    return {r[1] for r in rows}


def test_two_workers_split_a_sweep_sqlite(tmp_path, corpus):
    run_two_workers(tmp_path, corpus, f"sqlite:///{tmp_path}/studies.db", "tiny_workers")


def test_two_workers_split_a_sweep_postgres(tmp_path, corpus):
    url = os.environ.get("BOREALIS_TEST_PG_URL")
    if not url:
        pytest.skip("BOREALIS_TEST_PG_URL is not set (make test starts a server with scripts/start_postgres.sh)")
    run_two_workers(tmp_path, corpus, url, "tiny_workers_pg")


def test_local_workers_split_a_sweep(tmp_path, corpus):
    """`sweep --workers 2`: worker 1 encodes, starts one helper; the two split baseline + grid through the
    claims table; whichever of them finds nothing left closes the study and writes the report; every variant
    gets its Δ vs the baseline even when a worker scored it before the baseline was done."""
    abl = tiny_ablation(tmp_path, corpus, "tiny_local", grid=GRID, baseline=True)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = sweep_cmd(uri, abl, "--workers", "2")
    cmd.remove("--no-report")
    p = subprocess.run([*cmd, "--out", str(tmp_path / "report")], cwd=tmp_path, env=worker_env(tmp_path),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    assert "[worker 2] variant" in p.stdout  # the helper ran variants and says so
    rows = claims_of(tmp_path / "borealis-studies.db")
    assert len(rows) == 7 and {r["status"] for r in rows.values()} == {"finished"}
    eng = sa.create_engine(f"sqlite:///{tmp_path}/borealis-studies.db")
    with eng.connect() as c:
        workers = {w for (w,) in c.execute(sa.text("SELECT worker FROM borealis_claims"))}
    eng.dispose()
    assert len(workers) == 2
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_local"], output_format="pandas")
    parents, variants = runs[runs["tags.role"] == "parent"], runs[runs["tags.role"] == "variant"]
    assert len(parents) == 1 and parents["status"].item() == "FINISHED" and len(variants) == 6
    assert variants["metrics.delta_wer_vs_baseline/test_en"].notna().all()
    assert (tmp_path / "report" / "report.md").is_file()


def _study_row(db: Path) -> dict:
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT name, status FROM borealis_studies")).mappings().all()
    eng.dispose()
    assert len(rows) == 1, rows
    return dict(rows[0])


def test_first_local_worker_killed_the_helper_closes_the_study_and_a_rerun_trains_nothing(tmp_path, corpus):
    """`sweep --workers 2 --new`, then SIGKILL of the first process mid-training: its helper (in its own
    session) takes over the dead worker's variant, finishes the grid, closes the study and writes the
    report. The command printed at the start to resume the study then trains nothing again."""
    abl = tiny_ablation(tmp_path, corpus, "tiny_kill", grid={"seed": [0, 1]}, steps=8)
    uri, db = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "borealis-studies.db"
    report = tmp_path / "report"
    # the first process's training steps take 20 s after its 2nd (tests/_fault_driver.py): it is mid-training
    # when killed, however long its helper takes to start; the helper is a plain `borealis_eval.cli` process
    # and trains at full speed
    cmd = [sys.executable, str(Path(__file__).parent / "_fault_driver.py"), "--tracking-uri", uri, "sweep", str(abl),
           "--no-progress", "--workers", "2", "--new", "--checkpoint-every", "1", "--stale-after", "5",
           "--out", str(report)]
    env = {**worker_env(tmp_path), "BOREALIS_TEST_SLOW_AFTER": "2", "BOREALIS_TEST_SLOW_SECONDS": "20"}
    log = tmp_path / "sweep.log"
    helpers: set[int] = set()
    with open(log, "w") as out:
        first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        ck = tmp_path / "cache" / "checkpoints"
        # both workers are training: the helper has started a variant, and some variant has a checkpoint
        while not ("[worker 2] variant" in log.read_text() and list(ck.glob("*/*/state.pt"))):
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        rows = claims_of(db)
        helpers = {int(r["worker"].split(":")[1]) for r in _claim_workers(db)} - {first.pid}
        assert any(r["status"] == "claimed" for r in rows.values())
        first.kill()  # SIGKILL: no handler runs, its claim stays `claimed` with a dead pid
        first.wait()
        while _study_row(db)["status"] != "closed":
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        while not (report / "report.md").is_file():  # the helper closed the study, then renders the report
            assert time.time() < deadline, text[-3000:]
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            first.kill()
        for pid in helpers:
            _wait_gone(pid, 60)
    text = log.read_text()
    name = _study_row(db)["name"]
    m = re.search(r"new study (\S+); resume it with: (.+)", text)
    assert m and m.group(1) == name, text[-3000:]
    assert "taking over" in text  # the helper took over the killed worker's variant
    rows = claims_of(db)
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"finished"}
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_kill"], output_format="pandas")
    parents, variants = runs[runs["tags.role"] == "parent"], runs[runs["tags.role"] == "variant"]
    assert len(parents) == 1 and parents["status"].item() == "FINISHED"
    finished = variants[variants["status"] == "FINISHED"]
    assert len(finished) == 2 and finished["tags.config_hash"].nunique() == 2  # each variant finished once
    assert (finished["tags.resumed_from_step"].astype(float) > 0).any()  # the killed worker's variant resumed
    assert (variants["status"] != "RUNNING").all()  # the killed worker's run was closed by the taker
    # the printed resume command, run again: the study is closed, nothing is trained
    resume = shlex.split(m.group(2))
    assert resume[0] == "borealis-eval" and "--new" not in resume and resume[-2:] == ["--study", name]
    p = subprocess.run([sys.executable, "-m", "borealis_eval.cli", *resume[1:]], cwd=tmp_path,
                       env=worker_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:]
    assert f"study {name} is closed" in " ".join(p.stdout.split()) and "nothing to run" in p.stdout
    again = mlflow.search_runs(experiment_names=["tiny_kill"], output_format="pandas")
    assert len(again) == len(runs)  # no new run of any kind


def _claim_workers(db: Path) -> list[dict]:
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT worker FROM borealis_claims")).mappings().all()
    eng.dispose()
    return [dict(r) for r in rows]


def _wait_gone(pid: int, seconds: float) -> None:
    """Wait for a process this test started indirectly (a helper) to exit; kill it after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
