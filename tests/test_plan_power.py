"""The seed plan (plan/power.py): seeds needed and their cost per eval set, from a prior or from
earlier runs read with the report's own estimators, and logged on a sweep's parent run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from _tiny import tiny_ablation
from borealis_eval import records
from borealis_eval.config import load_ablation
from borealis_eval.evaluate.power import contrast_se
from borealis_eval.evaluate.verdicts import POWER, power
from borealis_eval.plan import power_plan, render_power
from borealis_eval.plan import power as PP
from test_report import SETS, make_store

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "ablations" / "text_ratio.yaml"


def _df(pp, seeds: int) -> float:
    return pp.cells * (seeds - 1)


def _ablation(tmp: Path, seeds=(0, 1), grid=None) -> Path:
    """A tiny ablation scored on the planted store's sets (test_ru, test_en), 2 seeds per cell."""
    return tiny_ablation(tmp, tmp / "no-corpus", "planned", grid=grid or {"data.text_fraction": [0.0, 0.15, 0.25]},
                         baseline=True, overrides={"seeds": list(seeds), "base": {"eval": {"sets": [
                             {"name": s, "source": {"kind": "manifest", "path": str(tmp / f"{s}.jsonl")},
                              "max_samples": 40} for s in SETS]}}})


def test_doubling_the_seed_sd_raises_the_seeds_needed():
    one = power_plan(FULL, seed_sd_pts=1.5, utt_se_pts=0.3, target_pts=5)
    two = power_plan(FULL, seed_sd_pts=3.0, utt_se_pts=0.3, target_pts=5)
    for a, b in zip(one.sets, two.sets):
        assert a.target.needed is not None and b.target.needed is not None
        assert b.target.needed > a.target.needed
        assert b.variance.seed_sd == pytest.approx(2 * a.variance.seed_sd)


def test_the_seeds_needed_reach_the_power_by_the_same_formula_and_one_fewer_does_not(tmp_path):
    pp = power_plan(_ablation(tmp_path), seed_sd_pts=4.0, utt_se_pts=1.0, target_pts=6)
    # the report's headline family over this grid: 2 factor contrasts + 3 cells against the baseline, per set
    assert pp.cells == 3 and pp.seeds == 2 and pp.family_size == (2 + 3) * len(SETS)
    alpha = 0.05 / pp.family_size
    for s in pp.sets:
        v, need = s.variance, s.target.needed
        assert need is not None and need > pp.seeds
        assert power(0.06, contrast_se(v.seed_sd, v.utt_se, need), _df(pp, need), alpha) >= POWER
        assert power(0.06, contrast_se(v.seed_sd, v.utt_se, need - 1), _df(pp, need - 1), alpha) < POWER
        # the detectable effect at the file's 2 seeds is the effect with exactly 80% power there
        d = s.margin.detectable
        assert power(d, contrast_se(v.seed_sd, v.utt_se, 2), _df(pp, 2), alpha) == pytest.approx(POWER, abs=1e-3)


def test_a_plan_without_runs_or_flags_says_its_variance_is_a_default_prior(tmp_path):
    pp = power_plan(_ablation(tmp_path))
    assert pp.prior and all(s.variance.seed_source == PP.DEFAULT == s.variance.utt_source for s in pp.sets)
    # the default test SE follows the set's size (max_samples here: no manifest on disk)
    assert pp.sets[0].variance.utt_se == pytest.approx(PP.DEFAULT_UTT_SD_PTS / 100 / math.sqrt(40))
    text = render_power(pp)
    assert "default prior (a guess, not a measurement)" in text
    assert f"seed std {PP.DEFAULT_SEED_SD_PTS:g} pts" in text
    assert all(line.split()[4] == "prior" for line in text.splitlines() if line.startswith(SETS))
    stated = power_plan(_ablation(tmp_path), seed_sd_pts=3)
    assert {s.variance.seed_source for s in stated.sets} == {PP.STATED}
    assert {s.variance.utt_source for s in stated.sets} == {PP.DEFAULT}  # still a prior, and says which
    assert "stated prior: seed std 3 pts" in stated.variance_from
    assert f"seed std {PP.DEFAULT_SEED_SD_PTS:g} pts" not in stated.variance_from.split("default prior")[1]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The planted 2-seed study of test_report.py: every cell's seeds 2-6 pts apart."""
    root = tmp_path_factory.mktemp("seeded")
    cells = {("ru100", 0.0): 0.23, ("ru100", 0.15): 0.20, ("ru100", 0.25): 0.22}
    spread = {("ru100", 0.0): 0.02, ("ru100", 0.15): -0.03, ("ru100", 0.25): 0.01}
    seeds = {s: {c: (1 if s else -1) * d for c, d in spread.items()} for s in range(2)}
    return make_store(root, cells, failed=False, experiment="planned_runs", seeds=seeds)


def test_bad_flags_and_missing_runs_are_one_line_errors(seeded, tmp_path):
    from borealis_eval.errors import UsageError

    with pytest.raises(UsageError, match="--target-pts"):
        power_plan(_ablation(tmp_path), target_pts=0)
    with pytest.raises(UsageError, match="--seed-sd is in WER points"):
        power_plan(_ablation(tmp_path), seed_sd_pts=-1)
    with pytest.raises(UsageError, match="--from-runs nowhere: no experiment 'nowhere'"):
        power_plan(_ablation(tmp_path), from_runs="nowhere", tracking_uri=seeded)


def test_from_runs_reads_each_set_with_the_reports_estimators(seeded, tmp_path):
    from borealis_eval.report.cells import analyse_cells, power_inputs
    from borealis_eval.report.collect import load_report_data

    pp = power_plan(_ablation(tmp_path), from_runs="planned_runs", tracking_uri=seeded)
    cells = analyse_cells(load_report_data("planned_runs", seeded))
    assert not pp.prior and "planned_runs" in pp.variance_from and "3 cells x 2 seeds" in pp.variance_from
    for s in pp.sets:
        seed_sd, utt_se = power_inputs(cells, s.name)
        assert s.variance.seed_sd == pytest.approx(seed_sd) and s.variance.utt_se == pytest.approx(utt_se)
        assert s.variance.units == cells.units[s.name]
    more = power_plan(_ablation(tmp_path), from_runs="planned_runs", tracking_uri=seeded, seed_sd_pts=
                      2 * 100 * pp.sets[0].variance.seed_sd)
    assert more.sets[0].variance.seed_source == PP.STATED and more.sets[0].variance.utt_source == PP.MEASURED
    assert more.sets[0].margin.detectable > pp.sets[0].margin.detectable


def _cost(workers: int = 1):
    """A cost plan with planted seconds: 3 cells x 2 seeds, each cell's variants their own price."""
    from borealis_eval.plan import H200, Plan, VariantPlan

    price = {"text_fraction=0": 100.0, "text_fraction=0.15": 200.0, "text_fraction=0.25": 400.0}
    variants = [VariantPlan(f"{cell}__seed={seed}", None, None, None, 1.0, "given", sec, 0.0, 0.0)
                for seed in (0, 1) for cell, sec in price.items()]
    return Plan("planned", H200, variants, {"start-up": 15.0, "baseline": 50.0}, [], workers=workers), price


def test_the_cost_of_more_seeds_takes_each_cell_at_its_own_price(tmp_path):
    cost, price = _cost()
    pp = power_plan(_ablation(tmp_path), cost, seed_sd_pts=4.0, utt_se_pts=1.0, target_pts=6)
    assert pp.hours(pp.seeds) == pytest.approx(cost.device_hours)
    need = pp.sets[0].target.needed
    assert pp.hours(need) == pytest.approx((15 + 50 + need * sum(price.values())) / 3600)
    assert "GPU-hours" in render_power(pp) and pp.hours(None) is None
    # two local workers share the same units: never slower than half the serial work, never faster
    two = _cost(workers=2)[0]
    assert (15 + (50 + need * sum(price.values())) / 2) / 3600 <= two.seconds_with_seeds(need) / 3600 \
        < pp.hours(need)


def test_the_sweep_logs_the_seed_plan_on_its_parent(seeded, tmp_path):
    """`sweep` puts the seed plan on the new parent run: artifact, variance tag, per-set metrics; the
    variance comes from the experiment's earlier sweep, not from the parent being started."""
    from mlflow.tracking import MlflowClient

    from borealis_eval.sweep import _log_plan

    logged: dict = {"tags": {}, "metrics": {}, "artifacts": {}}
    parent = SimpleNamespace(run_id="the-new-parent",
                             artifact_text=lambda text, path: logged["artifacts"].__setitem__(path, text),
                             tags=lambda v: logged["tags"].update(v), metrics=lambda v: logged["metrics"].update(v))
    st = SimpleNamespace(client=MlflowClient(tracking_uri=seeded), parent=parent)
    abl = _ablation(tmp_path)
    _log_plan(st, abl, None, 50, 1, "planned_runs")
    got = json.loads(logged["artifacts"][records.PLAN_POWER])
    assert [s["set"] for s in got["sets"]] == list(SETS) and got["prior"] is False
    assert "planned_runs" in logged["tags"][records.PLAN_VARIANCE]
    for s in got["sets"]:
        assert s["seed_sd_source"] == s["utt_se_source"] == PP.MEASURED
        assert logged["metrics"][records.plan_detectable(s["set"])] == pytest.approx(s["detectable_pts"])
        if s["margin"]["seeds_needed"] is not None:
            assert logged["metrics"][records.plan_seeds_needed(s["set"])] == s["margin"]["seeds_needed"]
    # a new experiment with no earlier sweep: the default prior, labelled so
    logged["artifacts"].clear()
    _log_plan(st, abl, None, 50, 1, "no_earlier_sweep")
    assert json.loads(logged["artifacts"][records.PLAN_POWER])["prior"] is True
    assert "default prior" in logged["tags"][records.PLAN_VARIANCE]


def test_cli_plan_prints_the_seed_plan(tmp_path, capsys, monkeypatch):
    import borealis_eval.plan as plan_pkg
    from borealis_eval.cli import main

    monkeypatch.setattr(plan_pkg, "plan", lambda *a, **k: _cost()[0])  # the cost plan is tested in test_plan.py
    monkeypatch.setattr(plan_pkg, "render", lambda p: "")
    assert main(["plan", str(_ablation(tmp_path)), "--seed-sd", "3", "--target-pts", "5"]) == 0
    out = capsys.readouterr().out
    assert "seeds and power" in out and "seeds for 5 pts" in out and "GPU-hours (5 pts)" in out
    rows = [line for line in out.splitlines() if line.startswith(SETS)]
    assert len(rows) == len(SETS) and all("prior" in r for r in rows)
    assert load_ablation(_ablation(tmp_path))[0].analysis.margin_pts == 2.0 and "seeds for ±2 margin" in out
