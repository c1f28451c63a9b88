"""Scoring outside a sweep: `evaluate` reproduces a variant's logged WER; `score` scores any JSONL."""

import json

import mlflow
import pytest
import torch

from borealis_eval.cli import main
from borealis_eval.evaluate.decode_cache import DecodeCache
from test_sweep_e2e import write_ablation


def test_score_command_prints_protocol_json(tmp_path, capsys):
    refs = tmp_path / "refs.jsonl"
    hyps = tmp_path / "hyps.jsonl"
    refs.write_text('{"id": "a", "text": "Ёлка стоит, 23 дня."}\n{"id": "b", "text": "кто-то пришёл"}\n', encoding="utf-8")
    hyps.write_text('{"id": "a", "text": "елка стоит двадцать три дня"}\n{"id": "b", "text": "кто то ушёл"}\n',
                    encoding="utf-8")
    assert main(["score", str(refs), str(hyps), "--lang", "ru"]) == 0
    out = json.loads(capsys.readouterr().out)
    # normalised: identical first pair (ё->е, digits->words, punctuation); one substitution in 8 words
    assert out["normalizer"] == "russian@1.0"
    assert out["sub"] == 1 and out["dele"] == 0 and out["ins"] == 0 and out["ref_words"] == 8
    assert out["wer"] == pytest.approx(1 / 8)
    assert out["wer_ci_low"] <= out["wer"] <= out["wer_ci_high"]
    assert out["wer_raw"] > out["wer"]  # raw scoring counts the case/punctuation/number differences


def test_score_command_rejects_missing_hypotheses(tmp_path, capsys):
    refs = tmp_path / "refs.jsonl"
    hyps = tmp_path / "hyps.jsonl"
    refs.write_text('{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n')
    hyps.write_text('{"id": "a", "text": "one"}\n')
    assert main(["score", str(refs), str(hyps), "--lang", "en"]) == 2
    assert "no hypothesis" in capsys.readouterr().err


def test_decode_cache_roundtrip_and_key_sensitivity(tmp_path):
    from borealis_eval.data.sources import AudioItem

    cache = DecodeCache(tmp_path)
    items = [AudioItem(id="a", text="hello", language="en")]
    k1 = cache.key("m1", "set", items, ["h1"], {"beams": 1})
    assert k1 != cache.key("m1", "set", items, ["h1"], {"beams": 2})
    assert k1 != cache.key("m2", "set", items, ["h1"], {"beams": 1})
    assert k1 != cache.key("m1", "set", items, ["h2"], {"beams": 1})  # other audio content
    assert cache.get(k1) is None
    cache.put(k1, [{"id": "a", "hyp": "hello"}], 1.5)
    assert cache.get(k1) == ([{"id": "a", "hyp": "hello"}], 1.5) and cache.hits == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_evaluate_reproduces_the_sweep_wer(tmp_path, corpus, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    abl = write_ablation(tmp_path, corpus, baseline=False)
    assert main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report", "--only",
                 "text_fraction=0.25"]) == 0
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_e2e"], output_format="pandas")
    var = runs[runs["tags.role"] == "variant"].iloc[0]
    capsys.readouterr()
    # a fresh decode (no decode cache) of the stored checkpoint gives the logged WER exactly
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache2"))
    assert main(["--tracking-uri", uri, "evaluate", f"run:{var['run_id']}", "--ablation", str(abl),
                 "--sets", "test_en"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"test_en"}
    assert out["test_en"]["wer"] == pytest.approx(var["metrics.wer/test_en"])
    assert out["test_en"]["normalizer"] == "english@1.0"


def test_evaluate_rejects_unknown_set_and_run(tmp_path, corpus, capsys):  # noqa: F811
    abl = write_ablation(tmp_path, corpus, baseline=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["--tracking-uri", uri, "evaluate", "run:nope", "--ablation", str(abl), "--sets", "nosuch"]) == 2
    assert "unknown eval set" in capsys.readouterr().err


def test_training_and_beam_decoding_are_deterministic():
    from test_model import TEXTS, tiny_model

    from borealis_eval.config import TrainConfig
    from borealis_eval.models.speech_lm import Example
    from borealis_eval.models.tokenizer import train_bpe_tokenizer
    from borealis_eval.train import train

    tok = train_bpe_tokenizer(TEXTS, 300)
    outs = []
    for _ in range(2):
        m = tiny_model(tok)
        g = torch.Generator().manual_seed(1)
        exs = [Example(answer=t, features=torch.randn(8, 32, generator=g), id=str(i)) for i, t in enumerate(TEXTS[:4])]
        res = train(m, exs, TrainConfig(steps=20, batch_size=4, lr=3e-3), seed=5, progress=False)
        outs.append((res.losses, m.generate(exs, max_new_tokens=10, num_beams=3), m.generate(exs, max_new_tokens=10)))
    assert outs[0] == outs[1]
