"""Synthetic ru/en corpus: determinism, caching, split guarantees, audio I/O."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import soundfile as sf

from borealis_eval.data.manifest import AudioError, load_audio, read_manifest, write_manifest
from borealis_eval.data.sentences import SentenceBank, normalise, tokens
from borealis_eval.data.synth import synthesize_corpus, voices

SIZES = {"train": 20, "dev": 5, "test_ru": 8, "test_en": 8, "webinar": 2, "text_train": 150, "text_heldout": 20}
SPEECH = ("train", "dev", "test_ru", "test_en", "webinar")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthesize_corpus(tmp_path_factory.mktemp("c") / "corpus", seed=3, sizes=SIZES, progress=False)


def _manifests(d):
    return {s: read_manifest(d / f"{s}.jsonl") for s in SPEECH + ("text_train", "text_heldout")}


def test_layout_and_counts(corpus):
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["seed"] == 3 and info["fingerprint"] and info["version"]
    m = _manifests(corpus)
    assert info["counts"]["train"] == {"en": 20, "ru": 20}
    assert len(m["test_ru"]) == 8 and {r["language"] for r in m["test_ru"]} == {"ru"}
    assert len(m["text_heldout"]) == 20 and len(m["text_train"]) >= 150
    assert not list(corpus.parent.glob(".corpus.tmp-*"))
    for r in m["train"]:
        assert not os.path.isabs(r["audio"]) and os.path.isfile(r["audio_path"])


def test_deterministic_and_cached(corpus, tmp_path, capsys):
    other = synthesize_corpus(tmp_path / "again", seed=3, sizes=SIZES, progress=False)
    for name in [f"{s}.jsonl" for s in SPEECH] + ["text_train.jsonl", "text_heldout.jsonl", "corpus.json"]:
        assert (corpus / name).read_bytes() == (other / name).read_bytes(), name
    stamp = {p: p.stat().st_mtime_ns for p in [corpus / "corpus.json", corpus / "train.jsonl",
                                                *sorted((corpus / "audio" / "train").iterdir())[:3]]}
    synthesize_corpus(corpus, seed=3, sizes=SIZES, progress=True)
    assert "corpus up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp


def test_no_sentence_in_two_splits(corpus):
    m = _manifests(corpus)
    owner = {}
    for split in SPEECH[:4]:
        for r in m[split]:
            key = normalise(r["text"])
            assert key not in owner, (r["text"], owner.get(key), split)
            owner[key] = split
    for r in m["webinar"]:
        for turn in r["turns"]:
            assert normalise(turn["text"]) not in owner
    pool = " " + " ".join(normalise(p["instruction"]) for s in ("text_train", "text_heldout") for p in m[s]) + " "
    assert not [k for k in owner if f" {k} " in pool]
    assert not {p["instruction"] for p in m["text_train"]} & {p["instruction"] for p in m["text_heldout"]}


def test_heldout_words_and_voices(corpus):
    info = json.loads((corpus / "corpus.json").read_text())
    m = _manifests(corpus)
    held = {lang: set(w) for lang, w in info["heldout_words"].items()}
    assert all(len(w) > 20 for w in held.values())
    for split in ("train", "dev"):
        for r in m[split]:
            assert not tokens(r["text"]) & held[r["language"]], r["text"]
            assert r["speaker"] in voices(r["language"], heldout=False)
            assert not r["heldout_template"]
    for lang in ("ru", "en"):
        rows = m[f"test_{lang}"]
        for r in rows:  # the stratum says truthfully what is new in the sentence
            new_word = bool(tokens(r["text"]) & held[lang])
            assert r["stratum"] == ("shape" if r["heldout_template"] else "word" if new_word else "voice"), r
        assert all(r["speaker"] in voices(lang, heldout=True) for r in rows)
    # every held-out vocabulary entry and template is seen in the text-only training pool
    bank = SentenceBank(3)
    pool = {lang: set().union(*(tokens(p["instruction"]) for p in m["text_train"] if p["language"] == lang))
            for lang in ("ru", "en")}
    for lang, mat in bank.material.items():
        for entries in mat.heldout_vocab.values():
            for e in entries:
                forms = set().union(*(tokens(v) for k, v in e.items() if k != "g"))
                assert forms & pool[lang], e
    assert {p["language"] for p in m["text_train"]} == {"ru", "en"}
    assert len({p["id"] for p in m["text_train"]}) == len(m["text_train"])


def test_audio_format_duration_and_loudness(corpus):
    m = _manifests(corpus)
    for split in SPEECH:
        for r in m[split]:
            info = sf.info(r["audio_path"])
            assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            assert abs(info.frames / 16000 - r["duration"]) < 1e-3
            audio = load_audio(r["audio_path"])
            assert np.sqrt(np.mean(audio**2)) > 0.02, r["id"]
            if split != "webinar":
                assert 1.5 <= r["duration"] <= 6.0, r
    assert {r["language"] for r in m["webinar"]} == {"ru", "en"}
    for r in m["webinar"]:
        assert r["duration"] > 30 and len(r["turns"]) > 5
        assert r["text"] == " ".join(t["text"] for t in r["turns"])


def test_write_manifest_atomic_roundtrip(tmp_path):
    rows = [{"id": "a", "audio": "x/a.wav", "text": "Ёлка, да?", "language": "ru", "duration": 1.0, "speaker": "s"}]
    write_manifest(tmp_path / "m.jsonl", rows)
    back = read_manifest(tmp_path / "m.jsonl")
    assert back[0]["text"] == "Ёлка, да?" and back[0]["audio_path"] == str(tmp_path.resolve() / "x/a.wav")
    write_manifest(tmp_path / "m.jsonl", back)  # audio_path is derived, not stored
    assert "audio_path" not in (tmp_path / "m.jsonl").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_load_audio_errors(tmp_path):
    with pytest.raises(AudioError, match="missing"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="corrupt"):
        load_audio(tmp_path / "bad.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_load_audio_resamples_stereo(tmp_path):
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "st.wav", np.stack([tone, tone], axis=1), 44100)
    audio = load_audio(tmp_path / "st.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1
    assert abs(np.sqrt(np.mean(audio[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01
