"""CTC soft tokens (adapter.output: ctc_tokens) and the alignment phase (train.align), on tiny models."""

import pytest
import torch

from borealis_eval.align import align
from borealis_eval.config import AdapterConfig, AlignConfig, EncoderConfig, LLMConfig, ModelConfig, config_hash
from borealis_eval.models.ctc_tokens import CTCTokenHead
from borealis_eval.models.speech_lm import CTC_VOCAB, Example, SpeechLM
from borealis_eval.models.tokenizer import train_bpe_tokenizer
from borealis_eval.train import train
from test_model import TEXTS, TINY_ENC, TINY_LLM


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS, 300)


def ctc_model(tok, weight=0.3, seed=0):
    cfg = ModelConfig(encoder=EncoderConfig(config=TINY_ENC),
                      adapter=AdapterConfig(downsample_k=2, hidden_sizes=[48], output="ctc_tokens", ctc_weight=weight),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="full"))
    torch.manual_seed(seed)
    m = SpeechLM.from_config(cfg, enc_dim=32, tokenizer=tok)
    m.set_ctc_vocabulary(TEXTS)
    return m


def examples(n=12, frames=40, seed=0):
    """Clips whose features encode their sentence (a fixed random code per sentence), so CTC can learn them."""
    g = torch.Generator().manual_seed(seed)
    codes = {t: torch.randn(frames, 32, generator=g) for t in dict.fromkeys(TEXTS)}
    out = []
    for i in range(n):
        text = TEXTS[i % 7]
        out.append(Example(answer=text, features=codes[text] + 0.05 * torch.randn(frames, 32, generator=g), id=f"c{i}"))
    return out


def test_compress_keeps_one_row_per_non_blank_run_and_never_empties_a_clip():
    head = CTCTokenHead(4)
    protos = torch.eye(4)[:3] * 10  # tokens 1..3 at three axes; the blank starts at their mean
    head.set_vocabulary([11, 12, 13], protos)
    blank = head.blank.detach()
    rows = torch.stack([protos[0], protos[0], blank, protos[1], protos[1], blank, protos[0]])
    out = head.compress(head.logits(rows, protos), protos)
    assert out.shape == (3, 4)  # runs: tok11 tok11 | blank | tok12 tok12 | blank | tok11 -> 3 rows
    # each row is its run's posterior mix of the token embeddings: nearest to the token it heard
    assert [int((out[i] - protos).norm(dim=1).argmin()) for i in range(3)] == [0, 1, 0]
    only_blank = head.blank.detach()[None].repeat(5, 1)
    assert head.compress(head.logits(only_blank, protos), protos).shape == (1, 4)
    assert head.greedy(head.logits(rows, protos)) == [11, 12, 11]


def test_batch_layout_uses_the_compressed_lengths_and_loss_adds_ctc(tok):
    m = ctc_model(tok)
    exs = examples(3) + [Example(answer="hello world", instruction="say hello")]
    rows = m.adapter_rows([e.features for e in exs[:3]])
    lens = [len(x) for x in m.audio_inputs(rows)]
    embeds, mask, labels = m.batch(exs)
    before, after = m._prompt_ids("<AUDIO>\n" + m.prompt)
    answers = m.tok([e.answer for e in exs], add_special_tokens=False)["input_ids"]
    for i, n in enumerate(lens):
        assert int(mask[i].sum()) == len(before) + n + 2 + len(after) + len(answers[i]) + 1
    lm_only = m.loss(embeds, mask, labels)
    total = m(exs)
    ctc = m.ctc_loss(rows, [e.answer for e in exs[:3]])
    assert torch.isfinite(total) and float(ctc.detach()) > 0
    torch.testing.assert_close(total, lm_only + 0.3 * ctc, rtol=1e-4, atol=1e-4)


def test_align_lowers_the_ctc_loss_and_leaves_the_llm_alone(tok):
    m = ctc_model(tok)
    exs = examples(28)
    before = {k: v.clone() for k, v in m.llm.state_dict().items()}
    first = float(m.ctc_loss(m.adapter_rows([e.features for e in exs[:7]]), [e.answer for e in exs[:7]]).detach())
    res = align(m, exs, AlignConfig(steps=80, batch_size=7, lr=3e-3), seed=0, precision="fp32", progress=False)
    last = float(m.ctc_loss(m.adapter_rows([e.features for e in exs[:7]]), [e.answer for e in exs[:7]]).detach())
    assert res.steps == 80 and res.vocabulary == len(m.adapter.ctc.vocab)
    assert last < 0.5 * first, (first, last)
    assert all(torch.equal(before[k], v) for k, v in m.llm.state_dict().items())
    # the same seed repeats the phase exactly
    m2 = ctc_model(tok)
    align(m2, exs, AlignConfig(steps=80, batch_size=7, lr=3e-3), seed=0, precision="fp32", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(m.adapter.state_dict().values(), m2.adapter.state_dict().values()))


def test_lm_training_after_align_and_the_vocabulary_travels_with_the_weights(tok):
    from borealis_eval.config import TrainConfig

    m = ctc_model(tok)
    exs = examples(16)
    align(m, exs, AlignConfig(steps=20, batch_size=8), seed=0, precision="fp32", progress=False)
    r = train(m, exs, TrainConfig(steps=6, batch_size=4, lr=1e-3, precision="fp32"), seed=0, progress=False)
    assert all(map(lambda x: x == x, r.losses)) and r.last_loss != r.first_loss
    state = m.trainable_state_dict()
    assert CTC_VOCAB in state and len(state[CTC_VOCAB]) == len(m.adapter.ctc.vocab)
    fresh = ctc_model(tok, seed=1)
    fresh.adapter.ctc.vocab = torch.zeros(0, dtype=torch.long)  # as a model rebuilt from its config: no vocabulary yet
    fresh.load_state_dict(state, strict=False)
    assert torch.equal(fresh.adapter.ctc.vocab, m.adapter.ctc.vocab)
    m.eval(), fresh.eval()
    assert m.generate(exs[:2], max_new_tokens=5) == fresh.generate(exs[:2], max_new_tokens=5)


def test_align_needs_ctc_tokens_and_default_configs_keep_their_hash():
    from borealis_eval.config import ExperimentConfig

    base = {"model": {"encoder": {"config": TINY_ENC}, "llm": {"config": TINY_LLM, "tokenizer": {"vocab_size": 300}}},
            "data": {"train_sets": [{"name": "t", "source": {"kind": "manifest", "path": "x.jsonl"}}],
                     "language_mix": {"en": 1.0}},
            "eval": {"sets": [{"name": "e", "source": {"kind": "manifest", "path": "y.jsonl"}}]}}
    with pytest.raises(ValueError, match="model.adapter.output: ctc_tokens"):
        ExperimentConfig.model_validate({**base, "train": {"align": {"steps": 10}}})
    plain = ExperimentConfig.model_validate(base)
    spelled = ExperimentConfig.model_validate({**base, "model": {**base["model"], "adapter": {"output": "rows", "ctc_weight": 0.3}}})
    assert config_hash(plain) == config_hash(spelled)
    ctc = ExperimentConfig.model_validate({**base, "model": {**base["model"], "adapter": {"output": "ctc_tokens"}},
                                           "train": {"align": {"steps": 10}}})
    assert config_hash(ctc) != config_hash(plain)


def test_a_sweep_with_ctc_tokens_aligns_then_trains_and_logs_both_phases(tmp_path, corpus, monkeypatch):
    import mlflow

    from _tiny import tiny_ablation
    from borealis_eval import records
    from borealis_eval.cli import main

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    abl = tiny_ablation(tmp_path, corpus, "tiny_ctc", overrides={
        "base": {"model": {"adapter": {"output": "ctc_tokens", "downsample_k": 2}},
                 "train": {"align": {"steps": 4, "batch_size": 4}}}})
    assert main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report"]) == 0
    client = mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_ctc"], output_format="pandas")
    variant = runs[runs["tags.role"] == "variant"].iloc[0]
    assert variant["status"] == "FINISHED"
    assert int(variant[f"params.{records.ALIGN_VOCABULARY}"]) > 10
    align_curve = client.get_metric_history(variant["run_id"], records.ALIGN_LOSS)
    assert [m.step for m in align_curve] == [2, 4]  # log_every 2 of the phase's 4 steps
    assert len(client.get_metric_history(variant["run_id"], records.TRAIN_LOSS)) == 2
    assert variant[f"metrics.{records.ALIGN_SECONDS}"] > 0


def test_a_frozen_aligned_adapter_stays_fixed_in_the_lm_phase_and_is_still_saved(tok):
    from borealis_eval.config import TrainConfig

    m = ctc_model(tok)
    exs = examples(16)
    align(m, exs, AlignConfig(steps=10, batch_size=8), seed=0, precision="fp32", progress=False)
    m.freeze_aligned_adapter()
    mlp = {k: v.clone() for k, v in m.adapter.mlp.state_dict().items()}
    marker = m.adapter.audio_start.detach().clone()
    r = train(m, exs, TrainConfig(steps=5, batch_size=4, lr=1e-2, precision="fp32"), seed=0, progress=False)
    assert r.last_loss != r.first_loss
    assert all(torch.equal(mlp[k], v) for k, v in m.adapter.mlp.state_dict().items())
    assert not torch.equal(marker, m.adapter.audio_start.detach())  # the markers still train
    saved = m.trainable_state_dict()
    assert {f"adapter.mlp.{k}" for k in mlp} <= set(saved) and CTC_VOCAB in saved
