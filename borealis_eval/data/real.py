"""Real recorded speech from Debian packages: fetch, verify, and write the real evaluation sets.

Scoring only on synthetic audio says nothing about real speech, and these recordings are the
ones reachable offline (docs: FACTS.md, "Real speech and natural voices"):

- festvox-ru: one male reader of literary prose, 16 kHz, 620 utterances (99.5 min);
- asterisk-core-sounds-ru(-wav): a professional female IVR voice, 8 kHz (CC-BY-3.0);
- asterisk-core-sounds-en(-wav): the English counterpart, 8 kHz (CC-BY-SA-3.0).

The Asterisk audio is the 8 kHz PCM of the -wav packages, not the 16 kHz of the -g722 ones:
Whisper base scored them within noise of each other (ru 15.7% vs 14.4% WER on 39 prompts, en
3.8% on 40 for both), G.722 needs FFmpeg (PyAV) to decode, and the telephone band is the one
these prompts are made for.

``fetch_real(dest)`` downloads each .deb with ``apt-get download`` into the shared cache,
checks its SHA256 against apt's package index, unpacks it with ``dpkg-deb -x`` (no installation,
no root needed unless apt's package lists must be updated), and writes four manifests
(``real_ru_read``, ``real_ru_ivr``, ``real_en_ivr``, ``real_longform``) with the clips they use,
the packages' copyright files and SOURCES.{json,md}. Like the synthetic corpus, ``dest`` is a
pure function of (builder version, packages, sizes): it is built in a sibling folder and renamed
into place when complete, and a later call only re-hashes it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from borealis_eval.atomic import building_folder
from borealis_eval.audio import SAMPLE_RATE
from borealis_eval.errors import RealDataError

from .manifest import write_manifest

log = logging.getLogger(__name__)

VERSION = "real-2"  # bump when the sets change for the same packages and sizes
LONGFORM_SECONDS = (60.0, 90.0)  # a joined recording reaches the first, never passes the second
JOIN_GAP_SECONDS = 0.5  # silence between joined recordings, so no word is glued to the next
MIN_IVR_WORDS = 4  # shorter prompts ("Goodbye.", digits, letters) say little about ASR
SHORT_MAX_SECONDS = 30.0  # a short-set clip fits one Whisper window; longer prompts are long-form

# festvox-ru split: ids in blocks of 20 consecutive numbers (ru_0001-ru_0020 is block 0, ...);
# every fifth block (k % 5 == 2) is held out. Whole blocks, because neighbouring sentences of the
# novel share names and topics: a held-out sentence's context never reaches a training split.
FESTVOX_BLOCK = 20
FESTVOX_HELDOUT_EVERY, FESTVOX_HELDOUT_AT = 5, 2




@dataclass(frozen=True)
class RealSizes:
    """Utterances per short set and recordings in the long-form set.

    The defaults give every set 440-580 reference words (festvox sentences average 16 words,
    IVR prompts of 4+ words 9-10, a long-form recording ~145) and 16 min of audio in all:
    enough for a WER interval of about +/- 5 pts at Whisper base's ~17% on Russian, small enough
    that the baseline decodes everything in ~6 min on 2 free cores. Two long recordings per
    language is the least that is not one anecdote per language.
    """

    ru_read: int = 32
    ru_ivr: int = 48
    en_ivr: int = 48
    longform: int = 4  # in order: ru monologue, en monologue, festvox join, asterisk-en join, ...

    def __post_init__(self):
        bad = {k: v for k, v in asdict(self).items() if not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"real-speech sizes must be whole numbers >= 0, got {bad}")


@dataclass(frozen=True)
class Package:
    name: str
    licence: str
    attribution: str


FESTVOX = Package(
    "festvox-ru", "BSD-like (keep the copyright notice; mark modifications)",
    "Nickolay V. Shmyrev (c) 2005, msu_ru_nsh voice recordings (Russian Festival voice, festlang project)")
ASTERISK_RU = Package(
    "asterisk-core-sounds-ru", "CC-BY-3.0",
    "Asterisk core sounds, Russian: provided by Maxim Topal (http://www.ivrvoice.ru)")
ASTERISK_EN = Package(
    "asterisk-core-sounds-en", "CC-BY-SA-3.0",
    "Asterisk core sounds, English: recorded by Allison Smith (http://www.theivrvoice.com), "
    "financial contributions by Digium, Inc.")
# the -wav packages hold the audio, the plain ones the transcripts
DEBS = {"festvox-ru": FESTVOX, "asterisk-core-sounds-ru-wav": ASTERISK_RU, "asterisk-core-sounds-ru": ASTERISK_RU,
        "asterisk-core-sounds-en-wav": ASTERISK_EN, "asterisk-core-sounds-en": ASTERISK_EN}
FESTVOX_DIR = "usr/share/festival/voices/russian/msu_ru_nsh_clunits"
ASTERISK_VOICES = {"ru": "ru_RU_f_IvrvoiceRU", "en": "en_US_f_Allison"}


@dataclass(frozen=True)
class DebInfo:
    """One package as apt's index describes it (``apt-get download --print-uris``)."""

    package: str
    version: str
    filename: str
    size: int
    sha256: str
    url: str


@dataclass
class Utterance:
    """A transcribed recording inside an unpacked package."""

    id: str
    text: str
    wav: Path
    language: str
    speaker: str
    package: str  # the .deb holding the audio
    source: Package
    duration: float = 0.0


# ------------------------------------------------------------------ apt
def require_tools() -> None:
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        raise RealDataError(f"real speech comes from Debian packages, and this machine lacks {' and '.join(missing)}: "
                         "run on Debian/Ubuntu or install apt and dpkg (Debian's `apt`, `dpkg` packages)")


def _run(cmd: list[str], cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RealDataError(f"`{' '.join(cmd)}` took over {timeout} s (is the Debian mirror reachable?)") from None


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and not ln.startswith("W:")]
    return lines[-1].strip() if lines else f"exit code {proc.returncode}"


_PRINT_URI = re.compile(r"^'(?P<url>[^']+)' (?P<file>\S+) (?P<size>\d+) (?P<alg>[A-Za-z0-9]+):(?P<hash>[0-9a-f]+)$")


def deb_infos(packages: list[str]) -> dict[str, DebInfo]:
    """Version, file name and SHA256 of each package from apt's index (one apt call); runs
    ``apt-get update`` first only when the index lacks one (as root; otherwise says so)."""
    proc = _run(["apt-get", "download", "--print-uris", *packages])
    if proc.returncode != 0:
        if os.geteuid() != 0:
            raise RealDataError(f"apt's package lists lack {' / '.join(packages)} ({_last_line(proc)}); run "
                             "`sudo apt-get update` (it needs root), then fetch again")
        log.info("apt's package lists lack some of %s: running apt-get update", ", ".join(packages))
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise RealDataError(f"apt-get update failed: {_last_line(update)}")
        proc = _run(["apt-get", "download", "--print-uris", *packages])
        if proc.returncode != 0:
            raise RealDataError(f"apt cannot offer {' / '.join(packages)} even after apt-get update "
                             f"({_last_line(proc)}); they are in Debian main (bookworm): add that to apt's sources")
    infos = {}
    for m in filter(None, map(_PRINT_URI.match, proc.stdout.splitlines())):
        if m["alg"].upper() != "SHA256":
            raise RealDataError(f"apt's index gives {m['alg']} for {m['file']}, not SHA256")
        name, version, _arch = urllib.parse.unquote(m["file"]).removesuffix(".deb").split("_")
        infos[name] = DebInfo(name, version, m["file"], int(m["size"]), m["hash"], m["url"])
    missing = [p for p in packages if p not in infos]
    if missing:
        raise RealDataError(f"unexpected `apt-get download --print-uris` output, no entry for {', '.join(missing)}: "
                         f"{proc.stdout.strip()[:200]}")
    return infos


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_deb(info: DebInfo, cache: Path) -> Path:
    """The verified .deb in ``cache`` (downloaded unless a copy with the index's SHA256 is there).

    apt-get writes into a private temporary folder; the file is moved into place only after its
    checksum matched, so the cache never holds a partial or corrupt package under its real name.
    """
    final = cache / info.filename
    if final.is_file() and _sha256(final) == info.sha256:
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        proc = _run(["apt-get", "download", f"{info.package}={info.version}"], cwd=Path(tmp))
        got = Path(tmp) / info.filename
        if proc.returncode != 0 or not got.is_file():
            raise RealDataError(f"apt-get download {info.package} failed: {_last_line(proc)}")
        digest = _sha256(got)
        if digest != info.sha256:
            raise RealDataError(f"{info.filename}: SHA256 {digest} differs from apt's index ({info.sha256})")
        os.replace(got, final)
    return final


def unpack_deb(deb: Path, info: DebInfo, cache: Path) -> Path:
    """``dpkg-deb -x`` into ``cache/<package>_<version>/``, once: the folder is renamed into
    place with a marker naming the .deb's SHA256, so a crash leaves only a temporary folder."""
    final = cache / f"{info.package}_{info.version}"
    marker = final / ".borealis-deb.json"
    if marker.is_file() and json.loads(marker.read_text()).get("sha256") == info.sha256:
        return final
    with building_folder(final, prefix=f".unpack-{info.package}-") as tmp:
        proc = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        if proc.returncode != 0:
            raise RealDataError(f"dpkg-deb -x {deb.name} failed: {_last_line(proc)}")
        (tmp / marker.name).write_text(json.dumps(asdict(info)))
    return final


def ensure_packages(packages: list[str], cache: Path) -> dict[str, tuple[DebInfo, Path]]:
    """package -> (index entry, unpacked folder); festival synthesis can reuse festvox-ru's."""
    from filelock import FileLock

    require_tools()
    infos = deb_infos(packages)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".lock")):  # two fetches sharing the cache download each file once
        _remove(cache.glob(".download-*"), cache.glob(".unpack-*"))  # left by a killed fetch
        return {p: (i, unpack_deb(download_deb(i, cache), i, cache)) for p, i in infos.items()}


def _remove(*globs) -> None:
    for paths in globs:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)


def deb_cache() -> Path:
    from borealis_eval.paths import cache_root

    path = cache_root() / "debs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ transcripts
_FESTVOX_LINE = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)$')


def parse_festvox(text: str) -> tuple[dict[str, str], list[str]]:
    """``( ru_0001 "..." )`` lines -> ({id: text without the ``+`` stress marks}, problems).

    Everything else is kept as the reader's script wrote it (the prosodic commas and dashes
    included): scoring normalises punctuation, and raw references keep that choice there.
    """
    rows, problems = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _FESTVOX_LINE.match(line)
        if m is None:
            problems.append(f"line {n}: not `( id \"text\" )`: {line[:60]}")
            continue
        utt, transcript = m[1], " ".join(m[2].replace("+", "").split())
        if not transcript:
            problems.append(f"line {n}: {utt} has an empty transcript")
        elif utt in rows:
            problems.append(f"line {n}: {utt} repeated, first kept")
        else:
            rows[utt] = transcript
    return rows, problems


_ASTERISK_LINE = re.compile(r"^([^\s:;][^\s:]*):(.*)$")
_NOTE = re.compile(r"\[[^\]]*\]|<[^>]*>")
_PARENTHESIS = re.compile(r"\(([^)]*)\)")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# what the English voice says for the keypad symbols its transcripts write as symbols
_EN_SYMBOLS = {"*": "star", "#": "pound"}
# the Russian transcripts spell the conjunction "чтобы" as "что бы" in 27 prompts, all purpose
# clauses ("Что бы выйти из меню..."), which Russian writes as one word and every recogniser
# outputs as one: left alone, each costs two errors in a 5-word prompt ("что бы ни" stays two)
_RU_CHTOBY = re.compile(r"\b([Чч])то бы\b(?! ни\b)")


def _spoken(transcript: str, language: str) -> str:
    """A transcript as it is read: notes in [] and <> dropped; a parenthesis kept without its
    brackets when it is Russian in the Russian file (``пометку (статус) «важно»`` is read with
    "статус"), dropped otherwise (the English notes ``(note: does not say "2")``, ``(1 second
    of silence)``); in English, a lone ``*`` / ``#`` is the "star" / "pound" the voice says; in
    Russian, "что бы" is "чтобы" (see _RU_CHTOBY). Other typos stay as they are."""
    text = _NOTE.sub(" ", transcript)
    if language == "ru":
        text = _RU_CHTOBY.sub(r"\1тобы", text)
    text = _PARENTHESIS.sub(lambda m: f" {m[1]} " if language == "ru" and _CYRILLIC.search(m[1]) else " ", text)
    words = text.split()
    if language == "en":
        words = [_EN_SYMBOLS.get(w, w) for w in words]
    return " ".join(words)


def parse_asterisk(text: str, language: str) -> tuple[dict[str, str], list[str]]:
    """``name: text`` lines of core-sounds-<language>.txt -> ({name: spoken text}, problems).

    The files describe non-speech prompts in brackets (``beep: [this is a simple beep tone]``,
    ``silence/1: (1 second of silence)``) and annotate others (``letters/dot: Точка [.]``):
    see ``_spoken``. A prompt left without words is not speech. A text repeating its own name
    (``conf-adminmenu: conf-adminmenu: ...``) loses the repeat; ``;`` starts a comment.
    """
    rows, problems = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        m = _ASTERISK_LINE.match(line.strip())
        if m is None:
            problems.append(f"line {n}: not `name: text`: {line[:60]}")
            continue
        name, transcript = m[1], m[2].strip()
        spoken = _spoken(transcript.removeprefix(f"{name}:").strip(), language)
        if not any(ch.isalnum() for ch in spoken):
            problems.append(f"line {n}: {name} has no spoken text ({transcript or 'empty'!r})")
        elif name in rows:
            problems.append(f"line {n}: {name} repeated, first kept")
        else:
            rows[name] = spoken
    return rows, problems


def word_count(text: str) -> int:
    return sum(any(ch.isalnum() for ch in w) for w in text.split())


def spelled(text: str) -> bool:
    """A prompt that spells letters (``spy-dahdi: Д А Х Д И``, ``spy-misdn: M I S D N``): Whisper
    writes the acronym ("MISDN"), so its WER would score spelling conventions, not recognition."""
    words = [w.strip(".,!?") for w in text.split()]
    return len(words) > 1 and all(len(w) == 1 and w.isalpha() for w in words)


# ------------------------------------------------------------------ corpora in unpacked packages
def festvox_utterances(root: Path, problems: list[str]) -> list[Utterance]:
    """festvox-ru's transcribed recordings in id order (those without a wav are listed as problems)."""
    voice = root / FESTVOX_DIR
    texts, issues = parse_festvox((voice / "etc" / "txt.done.data").read_text(encoding="utf-8"))
    problems += [f"festvox-ru txt.done.data {p}" for p in issues]
    out = []
    for utt, text in sorted(texts.items()):
        wav = voice / "wav" / f"{utt}.wav"
        if wav.is_file():
            out.append(Utterance(f"festvox-ru.{utt}", text, wav, "ru", "msu_ru_nsh", "festvox-ru", FESTVOX))
        else:
            problems.append(f"festvox-ru: {utt} has a transcript but no wav")
    return out


def asterisk_utterances(language: str, text_root: Path, wav_root: Path, problems: list[str]) -> list[Utterance]:
    """Asterisk prompts of one language in the transcript file's order (related prompts are
    neighbours there: conf-*, vm-*), each with its wav."""
    pkg = ASTERISK_RU if language == "ru" else ASTERISK_EN
    doc = text_root / "usr/share/doc" / pkg.name / f"core-sounds-{language}.txt.gz"
    with gzip.open(doc, "rt", encoding="utf-8") as f:
        texts, issues = parse_asterisk(f.read(), language)
    problems += [f"{doc.name} {p}" for p in issues]
    voice = ASTERISK_VOICES[language]
    sounds = wav_root / "usr/share/asterisk/sounds" / voice
    out = []
    for name, text in texts.items():
        wav = sounds / f"{name}.wav"
        if wav.is_file():
            out.append(Utterance(f"asterisk-{language}.{name.replace('/', '.')}", text, wav, language, voice,
                                 f"{pkg.name}-wav", pkg))
        else:
            problems.append(f"{doc.name}: {name} has a transcript but no wav")
    return out


def festvox_heldout(utt_id: str) -> bool:
    """Whether a festvox-ru utterance (``ru_0123`` or ``festvox-ru.ru_0123``) is held out."""
    number = int(utt_id.rsplit("_", 1)[1])
    return (number - 1) // FESTVOX_BLOCK % FESTVOX_HELDOUT_EVERY == FESTVOX_HELDOUT_AT


# ------------------------------------------------------------------ sets
def _with_durations(utts: list[Utterance]) -> list[Utterance]:
    import soundfile as sf

    for u in utts:
        u.duration = sf.info(str(u.wav)).duration
    return utts


def _pick(pool: list[Utterance], n: int) -> list[Utterance]:
    """n utterances chosen by a hash of their id, in pool order: deterministic, and a smaller
    size is a subset of a larger one (so numbers at two sizes compare)."""
    rank = sorted(pool, key=lambda u: hashlib.sha256(u.id.encode()).hexdigest())[:n]
    keep = {u.id for u in rank}
    return [u for u in pool if u.id in keep]


def _join(pool: list[Utterance], start: int) -> tuple[list[Utterance], int]:
    """Consecutive utterances from ``start`` until LONGFORM_SECONDS[0] is reached (one that would
    pass LONGFORM_SECONDS[1] is passed over) and the index after the last; [] when the pool runs
    out first."""
    lo, hi = LONGFORM_SECONDS
    parts, total = [], 0.0
    for i in range(start, len(pool)):
        extra = pool[i].duration + (JOIN_GAP_SECONDS if parts else 0.0)
        if total + extra > hi:
            continue
        parts.append(pool[i])
        total += extra
        if total >= lo:
            return parts, i + 1
    return [], len(pool)


def _joins(pool: list[Utterance], n: int) -> list[list[Utterance]]:
    """Up to n disjoint joins starting at evenly spaced points of the pool."""
    out, free = [], 0
    for k in range(n):
        parts, free = _join(pool, max(free, k * len(pool) // n))
        if parts:
            out.append(parts)
    return out


@dataclass
class Plan:
    """What goes in each set: short sets as utterances, long-form recordings as lists of parts."""

    ru_read: list[Utterance]
    ru_ivr: list[Utterance]
    en_ivr: list[Utterance]
    longform: list[list[Utterance]]


def plan_sets(festvox: list[Utterance], ast_ru: list[Utterance], ast_en: list[Utterance], sizes: RealSizes) -> Plan:
    """Choose every set's recordings (durations must be known). No recording is in two sets.

    Long-form candidates, taken in this order up to ``sizes.longform``: Asterisk's ru and en
    ``demo-instruct`` monologues (74 s), then alternately a join of consecutive held-out festvox
    readings (the k-th held-out block from its start) and a join of consecutive Asterisk English
    prompts of 4+ words (starting at evenly spaced points of the prompt list).
    """
    heldout = [u for u in festvox if festvox_heldout(u.id)]
    ru_ivr = [u for u in ast_ru if word_count(u.text) >= MIN_IVR_WORDS and not spelled(u.text)]
    en_ivr = [u for u in ast_en if word_count(u.text) >= MIN_IVR_WORDS and not spelled(u.text)]
    monologues = [u for u in ru_ivr + en_ivr if u.id.endswith(".demo-instruct")]
    en_pool = [u for u in en_ivr if u not in monologues]

    blocks: dict[int, list[Utterance]] = {}
    for u in heldout:
        blocks.setdefault((int(u.id.rsplit("_", 1)[1]) - 1) // FESTVOX_BLOCK, []).append(u)
    n_joins = max(0, sizes.longform - len(monologues))
    festvox_joins = [j for j in (_join(b, 0)[0] for b in blocks.values()) if j][: (n_joins + 1) // 2]
    en_joins = _joins(en_pool, n_joins // 2)
    candidates = [[m] for m in monologues]
    for k in range(max(len(festvox_joins), len(en_joins))):
        candidates += [j[k] for j in (festvox_joins, en_joins) if k < len(j)]
    longform = candidates[: sizes.longform]

    used = {u.id for rec in longform for u in rec} | {m.id for m in monologues}

    def short(pool: list[Utterance]) -> list[Utterance]:
        return [u for u in pool if u.id not in used and u.duration <= SHORT_MAX_SECONDS]

    return Plan(
        ru_read=_pick(short(heldout), sizes.ru_read),
        ru_ivr=_pick(short(ru_ivr), sizes.ru_ivr),
        en_ivr=_pick(short(en_ivr), sizes.en_ivr),
        longform=longform,
    )


# ------------------------------------------------------------------ writing
# real_ru_read's reader is the festival Russian voice of the synthetic corpus (unit selection over
# all 620 recordings, held-out ones included): for variants trained on that corpus the speaker, and
# units of these very recordings, were heard in training; its stratum says so
STRATA = {"real_ru_read": "real-read-speaker-in-training", "real_ru_ivr": "real-ivr", "real_en_ivr": "real-ivr"}


def _row(u: Utterance, audio: str, stratum: str, info: dict[str, DebInfo], duration: float, **extra) -> dict:
    return {"id": u.id, "audio": audio, "text": u.text, "language": u.language, "duration": round(duration, 3),
            "speaker": u.speaker, "stratum": stratum, "source": f"{u.package} {info[u.package].version}",
            "license": u.source.licence, "attribution": u.source.attribution, **extra}


def _write_longform(parts: list[Utterance], path: Path) -> tuple[float, str]:
    """Join recordings with JOIN_GAP_SECONDS of silence as 16 kHz PCM_16; returns the seconds
    and what was changed (the licences ask for modifications to be marked)."""
    import soundfile as sf
    import soxr

    gap = np.zeros(int(JOIN_GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces, rates = [], set()
    for k, u in enumerate(parts):
        wave, sr = sf.read(str(u.wav), dtype="float32", always_2d=True)
        wave, rates = wave.mean(axis=1), rates | {sr}
        pieces += ([gap] if k else []) + [soxr.resample(wave, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else wave]
    audio = np.concatenate(pieces)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    changes = ([f"joined from {len(parts)} recordings with {JOIN_GAP_SECONDS:g} s silences"] if len(parts) > 1 else [])
    changes += [f"resampled from {r} Hz to {SAMPLE_RATE} Hz" for r in sorted(rates - {SAMPLE_RATE})]
    return len(audio) / SAMPLE_RATE, "; ".join(changes)


def _longform_id(parts: list[Utterance]) -> str:
    if len(parts) == 1:
        return f"longform.{parts[0].id}"
    first, last = parts[0].id, parts[-1].id.rsplit(".", 1)[1]
    return f"longform.{first}--{last}"


def write_sets(plan: Plan, info: dict[str, DebInfo], out: Path) -> dict[str, list[dict]]:
    """Manifests of the planned sets in ``out``; short clips are copied as they are (the loader
    resamples), long-form recordings are written at 16 kHz."""
    sets: dict[str, list[dict]] = {}
    for name, utts in (("real_ru_read", plan.ru_read), ("real_ru_ivr", plan.ru_ivr), ("real_en_ivr", plan.en_ivr)):
        (out / "audio" / name).mkdir(parents=True, exist_ok=True)
        rows = []
        for u in utts:
            rel = f"audio/{name}/{u.id}.wav"
            shutil.copyfile(u.wav, out / rel)
            rows.append(_row(u, rel, STRATA[name], info, u.duration))
        sets[name] = rows
    (out / "audio" / "real_longform").mkdir(parents=True, exist_ok=True)
    rows = []
    for parts in plan.longform:
        rid = _longform_id(parts)
        rel = f"audio/real_longform/{rid}.wav"
        seconds, changes = _write_longform(parts, out / rel)
        head = parts[0]
        row = _row(head, rel, "real-monologue" if len(parts) == 1 else "real-joined", info, seconds,
                   parts=[u.id for u in parts])
        row.update(id=rid, text=" ".join(u.text for u in parts))
        if changes:
            row["attribution"] += f" (modified: {changes})"
        rows.append(row)
    sets["real_longform"] = rows
    for name, set_rows in sets.items():
        write_manifest(out / f"{name}.jsonl", set_rows)
    return sets


def _copy_licences(roots: dict[str, Path], out: Path) -> None:
    (out / "licenses").mkdir(exist_ok=True)
    for package, root in roots.items():
        shutil.copyfile(root / "usr/share/doc" / package / "copyright", out / "licenses" / f"{package}.copyright")


def _sources_md(meta: dict) -> str:
    lines = ["# Real speech: sources", "",
             ("Recordings from Debian packages, fetched by `borealis-eval data fetch real` "
              f"(builder {meta['version']}). Each package's copyright file is in `licenses/`."), "",
             "| package | version | SHA256 | licence | attribution |", "|---|---|---|---|---|"]
    for p in meta["packages"]:
        lines.append(f"| {p['package']} | {p['version']} | `{p['sha256'][:16]}...` | {p['license']} | {p['attribution']} |")
    lines += ["", "| set | recordings | minutes | stratum |", "|---|---|---|---|"]
    for name, s in meta["sets"].items():
        lines.append(f"| {name} | {s['recordings']} | {s['minutes']} | {', '.join(s['strata'])} |")
    lines += ["", "Long-form recordings say in their `attribution` how they were modified (joined, resampled).",
              "", meta["design"], ""]
    return "\n".join(lines)


def _complete(dest: Path, fingerprint: str) -> bool:
    """True when ``dest`` was built for ``fingerprint`` and every file still has its recorded hash."""
    try:
        meta = json.loads((dest / "SOURCES.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("fingerprint") != fingerprint:
        return False
    files = meta.get("files", {})
    return bool(files) and all((dest / rel).is_file() and _sha256(dest / rel) == h for rel, h in files.items())


def fetch_real(dest: Path, sizes: RealSizes = RealSizes(), cache: Path | None = None) -> Path:
    """Build (or verify) the real-speech sets in ``dest`` and return it.

    Raises RealDataError (one line, naming what to do) when apt-get/dpkg-deb are missing, apt does not
    offer a package, or a download does not match apt's checksum. ``dest`` belongs to this
    function: it is replaced as a whole, and a folder that is not a real-speech folder is refused.
    """
    from filelock import FileLock

    dest = Path(dest)
    fp = hashlib.sha256(json.dumps({"version": VERSION, "sizes": asdict(sizes)}, sort_keys=True).encode()).hexdigest()[:16]
    if _complete(dest, fp):
        log.info("real speech in %s is complete and verified", dest)
        return dest
    if dest.exists() and any(dest.iterdir()) and not (dest / "SOURCES.json").is_file():
        raise RealDataError(f"{dest} exists and is not a real-speech folder (no SOURCES.json): choose another --out")
    require_tools()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if not _complete(dest, fp):  # unless a concurrent fetch finished it meanwhile
            _remove(dest.parent.glob(f".{dest.name}.build-*"), dest.parent.glob(f".{dest.name}.old-*"))
            _build(dest, fp, sizes, Path(cache) if cache else deb_cache())
    return dest


def _build(dest: Path, fp: str, sizes: RealSizes, cache: Path) -> None:
    got = ensure_packages(list(DEBS), cache)
    info, roots = {p: i for p, (i, _) in got.items()}, {p: r for p, (_, r) in got.items()}

    problems: list[str] = []
    festvox = _with_durations(festvox_utterances(roots["festvox-ru"], problems))
    ast = {lang: _with_durations(asterisk_utterances(lang, roots[f"asterisk-core-sounds-{lang}"],
                                                     roots[f"asterisk-core-sounds-{lang}-wav"], problems))
           for lang in ("ru", "en")}
    if problems:
        log.info("real speech: %d transcript lines left out or unmatched (no speech, no wav; listed in "
                 "SOURCES.json), e.g. %s", len(problems), problems[0])
    plan = plan_sets(festvox, ast["ru"], ast["en"], sizes)

    with building_folder(dest, prefix=f".{dest.name}.build-") as tmp:
        sets = write_sets(plan, info, tmp)
        _copy_licences(roots, tmp)
        meta = {
            "version": VERSION, "fingerprint": fp, "sizes": asdict(sizes),
            "packages": [{**asdict(info[p]), "license": DEBS[p].licence, "attribution": DEBS[p].attribution}
                         for p in DEBS],
            "sets": {name: {"recordings": len(rows), "minutes": round(sum(r["duration"] for r in rows) / 60, 2),
                            "strata": sorted({r["stratum"] for r in rows}),
                            "languages": sorted({r["language"] for r in rows})} for name, rows in sets.items()},
            "design": (f"real_ru_read: festvox-ru readings held out in whole blocks of {FESTVOX_BLOCK} consecutive "
                       f"ids (block k held out when k % {FESTVOX_HELDOUT_EVERY} == {FESTVOX_HELDOUT_AT}); "
                       f"real_*_ivr: Asterisk prompts of {MIN_IVR_WORDS}+ words (not spelled letters); short sets keep "
                       f"clips up to {SHORT_MAX_SECONDS:g} s; real_longform: the demo-instruct "
                       f"monologues and joins of consecutive recordings ({LONGFORM_SECONDS[0]:g}-"
                       f"{LONGFORM_SECONDS[1]:g} s, {JOIN_GAP_SECONDS:g} s gaps). Short sets are subsets chosen by a "
                       "hash of the id; no recording is in two sets. Held out means from training on festvox "
                       "recordings: festival's Russian voice is built from all 620 of them, so where a training "
                       "corpus has festival Russian, real_ru_read's speaker, and audio units cut from these very "
                       "recordings (not their sentences), were heard in training."),
            "problems": problems,
        }
        (tmp / "SOURCES.md").write_text(_sources_md(meta), encoding="utf-8")
        meta["files"] = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "SOURCES.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    log.info("real speech written: %s", dest)
