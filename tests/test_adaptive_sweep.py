"""The adaptive seed design end to end on tiny random models: the first stage, one decision (kept in
the claims table and on the parent run), the added seeds of every cell, an interruption in the second
stage and a rerun that resumes it with the same decision, and the report's design statement."""

from __future__ import annotations

import dataclasses

import mlflow
import pytest

from _tiny import claims_of, tiny_ablation, tiny_corpus
from borealis_eval import records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "c")


def test_adaptive_sweep_decides_once_adds_seeds_to_every_cell_and_resumes(tmp_path, corpus, monkeypatch, capsys):
    from borealis_eval import sweep
    from borealis_eval.cli import main
    from borealis_eval.evaluate.adaptive import SeedDecision, decide_seeds

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    abl = tiny_ablation(tmp_path, corpus, "tiny_adaptive", grid={"data.text_fraction": [0.0, 0.25]},
                        overrides={"seeds": {"initial": 2, "max": 3, "target_pts": 5},
                                   "base": {"eval": {"max_new_tokens": 8}}})
    calls = []

    def rule(results, utt_se, **kw):  # the real rule, on the real first-stage numbers; the study is then
        real = decide_seeds(results, utt_se, **kw)  # sent to max whatever tiny random models score, so the
        calls.append((list(results), dict(utt_se), kw, real))  # second stage always runs here
        return dataclasses.replace(real, final=kw["max_seeds"], reason="forced by the test: " + real.reason)

    monkeypatch.setattr(sweep, "decide_seeds", rule)
    interrupted = []

    class StopInSecondStage(sweep.VariantWork):
        def recipe(self, *a, **k):
            if self.v.config.seed == 2 and not interrupted:
                interrupted.append(self.v.name)
                raise KeyboardInterrupt("planted interruption in stage 2")
            return super().recipe(*a, **k)

    monkeypatch.setattr(sweep, "VariantWork", StopInSecondStage)
    uri, db = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "studies.db"
    cmd = ["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--storage", f"sqlite:///{db}",
           "--out", str(tmp_path / "report")]
    assert main(cmd) != 0 and interrupted  # stopped in the second stage
    assert len(calls) == 1
    rows = claims_of(db)
    decided = SeedDecision.from_json(rows["adaptive seed design"]["reason"])
    results, utt_se, kw, real = calls[0]
    assert decided.final == 3 and decided.initial == 2 and decided.sets == real.sets
    # the rule saw the four first-stage runs on both eval sets, with the headline family of 2 cells x 2 sets
    assert sorted({(r.cell, r.seed) for r in results}) == [("text_fraction=0", 0), ("text_fraction=0", 1),
                                                           ("text_fraction=0.25", 0), ("text_fraction=0.25", 1)]
    assert set(utt_se) == {"test_en", "dev"} and kw["family_size"] == 1 * 2 and kw["initial"] == 2

    assert main(cmd) == 0  # the rerun resumes stage 2 with the recorded decision: the rule is not asked again
    assert len(calls) == 1
    rows = claims_of(db)
    assert {r["status"] for r in rows.values()} == {"finished"} and len(rows) == 6 + 1  # 2 cells x 3 seeds + decision
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny_adaptive"], output_format="pandas")
    parent = runs[runs["tags.role"] == "parent"]
    assert len(parent) == 1 and parent["status"].item() == "FINISHED"
    assert SeedDecision.from_json(parent[f"tags.{records.SEED_DECISION}"].item()) == decided
    done = runs[(runs["tags.role"] == "variant") & (runs["status"] == "FINISHED")]
    assert sorted(done.groupby("tags.cell")["tags.seed"].apply(sorted).tolist()) == [["0", "1", "2"]] * 2
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Seed design: 2 + 1 = 3 seeds per cell" in report and "2 initial + 1 added = 3 seeds per cell" in report
    # the dry run shows the first stage and says more may follow
    capsys.readouterr()
    assert main(["sweep", str(abl), "--dry-run"]) == 0
    shown = capsys.readouterr()
    assert "4 variants = 2 cells x 2 seed(s) - stage 1 of the adaptive seed design" in " ".join(
        (shown.out + shown.err).split())
    assert "up to 3 per cell, 6 variants" in " ".join((shown.out + shown.err).split())
