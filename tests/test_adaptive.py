"""The adaptive seed design's decision rule (evaluate/adaptive.py) on generated seed results."""

from __future__ import annotations

import re

import numpy as np
import pytest

from borealis_eval.evaluate.adaptive import (SeedDecision, SeedResult, blind_seed_variance, decide_seeds, factor_pairs,
                                             headline_family_size)
from borealis_eval.evaluate.power import seeds_needed


def _study(rng, seed_sd: float, means=(0.30, 0.32, 0.45, 0.50), seeds: int = 2, sets=("test_ru",)):
    return [SeedResult(s, f"cell{c}", k, m + rng.normal(0, seed_sd))
            for s in sets for c, m in enumerate(means) for k in range(seeds)]


KW = dict(initial=2, max_seeds=6, target=0.05, family_size=8)


def test_high_seed_variance_asks_for_more_seeds_and_is_capped_at_max():
    rng = np.random.default_rng(1)
    calm = decide_seeds(_study(rng, 0.002), {"test_ru": 0.005}, **KW)
    noisy = decide_seeds(_study(rng, 0.03), {"test_ru": 0.005}, **KW)
    wild = decide_seeds(_study(rng, 0.20), {"test_ru": 0.005}, **KW)
    assert calm.final == 2 and calm.added == 0 and "suffice" in calm.reason
    assert calm.final < noisy.final <= 6
    assert wild.final == 6 and wild.of("test_ru").needed is None and "capped at max 6" in wild.reason
    # the number is what power.seeds_needed says for the variance the decision states
    d = noisy.of("test_ru")
    want = seeds_needed(d.seed_sd, 0.005, 0.05, seeds=2, n_cells=4, alpha=0.05 / 8, max_seeds=6).needed
    assert noisy.final == max(want or 6, 2)
    assert noisy.deciding_set == "test_ru" and noisy.alpha == pytest.approx(0.05 / 8) and noisy.n_cells == 4


def test_blind_estimate_ignores_which_cell_is_which_and_how_far_cells_are_apart():
    rng = np.random.default_rng(2)
    res = _study(rng, 0.03, seeds=3)
    base = decide_seeds(res, {"test_ru": 0.005}, **KW | {"initial": 3})
    # permute the cell labels (which group is which cell) and shift every cell's mean: no change
    names = [f"cell{c}" for c in range(4)]
    perm = dict(zip(names, rng.permutation(names)))
    shift = {n: rng.uniform(-0.3, 0.3) for n in names}
    moved = [SeedResult(r.set, perm[r.cell], r.seed, r.wer + shift[r.cell]) for r in res]
    again = decide_seeds(moved, {"test_ru": 0.005}, **KW | {"initial": 3})
    assert again.final == base.final and again.of("test_ru").seed_var == pytest.approx(base.of("test_ru").seed_var)
    # the lumped (one-sample) estimate is blind even to which runs share a cell
    wers = [r.wer for r in res]
    shuffled = [SeedResult(r.set, r.cell, r.seed, w) for r, w in zip(res, rng.permutation(wers))]
    lumped = blind_seed_variance(res, "lumped")
    assert blind_seed_variance(shuffled, "lumped") == pytest.approx(lumped)
    assert decide_seeds(shuffled, {"test_ru": 0.005}, estimator="lumped", **KW).final == \
        decide_seeds(res, {"test_ru": 0.005}, estimator="lumped", **KW).final
    # ... and so counts the cells' differences as seed noise: larger than the pooled within-cell one
    assert lumped[0] > blind_seed_variance(res, "pooled")[0] and lumped[1] == 11


def test_pooled_variance_is_the_within_cell_sum_of_squares():
    res = [SeedResult("s", "a", 0, 0.10), SeedResult("s", "a", 1, 0.14), SeedResult("s", "b", 0, 0.50),
           SeedResult("s", "b", 1, 0.50), SeedResult("s", "b", 2, 0.56)]
    var, df = blind_seed_variance(res)
    assert df == 3 and var == pytest.approx((2 * 0.02 ** 2 + 0.02 ** 2 * 2 + 0.04 ** 2) / 3)
    with pytest.raises(ValueError, match="two seeds"):
        blind_seed_variance([SeedResult("s", "a", 0, 0.1), SeedResult("s", "b", 0, 0.2)])


def test_the_rule_takes_the_neediest_reachable_set_and_names_the_unreachable():
    rng = np.random.default_rng(3)
    res = _study(rng, 0.001, sets=("easy",)) + _study(rng, 0.04, sets=("hard",)) + _study(rng, 0.001, sets=("tiny",))
    d = decide_seeds(res, {"easy": 0.003, "hard": 0.003, "tiny": 0.05}, **KW)
    assert d.deciding_set == "hard" and d.final == max(d.of("hard").needed or 6, 2) > 2
    assert not d.of("tiny").reachable and "left out: tiny" in d.reason
    only_tiny = decide_seeds([r for r in res if r.set == "tiny"], {"tiny": 0.05}, **KW)
    assert only_tiny.final == 2 and only_tiny.deciding_set is None and "out of reach" in only_tiny.reason
    assert SeedDecision.from_json(d.to_json()) == d


def test_bad_design_inputs_are_refused():
    res = _study(np.random.default_rng(4), 0.01)
    with pytest.raises(ValueError, match="initial"):
        decide_seeds(res, {"test_ru": 0.01}, **KW | {"initial": 7})
    with pytest.raises(ValueError, match="estimator"):
        decide_seeds(res, {"test_ru": 0.01}, estimator="median", **KW)
    with pytest.raises(ValueError, match="no eval set"):
        decide_seeds(res, {"other": 0.01}, **KW)


def test_family_size_counts_the_report_headline_family():
    cells = [(f"{m}/{t}", {"mix": m, "text": t}) for t in (0.0, 0.15) for m in ("ru", "en", "mixed")]
    pairs = factor_pairs(cells)
    assert len(pairs) == 2 * 2 + 3  # mix: 2 levels vs ru in each text; text: 0.15 vs 0 in each mix
    assert ("en/0.15", "en/0.0", "text") in pairs and ("mixed/0.0", "ru/0.0", "mix") in pairs
    assert headline_family_size(cells, 2, baseline=True) == (7 + 6) * 2
    assert headline_family_size(cells, 2, baseline=False) == 14


# ------------------------------------------------------------------ the config: seeds: {initial, max, target_pts}
def _adaptive_file(tmp_path, seeds):
    from test_config import minimal, write

    return write(tmp_path / "a.yaml", {**minimal(), "seeds": seeds})


def test_adaptive_seeds_expand_to_the_first_stage_then_to_any_count_up_to_max(tmp_path):
    from borealis_eval.config import load_ablation

    p = _adaptive_file(tmp_path, {"initial": 2, "max": 4, "target_pts": 5})
    abl, first = load_ablation(p)
    assert abl.adaptive.initial == 2 and abl.adaptive.estimator == "pooled"
    assert [v.config.seed for v in first] == [0, 0, 1, 1] and len({v.cell for v in first}) == 2
    _, all4 = load_ablation(p, seeds_per_cell=4)
    assert [v.config.seed for v in all4] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [v.config_hash for v in all4[:4]] == [v.config_hash for v in first]  # the first stage is the same runs
    with pytest.raises(ValueError, match="seeds_per_cell"):
        load_ablation(p, seeds_per_cell=5)
    _, listed = load_ablation(_adaptive_file(tmp_path, [0, 1]))
    assert [v.config.seed for v in listed] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="only for an adaptive"):
        load_ablation(tmp_path / "a.yaml", seeds_per_cell=2)


@pytest.mark.parametrize("seeds, message", [
    ({"initial": 4, "max": 3, "target_pts": 5}, r"seeds: initial \(4\) must not exceed max \(3\)"),
    ({"initial": 1, "max": 3, "target_pts": 5}, r"seeds.initial.*greater than or equal to 2"),
    ({"initial": 2, "max": 0, "target_pts": 5}, r"seeds.max.*greater than 0"),
    ({"initial": 2, "max": 4, "target_pts": 0}, r"seeds.target_pts.*greater than 0"),
    ({"initial": 2, "max": 4, "target_pts": -3}, r"seeds.target_pts.*greater than 0"),
    ({"initial": 2, "max": 4, "target_pts": 5, "targte": 1}, r"seeds.targte.*unknown field"),
    ({"initial": 2, "max": 4}, r"seeds.target_pts.*required"),
    ({"initial": 2, "max": 4, "target_pts": 5, "estimator": "median"}, r"seeds.estimator"),
])
def test_adaptive_seeds_errors_are_one_line_and_name_the_field(tmp_path, seeds, message):
    from test_config import error_of

    msg = error_of(_adaptive_file(tmp_path, seeds))
    assert re.search(message, msg), msg


def test_report_states_initial_added_final_and_the_variance_used():
    from types import SimpleNamespace

    from borealis_eval.report.cells import Cell, CellAnalysis
    from borealis_eval.report.design import design_line, design_table

    rng = np.random.default_rng(5)
    res = _study(rng, 0.001, sets=("easy",)) + _study(rng, 0.20, sets=("hard",))
    d = decide_seeds(res, {"easy": 0.003, "hard": 0.003}, **KW)
    assert d.final == 6 and d.deciding_set == "hard"
    cells = CellAnalysis(cells=[Cell(f"cell{c}", "", {}, tuple(f"r{c}{k}" for k in range(6)), ()) for c in range(4)])
    data = SimpleNamespace(parent={"seed_design": {"initial": 2, "max": 6, "target_pts": 5}, "seed_decision": d})
    table = design_table(data, cells)
    assert table.title == "Seed design: 2 + 4 = 6 seeds per cell"
    by_set = {r.cells[0].value: [c.value for c in r.cells] for r in table.rows}
    assert by_set["hard"][-1] == "> 6 (capped)" and by_set["easy"][-1] == str(max(d.of("easy").needed, 2))
    assert by_set["hard"][1] == f"{100 * d.of('hard').seed_sd:.1f}" and by_set["hard"][2] == str(d.of("hard").df)
    assert [r.cells[0].bold for r in table.rows] == [False, True]  # sets sorted; the deciding one in bold
    assert "2 initial + 4 added = 6 seeds per cell (max 6; the cells ran 6)" in table.note
    # a design whose decision was never recorded says so instead of inventing one
    data.parent["seed_decision"] = None
    assert not design_table(data, cells).rows and "no decision was recorded" in design_line(data, cells)
