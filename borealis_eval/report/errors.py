"""Error analysis from per-utterance predictions: worst utterances and WER slices.

Reads ``predictions/<set>.jsonl`` (raw hypotheses, see records.py) of a few runs only
(the best variant and the baselines), re-scores them under the logged protocol (the set's
normaliser, the same hypothesis cap) with word alignments, and keeps what the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from borealis_eval.evaluate import protocol
from borealis_eval.evaluate.metrics import UttScore
from borealis_eval.evaluate.normalize import Normalizer, get_normalizer, normalizer_for_language
from borealis_eval.report.collect import ReportData

N_WORST = 5
MAX_BASELINES = 2
#: Duration bucket edges in seconds (left-closed); labels are built from them.
DURATION_EDGES = (0.0, 3.0, 6.0, 10.0, 20.0, 40.0, float("inf"))
MAX_SPEAKERS = 8  # per set; the rest are pooled as "other"
CONTEXT = 3  # equal words kept on each side of an error when long equal runs are collapsed


@dataclass(frozen=True)
class Segment:
    """One piece of an aligned diff: op in equal/substitute/delete/insert/gap."""

    op: str
    ref: str = ""
    hyp: str = ""


@dataclass(frozen=True)
class Utterance:
    system: str  # display label, e.g. "best: ru50_en50-tf0.15-s0"
    run_id: str
    eval_set: str
    id: str
    speaker: str
    language: str
    duration: float
    wer: float  # percent
    sub: int
    dele: int
    ins: int
    ref_words: int
    segments: tuple[Segment, ...]

    @property
    def plain(self) -> str:
        """wdiff-style text: ``[-deleted-]``, ``{+inserted+}``, ``{ref->hyp}``, ``…``."""
        parts = []
        for s in self.segments:
            if s.op == "equal":
                parts.append(s.ref)
            elif s.op == "substitute":
                parts.append(f"{{{s.ref}->{s.hyp}}}")
            elif s.op == "delete":
                parts.append(f"[-{s.ref}-]")
            elif s.op == "insert":
                parts.append(f"{{+{s.hyp}+}}")
            else:
                parts.append("…")
        return " ".join(parts)


@dataclass
class ErrorAnalysis:
    systems: dict[str, str] = field(default_factory=dict)  # label -> run id
    worst: dict[str, list[Utterance]] = field(default_factory=dict)  # eval set -> utterances
    slices: dict[str, pd.DataFrame] = field(default_factory=dict)  # kind -> long table
    missing: list[str] = field(default_factory=list)  # "<label>: <set>" without predictions

    @property
    def empty(self) -> bool:
        return not self.worst and not self.slices


def analyse(data: ReportData, n_worst: int = N_WORST) -> ErrorAnalysis:
    """Worst utterances and per-slice WER for the best variant and the baseline(s)."""
    systems = _systems(data)
    out = ErrorAnalysis(systems=systems)
    if not systems or not data.eval_sets:
        return out
    frames = []
    for label, run_id in systems.items():
        records = data.predictions.get(run_id, {})
        for s in data.eval_sets:
            if s not in records:
                out.missing.append(f"{label}: {s}")
                continue
            frame = _score(records[s], _normalizer(data, s, records[s]))
            frames.append(frame.assign(system=label, run_id=run_id, eval_set=s))
    if not frames:
        return out
    scored = pd.concat(frames, ignore_index=True)
    for s in data.eval_sets:
        worst = []
        for label in systems:
            rows = scored[(scored["eval_set"] == s) & (scored["system"] == label)]
            rows = rows[rows["edits"] > 0].sort_values(
                ["wer", "edits", "id"], ascending=[False, False, True], kind="stable")
            worst += [_utterance(r) for r in rows.head(n_worst).itertuples()]
        if worst:
            out.worst[s] = worst
    out.slices = {
        "duration": _slice(scored, "duration_bucket", list(systems)),
        "speaker": _slice(scored, "speaker_slice", list(systems)),
        "language": _slice(scored, "language", list(systems)),
    }
    return out


def _systems(data: ReportData) -> dict[str, str]:
    out = {}
    best = data.best_variant()
    if best is not None:
        out[f"best: {data.runs.at[best, 'variant']}"] = best
    for run_id in list(data.baselines.index)[:MAX_BASELINES]:
        name = data.runs.at[run_id, "variant"]
        out["baseline" if name == "baseline" else f"baseline: {name}"] = run_id
    return out


def _normalizer(data: ReportData, eval_set: str, records: list[dict]) -> Normalizer:
    tag = data.normalizers.get(eval_set)
    if tag:
        try:
            return get_normalizer(tag)
        except KeyError:  # logged by another version: the language's current normaliser
            pass
    languages = pd.Series([r.get("language") or "" for r in records])
    return normalizer_for_language(languages.mode().iat[0] if len(languages) else "")


def _score(records: list[dict], norm: Normalizer) -> pd.DataFrame:
    """Per-utterance scores with alignments under the scoring protocol (normalise, cap)."""
    scores = protocol.score(records, norm, alignment=True).utts
    frame = pd.DataFrame({
        "id": [str(r.get("id", "")) for r in records],
        "speaker": [str(r.get("speaker") or "?") for r in records],
        "language": [str(r.get("language") or "?") for r in records],
        "duration": pd.to_numeric(pd.Series([r.get("duration") for r in records]), errors="coerce"),
        "ref_words": [u.ref_words for u in scores],
        "sub": [u.sub for u in scores],
        "dele": [u.dele for u in scores],
        "ins": [u.ins for u in scores],
        "score": scores,
    })
    frame["edits"] = frame["sub"] + frame["dele"] + frame["ins"]
    frame["wer"] = [100.0 * u.wer for u in scores]
    frame["duration_bucket"] = _duration_bucket(frame["duration"])
    top = frame["speaker"].value_counts().index[:MAX_SPEAKERS]
    rest = frame["speaker"].nunique() - len(top)
    frame["speaker_slice"] = frame["speaker"].where(
        frame["speaker"].isin(top), f"other ({rest} speakers)")
    return frame


def _duration_bucket(seconds: pd.Series) -> pd.Series:
    labels = []
    for lo, hi in zip(DURATION_EDGES, DURATION_EDGES[1:]):
        labels.append(f"≥ {lo:g} s" if np.isinf(hi) else f"{lo:g}–{hi:g} s")
    buckets = pd.cut(seconds, list(DURATION_EDGES), right=False, labels=labels)
    return buckets.astype(str).where(seconds.notna(), "unknown")


def _slice(scored: pd.DataFrame, column: str, systems: list[str]) -> pd.DataFrame:
    """Corpus WER (total edits / total reference words) per (set, slice value, system).

    Wide table: eval_set, slice, n (utterances of the first system), then one WER column
    per system label (percent).
    """
    grouped = scored.groupby(["eval_set", column, "system"], observed=True, sort=False)
    sums = grouped[["edits", "ref_words"]].sum()
    counts = grouped.size()
    wer = 100.0 * sums["edits"] / sums["ref_words"].where(sums["ref_words"] > 0)
    wide = wer.unstack("system").reindex(columns=systems)
    n = counts.unstack("system").reindex(columns=systems).max(axis=1)
    wide.insert(0, "n", n)
    wide = wide.reset_index().rename(columns={column: "slice"})
    order = {s: i for i, s in enumerate(dict.fromkeys(scored["eval_set"]))}
    if column == "duration_bucket":
        rank = {label: i for i, label in enumerate(_duration_bucket(pd.Series(DURATION_EDGES[:-1])))}
        key = wide["slice"].map(rank).fillna(len(rank))
    else:
        key = -wide["n"]
    wide = wide.assign(_set=wide["eval_set"].map(order), _key=key)
    return wide.sort_values(["_set", "_key", "slice"], kind="stable").drop(columns=["_set", "_key"])


def _utterance(row) -> Utterance:
    score: UttScore = row.score
    return Utterance(
        system=row.system, run_id=row.run_id, eval_set=row.eval_set, id=row.id,
        speaker=row.speaker, language=row.language,
        duration=float(row.duration) if pd.notna(row.duration) else float("nan"),
        wer=float(row.wer), sub=int(row.sub), dele=int(row.dele), ins=int(row.ins),
        ref_words=int(row.ref_words), segments=collapse(score.alignment),
    )


def collapse(ops, context: int = CONTEXT) -> tuple[Segment, ...]:
    """Alignment ops as segments, equal runs longer than 2*context+1 shortened to a gap."""
    segments = [Segment(op, ref or "", hyp or "") for op, ref, hyp in ops]
    out: list[Segment] = []
    i = 0
    while i < len(segments):
        if segments[i].op != "equal":
            out.append(segments[i])
            i += 1
            continue
        j = i
        while j < len(segments) and segments[j].op == "equal":
            j += 1
        run = segments[i:j]
        head = context if i > 0 else 0  # keep context after the previous error
        tail = context if j < len(segments) else 0  # and before the next one
        if len(run) > head + tail + 1:
            out += run[:head] + [Segment("gap")] + (run[len(run) - tail:] if tail else [])
        else:
            out += run
        i = j
    return tuple(out)
