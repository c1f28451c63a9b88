"""On PYTHONPATH in the SLURM test: every Python process of a job (submitit's and the worker it
starts) gets the slow training step of tests/_fault_driver.py when BOREALIS_TEST_SLOW_SECONDS is set,
so the test can requeue a job in the middle of training."""

import os
import sys
from pathlib import Path

if os.environ.get("BOREALIS_TEST_SLOW_SECONDS"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _fault_driver  # noqa: F401,E402 - patches SpeechLM.forward on import
