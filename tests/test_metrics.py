"""Scoring: hand-computed WER/CER, corpus aggregation, bootstrap, paired tests, failures."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borealis_eval.evaluate.failures import failure_metrics, is_loop
from borealis_eval.evaluate.metrics import UttScore, bootstrap_ci, corpus_score, paired_test, score_utterances
from borealis_eval.evaluate.protocol import cap_hypothesis, score_records
from borealis_eval.evaluate.textskill import text_ability


def one(ref, hyp):
    return score_utterances([ref], [hyp])[0]


# ---------------------------------------------------------------- per utterance


def test_insertion():
    u = one("the cat sat", "the cat sat down")
    assert (u.sub, u.dele, u.ins, u.hits) == (0, 0, 1, 3)
    assert u.wer == pytest.approx(1 / 3)
    # chars: "the cat sat" (11) -> + " down" = 5 inserted characters
    assert (u.ref_chars, u.char_edits) == (11, 5)
    assert u.cer == pytest.approx(5 / 11)
    assert u.alignment[-1] == ("insert", None, "down")


def test_substitution_and_deletion():
    u = one("a b c d", "a x d")
    assert (u.ref_words, u.hyp_words, u.sub, u.dele, u.ins, u.hits) == (4, 3, 1, 1, 0, 2)
    assert u.wer == pytest.approx(0.5)
    # "a b c d" -> "a x d": b->x, delete "c " (2 chars) = 3 char edits over 7
    assert (u.ref_chars, u.char_edits) == (7, 3)
    assert u.alignment == (
        ("equal", "a", "a"), ("substitute", "b", "x"), ("delete", "c", None), ("equal", "d", "d")
    )


def test_whitespace_runs_are_one_separator():
    u = one("  a \t b\n", "a b")
    assert (u.ref_words, u.ref_chars, u.char_edits, u.hits) == (2, 3, 0, 2)


def test_empty_reference():
    u = one("", "x y")
    assert (u.ref_words, u.hyp_words, u.ins, u.dele, u.ref_chars, u.char_edits) == (0, 2, 2, 0, 0, 3)
    assert u.wer == 1.0  # defined: N = 0 with edits -> 1.0
    assert one("", "").wer == 0.0 and one("  ", " ").cer == 0.0


def test_empty_hypothesis():
    u = one("a bb", "")
    assert (u.dele, u.ins, u.sub, u.hits, u.char_edits) == (2, 0, 0, 0, 4)
    assert u.wer == 1.0 and u.cer == 1.0
    assert u.alignment == (("delete", "a", None), ("delete", "bb", None))


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        score_utterances(["a"], [])


# ---------------------------------------------------------------- corpus level


def test_corpus_wer_is_total_edits_over_total_words_not_mean():
    # utt 1: 1 word, 1 substitution (WER 1.0); utt 2: 9 words, all correct (WER 0.0)
    utts = score_utterances(["a", "b c d e f g h i j"], ["z", "b c d e f g h i j"])
    c = corpus_score(utts)
    assert c.wer == pytest.approx(1 / 10)
    assert np.mean([u.wer for u in utts]) == pytest.approx(0.5)  # what we do NOT return
    assert (c.n_utts, c.ref_words, c.sub, c.dele, c.ins, c.hits) == (2, 10, 1, 0, 0, 9)
    # chars: "a"(1) + "b c d e f g h i j"(17) = 18 ref chars, 1 edit
    assert c.cer == pytest.approx(1 / 18)


def test_corpus_with_no_reference_words():
    assert corpus_score(score_utterances(["", ""], ["", ""])).wer == 0.0
    assert corpus_score(score_utterances(["", ""], ["", "x"])).wer == 1.0


# ---------------------------------------------------------------- bootstrap


def synthetic(n, p_err, seed):
    """n utterances of 5..25 words with binomial(p_err) errors each (as count records)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = int(rng.integers(5, 26))
        sub = int(rng.binomial(words, p_err))
        out.append(UttScore(words, words, sub, 0, 0, words - sub, words * 5, sub * 3))
    return out


def test_bootstrap_contains_point_estimate_and_narrows_with_data():
    small, large = synthetic(50, 0.2, 1), synthetic(2000, 0.2, 2)
    lo_s, hi_s = bootstrap_ci(small, n_boot=1000, seed=0)
    lo_l, hi_l = bootstrap_ci(large, n_boot=1000, seed=0)
    assert lo_s <= corpus_score(small).wer <= hi_s
    assert lo_l <= corpus_score(large).wer <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3  # ~sqrt(40) narrower
    lo_c, hi_c = bootstrap_ci(large, metric="cer")
    assert lo_c <= corpus_score(large).cer <= hi_c


def test_bootstrap_is_deterministic():
    utts = synthetic(2000, 0.2, 3)
    first = bootstrap_ci(utts, n_boot=1000, seed=7)
    assert bootstrap_ci(utts, n_boot=1000, seed=7) == first
    assert bootstrap_ci(utts, n_boot=1000, seed=8) != first
    with pytest.raises(ValueError):
        bootstrap_ci(utts, metric="bleu")


# ---------------------------------------------------------------- paired test


def test_paired_test_finds_planted_difference():
    a, b = synthetic(300, 0.10, 4), synthetic(300, 0.20, 4)  # same lengths (same seed)
    r = paired_test(a, b, n_boot=1000, seed=0)
    assert r.delta == pytest.approx(corpus_score(a).wer - corpus_score(b).wer)
    assert r.delta < 0 and r.p_value < 0.05 and r.ci_high < 0
    assert r.n == 300


def test_paired_test_no_difference():
    rng = np.random.default_rng(5)
    a = synthetic(300, 0.15, 6)
    # B: same references, errors redrawn from the same distribution
    b = [UttScore(u.ref_words, u.ref_words, s, 0, 0, u.ref_words - s, u.ref_chars, 3 * s)
         for u in a for s in [int(rng.binomial(u.ref_words, 0.15))]]
    r = paired_test(a, b, n_boot=1000, seed=0)
    assert r.p_value > 0.05
    assert r.ci_low <= 0 <= r.ci_high
    assert paired_test(a, a).p_value == 1.0


def test_paired_test_rejects_mismatched_sets():
    a = synthetic(10, 0.1, 1)
    with pytest.raises(ValueError, match="10 vs 9"):
        paired_test(a, a[:9])
    with pytest.raises(ValueError, match="references differ"):
        paired_test(a, synthetic(10, 0.1, 2))


# ---------------------------------------------------------------- records


def test_score_records_normalises_both_sides_and_reports_tag():
    recs = [
        {"ref": "Hello, World! I can't.", "hyp": "hello world i can not"},
        {"ref": "The colour is 23", "hyp": "the color is twenty-three"},
    ]
    out = score_records(recs, "english", n_boot=200)
    assert out["wer"] == 0.0 and out["cer"] == 0.0 and out["n_utts"] == 2
    assert out["normalizer"] == "english@1.0"
    assert out["wer_ci_low"] == out["wer_ci_high"] == 0.0
    assert score_records(recs, "raw", n_boot=200)["wer"] > 0


def test_score_records_caps_runaway_hypotheses():
    recs = [{"ref": "да", "hyp": " ".join(["да"] * 50)}, {"ref": "нет", "hyp": "нет"}]
    out = score_records(recs, "russian", n_boot=100)
    # capped to max(3*1, 10) = 10 words: 9 insertions over 2 ref words
    assert out["capped_rate"] == 0.5
    assert out["wer"] == pytest.approx(9 / 2)
    assert out["wer_uncapped"] == pytest.approx(49 / 2)
    assert score_records(recs, "russian", cap_factor=None, n_boot=100)["wer"] == pytest.approx(49 / 2)


# ---------------------------------------------------------------- failures


def test_cap_hypothesis():
    assert cap_hypothesis("a " * 100, ref_len=5) == " ".join(["a"] * 15)
    assert cap_hypothesis("a b c", ref_len=0) == "a b c"  # under min_words
    assert cap_hypothesis(" ".join("x" * 12), ref_len=1, min_words=10) == " ".join("x" * 10)


def test_is_loop():
    assert is_loop("да да да да")
    assert not is_loop("да да да")
    assert is_loop("so i think that i think that i think that i think that ok")
    assert not is_loop("the quick brown fox jumps over the lazy dog")
    assert is_loop("ab" * 200)  # no spaces: caught by the compression ratio


def test_failure_metrics_crafted():
    refs = ["привет как дела", "добрый день", "до свидания", "раз два три четыре"]
    hyps = [
        "",                               # empty
        "hello good day",                 # wrong script (Latin for Russian), WER 3/2 > 1
        "до до до до свидания",           # loop
        "раз два три четыре",             # correct
    ]
    m = failure_metrics(refs, hyps, "ru")
    assert m["n_utts"] == 4
    assert m["empty_rate"] == 0.25
    assert m["wrong_script_rate"] == 0.25
    assert m["loop_rate"] == 0.25
    assert m["over100_rate"] == 0.5  # "hello good day" (3 edits / 2) and the loop (3 ins / 2)
    ratios = [0 / 3, 3 / 2, 5 / 2, 4 / 4]
    assert m["len_ratio_mean"] == pytest.approx(np.mean(ratios))
    assert m["len_ratio_p95"] == pytest.approx(np.percentile(ratios, 95))
    assert m["capped_rate"] == 0.0
    long = failure_metrics(["да"], [" ".join(["нет"] * 20)], "ru", max_hyp_ratio=3)
    assert long["capped_rate"] == 1.0 and long["loop_rate"] == 1.0
    assert math.isnan(failure_metrics(["hallo"], ["hallo"], "xx")["wrong_script_rate"])


def test_wrong_script_rate_of_a_mixed_set_checks_each_utterance_against_its_own_language():
    refs = ["привет мир", "hello world", "добрый день", "good day"]
    hyps = ["привет мир", "привет мир", "good day", "good day"]  # 2nd and 3rd in the other script
    m = failure_metrics(refs, hyps, "mixed", languages=["ru", "en", "ru", "en"])
    assert m["wrong_script_rate"] == 0.5
    assert math.isnan(failure_metrics(refs, hyps, "mixed")["wrong_script_rate"])  # no languages: unknown
    with pytest.raises(ValueError, match="languages"):
        failure_metrics(refs, hyps, "mixed", languages=["ru"])


# ---------------------------------------------------------------- text ability


def test_text_ability():
    recs = [
        {"answer": "Paris.", "prediction": "paris"},
        {"answer": "Four", "prediction": "five"},
    ]
    out = text_ability(recs)
    assert out["n"] == 2 and out["exact_match"] == 0.5
    assert 0 < out["chrf"] < 100
    perfect = text_ability([{"answer": "Paris", "prediction": "Paris"}])
    assert perfect["chrf"] == pytest.approx(100.0) and perfect["exact_match"] == 1.0


# ---------------------------------------------------------------- properties


words = st.lists(st.sampled_from(["a", "b", "c", "да", "нет", "й"]), max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(refs=st.lists(st.text(max_size=40) | words, min_size=1, max_size=5), data=st.data())
def test_scoring_never_crashes_and_counts_add_up(refs, data):
    hyps = data.draw(st.lists(st.text(max_size=40) | words, min_size=len(refs), max_size=len(refs)))
    utts = score_utterances(refs, hyps)
    for u in utts:
        assert u.wer >= 0 and u.cer >= 0
        assert u.sub + u.dele + u.hits == u.ref_words
        assert u.sub + u.ins + u.hits == u.hyp_words
        assert len(u.alignment) == u.sub + u.dele + u.ins + u.hits
    c = corpus_score(utts)
    assert c.wer >= 0 and c.cer >= 0
    lo, hi = bootstrap_ci(utts, n_boot=50)
    assert 0 <= lo <= hi
