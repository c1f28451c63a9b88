"""Seeds as an axis, matched budgets (text_mode add) and learning curves, end to end on tiny models."""

from __future__ import annotations

import mlflow
import pytest
import yaml

from _tiny import manifest, tiny_ablation
from borealis_eval.config import ConfigError, load_ablation
from borealis_eval.data.mixer import mix
from borealis_eval.data.sources import AudioItem, TextItem


def test_seeds_train_every_cell_once_per_seed_seed_by_seed(tmp_path, corpus):
    abl = tiny_ablation(tmp_path, corpus, "tiny_seeds", grid={"data.text_fraction": [0.0, 0.25]},
                        overrides={"seeds": [0, 1, 2]})
    _, variants = load_ablation(abl)
    assert [(v.axes["data.text_fraction"], v.config.seed) for v in variants] == [
        (0.0, 0), (0.25, 0), (0.0, 1), (0.25, 1), (0.0, 2), (0.25, 2)]  # a whole grid per seed first
    assert variants[3].name == "text_fraction=0.25__seed=1" and variants[3].cell == "text_fraction=0.25"
    assert len({v.config_hash for v in variants}) == 6 and len({v.cell for v in variants}) == 2

    both = tiny_ablation(tmp_path, corpus, "tiny_seeds_twice", grid={"seed": [0, 1]}, overrides={"seeds": [0, 1]})
    with pytest.raises(ConfigError, match="either 'seeds:' or a grid axis 'seed'"):
        load_ablation(both)
    dup = tiny_ablation(tmp_path, corpus, "tiny_seeds_dup", overrides={"seeds": [1, 1]})
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        load_ablation(dup)


def _items(n_audio: int, n_text: int):
    audio = [AudioItem(id=f"a{i}", text="x", language="ru" if i % 2 else "en", duration=1.0) for i in range(n_audio)]
    text = [TextItem(id=f"t{i}", language="en", instruction="q", answer="a") for i in range(n_text)]
    return audio, text


def test_text_mode_add_keeps_audio_exposure_and_replace_keeps_the_budget():
    audio, text = _items(20, 20)
    replace = mix(audio, text, {"ru": 0.5, "en": 0.5}, 0.25, 40, seed=0)
    add = mix(audio, text, {"ru": 0.5, "en": 0.5}, 0.25, 40, seed=0, text_mode="add")
    assert replace.stats["count_total"] == 40 and replace.stats["count_text"] == 10
    assert add.stats["count_ru"] + add.stats["count_en"] == 40  # every variant sees 40 audio examples
    assert add.stats["count_text"] == round(0.25 * 40 / 0.75) == 13
    assert add.stats["text_fraction_realised"] == pytest.approx(13 / 53)


def test_add_mode_grows_the_steps_and_curves_are_logged_per_step(tmp_path, corpus, monkeypatch):
    from borealis_eval.cli import main

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    abl = tiny_ablation(tmp_path, corpus, "tiny_add", grid={"data.text_fraction": [0.0, 0.5]}, steps=4, overrides={
        "base": {"data": {"text_mode": "add", "num_examples": 8},
                 "eval": {"every_steps": 2, "dev_sets": [{"name": "dev_small", "source": manifest(corpus, "dev"),
                                                          "max_samples": 2}]}}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report"]) == 0
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_add"], output_format="pandas")
    v = runs[runs["tags.role"] == "variant"].set_index("tags.axis_label.data.text_fraction")
    assert v.loc["0", "metrics.train/steps"] == 4 and v.loc["0.5", "metrics.train/steps"] == 8  # 8 audio + 8 text
    assert v.loc["0", "metrics.data/count_total"] == 8 and v.loc["0.5", "metrics.data/count_text"] == 8
    assert set(v["tags.text_mode"]) == {"add"}
    client = mlflow.MlflowClient(uri)
    for frac, steps in (("0", [2, 4]), ("0.5", [2, 4, 6, 8])):
        curve = client.get_metric_history(v.loc[frac, "run_id"], "dev_wer/dev_small")
        assert sorted(m.step for m in curve) == steps and all(m.value >= 0 for m in curve)
    # the dev set is scored while training only: it is not an eval set of the study
    assert "metrics.wer/dev_small" not in runs or runs["metrics.wer/dev_small"].isna().all()


def test_every_steps_needs_dev_sets(tmp_path, corpus):
    abl = tiny_ablation(tmp_path, corpus, "tiny_curve_bad", overrides={"base": {"eval": {"every_steps": 2}}})
    with pytest.raises(ConfigError, match="every_steps needs 'dev_sets'"):
        load_ablation(abl)
    assert yaml.safe_load(abl.read_text())["base"]["eval"]["every_steps"] == 2
