"""Fault injection: every fault the harness must survive, and the outcome a user sees.

Training faults (NaN loss, inf gradients, out of memory in training and in evaluation) run in one
in-process sweep whose variants each get one fault; the tests after it read that sweep's store.
Writes are crashed half-way; the tracking store is made unreachable before the run and made to
fail in the middle of it; signals go to a real `sweep` process; two processes share a cache and a
store. The README's "Reliability" table lists the same faults and outcomes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from _tiny import claims_of, tiny_ablation
from test_workers import worker_env

REPO = Path(__file__).resolve().parents[1]


def _runs(uri: str, experiment: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="pandas")


# ------------------------------------------------------------------ training faults, one per variant
class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite backward: the loss stays finite, the gradient norm does not."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def _oom(*_a, **_k):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


# seed -> (forward call from which the fault fires, what the fault does to the loss)
TRAIN_FAULTS = {1: (3, lambda loss: loss * float("nan")), 2: (2, _InfGrad.apply), 3: (2, _oom)}
EVAL_OOM_SEED = 4


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory, corpus):
    """Five variants (seeds 0-4): seed 0 is healthy, each other one meets one fault."""
    from borealis_eval import recipe
    from borealis_eval.cli import main

    tmp = tmp_path_factory.mktemp("faulty")
    abl = tiny_ablation(tmp, corpus, "tiny_faults", grid={"seed": [0, 1, 2, 3, 4]}, steps=4)
    uri = f"sqlite:///{tmp}/mlflow.db"
    batches: dict[int, list[str]] = {}
    real_train = recipe.train

    def faulty_train(model, examples, cfg, seed, **kw):
        if seed in TRAIN_FAULTS:
            first, fault = TRAIN_FAULTS[seed]
            forward, calls = model.forward, [0]

            def fwd(batch):
                calls[0] += 1
                loss = forward(batch)
                if calls[0] >= first:
                    batches[seed] = [e.id for e in batch]
                    return fault(loss)
                return loss

            model.forward = fwd
        if seed == EVAL_OOM_SEED:
            model.generate = _oom
        return real_train(model, examples, cfg, seed, **kw)

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOREALIS_CACHE_DIR", str(tmp / "cache"))
        mp.chdir(tmp)
        mp.setattr(recipe, "train", faulty_train)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--out", str(tmp / "report")])
    runs = _runs(uri, "tiny_faults")
    variants = runs[runs["tags.role"] == "variant"].set_index("tags.seed")
    return {"rc": rc, "out": " ".join(out.getvalue().split()),  # rich wraps lines at the terminal width
            "runs": runs, "variants": variants, "batches": batches, "tmp": tmp}


def test_nan_loss_fails_only_that_variant_with_step_and_batch_ids(faulty_sweep):
    v = faulty_sweep["variants"].loc["1"]
    assert v["status"] == "FAILED"
    assert v["tags.error"].startswith("TrainingDiverged: loss is not finite at step 2")
    assert v["tags.error.step"] == "2"
    assert v["tags.error.batch_ids"].split(",") == faulty_sweep["batches"][1]


def test_inf_gradient_norm_fails_only_that_variant(faulty_sweep):
    v = faulty_sweep["variants"].loc["2"]
    assert v["status"] == "FAILED"
    assert "gradient norm is not finite at step 1" in v["tags.error"]
    assert v["tags.error.step"] == "1" and v["tags.error.batch_ids"].split(",") == faulty_sweep["batches"][2]


def test_out_of_memory_in_training_hints_at_batch_size_and_accumulation(faulty_sweep):
    v = faulty_sweep["variants"].loc["3"]
    assert v["status"] == "FAILED"
    err = v["tags.error"]
    assert err.startswith("TrainingOOM: out of memory at step 1 (train.batch_size=2, train.grad_accum=1)")
    assert "lower train.batch_size and raise train.grad_accum" in err and "batch_size: 1, grad_accum: 2" in err
    assert "OutOfMemoryError" in err and v["tags.error.step"] == "1"


def test_out_of_memory_in_evaluation_hints_at_eval_batch_size(faulty_sweep):
    v = faulty_sweep["variants"].loc[str(EVAL_OOM_SEED)]
    assert v["status"] == "FAILED" and v["tags.error"].startswith("OutOfMemoryError (out of memory outside training: "
                                                                   "lower eval.batch_size")
    assert "lower eval.batch_size" in v["tags.error.hint"]
    assert "lower eval.batch_size" in faulty_sweep["out"]  # the CLI summary shows the hint too


def test_the_other_variants_go_on_and_the_report_lists_each_failure(faulty_sweep):
    fs = faulty_sweep
    v = fs["variants"].loc["0"]
    assert v["status"] == "FINISHED" and v["metrics.wer/test_en"] >= 0
    parent = fs["runs"][fs["runs"]["tags.role"] == "parent"].iloc[0]
    assert parent["status"] == "FAILED" and "4 variant(s) failed; rerun the same command" in parent["tags.error"]
    assert fs["rc"] == 1  # some variants failed: non-zero, but the sweep ran to the end and reported
    for seed in ("1", "2", "3", "4"):
        name = fs["variants"].loc[seed, "tags.variant"]
        assert f"FAILED {name}:" in fs["out"]
    md = (fs["tmp"] / "report" / "report.md").read_text()
    section = md.split("## Runs that did not finish")[1].split("\n## ")[0]
    for seed in ("1", "2", "3", "4"):
        row = next(r for r in section.splitlines() if fs["variants"].loc[seed, "run_id"][:8] in r)
        assert "FAILED" in row
    assert "TrainingDiverged: loss is not finite" in section and "TrainingOOM: out of memory" in section


# ------------------------------------------------------------------ bad data in a sweep
def test_sweep_with_corrupt_and_missing_clips_finishes_and_lists_them(tmp_path, corpus, monkeypatch):
    import shutil

    import yaml

    from borealis_eval.cli import main

    data = shutil.copytree(corpus, tmp_path / "corpus")
    rows = {s: [json.loads(x) for x in (data / f"{s}.jsonl").read_text().splitlines()] for s in ("test_en", "dev")}
    (data / rows["test_en"][0]["audio"]).write_bytes(b"RIFF\x00\x00garbage, not a wav")  # corrupt
    (data / rows["dev"][1]["audio"]).unlink()  # missing
    abl = tiny_ablation(tmp_path, data, "tiny_bad_data")
    cfg = yaml.safe_load(abl.read_text())
    cfg["base"]["data"]["max_bad_share"] = 0.3  # one bad clip per eval set (of 4 and 8) is tolerated
    for s in cfg["base"]["eval"]["sets"]:
        s.pop("max_samples")
    abl.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report"]) == 0

    runs = _runs(uri, "tiny_bad_data")
    parent = runs[runs["tags.role"] == "parent"].iloc[0]
    assert parent["status"] == "FINISHED" and parent["metrics.data/bad_items"] == 2
    path = MlflowClient(uri).download_artifacts(parent["run_id"], "data/bad_items.jsonl", str(tmp_path))
    bad = [json.loads(x) for x in Path(path).read_text().splitlines()]
    assert sorted((b["set"], b["id"], b["kind"]) for b in bad) == [
        ("dev", rows["dev"][1]["id"], "missing"), ("test_en", rows["test_en"][0]["id"], "corrupt")]
    v = runs[runs["tags.role"] == "variant"].iloc[0]
    assert v["status"] == "FINISHED" and v["metrics.n_utts/test_en"] == len(rows["test_en"]) - 1
    assert v["metrics.n_utts/dev"] == len(rows["dev"]) - 1


# ------------------------------------------------------------------ crash in the middle of a write
def _half_then_fail(real_write):
    """A writer that puts half of the real bytes at the target, then dies (disk full)."""

    def write(obj, target, *a, **k):
        buf = io.BytesIO()
        real_write(obj, buf, *a, **k)
        with open(target, "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device (injected)")

    return write


def _tiny_train_setup():
    from _ddp_train import TEXTS, TINY_LLM
    from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TrainConfig
    from borealis_eval.models.speech_lm import Example, SpeechLM
    from borealis_eval.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(TEXTS * 3, 300)
    cfg = ModelConfig(encoder=EncoderConfig(config={"d_model": 32}),
                      adapter=AdapterConfig(downsample_k=2, hidden_sizes=[16]),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="full"))
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=t, features=torch.randn(8, 32, generator=g), id=str(i)) for i, t in enumerate(TEXTS)]

    def model():
        torch.manual_seed(0)
        return SpeechLM.from_config(cfg, enc_dim=32, tokenizer=tok)

    return model, exs, lambda steps: TrainConfig(steps=steps, batch_size=2, lr=1e-3, log_every=2)


def test_checkpoint_crash_mid_write_keeps_the_previous_one_and_a_truncated_one_is_not_trusted(tmp_path, monkeypatch,
                                                                                               caplog):
    from borealis_eval.train import train

    model, exs, tc = _tiny_train_setup()
    train(model(), exs, tc(4), seed=0, progress=False, checkpoint_dir=tmp_path)  # final checkpoint: step 4
    ck = tmp_path / "state.pt"
    assert torch.load(ck, weights_only=False)["step"] == 4

    # Crash while writing the step-6 checkpoint: the step-4 one is still there, whole, and no debris.
    with monkeypatch.context() as mp:
        mp.setattr(torch, "save", _half_then_fail(torch.save))
        with pytest.raises(OSError, match="No space left"):
            train(model(), exs, tc(6), seed=0, progress=False, checkpoint_dir=tmp_path)
    assert torch.load(ck, weights_only=False)["step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]

    # A truncated file at the final path (a disk fault, a copy cut short) is set aside, never loaded.
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 3])
    logged = []
    res = train(model(), exs, tc(4), seed=0, progress=False, checkpoint_dir=tmp_path,
                log=lambda m, s: logged.append(s))
    assert res.resumed_from == 0 and logged == [2, 4]  # trained from scratch
    assert (tmp_path / "state.pt.corrupt").read_bytes() == data[: len(data) // 3]
    assert torch.load(ck, weights_only=False)["step"] == 4
    assert "does not load" in caplog.text


def test_feature_cache_crash_mid_write_and_truncated_entry_are_recomputed(tmp_path, monkeypatch):
    import safetensors.torch

    from borealis_eval.data import features
    from borealis_eval.data.features import FeatureCache, audio_hash, encode_cached

    from borealis_eval.models.encoder import FrozenWhisperEncoder

    class Encoder:  # the FeatureCache contract: padded_length + encode_batch (encode_many builds on them)
        calls = 0
        encode_many = FrozenWhisperEncoder.encode_many

        def padded_length(self, n):
            return n

        def encode_batch(self, waves):
            Encoder.calls += 1
            return [torch.full((4, 3), float(w[0])) for w in waves]

    cache = FeatureCache("enc", root=tmp_path)
    wave = np.full(160, 0.5, dtype=np.float32)
    key = audio_hash(wave)

    def half_save(tensors, filename, *a, **k):
        data = safetensors.torch.save(tensors)
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device (injected)")

    with monkeypatch.context() as mp:
        mp.setattr(features, "save_file", half_save)
        with pytest.raises(OSError):
            encode_cached(Encoder(), {"a": wave}, cache)
    assert cache.get(key) is None and not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob(".tmp*"))

    encode_cached(Encoder(), {"a": wave}, cache)  # a good entry ...
    good = cache.path(key).read_bytes()
    cache.path(key).write_bytes(good[:-7])  # ... truncated in place
    assert cache.get(key) is None
    cache.stats.encoded = 0
    out = encode_cached(Encoder(), {"a": wave}, cache)
    assert cache.stats.encoded == 1 and torch.equal(out["a"], torch.full((4, 3), 0.5))  # recomputed, rewritten
    assert cache.path(key).read_bytes() == good


def test_decode_cache_crash_mid_write_and_damaged_entry_are_misses(tmp_path, monkeypatch):
    from borealis_eval.evaluate import decode_cache
    from borealis_eval.evaluate.decode_cache import DecodeCache

    cache = DecodeCache(tmp_path)
    records = [{"id": "a", "ref": "x", "hyp": "y"}]

    def half_dump(obj, f, **k):
        text = json.dumps(obj, **k)
        f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device (injected)")

    with monkeypatch.context() as mp:
        mp.setattr(decode_cache.json, "dump", half_dump)
        with pytest.raises(OSError):
            cache.put("k", records, 1.0)
    assert cache.get("k") is None and list(tmp_path.iterdir()) == []

    cache.put("k", records, 1.0)
    assert cache.get("k") == (records, 1.0)
    path = tmp_path / "k.json"
    full = path.read_text()
    for damaged in (full[: len(full) // 2], "{}", '{"records": 3, "seconds": 1}', "[]"):
        path.write_text(damaged)
        assert cache.get("k") is None, damaged


def test_report_and_manifest_crash_mid_write_leave_the_old_file(tmp_path, monkeypatch):
    import os

    from borealis_eval import atomic
    from borealis_eval.data.manifest import read_manifest, write_manifest
    from borealis_eval.errors import DataError

    report = tmp_path / "report.md"
    report.write_text("old report\n")
    man = tmp_path / "train.jsonl"
    write_manifest(man, [{"id": "1", "text": "old"}])

    def crash(*_a):
        raise OSError(5, "Input/output error (injected)")

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            atomic.write_text(report, "new report\n" * 1000)
        with pytest.raises(OSError):
            write_manifest(man, [{"id": str(i), "text": "new"} for i in range(1000)])
    assert report.read_text() == "old report\n"
    assert read_manifest(man) == [{"id": "1", "text": "old"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "train.jsonl"]  # no temp files left

    # A manifest cut in the middle of a row (copied by hand, a crash in another tool) is refused precisely.
    man.write_text('{"id": "1", "text": "a"}\n{"id": "2", "te')
    with pytest.raises(DataError, match=r"train\.jsonl:2: invalid JSON"):  # a user error: one line at the CLI
        read_manifest(man)


# ------------------------------------------------------------------ tracking store
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_fails_before_any_work(tmp_path, corpus, monkeypatch, capsys):
    from borealis_eval.cli import main

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    abl = tiny_ablation(tmp_path, corpus, "tiny_unreachable")
    rc = main(["--tracking-uri", f"http://127.0.0.1:{_free_port()}", "sweep", str(abl), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and err.startswith("error: MLflow tracking server http://127.0.0.1:")
    assert "is unreachable" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "features").exists()  # nothing was encoded or trained

    rc = main(["--tracking-uri", "sqlite:////proc/borealis-nope/mlflow.db", "sweep", str(abl), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: MLflow store sqlite:////proc/borealis-nope/mlflow.db: cannot create")


def test_store_failing_mid_training_loses_nothing_and_a_rerun_resumes(tmp_path, corpus, monkeypatch, capsys):
    from borealis_eval.cli import main
    from borealis_eval.tracking import RunLogger

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(RunLogger, "FLUSH_EVERY", 1)  # every point goes to the store at once, as in a long run
    abl = tiny_ablation(tmp_path, corpus, "tiny_store_down", grid={"data.text_fraction": [0.0, 0.25]}, steps=6)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = MlflowClient.log_batch
    down = [True]

    def flaky(self, run_id, *a, **k):  # the store refuses writes from step 4 of the first variant's curve on
        if down[0] and any(m.key == "train/loss" and m.step >= 4 for m in k.get("metrics") or ()):
            raise MlflowException("(sqlite3.OperationalError) disk I/O error (injected)")
        return real(self, run_id, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    cmd = ["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report", "--checkpoint-every", "0"]
    rc = main(cmd)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err.startswith(f"error: MLflow store {uri} failed while writing run ")
    assert "disk I/O error" in err and "rerun the same command once the store is back to resume" in err

    claims = claims_of(tmp_path / "borealis-studies.db")
    (hit,) = [c for c in claims.values() if c["status"] != "finished"]
    assert hit["status"] == "interrupted" and "disk I/O error" in hit["reason"]  # not failed: resumable
    assert len(claims) == 1  # the sweep stopped: no variant started against a broken store
    (ck,) = (tmp_path / "cache" / "checkpoints").glob(f"*/{hit['config_hash']}/state.pt")
    state = torch.load(ck, weights_only=False)
    assert state["step"] == 4 and [s for s, _ in state["history"]] == [2, 4]  # checkpointed before failing

    down[0] = False  # the store is back: the same command resumes and finishes
    assert main(cmd) == 0
    runs = _runs(uri, "tiny_store_down")
    variants = runs[runs["tags.role"] == "variant"]
    fin = variants[variants["status"] == "FINISHED"].set_index("tags.config_hash")
    assert len(fin) == 2 and fin["metrics.wer/test_en"].notna().all()
    resumed = fin.loc[hit["config_hash"]]
    assert resumed["tags.resumed_from_step"] == "4"
    curve = MlflowClient(uri).get_metric_history(resumed["run_id"], "train/loss")
    assert sorted(m.step for m in curve) == [2, 4, 6]  # the whole curve, the points before the failure included
    first = variants[variants["status"] != "FINISHED"]
    assert len(first) == 1 and first["status"].item() == "FAILED" and "disk I/O error" in first["tags.error"].item()
    parent = runs[runs["tags.role"] == "parent"]
    assert len(parent) == 1 and parent["status"].item() == "FINISHED"
    assert "tags.error" not in parent or parent["tags.error"].isna().all()  # the failed attempt's error is cleared


# ------------------------------------------------------------------ signals
def _start_driver(tmp: Path, corpus: Path, name: str, slow_after: int, seconds: float) -> dict:
    abl = tiny_ablation(tmp, corpus, name, steps=200)
    uri = f"sqlite:///{tmp}/mlflow.db"
    cmd = [sys.executable, str(REPO / "tests" / "_fault_driver.py"), "--tracking-uri", uri, "sweep", str(abl),
           "--no-progress", "--no-report", "--checkpoint-every", "1"]
    env = {**worker_env(tmp), "BOREALIS_TEST_SLOW_AFTER": str(slow_after), "BOREALIS_TEST_SLOW_SECONDS": str(seconds)}
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return {"proc": proc, "uri": uri, "tmp": tmp, "name": name}


def _wait_training(d: dict) -> Path:
    """Block until the first training step is checkpointed; the checkpoint's path."""
    proc, ckdir = d["proc"], d["tmp"] / "cache" / "checkpoints"
    deadline = time.time() + 120
    while not list(ckdir.glob("*/*/state.pt")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "training never started"
        time.sleep(0.05)
    return next(ckdir.glob("*/*/state.pt"))


@pytest.fixture(scope="module")
def sweep_procs(tmp_path_factory, corpus):
    """Both signal tests' sweep processes, started together (their start-up is most of the cost)."""
    procs = {
        # steps after the 4th forward take 0.5 s: a graceful stop has a step to finish
        "sigint": _start_driver(tmp_path_factory.mktemp("sigint"), corpus, "tiny_sigint", 4, 0.5),
        # steps after the first take 600 s: a graceful stop would wait for it (communicate() below would time
        # out after 60 s), a second SIGINT must not
        "sigint2": _start_driver(tmp_path_factory.mktemp("sigint2"), corpus, "tiny_sigint2", 1, 600),
    }
    yield procs
    for d in procs.values():
        if d["proc"].poll() is None:
            d["proc"].kill()
            d["proc"].wait()


def test_sigint_stops_after_the_step_with_a_checkpoint_and_a_killed_run(sweep_procs):
    d = sweep_procs["sigint"]
    proc, ck = d["proc"], _wait_training(d)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "stopping after this step" in out and "run the same command again to resume" in out
    step = torch.load(ck, weights_only=False)["step"]
    assert 0 < step < 200
    runs = _runs(d["uri"], d["name"])
    v = runs[runs["tags.role"] == "variant"].iloc[0]
    assert v["status"] == "KILLED"
    assert v["tags.error"] == f"TrainingInterrupted: SIGINT received; stopped at step {step} (checkpoint saved)"
    assert runs[runs["tags.role"] == "parent"]["status"].item() == "KILLED"
    assert claims_of(d["tmp"] / "borealis-studies.db")[v["tags.variant"]]["status"] == "interrupted"


def test_second_sigint_exits_at_once(sweep_procs):
    d = sweep_procs["sigint2"]
    proc, ck = d["proc"], _wait_training(d)
    time.sleep(0.5)
    before = torch.load(ck, weights_only=False)["step"]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]  # the step in progress would take 600 s
    assert proc.returncode == 130, out[-3000:]
    assert torch.load(ck, weights_only=False)["step"] == before  # the unfinished step was not checkpointed
    runs = _runs(d["uri"], d["name"])
    v = runs[runs["tags.role"] == "variant"].iloc[0]
    assert v["status"] == "KILLED" and "SIGINT received" in v["tags.error"]
    assert claims_of(d["tmp"] / "borealis-studies.db")[v["tags.variant"]]["status"] == "interrupted"


# ------------------------------------------------------------------ concurrency
_WRITER = r"""
import sys, time
from pathlib import Path
import torch
from borealis_eval.data.features import FeatureCache
from borealis_eval.tracking import RunLogger, TrackingConfig, experiment_id, preflight

root, uri, tag, go = sys.argv[1:5]
while not Path(go).exists():
    time.sleep(0.01)
tc = TrackingConfig.load(tracking_uri=uri)
client = preflight(tc)  # both create the schema of a fresh store at the same moment
eid = experiment_id(client, tc, "concurrent", "two writers")
run = RunLogger.start(client, eid, tag, {"role": "variant"})
run.flush_every = 10
cache = FeatureCache("enc", root=Path(root))
for i in range(100):  # both write the same 100 entries, reading each back at once
    key = f"{i:040x}"
    cache.put(key, torch.full((64, 8), float(i)))
    got = cache.get(key)
    assert got is not None and bool(got.eq(float(i)).all()), i
    run.metrics({"i": i}, step=i)
run.end("FINISHED")
print("ok", tag)
"""


def test_two_processes_on_one_cache_and_one_store_corrupt_nothing(tmp_path):
    uri, root, go = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "features", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), uri, f"w{i}", str(go)], cwd=tmp_path,
                              env=worker_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    from safetensors.torch import load_file

    files = sorted((root / "enc").rglob("*"))
    entries = [f for f in files if f.is_file()]
    assert len(entries) == 100 and all(f.suffix == ".safetensors" and not f.name.startswith(".") for f in entries)
    for f in entries:
        assert bool(load_file(str(f))["x"].eq(float(int(f.stem, 16))).all()), f
    client = MlflowClient(uri)
    runs = _runs(uri, "concurrent")
    assert len(runs) == 2 and (runs["status"] == "FINISHED").all()
    for rid in runs["run_id"]:
        assert sorted(m.step for m in client.get_metric_history(rid, "i")) == list(range(100))


# ------------------------------------------------------------------ fuzzing the scoring pipeline
_texts = st.text(max_size=40) | st.from_regex(r"[0-9a-zа-яё$%,.\-' ]{0,30}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(_texts, _texts), min_size=1, max_size=4),
       language=st.sampled_from(["ru", "en", "mixed", "other"]))
def test_random_strings_through_normalisers_and_metrics_never_crash(pairs, language):
    """The whole scoring path (normalise, cap, align, bootstrap, failure metrics) on arbitrary text."""
    from borealis_eval.evaluate.protocol import utt_scores
    from borealis_eval.evaluate.runner import score_set

    records = [{"id": str(i), "ref": r, "hyp": h, "duration": 1.0} for i, (r, h) in enumerate(pairs)]
    m = score_set("fuzz", records, language, 1.0, n_boot=20).metrics
    for k in ("wer", "cer", "wer_raw", "wer_basic"):
        assert m[k] >= 0 or math.isnan(m[k]), (k, m[k])
    assert all(u.wer >= 0 and u.cer >= 0 for u in utt_scores(records, language))
