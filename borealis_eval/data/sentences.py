"""Sentence material for the synthetic ru/en corpus, split so that test sets measure generalisation.

Each language's material (``sentences_en``, ``sentences_ru``) is split per seed into
- train / held-out vocabulary: ~25% of every slot vocabulary (names, cities, objects, verbs,
  ...) never occurs in a training-audio sentence;
- train / held-out templates: ~25% of sentence shapes never occur in training audio.
Training and dev audio use only train material; test sets and webinars are built from held-out
words and/or held-out templates; the text-only pool contains everything, so a model trained
with a text fraction can learn the held-out words from text alone.
The generator asserts its guarantees (``check_splits``); tests assert them again.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from types import ModuleType

from . import sentences_en, sentences_ru

LANGUAGES: dict[str, ModuleType] = {"en": sentences_en, "ru": sentences_ru}
HELDOUT_FRACTION = 0.25
_TOKEN = re.compile(r"[\w']+")


def tokens(text: str) -> set[str]:
    """Lower-cased word tokens with ё folded to е (so 'Пётр' and 'Петр' count as one word)."""
    return set(_TOKEN.findall(text.lower().replace("ё", "е")))


def normalise(text: str) -> str:
    """Key used to decide whether two sentences are 'the same' across splits."""
    return " ".join(_TOKEN.findall(text.lower().replace("ё", "е")))


def _entry_tokens(entry: dict) -> set[str]:
    return set().union(*(tokens(v) for k, v in entry.items() if k != "g"))


@dataclass(frozen=True)
class Sentence:
    text: str
    language: str
    template: str
    heldout_template: bool
    heldout_words: tuple[str, ...]
    slots: dict = field(compare=False, hash=False, repr=False)


@dataclass
class Material:
    """One language's vocabulary and templates, split into train and held-out parts."""

    language: str
    train_vocab: dict[str, list[dict]]
    heldout_vocab: dict[str, list[dict]]
    train_templates: list[tuple]
    heldout_templates: list[tuple]
    heldout_tokens: set[str]

    @property
    def all_vocab(self) -> dict[str, list[dict]]:
        return {k: self.train_vocab[k] + self.heldout_vocab[k] for k in self.train_vocab}

    @property
    def all_templates(self) -> list[tuple]:
        return self.train_templates + self.heldout_templates

    def heldout_words(self, text: str) -> tuple[str, ...]:
        return tuple(sorted(tokens(text) & self.heldout_tokens))

    def sample(self, rng: random.Random, templates: list[tuple], words: str,
               force_key: str | None = None, force_entry: dict | None = None) -> Sentence:
        """Render one sentence.

        ``words``: "train" (train vocabulary only), "all" (any word), or "heldout" (any word,
        with at least one slot filled from the held-out vocabulary; needs a slotted template).
        ``force_key``/``force_entry`` put a given entry into a slot of that vocabulary key.
        """
        heldout_ids = {t[0] for t in self.heldout_templates}
        if force_key is not None or words == "heldout":
            templates = [t for t in templates if t[1] and (force_key is None or force_key in t[1].values())]
        tid, slots, render = rng.choice(templates)
        pool = self.train_vocab if words == "train" else self.all_vocab
        names = list(slots)
        forced = None
        if force_key is not None:
            forced = rng.choice([n for n in names if slots[n] == force_key])
        elif words == "heldout":
            forced = rng.choice(names)
        filled: dict[str, dict] = {}
        for name in names:
            key = slots[name]
            if name == forced:
                choices = [force_entry] if force_entry is not None else self.heldout_vocab[key]
            else:
                choices = pool[key]
            taken = [id(v) for k, v in filled.items() if slots[k] == key]
            entry = rng.choice([c for c in choices if id(c) not in taken] or choices)
            filled[name] = entry
        text = render(filled, rng)
        text = text[0].upper() + text[1:]
        return Sentence(text, self.language, tid, tid in heldout_ids, self.heldout_words(text), filled)


def _split(items: list, rng: random.Random) -> tuple[list, list]:
    order = list(range(len(items)))
    rng.shuffle(order)
    n_held = max(1, round(len(items) * HELDOUT_FRACTION))
    held = sorted(order[:n_held])
    return [items[i] for i in sorted(order[n_held:])], [items[i] for i in held]


def build_material(language: str, seed: int) -> Material:
    """Split one language's vocabulary and templates for ``seed`` (deterministic)."""
    mod = LANGUAGES[language]
    rng = random.Random(f"borealis-material-{language}-{seed}")
    train_vocab, heldout_vocab = {}, {}
    for key in sorted(mod.VOCAB):
        train_vocab[key], heldout_vocab[key] = _split(mod.VOCAB[key], rng)
    train_t, held_t = _split(mod.TEMPLATES, rng)
    # Held-out words are the tokens of held-out entries that train material can never produce:
    # tokens shared with train entries or with template text (probed by rendering every
    # template many times with train words) are not held-out words.
    heldout = set().union(*(_entry_tokens(e) for es in heldout_vocab.values() for e in es))
    train = set().union(*(_entry_tokens(e) for es in train_vocab.values() for e in es))
    probe = Material(language, train_vocab, heldout_vocab, train_t, held_t, set())
    probe_rng = random.Random(0)
    for t in mod.TEMPLATES:
        for _ in range(300):
            train |= tokens(probe.sample(probe_rng, [t], "train").text)
    return Material(language, train_vocab, heldout_vocab, train_t, held_t, heldout - train)


@dataclass
class TextPair:
    id: str
    language: str
    instruction: str
    answer: str
    kind: str


class SentenceBank:
    """Draws sentences that are new across every split of one corpus (normalised text)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.material = {lang: build_material(lang, seed) for lang in LANGUAGES}
        self.used: dict[str, str] = {}  # normalised text -> split that owns it

    def draw(self, split: str, rng: random.Random, language: str, kind: str, **kw) -> Sentence:
        """kind: 'train' (in-distribution), 'test' (held-out template and/or words), 'any'."""
        m = self.material[language]
        for _ in range(1000):
            if kind == "train":
                s = m.sample(rng, m.train_templates, "train")
            elif kind == "test":  # three strata of rising difficulty, a third each
                r = rng.random()
                if r < 1 / 3:  # held-out shape; most also carry a held-out word
                    s = m.sample(rng, m.heldout_templates, "heldout" if rng.random() < 0.7 else "all")
                elif r < 2 / 3:  # known shape, unseen word
                    s = m.sample(rng, m.train_templates, "heldout")
                else:  # a new sentence of known shape and words: only the (held-out) voice is new
                    s = m.sample(rng, m.train_templates, "train")
            elif kind == "any":
                words = "heldout" if rng.random() < 0.5 else "all"
                s = m.sample(rng, kw.get("templates") or m.all_templates, words,
                             kw.get("force_key"), kw.get("force_entry"))
            else:
                raise ValueError(f"unknown sentence kind {kind!r}")
            key = normalise(s.text)
            if key not in self.used:
                self.used[key] = split
                return s
        raise RuntimeError(f"could not draw a new {kind} sentence for {split}/{language}: material exhausted")

    def draw_many(self, split: str, rng: random.Random, language: str, kind: str, n: int) -> list[Sentence]:
        return [self.draw(split, rng, language, kind) for _ in range(n)]

    # ---- text-only pool -------------------------------------------------------------------

    def text_pair(self, split: str, rng: random.Random, language: str, kind: str,
                  force_key: str | None = None, force_entry: dict | None = None) -> TextPair:
        mod, m = LANGUAGES[language], self.material[language]
        prompts = mod.PROMPTS
        if kind == "number":
            n = rng.choice([rng.randint(0, 99), rng.randint(100, 999), rng.randint(1000, 99999)])
            return TextPair("", language, prompts["number"].format(n=n), mod.words(n), kind)
        if kind == "where":  # the travel sentence itself is the context of the question
            tmpl = [t for t in m.all_templates if t[0].endswith("_travel")]
            s = self.draw(split, rng, language, "any", templates=tmpl, force_key=force_key,
                          force_entry=force_entry)
            verb, answer = mod.where_question(s.slots)
            name = s.slots["a"]["w"] if language == "en" else s.slots["a"]["nom"]
            return TextPair("", language, prompts["where"].format(fact=s.text, name=name, go=verb), answer, kind)
        if kind == "city":
            tmpl = [t for t in m.all_templates if "city" in t[1].values()]
            s = self.draw(split, rng, language, "any", templates=tmpl, force_key=force_key,
                          force_entry=force_entry)
            slot_keys = next(t[1] for t in tmpl if t[0] == s.template)
            city = next(v for k, v in s.slots.items() if slot_keys[k] == "city")
            return TextPair("", language, prompts["city"].format(s=s.text), mod.city_answer(city), kind)
        s = self.draw(split, rng, language, "any", force_key=force_key, force_entry=force_entry)
        if kind == "repeat":
            return TextPair("", language, prompts["repeat"].format(s=s.text), s.text, kind)
        if kind == "count":
            n = len(_TOKEN.findall(s.text))
            return TextPair("", language, prompts["count"].format(s=s.text), mod.words(n), kind)
        raise ValueError(f"unknown text pair kind {kind!r}")

    def text_pool(self, split: str, rng: random.Random, n: int, cover_heldout: bool,
                  seen: set[str] | None = None) -> list[TextPair]:
        """``n`` distinct instruction/answer pairs alternating languages.

        With ``cover_heldout`` every held-out vocabulary entry and template appears at least once
        (these coverage pairs come first, so the pool may exceed ``n`` when ``n`` is tiny).
        """
        seen = set() if seen is None else seen
        pairs: list[TextPair] = []

        def add(p: TextPair) -> bool:
            if p.instruction in seen:
                return False
            seen.add(p.instruction)
            p.id = f"{split}-{p.language}-{len(pairs):05d}"
            pairs.append(p)
            return True

        if cover_heldout:
            for lang in sorted(self.material):
                m = self.material[lang]
                for key in sorted(m.heldout_vocab):
                    for entry in m.heldout_vocab[key]:
                        add(self.text_pair(split, rng, lang, "repeat", key, entry))
                for t in m.heldout_templates:
                    s = self.draw(split, rng, lang, "any", templates=[t])
                    add(TextPair("", lang, LANGUAGES[lang].PROMPTS["repeat"].format(s=s.text), s.text, "repeat"))
        kinds = ["repeat", "repeat", "number", "where", "count", "city"]
        langs = sorted(self.material)
        i = 0
        while len(pairs) < n:
            lang = langs[i % len(langs)]
            i += 1
            add(self.text_pair(split, rng, lang, rng.choice(kinds)))
        return pairs


def check_splits(speech: dict[str, list[Sentence]], bank: SentenceBank,
                 text_pools: dict[str, list[TextPair]] | None = None) -> None:
    """Assert the corpus guarantees; raises AssertionError naming the offending sentence."""
    owner: dict[str, str] = {}
    for split, rows in speech.items():
        for s in rows:
            key = normalise(s.text)
            assert owner.get(key, split) == split, f"sentence in {owner[key]} and {split}: {s.text!r}"
            assert key not in owner or split == "webinar", f"duplicate sentence in {split}: {s.text!r}"
            owner[key] = split
            m = bank.material[s.language]
            if split in ("train", "dev"):
                assert not (tokens(s.text) & m.heldout_tokens), f"held-out word in {split}: {s.text!r}"
                assert not s.heldout_template, f"held-out template in {split}: {s.text!r}"
    if text_pools:
        instr: dict[str, str] = {}
        for split, pairs in text_pools.items():
            for p in pairs:
                assert p.instruction not in instr, f"text pair in {instr[p.instruction]} and {split}: {p.instruction!r}"
                instr[p.instruction] = split
        pool_text = " ".join(normalise(p.instruction) for ps in text_pools.values() for p in ps)
        for key, split in owner.items():
            assert f" {key} " not in f" {pool_text} ", f"{split} sentence leaked into the text pool: {key!r}"
