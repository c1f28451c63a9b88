"""An open-vocabulary speech corpus: real sentences from Debian's fortune files, spoken by the corpus's voices.

The templated corpus (synth.py) has 234 words per language; a model trained on it learns the
templates, not to listen. Here every transcript is a sentence someone wrote: Debian's `fortunes`
(English) and `fortunes-ru` (Russian), fetched with `apt-get download`, checked against apt's
SHA256 and unpacked with `dpkg-deb -x` exactly as the real speech is (real.py).

Sentences: each fortune's text (attribution lines `-- Name` dropped) is cut at sentence ends;
a sentence is kept when it has 5-16 words, at most MAX_CHARS characters (so that a clip fits the
6-s limit), only letters of its language and plain punctuation (no digits, no markup, no
Latin in Russian), and is not crude. The crude filter (documented in README.md) has two parts:
  * whole files left out (CRUDE_FILES): the topics whose entries are mostly sex, drinking,
    ethnic or political jokes;
  * a word-stem list (CRUDE_STEMS): any sentence with a word starting with one of them goes.
Both lists are deliberately broad: losing a clean sentence costs nothing here.

Splits (by a hash of the normalised sentence, so the same sentence never lands in two splits):
  test (TEST_SHARE), dev, text-only pool (text_train: "Repeat the sentence: ..." pairs from
  sentences never spoken in training), train. Test clips are spoken only by held-out voices
  (voices.py: Piper for English, Festival's Russian voice at an unheard warp; `*_espeak` sets:
  espeak's held-out variants); train/dev by the training voices, half natural, half espeak.
corpus.json reports the sentence counts, the train/test sentence overlap (asserted 0) and the
test vocabulary's out-of-training rate (word tokens, and word types, unseen in train transcripts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import random
import re
import time
from pathlib import Path

from borealis_eval.atomic import building_folder

from .manifest import write_manifest
from .sentences import normalise
from .voices import voices

log = logging.getLogger(__name__)

VERSION = "fortunes-4"
PACKAGES = {"en": "fortunes", "ru": "fortunes-ru"}
FORTUNE_DIRS = {"en": "usr/share/games/fortunes", "ru": "usr/share/games/fortunes/ru"}
MIN_WORDS, MAX_WORDS, MAX_CHARS = 5, 16, 110
DEFAULT_SIZES = {         # 2,392 clips, 2.5 h of audio (2.06 h training)
    "train": 1000,        # clips per language
    "dev": 64,            # per language
    "test_en": 100,
    "test_ru": 100,
    "test_en_espeak": 32,
    "test_ru_espeak": 32,
    "text_train": 1600,   # text-only pairs, both languages together
}
TEST_SHARE, DEV_SHARE, TEXT_SHARE = 0.10, 0.05, 0.20  # of each language's sentences, by hash

# Files left out whole: mostly sex, drinking, ethnic and political jokes, or not prose.
CRUDE_FILES = {
    "en": {"men-women", "drugs", "ethnic", "politics", "love", "art", "ascii-art", "translate-me", "zippy",
           "perl", "linuxcookie", "debian", "kids"},
    "ru": {"sex", "flirt", "lovers", "man_and_woman", "drink", "armenian", "polit", "religion", "M$", "eshe",
           "fidelity", "treason", "love_s", "ill", "russia_today"},
}
# Word stems: a sentence with any word starting with one of these is dropped.
CRUDE_STEMS = {
    "en": ("sex", "fuck", "shit", "damn", "bitch", "bastard", "ass", "arse", "piss", "whore", "slut", "penis",
           "vagin", "breast", "boob", "nude", "naked", "orgasm", "erotic", "porn", "prostitut", "rape", "nigg",
           "queer", "homosex", "lesbian", "virgin", "condom", "drunk", "booze", "cocaine", "marijuana", "hell",
           "crap", "dick", "cock", "pussy", "tit", "genital", "masturb", "suicid", "kill", "murder", "jew",
           "negro", "fag", "retard", "bloody", "god", "jesus", "christ", "bible", "church", "religio"),
    "ru": ("секс", "хуй", "хуя", "хуе", "хуё", "пизд", "бляд", "блят", "бля", "ебат", "ебал", "ебу", "еба", "ёб",
           "жоп", "сук", "говн", "дерьм", "срат", "ссат", "член", "порн", "проститут", "шлюх", "мудак", "мудил",
           "задниц", "презерват", "голая", "голый", "голые", "оргазм", "эрот", "постел", "любовниц", "любовник",
           "девственн", "гей", "педик", "пидор", "водк", "пьян", "самогон", "бухат", "наркот", "убий", "убит",
           "самоубий", "евре", "жид", "негр", "чукч", "бог", "бож", "христ", "церк", "грудь", "груди", "сиськ",
           "попа", "попк", "трах", "кончи", "изнасил", "импотен", "минет", "вагин", "пенис"),
}
LETTERS = {"en": "A-Za-z", "ru": "А-Яа-яЁё"}
PUNCT = r" ,.!?;:'\"«»()\-—–…"
_SENT_END = re.compile(r"(?<=[.!?…])\s+")


def parse_fortunes(text: str) -> list[str]:
    """The records of one fortune file (separated by `%` lines), attribution lines dropped,
    each record's lines joined by single spaces."""
    records, lines = [], []
    for line in text.splitlines() + ["%"]:
        if line.strip() == "%":
            if lines:
                records.append(" ".join(lines))
            lines = []
        elif not re.match(r"^\s*(--|—|–)", line) and line.strip():
            lines.append(line.strip())
    return records


def crude(sentence: str, language: str) -> bool:
    words = re.findall(rf"[{LETTERS[language]}]+", sentence.lower())
    return any(w.startswith(CRUDE_STEMS[language]) for w in words)


def _speakable(s: str) -> str | None:
    """The sentence in the punctuation every engine reads (Festival's Russian voice writes no audio for
    «», long dashes or dots inside a sentence), or None where that cannot be done safely."""
    s = re.sub(r"[«»“”„]", '"', s)
    s = re.sub(r"\s*[—–]\s*", " - ", s)
    s = re.sub(r"(\.\.\.|…)$", ".", s)
    s = re.sub(r"\s+", " ", s).strip()
    # every token a word (hyphenated and, in English, with an apostrophe) with its punctuation, or a dash:
    # no ellipsis, no detached or glued dots (Festival's Russian letter-to-sound rules fail on those)
    word = r"[^\W\d_]+(?:[-'][^\W\d_]+)*"
    token = re.compile(rf'^"?{word}[,.!?;:]?"?[,.!?;:]?$|^-$')
    if not all(token.match(t) for t in s.split(" ")):
        return None
    return s


def clean_sentences(record: str, language: str, stats: dict | None = None) -> list[str]:
    """The record's sentences that pass every filter (see the module docstring); ``stats`` counts
    the well-formed sentences the crude-word filter dropped."""
    # after _speakable: plain punctuation only (Russian: no brackets or apostrophes, which Festival cannot read)
    punct = PUNCT if language == "en" else r" ,.!?;:\"\-"
    allowed = re.compile(rf"^[{LETTERS[language]}{punct}]+$")
    out = []
    for s in _SENT_END.split(re.sub(r"\s+", " ", record).strip()):
        s = _speakable(s.strip(" -—–\"'«»"))
        if s is None:
            continue
        n = len(s.split())
        if not (MIN_WORDS <= n <= MAX_WORDS) or len(s) > MAX_CHARS or not allowed.match(s):
            continue
        shouted = any(len(w) > 1 and w.isupper() for w in re.findall(rf"[{LETTERS[language]}]+", s))
        if not re.match(rf"^[{LETTERS[language]}]", s) or shouted or s[-1] not in ".!?…":
            continue  # a heading or acronym in capitals, or a fragment (a cut inside an abbreviation, a title)
        if crude(s, language):
            if stats is not None:
                stats["sentences_crude"] += 1
            continue
        out.append(s)
    return out


def read_sentences(root: Path, language: str) -> tuple[list[str], dict]:
    """Every usable sentence of one language's fortune files under ``root`` (sorted, deduplicated
    by normalised text) and what the filter removed."""
    folder = root / FORTUNE_DIRS[language]
    seen, kept, stats = set(), [], {"files": 0, "files_left_out": [], "sentences_crude": 0}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix in (".dat", ".u8") or path.is_symlink():
            continue
        if path.name in CRUDE_FILES[language]:
            stats["files_left_out"].append(path.name)
            continue
        stats["files"] += 1
        for record in parse_fortunes(path.read_text(encoding="utf-8", errors="replace")):
            for s in clean_sentences(record, language, stats):
                key = normalise(s)
                if key not in seen:
                    seen.add(key)
                    kept.append(s)
    return sorted(kept), stats


def split_of(sentence: str) -> str:
    """train / dev / test / text, by a hash of the normalised sentence (stable across builds)."""
    h = int(hashlib.sha256(normalise(sentence).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < TEST_SHARE:
        return "test"
    if h < TEST_SHARE + DEV_SHARE:
        return "dev"
    if h < TEST_SHARE + DEV_SHARE + TEXT_SHARE:
        return "text"
    return "train"


def oov_rate(test_texts: list[str], train_texts: list[str]) -> dict:
    """Share of the test word tokens (and types) never seen in the training transcripts."""
    vocab = {w for t in train_texts for w in normalise(t).split()}
    tokens = [w for t in test_texts for w in normalise(t).split()]
    types = set(tokens)
    return {"tokens": round(sum(w not in vocab for w in tokens) / max(1, len(tokens)), 4),
            "types": round(len(types - vocab) / max(1, len(types)), 4),
            "test_tokens": len(tokens), "train_types": len(vocab)}


def fingerprint(seed: int, sizes: dict, natural: bool) -> str:
    blob = json.dumps({"version": VERSION, "seed": seed, "sizes": sizes, "natural": natural,
                       "files": {k: sorted(v) for k, v in CRUDE_FILES.items()}, "stems": CRUDE_STEMS}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# split name -> (languages, sentence pool, held-out voices, share of natural voices)
SPLITS = (("train", ("ru", "en"), "train", False, 0.5),
          ("dev", ("ru", "en"), "dev", False, 0.5),
          ("test_ru", ("ru",), "test", True, 1.0),
          ("test_en", ("en",), "test", True, 1.0),
          ("test_ru_espeak", ("ru",), "test", True, 0.0),
          ("test_en_espeak", ("en",), "test", True, 0.0))


def plan(pools: dict[str, dict[str, list[str]]], seed: int, sizes: dict, natural_voices: bool) -> dict[str, list[dict]]:
    """Every clip's sentence and voice (deterministic). ``pools[lang][split]``: sentences by hash split.
    A test sentence is spoken once (test and *_espeak sets draw disjoint sentences)."""
    from .synth import _voice_job

    rng = random.Random(f"borealis-fortunes-{seed}")
    voice_rng = random.Random(f"borealis-fortunes-voices-{seed}")
    left = {lang: {k: rng.sample(v, len(v)) for k, v in p.items()} for lang, p in pools.items()}
    jobs: dict[str, list[dict]] = {}
    for split, langs, pool, heldout, share in SPLITS:
        jobs[split] = []
        for lang in langs:
            n = sizes[split]
            if len(left[lang][pool]) < n:
                raise ValueError(f"fortunes {lang}: {n} {split} clips asked, {len(left[lang][pool])} {pool} sentences left")
            texts, left[lang][pool] = left[lang][pool][:n], left[lang][pool][n:]
            has_natural = natural_voices and bool(voices(lang, heldout, "natural"))
            natural = [True] * (round(n * share) if has_natural else 0)
            natural += [False] * (n - len(natural))
            voice_rng.shuffle(natural)
            for i, text in enumerate(texts):
                jobs[split].append({"id": f"{split}-{lang}-{i:05d}", "text": text, "language": lang,
                                    **_voice_job(voice_rng, lang, heldout, natural[i])})
    return jobs


def text_pool(pools: dict[str, dict[str, list[str]]], seed: int, n: int) -> list[dict]:
    """Text-only "repeat" pairs from the `text` hash split: sentences never spoken in any split."""
    rng = random.Random(f"borealis-fortunes-text-{seed}")
    langs = sorted(pools)
    out = []
    for lang in langs:
        chosen = rng.sample(pools[lang]["text"], min(n // len(langs), len(pools[lang]["text"])))
        instruction = "Повтори предложение: " if lang == "ru" else "Repeat the sentence: "
        out += [{"id": f"text_train-{lang}-{i:05d}", "language": lang, "instruction": instruction + s, "answer": s,
                 "kind": "repeat"} for i, s in enumerate(chosen)]
    return out


def build_fortunes_corpus(out_dir: Path, seed: int = 0, sizes: dict | None = None, workers: int = 2,
                          progress: bool = True, natural_voices: bool = True, debs: Path | None = None) -> Path:
    """Build (or reuse) the open-vocabulary corpus in ``out_dir`` (same layout as synth.py's)."""
    from tqdm.auto import tqdm

    from .real import deb_cache, ensure_packages
    from .synth import _check_engines, _complete, _render_shard, _shards, _voice_fields, merged_sizes

    out_dir = Path(out_dir)
    sizes = merged_sizes(sizes, DEFAULT_SIZES)
    fp = fingerprint(seed, sizes, natural_voices)
    if _complete(out_dir, fp):
        return out_dir
    t0 = time.perf_counter()
    got = ensure_packages(list(PACKAGES.values()), debs or deb_cache())
    pools, filters = {}, {}
    for lang, package in PACKAGES.items():
        info, root = got[package]
        sentences, filters[lang] = read_sentences(root, lang)
        filters[lang].update(package=f"{package} {info.version}", sha256=info.sha256, sentences=len(sentences))
        pools[lang] = {k: [s for s in sentences if split_of(s) == k] for k in ("train", "dev", "test", "text")}
    jobs = plan(pools, seed, sizes, natural_voices)
    all_jobs = [j for js in jobs.values() for j in js]
    _check_engines({j["voice"] for j in all_jobs})
    with building_folder(out_dir) as tmp:
        for split, js in jobs.items():
            (tmp / "audio" / split).mkdir(parents=True, exist_ok=True)
            for j in js:
                j["audio"] = f"audio/{split}/{j['id']}.wav"
                j["path"] = str(tmp / j["audio"])
        payload = [{"kind": "clip", **{k: j[k] for k in ("text", "voice", "rate", "pitch", "length_scale", "path")}}
                   for j in all_jobs]
        clip_shards = _shards(all_jobs)
        bar = tqdm(total=len(payload), desc="synthesising fortunes", unit="clip", disable=not progress)
        with mp.get_context("spawn").Pool(max(1, min(workers, len(clip_shards))), maxtasksperchild=1) as pool:
            for idx, res in zip(clip_shards, pool.imap(_render_shard, list(enumerate([[payload[i] for i in idx]
                                                                                       for idx in clip_shards])))):
                for i, r in zip(idx, res):
                    all_jobs[i]["duration"] = r["duration"]
                bar.update(len(res))
        bar.close()
        manifests = {}
        for split, js in jobs.items():
            rows = [{"id": j["id"], "audio": j["audio"], "text": j["text"], "language": j["language"],
                     "duration": j["duration"], **_voice_fields(j), "stratum": "train" if split in ("train", "dev")
                     else "open-vocabulary"} for j in js]
            write_manifest(tmp / f"{split}.jsonl", rows)
            manifests[split] = rows
        text_rows = text_pool(pools, seed, sizes["text_train"])
        write_manifest(tmp / "text_train.jsonl", text_rows)
        overlap = check_disjoint(manifests, text_rows)
        train_texts = {lang: [r["text"] for r in manifests["train"] if r["language"] == lang] for lang in PACKAGES}
        oov = {split: oov_rate([r["text"] for r in rows], train_texts[rows[0]["language"]])
               for split, rows in manifests.items() if split.startswith("test")}
        info = {
            "version": VERSION, "seed": seed, "sizes": sizes, "natural_voices": natural_voices, "fingerprint": fp,
            "manifests": [f"{k}.jsonl" for k in manifests] + ["text_train.jsonl"],
            "counts": {k: _count(v) for k, v in manifests.items()} | {"text_train": _count(text_rows)},
            "hours": {k: round(sum(r["duration"] for r in v) / 3600, 4) for k, v in manifests.items()},
            "sentences": filters, "train_test_sentence_overlap": overlap, "test_oov": oov,
            "filter": {"files_left_out": {k: sorted(v) for k, v in CRUDE_FILES.items()},
                       "word_stems": {k: list(v) for k, v in CRUDE_STEMS.items()},
                       "words": [MIN_WORDS, MAX_WORDS], "max_chars": MAX_CHARS},
            "build_seconds": round(time.perf_counter() - t0, 1),
            "design": ("transcripts are real sentences from Debian's fortune files (open vocabulary); train/dev/test/"
                       "text-only sentences are disjoint by a hash of the normalised sentence; test sets are spoken by "
                       "held-out voices only (test_*: natural, test_*_espeak: espeak's held-out variants)"),
            "languages": sorted(PACKAGES), "sample_rate": 16000,
        }
        (tmp / "corpus.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    log.info("fortunes corpus written: %s", out_dir)
    return out_dir


def check_disjoint(manifests: dict[str, list[dict]], text_rows: list[dict]) -> int:
    """Fail if any test sentence is in train, dev or the text pool; returns the overlap (0)."""
    seen = {normalise(r["text"]) for split in ("train", "dev") for r in manifests[split]}
    seen |= {normalise(r["answer"]) for r in text_rows}
    test = {normalise(r["text"]) for split, rows in manifests.items() if split.startswith("test") for r in rows}
    overlap = len(test & seen)
    if overlap:
        raise AssertionError(f"fortunes corpus: {overlap} test sentences also in training (must be 0)")
    return overlap


def _count(rows: list[dict]) -> dict:
    out: dict[str, int] = {}
    for r in rows:
        out[r["language"]] = out.get(r["language"], 0) + 1
    return dict(sorted(out.items()))
