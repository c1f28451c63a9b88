"""Build the synthetic ru/en speech corpus (train/dev/test/webinar audio + text-only pool).

Layout (notes/CONTRACT.md): train.jsonl dev.jsonl test_ru.jsonl test_en.jsonl webinar.jsonl
text_train.jsonl text_heldout.jsonl corpus.json audio/<split>/<id>.wav (16 kHz mono PCM_16).
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
import shutil
from pathlib import Path

import numpy as np

from .espeak import TARGET_SR, synthesize
from .manifest import read_manifest, write_manifest
from .sentences import LANGUAGES, SentenceBank, check_splits
from .webinar import plan_webinar, render_webinar

log = logging.getLogger(__name__)

VERSION = "synth-ruen-3"  # 2: test sets in three strata (voice / word / shape); 3: webinars of 1-1.5 min
DEFAULT_SIZES = {
    "train": 1200,  # per language
    "dev": 100,  # per language
    "test_ru": 64,
    "test_en": 64,
    "webinar": 4,  # alternating en, ru
    "text_train": 3000,  # at least one pair per held-out word/template, both languages
    "text_heldout": 200,
}
# planned webinar length; espeak lands a few seconds under the plan, so recordings come out 60-85 s
WEBINAR_PLAN_SECONDS = (64.0, 88.0)
# espeak voice variants never heard in training audio (in any language)
HELDOUT_VARIANTS = ("m5", "m7", "f4")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "f1", "f2", "f3")
VOICE_BASES = {"en": ("en-us", "en"), "ru": ("ru",)}
MIN_SECONDS, MAX_SECONDS = 1.5, 6.0
# libespeak-ng carries state between utterances (e.g. its pitch-flutter phase), so a clip's
# samples depend on what the process spoke before. Clips are therefore rendered in a fixed
# number of shards, each in a fresh process: the audio is the same whatever ``workers`` is.
N_SHARDS = 8


def voices(language: str, heldout: bool) -> list[str]:
    variants = HELDOUT_VARIANTS if heldout else TRAIN_VARIANTS
    return [f"{b}+{v}" for b in VOICE_BASES[language] for v in variants]


def fingerprint(seed: int, sizes: dict) -> str:
    blob = json.dumps({"version": VERSION, "seed": seed, "sizes": sizes}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _render_clip(job: dict) -> float:
    """Synthesise one clip to ``job['path']``; returns its duration in seconds (1.5-6 s)."""
    import soundfile as sf

    rate = job["rate"]
    audio = synthesize(job["text"], job["speaker"], rate, job["pitch"])
    while len(audio) > MAX_SECONDS * TARGET_SR and rate < 400:  # speak faster rather than cut words
        rate = int(rate * len(audio) / (0.95 * MAX_SECONDS * TARGET_SR)) + 1
        audio = synthesize(job["text"], job["speaker"], rate, job["pitch"])
    if len(audio) < MIN_SECONDS * TARGET_SR:
        pad = int(MIN_SECONDS * TARGET_SR) - len(audio)
        audio = np.pad(audio, (pad // 2, pad - pad // 2))
    sf.write(job["path"], audio, TARGET_SR, subtype="PCM_16")
    return round(len(audio) / TARGET_SR, 3)


def _render_task(task: dict) -> dict:
    if task["kind"] == "clip":
        return {"duration": _render_clip(task)}
    import soundfile as sf
    audio, meta = render_webinar(task["plan"])
    sf.write(task["path"], audio, TARGET_SR, subtype="PCM_16")
    return {**meta, "duration": round(len(audio) / TARGET_SR, 3)}


def _render_shard(tasks: list[dict]) -> list[dict]:
    """Runs in a fresh process (see N_SHARDS)."""
    return [_render_task(t) for t in tasks]


def _plan(seed: int, sizes: dict) -> tuple[dict, dict, SentenceBank, random.Random]:
    """Choose every sentence, voice and speed (cheap, deterministic, before any audio)."""
    rng = random.Random(f"borealis-corpus-{seed}")
    bank = SentenceBank(seed)
    speech: dict[str, list] = {"train": [], "dev": [], "test_ru": [], "test_en": []}
    jobs: dict[str, list[dict]] = {k: [] for k in speech}
    for split, langs, kind, n in (("train", ("ru", "en"), "train", sizes["train"]),
                                  ("dev", ("ru", "en"), "train", sizes["dev"]),
                                  ("test_ru", ("ru",), "test", sizes["test_ru"]),
                                  ("test_en", ("en",), "test", sizes["test_en"])):
        for lang in langs:
            for i, s in enumerate(bank.draw_many(split, rng, lang, kind, n)):
                speech[split].append(s)
                if kind == "train":
                    voice, rate, pitch = rng.choice(voices(lang, False)), rng.randint(140, 180), rng.randint(35, 65)
                else:  # held-out voices, wider speed range
                    voice, rate, pitch = rng.choice(voices(lang, True)), rng.randint(120, 200), rng.randint(30, 70)
                jobs[split].append({"id": f"{split}-{lang}-{i:05d}", "text": s.text, "language": lang,
                                    "speaker": voice, "rate": rate, "pitch": pitch, "sentence": s})
    return speech, jobs, bank, rng


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
                      progress: bool = True) -> Path:
    """Build (or reuse) the corpus in ``out_dir`` and return ``out_dir``.

    ``sizes`` overrides entries of ``DEFAULT_SIZES`` ("train"/"dev" are per language).
    """
    out_dir = Path(out_dir)
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f"unknown corpus size keys {sorted(unknown)}; expected {sorted(DEFAULT_SIZES)}")
    fp = fingerprint(seed, sizes)
    if _complete(out_dir, fp):
        log.info("corpus up to date: %s (fingerprint %s)", out_dir, fp)
        if progress:
            print(f"corpus up to date: {out_dir}")
        return out_dir

    from tqdm.auto import tqdm

    speech, jobs, bank, rng = _plan(seed, sizes)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        all_jobs = []
        for split, js in jobs.items():
            (tmp / "audio" / split).mkdir(parents=True, exist_ok=True)
            for j in js:
                j["audio"] = f"audio/{split}/{j['id']}.wav"
                j["path"] = str(tmp / j["audio"])
                all_jobs.append(j)
        payload = [{"kind": "clip", **{k: j[k] for k in ("text", "speaker", "rate", "pitch", "path")}}
                   for j in all_jobs]
        # webinars: alternate en/ru, the second pair telephone-band; planned here, rendered in shards
        (tmp / "audio" / "webinar").mkdir(parents=True, exist_ok=True)
        web_tasks = []
        for i in range(sizes["webinar"]):
            lang = ("en", "ru")[i % 2]
            rid = f"webinar-{lang}-{i:03d}"
            plan = plan_webinar(bank, "webinar", lang, rng, voices(lang, False), voices(lang, True),
                                telephone=(i // 2) % 2 == 1, min_seconds=WEBINAR_PLAN_SECONDS[0],
                                max_seconds=WEBINAR_PLAN_SECONDS[1])
            web_tasks.append({"kind": "webinar", "plan": plan, "id": rid, "language": lang,
                              "audio": f"audio/webinar/{rid}.wav", "path": str(tmp / "audio" / "webinar" / f"{rid}.wav")})
        shards = [payload[k::N_SHARDS] for k in range(N_SHARDS)] + [[w] for w in web_tasks]
        results: list[list[dict]] = []
        bar = tqdm(total=len(payload) + len(web_tasks), desc="synthesising", unit="clip", disable=not progress)
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(1, min(workers, len(shards))), maxtasksperchild=1) as pool:
            for res in pool.imap(_render_shard, shards):
                results.append(res)
                bar.update(len(res))
        bar.close()
        for k in range(N_SHARDS):
            for j, r in zip(all_jobs[k::N_SHARDS], results[k]):
                j["duration"] = r["duration"]

        manifests = {}
        for split, js in jobs.items():
            rows = [{"id": j["id"], "audio": j["audio"], "text": j["text"], "language": j["language"],
                     "duration": j["duration"], "speaker": j["speaker"], "rate_wpm": j["rate"],
                     "template": j["sentence"].template, "heldout_template": j["sentence"].heldout_template,
                     "heldout_words": list(j["sentence"].heldout_words),
                     "stratum": _stratum(j["sentence"]) if split.startswith("test") else "train"} for j in js]
            write_manifest(tmp / f"{split}.jsonl", rows)
            manifests[split] = rows
        web_rows = []
        for w, res in zip(web_tasks, results[N_SHARDS:]):
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
            "fingerprint": fp,
            "manifests": [f"{k}.jsonl" for k in manifests] + ["text_train.jsonl", "text_heldout.jsonl"],
            "counts": {**{k: _count(v) for k, v in manifests.items()},
                       "text_train": _count(text_train), "text_heldout": _count(text_heldout)},
            "hours": {k: round(sum(r["duration"] for r in v) / 3600, 4) for k, v in manifests.items()},
            "voices": {"train": sorted({r["speaker"] for r in manifests["train"]}),
                       "dev": sorted({r["speaker"] for r in manifests["dev"]}),
                       "test_ru": voices("ru", True), "test_en": voices("en", True),
                       "heldout_variants": list(HELDOUT_VARIANTS)},
            "heldout_words": {lang: sorted(m.heldout_tokens) for lang, m in bank.material.items()},
            "templates": {lang: {"train": [t[0] for t in m.train_templates],
                                 "heldout": [t[0] for t in m.heldout_templates]}
                          for lang, m in bank.material.items()},
            "design": ("train/dev: train templates, words and voices; test_*: held-out voices, in three "
                       "strata (shape: held-out template; word: held-out word in a known template; voice: "
                       "new sentence of known words and template); webinar: held-out material; text pools "
                       "contain all words and templates; no sentence in two splits"),
            "languages": sorted(LANGUAGES),
            "sample_rate": TARGET_SR,
        }
        (tmp / "corpus.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")

        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("corpus written: %s", out_dir)
    return out_dir


def _stratum(s) -> str:
    """What is new in a test sentence: its shape, a word, or only the voice."""
    return "shape" if s.heldout_template else "word" if s.heldout_words else "voice"


def _count(rows) -> dict:
    out: dict[str, int] = {}
    for r in rows:
        lang = r["language"] if isinstance(r, dict) else r.language
        out[lang] = out.get(lang, 0) + 1
    return dict(sorted(out.items()))
