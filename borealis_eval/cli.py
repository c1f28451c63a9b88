"""`borealis-eval`: sweep, plan, report, data, models, score, cache, runs, ui, status, cancel.

User errors (`errors.UserError`: bad config, missing data, unreachable store, offline hub
reference) print one line `error: ...` and exit 2; `--debug` shows the traceback instead.
Anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

# soft_wrap: a long line (a run id, a path) is never cut at 80 columns when stdout is a pipe
console = Console(stderr=False, soft_wrap=True)


def _table(rows: list[dict], title: str | None = None) -> Table:
    t = Table(title=title, show_lines=False)
    for col in rows[0] if rows else []:
        t.add_column(str(col), overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r.values()])
    return t


def _print_rows(rows: list[dict], title: str | None = None, as_json: bool = False) -> None:
    """A table for a person, plain rows for a program: `--json` prints JSON; a pipe or file gets
    tab-separated lines (a header, then one line per row, nothing wrapped or cut, so `grep`,
    `cut -f` and `sort` work; the title goes to stderr); a terminal gets a rich table."""
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    elif not sys.stdout.isatty():
        if title:  # on its own line before the rows, even where stdout and stderr share one pipe
            sys.stdout.flush()
            print(title, file=sys.stderr, flush=True)
        cols = list(rows[0]) if rows else []
        lines = [cols, *(r.values() for r in rows)]
        print("\n".join("\t".join(str(x).replace("\t", " ").replace("\n", " ") for x in line) for line in lines),
              flush=True)
    else:
        console.print(_table(rows, title))


# ------------------------------------------------------------------ commands
def _overrides(a) -> dict:
    """`--set a.b=c` options as {dotted path: value}."""
    from borealis_eval.config import parse_assignment

    return dict(parse_assignment(s) for s in getattr(a, "set", None) or [])


def _study_options(a):
    """The options `sweep` and `search` share (how this worker takes part in the study), built once."""
    from borealis_eval.study import StudyOptions

    return StudyOptions(tracking_uri=a.tracking_uri, study=a.study, new=a.new, storage=a.storage,
                        checkpoint_dir=a.checkpoint_dir, checkpoint_every=a.checkpoint_every,
                        stale_after=a.stale_after, progress=not a.no_progress)


def cmd_sweep(a) -> int:
    from borealis_eval.config import grid_origin, load_ablation, variants_table
    from borealis_eval.errors import UsageError
    from borealis_eval.sweep import run_sweep

    if a.dry_run:
        from borealis_eval.plan import eval_set_rows

        abl, variants = load_ablation(a.file, _overrides(a))
        rows = variants_table(variants)
        cells = len({v.cell for v in variants})
        console.print(f"[bold]{abl.name}[/bold]: {abl.description.strip()}")
        console.print("\n".join(grid_origin(abl)), highlight=False, markup=False)
        ad = abl.adaptive
        stage = (f" - stage 1 of the adaptive seed design; seeds {ad.initial}..{ad.max - 1} of every cell may "
                 f"follow (up to {ad.max} per cell, {ad.max * cells} variants), as 80% power at {ad.target_pts:g} "
                 f"pts needs" if ad else "")
        _print_rows(rows, f"{len(rows)} variants = {cells} cells x {len(rows) // max(cells, 1)} seed(s){stage} "
                          "(dry run: nothing trained)")
        _print_rows(eval_set_rows(variants[0].config), "eval sets (the same protocol for every system)")
        return 0
    if a.workers < 1:
        raise UsageError("--workers must be at least 1")
    if a.launcher == "slurm":
        return cmd_launch_slurm(a)
    if a.helper:  # a local worker started by `--workers N` (workers.py): its lines say which one it is
        for h in logging.getLogger().handlers:
            h.setFormatter(logging.Formatter(f"[worker {a.helper}] %(message)s"))
    report_args = (["--out", a.out] if a.out else []) + (["--no-report"] if a.no_report else [])
    res = run_sweep(a.file, _study_options(a), only=a.only, overrides=_overrides(a), workers=a.workers,
                    helper_args=report_args)
    if not res.experiment:  # a non-main rank under `accelerate launch`: the main process reports
        return 0
    if res.already_closed:
        console.print(f"study {res.study} is closed: every variant finished (parent run {res.parent_run_id}); "
                      f"nothing to run. Its report: borealis-eval report {res.experiment} --run {res.parent_run_id}")
        return 0
    skipped = f", {len(res.skipped)} done earlier or by other workers" if res.skipped else ""
    console.print(f"sweep '{res.experiment}' (study {res.study}): {len(res.finished)} variants finished here, "
                  f"{len(res.failed)} failed{skipped}, {res.seconds / 60:.1f} min; parent run {res.parent_run_id}")
    for name, why in res.failed.items():
        console.print(f"  [red]FAILED[/red] {name}: {(why.splitlines() or [''])[0][:200]}")
    if res.interrupted:
        console.print(f"interrupted ({res.interrupted}); run the same command again to resume")
        return 130
    if not res.complete:
        console.print("other workers are still running variants of this study; the last one to finish writes "
                      "the report")
        return 1 if res.failed else 0
    if not res.closed_here:
        console.print(f"another worker closed study {res.study} and wrote the report")
        return 1 if res.failed else 0
    if not a.no_report:
        a.experiment, a.run = res.experiment, res.parent_run_id
        cmd_report(a)
    if a.register:
        from borealis_eval.logged_model import register_best
        from borealis_eval.tracking import TrackingConfig, preflight

        mv = register_best(preflight(TrackingConfig.load(tracking_uri=a.tracking_uri)), res.parent_run_id, a.register)
        console.print(f"registered {a.register} version {mv.version}: variant {mv.tags.get('variant', '?')}, "
                      f"models:/{a.register}/{mv.version} (logged model {mv.model_id})")
    return 1 if res.failed else 0


def cmd_plan(a) -> int:
    from borealis_eval.config import grid_origin, load_ablation
    from borealis_eval.plan import plan, power_plan, render, render_power
    from borealis_eval.tracking import TrackingConfig

    uri = TrackingConfig.load(tracking_uri=a.tracking_uri).tracking_uri if a.from_runs is not None else None
    abl = load_ablation(a.file, _overrides(a))[0]
    experiment = a.from_runs or abl.name  # `--from-runs` alone: the file's own experiment
    p = plan(a.file, device=a.device, step_seconds=a.step_seconds, probe=a.probe, probe_steps=a.probe_steps,
             tracking_uri=uri, checkpoint_every=a.checkpoint_every, overrides=_overrides(a), workers=a.workers,
             experiment=experiment)
    pp = power_plan(a.file, p, overrides=_overrides(a), from_runs=experiment if uri else None, tracking_uri=uri,
                    seed_sd_pts=a.seed_sd, utt_se_pts=a.utt_se, target_pts=a.target_pts)
    if a.json:
        Path(a.json).write_text(json.dumps({**p.to_json(), "power": pp.to_json()}, indent=1, ensure_ascii=False)
                                + "\n", encoding="utf-8")
    print(render(p))
    print()
    print(render_power(pp))
    print("\n".join(grid_origin(abl)))
    return 0


def cmd_report(a) -> int:
    from borealis_eval.report import build_report
    from borealis_eval.tracking import TrackingConfig

    tc = TrackingConfig.load(tracking_uri=a.tracking_uri)
    out = Path(a.out or Path("reports") / a.experiment)
    paths = build_report(a.experiment, out, tracking_uri=tc.tracking_uri, parent_run_id=a.run)
    console.print(f"report: {paths.md}  {paths.html}")
    return 0


def cmd_evaluate(a) -> int:
    from borealis_eval.rescore import evaluate_model

    results = evaluate_model(a.model, a.ablation, a.sets, tracking_uri=a.tracking_uri, overrides=_overrides(a))
    out = {r.name: {"normalizer": r.normalizer, **{k: v for k, v in r.metrics.items()}} for r in results}
    text = json.dumps(out, indent=2, ensure_ascii=False)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def cmd_data_synth(a) -> int:
    from borealis_eval.data.synth import synthesize_corpus

    path = synthesize_corpus(Path(a.out), seed=a.seed)
    info = json.loads((path / "corpus.json").read_text())
    console.print(f"corpus at {path}: " + json.dumps(info.get("counts", {}), ensure_ascii=False))
    return 0


def cmd_data_fortunes(a) -> int:
    from borealis_eval.data.fortunes import build_fortunes_corpus

    sizes = json.loads(a.sizes) if a.sizes else None
    path = build_fortunes_corpus(Path(a.out), seed=a.seed, sizes=sizes, workers=a.workers)
    info = json.loads((path / "corpus.json").read_text(encoding="utf-8"))
    oov = ", ".join(f"{k} {v['tokens']:.1%}" for k, v in info["test_oov"].items())
    console.print(f"open-vocabulary corpus at {path}: " + json.dumps(info.get("counts", {}), ensure_ascii=False)
                  + f"; test words unseen in training: {oov}; built in {info['build_seconds']} s")
    return 0


def cmd_data_fetch_real(a) -> int:
    from borealis_eval.data.real import fetch_real

    path = fetch_real(Path(a.out))
    sets = json.loads((path / "SOURCES.json").read_text(encoding="utf-8"))["sets"]
    console.print(f"real speech at {path}: " + ", ".join(f"{k} {v['recordings']} ({v['minutes']} min)"
                                                       for k, v in sets.items()))
    return 0


def cmd_models_list(a) -> int:
    from borealis_eval.models.bundled import BUNDLED, is_prepared

    rows = [{"name": f"bundled:{n}", "kind": s.kind, "prepared": is_prepared(n), "source": s.package,
             "description": s.description} for n, s in BUNDLED.items()]
    _print_rows(rows, "bundled models (no hub needed)", a.json)
    return 0


def cmd_models_prepare(a) -> int:
    from borealis_eval.models.bundled import prepare

    for name in a.names:
        console.print(f"{name}: {prepare(name.removeprefix('bundled:'), force=a.force)}")
    return 0


def cmd_score(a) -> int:
    from borealis_eval.errors import UsageError
    from borealis_eval.evaluate.runner import score_set

    def read(p):
        rows = {}
        for n, line in enumerate(Path(p).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    r = json.loads(line)
                    rows[str(r["id"])] = str(r["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise UsageError(f"{p}:{n}: expected a JSON object with 'id' and 'text' ({e})") from None
        return rows

    refs, hyps = read(a.refs), read(a.hyps)
    missing = sorted(set(refs) - set(hyps))
    if missing and not a.allow_missing:
        raise UsageError(f"{len(missing)} reference ids have no hypothesis (e.g. {missing[:3]}); "
                         "pass --allow-missing to score them as empty outputs")
    records = [{"id": i, "ref": t, "hyp": hyps.get(i, ""), "duration": 0.0} for i, t in refs.items()]
    res = score_set("score", records, a.lang, None)
    out = {"normalizer": res.normalizer, **{k: v for k, v in res.metrics.items() if k != "audio_seconds"}}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_cache_info(a) -> int:
    from borealis_eval.data.features import cache_info

    rows = cache_info()
    if a.json:
        _print_rows(rows, as_json=True)
    else:
        _print_rows([{**{k: v for k, v in r.items() if k != "bytes"}, "MB": f"{r['bytes'] / 1e6:.1f}"}
                     for r in rows] or [{"encoder": "(empty)"}],
                    "encoder-feature cache")
    return 0


def cmd_cache_clear(a) -> int:
    import shutil

    from borealis_eval.paths import cache_root

    target = cache_root() / "features"
    shutil.rmtree(target, ignore_errors=True)
    console.print(f"cleared {target}")
    return 0


def cmd_runs(a) -> int:
    import mlflow

    from borealis_eval.tracking import TrackingConfig

    tc = TrackingConfig.load(tracking_uri=a.tracking_uri)
    mlflow.set_tracking_uri(tc.tracking_uri)
    df = mlflow.search_runs(experiment_names=[a.experiment], output_format="pandas")
    if df.empty:
        if a.json:
            print("[]")
        else:
            console.print(f"no runs in experiment '{a.experiment}'")
        return 1
    cols = ["run_id", "tags.mlflow.runName", "tags.role", "status"] + sorted(c for c in df.columns if c.startswith("metrics.wer/"))
    df = df[[c for c in cols if c in df.columns]].rename(columns=lambda c: c.split(".", 1)[-1])
    if a.json:  # full ids, numbers as numbers, missing as null
        _print_rows(json.loads(df.to_json(orient="records")), as_json=True)
        return 0
    if sys.stdout.isatty():
        df["run_id"] = df["run_id"].str[:8]
    _print_rows(df.round(4).astype(str).to_dict("records"), a.experiment)
    return 0


def cmd_ui(a) -> int:
    from mlflow.tracking import MlflowClient

    from borealis_eval import records
    from borealis_eval.tracking import TrackingConfig, ui_experiment_path

    tc = TrackingConfig.load(tracking_uri=a.tracking_uri)
    base = f"http://127.0.0.1:{a.port}"
    client = MlflowClient(tracking_uri=tc.tracking_uri)
    if a.experiment:
        exp = client.get_experiment_by_name(a.experiment)
        if exp is None:
            from borealis_eval.errors import UsageError

            raise UsageError(f"no experiment '{a.experiment}' in {tc.tracking_uri}")
        exps = [exp]
    else:  # every study's experiment, newest first (MLflow's empty "Default" left out)
        exps = [e for e in client.search_experiments(order_by=["last_update_time DESC"]) if e.name != "Default"]
    for e in exps:  # the saved view shows WER per eval set, once a report has been built
        view = records.WER_VIEW if records.SAVED_VIEW_PREFIX + records.WER_VIEW in e.tags else None
        print(f"{e.name}: {base}/#{ui_experiment_path(e.experiment_id, view)}", flush=True)
    # the venv's own mlflow (its bin/ need not be on PATH)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tc.tracking_uri, "--host", "127.0.0.1",
           "--port", str(a.port), "--workers", "1"]  # one worker: a personal browser, quick to start
    print(" ".join(cmd[1:]), file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)
    return 0


def cmd_search(a) -> int:
    from borealis_eval.search import run_search
    from borealis_eval.study import StudyClosed

    try:
        res = run_search(a.file, _study_options(a), n_trials=a.n_trials, overrides=_overrides(a))
    except StudyClosed as e:
        console.print(f"study {e.name} is closed (parent run {e.parent_run_id}); nothing to run")
        return 0
    console.print(f"search '{res.experiment}' (study {res.study}): {res.n_complete} trials complete, "
                  f"{res.n_pruned} pruned, {res.n_failed} failed; parent run {res.parent_run_id}")
    for b in res.best:
        console.print(f"  best trial #{b['number']}: values {b['values']}  params {json.dumps(b['params'])}  "
                      f"run {b.get('run_id', '?')}")
    if res.interrupted:
        console.print(f"interrupted ({res.interrupted}); run the same command again to resume")
        return 130
    return 0


def _set_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a field of the ablation's base config (repeatable), e.g. --set train.steps=100; "
                        "the value is read as YAML")


def _json_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--json", action="store_true", help="print the rows as JSON")


def _study_args(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("scaling out and recovery")
    g.add_argument("--study", default=None,
                   help="study name: workers with the same name share one parent run and split the work "
                        "(default: the open study of this ablation, else a new one)")
    g.add_argument("--new", action="store_true", help="start a fresh study even if one is open (no resume)")
    g.add_argument("--storage", default=None,
                   help="claims/Optuna database URL shared by the workers (default: $BOREALIS_STORAGE, else "
                        "borealis-studies.db beside the sqlite MLflow store); e.g. postgresql+psycopg://u:p@host/db")
    g.add_argument("--checkpoint-dir", default=None,
                   help="training checkpoints (default: $BOREALIS_CACHE_DIR/checkpoints; share it across machines)")
    g.add_argument("--checkpoint-every", type=int, default=50, help="save a checkpoint every N steps (0: only at "
                   "the end of training and on SIGINT/SIGTERM)")
    g.add_argument("--stale-after", type=float, default=300.0,
                   help="seconds without a heartbeat after which another worker takes over a claim")


def _launcher_args(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("launching on SLURM (`--launcher slurm`; defaults: the ablation's launcher: block)")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: --workers processes on this machine; slurm: --workers SLURM jobs (submitit)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--time-min", type=int, default=None, help="each job's time limit in minutes; near it the job "
                   "checkpoints and requeues itself")
    g.add_argument("--gpus-per-worker", type=int, default=None, help="> 1: each worker trains data-parallel (torchrun)")
    g.add_argument("--cpus-per-worker", type=int, default=None)
    g.add_argument("--mem-gb", type=float, default=None)
    g.add_argument("--sbatch", action="append", metavar="KEY=VALUE", default=None,
                   help="another sbatch option (repeatable), e.g. --sbatch qos=high --sbatch constraint=a100")
    g.add_argument("--log-dir", default=None, help="the jobs' logs (default: slurm-logs/<study>)")
    g.add_argument("--wait", action="store_true", help="wait, printing progress, until the study closes (Ctrl-C "
                   "cancels the jobs and releases their claims)")


def _storage(a) -> str:
    from borealis_eval.claims import default_storage_url
    from borealis_eval.tracking import TrackingConfig

    return a.storage or os.environ.get("BOREALIS_STORAGE") or default_storage_url(
        TrackingConfig.load(tracking_uri=a.tracking_uri).tracking_uri)


def cmd_launch_slurm(a) -> int:
    from borealis_eval.claims import ClaimStore
    from borealis_eval.errors import UsageError
    from borealis_eval.launch import control
    from borealis_eval.launch.slurm import launch_sweep
    from borealis_eval.study import StudyClosed

    sbatch = {}
    for kv in a.sbatch or []:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UsageError(f"--sbatch wants KEY=VALUE (got '{kv}')")
        sbatch[k.lstrip("-")] = v
    cli = {"partition": a.partition, "account": a.account, "time_min": a.time_min, "gpus_per_worker": a.gpus_per_worker,
           "cpus_per_worker": a.cpus_per_worker, "mem_gb": a.mem_gb, "sbatch": sbatch or None, "log_dir": a.log_dir}
    report_args = (["--out", str(Path(a.out).resolve())] if a.out else []) + (["--no-report"] if a.no_report else [])
    try:
        got = launch_sweep(a.file, a.workers, cli, tracking_uri=a.tracking_uri, only=a.only, study=a.study, new=a.new,
                           storage=a.storage, checkpoint_dir=a.checkpoint_dir, checkpoint_every=a.checkpoint_every,
                           stale_after=a.stale_after, overrides=_overrides(a), report_args=report_args)
    except StudyClosed as e:
        console.print(f"study {e.name} is closed: every variant finished (parent run {e.parent_run_id}); nothing to run")
        return 0
    console.print(f"study {got.study} ({'new' if got.created else 'joined'}; parent run {got.parent_run_id}): "
                  f"{len(got.job_ids)} SLURM job(s) {', '.join(got.job_ids)}; logs in {got.log_dir}")
    console.print(f"follow it: borealis-eval status {got.study} --storage {got.storage}")
    if not a.wait:
        return 0
    store = ClaimStore(got.storage)
    try:
        ok = control.wait(store, got.study, every=float(os.environ.get("BOREALIS_WAIT_EVERY", "10")),
                          say=lambda line: console.print(line, highlight=False))
    except KeyboardInterrupt:
        ids, released = control.cancel(store, got.study, "cancelled by Ctrl-C on the launcher")
        console.print(f"cancelled {len(ids)} job(s), released {released} claim(s); the study stays open: resume it "
                      f"with --study {got.study}")
        return 130
    if not ok:
        console.print(f"every job ended but study {got.study} is still open (failed variants or jobs that died; see "
                      f"{got.log_dir}); rerun the same command to resume")
        return 1
    console.print(f"study {got.study} closed; report: borealis-eval report {got.experiment} --run {got.parent_run_id}")
    return 0


def cmd_status(a) -> int:
    from borealis_eval.claims import ClaimStore
    from borealis_eval.launch import control

    store = ClaimStore(_storage(a))
    s = control.state(store, control.resolve_study(store, a.study))
    if a.json:
        print(json.dumps({"study": s.name, "status": s.status, "parent_run_id": s.parent_run_id, "claims": s.claims,
                          "jobs": s.jobs, "log_dir": s.log_dir}, indent=1))
        return 0
    console.print(s.summary(), highlight=False)
    if s.claims:
        _print_rows(s.claims)
    if s.log_dir:
        console.print(f"logs: {s.log_dir}")
    return 0


def cmd_cancel(a) -> int:
    from borealis_eval.claims import ClaimStore
    from borealis_eval.launch import control

    store = ClaimStore(_storage(a))
    name = control.resolve_study(store, a.study)
    ids, released = control.cancel(store, name)
    console.print(f"study {name}: cancelled {len(ids)} job(s) {', '.join(ids)}, released {released} claim(s); the "
                  f"study stays open (resume it with sweep FILE --study {name})")
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="borealis-eval", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: mlflow.yaml / MLFLOW_TRACKING_URI)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="train and score every variant of an ablation grid")
    s.add_argument("file")
    s.add_argument("--dry-run", action="store_true", help="print the variants and exit")
    s.add_argument("--only", nargs="+", help="run only these variant names")
    s.add_argument("--no-report", action="store_true")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--out", default=None, help="report folder (default reports/<name>)")
    s.add_argument("--register", metavar="NAME", default=None,
                   help="register the best variant (lowest mean WER over the eval sets) in the MLflow model "
                        "registry as a new version of NAME")
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, each with train.threads torch threads, splitting the "
                        "grid through the claims table (on 2 cores, two 1-thread workers do 1.4x the work of one "
                        "2-thread worker)")
    s.add_argument("--helper", type=int, default=None, help=argparse.SUPPRESS)
    _set_arg(s)
    _study_args(s)
    _launcher_args(s)
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("status", help="a study's claims and its SLURM jobs' states (default: the newest study)")
    s.add_argument("study", nargs="?", default=None)
    s.add_argument("--storage", default=None, help="claims database URL (default as for sweep)")
    _json_arg(s)
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("cancel", help="cancel a launched study's SLURM jobs and release their claims (resumable)")
    s.add_argument("study")
    s.add_argument("--storage", default=None, help="claims database URL (default as for sweep)")
    s.set_defaults(fn=cmd_cancel)

    s = sub.add_parser("search", help="Optuna search over the ablation's `search:` space (nested run per trial)")
    s.add_argument("file")
    s.add_argument("--n-trials", type=int, default=None, help="override search.n_trials (a total over all workers)")
    s.add_argument("--no-progress", action="store_true")
    _set_arg(s)
    _study_args(s)
    s.set_defaults(fn=cmd_search)

    s = sub.add_parser("plan", help="cost plan of an ablation: parameters, tokens/step, peak memory, device-hours")
    s.add_argument("file")
    s.add_argument("--device", choices=["cpu", "h200"], default=None,
                   help="machine to plan for (default: cpu when train.threads is set, else h200)")
    s.add_argument("--step-seconds", type=float, default=None, help="measured seconds per optimizer step (all variants)")
    s.add_argument("--probe", action=argparse.BooleanOptionalAction, default=None,
                   help="time real training/decoding steps here (default: on for a CPU profile with local data)")
    s.add_argument("--probe-steps", type=int, default=12)
    s.add_argument("--from-runs", nargs="?", const="", default=None, metavar="EXPERIMENT",
                   help="read earlier runs of EXPERIMENT (default: the file's name) in the store: step times "
                        "(train/steps_per_second) and, from its newest sweep with 2+ seeds, each set's seed std and "
                        "test-sampling SE for the seed plan")
    s.add_argument("--seed-sd", type=float, default=None, metavar="PTS",
                   help="prior seed std of one run's WER (pts) for the seed plan; overrides --from-runs "
                        "(without runs or this flag the plan uses a default prior, and says so)")
    s.add_argument("--utt-se", type=float, default=None, metavar="PTS",
                   help="prior test-sampling SE of a contrast (pts), every set; overrides --from-runs "
                        "(default without runs: a stated per-utterance SD / sqrt(utterances of the set))")
    s.add_argument("--target-pts", type=float, default=None, metavar="PTS",
                   help="effect (WER pts) to plan seeds for, beside the margin (default: analysis.margin_pts)")
    s.add_argument("--checkpoint-every", type=int, default=50, help="as the sweep will be run")
    s.add_argument("--workers", type=int, default=1, help="as the sweep will be run (`sweep --workers N`)")
    s.add_argument("--json", default=None, help="also write the plan as JSON here")
    s.set_defaults(fn=cmd_plan)

    s = sub.add_parser("report", help="render reports/<experiment>/report.{md,html} from the MLflow store")
    s.add_argument("experiment")
    s.add_argument("--run", default=None, help="parent run id (default: the newest sweep)")
    s.add_argument("--out", default=None)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("evaluate", help="score a trained variant (run:/model:/models:/) or a Whisper model on an "
                                        "ablation's eval sets")
    s.add_argument("model", help="a trained variant: run:<run id>, model:<logged model id>, models:/<model id>, "
                                 "models:/<registered name>/<version> or models:/<name>@<alias>; or a Whisper "
                                 "reference (bundled:/hf:/folder)")
    s.add_argument("--ablation", required=True, help="ablation file whose eval sets to use")
    s.add_argument("--sets", nargs="+", help="only these eval sets")
    s.add_argument("--out", help="also write the JSON here")
    _set_arg(s)
    s.set_defaults(fn=cmd_evaluate)

    d = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="generate the synthetic ru/en corpus (cached)")
    s.add_argument("--out", default="data/synth/cpu-v1")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_data_synth)
    s = d.add_parser("fortunes", help="open-vocabulary ru/en speech: Debian's fortune sentences spoken by the corpus's "
                                      "voices (needs apt-get; cached)")
    s.add_argument("--out", default="data/fortunes/v1")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--sizes", help='JSON overriding clip counts, e.g. \'{"train": 300}\' (keys: data/fortunes.py DEFAULT_SIZES)')
    s.set_defaults(fn=cmd_data_fortunes)
    f = d.add_parser("fetch", help="fetch recorded data").add_subparsers(dest="fetch_cmd", required=True)
    s = f.add_parser("real", help="real speech from Debian packages (festvox-ru, Asterisk ru/en; needs apt-get)")
    s.add_argument("--out", default="data/real")
    s.set_defaults(fn=cmd_data_fetch_real)

    m = sub.add_parser("models", help="bundled offline weights").add_subparsers(dest="models_cmd", required=True)
    s = m.add_parser("list", help="bundled models (tab-separated when piped)")
    _json_arg(s)
    s.set_defaults(fn=cmd_models_list)
    s = m.add_parser("prepare", help="import bundled weights into the cache")
    s.add_argument("names", nargs="+")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_models_prepare)

    s = sub.add_parser("score", help="score a JSONL of hypotheses against a JSONL of references")
    s.add_argument("refs")
    s.add_argument("hyps")
    s.add_argument("--lang", required=True, choices=["ru", "en", "other"])
    s.add_argument("--allow-missing", action="store_true")
    s.set_defaults(fn=cmd_score)

    c = sub.add_parser("cache", help="encoder-feature cache").add_subparsers(dest="cache_cmd", required=True)
    s = c.add_parser("info", help="encoder-feature cache entries per encoder (tab-separated when piped)")
    _json_arg(s)
    s.set_defaults(fn=cmd_cache_info)
    c.add_parser("clear").set_defaults(fn=cmd_cache_clear)

    s = sub.add_parser("runs", help="list an experiment's runs (tab-separated with full run ids when piped)")
    s.add_argument("experiment")
    _json_arg(s)
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("ui", help="start the MLflow UI on the configured store (127.0.0.1); prints each "
                                  "experiment's runs-page URL first")
    s.add_argument("experiment", nargs="?", default=None, help="print only this experiment's URL")
    s.add_argument("--port", type=int, default=5000)
    s.set_defaults(fn=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():  # a log file or pipe gets a progress line every 30 s, not every step
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per predictions file read back
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from borealis_eval.errors import UserError

    if args.command in ("sweep", "search", "evaluate"):  # they call generate(), which repeats notes per batch
        import transformers

        transformers.logging.set_verbosity_error()
    try:
        return args.fn(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}  (--debug shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
