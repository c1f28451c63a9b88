"""Decode eval sets with a transcriber, keep raw hypotheses, score them under one protocol.

Decoding sorts clips by duration and decodes whole batches; the first batch is decoded once
untimed as a warm-up, so RTFx (audio seconds / decoding seconds) is measured as ASR
leaderboards do. Scoring normalises only here, never the stored hypotheses.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from borealis_eval.paths import cache_root

from borealis_eval.data.sources import AudioItem
from borealis_eval.evaluate.failures import cap_hypothesis, failure_metrics
from borealis_eval.evaluate.metrics import UttScore, paired_test, score_records, score_utterances
from borealis_eval.evaluate.normalize import normalizer_for_language

SAMPLE_RATE = 16_000
TranscribeFn = Callable[[list[str], str], list[str]]  # (item ids, language) -> raw texts


@dataclass
class SetResult:
    name: str
    language: str
    records: list[dict]
    metrics: dict[str, float]
    normalizer: str


def set_language(items: list[AudioItem]) -> str:
    """The set's language, or 'mixed' when its items are in several (scored per text's script)."""
    langs = Counter(it.language for it in items)
    return next(iter(langs)) if len(langs) == 1 else "mixed"


def decode_set(items: list[AudioItem], durations: dict[str, float], transcribe: TranscribeFn,
               language: str, batch_size: int, desc: str = "decoding") -> tuple[list[dict], float]:
    """Raw hypotheses for `items` (same order) and the timed decoding seconds."""
    order = sorted(range(len(items)), key=lambda i: -durations[items[i].id])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if batches:  # warm-up: allocator, kernels, caches; not timed
        transcribe([items[i].id for i in batches[-1][:2]], language)
    hyps: dict[int, str] = {}
    seconds = 0.0
    for b in tqdm(batches, desc=desc, unit="batch", leave=False):
        t = time.perf_counter()
        out = transcribe([items[i].id for i in b], language)
        seconds += time.perf_counter() - t
        hyps.update(zip(b, out))
    records = [
        {"id": it.id, "language": it.language, "duration": round(durations[it.id], 3),
         "speaker": it.speaker, "ref": it.text, "hyp": hyps[i]}
        for i, it in enumerate(items)
    ]
    return records, seconds


def score_set(name: str, records: list[dict], language: str, decode_seconds: float | None,
              n_boot: int = 1000) -> SetResult:
    """All metrics of one eval set, under the language's normaliser plus the raw/basic checks."""
    norm = normalizer_for_language(language)
    main = score_records(records, norm, n_boot=n_boot)
    m: dict[str, float] = {k: float(v) for k, v in main.items() if isinstance(v, (int, float))}
    for alt in ("raw", "basic"):
        s = score_records(records, alt, n_boot=100)
        m[f"wer_{alt}"] = float(s["wer"])
    fails = failure_metrics([r["ref"] for r in records], [r["hyp"] for r in records], language,
                            languages=[r.get("language", "") for r in records] if language == "mixed" else None)
    m.update({f"fail_{k}": float(v) for k, v in fails.items() if k != "n_utts" and isinstance(v, (int, float))})
    audio = sum(r["duration"] for r in records)
    if decode_seconds:
        m["rtfx"] = audio / decode_seconds
    m["audio_seconds"] = audio
    return SetResult(name, language, records, m, norm.tag)


def metrics_for_mlflow(res: SetResult) -> dict[str, float]:
    """'wer' -> 'wer/<set>' etc.; NaN metrics are dropped (MLflow stores them, plots choke)."""
    return {f"{k}/{res.name}": v for k, v in res.metrics.items() if not (isinstance(v, float) and math.isnan(v))}


def windows(wave: np.ndarray, seconds: float) -> list[np.ndarray]:
    """Cut long audio into consecutive windows of at most `seconds` (the last may be shorter)."""
    n = int(seconds * SAMPLE_RATE)
    return [wave[s : s + n] for s in range(0, max(1, len(wave)), n)] if len(wave) > n else [wave]


def utt_scores(records: list[dict], language: str) -> list[UttScore]:
    """Per-utterance scores under the set's protocol (normaliser + the same hypothesis cap)."""
    norm = normalizer_for_language(language)
    refs = [norm(r["ref"]) for r in records]
    hyps = [cap_hypothesis(norm(r["hyp"] or ""), len(ref.split())) for r, ref in zip(records, refs)]
    return score_utterances(refs, hyps, alignment=False)


def paired_rows(systems: dict[str, list[UttScore]], n_boot: int = 1000) -> list[dict]:
    """Paired bootstrap of every system against every other on the same utterances."""
    names = list(systems)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            r = paired_test(systems[a], systems[b], "wer", n_boot=n_boot)
            rows.append({"a": a, "b": b, "delta_wer": r.delta, "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "p_value": r.p_value, "n": r.n})
    return rows


class DecodeCache:
    """Raw hypotheses keyed by model identity, eval-set content and decoding parameters.

    Re-scoring (another normaliser, another statistic) never decodes again; a cache entry is
    one JSONL file written atomically, so a crash never leaves a partial entry that looks valid.
    """

    def __init__(self, root: "os.PathLike | None" = None):
        self.dir = os.fspath(root or cache_root() / "decodes")
        os.makedirs(self.dir, exist_ok=True)
        self.hits = 0

    @staticmethod
    def key(model_id: str, set_name: str, items: list[AudioItem], audio_keys: list[str], params: dict) -> str:
        h = hashlib.sha1(json.dumps({"model": model_id, "set": set_name, "params": params}, sort_keys=True).encode())
        for it, a in zip(items, audio_keys):
            h.update(f"{it.id}\0{it.text}\0{a}\n".encode())
        return h.hexdigest()

    def get(self, key: str) -> tuple[list[dict], float] | None:
        path = os.path.join(self.dir, key + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            records, seconds = data["records"], float(data["seconds"])
            if not isinstance(records, list):
                raise TypeError("records is not a list")
        except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: decode again
            return None
        self.hits += 1
        return records, seconds

    def put(self, key: str, records: list[dict], seconds: float) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"records": records, "seconds": seconds}, f, ensure_ascii=False)
            os.replace(tmp, os.path.join(self.dir, key + ".json"))
        finally:
            if os.path.exists(tmp):  # a failed write leaves no debris
                os.unlink(tmp)
