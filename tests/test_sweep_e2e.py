"""A 2-variant sweep end to end on tiny random models into a temporary MLflow store."""

import json
from pathlib import Path

import mlflow

from _tiny import manifest, tiny_ablation  # the corpus sizes and ablation the scale-out tests use too


def write_ablation(tmp: Path, corpus: Path, baseline: bool = True) -> Path:
    """The shared tiny ablation, a little wider, over two text fractions, scored on both test sets."""
    return tiny_ablation(tmp, corpus, "tiny_e2e", grid={"data.text_fraction": [0.0, 0.25]}, baseline=baseline, overrides={
        "description": "Does plain text in training change WER on tiny random models?",
        "base": {
            "model": {"encoder": {"config": {"d_model": 32, "encoder_ffn_dim": 64}},
                      "adapter": {"hidden_sizes": [32]},
                      "llm": {"config": {"hidden_size": 32, "intermediate_size": 64}, "tokenizer": {"vocab_size": 400}}},
            "data": {"num_examples": 40},
            "train": {"batch_size": 4, "threads": None},
            "eval": {"sets": [{"name": "test_ru", "source": manifest(corpus, "test_ru")},
                              {"name": "test_en", "source": manifest(corpus, "test_en")}],
                     "text_sets": [{"name": "heldout", "source": manifest(corpus, "text_heldout")}],
                     "max_new_tokens": 8},
        },
    })


def test_two_variant_sweep_logs_parent_children_baseline_and_report(tmp_path, corpus, monkeypatch):
    from borealis_eval.cli import main

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    abl = write_ablation(tmp_path, corpus)
    rc = main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--out", str(tmp_path / "report")])
    assert rc == 0

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_e2e"], output_format="pandas")
    # every utterance is encoded exactly once for both variants: 2 x 16 train clips (each variant's
    # 20 draws per language cover its pool) + 8 eval clips, one cache entry each
    parent_row = runs[runs["tags.role"] == "parent"].iloc[0]
    entries = list((tmp_path / "cache" / "features").rglob("*.safetensors"))
    assert parent_row["metrics.cache/encoded"] == len(entries) == 40
    roles = runs["tags.role"].value_counts().to_dict()
    assert roles == {"parent": 1, "variant": 2, "baseline": 1}
    parent_id = runs.loc[runs["tags.role"] == "parent", "run_id"].item()
    children = runs[runs["tags.role"] != "parent"]
    assert (children["tags.mlflow.parentRunId"] == parent_id).all()
    assert (runs["status"] == "FINISHED").all()
    for s in ("test_ru", "test_en"):
        for m in ("wer", "cer", "wer_ci_low", "wer_ci_high", "rtfx", "sub", "dele", "ins", "wer_raw", "wer_basic",
                  "fail_empty_rate", "fail_loop_rate", "fail_over100_rate"):
            assert children[f"metrics.{m}/{s}"].notna().all(), (m, s)
        assert set(children[f"tags.normalizer/{s}"]) == {"russian@1.0" if s == "test_ru" else "english@1.0"}
    var_rows = runs[runs["tags.role"] == "variant"]
    for m in ("text_chrf/heldout", "text_exact/heldout", "p_vs_baseline/test_en", "delta_wer_vs_baseline/test_en"):
        assert var_rows[f"metrics.{m}"].notna().all(), m
    variants = runs[runs["tags.role"] == "variant"].set_index("tags.axis_label.data.text_fraction")
    assert set(variants.index) == {"0", "0.25"}
    assert variants.loc["0", "metrics.data/count_text"] == 0
    assert variants.loc["0.25", "metrics.data/count_text"] == 10  # 25% of 40
    assert variants.loc["0.25", "metrics.data/count_ru"] == 15 and variants.loc["0.25", "metrics.data/count_en"] == 15

    client = mlflow.MlflowClient(uri)
    run_id = variants.loc["0.25", "run_id"]
    preds = client.download_artifacts(run_id, "predictions/test_en.jsonl", str(tmp_path))
    rows = [json.loads(x) for x in Path(preds).read_text().splitlines()]
    assert len(rows) == 4 and {"id", "ref", "hyp", "duration"} <= set(rows[0])
    assert len(client.get_metric_history(run_id, "train/loss")) == 2  # logged every 2 of 4 steps

    # the seed plan, logged before any work: a new experiment has no earlier sweep, so a labelled prior
    from borealis_eval import records
    plan = json.loads(Path(client.download_artifacts(parent_id, records.PLAN_POWER, str(tmp_path))).read_text())
    assert [s["set"] for s in plan["sets"]] == ["test_ru", "test_en"] and plan["prior"] is True
    assert "default prior" in parent_row[f"tags.{records.PLAN_VARIANCE}"]

    paired = client.download_artifacts(parent_id, "paired/test_en.jsonl", str(tmp_path))
    pairs = [json.loads(x) for x in Path(paired).read_text().splitlines()]
    assert len(pairs) == 3 and all(0 < p["p_value"] <= 1 for p in pairs)  # 3 systems -> 3 pairs

    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "report.html").is_file()
    # what each variant trained in, and on which CPU, is a param and a line of the report's header
    from borealis_eval.machine import cpu_name
    from borealis_eval.train import uses_bf16
    assert set(var_rows["params.machine.cpu"]) == {cpu_name()}
    from borealis_eval.config import load_ablation
    precision = "bf16" if uses_bf16(load_ablation(abl)[1][0].config.train) else "fp32"
    assert set(var_rows["params.train.precision_used"]) == {precision}
    assert set(var_rows["params.encoder.precision_used"]) == {"fp32"}  # model.encoder.precision's default
    shown = "bf16 autocast" if precision == "bf16" else "fp32"
    assert f"Variants trained 2 in {shown} on {cpu_name()}, encoder features in fp32" in \
        (tmp_path / "report" / "report.md").read_text()

    # The encoder is paid once: a second sweep finds every clip in the feature cache.
    rc = main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report"])
    assert rc == 0
    runs = mlflow.search_runs(experiment_names=["tiny_e2e"], output_format="pandas")
    newest = runs[runs["tags.role"] == "parent"].sort_values("start_time").iloc[-1]
    assert newest["metrics.cache/encoded"] == 0 and newest["metrics.cache/hits"] > 0
