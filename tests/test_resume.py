"""Recovery: kill -9 in the middle of a variant, then SIGTERM in the middle of the next, then a rerun.

Nothing finished is computed again, interrupted variants resume from their checkpoints, the killed
run is marked FAILED (found RUNNING with a dead worker) and the signalled one KILLED with the reason.
"""

import signal
import subprocess
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
import torch

from _numerics import assert_close
from _tiny import tiny_ablation
from test_workers import sweep_cmd, worker_env


def _wait_mid_training(proc, storage: str, study: str, ck: Path, n_finished: int, timeout: float = 120) -> str:
    """Block until `n_finished` variants are done and the next one has a checkpoint; its config hash."""
    eng = sa.create_engine(storage)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                with eng.connect() as c:
                    rows = c.execute(sa.text("SELECT config_hash, status FROM borealis_claims WHERE study = :s"),
                                     {"s": study}).all()
            except sa.exc.OperationalError:
                rows = []
            done = [h for h, st in rows if st == "finished"]
            busy = [h for h, st in rows if st == "claimed" and (ck / study / h / "state.pt").is_file()]
            if len(done) == n_finished and busy:
                return busy[0]
            time.sleep(0.02)
    finally:
        eng.dispose()
    raise AssertionError("the worker never reached the middle of a variant")


STEPS = 200  # long enough to be stopped in the middle (a checkpoint every 10 steps), short enough to train 3 times


def test_kill9_then_sigterm_then_rerun_completes_without_recomputing(tmp_path, corpus):
    abl = tiny_ablation(tmp_path, corpus, "tiny_resume", grid={"data.text_fraction": [0.0, 0.1, 0.25]}, steps=STEPS)
    uri, storage, ck = f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/studies.db", tmp_path / "ck"
    study = f"resume-{uuid.uuid4().hex[:6]}"
    cmd = sweep_cmd(uri, abl, "--storage", storage, "--study", study, "--checkpoint-dir", str(ck),
                    "--checkpoint-every", "10")
    start = lambda: subprocess.Popen(cmd, cwd=tmp_path, env=worker_env(tmp_path), stdout=subprocess.PIPE,  # noqa: E731
                                     stderr=subprocess.STDOUT, text=True)

    p = start()
    killed_hash = _wait_mid_training(p, storage, study, ck, n_finished=1)
    p.kill()  # SIGKILL: no chance to clean up
    p.wait()

    p = start()
    termed_hash = _wait_mid_training(p, storage, study, ck, n_finished=2)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 130, out[-3000:]
    assert (ck / study / termed_hash / "state.pt").is_file()
    step_at_stop = torch.load(ck / study / termed_hash / "state.pt", weights_only=False)["step"]
    assert 0 < step_at_stop < STEPS

    p = start()
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 0, out[-3000:]

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_resume"], output_format="pandas")
    variants = runs[runs["tags.role"] == "variant"]
    fin = variants[variants["status"] == "FINISHED"]
    assert len(fin) == 3 and fin["tags.config_hash"].nunique() == 3  # no duplicate FINISHED runs
    assert len(variants) == 5  # 3 finished + the killed attempt + the signalled attempt: nothing else re-ran
    dead = variants[variants["status"] == "FAILED"]
    assert len(dead) == 1 and dead["tags.config_hash"].item() == killed_hash
    assert "stopped without reporting" in dead["tags.error"].item()
    stopped = variants[variants["status"] == "KILLED"]
    assert len(stopped) == 1 and stopped["tags.config_hash"].item() == termed_hash
    assert "SIGTERM" in stopped["tags.error"].item()
    resumed = fin.set_index("tags.config_hash")["tags.resumed_from_step"]
    assert int(resumed[killed_hash]) > 0 and int(resumed[termed_hash]) == step_at_stop
    parents = runs[runs["tags.role"] == "parent"]
    assert len(parents) == 1 and parents["status"].item() == "FINISHED"
    assert not (ck / study / termed_hash).exists()  # checkpoints go once the variant finished


def test_checkpoint_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    from _ddp_train import TEXTS, TINY_LLM
    from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TrainConfig
    from borealis_eval.models.speech_lm import Example, SpeechLM
    from borealis_eval.models.tokenizer import train_bpe_tokenizer
    from borealis_eval.train import TrainingInterrupted, train

    tok = train_bpe_tokenizer(TEXTS * 3, 300)
    cfg = ModelConfig(encoder=EncoderConfig(config={"d_model": 32}), adapter=AdapterConfig(downsample_k=2, hidden_sizes=[16]),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="full"))
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=t, features=torch.randn(8, 32, generator=g), id=str(i)) for i, t in enumerate(TEXTS)]
    tc = TrainConfig(steps=12, batch_size=2, lr=3e-3, warmup_ratio=0.2)

    def model():
        torch.manual_seed(0)
        return SpeechLM.from_config(cfg, enc_dim=32, tokenizer=tok)

    straight = model()
    ref = train(straight, exs, tc, seed=0, progress=False)
    m = model()
    calls = iter(range(100))
    with pytest.raises(TrainingInterrupted) as e:
        train(m, exs, tc, seed=0, progress=False, checkpoint_dir=tmp_path, checkpoint_every=4,
              should_stop=lambda: "SIGINT received" if next(calls) == 6 else None)
    assert e.value.step == 7
    resumed = model()  # a fresh process: new model, state from the checkpoint only
    res = train(resumed, exs, tc, seed=0, progress=False, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert res.resumed_from == 7 and res.losses == pytest.approx(ref.losses, rel=1e-5)
    for k, t in straight.trainable_state_dict().items():
        assert_close(resumed.trainable_state_dict()[k], t, rel=1e-5)
