"""Child-process entry: `python -m benchmarks._side MODULE SIDE PARAMS_JSON`."""

import importlib
import json
import os
import sys

from benchmarks.common import MARK, peak_rss_mb


def main() -> None:
    module, side, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if os.environ.get("BENCH_THREADS"):  # e.g. 1 on a machine shared with another job
        import torch

        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    fn = getattr(importlib.import_module(f"benchmarks.{module}"), f"side_{side}")
    out = fn(**params)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
