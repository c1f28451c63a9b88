"""Statistics over training seeds x test utterances, on planted per-seed, per-utterance data."""

import math

import numpy as np
import pytest
from _variance_sim import old_paired_p, seed_utt_scores, simulate_study
from scipy.special import stdtrit
from scipy.stats import binom

from borealis_eval.evaluate.metrics import bootstrap_ci, paired_test, score_utterances
from borealis_eval.evaluate.variance import (
    A_BETTER,
    B_BETTER,
    NOT_RESOLVED,
    NOT_RESOLVED_SAMPLING,
    CellScores,
    compare,
    headline_findings,
    phrase,
    pool_seed_variance,
    summarize_cell,
)

WORDS = np.random.default_rng(0).integers(5, 16, 64)  # one test set: 64 utterances of 5-15 words


def planted(levels, words=WORDS, seed=1, trained=True):
    """One row per seed at a planted WER level: each utterance's edits = round(level x words),
    nudged by -1/0/+1 so utterances differ, then the row is corrected to hit the level exactly."""
    rng = np.random.default_rng(seed)
    rows = []
    for level in levels:
        e = np.maximum(0, np.round(level * words).astype(int) + rng.integers(-1, 2, len(words)))
        short = round(level * words.sum()) - int(e.sum())
        idx = rng.choice(len(words), abs(short), replace=False)
        e[idx] += np.sign(short)
        rows.append(np.maximum(e, 0))
    return CellScores(np.array(rows), words, trained=trained)


# ---------------------------------------------------------------- inputs


def test_seed_rates_are_corpus_level_and_inputs_are_checked():
    cell = CellScores.from_seeds([([1, 0, 3], [2, 4, 4]), ([0, 0, 5], [2, 4, 4])])
    # total edits over total reference words, not the mean of per-utterance rates
    assert cell.seed_rates.tolist() == pytest.approx([4 / 10, 5 / 10])
    assert (cell.n_seeds, cell.n_utts) == (2, 3)
    with pytest.raises(ValueError, match="seed 1 was scored against other references"):
        CellScores.from_seeds([([1, 0], [2, 4]), ([1, 0], [2, 5])])
    with pytest.raises(ValueError, match="decoded once"):
        CellScores(np.zeros((2, 3)), [1, 1, 1], trained=False)
    with pytest.raises(ValueError, match="same utterances"):
        compare(cell, CellScores([[0, 0]], [2, 4]))


def test_from_utt_scores_wer_and_cer():
    refs = ["the cat sat", "a b c d"]
    seeds = [score_utterances(refs, ["the cat sat down", "a x d"]), score_utterances(refs, refs)]
    wer = CellScores.from_utt_scores(seeds, "wer")
    assert wer.edits.tolist() == [[1, 2], [0, 0]] and wer.units.tolist() == [3, 4]
    cer = CellScores.from_utt_scores(seeds, "cer")
    assert cer.edits.tolist() == [[5, 3], [0, 0]] and cer.units.tolist() == [11, 7]


# ---------------------------------------------------------------- one cell


def test_cell_summary_mean_seed_spread_and_interval():
    cell = planted([0.30, 0.36, 0.33])
    s = summarize_cell(cell)
    assert s.mean == pytest.approx(0.33, abs=1e-3)
    assert (s.seed_min, s.seed_max) == pytest.approx((0.30, 0.36), abs=1e-3)
    assert s.seed_std == pytest.approx(0.03, rel=0.05)
    assert s.training_variance_measured and s.n_seeds == 3
    # the interval carries the seed spread: at least the t-scaled standard error of the seed mean
    assert s.ci_low < s.mean < s.ci_high and 2 <= s.df
    assert s.ci_high - s.ci_low >= 2 * stdtrit(s.df, 0.975) * s.seed_std / math.sqrt(3)
    # and is wider than the plain two-level bootstrap, which cannot see past 3 seeds
    assert s.ci_high - s.ci_low > 1.5 * (s.two_level_high - s.two_level_low)
    # utterance sampling alone (one seed) is far narrower than that
    one = summarize_cell(planted([0.33]))
    assert one.ci_high - one.ci_low < 0.5 * (s.ci_high - s.ci_low)


def test_utterance_resample_is_shared_across_seeds():
    """Seeds scored on the same utterances share the test-set error: duplicating a seed adds no
    information about unseen utterances, so the interval must not shrink (independent resamples
    per seed would shrink it by sqrt(2))."""
    one = planted([0.30])
    twice = CellScores(np.vstack([one.edits, one.edits]), one.units)
    s1, s2 = summarize_cell(one, seed=3), summarize_cell(twice, seed=3)
    assert (s2.two_level_low, s2.two_level_high) == pytest.approx((s1.two_level_low, s1.two_level_high))
    width1, width2 = s1.ci_high - s1.ci_low, s2.ci_high - s2.ci_low
    assert width2 == pytest.approx(width1, rel=0.15)  # t (63 df) vs percentile: same scale


# ---------------------------------------------------------------- two cells


def test_difference_within_seed_spread_is_no_difference_though_old_test_marks_it():
    a = planted([0.30, 0.42], seed=1)
    b = planted([0.36, 0.48], seed=2)  # 6 points worse, seed spread 12 points
    # the single-run paired bootstrap over utterances calls seed 0 vs seed 0 significant ...
    assert old_paired_p(a, b, seed=0) < 0.05
    # ... but over seeds the difference is within training variance, per cell and pooled
    for pooled in (None, pool_seed_variance([a, b])):
        c = compare(a, b, seed_variance=pooled)
        assert c.verdict == NOT_RESOLVED and c.training_variance_measured
        assert c.delta == pytest.approx(-0.06, abs=2e-3)
        assert c.ci_low < 0 < c.ci_high
        assert c.prob_ci_low < 0.5 < c.prob_ci_high
    f = headline_findings({"a": a, "b": b}, [("a", "b")])
    assert f.no_difference == f.findings and not f.findings[0].survives
    assert phrase(f.findings[0]).startswith("a vs b: not resolved beyond training variance (ΔWER -6.")


def test_large_planted_effect_is_detected():
    a = planted([0.20, 0.22, 0.21], seed=3)
    b = planted([0.45, 0.47, 0.44], seed=4)
    c = compare(a, b)
    assert c.verdict == A_BETTER and c.training_variance_measured and c.seed_variance == "per cell"
    assert c.delta == pytest.approx(-0.2433, abs=2e-3) and c.ci_high < 0 and c.p_value < 0.01
    assert c.prob_a_better > 0.99 and c.prob_ci_low > 0.5
    assert compare(b, a).verdict == B_BETTER
    f = headline_findings({"a": a, "b": b}, [("a", "b")]).findings[0]
    assert f.survives
    assert phrase(f).startswith("a has a lower WER than b beyond training variance (ΔWER -24.")


def test_comparison_against_a_baseline_decoded_once():
    base = planted([0.33], seed=5, trained=False)
    near = compare(planted([0.30, 0.36, 0.33], seed=6), base)
    assert near.training_variance_measured and near.verdict == NOT_RESOLVED and near.n_seeds_b == 1
    far = compare(planted([0.20, 0.22, 0.21], seed=7), base)
    assert far.verdict == A_BETTER and far.training_variance_measured
    # two systems decoded once: nothing trained, so no claim about training variance
    both = compare(base, planted([0.34], seed=8, trained=False))
    assert both.seed_variance == "untrained" and both.verdict == NOT_RESOLVED_SAMPLING


def test_probability_interval_agrees_with_delta_interval():
    rng = np.random.default_rng(11)
    for i in range(30):
        cells = simulate_study(rng, 2, 2, effects=[rng.uniform(-0.1, 0.1), 0.0])
        c = compare(*cells, seed=i)
        assert (c.ci_high < 0) == (c.prob_ci_low > 0.5) and (c.ci_low > 0) == (c.prob_ci_high < 0.5)
        assert 0.0 <= c.prob_a_better <= 1.0
        assert c.prob_ci_low <= c.prob_a_better <= c.prob_ci_high  # one estimator: the point lies inside


# ---------------------------------------------------------------- one seed


def test_single_seed_is_flagged_and_uses_utterance_sampling_only():
    a, b = planted([0.30], seed=9), planted([0.36], seed=10)
    c = compare(a, b, seed=4)
    assert not c.training_variance_measured and c.seed_variance == "none"
    assert c.verdict == A_BETTER  # 6 points on 64 utterances: beyond test sampling
    # the interval is the utterance bootstrap of metrics.paired_test (same resampling scheme)
    old = paired_test(*(seed_utt_scores(x) for x in (a, b)), n_boot=1000, seed=4)
    width = old.ci_high - old.ci_low
    assert c.delta == pytest.approx(old.delta)
    assert (c.ci_low, c.ci_high) == pytest.approx((old.ci_low, old.ci_high), abs=0.1 * width)
    s = summarize_cell(a, seed=4)
    assert not s.training_variance_measured and math.isnan(s.seed_std)
    lo, hi = bootstrap_ci(seed_utt_scores(a), n_boot=1000, seed=4)
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi), abs=0.1 * (hi - lo))
    f = headline_findings({"a": a, "b": b}, [("a", "b")]).findings[0]
    assert not f.survives
    assert phrase(f).endswith("training variance was not measured (one seed), so this covers test sampling only.")
    same = compare(a, planted([0.305], seed=12))
    assert same.verdict == NOT_RESOLVED_SAMPLING


def test_single_seed_cell_borrows_pooled_seed_variance():
    cells = {"one": planted([0.30], seed=13), "x": planted([0.30, 0.36], seed=14),
             "y": planted([0.31, 0.35], seed=15)}
    f = headline_findings(cells, [("one", "x")]).findings[0]
    assert f.comparison.training_variance_measured and f.comparison.seed_variance == "moderated"
    assert f.verdict == NOT_RESOLVED


# ---------------------------------------------------------------- headline


def test_headline_separates_surviving_and_null_differences_with_holm():
    cells = {
        "mix/0": planted([0.40, 0.43, 0.41], seed=20),
        "mix/0.15": planted([0.41, 0.39, 0.44], seed=21),  # within the seed spread of mix/0
        "mix/0.25": planted([0.22, 0.24, 0.25], seed=22),  # far better
        "base": planted([0.35], seed=23, trained=False),
    }
    pairs = [("mix/0.15", "mix/0"), ("mix/0.25", "mix/0"), ("mix/0.25", "base")]
    f = headline_findings(cells, pairs)
    assert f.seed_variance.pooled.df == 6 and f.seed_variance.pooled.n_cells == 3 and f.training_variance_measured
    assert [x.b for x in f.differences] == ["mix/0", "base"] and [x.a for x in f.no_difference] == ["mix/0.15"]
    assert all(x.p_adjusted >= x.comparison.p_value for x in f.findings)
    raw = headline_findings(cells, pairs, adjust="none")
    assert [x.p_adjusted for x in raw.findings] == [x.comparison.p_value for x in raw.findings]
    with pytest.raises(KeyError, match="'nope'"):
        headline_findings(cells, [("nope", "base")])


def test_holm_withholds_a_difference_that_only_one_test_would_claim():
    cells = {"a": planted([0.30, 0.32], seed=30), "b": planted([0.36, 0.38], seed=31)}
    single = headline_findings(cells, [("a", "b")], adjust="none").findings[0]
    p = single.comparison.p_value
    assert 0.01 < p < 0.05, p  # planted to be marginal
    many = headline_findings(cells, [("a", "b")] * 5)  # five tests in the family: Holm multiplies
    assert all(x.verdict == NOT_RESOLVED and x.p_adjusted == pytest.approx(min(1, 5 * p)) for x in many.findings)


# ---------------------------------------------------------------- calibration on null studies


def test_null_verdict_fires_at_nominal_rate_and_single_run_test_does_not():
    """Simulated studies where every cell has the same generating distribution (seed std 3 pts,
    2 seeds per cell, 6 cells pooled): the 5% verdict must fire ~5% of the time; the old
    paired bootstrap over the utterances of one seed per cell fires far more often."""
    studies = 400
    rng = np.random.default_rng(2024)
    fired = old_fired = 0
    for i in range(studies):
        cells = simulate_study(rng, 6, 2, seed_sd=0.03)
        c = compare(cells[0], cells[1], seed=i, seed_variance=pool_seed_variance(cells))
        fired += c.verdict in (A_BETTER, B_BETTER)
        old_fired += old_paired_p(cells[0], cells[1], seed=i) < 0.05
    lo, hi = binom.interval(0.999, studies, 0.05)
    assert lo <= fired <= hi, f"false-positive rate {fired / studies:.3f}"
    assert old_fired > 2 * hi, f"old test fired {old_fired / studies:.3f}"


def test_null_verdict_against_baseline_fires_at_nominal_rate():
    studies = 300
    rng = np.random.default_rng(7)
    fired = 0
    for i in range(studies):
        cells = simulate_study(rng, 6, 3, seed_sd=0.03, baseline=True)
        c = compare(cells[0], cells[-1], seed=i, seed_variance=pool_seed_variance(cells))
        fired += c.verdict in (A_BETTER, B_BETTER)
    lo, hi = binom.interval(0.999, studies, 0.05)
    assert lo <= fired <= hi, f"false-positive rate {fired / studies:.3f}"
