"""The study as MLflow's own records, read back through MLflow's client: the experiment kind,
dataset inputs, logged models (that reload and reproduce their WER), the study's description and
saved view, the model registry, system metrics; and CLI output that survives a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from _tiny import manifest, tiny_ablation
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from borealis_eval import cli, records
from borealis_eval.data import synth
from borealis_eval.tracking import RunLogger, TrackingConfig

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "tiny_native"
REGISTERED = "tiny-best"


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process whose stdout is a pipe (what `| grep` sees)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "borealis_eval.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def tiny_study(tmp: Path, corpus: Path, register: str | None = None) -> dict:
    """A two-variant sweep with the bundled whisper-tiny.en baseline and its report (and a
    registration), run through the CLI into tmp/store.db; its records read back through MlflowClient."""
    from borealis_eval.cli import main

    uri = f"sqlite:///{tmp}/store.db"  # not the default name: nothing may reach it by the global URI
    abl = tiny_ablation(tmp, corpus, EXPERIMENT, grid={"data.text_fraction": [0.0, 0.25]}, baseline=True,
                        overrides={"base": {"eval": {"text_sets": [{"name": "heldout",
                                                                    "source": manifest(corpus, "text_heldout")}]}}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOREALIS_CACHE_DIR", str(tmp / "cache"))
        mp.chdir(tmp)
        assert main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--out", str(tmp / "report"),
                     *(["--register", register] if register else [])]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    by_role: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id]):
        by_role.setdefault(r.data.tags[records.ROLE], []).append(r)
    return {"tmp": tmp, "uri": uri, "abl": abl, "client": client, "exp": exp, "by_role": by_role, "corpus": corpus}


@pytest.fixture(scope="module")
def study(tmp_path_factory, corpus):
    return tiny_study(tmp_path_factory.mktemp("native"), corpus, register=REGISTERED)


# ------------------------------------------------------------------ the four acceptance checks
def test_experiment_is_tagged_as_model_development(study):
    assert study["exp"].tags[records.EXPERIMENT_KIND] == "custom_model_development"
    assert sorted(study["by_role"]) == ["baseline", "parent", "variant"] and len(study["by_role"]["variant"]) == 2


def test_every_variant_and_baseline_run_has_its_datasets_as_inputs(study):
    client = study["client"]
    seen: dict[str, set] = {}
    for role in ("variant", "baseline"):
        for run in study["by_role"][role]:
            inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
            got = {}
            for di in inputs:
                tags = {t.key: t.value for t in di.tags}
                got[di.dataset.name] = tags[records.DATASET_CONTEXT]
                assert len(di.dataset.digest) >= 16, di.dataset
                seen.setdefault(di.dataset.name, set()).add(di.dataset.digest)
                source = json.loads(di.dataset.source)
                assert di.dataset.source_type == "local" and Path(source["uri"]).is_file()
                assert source["version"] == synth.VERSION and source["fingerprint"]  # the corpus' version
                assert json.loads(di.dataset.profile)["items"] > 0
            if role == "variant":  # the tiny tokenizer is trained on the text pool: every variant reads it
                assert got == {"train": "training", "text_pool": "training", "test_en": "evaluation",
                               "dev": "evaluation", "heldout": "evaluation"}
            else:
                assert got == {"test_en": "evaluation", "dev": "evaluation"}
    assert all(len(d) == 1 for d in seen.values()), seen  # one set, one digest, in every run
    assert len({next(iter(d)) for d in seen.values()}) == len(seen)  # different sets, different digests


def test_each_variant_is_a_logged_model_that_reloads_and_reproduces_its_wer(study, tmp_path, monkeypatch, capsys):
    client = study["client"]
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))  # no decode cache: a fresh decode
    monkeypatch.chdir(tmp_path)
    for run in study["by_role"]["variant"]:
        full = client.get_run(run.info.run_id)
        assert len(full.outputs.model_outputs) == 1
        model = client.get_logged_model(full.outputs.model_outputs[0].model_id)
        assert model.source_run_id == run.info.run_id and model.status == LoggedModelStatus.READY
        assert model.model_type == records.MODEL_TYPE and model.tags[records.VARIANT_NAME] == run.info.run_name
        assert model.name == run.info.run_name.replace(".", "_")
        assert model.params[records.axis_tag("data.text_fraction")] == run.data.tags[records.axis_tag("data.text_fraction")]
        assert model.params[records.CONFIG_HASH] == run.data.tags[records.CONFIG_HASH]
        wer = {m.key: m for m in model.metrics if m.key == "wer/test_en"}["wer/test_en"]
        digest = {d.dataset.name: d.dataset.digest for d in full.inputs.dataset_inputs}["test_en"]
        assert wer.value == run.data.metrics["wer/test_en"]
        assert (wer.dataset_name, wer.dataset_digest) == ("test_en", digest)
        assert {m.dataset_name for m in model.metrics} == {"test_en", "dev", "heldout"}
        # old-style run artifacts are gone: the logged model is the one copy of the weights
        assert not [a for a in client.list_artifacts(run.info.run_id) if a.path in ("weights", "tokenizer")]

        for ref in (f"model:{model.model_id}", f"run:{run.info.run_id}"):
            assert cli.main(["--tracking-uri", study["uri"], "evaluate", ref, "--ablation", str(study["abl"]),
                             "--sets", "test_en"]) == 0
            out = json.loads(capsys.readouterr().out)
            assert out["test_en"]["wer"] == pytest.approx(run.data.metrics["wer/test_en"]), ref


def test_a_run_from_before_logged_models_still_evaluates(study, tmp_path, monkeypatch, capsys):
    """Older runs kept config, weights and tokenizer as run artifacts: `evaluate run:<id>` reads those."""
    client = study["client"]
    run = study["by_role"]["variant"][0]
    model = client.get_logged_model(client.get_run(run.info.run_id).outputs.model_outputs[0].model_id)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp_path)))
    old = client.create_run(study["exp"].experiment_id, run_name="written-before-logged-models")
    for sub in ("config", "weights", "tokenizer"):
        client.log_artifacts(old.info.run_id, str(folder / sub), sub)
    client.set_terminated(old.info.run_id)
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--tracking-uri", study["uri"], "evaluate", f"run:{old.info.run_id}", "--ablation",
                     str(study["abl"]), "--sets", "test_en"]) == 0
    assert json.loads(capsys.readouterr().out)["test_en"]["wer"] == pytest.approx(run.data.metrics["wer/test_en"])
    client.delete_run(old.info.run_id)  # the other tests see the study as the sweep left it
    assert cli.main(["--tracking-uri", study["uri"], "evaluate", "run:0123456789abcdef", "--ablation",
                     str(study["abl"])]) == 2
    assert "not a finished variant" in capsys.readouterr().err


def test_parent_description_has_the_headline_and_a_link_to_the_report(study):
    client = study["client"]
    (parent,) = study["by_role"]["parent"]
    note = client.get_run(parent.info.run_id).data.tags[records.NOTE]
    headline, question, link = note.split("\n\n")
    assert headline.startswith("- One training run per cell") and "plain Whisper" in headline  # the list, as Markdown
    assert question == "tiny scale-out test"
    tags = client.get_run(parent.info.run_id).data.tags
    assert json.loads(tags[records.MARGINS]) == {"default": 2.0, "sets": {}}  # analysis.margin_pts, for the report
    target = (f"#/experiments/{study['exp'].experiment_id}/runs/{parent.info.run_id}/artifacts/report/report.html"
              "?workflowType=machine_learning")
    assert link == f"Report: [report/report.html]({target})"
    assert "report/report.html" in [a.path for a in client.list_artifacts(parent.info.run_id, "report")]


# ------------------------------------------------------------------ the study view, the registry, pyfunc
def test_saved_view_shows_wer_per_eval_set(study):
    exp = study["client"].get_experiment(study["exp"].experiment_id)
    envelope = json.loads(exp.tags[records.SAVED_VIEW_PREFIX + records.WER_VIEW])
    state = json.loads(envelope["state"])
    assert envelope["name"] == "WER per eval set" and isinstance(envelope["createdAt"], int)
    assert {"metrics.`wer/test_en`", "metrics.`wer/dev`", "attributes.`Dataset`", "attributes.`Models`"} <= set(
        state["selectedColumns"])
    assert state["searchFilter"] == "tags.role != 'parent'"


def test_best_variant_is_registered_with_its_selection_rule(study):
    client = study["client"]
    (mv,) = client.search_model_versions(f"name = '{REGISTERED}'")
    means = {r.info.run_id: (r.data.metrics["wer/test_en"] + r.data.metrics["wer/dev"]) / 2
             for r in study["by_role"]["variant"]}
    best = min(means, key=means.get)
    assert mv.run_id == best
    assert mv.source == f"models:/{client.get_run(best).outputs.model_outputs[0].model_id}"
    assert "lowest mean WER" in mv.description and "Report: runs:/" in mv.description
    assert mv.tags[records.SELECTION_RULE].startswith("the lowest mean WER")


def test_registered_version_and_pyfunc_flavour_load(study, tmp_path, monkeypatch):
    """`models:/<name>/<version>` resolves to the logged model; MLflow's own pyfunc loader transcribes."""
    from borealis_eval.data.manifest import read_manifest
    from borealis_eval.logged_model import model_id_of

    client = study["client"]
    (mv,) = client.search_model_versions(f"name = '{REGISTERED}'")
    model_id = model_id_of(f"models:/{REGISTERED}/{mv.version}", client)
    assert model_id == client.get_run(mv.run_id).outputs.model_outputs[0].model_id
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    mlflow.set_tracking_uri(study["uri"])
    try:
        transcriber = mlflow.pyfunc.load_model(f"models:/{model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    rows = [json.loads(x) for x in Path(client.download_artifacts(mv.run_id, "predictions/test_en.jsonl",
                                                                  str(tmp_path))).read_text(encoding="utf-8").splitlines()]
    audio = {r["id"]: r["audio_path"] for r in read_manifest(study["corpus"] / "test_en.jsonl")}
    hyps = transcriber.predict([audio[r["id"]] for r in rows])
    assert hyps == [r["hyp"] for r in rows]  # the same tokens as the logged evaluation


# ------------------------------------------------------------------ system metrics
def test_system_metrics_setting_in_mlflow_yaml(tmp_path):
    conf = tmp_path / "mlflow.yaml"
    for text, want in (("", "auto"), ("system_metrics: true", True), ("system_metrics: false", False)):
        conf.write_text(text)
        assert TrackingConfig.load(conf).system_metrics == want
    assert TrackingConfig.load(conf, tracking_uri="sqlite:///x.db").monitors_system is False
    conf.write_text("system_metrics: sometimes")
    with pytest.raises(Exception, match="system_metrics must be true, false or auto"):
        TrackingConfig.load(conf)


def test_system_metrics_are_sampled_into_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("sysm")
    run = RunLogger.start(client, exp, "r", {}, system_metrics=True)
    deadline = time.monotonic() + 120  # waits for an event (the first sample), asserts nothing about time
    while "system/cpu_utilization_percentage" not in client.get_run(run.run_id).data.metrics:
        assert time.monotonic() < deadline, "no system metric was logged"
        time.sleep(0.2)
    run.end()
    metrics = client.get_run(run.run_id).data.metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100 and metrics["system/system_memory_usage_megabytes"] > 0
    plain = RunLogger.start(client, exp, "r2", {})
    plain.end()
    assert not [k for k in client.get_run(plain.run_id).data.metrics if k.startswith("system/")]


def test_buffered_curve_reaches_the_store_within_flush_seconds(tmp_path, monkeypatch):
    """A slow run's few points are not held back until 200 are buffered: the UI sees the curve."""
    import borealis_eval.tracking as tracking

    clock = [1000.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: clock[0])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    run = RunLogger.start(client, client.create_experiment("slow"), "r", {})

    def stored():
        return [m.step for m in client.get_metric_history(run.run_id, "train/loss")]

    run.metrics({"train/loss": 3.0}, step=10)
    clock[0] += RunLogger.FLUSH_SECONDS - 1
    run.metrics({"train/loss": 2.5}, step=20)
    assert stored() == []  # two points, not yet FLUSH_SECONDS old: still one log_batch away
    clock[0] += 1
    run.metrics({"train/loss": 2.0}, step=30)
    assert stored() == [10, 20, 30]
    clock[0] += 5
    run.metrics({"train/loss": 1.5}, step=40)  # a fresh buffer starts its own clock
    assert stored() == [10, 20, 30]
    run.end()
    assert stored() == [10, 20, 30, 40]


def test_demo_profile_accounts_for_every_second_of_the_sweep(study):
    """benchmarks/demo_profile: the phases add up to the sweep's lane-seconds, the baseline's decoding
    is split per eval set and the variants' training is read from train/seconds."""
    from benchmarks.demo_profile import lanes, main, profile

    parent = study["by_role"]["parent"][0].info.run_id
    p = profile(study["client"], parent)
    assert p["variants"] == 2 and len(p["lanes"]) == 1  # one worker ran everything in turn
    assert sum(p["phases"].values()) == pytest.approx(p["lane_seconds"], abs=1.0)
    assert {"baseline: decoding test_en", "baseline: decoding dev"} <= set(p["phases"])
    trained = sum(study["client"].get_run(r.info.run_id).data.metrics[records.TRAIN_SECONDS]
                  for r in study["by_role"]["variant"])
    assert p["phases"]["variants: training (dev curve included)"] == pytest.approx(trained, abs=0.2)
    assert p["lanes"][0]["runs"] == 3
    # two runs that overlap in time ran on two workers; a run that starts after one ends shares its lane
    two = lanes([{"start": 0, "end": 10}, {"start": 5, "end": 8}, {"start": 9, "end": 12}, {"start": 11, "end": 20}])
    assert [[(r["start"], r["end"]) for r in lane] for lane in two] == [[(0, 10), (11, 20)], [(5, 8), (9, 12)]]
    main(["--tracking-uri", study["uri"], "--experiment", EXPERIMENT])  # the CLI form runs on the same store


def test_workers_logging_the_same_set_at_once_all_get_it_as_an_input(tmp_path):
    """Two workers that start variants at once log the same sets: MLflow's SQL store checks for the
    dataset row and inserts it in one transaction, so both may miss it and the second insert breaks
    the unique key (CI, 2026-12-07: a worker of the PostgreSQL test exited with that StoreError). The
    logger retries such a failure; every run gets its input, and the set is stored once."""
    import threading
    import uuid

    from borealis_eval.data.lineage import DatasetRef

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("race")
    n, errors = 6, []
    for _ in range(5):
        ref = DatasetRef("train", uuid.uuid4().hex[:16], "local", {"uri": "x.jsonl"}, "training")
        runs = [RunLogger.start(client, exp, f"r{i}", {}) for i in range(n)]
        barrier = threading.Barrier(n)

        def log(run):
            barrier.wait()
            try:
                run.datasets([ref])
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=log, args=(r,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        for r in runs:
            [di] = client.get_run(r.run_id).inputs.dataset_inputs
            assert (di.dataset.name, di.dataset.digest) == ("train", ref.digest)
    import sqlite3

    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("select count(*), count(distinct digest) from datasets").fetchone() == (5, 5)


def test_a_store_error_that_is_not_a_unique_key_race_is_not_retried(tmp_path, monkeypatch):
    from borealis_eval.data.lineage import DatasetRef
    from borealis_eval.errors import StoreError

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    run = RunLogger.start(client, client.create_experiment("e"), "r", {})
    calls = []

    def broken(*a, **k):
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(client, "log_inputs", broken)
    with pytest.raises(StoreError, match="disk full"):
        run.datasets([DatasetRef("train", "0" * 16, "local", {"uri": "x"}, "training")])
    assert len(calls) == 1


# ------------------------------------------------------------------ the CLI in pipes
def test_models_list_survives_a_pipe_and_speaks_json(tmp_path):
    out = _cli("models", "list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum("bundled:whisper-base" in line for line in lines) == 1  # `| grep -c bundled:whisper-base` = 1
    assert all(line.count("\t") == 4 for line in lines) and lines[0].split("\t")[0] == "name"
    shell = subprocess.run(f"{sys.executable} -m borealis_eval.cli models list | grep -c bundled:whisper-base",
                           shell=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=300, check=True)
    assert shell.stdout.strip() == "1"
    rows = json.loads(_cli("models", "list", "--json", cwd=tmp_path).stdout)
    assert "bundled:whisper-base" in [r["name"] for r in rows]


def test_runs_and_cache_info_in_pipes(study, tmp_path):
    env = {"BOREALIS_CACHE_DIR": str(study["tmp"] / "cache")}
    rows = json.loads(_cli("--tracking-uri", study["uri"], "runs", EXPERIMENT, "--json", cwd=tmp_path, env=env).stdout)
    ids = {r.info.run_id for rs in study["by_role"].values() for r in rs}
    assert {r["run_id"] for r in rows} == ids and all(isinstance(r["wer/test_en"], (float, type(None))) for r in rows)
    tsv = _cli("--tracking-uri", study["uri"], "runs", EXPERIMENT, cwd=tmp_path, env=env).stdout.splitlines()
    assert {line.split("\t")[0] for line in tsv[1:]} == ids  # full ids, one run a line
    cache = json.loads(_cli("cache", "info", "--json", cwd=tmp_path, env=env).stdout)
    assert cache and all(r["entries"] > 0 and r["bytes"] > 0 for r in cache)
    tsv = _cli("cache", "info", cwd=tmp_path, env=env).stdout.splitlines()
    assert tsv[0] == "encoder\tentries\tMB" and len(tsv) == len(cache) + 1


def test_ui_prints_the_runs_page_of_each_experiment(study, monkeypatch, capsys):
    execs = []
    monkeypatch.setattr(os, "execv", lambda *a: execs.append(a))
    assert cli.main(["--tracking-uri", study["uri"], "ui", "--port", "5123"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    eid = study["exp"].experiment_id
    assert out == [(f"{EXPERIMENT}: http://127.0.0.1:5123/#/experiments/{eid}/runs?workflowType=machine_learning"
                    "&viewStateShareKey=borealis-wer")]
    assert execs and execs[0][1][1:4] == ["-m", "mlflow", "ui"]
