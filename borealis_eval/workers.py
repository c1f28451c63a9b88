"""Local workers: `sweep FILE --workers N` runs N worker processes on this machine.

On a small CPU, N one-thread workers do more per second than one N-thread worker (two 1-thread
training processes on 2 cores: 1.4x the steps per second of one 2-thread process,
benchmarks/README.md). The first process opens the study and encodes the shared features with
all N x `train.threads` threads; then it starts N-1 helpers, each an ordinary
`borealis-eval sweep FILE --study NAME` that joins the same study and claims work through the
claims table (study.py, recipe.py), exactly as workers on other machines would. The helpers find the
features in the cache. Whichever worker finds nothing left and no live claim closes the study and
writes the report (a helper too: if the first process is killed, its helper still closes); the
first process waits for its helpers, and stops them if it is interrupted (they leave their work
resumable).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from borealis_eval.study import StudyOptions

HELPER_FLAG = "--helper"  # hidden: marks a helper's log lines with its worker number


def encode_threads(workers: int, threads: int | None) -> int | None:
    """Torch threads for encoding the shared features before the helpers start (sweep and plan):
    all the workers' threads, or None (the default) for one worker or no thread setting."""
    return workers * threads if workers > 1 and threads else None


@dataclass
class Helpers:
    procs: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        """Interrupt the helpers (SIGINT: they record their variant as interrupted, resumable)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)

    def wait(self) -> list[int]:
        return [p.wait() for p in self.procs]


def start_helpers(n: int, path: str | Path, study: str, opts: StudyOptions, overrides: dict | None,
                  only: list[str] | None, extra: list[str] | None = None) -> Helpers:
    """Start n helper processes that join `study` (the caller is worker 1). They run in their own
    session, so a Ctrl-C reaches worker 1 only, which forwards one SIGINT (`Helpers.stop`); they take
    this worker's `opts`, except that they join `study` and show no progress bars."""
    base = [sys.executable, "-m", "borealis_eval.cli"]
    if opts.tracking_uri:
        base += ["--tracking-uri", opts.tracking_uri]
    args = ["sweep", str(path), "--study", study, "--no-progress", "--checkpoint-every", str(opts.checkpoint_every),
            "--stale-after", str(opts.stale_after)]
    if opts.storage:
        args += ["--storage", opts.storage]
    if opts.checkpoint_dir:
        args += ["--checkpoint-dir", str(opts.checkpoint_dir)]
    if only:
        args += ["--only", *only]
    for k, v in (overrides or {}).items():
        args += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: the value reads back as it was
    args += extra or []
    helpers = Helpers()
    for i in range(n):
        helpers.procs.append(subprocess.Popen([*base, *args, HELPER_FLAG, str(i + 2)], env=os.environ.copy(),
                                              start_new_session=True))
    return helpers
