"""Turn a configured source into items: JSONL manifests, the synthetic corpus, datasets.

Audio is never decoded by `datasets` (its torchcodec backend needs FFmpeg): columns are cast
to `Audio(decode=False)` and the bytes/paths are decoded with soundfile, resampled with soxr.
An item that cannot be used (missing, corrupt, empty, NaN, outside the set's duration range)
is skipped and listed (`load_waves`); a set fails only when too much of it is broken
(`check_bad`, `data.max_bad_share`).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from borealis_eval.audio import SAMPLE_RATE
from borealis_eval.config import (
    AudioSet,
    HFSource,
    HFTextSource,
    ManifestSource,
    SynthSource,
    TextPool,
)
from borealis_eval.data.manifest import load_audio, read_manifest
from borealis_eval.errors import AudioError, BadDataError, DataError

log = logging.getLogger("borealis_eval")
# outside the set's own duration limits: listed with the bad items, but a choice, not a defect
FILTERED_KINDS = ("too_long", "too_short")


@dataclass
class AudioItem:
    id: str
    text: str
    language: str
    duration: float | None = None
    speaker: str = ""
    audio_path: str | None = None
    audio_bytes: bytes | None = field(default=None, repr=False)
    # a row of a map-style dataset: returns its {bytes, path} on demand, so a large set's audio
    # stays in the memory-mapped Arrow files instead of in this list
    fetch: Callable[[], dict] | None = field(default=None, repr=False, compare=False)
    # (min, max) seconds of the item's set, checked on the file header when decoding (hub rows
    # come without a duration, so the set's filter can only apply then)
    limits: tuple[float, float] | None = None

    def load(self) -> np.ndarray:
        """16 kHz mono float32; AudioError (with a `kind`) when the clip cannot be used."""
        ref = (self.fetch() or {}) if self.fetch else {"bytes": self.audio_bytes, "path": self.audio_path}
        if ref.get("bytes"):
            return load_audio(io.BytesIO(ref["bytes"]), SAMPLE_RATE, self.limits)
        if ref.get("bytes") is not None:
            raise AudioError(f"{self.id}: audio is empty (0 bytes)", "empty")
        if ref.get("path"):
            return load_audio(ref["path"], SAMPLE_RATE, self.limits)
        raise AudioError(f"{self.id}: item has no audio", "missing")


@dataclass
class TextItem:
    id: str
    language: str
    instruction: str
    answer: str


# ------------------------------------------------------------------ bad items
def set_language(items: list[AudioItem]) -> str:
    """The set's language, or 'mixed' when its items are in several (scored per text's script)."""
    langs = Counter(it.language for it in items)
    return next(iter(langs)) if len(langs) == 1 else "mixed"


def load_waves(items: list[AudioItem], bad: list[dict], set_name: str) -> dict[str, np.ndarray]:
    """Decode items, id -> wave. An unusable clip is skipped and appended to `bad` as
    {set, id, kind, reason} (the run logs them as data/bad_items.jsonl): one broken file in a
    large corpus should cost that file, not the run."""
    waves = {}
    for it in items:
        try:
            waves[it.id] = it.load()
        except AudioError as e:
            bad.append({"set": set_name, "id": it.id, "kind": e.kind, "reason": str(e)})
        except OSError as e:  # permissions, I/O errors, a dataset row that cannot be read
            bad.append({"set": set_name, "id": it.id, "kind": "unreadable", "reason": f"{it.id}: {e}"})
    return waves


def check_bad(bad: list[dict], set_name: str, total: int, max_share: float, what: str = "audio clips") -> None:
    """Raise BadDataError when the broken share of `set_name` exceeds `max_share`, or nothing
    of it is left.

    Clips outside the set's duration range (FILTERED_KINDS) are listed but not counted: the
    limits are the config's choice. A high share usually means a wrong path or column mapping,
    so the message names the set, the counts, the setting and the first few items.
    """
    listed = [b for b in bad if b["set"] == set_name]
    broken = [b for b in listed if b["kind"] not in FILTERED_KINDS]
    if total and len(listed) >= total:
        kinds = Counter(b["kind"] for b in listed)
        raise BadDataError(f"set '{set_name}': none of its {total} {what} is usable "
                           f"({', '.join(f'{n} {k}' for k, n in kinds.most_common())}). First: {_first(listed)}")
    if total and len(broken) / total > max_share:
        raise BadDataError(
            f"set '{set_name}': {len(broken)} of {total} {what} are unusable ({len(broken) / total:.1%}), over the "
            f"allowed data.max_bad_share = {max_share:g}; fix the data or raise data.max_bad_share. "
            f"First: {_first(broken)}")


def _first(bad: list[dict], n: int = 3) -> str:
    return "; ".join(f"{b['id']} [{b['kind']}] {b['reason']}" for b in bad[:n])


# ------------------------------------------------------------------ audio sets
def load_audio_set(spec: AudioSet) -> list[AudioItem]:
    """Items of one configured set: duration filter on known durations, then a deterministic
    subset of max_samples. Every item carries the set's limits for the check on decode."""
    src = spec.source
    if isinstance(src, (ManifestSource, SynthSource)):
        items = _manifest_audio(spec, _manifest_path(spec.name, src))
    else:
        items = _load_hf_audio(spec, src)
    kept = [it for it in items if it.duration is None or spec.min_duration <= it.duration <= spec.max_duration]
    if len(kept) < len(items):
        log.info("set '%s': %d of %d rows outside [%g, %g] s left out", spec.name, len(items) - len(kept),
                 len(items), spec.min_duration, spec.max_duration)
    return _subsample(kept, spec.max_samples)


def _manifest_path(name: str, src: ManifestSource | SynthSource) -> Path:
    path = Path(src.path) if isinstance(src, ManifestSource) else _synth_folder(src) / f"{src.split}.jsonl"
    if not path.is_file():
        raise DataError(f"set '{name}': manifest {path} not found")
    return path


def _manifest_audio(spec: AudioSet, path: Path) -> list[AudioItem]:
    """Manifest rows -> items; a row without `audio` becomes an item that fails as 'missing'."""
    limits = (spec.min_duration, spec.max_duration)
    try:
        return [AudioItem(id=str(r["id"]), text=r["text"], language=spec.language or r.get("language", ""),
                          duration=r.get("duration"), speaker=str(r.get("speaker", "")),
                          audio_path=r.get("audio_path"), limits=limits) for r in read_manifest(path)]
    except KeyError as e:
        raise DataError(f"set '{spec.name}': manifest {path}: a row has no {e} field") from None


def _synth_folder(src: SynthSource) -> Path:
    from borealis_eval.data.synth import synthesize_corpus

    return synthesize_corpus(Path(src.corpus), seed=src.seed)


def _subsample(items: list, n: int | None) -> list:
    """A deterministic random subset of n items, in their original order (all if n is None)."""
    if n is None or len(items) <= n:
        return items
    keep = sorted(np.random.default_rng(0).choice(len(items), n, replace=False))
    return [items[i] for i in keep]


def _hf_dataset(src: HFSource | HFTextSource):
    """The rows of a datasets-backed source; local kinds take `id` as a path."""
    import datasets

    if src.kind == "hf_disk":
        ds = datasets.load_from_disk(src.id)
        return ds[src.split] if isinstance(ds, datasets.DatasetDict) else ds
    if src.kind == "audiofolder":
        return _audiofolder(src)
    streaming = getattr(src, "streaming", False)
    if src.kind in ("parquet", "json"):
        path = Path(src.id)
        if not path.exists():
            raise DataError(f"{src.kind} source {src.id} not found")
        files = {"data_files": {src.split: str(path)}} if path.is_file() else {"data_dir": str(path)}
        return datasets.load_dataset(src.kind, split=src.split, streaming=streaming, **files)
    return datasets.load_dataset(src.id, src.config, split=src.split, revision=src.revision, streaming=streaming)


def _audiofolder(src: HFSource):
    """An audiofolder read without datasets' builder, which encodes audio through torchcodec
    (needs FFmpeg): metadata.csv or .jsonl in <id>/<split>/ or <id>/ maps `file_name` (relative
    to it) to the other columns; the audio column becomes {path} for soundfile."""
    import datasets

    root = Path(src.id)
    folder = root / src.split if (root / src.split).is_dir() else root
    meta = [folder / f"metadata.{ext}" for ext in ("csv", "jsonl") if (folder / f"metadata.{ext}").is_file()]
    if not meta:
        raise DataError(f"audiofolder {folder}: no metadata.csv or metadata.jsonl (file_name + text columns)")
    ds = (datasets.Dataset.from_csv if meta[0].suffix == ".csv" else datasets.Dataset.from_json)(str(meta[0]))
    _require_columns(ds, str(meta[0]), ["file_name"])
    audio = [{"bytes": None, "path": str(folder / f)} for f in ds["file_name"]]
    return ds.add_column(src.audio_column, audio)


def _require_columns(ds, where: str, columns: list[str | None]) -> None:
    names = ds.column_names  # None for a streamed set whose features are unknown
    missing = [c for c in columns if c and names is not None and c not in names]
    if missing:
        raise DataError(f"{where}: no column {', '.join(map(repr, missing))} (columns: {', '.join(names)}); "
                         f"map them with the source's *_column fields")


def _load_hf_audio(spec: AudioSet, src: HFSource) -> list[AudioItem]:
    """Rows -> items. A map-style set is subsampled by row index first and its audio read on
    demand, so only the clips in use ever reach memory; a streamed set yields its first
    max_samples rows (not a random subset: the rest is never read), bytes included."""
    import datasets

    ds = _hf_dataset(src).cast_column(src.audio_column, datasets.Audio(decode=False))
    _require_columns(ds, f"set '{spec.name}'", [src.audio_column, src.text_column, src.language_column])
    if isinstance(ds, datasets.IterableDataset):
        rows = ds.take(spec.max_samples) if spec.max_samples else ds
        return _unique_ids([_audio_item(spec, src, i, r, r[src.audio_column]) for i, r in enumerate(rows)])
    index = _subsample(list(range(len(ds))), spec.max_samples)
    ds = ds.select(index) if len(index) < len(ds) else ds
    audio, meta = ds.select_columns([src.audio_column]), ds.remove_columns([src.audio_column])
    fetch = lambda j: lambda: audio[j][src.audio_column]  # noqa: E731
    return _unique_ids([_audio_item(spec, src, i, r, fetch(j)) for j, (i, r) in enumerate(zip(index, meta))])


def _audio_item(spec: AudioSet, src: HFSource, i: int, row: dict, audio: dict | Callable[[], dict]) -> AudioItem:
    lang = spec.language or src.language or (row.get(src.language_column) if src.language_column else None)
    if not lang:
        raise DataError(f"set '{spec.name}': no language: set `language:` or `source.language_column`")
    eager = isinstance(audio, dict)
    return AudioItem(
        id=str(row.get("id", f"{spec.name}-{i}")), text=str(row[src.text_column] or ""), language=lang,
        speaker=str(row.get("speaker_id", row.get("client_id", ""))), limits=(spec.min_duration, spec.max_duration),
        audio_path=audio.get("path") if eager else None, audio_bytes=audio.get("bytes") if eager else None,
        fetch=None if eager else audio,
    )


def _unique_ids(items: list[AudioItem]) -> list[AudioItem]:
    """Dataset ids need not be unique (FLEURS repeats a sentence's id for each speaker), but
    waves and features are keyed by id: a repeat gets the suffix __<n>."""
    seen: dict[str, int] = {}
    for it in items:
        n = seen[it.id] = seen.get(it.id, -1) + 1
        if n:
            it.id = f"{it.id}__{n}"
    return items


# ------------------------------------------------------------------ text pools
def load_text_pool(pool: TextPool, name: str = "text_pool", bad: list[dict] | None = None,
                   max_bad_share: float | None = None) -> list[TextItem]:
    """Instruction/answer pairs, a deterministic subset of max_samples. Dataset rows without a
    usable pair or language are skipped and listed in `bad`; with `max_bad_share` a pool where
    too many are (usually a wrong column mapping) fails like an audio set."""
    src = pool.source
    bad = [] if bad is None else bad
    if isinstance(src, (ManifestSource, SynthSource)):
        rows = read_manifest(_manifest_path(name, src))
        items = [TextItem(r["id"], r["language"], r["instruction"], r["answer"]) for r in rows]
        total = len(items)
    else:
        items, total = _hf_text_items(src, name, bad)
    if max_bad_share is not None:
        check_bad(bad, name, total, max_bad_share, "text rows")
    return _subsample(items, pool.max_samples)


def _hf_text_items(src: HFTextSource, name: str, bad: list[dict]) -> tuple[list[TextItem], int]:
    ds = _hf_dataset(src)
    if src.messages_column:
        _require_columns(ds, f"text set '{name}'", [src.messages_column, src.language_column])
    else:
        _require_columns(ds, f"text set '{name}'",
                         [src.instruction_column, src.input_column, src.answer_column, src.language_column])
    items, total = [], 0
    for i, row in enumerate(ds):
        total += 1
        pair = _chat_pair(row[src.messages_column]) if src.messages_column else _column_pair(row, src)
        lang = src.language or (row.get(src.language_column) if src.language_column else None)
        kind = ("no_pair" if pair is None else "empty_text" if not all(isinstance(t, str) and t.strip() for t in pair)
                else "no_language" if not lang else None)
        if kind:
            bad.append({"set": name, "id": f"{name}-{i}", "kind": kind, "reason": f"row {i}: {kind.replace('_', ' ')}"})
        else:
            items.append(TextItem(f"{name}-{i}", str(lang), *pair))
    return items, total


def _column_pair(row: dict, src: HFTextSource) -> tuple:
    instruction, extra = row.get(src.instruction_column), row.get(src.input_column) if src.input_column else None
    if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
        instruction = f"{instruction}\n\n{extra}"
    return instruction, row.get(src.answer_column)


_USER, _ASSISTANT = ("user", "human"), ("assistant", "gpt")


def _chat_pair(turns) -> tuple | None:
    """(instruction, answer) of a conversation: the last assistant turn and the last user turn
    before it (earlier turns are context the pair cannot carry). Turns are {role, content}
    (OpenAI style) or {from, value} (ShareGPT); None when there is no such pair."""
    if not isinstance(turns, list):
        return None
    norm = [(t.get("role") or t.get("from"), t.get("content") or t.get("value")) for t in turns if isinstance(t, dict)]
    a = max((k for k, (role, _) in enumerate(norm) if role in _ASSISTANT), default=None)
    u = max((k for k, (role, _) in enumerate(norm[:a or 0]) if role in _USER), default=None)
    return None if u is None else (norm[u][1], norm[a][1])
