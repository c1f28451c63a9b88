"""Training under `accelerate launch` (DDP, 2 CPU processes, gloo) with unchanged code: the loss
falls like the 1-process run's and both ranks end with the same weights."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_on_cpu_trains_like_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    steps = 60
    # 1 process, batch 6  vs  2 processes x batch 3 (each rank takes every 2nd batch: the same 6 examples per step)
    one = subprocess.Popen([sys.executable, str(HERE / "_ddp_train.py"), str(tmp_path / "one"), "6", str(steps)], env=env)
    two = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                          str(HERE / "_ddp_train.py"), str(tmp_path / "two"), "3", str(steps)],
                         env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    assert one.wait(timeout=240) == 0
    r1 = json.loads((tmp_path / "one" / "rank0.json").read_text())
    r2 = [json.loads((tmp_path / "two" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert r1["world"] == 1 and all(r["world"] == 2 for r in r2)
    assert r2[0]["digest"] == r2[1]["digest"]  # DDP kept the replicas identical
    l1 = np.array(r1["losses"])
    l2 = (np.array(r2[0]["losses"]) + np.array(r2[1]["losses"])) / 2  # each rank's loss is over its half-batch
    assert l2[-5:].mean() < 0.5 * l2[:5].mean()  # it learns
    assert abs(l2[:5].mean() - l1[:5].mean()) < 0.05 * l1[:5].mean()  # same start
    assert abs(l2[-5:].mean() - l1[-5:].mean()) < 0.25 * l1[:5].mean()  # falls like the 1-process run
