"""Turn a configured source into items: JSONL manifests, the synthetic corpus, HF datasets.

Audio is never decoded by `datasets` (its torchcodec backend needs FFmpeg): columns are cast
to `Audio(decode=False)` and the bytes/paths are decoded with soundfile, resampled with soxr.
Items that fail to load are skipped, counted and reported by the caller (see `load_waves`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from borealis_eval.config import AudioSet, HFSource, HFTextSource, ManifestSource, SynthSource, TextPool
from borealis_eval.data.manifest import AudioError, load_audio, read_manifest

SAMPLE_RATE = 16_000


@dataclass
class AudioItem:
    id: str
    text: str
    language: str
    duration: float | None = None
    speaker: str = ""
    audio_path: str | None = None
    audio_bytes: bytes | None = field(default=None, repr=False)

    def load(self) -> np.ndarray:
        if self.audio_path is not None:
            return load_audio(self.audio_path, SAMPLE_RATE)
        if self.audio_bytes is not None:
            return load_audio(io.BytesIO(self.audio_bytes), SAMPLE_RATE)
        raise AudioError(f"{self.id}: item has no audio")


@dataclass
class TextItem:
    id: str
    language: str
    instruction: str
    answer: str


def _synth_folder(src: SynthSource) -> Path:
    from borealis_eval.data.synth import synthesize_corpus

    return synthesize_corpus(Path(src.corpus), seed=src.seed)


def load_audio_set(spec: AudioSet) -> list[AudioItem]:
    src = spec.source
    if isinstance(src, (ManifestSource, SynthSource)):
        path = Path(src.path) if isinstance(src, ManifestSource) else _synth_folder(src) / f"{src.split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"eval/train set '{spec.name}': manifest {path} not found")
        items = [
            AudioItem(id=r["id"], text=r["text"], language=spec.language or r.get("language", ""),
                      duration=r.get("duration"), speaker=str(r.get("speaker", "")), audio_path=r["audio_path"])
            for r in read_manifest(path)
        ]
    else:
        items = _load_hf_audio(spec, src)
    items = [it for it in items if it.duration is None or spec.min_duration <= it.duration <= spec.max_duration]
    return _subsample(items, spec.max_samples)


def _subsample(items: list, n: int | None) -> list:
    """A deterministic random subset of n items, in their original order (all if n is None)."""
    if n is None or len(items) <= n:
        return items
    keep = sorted(np.random.default_rng(0).choice(len(items), n, replace=False))
    return [items[i] for i in keep]


def _hf_dataset(src: HFSource | HFTextSource):
    import datasets

    kind = getattr(src, "kind", "hf")
    if kind == "hf_disk":
        ds = datasets.load_from_disk(src.id)
        return ds[src.split] if isinstance(ds, datasets.DatasetDict) else ds
    if kind in ("parquet", "audiofolder"):
        return datasets.load_dataset(kind, data_dir=src.id, split=src.split)
    return datasets.load_dataset(src.id, src.config, split=src.split, revision=src.revision,
                                 streaming=getattr(src, "streaming", False))


def _load_hf_audio(spec: AudioSet, src: HFSource) -> list[AudioItem]:
    import datasets

    ds = _hf_dataset(src)
    ds = ds.cast_column(src.audio_column, datasets.Audio(decode=False))
    items = []
    for i, row in enumerate(ds):
        if spec.max_samples is not None and src.streaming and len(items) >= spec.max_samples:
            break
        audio = row[src.audio_column] or {}
        lang = spec.language or src.language or (row.get(src.language_column) if src.language_column else None)
        if not lang:
            raise ValueError(f"set '{spec.name}': no language: set `language:` or `source.language_column`")
        items.append(AudioItem(
            id=str(row.get("id", f"{spec.name}-{i}")), text=str(row[src.text_column]), language=lang,
            speaker=str(row.get("speaker_id", row.get("client_id", ""))),
            audio_path=None if audio.get("bytes") else audio.get("path"), audio_bytes=audio.get("bytes"),
        ))
    return items


def load_text_pool(pool: TextPool) -> list[TextItem]:
    src = pool.source
    if isinstance(src, (ManifestSource, SynthSource)):
        path = Path(src.path) if isinstance(src, ManifestSource) else _synth_folder(src) / f"{src.split}.jsonl"
        rows = read_manifest(path)
        items = [TextItem(r["id"], r["language"], r["instruction"], r["answer"]) for r in rows]
    else:
        ds = _hf_dataset(src)
        items = [TextItem(f"{src.id}-{i}", src.language, str(r[src.instruction_column]), str(r[src.answer_column]))
                 for i, r in enumerate(ds)]
    return _subsample(items, pool.max_samples)
