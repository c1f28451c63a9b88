"""A 6-trial Optuna search on tiny random models: parent run, 6 nested trial runs, best trial."""

import mlflow

from _tiny import tiny_ablation


def test_search_logs_parent_and_nested_trials_and_reports_best(tmp_path, corpus, monkeypatch, capsys):
    from borealis_eval.cli import main

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = {"n_trials": 6, "sampler": "random", "seed": 1,
              "objective": {"sets": ["test_en"], "metric": "wer"},
              "pruner": "median", "prune": {"set": "dev", "every": 2},
              "space": {"data.text_fraction": {"low": 0, "high": 0.3},
                        "train.lr": {"low": 1e-4, "high": 3e-3, "log": True},
                        "model.adapter.hidden_sizes": {"choices": [[8], [16]]}}}
    abl = tiny_ablation(tmp_path, corpus, "tiny_search", search=search)
    rc = main(["--tracking-uri", uri, "search", str(abl), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "best trial #" in out

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_search"], output_format="pandas")
    parents = runs[runs["tags.role"] == "parent"]
    trials = runs[runs["tags.role"] == "variant"]
    assert len(parents) == 1 and len(trials) == 6
    assert (trials["tags.mlflow.parentRunId"] == parents["run_id"].item()).all()
    assert sorted(trials["tags.optuna.trial"].astype(int)) == list(range(6))
    assert set(trials["status"]) <= {"FINISHED", "KILLED"}  # KILLED = pruned
    finished = trials[trials["status"] == "FINISHED"]
    assert finished["metrics.objective"].notna().all() and len(finished) >= 2
    best = parents["tags.best.run_id"].item()
    assert best in set(finished["run_id"])
    assert finished.set_index("run_id").loc[best, "metrics.objective"] == finished["metrics.objective"].min()
    assert parents["status"].item() == "FINISHED"

    capsys.readouterr()
    assert main(["--tracking-uri", uri, "runs", "tiny_search"]) == 0  # the runs table lists them
    table = capsys.readouterr().out
    assert "trial-000" in table and "parent" in table
