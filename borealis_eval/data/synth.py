"""Build the synthetic ru/en speech corpus (train/dev/test/webinar audio + text-only pool).

Layout (notes/CONTRACT.md): train.jsonl dev.jsonl test_ru.jsonl test_en.jsonl webinar.jsonl
test_ru_espeak.jsonl test_en_espeak.jsonl text_train.jsonl text_heldout.jsonl corpus.json
audio/<split>/<id>.wav (16 kHz mono PCM_16).
The corpus is a pure function of (generator version, seed, sizes): manifests are byte-identical
for a seed, a finished corpus with the same fingerprint is reused, and a build happens in a
temporary sibling folder renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
from pathlib import Path

import numpy as np

from borealis_eval.atomic import building_folder

from . import festival, piper
from .espeak import TARGET_SR
from .manifest import read_manifest, write_manifest
from .sentences import LANGUAGES, SentenceBank, check_splits
from .voices import (
    Speakers,
    Voice,
    describe,
    festival_voices,
    to_16k,
    voice_stratum,
    voices,
)
from .webinar import plan_webinar, render_webinar

log = logging.getLogger(__name__)

# 2: test sets in three strata (voice / word / shape); 3: webinars of 1-1.5 min;
# 4: natural voices (Festival ru/en, Piper en) beside espeak, split between training and test
VERSION = "synth-ruen-4"
DEFAULT_SIZES = {
    "train": 1200,  # per language
    "dev": 100,  # per language
    "test_ru": 64,
    "test_en": 64,
    "test_ru_espeak": 32,
    "test_en_espeak": 32,
    "webinar": 4,  # alternating en, ru
    "text_train": 3000,  # at least one pair per held-out word/template, both languages
    "text_heldout": 200,
}
# planned webinar length; speech lands a few seconds under or over the plan: recordings of 60-90 s
WEBINAR_PLAN_SECONDS = (64.0, 88.0)
MIN_SECONDS, MAX_SECONDS = 1.5, 6.0
# (split, languages, sentence kind, share of clips spoken by a natural voice; the rest: espeak).
# The main test sets are all natural voices (espeak Russian makes Whisper loop); the *_espeak
# sets keep espeak's held-out voices measurable on their own.
SPLITS = (("train", ("ru", "en"), "train", 0.5),
          ("dev", ("ru", "en"), "train", 0.5),
          ("test_ru", ("ru",), "test", 1.0),
          ("test_en", ("en",), "test", 1.0),
          ("test_ru_espeak", ("ru",), "test", 0.0),
          ("test_en_espeak", ("en",), "test", 0.0))
# libespeak-ng and Piper carry state between utterances (espeak's pitch-flutter phase, Piper's
# noise generators), so a clip's samples depend on what the process spoke before. Clips are
# therefore rendered in shards fixed by the plan, each in a fresh process: the audio is the same
# whatever ``workers`` is. espeak clips go to N_SHARDS shards; Festival and Piper clips to one
# shard per NATURAL_SHARD_CLIPS of their engine (each such shard pays ~1.5 s to start its engine).
N_SHARDS = 8
NATURAL_SHARD_CLIPS = 160


def fingerprint(seed: int, sizes: dict, natural: bool = True) -> str:
    blob = json.dumps({"version": VERSION, "seed": seed, "sizes": sizes, "natural": natural}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _render_clip(job: dict, speakers: Speakers) -> float:
    """Synthesise one clip to ``job['path']``; returns its duration in seconds (1.5-6 s).

    A clip too long for 6 s is spoken faster rather than cut: espeak at a higher rate, a
    natural voice with a larger warp (resampling its own output again, no new synthesis).
    """
    import soundfile as sf

    voice, limit = Voice.parse(job["voice"]), MAX_SECONDS * TARGET_SR
    if voice.engine == "espeak":
        rate = job["rate"]
        audio = speakers.speak(voice, job["text"], rate, job["pitch"])
        while len(audio) > limit and rate < 400:
            rate = int(rate * len(audio) / (0.95 * limit)) + 1
            audio = speakers.speak(voice, job["text"], rate, job["pitch"])
    else:
        native, sr = speakers.native(voice, job["text"], length_scale=job["length_scale"])
        audio = to_16k(native, sr, voice.warp)
        if len(audio) > limit:
            audio = to_16k(native, sr, voice.warp * len(audio) / (0.95 * limit))
    if len(audio) < MIN_SECONDS * TARGET_SR:
        pad = int(MIN_SECONDS * TARGET_SR) - len(audio)
        audio = np.pad(audio, (pad // 2, pad - pad // 2))
    sf.write(job["path"], audio, TARGET_SR, subtype="PCM_16")
    return round(len(audio) / TARGET_SR, 3)


def _render_task(task: dict, speakers: Speakers) -> dict:
    if task["kind"] == "clip":
        return {"duration": _render_clip(task, speakers)}
    import soundfile as sf
    audio, meta = render_webinar(task["plan"], speakers)
    sf.write(task["path"], audio, TARGET_SR, subtype="PCM_16")
    return {**meta, "duration": round(len(audio) / TARGET_SR, 3)}


def _render_shard(shard: tuple[int, list[dict]]) -> list[dict]:
    """Runs in a fresh process (see N_SHARDS); ``shard`` is (index, tasks)."""
    index, tasks = shard
    with Speakers(seed=index) as speakers:
        return [_render_task(t, speakers) for t in tasks]


def _shards(jobs: list[dict]) -> list[list[int]]:
    """Job indices per shard, fixed by the plan alone (never by ``workers``).

    A shard holds one engine (and for Festival one language, so that its process loads the
    voices of one language only).
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, j in enumerate(jobs):
        engine = Voice.parse(j["voice"]).engine
        groups.setdefault((engine, j["language"] if engine == "festival" else ""), []).append(i)
    shards: list[list[int]] = []
    for (engine, _), idx in sorted(groups.items(), key=lambda g: g[0][0] == "espeak"):  # slow engines first
        n = N_SHARDS if engine == "espeak" else -(-len(idx) // NATURAL_SHARD_CLIPS)
        shards += [idx[k::n] for k in range(n) if idx[k::n]]
    return shards


def _voice_job(rng: random.Random, lang: str, heldout: bool, natural: bool) -> dict:
    """A voice and its speaking parameters; test voices get a wider range of speeds."""
    voice = rng.choice(voices(lang, heldout, "natural" if natural else "espeak"))
    rates, pitches, scales = ((120, 200), (30, 70), (0.88, 1.12)) if heldout else ((140, 180), (35, 65), (0.92, 1.08))
    return {"voice": voice.id, "rate": rng.randint(*rates), "pitch": rng.randint(*pitches),
            "length_scale": round(rng.uniform(*scales), 3)}


def _plan(seed: int, sizes: dict, natural_voices: bool) -> tuple[dict, dict, SentenceBank, random.Random]:
    """Choose every sentence, voice and speed (cheap, deterministic, before any audio).

    Voices are drawn from their own generator, so the voice design can change without
    changing a single sentence.
    """
    rng = random.Random(f"borealis-corpus-{seed}")
    voice_rng = random.Random(f"borealis-voices-{seed}")
    bank = SentenceBank(seed)
    speech: dict[str, list] = {split: [] for split, *_ in SPLITS}
    jobs: dict[str, list[dict]] = {k: [] for k in speech}
    for split, langs, kind, share in SPLITS:
        for lang in langs:
            n = sizes[split]
            has_natural = natural_voices and bool(voices(lang, kind == "test", "natural"))
            n_natural = round(n * share) if has_natural else 0
            natural = [True] * n_natural + [False] * (n - n_natural)
            voice_rng.shuffle(natural)
            for i, s in enumerate(bank.draw_many(split, rng, lang, kind, n)):
                speech[split].append(s)
                jobs[split].append({"id": f"{split}-{lang}-{i:05d}", "text": s.text, "language": lang,
                                    **_voice_job(voice_rng, lang, kind == "test", natural[i]), "sentence": s})
    return speech, jobs, bank, rng


def _check_engines(voice_ids: set[str]) -> None:
    """Fail before any work, naming what to install, when an engine of the plan is missing here."""
    reasons = festival.missing(festival_voices(voice_ids))
    if any(Voice.parse(v).engine == "piper" for v in voice_ids):
        reasons += piper.missing()
    if reasons:
        raise RuntimeError("cannot build the synthetic corpus: " + "; ".join(reasons))


def merged_sizes(sizes: dict | None, defaults: dict) -> dict:
    """A corpus's default sizes with the caller's overrides; a key the corpus does not have is an error."""
    unknown = set(sizes or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown corpus size keys {sorted(unknown)}; expected {sorted(defaults)}")
    return {**defaults, **(sizes or {})}


def _complete(out_dir: Path, fp: str) -> bool:
    meta = out_dir / "corpus.json"
    if not meta.is_file():
        return False
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("fingerprint") != fp:
        return False
    for name in info.get("manifests", []):
        path = out_dir / name
        if not path.is_file():
            return False
        if any("audio_path" in r and not os.path.isfile(r["audio_path"]) for r in read_manifest(path)):
            return False
    return True


def synthesize_corpus(out_dir: Path, seed: int = 0, sizes: dict | None = None, workers: int = 2,
                      progress: bool = True, natural_voices: bool = True) -> Path:
    """Build (or reuse) the corpus in ``out_dir`` and return ``out_dir``.

    ``sizes`` overrides entries of ``DEFAULT_SIZES`` ("train"/"dev" are per language).
    ``natural_voices=False`` builds an espeak-only corpus (another fingerprint): for quick tests
    and machines without Festival. With natural voices, a missing engine is an error that names
    what to install, never a silent fallback.
    """
    out_dir = Path(out_dir)
    sizes = merged_sizes(sizes, DEFAULT_SIZES)
    fp = fingerprint(seed, sizes, natural_voices)
    if _complete(out_dir, fp):
        log.debug("corpus up to date: %s (fingerprint %s)", out_dir, fp)
        return out_dir

    from tqdm.auto import tqdm

    speech, jobs, bank, rng = _plan(seed, sizes, natural_voices)
    voice_rng = random.Random(f"borealis-webinar-voices-{seed}")
    # webinars: alternate en/ru, the second pair telephone-band; planned here, rendered in shards
    web_tasks = []
    for i in range(sizes["webinar"]):
        lang = ("en", "ru")[i % 2]
        rid = f"webinar-{lang}-{i:03d}"
        plan = plan_webinar(bank, "webinar", lang, rng, webinar_speakers(lang, voice_rng, natural_voices),
                            telephone=(i // 2) % 2 == 1, min_seconds=WEBINAR_PLAN_SECONDS[0],
                            max_seconds=WEBINAR_PLAN_SECONDS[1])
        web_tasks.append({"kind": "webinar", "plan": plan, "id": rid, "language": lang,
                          "audio": f"audio/webinar/{rid}.wav"})
    all_jobs = [j for js in jobs.values() for j in js]
    _check_engines({j["voice"] for j in all_jobs} | {v for w in web_tasks for v in w["plan"]["speakers"]})
    with building_folder(out_dir) as tmp:
        for split, js in jobs.items():
            (tmp / "audio" / split).mkdir(parents=True, exist_ok=True)
            for j in js:
                j["audio"] = f"audio/{split}/{j['id']}.wav"
        (tmp / "audio" / "webinar").mkdir(parents=True, exist_ok=True)
        for t in all_jobs + web_tasks:
            t["path"] = str(tmp / t["audio"])
        payload = [{"kind": "clip", **{k: j[k] for k in ("text", "voice", "rate", "pitch", "length_scale", "path")}}
                   for j in all_jobs]
        clip_shards = _shards(all_jobs)
        shards = [[payload[i] for i in idx] for idx in clip_shards] + [[w] for w in web_tasks]
        results: list[list[dict]] = []
        bar = tqdm(total=len(payload) + len(web_tasks), desc="synthesising", unit="clip", disable=not progress)
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(1, min(workers, len(shards))), maxtasksperchild=1) as pool:
            for res in pool.imap(_render_shard, list(enumerate(shards))):
                results.append(res)
                bar.update(len(res))
        bar.close()
        for idx, res in zip(clip_shards, results):
            for i, r in zip(idx, res):
                all_jobs[i]["duration"] = r["duration"]

        manifests = {}
        for split, js in jobs.items():
            rows = [{"id": j["id"], "audio": j["audio"], "text": j["text"], "language": j["language"],
                     "duration": j["duration"], **_voice_fields(j),
                     "template": j["sentence"].template, "heldout_template": j["sentence"].heldout_template,
                     "heldout_words": list(j["sentence"].heldout_words),
                     "stratum": _stratum(j["sentence"]) if split.startswith("test") else "train"} for j in js]
            write_manifest(tmp / f"{split}.jsonl", rows)
            manifests[split] = rows
        web_rows = []
        for w, res in zip(web_tasks, results[len(clip_shards):]):
            meta = dict(res[0])
            web_rows.append({"id": w["id"], "audio": w["audio"], "text": meta.pop("text"), "language": w["language"],
                             "duration": meta.pop("duration"), "speaker": meta.pop("speaker"), **meta})
        write_manifest(tmp / "webinar.jsonl", web_rows)
        manifests["webinar"] = web_rows

        text_train = bank.text_pool("text_train", rng, sizes["text_train"], cover_heldout=True)
        seen = {p.instruction for p in text_train}
        text_heldout = bank.text_pool("text_heldout", rng, sizes["text_heldout"], cover_heldout=False, seen=seen)
        check_splits(speech, bank, {"text_train": text_train, "text_heldout": text_heldout})
        for name, pairs in (("text_train", text_train), ("text_heldout", text_heldout)):
            write_manifest(tmp / f"{name}.jsonl", [{"id": p.id, "language": p.language, "instruction": p.instruction,
                                                    "answer": p.answer, "kind": p.kind} for p in pairs])

        info = {
            "version": VERSION,
            "seed": seed,
            "sizes": sizes,
            "natural_voices": natural_voices,
            "fingerprint": fp,
            "manifests": [f"{k}.jsonl" for k in manifests] + ["text_train.jsonl", "text_heldout.jsonl"],
            "counts": {**{k: _count(v) for k, v in manifests.items()},
                       "text_train": _count(text_train), "text_heldout": _count(text_heldout)},
            "hours": {k: round(sum(r["duration"] for r in v) / 3600, 4) for k, v in manifests.items()},
            "voices": _voice_summary(manifests),
            "heldout_words": {lang: sorted(m.heldout_tokens) for lang, m in bank.material.items()},
            "templates": {lang: {"train": [t[0] for t in m.train_templates],
                                 "heldout": [t[0] for t in m.heldout_templates]}
                          for lang, m in bank.material.items()},
            "design": ("train/dev: train templates, words and voices; test_*: held-out voices, in three "
                       "strata (shape: held-out template; word: held-out word in a known template; voice: "
                       "new sentence of known words and template); webinar: held-out material; text pools "
                       "contain all words and templates; no sentence in two splits. Voices: half of "
                       "train/dev spoken by natural voices (Festival), half by espeak; test_ru/test_en "
                       "entirely by natural held-out voices (Festival Russian, Piper English), "
                       "test_*_espeak by espeak's held-out voices; a test row's voice_stratum says "
                       "what is new about its voice (new-engine, new-voice, or same-speaker: Festival "
                       "Russian, the reader of the festvox-ru recordings, speaks in training at other "
                       "warps)"),
            "languages": sorted(LANGUAGES),
            "sample_rate": TARGET_SR,
        }
        (tmp / "corpus.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    log.info("corpus written: %s", out_dir)
    return out_dir


def webinar_speakers(language: str, rng: random.Random, natural_voices: bool = True) -> list[str]:
    """Four speakers: up to two held-out voices, the rest training voices.

    With natural voices all four are natural (espeak Russian makes Whisper loop in long-form
    too: one of two such Russian webinars did); Russian has one natural held-out voice, so its
    webinars hear the festvox-ru reader at four warps.
    """
    kind = "natural" if natural_voices else "espeak"
    held = voices(language, True, kind) or voices(language, True, "espeak")
    train = voices(language, False, kind) or voices(language, False, "espeak")
    chosen = rng.sample(held, min(2, len(held)))
    return [v.id for v in chosen + rng.sample(train, 4 - len(chosen))]


def _voice_fields(job: dict) -> dict:
    """Manifest fields about who speaks: engine, voice id (``speaker``), its split stratum, parameters."""
    voice = Voice.parse(job["voice"])
    params = ({"rate_wpm": job["rate"], "pitch": job["pitch"]} if voice.engine == "espeak"
              else {"length_scale": job["length_scale"]} if voice.engine == "piper" else {})
    return {"speaker": voice.id, "engine": voice.engine, "voice_stratum": voice_stratum(voice, job["language"]),
            **params}


def _voice_summary(manifests: dict) -> dict:
    """Which voices speak in which split, what is new about each test voice, and who they are."""
    used = {split: sorted({r["speaker"] for r in rows}) for split, rows in manifests.items() if split != "webinar"}
    used["webinar"] = sorted({s for r in manifests["webinar"] for s in r["speaker"].split(",")})
    everyone = sorted({v for vs in used.values() for v in vs})
    strata = {lang: {v.id: voice_stratum(v, lang) for v in voices(lang, heldout=True)} for lang in ("ru", "en")}
    return {**used, "strata": strata, "who": {v: describe(Voice.parse(v)) for v in everyone}}


def _stratum(s) -> str:
    """What is new in a test sentence: its shape, a word, or only the voice."""
    return "shape" if s.heldout_template else "word" if s.heldout_words else "voice"


def _count(rows) -> dict:
    out: dict[str, int] = {}
    for r in rows:
        lang = r["language"] if isinstance(r, dict) else r.language
        out[lang] = out.get(lang, 0) + 1
    return dict(sorted(out.items()))
