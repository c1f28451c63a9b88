"""Decode eval sets with a transcriber, keep raw hypotheses, score them under one protocol.

Decoding sorts clips by duration and decodes whole batches; the first batch is decoded once
untimed as a warm-up, so RTFx (audio seconds / decoding seconds) is measured as ASR
leaderboards do. Scoring normalises only here, never the stored hypotheses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from tqdm.auto import tqdm

from borealis_eval import records
from borealis_eval.data.sources import AudioItem
from borealis_eval.evaluate.failures import failure_metrics
from borealis_eval.evaluate.metrics import UttScore, paired_test
from borealis_eval.evaluate.normalize import normalizer_for_language, whisper_normalizer_for_language
from borealis_eval.evaluate.protocol import score_records, utt_scores

TranscribeFn = Callable[[list[str], str], list[str]]  # (item ids, language) -> raw texts


@dataclass
class SetResult:
    name: str
    language: str
    records: list[dict]
    metrics: dict[str, float]
    normalizer: str


def decode_set(items: list[AudioItem], durations: dict[str, float], transcribe: TranscribeFn,
               language: str, batch_size: int, desc: str = "decoding", progress: bool = True,
               warmup: bool = True) -> tuple[list[dict], float]:
    """Raw hypotheses for `items` (same order) and the timed decoding seconds (after an untimed
    warm-up on two clips, unless `warmup` is off: then the seconds include first-call costs)."""
    order = sorted(range(len(items)), key=lambda i: -durations[items[i].id])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if batches and warmup:  # allocator, kernels, caches; not timed
        transcribe([items[i].id for i in batches[-1][:2]], language)
    hyps: dict[int, str] = {}
    seconds = 0.0
    for b in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress):
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
    """All metrics of one eval set, under the language's normaliser, plus the raw/basic checks and
    Whisper's own normaliser (`wer_whisper`: the protocol of published leaderboards)."""
    norm = normalizer_for_language(language)
    main = score_records(records, norm, n_boot=n_boot)
    m: dict[str, float] = {k: float(v) for k, v in main.items() if isinstance(v, (int, float))}
    for alt in ("raw", "basic"):
        s = score_records(records, alt, n_boot=100)
        m[f"wer_{alt}"] = float(s["wer"])
    whisper = score_records(records, whisper_normalizer_for_language(language), n_boot=n_boot)
    m.update({"wer_whisper": float(whisper["wer"]), "wer_whisper_ci_low": float(whisper["wer_ci_low"]),
              "wer_whisper_ci_high": float(whisper["wer_ci_high"])})
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
    return {records.set_metric(k, res.name): v for k, v in res.metrics.items()
            if not (isinstance(v, float) and math.isnan(v))}


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


class PairedScores:
    """Per-utterance scores of every system of a study (eval set -> system -> scores), and each
    system's ΔWER and p-value against the main baseline where both were scored on a set."""

    def __init__(self, main: str, n_boot: int = 1000):
        self.main, self.n_boot = main, n_boot
        self.by_set: dict[str, dict[str, list[UttScore]]] = {}

    def put(self, set_name: str, system: str, scores: list[UttScore]) -> None:
        self.by_set.setdefault(set_name, {})[system] = scores

    def add(self, system: str, results: list[SetResult]) -> None:
        for r in results:
            self.put(r.name, system, utt_scores(r.records, r.language))

    def systems(self) -> set[str]:
        return {n for by in self.by_set.values() for n in by}

    def vs_main(self, system: str) -> dict[str, float]:
        """ΔWER and p-value of `system` against the main baseline, per set where both were scored."""
        out = {}
        for set_name, by_system in self.by_set.items():
            if system in by_system and self.main in by_system and system != self.main:
                row = paired_rows({system: by_system[system], self.main: by_system[self.main]}, self.n_boot)[0]
                out[records.delta_vs_baseline(set_name)] = row["delta_wer"]
                out[records.p_vs_baseline(set_name)] = row["p_value"]
        return out
