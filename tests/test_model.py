"""Adapter shapes, real-length slicing, loss masking, training and batched decoding on tiny models."""

import math

import numpy as np
import pytest
import torch

from _numerics import assert_close
from borealis_eval.config import EncoderConfig, LLMConfig, ModelConfig, TrainConfig, AdapterConfig
from borealis_eval.models.adapter import Adapter, stack_frames, stacked_length
from borealis_eval.models.encoder import FrozenWhisperEncoder, encoder_frames
from borealis_eval.models.speech_lm import IGNORE, Example, SpeechLM
from borealis_eval.models.tokenizer import train_bpe_tokenizer
from borealis_eval.train import TrainingDiverged, train

TINY_ENC = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_mel_bins": 80,
            "max_source_positions": 1500}
TINY_LLM = {"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "intermediate_size": 64, "max_position_embeddings": 512}
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "кошка сидит на окне", "two plus two is four",
         "hello world", "privet mir", "one two three four five six"] * 3


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS, 300)


def tiny_model(tok, k=2):
    cfg = ModelConfig(encoder=EncoderConfig(config=TINY_ENC), adapter=AdapterConfig(downsample_k=k, hidden_sizes=[48]),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="full"))
    torch.manual_seed(0)
    return SpeechLM.from_config(cfg, enc_dim=32, tokenizer=tok)


def test_stack_frames_concatenates_k_adjacent_frames_and_pads_tail():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    y = stack_frames(x, 2)
    assert y.shape == (2, 3, 6)
    assert torch.equal(y[0, 0], torch.cat([x[0, 0], x[0, 1]]))
    assert torch.equal(y[1, 1], torch.cat([x[1, 2], x[1, 3]]))
    assert torch.equal(y[0, 2], torch.cat([x[0, 4], torch.zeros(3)]))  # tail zero-padded, nothing dropped
    assert stacked_length(5, 2) == 3 and stacked_length(8, 4) == 2


def test_adapter_maps_to_llm_width():
    a = Adapter(enc_dim=512, llm_dim=96, k=4, hidden_sizes=[128, 64])
    out = a(torch.randn(3, 50, 512))
    assert out.shape == (3, 13, 96)
    dims = [m.in_features for m in a.mlp if isinstance(m, torch.nn.Linear)]
    assert dims == [2048, 128, 64]


@pytest.mark.parametrize("short", [True, False])
def test_encoder_output_sliced_to_real_length(short):
    enc = FrozenWhisperEncoder(EncoderConfig(config=TINY_ENC, short_input=short, bucket_seconds=1.0))
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 12345)]
    outs = enc.encode_many(waves)  # two padded lengths: grouped into one encode_batch each
    assert sorted(o.shape[0] for o in outs) == sorted(encoder_frames(len(w)) for w in waves)
    assert encoder_frames(16000) == 50 and encoder_frames(12345) == math.ceil(12345 / 320)
    assert all(o.shape[1] == 32 for o in outs)
    assert not any(p.requires_grad for p in enc.parameters())


def test_short_input_encoding_does_not_depend_on_batch():
    enc = FrozenWhisperEncoder(EncoderConfig(config=TINY_ENC, short_input=True, bucket_seconds=1.0))
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (15000, 15800))
    alone = enc.encode_batch([a])[0]
    together = enc.encode_batch([a, b])[0]
    assert_close(alone, together, rel=1e-4)


def test_encoder_bf16_autocast_is_close_to_fp32_and_cached_apart(monkeypatch):
    """model.encoder.precision bf16: the transformer runs under bf16 autocast (the log-mel stays
    fp32), features stay fp32 tensors close to the fp32 encoder's, and the cache key differs; fp32
    keeps the key it had before the field existed, and auto follows the machine."""
    from borealis_eval.config.schema import config_hash
    from borealis_eval.models import encoder as encoder_mod

    rng = np.random.default_rng(2)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (15000, 15800, 31000)]
    fp32 = FrozenWhisperEncoder(EncoderConfig(config=TINY_ENC, short_input=True, bucket_seconds=1.0))
    bf16 = FrozenWhisperEncoder(EncoderConfig(config=TINY_ENC, short_input=True, bucket_seconds=1.0, precision="bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert fp32.identity.key != bf16.identity.key and "autocast" not in fp32.identity.preprocessing
    for x, y in zip(fp32.encode_many(waves), bf16.encode_many(waves)):
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert not torch.equal(x, y)  # it did compute in bf16
        assert _cosine(x, y) > 0.99
        assert_close(y, x, rel=0.1)
    for native in (True, False):
        monkeypatch.setattr("borealis_eval.machine.native_bf16", lambda native=native: native)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        auto = FrozenWhisperEncoder(EncoderConfig(config=TINY_ENC, precision="auto"))
        assert auto.precision == ("bf16" if native else "fp32")
    assert encoder_mod.bf16_for("fp32") is False
    from borealis_eval.config import load_ablation
    cfg = load_ablation("ablations/cpu/text_ratio.yaml")[1][0].config

    def with_precision(p):
        enc = cfg.model.encoder.model_copy(update={"precision": p})
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"encoder": enc})})

    hashes = {p: config_hash(with_precision(p)) for p in ("fp32", "bf16", "auto")}
    assert len(set(hashes.values())) == 3
    # the default leaves the hash as it was before the field existed: the dump without it
    import hashlib
    import json
    dump = with_precision("fp32").model_dump(mode="json")
    del dump["model"]["encoder"]["precision"]  # and the later fields, at their defaults, as the code before them
    del dump["model"]["adapter"]["output"], dump["model"]["adapter"]["ctc_weight"], dump["train"]["align"]
    old = hashlib.sha1(json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert hashes["fp32"] == old


def test_loss_covers_only_answer_tokens(tok):
    m = tiny_model(tok)
    ex_audio = Example(answer="the cat sat", features=torch.randn(10, 32), id="a")
    ex_text = Example(answer="four", instruction="two plus two is", id="t")
    embeds, mask, labels = m.batch([ex_audio, ex_text])
    ans_a = tok("the cat sat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ans_t = tok("four", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    got_a = labels[0][labels[0] != IGNORE].tolist()
    got_t = labels[1][labels[1] != IGNORE].tolist()
    assert got_a == ans_a and got_t == ans_t
    # the answer sits at the end of each sequence; padding is masked out
    n_a = int(mask[0].sum())
    assert labels[0, n_a - len(ans_a): n_a].tolist() == ans_a
    assert mask[1].sum() < mask[0].sum()  # the text example is shorter: no audio
    # audio example length = prompt + 2 markers + ceil(10 / k) audio slots + answer
    assert n_a > len(ans_a) + stacked_length(10, 2) + 2
    loss = m([ex_audio, ex_text])
    assert torch.isfinite(loss)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.detach().flatten().double(), b.detach().flatten().double(), dim=0))


@pytest.mark.parametrize("model_type", ["qwen3", "gemma2"])
def test_loss_on_labelled_positions_equals_the_llms_own_loss_and_gradients(tok, model_type):
    """`SpeechLM.loss` projects only the answer positions, through the family's output layer: plain for
    qwen3, soft-capped for gemma2 (llm_family.py). Both equal HF's loss over every position."""
    llm = LLMConfig(config={**TINY_LLM, "model_type": model_type}, tokenizer={"vocab_size": 300}, train="full")
    torch.manual_seed(0)
    m = SpeechLM.from_config(ModelConfig(encoder=EncoderConfig(config=TINY_ENC), llm=llm,
                                         adapter=AdapterConfig(downsample_k=2, hidden_sizes=[48])), enc_dim=32, tokenizer=tok)
    assert m.family.logits == ("linear" if model_type == "qwen3" else "softcap")
    exs = [Example(answer="the cat sat on the mat", features=torch.randn(13, 32), id="a"),
           Example(answer="four", instruction="two plus two is", id="t"),
           Example(answer="hello world", features=torch.randn(5, 32), id="b")]
    grads = []
    for fast in (True, False):
        m.zero_grad()
        embeds, mask, labels = m.batch(exs)
        loss = m.loss(embeds, mask, labels) if fast else m.llm(inputs_embeds=embeds, attention_mask=mask,
                                                                labels=labels).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (fast_loss, fast_g), (ref_loss, ref_g) = grads
    assert fast_loss == pytest.approx(ref_loss.item(), rel=1e-5)
    assert fast_g.keys() == ref_g.keys()
    for n in ref_g:
        scale = ref_g[n].abs().max().item()
        assert (fast_g[n] - ref_g[n]).abs().max().item() <= 1e-4 * scale and _cosine(fast_g[n], ref_g[n]) > 0.9999, n


def test_packed_adapter_gives_the_padded_batchs_frames():
    a = Adapter(enc_dim=8, llm_dim=6, k=4, hidden_sizes=[12])
    feats = [torch.randn(n, 8) for n in (13, 4, 9)]
    padded = torch.zeros(3, 13, 8)
    for j, f in enumerate(feats):
        padded[j, : f.shape[0]] = f
    ref = torch.cat([a(padded)[j, : stacked_length(f.shape[0], 4)] for j, f in enumerate(feats)])
    got = a.forward_packed(feats)
    assert got.shape == ref.shape == (4 + 1 + 3, 6)
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max() and _cosine(got, ref) > 0.99999


def test_left_and_right_padded_batches_hold_the_same_rows(tok):
    m = tiny_model(tok)
    exs = [Example(answer="", features=torch.randn(16, 32), id="long"),
           Example(answer="", features=torch.randn(3, 32), id="short"),
           Example(answer="", instruction="two plus two is", id="text")]
    with torch.no_grad():
        right, rmask, _ = m.batch(exs, with_answer=False)
        left, lmask, _ = m.batch(exs, with_answer=False, left_pad=True)
        for i in range(len(exs)):
            n = int(rmask[i].sum())
            assert n == int(lmask[i].sum()) and lmask[i, -n:].all() and rmask[i, :n].all()
            assert torch.equal(right[i, :n], left[i, -n:])
            assert not right[i, n:].any() and not left[i, :-n or None].any()  # padding embeds are zeros
        # the audio slots hold the adapter's frames between the learned start/end markers
        before, _ = m._prompt_ids(f"<AUDIO>\n{m.prompt}")
        frames = m.adapter(exs[0].features[None])[0]
        assert torch.equal(right[0, len(before)], m.adapter.audio_start)
        assert torch.allclose(right[0, len(before) + 1 : len(before) + 1 + frames.shape[0]], frames, rtol=1e-5, atol=1e-6)
        assert torch.equal(right[0, len(before) + 1 + frames.shape[0]], m.adapter.audio_end)


def test_bf16_training_on_cpu_is_deterministic_and_restores_sdpa(tok):
    """train.precision: bf16 on CPU autocasts; attention is eager while training (SDPA's CPU bf16
    backward is slow), SDPA again afterwards; same seed, same losses."""
    from accelerate.state import AcceleratorState

    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=t, features=torch.randn(8, 32, generator=g), id=str(i)) for i, t in enumerate(TEXTS[:6])]
    runs = []
    try:
        for _ in range(2):
            m = tiny_model(tok)
            seen = []
            res = train(m, exs, TrainConfig(steps=30, batch_size=6, lr=3e-3, warmup_ratio=0.0, precision="bf16"), seed=0,
                        progress=False, on_step=lambda step, m=m: seen.append(m.llm.config._attn_implementation))
            assert set(seen) == {"eager"} and m.llm.config._attn_implementation == "sdpa"
            runs.append(res.losses)
    finally:  # accelerate keeps one precision per process: let the other tests train in fp32 again
        AcceleratorState._reset_state(reset_partial_state=True)
    assert res.last_loss < 0.8 * res.first_loss  # it learns
    assert runs[0] == runs[1]


def test_training_reduces_loss_and_batched_greedy_matches_single(tok):
    m = tiny_model(tok)
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=t, features=torch.randn(8, 32, generator=g), id=str(i)) for i, t in enumerate(TEXTS[:6])]
    res = train(m, exs, TrainConfig(steps=150, batch_size=6, lr=3e-3, warmup_ratio=0.0, log_every=10), seed=0,
                progress=False)
    assert res.last_loss < 0.5 * res.first_loss
    single = [m.generate([e], max_new_tokens=20)[0] for e in exs[:4]]
    batched = m.generate(exs[:4], max_new_tokens=20)
    assert batched == single
    assert sum(h == e.answer for h, e in zip(batched, exs)) >= 2  # it learned the mapping


def test_nan_loss_stops_training_with_step_and_batch_ids(tok):
    m = tiny_model(tok)
    with torch.no_grad():
        m.adapter.mlp[0].weight.fill_(float("nan"))
    exs = [Example(answer="hello world", features=torch.randn(8, 32), id=f"utt{i}") for i in range(4)]
    with pytest.raises(TrainingDiverged) as e:
        train(m, exs, TrainConfig(steps=3, batch_size=2), seed=0, progress=False)
    assert e.value.step == 0 and e.value.ids == ["utt0", "utt1"]


@pytest.mark.slow
def test_pretrained_llm_with_lora_trains_only_adapter_and_lora():
    """The CPU pretrained-LLM profile: bundled SmolLM2-135M + LoRA r8 on q/v (peft)."""
    from borealis_eval.config import load_ablation

    _, variants = load_ablation("ablations/cpu/pretrained_llm.yaml")
    m = SpeechLM.from_config(variants[0].config.model, enc_dim=512)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("adapter.") for n in trainable)
    assert any("lora_" in n for n in trainable) and any(n.startswith("adapter.") for n in trainable)
    frozen_before = m.llm.get_input_embeddings().weight.detach().clone()
    exs = [Example(answer="hello world", features=torch.randn(40, 512), id="a"),
           Example(answer="Paris", instruction="What is the capital of France?", id="t")]
    res = train(m, exs, TrainConfig(steps=2, batch_size=2, lr=1e-3), seed=0, progress=False)
    assert all(math.isfinite(x) for x in res.losses)
    assert torch.equal(frozen_before, m.llm.get_input_embeddings().weight)  # base weights untouched
    assert "Paris" in m.generate(exs[1:], max_new_tokens=12)[0]  # the pretrained LLM still answers text


@pytest.mark.parametrize("dtype,train_mode,device,expected", [
    ("auto", "lora", "cpu", torch.float32), ("auto", "lora", "cuda", torch.bfloat16),
    ("auto", "frozen", "cuda", torch.bfloat16), ("auto", "full", "cuda", torch.float32),
    ("bfloat16", "full", "cpu", torch.bfloat16), ("float32", "lora", "cuda", torch.float32),
])
def test_llm_dtype_follows_the_config(dtype, train_mode, device, expected):
    from borealis_eval.models.speech_lm import llm_dtype

    cfg = LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train=train_mode, dtype=dtype)
    assert llm_dtype(cfg, device) == expected


def test_bf16_llm_weights_with_an_fp32_adapter_train(tok):
    """`llm.dtype: bfloat16` is honoured (it used to be ignored) while the adapter keeps fp32."""
    cfg = ModelConfig(encoder=EncoderConfig(config=TINY_ENC), adapter=AdapterConfig(downsample_k=2, hidden_sizes=[48]),
                      llm=LLMConfig(config=TINY_LLM, tokenizer={"vocab_size": 300}, train="full", dtype="bfloat16"))
    torch.manual_seed(0)
    m = SpeechLM.from_config(cfg, enc_dim=32, tokenizer=tok)
    assert m.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in m.adapter.parameters())
    exs = [Example(answer=t, features=torch.randn(20, 32), id=str(i)) for i, t in enumerate(TEXTS[:8])]
    loss = m(exs[:4])
    loss.backward()
    assert torch.isfinite(loss) and m.adapter.mlp[0].weight.grad is not None


def test_encode_many_keeps_input_order_across_length_groups_and_batches():
    enc = FrozenWhisperEncoder(EncoderConfig(config=TINY_ENC, short_input=True, bucket_seconds=1.0))
    rng = np.random.default_rng(2)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (30000, 8000, 31000, 9000, 29000)]
    seen: list[list[int]] = []
    outs = enc.encode_many(waves, batch_size=2, on_batch=lambda idx, feats: seen.append(list(idx)))
    for w, o in zip(waves, outs):  # short input does not depend on the batch: compare with one clip alone
        assert_close(o, enc.encode_batch([w])[0], rel=1e-4)
    assert seen == [[1, 3], [0, 2], [4]]  # shortest padded length first, at most 2 per batch


def test_prompt_tokens_make_the_audio_prompts_fixed_text_whole_and_keep_the_answer():
    """`tokenizer: {prompt_tokens: true}`: the audio prompt's fixed pieces are one token each, so an
    audio example is ~30 positions shorter at 1,500 types; the answer's ids and the round trip of a
    transcript are unchanged, and the setting keys the tokenizer cache."""
    from borealis_eval.models.speech_lm import AUDIO_MARK
    from borealis_eval.models.tokenizer import layout_pieces

    prompt = "Transcribe the audio."
    pieces = layout_pieces(f"{AUDIO_MARK}\n{prompt}", [AUDIO_MARK])
    assert f"\n{prompt}" in pieces and "user\n" in pieces and "assistant\n" in pieces
    assert not any(AUDIO_MARK in p or "<|im_start|>" in p for p in pieces)
    plain, whole = train_bpe_tokenizer(TEXTS, 300), train_bpe_tokenizer(TEXTS, 300, pieces)
    assert len(whole) == len(plain) + len(pieces)
    ex = Example(answer="the cat sat", features=torch.randn(10, 32), id="a")
    lengths = {}
    for name, t in (("plain", plain), ("whole", whole)):
        m = tiny_model(t)
        m.prompt = prompt
        before, _, after = m._layout(ex, t("the cat sat", add_special_tokens=False)["input_ids"])
        lengths[name] = len(before) + len(after)
        _, mask, labels = m.batch([ex])
        assert t.decode(labels[0][labels[0] != IGNORE].tolist(), skip_special_tokens=True) == "the cat sat"
    # each piece is one position: <|im_start|> user\n [audio] \nprompt <|im_end|> \n <|im_start|> assistant\n
    assert lengths["whole"] == 7 + len(whole("the cat sat", add_special_tokens=False)["input_ids"])
    assert lengths["plain"] > lengths["whole"] + 10
    assert whole.decode(whole(f"user\n{prompt} the cat", add_special_tokens=False)["input_ids"]) == f"user\n{prompt} the cat"
