"""The training mixer: exact counts up to rounding, determinism, no early repeats, clear errors."""

from __future__ import annotations

from collections import Counter

import pytest

from borealis_eval.data.mixer import Mix, MixError, largest_remainder, mix
from borealis_eval.data.sources import AudioItem, TextItem


def audio(lang: str, n: int) -> list[AudioItem]:
    return [AudioItem(id=f"{lang}-{i}", text=f"{lang} sentence {i}", language=lang, duration=1.0) for i in range(n)]


def texts(n: int) -> list[TextItem]:
    return [TextItem(id=f"t-{i}", language="ru" if i % 2 else "en", instruction=f"q{i}", answer=f"a{i}")
            for i in range(n)]


POOL = audio("ru", 300) + audio("en", 200)
TEXT = texts(50)


def counts(m: Mix) -> Counter:
    return Counter("text" if isinstance(e, TextItem) else e.language for e in m.examples)


def test_borealis_example_is_exact():
    m = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.15, 1000, seed=0)
    assert counts(m) == {"text": 150, "ru": 425, "en": 425}
    assert len(m.examples) == 1000


@pytest.mark.parametrize("language_mix,fraction,n,expected", [
    ({"ru": 0.5, "en": 0.5}, 0.0, 1000, {"ru": 500, "en": 500}),
    ({"ru": 0.5, "en": 0.5}, 0.10, 1000, {"text": 100, "ru": 450, "en": 450}),
    ({"ru": 0.5, "en": 0.5}, 0.25, 1000, {"text": 250, "ru": 375, "en": 375}),
    ({"ru": 0.7, "en": 0.3}, 0.10, 1000, {"text": 100, "ru": 630, "en": 270}),
    ({"ru": 0.5, "en": 0.5}, 0.15, 7, {"text": 1, "ru": 3, "en": 3}),
    ({"ru": 0.5, "en": 0.5}, 0.0, 7, {"en": 4, "ru": 3}),       # tie: the extra one goes by code order
    ({"ru": 1 / 3, "en": 2 / 3}, 0.0, 10, {"ru": 3, "en": 7}),  # 3.33 / 6.67 -> largest remainder
    ({"ru": 0.5, "en": 0.5}, 0.10, 3, {"en": 2, "ru": 1}),       # 0.3 text rounds to 0
    ({"ru": 1.0}, 0.10, 4000, {"text": 400, "ru": 3600}),
    ({"en": 1.0}, 0.25, 4000, {"text": 1000, "en": 3000}),
    ({"ru": 0.5, "en": 0.5}, 0.15, 0, {}),
])
def test_counts_are_exact_up_to_rounding(language_mix, fraction, n, expected):
    m = mix(POOL, TEXT, language_mix, fraction, n, seed=1)
    got = counts(m)
    assert got == expected
    assert sum(got.values()) == n
    # bounds that hold for any mix: text within 0.5 of the target, each language within 1 of its share
    assert abs(got["text"] - fraction * n) <= 0.5
    for lang, w in language_mix.items():
        assert abs(got[lang] - w * (n - got["text"])) < 1


@pytest.mark.parametrize("n", [1, 2, 9, 101, 997])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.15, 0.25, 0.5])
def test_totals_and_bounds_over_many_sizes(n, fraction):
    language_mix = {"ru": 0.6, "en": 0.4}
    got = counts(mix(POOL, TEXT, language_mix, fraction, n, seed=0))
    assert sum(got.values()) == n
    assert abs(got["text"] - fraction * n) <= 0.5
    for lang, w in language_mix.items():
        assert abs(got[lang] - w * (n - got["text"])) < 1


def test_single_language_mix_uses_only_that_language():
    m = mix(POOL, [], {"en": 1.0}, 0.0, 150, seed=0)
    assert {e.language for e in m.examples} == {"en"}
    assert all(isinstance(e, AudioItem) for e in m.examples)
    assert m.stats["count_en"] == 150 and m.stats["count_ru"] == 0


def test_zero_weight_language_is_not_required():
    m = mix(audio("ru", 10), [], {"ru": 1.0, "en": 0.0}, 0.0, 20, seed=0)
    assert counts(m) == {"ru": 20}


def test_deterministic_for_a_seed_and_different_across_seeds():
    ids = lambda m: [e.id for e in m.examples]  # noqa: E731
    a = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.15, 400, seed=7)
    b = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.15, 400, seed=7)
    c = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.15, 400, seed=8)
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    assert counts(a) == counts(c)  # the seed changes which and where, never how many


def test_stream_is_shuffled_not_grouped():
    m = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.15, 400, seed=0)
    kinds = ["text" if isinstance(e, TextItem) else e.language for e in m.examples]
    first_half = Counter(kinds[:200])
    assert all(first_half[k] > 0 for k in ("ru", "en", "text"))


def test_no_repeats_before_pool_is_exhausted():
    ru, en, tx = audio("ru", 30), audio("en", 20), texts(7)
    m = mix(ru + en, tx, {"ru": 0.5, "en": 0.5}, 0.2, 100, seed=3)
    by_kind: dict[str, list[str]] = {"ru": [], "en": [], "text": []}
    for e in m.examples:
        by_kind["text" if isinstance(e, TextItem) else e.language].append(e.id)
    assert len(by_kind["ru"]) == 40 and len(by_kind["en"]) == 40 and len(by_kind["text"]) == 20
    pools = {"ru": 30, "en": 20, "text": 7}
    for kind, drawn in by_kind.items():
        c = Counter(drawn)
        size = pools[kind]
        # every item is used floor(k/size) or ceil(k/size) times: nothing repeats while others are unused
        assert max(c.values()) - min(c.values()) <= 1, kind
        assert len(c) == min(size, len(drawn)), kind


def test_fewer_than_pool_means_all_distinct():
    m = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.1, 300, seed=0)
    ids = [e.id for e in m.examples]
    assert len(ids) == len(set(ids))


def test_language_without_audio_is_named():
    with pytest.raises(MixError, match="'en'"):
        mix(audio("ru", 10), [], {"ru": 0.5, "en": 0.5}, 0.0, 10, seed=0)
    with pytest.raises(MixError, match="'de'"):
        mix(POOL, [], {"de": 1.0}, 0.0, 10, seed=0)


def test_text_fraction_with_empty_pool():
    with pytest.raises(MixError, match="text"):
        mix(POOL, [], {"ru": 0.5, "en": 0.5}, 0.15, 100, seed=0)
    # a fraction that rounds to zero text examples needs no pool
    assert counts(mix(POOL, [], {"ru": 0.5, "en": 0.5}, 0.001, 100, seed=0))["text"] == 0


@pytest.mark.parametrize("fraction,n", [(-0.1, 100), (1.5, 100), (float("nan"), 100), (0.1, -5)])
def test_bad_arguments_raise_mix_error(fraction, n):
    with pytest.raises(MixError):
        mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, fraction, n, seed=0)


def test_mix_with_no_positive_weight():
    with pytest.raises(MixError):
        mix(POOL, TEXT, {"ru": 0.0, "en": 0.0}, 0.1, 100, seed=0)


def test_stats_keys_and_values():
    m = mix(POOL, TEXT, {"ru": 0.5, "en": 0.5}, 0.15, 1000, seed=0)
    assert m.stats == {"count_en": 425.0, "count_ru": 425.0, "count_text": 150.0, "count_total": 1000.0,
                       "text_fraction_realised": pytest.approx(0.15)}


def test_stats_list_every_language_even_when_unused():
    s = mix(POOL, TEXT, {"ru": 1.0}, 0.1, 10, seed=0).stats
    assert set(s) == {"count_ru", "count_en", "count_text", "count_total", "text_fraction_realised"}
    assert s["count_en"] == 0 and s["count_ru"] == 9 and s["count_text"] == 1
    assert s["text_fraction_realised"] == pytest.approx(0.1)


def test_stats_of_empty_mix():
    s = Mix([]).stats
    assert s["count_total"] == 0 and s["text_fraction_realised"] == 0 and s["count_ru"] == 0


@pytest.mark.parametrize("total,weights,expected", [
    (10, {"ru": 0.5, "en": 0.5}, {"ru": 5, "en": 5}),
    (11, {"ru": 0.5, "en": 0.5}, {"en": 6, "ru": 5}),  # tie broken by code, deterministically
    (10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, {"a": 4, "b": 3, "c": 3}),
    (100, {"a": 0.615, "b": 0.385}, {"a": 62, "b": 38}),
    (0, {"ru": 1.0}, {"ru": 0}),
    (7, {"ru": 1.0}, {"ru": 7}),
    (10, {"ru": 2.0, "en": 3.0}, {"ru": 4, "en": 6}),  # weights are normalised
])
def test_largest_remainder(total, weights, expected):
    got = largest_remainder(total, weights)
    assert got == expected and sum(got.values()) == total


@pytest.mark.parametrize("total", [1, 13, 99, 1000, 12345])
def test_largest_remainder_sums_and_bounds(total):
    weights = {"a": 0.13, "b": 0.29, "c": 0.58}
    got = largest_remainder(total, weights)
    assert sum(got.values()) == total
    assert all(abs(got[k] - total * w) < 1 for k, w in weights.items())
