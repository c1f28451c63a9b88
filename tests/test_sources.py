"""Data sources and bad input on small fixtures written inside each test (no network, no hub).

Every source kind (manifest, hf_disk, parquet incl. streaming, audiofolder; text pools from
JSON(L), a dataset folder and chat format), the audio formats the harness reads (wav, flac,
mp3 at several rates, stereo), and each kind of bad clip: skipped, listed with its kind, and
fatal only past data.max_bad_share.
"""

import io
import json
import types

import datasets
import numpy as np
import pytest
import soundfile as sf
import yaml

from borealis_eval.config import AudioSet, ConfigError, HFSource, HFTextSource, ManifestSource, TextPool, load_ablation
from borealis_eval.data.manifest import AudioError, load_audio, write_manifest
from borealis_eval.errors import DataError
from borealis_eval.data.sources import AudioItem, BadDataError, check_bad, load_audio_set, load_text_pool, load_waves

from _tiny import tiny_ablation

SR = 16_000


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """datasets' packaged builders (parquet, json, csv) cache under HF_DATASETS_CACHE: keep it in tmp."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def tone(seconds: float, sr: int, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (1 - 0.5 * c) for c in range(channels)], axis=1)


def audio_bytes(x: np.ndarray, sr: int, fmt: str = "FLAC") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


def bad_files(d) -> dict[str, str]:
    """One file per kind of bad input, name -> the kind load_waves must report."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "zero_bytes.wav").write_bytes(b"")
    sf.write(d / "no_samples.wav", np.zeros(0, np.float32), SR)
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    (d / "truncated.wav").write_bytes(audio_bytes(tone(1, SR), SR, "WAV")[:30])
    sf.write(d / "nan.wav", np.array([0.1, np.nan, 0.2] * 100, np.float32), SR, subtype="FLOAT")
    sf.write(d / "inf.wav", np.array([0.1, np.inf, 0.2] * 100, np.float32), SR, subtype="FLOAT")
    sf.write(d / "long.wav", tone(3.0, SR), SR)
    return {"zero_bytes": "empty", "no_samples": "empty", "random": "corrupt", "truncated": "corrupt",
            "nan": "nan", "inf": "nan", "long": "too_long", "missing": "missing"}


# ---------------------------------------------------------------- decoding
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_formats_and_rates_decode_to_16k(tmp_path, fmt, rate):
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, tone(0.5, rate), rate, format=fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    tol = 0.02 * SR if fmt == "MP3" else 2  # an MP3 decoder may pad a frame
    assert abs(len(x) - 0.5 * SR) <= tol
    assert abs(peak_hz(x) - 440) < 10  # a real resampler keeps the pitch


def test_stereo_is_the_channel_mean(tmp_path):
    st = tone(0.5, SR, channels=2)  # right channel = half the left
    sf.write(tmp_path / "st.wav", st, SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "st.wav"), st.mean(axis=1), atol=1e-6)
    sf.write(tmp_path / "st44.flac", tone(0.5, 44100, channels=2), 44100)  # stereo and resampled
    x = load_audio(tmp_path / "st44.flac")
    assert abs(len(x) - 0.5 * SR) <= 2 and abs(peak_hz(x) - 440) < 10


def test_each_bad_file_fails_with_its_kind(tmp_path):
    kinds = bad_files(tmp_path)
    for name, kind in kinds.items():
        with pytest.raises(AudioError) as e:
            load_audio(tmp_path / f"{name}.wav", limits=(0.0, 2.0))
        assert e.value.kind == kind, (name, str(e.value))
    with pytest.raises(AudioError) as e:
        load_audio(io.BytesIO(b"not audio at all" * 10))
    assert e.value.kind == "corrupt"
    with pytest.raises(AudioError) as e:  # limits are checked on the header, min side too
        load_audio(tmp_path / "long.wav", limits=(5.0, 10.0))
    assert e.value.kind == "too_short"


# ---------------------------------------------------------------- bad items in a set
def test_manifest_set_skips_counts_and_lists_bad_clips(tmp_path):
    kinds = bad_files(tmp_path / "audio")
    for i in range(8):
        sf.write(tmp_path / "audio" / f"good{i}.flac", tone(0.5, 22050), 22050)
    rows = [{"id": f"good{i}", "audio": f"audio/good{i}.flac", "text": "a", "language": "en"} for i in range(8)]
    rows += [{"id": n, "audio": f"audio/{n}.wav", "text": "a", "language": "en"} for n in kinds]  # no duration
    rows.append({"id": "noaudio", "text": "a", "language": "en"})
    rows.append({"id": "declared_long", "audio": "audio/good0.flac", "text": "a", "language": "en", "duration": 99})
    write_manifest(tmp_path / "m.jsonl", rows)
    spec = AudioSet(name="s", source=ManifestSource(kind="manifest", path=str(tmp_path / "m.jsonl")), max_duration=2.0)

    items = load_audio_set(spec)
    assert "declared_long" not in [it.id for it in items]  # a known duration is filtered up front
    bad: list[dict] = []
    waves = load_waves(items, bad, "s")
    assert sorted(waves) == [f"good{i}" for i in range(8)]
    got = {b["id"]: b["kind"] for b in bad}
    assert got == {**kinds, "noaudio": "missing"}
    assert all(b["set"] == "s" and b["reason"] for b in bad)
    # 8 broken of 17 (too_long is listed but not counted: it is the set's own limit)
    check_bad(bad, "s", len(items), 0.5)
    with pytest.raises(BadDataError) as e:
        check_bad(bad, "s", len(items), 0.2)
    msg = str(e.value)
    assert "set 's'" in msg and "8 of 17" in msg and "data.max_bad_share = 0.2" in msg and "zero_bytes [empty]" in msg
    only_long = [{"set": "l", "id": f"x{i}", "kind": "too_long", "reason": "r"} for i in range(3)]
    check_bad(only_long, "l", 4, 0.0)  # filtered clips are not a defect ...
    with pytest.raises(BadDataError, match="set 'l': none of its 3 audio clips is usable \\(3 too_long\\)"):
        check_bad(only_long, "l", 3, 0.0)  # ... but a set with nothing left fails


def test_bytes_items_empty_and_corrupt():
    items = [AudioItem("ok", "a", "en", audio_bytes=audio_bytes(tone(0.5, 48000, channels=2), 48000)),
             AudioItem("empty", "a", "en", audio_bytes=b""), AudioItem("junk", "a", "en", audio_bytes=b"\x00" * 64),
             AudioItem("none", "a", "en")]
    bad: list[dict] = []
    waves = load_waves(items, bad, "b")
    assert list(waves) == ["ok"] and abs(len(waves["ok"]) - 0.5 * SR) <= 2
    assert {b["id"]: b["kind"] for b in bad} == {"empty": "empty", "junk": "corrupt", "none": "missing"}


def test_manifest_duration_filter_and_deterministic_subsample(tmp_path):
    sf.write(tmp_path / "a.wav", tone(0.5, SR), SR)
    rows = [{"id": f"u{i}", "audio": "a.wav", "text": "t", "language": "ru", "duration": 0.5 + i % 3} for i in range(30)]
    write_manifest(tmp_path / "m.jsonl", rows)
    spec = AudioSet(name="s", source=ManifestSource(kind="manifest", path=str(tmp_path / "m.jsonl")),
                    min_duration=1.0, max_duration=2.0, max_samples=7)
    a, b = load_audio_set(spec), load_audio_set(spec)
    assert [it.id for it in a] == [it.id for it in b] and len(a) == 7
    assert all(1.0 <= it.duration <= 2.0 for it in a)
    assert [it.id for it in a] == sorted((it.id for it in a), key=lambda s: int(s[1:]))  # original order kept


# ---------------------------------------------------------------- dataset kinds
def hf_rows(tmp_path) -> dict:
    """Rows with the audio as embedded bytes (flac 44.1 kHz stereo, mp3 8 kHz) or a path (wav 48 kHz),
    one over-long clip and one corrupt; the id column repeats (as in FLEURS)."""
    sf.write(tmp_path / "p48.wav", tone(0.5, 48000), 48000)
    audio = [{"bytes": audio_bytes(tone(0.5, 44100, channels=2), 44100), "path": None},
             {"bytes": audio_bytes(tone(0.5, 8000), 8000, "MP3"), "path": None},
             {"bytes": None, "path": str(tmp_path / "p48.wav")},
             {"bytes": audio_bytes(tone(3.0, 16000), 16000), "path": None},
             {"bytes": b"junk" * 50, "path": None}]
    return {"audio": audio, "sentence": ["one", "two", "three", "long", "junk"], "lang": ["ru", "en", "ru", "en", "ru"],
            "id": [7, 7, 8, 9, 10]}


def hf_dataset(rows: dict) -> datasets.Dataset:
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))


def check_hf_items(items, bad_expected=True):
    assert [it.id for it in items] == ["7", "7__1", "8", "9", "10"]  # repeated ids made unique
    assert [it.language for it in items] == ["ru", "en", "ru", "en", "ru"] and items[2].text == "three"
    bad: list[dict] = []
    waves = load_waves(items, bad, "hf")
    assert sorted(waves) == ["7", "7__1", "8"]
    assert all(abs(len(w) - 0.5 * SR) <= 0.02 * SR for w in waves.values())
    assert {b["id"]: b["kind"] for b in bad} == {"9": "too_long", "10": "corrupt"}  # duration unknown until read


def test_hf_disk_source_reads_audio_on_demand(tmp_path):
    datasets.DatasetDict({"test": hf_dataset(hf_rows(tmp_path))}).save_to_disk(str(tmp_path / "disk"))
    src = HFSource(kind="hf_disk", id=str(tmp_path / "disk"), split="test", text_column="sentence", language_column="lang")
    items = load_audio_set(AudioSet(name="hf", source=src, max_duration=2.0))
    assert all(it.fetch is not None and it.audio_bytes is None for it in items)  # nothing held in memory
    check_hf_items(items)
    sub = load_audio_set(AudioSet(name="hf", source=src, max_samples=2))
    assert len(sub) == 2 and [it.id for it in sub] == [it.id for it in load_audio_set(AudioSet(name="hf", source=src, max_samples=2))]


def test_parquet_source_folder_file_and_streaming(tmp_path):
    (tmp_path / "pq").mkdir()
    hf_dataset(hf_rows(tmp_path)).to_parquet(str(tmp_path / "pq" / "train-00000-of-00001.parquet"))
    for path in (tmp_path / "pq", tmp_path / "pq" / "train-00000-of-00001.parquet"):
        src = HFSource(kind="parquet", id=str(path), text_column="sentence", language_column="lang")
        check_hf_items(load_audio_set(AudioSet(name="hf", source=src, max_duration=2.0)))
    # streaming: Audio(decode=False) is cast on the IterableDataset; max_samples takes the first rows
    src = HFSource(kind="parquet", id=str(tmp_path / "pq"), text_column="sentence", language_column="lang", streaming=True)
    items = load_audio_set(AudioSet(name="hf", source=src, max_samples=3))
    assert [it.text for it in items] == ["one", "two", "three"] and all(it.fetch is None for it in items)
    assert sorted(load_waves(items, [], "hf")) == ["7", "7__1", "8"]
    check_hf_items(load_audio_set(AudioSet(name="hf", source=src, max_duration=2.0)))


def test_parquet_wrong_column_is_a_clear_error(tmp_path):
    hf_dataset(hf_rows(tmp_path)).to_parquet(str(tmp_path / "x.parquet"))
    src = HFSource(kind="parquet", id=str(tmp_path / "x.parquet"), text_column="transcription", language="ru")
    with pytest.raises(DataError, match=r"set 'hf': no column 'transcription' \(columns: .*sentence"):
        load_audio_set(AudioSet(name="hf", source=src))


@pytest.mark.parametrize("meta", ["csv", "jsonl"])
def test_audiofolder_source(tmp_path, meta):
    d = tmp_path / "af" / "train"
    d.mkdir(parents=True)
    sf.write(d / "a.wav", tone(0.5, 22050), 22050)
    sf.write(d / "b.flac", tone(0.5, 48000, channels=2), 48000)
    sf.write(d / "c.mp3", tone(0.5, 44100), 44100, format="MP3")
    (d / "d.wav").write_bytes(b"")
    names, texts = ["a.wav", "b.flac", "c.mp3", "d.wav", "gone.wav"], ["альфа", "beta", "gamma", "delta", "eps"]
    if meta == "csv":
        (d / "metadata.csv").write_text("file_name,transcription\n" + "".join(f"{n},{t}\n" for n, t in zip(names, texts)))
    else:
        (d / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "transcription": t}) + "\n"
                                                  for n, t in zip(names, texts)))
    src = HFSource(kind="audiofolder", id=str(tmp_path / "af"), text_column="transcription", language="ru")
    items = load_audio_set(AudioSet(name="af", source=src))
    assert [it.text for it in items] == texts
    bad: list[dict] = []
    waves = load_waves(items, bad, "af")
    assert len(waves) == 3 and all(abs(len(w) - 0.5 * SR) <= 0.02 * SR for w in waves.values())
    assert sorted(b["kind"] for b in bad) == ["empty", "missing"]


def test_audiofolder_without_metadata(tmp_path):
    (tmp_path / "af").mkdir()
    with pytest.raises(DataError, match="metadata.csv"):
        load_audio_set(AudioSet(name="af", source=HFSource(kind="audiofolder", id=str(tmp_path / "af"), language="ru")))


# ---------------------------------------------------------------- text pools
def test_text_pool_from_jsonl_with_columns(tmp_path):
    rows = [{"q": "Переведи", "ctx": "cat", "a": "кот", "lang": "ru"},
            {"q": "Say hi", "ctx": "", "a": "hi", "lang": "en"},
            {"q": "No answer", "ctx": "", "a": "", "lang": "en"},
            {"q": "No language", "ctx": "", "a": "x", "lang": None}]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    src = HFTextSource(kind="json", id=str(tmp_path / "pool.jsonl"), instruction_column="q", input_column="ctx",
                       answer_column="a", language_column="lang")
    bad: list[dict] = []
    items = load_text_pool(TextPool(source=src), "pool", bad, max_bad_share=0.5)
    assert [(it.language, it.instruction, it.answer) for it in items] == [("ru", "Переведи\n\ncat", "кот"),
                                                                          ("en", "Say hi", "hi")]
    assert {b["id"]: b["kind"] for b in bad} == {"pool-2": "empty_text", "pool-3": "no_language"}
    with pytest.raises(BadDataError, match=r"set 'pool': 2 of 4 text rows .*data.max_bad_share = 0.25"):
        load_text_pool(TextPool(source=src), "pool", [], max_bad_share=0.25)


def test_text_pool_from_dataset_folder_subsampled(tmp_path):
    ds = datasets.Dataset.from_dict({"instruction": [f"q{i}" for i in range(20)], "output": [f"a{i}" for i in range(20)]})
    ds.save_to_disk(str(tmp_path / "pool"))
    src = HFTextSource(kind="hf_disk", id=str(tmp_path / "pool"), language="en")
    items = load_text_pool(TextPool(source=src, max_samples=5))
    assert len(items) == 5 and items == load_text_pool(TextPool(source=src, max_samples=5))
    assert all(it.answer == "a" + it.instruction[1:] and it.language == "en" for it in items)


def test_text_pool_chat_format(tmp_path):
    convs = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
         {"role": "assistant", "content": "one"}, {"role": "user", "content": "second"},
         {"role": "assistant", "content": "two"}],
        [{"role": "user", "content": "a question left open"}],
        [{"role": "assistant", "content": "an answer to nothing"}],
        [{"role": "user", "content": "вопрос"}, {"role": "assistant", "content": "ответ"}, {"role": "user", "content": "ещё?"}],
    ]
    ds = datasets.Dataset.from_dict({"messages": convs})
    ds.to_parquet(str(tmp_path / "chat.parquet"))
    src = HFTextSource(kind="parquet", id=str(tmp_path / "chat.parquet"), messages_column="messages", language="ru")
    bad: list[dict] = []
    items = load_text_pool(TextPool(source=src), "chat", bad)
    assert [(it.instruction, it.answer) for it in items] == [("second", "two"), ("вопрос", "ответ")]
    assert [b["kind"] for b in bad] == ["no_pair", "no_pair"]
    # ShareGPT turns ({from, value}) read the same way
    (tmp_path / "sg.jsonl").write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                                                     {"from": "gpt", "value": "hello"}]}) + "\n")
    sg = HFTextSource(kind="json", id=str(tmp_path / "sg.jsonl"), messages_column="conversations", language="en")
    assert [(it.instruction, it.answer) for it in load_text_pool(TextPool(source=sg))] == [("hi", "hello")]


# ---------------------------------------------------------------- config and sweep plumbing
def good_manifest(tmp_path, n_good: int, n_bad: int, name: str = "ev"):
    (tmp_path / "a").mkdir(exist_ok=True)
    rows = []
    for i in range(n_good):
        sf.write(tmp_path / "a" / f"{name}{i}.wav", tone(0.3, 8000), 8000)
        rows.append({"id": f"{name}{i}", "audio": f"a/{name}{i}.wav", "text": "x", "language": "en"})
    rows += [{"id": f"{name}_bad{i}", "audio": f"a/none{i}.wav", "text": "x", "language": "en"} for i in range(n_bad)]
    write_manifest(tmp_path / f"{name}.jsonl", rows)
    return str(tmp_path / f"{name}.jsonl")


def ablation(tmp_path, **data):
    p = tiny_ablation(tmp_path, tmp_path)  # manifests in tmp_path; only the eval part is used here
    abl = yaml.safe_load(p.read_text())
    abl["base"]["data"].update(data)
    abl["base"]["eval"]["sets"] = [{"name": "ev", "source": {"kind": "manifest", "path": good_manifest(tmp_path, 3, 1)}}]
    p.write_text(yaml.safe_dump(abl, allow_unicode=True))
    return p


@pytest.mark.parametrize("share, fails", [(0.3, False), (0.2, True)])
def test_eval_sets_use_the_configured_max_bad_share(tmp_path, share, fails):
    from borealis_eval.resources import load_eval_data

    _, variants = load_ablation(ablation(tmp_path, max_bad_share=share))
    res = types.SimpleNamespace(bad_items=[], encoder=None, cache=None, eval_sets=[], dev_sets=[], text_sets=[],
                                datasets=[])
    if fails:
        with pytest.raises(BadDataError, match=r"set 'ev': 1 of 4 audio clips .*data.max_bad_share = 0.2.*ev_bad0 \[missing\]"):
            load_eval_data(res, variants[0].config, encode=False)
        return
    load_eval_data(res, variants[0].config, encode=False)
    assert [it.id for it in res.eval_sets[0].items] == ["ev0", "ev1", "ev2"]
    assert [(b["set"], b["id"], b["kind"]) for b in res.bad_items] == [("ev", "ev_bad0", "missing")]


def test_text_source_config_needs_a_language_and_knows_local_kinds(tmp_path):
    p = ablation(tmp_path, text_pool={"source": {"kind": "json", "id": "pool.jsonl"}})
    with pytest.raises(ConfigError) as e:
        load_ablation(p)
    assert "base.data.text_pool.source: set 'language'" in str(e.value) and str(p) in str(e.value)
    p = ablation(tmp_path, text_pool={"source": {"kind": "json", "id": "pool.jsonl", "language_column": "lang"}})
    assert load_ablation(p)[1][0].config.data.text_pool.source.kind == "json"
    p = ablation(tmp_path, train_sets=[{"name": "t", "source": {"kind": "json", "id": "x"}}])
    with pytest.raises(ConfigError, match="base.data.train_sets.0.source"):
        load_ablation(p)
