"""Who closes a study, and how a rerun finds an unfinished one (claims.py, study.py): fast, no training."""

import logging
import subprocess
import sys
import time

from borealis_eval.claims import ClaimStore
from borealis_eval.study import _unfinished, resume_command


def _store(tmp_path, worker=None):
    return ClaimStore(f"sqlite:///{tmp_path}/studies.db", worker=worker, stale_after=300)


def test_exactly_one_worker_closes_and_a_later_invocation_retries_a_failed_close(tmp_path):
    a, b = _store(tmp_path), _store(tmp_path)
    a.open_study("k", "s1", "exp")
    assert a.claim_close("s1") is True
    assert b.claim_close("s1") is False  # a live closer is never taken over
    a.end_close("s1", "failed")  # variants failed: the study stays open
    assert b.claim_close("s1") is False  # a peer of the same invocation does not retry it
    time.sleep(0.01)
    c = _store(tmp_path)  # a rerun
    assert c.claim_close("s1") is True
    c.end_close("s1", "finished")
    assert _store(tmp_path).claim_close("s1") is False  # a closed study is never closed twice


def test_a_closer_that_died_is_taken_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid on this host that is gone
    import socket

    dead = _store(tmp_path, worker=f"{socket.gethostname()}:{p.pid}:abcdef")
    dead.open_study("k", "s1", "exp")
    assert dead.claim_close("s1") is True
    assert _store(tmp_path).claim_close("s1") is True


def test_a_named_worker_joins_a_study_keyed_by_its_file(tmp_path):
    """`--study NAME` (the resume command, a SLURM job) joins a study that was opened by key."""
    a = _store(tmp_path)
    assert a.open_study("sweep:abl:fp:123", "abl-1", "abl") == ("abl-1", True)
    assert _store(tmp_path).open_study("named:abl-1", "abl-1", "abl") == ("abl-1", False)


def test_a_rerun_joins_or_names_an_unfinished_study_of_the_same_file(tmp_path, caplog):
    s = _store(tmp_path)
    s.open_study("sweep:abl:fp:123", "abl-new", "abl")  # started with --new
    s.open_study("sweep:abl:other", "abl-other", "abl")  # the same ablation, another variant set
    with caplog.at_level(logging.WARNING, logger="borealis_eval"):
        assert _unfinished(s, "sweep", "abl", "fp", "sweep:abl:fp", new=False) == "sweep:abl:fp:123"
    assert "joining unfinished study abl-new" in caplog.text and "abl-other" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="borealis_eval"):
        assert _unfinished(s, "sweep", "abl", "fp", "sweep:abl:fp", new=True) == "sweep:abl:fp"
    assert "unfinished study of this file: abl-new; starting another one" in caplog.text
    s.close_study("abl-new")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="borealis_eval"):
        assert _unfinished(s, "sweep", "abl", "fp", "sweep:abl:fp", new=False) == "sweep:abl:fp"
    assert "abl-new" not in caplog.text  # a closed study is not named


def test_resume_command_drops_new_and_names_the_study():
    argv = ["--tracking-uri", "sqlite:///m.db", "sweep", "a b.yaml", "--new", "--workers", "2", "--study", "old"]
    assert resume_command("abl-1", argv) == ("borealis-eval --tracking-uri sqlite:///m.db sweep 'a b.yaml' "
                                             "--workers 2 --study abl-1")
