"""`python tests/_fault_driver.py <cli args>`: the CLI with a slow training step, for signal tests.

BOREALIS_TEST_SLOW_AFTER=N and BOREALIS_TEST_SLOW_SECONDS=S: every SpeechLM.forward call after
the first N sleeps S seconds first, so a test can signal the process in the middle of a step.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from borealis_eval.models.speech_lm import SpeechLM  # noqa: E402

_after = int(os.environ.get("BOREALIS_TEST_SLOW_AFTER", "0"))
_seconds = float(os.environ.get("BOREALIS_TEST_SLOW_SECONDS", "0"))
_forward = SpeechLM.forward
_calls = [0]


def slow_forward(self, examples):
    _calls[0] += 1
    if _calls[0] > _after:
        time.sleep(_seconds)
    return _forward(self, examples)


SpeechLM.forward = slow_forward

if __name__ == "__main__":
    from borealis_eval.cli import main

    sys.exit(main(sys.argv[1:]))
