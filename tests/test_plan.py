"""Cost plan: parameter counts exact against built models, the memory formula's structure, the
probe's interpolation, and a probed plan of a tiny CPU ablation end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _tiny import tiny_ablation
from borealis_eval import plan as P
from borealis_eval.config import (AdapterConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig, TokenizerTrain,
                                  load_ablation)

ROOT = Path(__file__).resolve().parents[1]
ENC = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80)
LLM = dict(model_type="qwen3", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           intermediate_size=64)
WORDS = "один два три четыре пять шесть one two three four five six seven".split()


@pytest.fixture(scope="module")
def tokenizer():
    from borealis_eval.models.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 3, 300)


def model_cfg(train: str, hidden_sizes=(48,)) -> ModelConfig:
    return ModelConfig(encoder=EncoderConfig(config=ENC, short_input=True),
                       adapter=AdapterConfig(downsample_k=4, hidden_sizes=list(hidden_sizes)),
                       llm=LLMConfig(config=LLM, tokenizer=TokenizerTrain(vocab_size=300), train=train,
                                     lora=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])))


@pytest.mark.parametrize("train", ["full", "lora", "frozen"])
def test_param_counts_match_the_built_model(tokenizer, train):
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import SpeechLM

    cfg = model_cfg(train)
    encoder = FrozenWhisperEncoder(cfg.encoder)
    torch.manual_seed(0)
    model = SpeechLM.from_config(cfg, encoder.dim, tokenizer)
    got = P.count_params(cfg, vocab_size=len(tokenizer))
    assert got.encoder == sum(p.numel() for p in encoder.parameters())
    assert got.adapter == sum(p.numel() for p in model.adapter.parameters())
    assert got.llm == sum(p.numel() for p in model.llm.parameters())
    assert got.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert got.total == got.encoder + sum(p.numel() for p in model.parameters())


def test_qwen3_4b_shape_counts_match_the_architecture_arithmetic():
    """Built on the meta device from the known shape (no weights, no hub): the counts equal the
    Qwen3 formula, LoRA r16 on q/k/v/o included."""
    s = P.KNOWN_SHAPES["Qwen/Qwen3-4B"]
    h, i, n, v = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    q, kv, hd = s["num_attention_heads"] * s["head_dim"], s["num_key_value_heads"] * s["head_dim"], s["head_dim"]
    per_layer = h * q + 2 * h * kv + q * h + 2 * hd + 3 * h * i + 2 * h  # attention, q/k norms, MLP, 2 norms
    base = v * h + n * per_layer + h  # tied embeddings, final norm
    r = 16
    lora = n * r * ((h + q) + 2 * (h + kv) + (q + h))
    cfg = ModelConfig(encoder=EncoderConfig(config=ENC), llm=LLMConfig(config={**s}, tokenizer="-", train="lora",
                                                                        lora=LoraConfig(r=r)),
                      adapter=AdapterConfig(downsample_k=4, hidden_sizes=[2560, 2560]))
    got = P.count_params(cfg, vocab_size=v)
    assert got.llm == base + lora
    assert base == 4_022_468_096  # Qwen3-4B: "4.0B" parameters on its card
    adapter = (4 * 32 * 2560 + 2560) + (2560 * 2560 + 2560) + (2560 * 2560 + 2560) + 2 * 2560  # + audio start/end
    assert got.adapter == adapter and got.trainable == lora + adapter


def test_memory_formula_structure():
    cfg = model_cfg("lora")
    params = P.count_params(cfg, vocab_size=300)
    kw = {**LLM, "vocab_size": 300}
    gpu = P.memory_estimate(cfg, params, kw, batch=4, length=100, device=P.H200)
    assert gpu.gradients == 4 * params.trainable and gpu.optimizer == 8 * params.trainable
    # activations are linear in batch x padded length
    assert P.memory_estimate(cfg, params, kw, 8, 100, P.H200).activations == pytest.approx(2 * gpu.activations)
    assert P.memory_estimate(cfg, params, kw, 4, 300, P.H200).activations == pytest.approx(3 * gpu.activations)
    # LoRA on a GPU keeps bf16 LLM weights; on a CPU (auto dtype) fp32, and fp32 activations
    cpu = P.memory_estimate(cfg, params, kw, 4, 100, P.CPU)
    lora = params.trainable - params.adapter
    assert cpu.weights - gpu.weights == 2 * (params.llm - lora)  # 4 B vs 2 B per frozen LLM weight
    assert cpu.activations > gpu.activations
    full_cfg = model_cfg("full")
    full = P.memory_estimate(full_cfg, P.count_params(full_cfg, vocab_size=300), kw, 4, 100, P.H200)
    assert full.gradients + full.optimizer > 4 * (gpu.gradients + gpu.optimizer)
    assert gpu.total == gpu.weights + gpu.gradients + gpu.optimizer + gpu.activations


def test_probe_times_two_variants_per_shape_and_interpolates_the_rest():
    _, variants = load_ablation(ROOT / "ablations" / "cpu" / "text_ratio.yaml")
    vs = variants[:3]  # one model shape, three data mixes

    class Stub:
        calls: list[str] = []

        def train_step(self, v, steps):
            self.calls.append(v.name)
            return {vs[0].name: 1.0, vs[2].name: 3.0}[v.name]

    tok = lambda n: P.Tokens(0, 0, 0, n, n, 0)  # noqa: E731
    out = P.probe_step_seconds(Stub(), [(vs[0], tok(100)), (vs[1], tok(150)), (vs[2], tok(300))], 5)
    assert sorted(Stub.calls) == sorted([vs[0].name, vs[2].name])
    assert out[vs[0].name][0] == 1.0 and out[vs[2].name][0] == 3.0
    assert out[vs[1].name][0] == pytest.approx(1.5) and out[vs[1].name][1].startswith("interpolated")


def test_full_scale_plan_without_probe_is_assumption_based():
    p = P.plan(ROOT / "ablations" / "text_ratio.yaml", probe=False)
    assert p.device is P.H200 and len(p.variants) == 12
    v = p.variants[0]
    assert v.params.trainable < v.params.total / 50  # LoRA + adapter
    assert v.step_source.startswith("assumed") and v.train_seconds == pytest.approx(v.step_seconds * 12000)
    assert p.device_hours == pytest.approx(p.seconds / 3600) and p.device_hours > 0
    assert any("hub training data" in a for a in p.assumptions)
    webinars = next(r for r in p.eval_sets if r["set"] == "webinars")
    assert "7.24" in webinars["reference"] and webinars["rows"] == "first 1000" and "concat" in webinars["long-form"]
    assert json.loads(json.dumps(p.to_json()))["variants"][0]["params_trainable"] == v.params.trainable
    given = P.plan(ROOT / "ablations" / "text_ratio.yaml", probe=False, step_seconds=2.0)
    assert {x.step_source for x in given.variants} == {"given"} and given.variants[0].train_seconds == 24000
    assert p.timed and "GPU-hours" in p.summary()


def test_cpu_plan_without_probe_shows_no_time():
    """The FLOP assumption is a GPU model: an unprobed CPU plan (what `sweep` logs) states no time."""
    p = P.plan(ROOT / "ablations" / "text_ratio.yaml", device="cpu", probe=False)
    assert not p.timed and "time not estimated" in p.summary()
    assert {r["total"] for r in p.rows()} == {"-"}
    given = P.plan(ROOT / "ablations" / "text_ratio.yaml", device="cpu", probe=False, step_seconds=0.05)
    assert given.timed and "CPU-hours" in given.summary()


def test_probed_plan_of_a_tiny_cpu_ablation(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    path = tiny_ablation(tmp_path, corpus, grid={"data.text_fraction": [0.0, 0.25, 0.5]}, steps=6)
    p = P.plan(path, probe_steps=2, report=False)
    assert p.device is P.CPU and len(p.variants) == 3
    sources = sorted(v.step_source for v in p.variants)
    assert sources[0].startswith("interpolated") and all(s.startswith(("probe", "interpolated")) for s in sources)
    for v in p.variants:
        assert v.step_seconds > 0 and v.train_seconds == pytest.approx(6 * v.step_seconds)
        assert v.eval_seconds > 0 and v.tokens.padded_length > v.tokens.prompt
    # more text examples in a batch: a realised text share that grows with the configured fraction
    shares = [v.tokens.text_share for v in p.variants]
    assert shares[0] == 0 and shares[2] > shares[1] > 0
    assert p.shared_seconds["encoding"] > 0  # a fresh cache folder: every clip is still to encode
    assert "baseline" in p.shared_seconds and "report" not in p.shared_seconds
    assert p.seconds == pytest.approx(sum(p.shared_seconds.values()) + sum(v.seconds for v in p.variants))
    assert "variant" in P.render(p) and "assumptions:" in P.render(p)


def test_a_plan_counts_the_alignment_phase(tmp_path, monkeypatch, corpus):
    """`train.align` (CTC soft tokens): the probed plan times align steps once per model shape and adds
    the phase to each variant's total and the study's; without a probe it is assumed from FLOPs."""
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    path = tiny_ablation(tmp_path, corpus, "tiny_ctc_plan", grid={"data.text_fraction": [0.0, 0.25]}, steps=6,
                         overrides={"base": {"model": {"adapter": {"output": "ctc_tokens", "downsample_k": 2}},
                                             "train": {"align": {"steps": 40, "batch_size": 4, "freeze": True}}}})
    p = P.plan(path, probe_steps=2, report=False)
    assert len(p.variants) == 2
    for v in p.variants:
        assert v.align_source == "probe (2 steps)" and v.align_seconds > 0
        assert v.seconds == pytest.approx(v.align_seconds + v.train_seconds + v.eval_seconds + v.overhead_seconds)
    assert p.variants[0].align_seconds == p.variants[1].align_seconds  # one probe per model and align shape
    assert "align" in p.rows()[0] and "align" in P.render(p)
    assert json.loads(json.dumps(p.to_json()))["variants"][0]["align_seconds"] == p.variants[0].align_seconds
    without = P.plan(path, probe=False, step_seconds=0.01, report=False)
    assert all(v.align_source.startswith("assumed") and v.align_seconds > 0 for v in without.variants)
    plain = P.plan(tiny_ablation(tmp_path, corpus, "tiny_plain_plan", steps=6), probe=False, step_seconds=0.01)
    assert all(v.align_seconds == 0 and not v.align_source for v in plain.variants) and "align" not in plain.rows()[0]


@pytest.mark.parametrize("train", ["lora", "full"])
def test_activation_estimate_is_near_what_autograd_saves(train):
    """The activation term against the bytes autograd actually keeps for backward (bf16 autocast,
    a small Qwen3 with a real-sized vocabulary share): within 0.8-1.6x. Peak memory also holds
    backward temporaries, so the formula may lean high, never far low."""
    from borealis_eval.models.speech_lm import build_llm

    conf = dict(model_type="qwen3", hidden_size=512, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=2, head_dim=64)
    vocab, batch, length = 2000, 2, 64
    cfg = ModelConfig(encoder=EncoderConfig(config=ENC), adapter=AdapterConfig(hidden_sizes=[32]),
                      llm=LLMConfig(config=conf, tokenizer="-", train=train))  # auto: bf16 for LoRA, fp32 for full
    torch.manual_seed(0)
    llm = build_llm(cfg.llm, P._VocabOnly(vocab), torch.bfloat16 if train == "lora" else torch.float32).train()
    storages: dict = {}
    weights = {p.untyped_storage().data_ptr() for p in llm.parameters()}  # saved for backward, not activations

    def keep(t):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        llm(inputs_embeds=torch.randn(batch, length, 512, dtype=torch.bfloat16),
            labels=torch.randint(0, vocab, (batch, length))).loss
    est = P.memory_estimate(cfg, P.count_params(cfg, vocab_size=vocab), {**conf, "vocab_size": vocab}, batch, length,
                            P.H200).activations
    ratio = est / sum(storages.values())
    assert 0.8 < ratio < 1.6


def test_longest_fitting_micro_batch_is_where_the_estimate_reaches_the_card():
    p = P.plan(ROOT / "ablations" / "text_ratio.yaml", probe=False, step_seconds=1.0)
    v = p.variants[0]
    n = p.max_length(v)
    assert n > v.tokens.padded_length  # audio-only batches fit with room to spare
    kw = {**P.KNOWN_SHAPES["Qwen/Qwen3-4B"]}
    cfg = load_ablation(ROOT / "ablations" / "text_ratio.yaml")[1][0].config
    at = lambda length: P.memory_estimate(cfg.model, v.params, kw, v.batch_size, length, p.device).total  # noqa: E731
    assert at(n) <= 0.9 * p.device.memory_bytes < at(n + 1)


def test_local_workers_schedule_the_baseline_beside_the_variants():
    """Wall time with N workers: fixed parts once, then baseline + variants to the first free worker."""
    p = P.plan(ROOT / "ablations" / "text_ratio.yaml", device="cpu", probe=False, step_seconds=0.01)
    p.shared_seconds = {"start-up": 10.0, "baseline": 100.0}
    for v in p.variants:  # 12 variants of 30 s
        v.train_seconds, v.eval_seconds, v.overhead_seconds = 20.0, 10.0, 0.0
    assert p.seconds == pytest.approx(10 + 100 + 12 * 30)
    p.workers = 2  # worker 2 runs 4 variants (120 s) while worker 1 decodes the baseline; 8 left, 4 each
    assert p.seconds == pytest.approx(10 + max(100 + 4 * 30, 120 + 4 * 30))
