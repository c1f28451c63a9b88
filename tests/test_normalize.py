"""Normaliser behaviour: hand-checked cases per language plus property tests on random text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borealis_eval.evaluate.normalize import (
    NORMALIZERS,
    get_normalizer,
    normalizer_for_language,
)

english = get_normalizer("english")
russian = get_normalizer("russian")
basic = get_normalizer("basic")
raw = get_normalizer("raw")


def test_registry_tags_and_lookup():
    assert [n.name for n in NORMALIZERS] == ["raw", "basic", "english", "russian", "auto", "whisper_en",
                                             "whisper_basic"]
    assert english.tag == "english@1.0" and english.version == "1.0"
    assert get_normalizer("russian@1.0") is russian
    assert normalizer_for_language("en") is english
    assert normalizer_for_language("ru") is russian
    assert normalizer_for_language("de") is basic
    with pytest.raises(KeyError, match="unknown normalizer"):
        get_normalizer("klingon")
    with pytest.raises(KeyError, match="installed is english@1.0"):
        get_normalizer("english@0.1")


def test_raw_only_collapses_whitespace():
    assert raw("  Hello,\t World!\n") == "Hello, World!"


def test_basic_is_multilingual_and_keeps_letters():
    assert basic("Héllo, Wörld! (aside) [noise] Йогурт…") == "héllo wörld йогурт"
    assert basic("ﬁne — 50%") == "fine 50"  # NFKC ligature, symbols and dashes to spaces
    assert basic("Straße") == "strasse"  # casefold


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I won't go, can't you see?", "i will not go can not you see"),
        ("We're here; they've left and you'll stay. I'd say I'm fine, isn't it?",
         "we are here they have left and you will stay i would say i am fine is not it"),
        ("It’s John's", "its johns"),
        ("The colour of my favourite centre", "the color of my favorite center"),
        ("We realised we organise travelling", "we realized we organize traveling"),
        ("23", "twenty three"),
        ("twenty-three", "twenty three"),
        ("the 3rd and the 21st", "the third and the twenty first"),
        ("5% off", "five percent off"),
        ("$5", "five dollars"),
        ("$1.50", "one dollar fifty cents"),
        ("3.14", "three point one four"),
        ("1,000,000 people", "one million people"),
        ("in 1999", "in nineteen ninety nine"),
        ("one hundred and twenty three", "one hundred twenty three"),
        ("Uh, um, hmm... [music] (laughs) OK", "ok"),
        ("Café naïve", "cafe naive"),
        ("rock & roll", "rock and roll"),
    ],
)
def test_english_cases(text, expected):
    assert english(text) == expected


def test_english_digits_and_words_compare_equal():
    assert english("I have 23 cats") == english("I have twenty-three cats")
    assert english("123") == english("one hundred and twenty-three")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Ёлка", "елка"),
        ("Йогурт", "йогурт"),
        ("кто-то пришёл", "кто то пришел"),
        ("23", "двадцать три"),
        ("В 2026 году!", "в две тысячи двадцать шесть году"),
        ("3,5 литра", "три целых пять десятых литра"),
        ("Привет, мир... «Да» — нет?", "привет мир да нет"),
        ("5% и 21% и 12%", "пять процентов и двадцать один процент и двенадцать процентов"),
        ("[музыка] слово", "слово"),
    ],
)
def test_russian_cases(text, expected):
    assert russian(text) == expected


def test_russian_yo_and_ye_equal_and_short_i_kept():
    assert russian("Всё ещё") == russian("все еще")
    assert "й" in russian("йогурт мой")


text_strategy = st.text(
    alphabet=st.characters(codec="utf-8"), max_size=80
) | st.from_regex(r"[0-9a-zа-яё$%,.\-' ]{0,40}", fullmatch=True)


@pytest.mark.parametrize("norm", NORMALIZERS, ids=lambda n: n.tag)
@settings(max_examples=150, deadline=None)
@given(text=text_strategy)
def test_normalizers_never_crash_and_are_stable(norm, text):
    out = norm(text)
    assert isinstance(out, str)
    assert out == out.strip() and "  " not in out
    if not norm.name.startswith("whisper_"):  # Whisper's are wrapped as they are, not ours to change
        assert norm(out) == out  # idempotent: normalising twice changes nothing


def test_auto_normaliser_picks_the_language_by_script():
    from borealis_eval.evaluate.normalize import get_normalizer, normalizer_for_language

    auto = normalizer_for_language("mixed")
    assert auto.tag == "auto@1.0" and get_normalizer("auto@1.0") is auto
    assert auto("Ёлка, 23 дня!") == get_normalizer("russian")("Ёлка, 23 дня!") == "елка двадцать три дня"
    assert auto("It's 23 colours.") == get_normalizer("english")("It's 23 colours.")


# Whisper's own normalisers: pinned outputs, so a transformers release that changes them shows up
# here (and the tag's version must then be bumped) instead of silently moving published-style numbers.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("I'm gonna colour it grey, hmm.", "i am going to color it gray"),
        ("Mr. Smith paid $20 million in the 1960s.", "mister smith paid $20000000 in the 1960s"),
        ("Dial one oh one. [beep] (note: x)", "dial 101"),
        ("It's twenty-five percent", "it is 25%"),
    ],
)
def test_whisper_english_cases(text, expected):
    assert get_normalizer("whisper_en@1.0")(text) == expected


def test_whisper_basic_keeps_letters_and_drops_annotations():
    basic_w = get_normalizer("whisper_basic@1.0")
    assert basic_w("Привет, Мир! Ёлка (шум) [music]") == "привет мир ёлка"
    assert basic_w("Café — naïve") == "café naïve"


def test_whisper_protocols_differ_from_ours_on_numbers():
    assert get_normalizer("whisper_en")("25 percent") == "25%"
    assert english("25 percent") == "twenty five percent"


def test_whisper_normalizer_per_language():
    from borealis_eval.evaluate.normalize import whisper_normalizer_for_language

    assert whisper_normalizer_for_language("en-US").tag == "whisper_en@1.0"
    assert whisper_normalizer_for_language("ru").tag == "whisper_basic@1.0"


def test_whisper_english_fails_clearly_without_the_spelling_map(monkeypatch, tmp_path):
    from borealis_eval.evaluate import normalize

    monkeypatch.setattr(normalize, "_SPELLING_FILES", (("no_such_package_xyz", "english.json"),))
    with pytest.raises(RuntimeError, match="pip install --no-deps whisper-normalizer"):
        normalize.WhisperEnglishNormalizer()("hello")
    (tmp_path / "fakemap").mkdir()
    (tmp_path / "fakemap" / "__init__.py").write_text("")
    (tmp_path / "fakemap" / "english.json").write_text('{"colour": "color"}')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(normalize, "_SPELLING_FILES", (("fakemap", "english.json"),))
    with pytest.raises(RuntimeError, match="is not OpenAI's spelling map"):
        normalize.WhisperEnglishNormalizer()("hello")
