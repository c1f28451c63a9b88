"""Training-audio augmentation: each effect does what it says, plans are seeded and stable, the
curriculum ramps, nothing turns into NaN, bad configs fail clearly, and a tiny sweep logs it."""

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from pydantic import ValidationError

from borealis_eval.config import AugmentConfig, ConfigError, EncoderConfig, load_ablation
from borealis_eval.data.augment import (EFFECTS, Augmenter, add_noise, apply_gain, change_speed, mu_law, reverberate,
                                        speech_power, stable_hash, telephone)
from borealis_eval.data.manifest import AudioError

SR = 16_000
ALL_ON = {name: {"p": 1.0} for name in EFFECTS}


def voice(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: harmonics of a wobbling pitch with a syllable-rate envelope, no pauses."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    x += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def band_share(x: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(power[(f >= low) & (f < high)].sum() / power.sum())


# ------------------------------------------------------------------ effects
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
@pytest.mark.parametrize("tilt", [-0.9, 0.0, 0.97])
def test_generated_noise_hits_the_target_snr(snr_db, tilt):
    x = voice()
    y = add_noise(x, np.random.default_rng(1), snr_db, tilt=tilt)
    realised = 10 * np.log10(speech_power(x) / np.mean((y.astype(np.float64) - x) ** 2))
    assert abs(realised - snr_db) < 1.0


def test_noise_files_are_looped_and_scaled(tmp_path):
    hum = 0.05 * np.sin(2 * np.pi * 60 * np.arange(SR // 2) / SR)  # 0.5 s of noise for a 2 s clip: looped
    (tmp_path / "noises").mkdir()
    sf.write(tmp_path / "noises" / "hum.wav", hum, SR)
    aug = Augmenter(AugmentConfig.model_validate({"noise": {"p": 1, "snr_db": [5, 15],
                                                            "files": [str(tmp_path / "noises")]}}), seed=0)
    x = voice()
    for key in ("a", "b", "c"):
        plan = aug.plan(key, 1.0)
        y = aug.apply(x, plan)
        assert len(y) == len(x) and plan[0][1]["file"] == 0
        realised = 10 * np.log10(speech_power(x) / np.mean((y.astype(np.float64) - x) ** 2))
        assert 5 - 1 < realised < 15 + 1 and abs(realised - plan[0][1]["snr_db"]) < 1.0
    with pytest.raises(AudioError, match="neither a file nor a folder"):
        Augmenter(AugmentConfig.model_validate({"noise": {"files": [str(tmp_path / "missing")]}}), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no audio files"):
        Augmenter(AugmentConfig.model_validate({"noise": {"files": [str(tmp_path / "empty")]}}), seed=0)


def test_telephone_removes_energy_outside_the_voice_band():
    x = (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)  # white: energy everywhere
    y = telephone(x, (300, 3400), 8000)
    assert len(y) == len(x) and y.dtype == np.float32
    assert band_share(x, 0, 300) > 0.03 and band_share(x, 3400, 8000) > 0.5
    assert band_share(y, 0, 300) < 0.01 and band_share(y, 3400, 8000) < 0.05
    assert band_share(y, 0, 150) < 1e-4 and band_share(y, 4000, 8000) < 1e-4  # well outside: gone
    assert band_share(y, 300, 3400) > 0.95


def test_speed_changes_duration_and_pitch():
    x = np.sin(2 * np.pi * 500 * np.arange(SR) / SR).astype(np.float32)
    fast = change_speed(x, 1.1)
    assert abs(len(fast) - len(x) / 1.1) <= 2
    f = np.fft.rfftfreq(len(fast), 1 / SR)
    assert abs(f[np.argmax(np.abs(np.fft.rfft(fast)))] - 550) < 3
    assert abs(len(change_speed(x, 0.9)) - len(x) / 0.9) <= 2


@pytest.mark.parametrize("db", [-6.0, -1.5, 0.0, 3.0])
def test_gain_is_exact_in_db(db):
    x = voice()
    y = apply_gain(x, db)
    assert 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2) / np.mean(x.astype(np.float64) ** 2))) == \
        pytest.approx(db, abs=1e-4)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_codec_quantises_to_few_levels(bits):
    x = voice()
    y = mu_law(x, bits)
    assert len(np.unique(x)) > 10_000
    assert len(np.unique(y)) <= 2**bits - 1
    assert np.all(mu_law(np.zeros(8, np.float32), bits) == 0)  # zero is a level: silence stays silent
    err = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x.astype(np.float64)) ** 2))
    assert err > 2.0 * bits  # companding keeps the error well below the signal


def test_reverb_lengthens_the_energy_decay():
    x = np.zeros(SR, np.float32)
    x[: SR // 5] = 0.1 * np.random.default_rng(0).standard_normal(SR // 5)  # 0.2 s burst, then silence
    tail = slice(int(0.25 * SR), int(0.45 * SR))
    energies = []
    for rt60 in (0.2, 0.5, 0.9):
        y = reverberate(x, np.random.default_rng(1), rt60)
        assert len(y) == len(x)
        energies.append(float(np.sum(y[tail].astype(np.float64) ** 2)))
    burst = float(np.sum(x.astype(np.float64) ** 2))
    assert np.sum(x[tail] ** 2) == 0
    assert energies[0] > 1e-4 * burst and energies[0] < energies[1] < energies[2] < burst


# ------------------------------------------------------------------ plans: seeding, curriculum, robustness
def test_augmentation_is_deterministic_per_seed_epoch_and_key():
    cfg = AugmentConfig.model_validate(ALL_ON)
    x = voice()
    y1, a1 = Augmenter(cfg, seed=0).augment(x, "clip-1", 1.0)
    y2, a2 = Augmenter(cfg, seed=0).augment(x, "clip-1", 1.0)
    assert a1 == a2 == list(EFFECTS) and np.array_equal(y1, y2)
    assert Augmenter(cfg, seed=0).plan("clip-1", 1.5) == Augmenter(cfg, seed=0).plan("clip-1", 1.0)  # same epoch
    for other in (Augmenter(cfg, seed=0).augment(x, "clip-1", 2.0), Augmenter(cfg, seed=1).augment(x, "clip-1", 1.0),
                  Augmenter(cfg, seed=0).augment(x, "clip-2", 1.0)):
        assert not np.array_equal(y1, other[0])
    assert stable_hash("clip-1") == 0x1AB0322EE13A2C7B  # not Python's per-process salted hash()


def test_effect_decisions_are_independent():
    """Raising one effect's probability changes no other effect's decision or parameters."""
    lo = Augmenter(AugmentConfig.model_validate({"noise": {"p": 0.2}, "gain": {"p": 0.5}}), seed=0)
    hi = Augmenter(AugmentConfig.model_validate({"noise": {"p": 0.9}, "gain": {"p": 0.5}}), seed=0)
    for i in range(50):
        a, b = lo.plan(f"k{i}", 3.0), hi.plan(f"k{i}", 3.0)
        assert [e for e in a if e[0] == "gain"] == [e for e in b if e[0] == "gain"]
        assert {n for n, _ in a} <= {n for n, _ in b}


def test_curriculum_ramps_from_clean():
    aug = Augmenter(AugmentConfig.model_validate({**ALL_ON, "curriculum_epochs": 4}), seed=0)
    assert [aug.strength(e) for e in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    keys = [f"clip-{i}" for i in range(200)]
    shares = [np.mean([len(aug.plan(k, e)) for k in keys]) / len(EFFECTS) for e in (0, 1, 2, 3, 4, 6)]
    assert shares[0] == 0.0  # epoch 0: every clip clean
    assert shares[-2] == shares[-1] == 1.0
    for got, want in zip(shares[1:4], (0.25, 0.5, 0.75)):
        assert abs(got - want) < 0.06
    assert Augmenter(AugmentConfig.model_validate(ALL_ON), seed=0).strength(0) == 1.0  # no curriculum


@pytest.mark.parametrize("wave", [np.zeros(SR, np.float32), np.zeros(7, np.float32), np.zeros(0, np.float32),
                                  np.full(SR, 1e-7, np.float32),
                                  np.r_[np.zeros(100), np.nan, np.ones(100)].astype(np.float32)],
                         ids=["silence", "tiny", "empty", "near-silence", "nan"])
def test_no_nan_and_bounded_on_degenerate_input(wave):
    aug = Augmenter(AugmentConfig.model_validate(ALL_ON), seed=0)
    for key in ("a", "b", "c", "d"):
        y, applied = aug.augment(wave, key, 2.0)
        assert np.isfinite(y).all() and y.dtype == np.float32
        assert len(y) == 0 or np.abs(y).max() <= 1.0
        assert (len(y) == 0) == (len(wave) == 0) and (applied or not len(wave))


def test_loud_input_is_limited_and_speed_never_exceeds_30_s():
    aug = Augmenter(AugmentConfig.model_validate({"gain": {"p": 1, "db": [12, 12]},
                                                  "speed": {"p": 1, "factor": [0.8, 0.8]}}), seed=0)
    x = np.clip(voice(29.5) * 4, -1, 1)
    y, _ = aug.augment(x, "k", 1.0)
    assert np.abs(y).max() == pytest.approx(1.0) and len(y) <= 30 * SR


# ------------------------------------------------------------------ config
def test_config_rejects_bad_ranges_with_clear_errors(tmp_path):
    bad = [({"noise": {"snr_db": [20, 5]}}, "snr_db: low > high (20 > 5)"),
           ({"reverb": {"rt60": [0.0, 0.5]}}, "greater than 0"),
           ({"telephone": {"band_hz": [300, 5000]}}, "high < sample_rate/2 = 4000"),
           ({"codec": {"bits": [1, 8]}}, "greater than or equal to 2"),
           ({"speed": {"factor": [1.2, 0.9]}}, "factor: low > high (1.2 > 0.9)"),
           ({"gain": {"p": 1.5}}, "less than or equal to 1"),
           ({"noise": {"snr": [1, 2]}}, "Extra inputs are not permitted"),
           ({"curriculum_epochs": -1}, "greater than or equal to 0")]
    for cfg, msg in bad:
        with pytest.raises(ValidationError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            AugmentConfig.model_validate(cfg)
    abl = tmp_path / "a.yaml"
    abl.write_text(yaml.safe_dump({"name": "a", "description": "d", "base": {
        "model": {"encoder": {"config": {"d_model": 16}}, "llm": {"config": {}, "tokenizer": {"vocab_size": 300}}},
        "data": {"train_sets": [{"name": "t", "source": {"kind": "manifest", "path": "x.jsonl"}}],
                 "language_mix": {"en": 1.0}, "augment": {"noise": {"snr_db": [20, 5]}}}}}))
    with pytest.raises(ConfigError, match=r"base\.data\.augment\.noise: snr_db: low > high \(20 > 5\)"):
        load_ablation(abl)


# ------------------------------------------------------------------ the training hook
def test_batch_hook_reencodes_only_augmented_clips_deterministically(tmp_path):
    from borealis_eval.data.augment_batches import AugmentBatches
    from borealis_eval.data.sources import AudioItem
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import Example

    enc = FrozenWhisperEncoder(EncoderConfig(config={"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 32, "num_mel_bins": 80}, short_input=True))
    items = {}
    for i in range(4):
        sf.write(tmp_path / f"c{i}.wav", voice(1.0 + 0.3 * i, seed=i), SR)
        items[f"c{i}"] = AudioItem(f"c{i}", "text", "en", audio_path=str(tmp_path / f"c{i}.wav"))
    clean = {k: enc.encode_batch([it.load()])[0].half() for k, it in items.items()}
    batch = [Example(answer="text", features=clean[k], id=k) for k in items]
    batch.append(Example(answer="a", instruction="q", id="t"))
    positions = list(range(10, 15))

    hook = AugmentBatches(Augmenter(AugmentConfig.model_validate({"noise": {"p": 1, "snr_db": [0, 0]}}), 0), enc, items,
                          n_examples=5, max_wave_bytes=1)  # a store of one wave: reloads must give the same result
    out = hook(batch, positions)
    again = hook(batch, positions)
    assert out[-1] is batch[-1]  # text example untouched
    for a, b, c in zip(out[:4], again[:4], batch[:4]):
        assert a.features.dtype == torch.float16 and a.features.shape == c.features.shape
        assert torch.equal(a.features, b.features) and not torch.equal(a.features, c.features)
    assert hook.metrics()["augment/noise"] == hook.metrics()["augment/clips"] == 8
    assert hook.metrics()["augment/audio_examples"] == 8

    off = AugmentBatches(Augmenter(AugmentConfig.model_validate({"noise": {"p": 0}}), 0), enc, items, n_examples=5)
    assert all(a is b for a, b in zip(off(batch, positions), batch))  # nothing drawn: cached features kept
    assert off.metrics()["augment/clips"] == 0


def test_batch_positions_count_examples_across_epochs_and_ranks():
    """The hook's positions: global stream indices (epoch = position // n), each rank its own batches."""
    from borealis_eval.data.loader import BatchStream

    exs = list("abcde")
    one = BatchStream(exs, 2, rank=0, world=1)
    assert [one[i] for i in range(3)] == [([0, 1], ["a", "b"]), ([2, 3], ["c", "d"]), ([4, 5], ["e", "a"])]
    r0, r1 = BatchStream(exs, 2, rank=0, world=2), BatchStream(exs, 2, rank=1, world=2)
    assert [r0[0][0], r1[0][0], r0[1][0], r1[1][0]] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_tiny_sweep_with_augmentation_logs_counts(tmp_path, monkeypatch):
    from _tiny import tiny_ablation
    from borealis_eval.data.synth import synthesize_corpus
    from borealis_eval.study import StudyOptions
    from borealis_eval.sweep import run_sweep

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    corpus = synthesize_corpus(tmp_path / "corpus", seed=3, sizes={"train": 8, "dev": 2, "test_ru": 2, "test_en": 2,
                                                                    "webinar": 0, "text_train": 10, "text_heldout": 2},
                               progress=False)
    path = tiny_ablation(tmp_path, corpus, "tiny_augment", steps=4)
    abl = yaml.safe_load(path.read_text())
    abl["base"]["data"]["augment"] = {"noise": {"p": 1.0}, "reverb": {"p": 0.5}, "speed": {"p": 0.5}}
    path.write_text(yaml.safe_dump(abl))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_sweep(path, StudyOptions(tracking_uri=uri, progress=False))
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_augment"], output_format="pandas")
    row = runs[runs["tags.role"] == "variant"].iloc[0]
    assert row["status"] == "FINISHED"
    assert row["metrics.augment/audio_examples"] == row["metrics.augment/clips"] == row["metrics.augment/noise"] == 8
    assert 0 < row["metrics.augment/clips"] and row["metrics.augment/seconds"] > 0
    assert row["metrics.augment/reverb"] + row["metrics.augment/speed"] > 0
    assert row["params.data.augment.noise.p"] == "1.0"


def test_missing_noise_files_stop_the_sweep_before_any_work(tmp_path, monkeypatch):
    from _tiny import tiny_ablation
    from borealis_eval.study import StudyOptions
    from borealis_eval.sweep import run_sweep

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    path = tiny_ablation(tmp_path, tmp_path / "no-corpus-needed", "tiny_noise_files", steps=2)
    abl = yaml.safe_load(path.read_text())
    abl["base"]["data"]["augment"] = {"noise": {"p": 1.0, "files": [str(tmp_path / "noises")]}}
    path.write_text(yaml.safe_dump(abl))
    with pytest.raises(AudioError, match=r"augment\.noise\.files: .*noises is neither a file nor a folder"):
        run_sweep(path, StudyOptions(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", progress=False))
    assert not any((tmp_path / "cache").rglob("*.safetensors"))  # nothing was encoded
