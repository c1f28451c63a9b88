"""Where a sweep's time went, read back from its MLflow store: the profile of `make demo`'s sweep.

Every child run of the study's parent (the baselines and the variants) is placed on a worker
lane (two runs that overlap in time ran on different workers), and its wall time is split:

- baseline runs: decoding per eval set (`audio_seconds / rtfx`: the seconds the decoder took),
  and the rest (loading the model, reading audio, scoring, logging);
- variant runs: `train/seconds` (the training loop, its dev-set curve included), decoding the
  eval sets (`audio_seconds / rtfx` again), and the rest (building the model, encoding features
  not yet cached, scoring, logging);
- per lane: start-up (the parent's start to the lane's first run), gaps between runs (claiming,
  the next variant's data), the tail (its last run's end to the parent's end: the closing
  statistics and the report on the lane that closed the study, idling on the other).

With `make demo`'s two 1-thread workers, wall seconds on a lane are close to CPU seconds.

    .venv/bin/python -m benchmarks.demo_profile                      # ./mlruns.db, latest text_ratio study
    .venv/bin/python -m benchmarks.demo_profile --tracking-uri sqlite:///path/mlruns.db --run PARENT_ID

Prints a Markdown table, then one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def lanes(runs: list[dict]) -> list[list[dict]]:
    """Runs (with `start`, `end`) on the fewest lanes where no two runs of a lane overlap,
    each run on the lane that became free last before it started."""
    out: list[list[dict]] = []
    for r in sorted(runs, key=lambda r: r["start"]):
        free = [lane for lane in out if lane[-1]["end"] <= r["start"] + 1e-3]
        if free:
            max(free, key=lambda lane: lane[-1]["end"]).append(r)
        else:
            out.append([r])
    return out


def profile(client, parent_id: str) -> dict:
    from borealis_eval import records
    from borealis_eval.report.collect import search_all

    parent = client.get_run(parent_id)
    children = search_all(client, parent.info.experiment_id, f"tags.{records.PARENT_RUN} = '{parent_id}'")
    p0, p1 = parent.info.start_time / 1000, (parent.info.end_time or parent.info.start_time) / 1000
    runs = []
    for c in children:
        if c.info.end_time is None:
            continue
        m = c.data.metrics
        sets = [k.split("/", 1)[1] for k in m if k.startswith("rtfx/")]
        decode = {s: m[f"audio_seconds/{s}"] / m[f"rtfx/{s}"] for s in sets
                  if m[f"rtfx/{s}"] > 0 and f"audio_seconds/{s}" in m}
        start, end = c.info.start_time / 1000, c.info.end_time / 1000
        runs.append({"role": c.data.tags.get(records.ROLE, "?"), "start": start, "end": end, "wall": end - start,
                     "train": m.get(records.TRAIN_SECONDS, 0.0), "decode": decode})
    lanes_ = lanes(runs)
    phase: dict[str, float] = defaultdict(float)
    lane_rows = []
    for i, lane in enumerate(lanes_):
        startup = lane[0]["start"] - p0
        gaps = sum(b["start"] - a["end"] for a, b in zip(lane, lane[1:]))
        tail = p1 - lane[-1]["end"]
        phase["start-up (parent start -> first run)"] += startup
        phase["between runs (claim, next variant's set-up)"] += gaps
        phase["after the last run (closing on one lane, idle on the other)"] += tail
        for r in lane:
            dec = sum(r["decode"].values())
            if r["role"] == records.BASELINE:
                for s, v in r["decode"].items():
                    phase[f"baseline: decoding {s}"] += v
                phase["baseline: the rest (load, audio, scoring, logging)"] += r["wall"] - dec
            else:
                phase["variants: training (dev curve included)"] += r["train"]
                phase["variants: decoding the eval sets"] += dec
                phase["variants: the rest (model, encoding, scoring, logging)"] += r["wall"] - r["train"] - dec
        lane_rows.append({"lane": i + 1, "runs": len(lane), "busy": round(sum(r["wall"] for r in lane), 1),
                          "startup": round(startup, 1), "gaps": round(gaps, 1), "tail": round(tail, 1)})
    return {"parent": parent_id, "study": parent.data.tags.get(records.STUDY), "sweep_wall": round(p1 - p0, 1),
            "lane_seconds": round((p1 - p0) * len(lanes_), 1), "lanes": lane_rows,
            "phases": {k: round(v, 1) for k, v in phase.items()},
            "variants": sum(r["role"] == records.VARIANT for r in runs)}


def main(argv: list[str] | None = None) -> None:
    from mlflow.tracking import MlflowClient

    from borealis_eval.errors import ReportError
    from borealis_eval.report.collect import find_parent

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns.db")
    ap.add_argument("--experiment", default="text_ratio")
    ap.add_argument("--run", help="the parent run id (default: the experiment's latest parent)")
    args = ap.parse_args(argv)
    client = MlflowClient(tracking_uri=args.tracking_uri)
    parent_id = args.run
    if not parent_id:
        exp = client.get_experiment_by_name(args.experiment)
        if exp is None:
            raise SystemExit(f"no experiment {args.experiment!r} in {args.tracking_uri}")
        try:
            parent_id = find_parent(client, exp.experiment_id, args.experiment, None).info.run_id
        except ReportError as e:
            raise SystemExit(str(e)) from None
    p = profile(client, parent_id)
    total = p["lane_seconds"]
    print(f"sweep {p['study']} ({p['variants']} variants): {p['sweep_wall']:.0f} s wall on "
          f"{len(p['lanes'])} worker lane(s) = {total:.0f} lane-seconds\n")
    print("| phase | lane-seconds | share |\n|---|---|---|")
    for k, v in sorted(p["phases"].items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.0f} | {v / total:.0%} |")
    print("\n| lane | runs | busy s | start-up s | between runs s | after last run s |\n|---|---|---|---|---|---|")
    for lane in p["lanes"]:
        print(f"| {lane['lane']} | {lane['runs']} | {lane['busy']:.0f} | {lane['startup']:.0f} | {lane['gaps']:.0f} "
              f"| {lane['tail']:.0f} |")
    print(json.dumps(p))


if __name__ == "__main__":
    main()
