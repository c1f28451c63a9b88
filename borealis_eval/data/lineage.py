"""Where a run's data came from: one `DatasetRef` per train set, text pool and eval set.

The tracking layer logs them as MLflow dataset inputs (the runs table's Dataset column), so a
reader sees which data, in which version, trained and scored a variant. A digest names the
content a run actually used, computed from what the harness already holds: an eval set's
digest covers its items and the hashes of their decoded audio (the same hashes that key the
feature and decode caches); a training set's covers its rows (id, text, language, speaker,
duration, audio file) after `max_samples`; a text pool's covers its pairs. No mlflow import here.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from borealis_eval.config import AudioSet, HFSource, HFTextSource, ManifestSource, SynthSource, TextPool, TextSet
from borealis_eval.data.sources import AudioItem, TextItem

TRAINING, EVALUATION, VALIDATION = "training", "evaluation", "validation"  # MLflow's dataset contexts
DIGEST_CHARS = 20  # MLflow stores at most 36 characters of a dataset digest


@dataclass(frozen=True)
class DatasetRef:
    name: str
    digest: str
    source_type: str  # an MLflow dataset source type the UI knows: "local" (uri) or "hugging_face" (path)
    source: dict[str, Any]
    context: str  # TRAINING or EVALUATION
    text: bool = False  # plain-text instruction pairs, not audio
    profile: dict[str, Any] = field(default_factory=dict)


def source_of(src: ManifestSource | SynthSource | HFSource | HFTextSource) -> tuple[str, dict[str, Any]]:
    """(MLflow source type, source fields): a hub id, a local path, or a synthetic corpus split with its version."""
    if isinstance(src, ManifestSource):
        path = Path(src.path).resolve()
        return "local", {"uri": str(path), **_corpus_version(path.parent)}
    if isinstance(src, SynthSource):
        folder = Path(src.corpus).resolve()
        return "local", {"uri": str(folder / f"{src.split}.jsonl"), "split": src.split, "seed": src.seed,
                         **_corpus_version(folder)}
    if src.kind in ("hf", "hf_text"):
        return "hugging_face", {"path": src.id, "config_name": src.config, "split": src.split,
                                "revision": src.revision}
    return "local", {"uri": str(Path(src.id).resolve()), "format": src.kind, "split": src.split}


def _corpus_version(folder: Path) -> dict[str, Any]:
    """The synthetic corpus' generator version and fingerprint, when the manifest lies in one."""
    meta = folder / "corpus.json"
    if not meta.is_file():
        return {}
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: info[k] for k in ("version", "fingerprint") if k in info}


def _digest(rows: list) -> str:
    return hashlib.sha1(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()[:DIGEST_CHARS]


def audio_set_ref(spec: AudioSet, items: list[AudioItem], context: str,
                  audio_hashes: list[str] | None = None) -> DatasetRef:
    """A train or eval set; with `audio_hashes` (one per item) the digest covers the decoded audio too."""
    rows = [[it.id, it.text, it.language, it.speaker, it.duration, Path(it.audio_path).name if it.audio_path else None]
            for it in items]
    if audio_hashes is not None:
        rows = [r + [h] for r, h in zip(rows, audio_hashes)]
    source_type, source = source_of(spec.source)
    profile = {"items": len(items), "languages": dict(Counter(it.language for it in items))}
    seconds = [it.duration for it in items if it.duration is not None]
    if len(seconds) == len(items) and items:
        profile["hours"] = round(sum(seconds) / 3600, 4)
    if spec.max_samples is not None:
        profile["max_samples"] = spec.max_samples
    return DatasetRef(spec.name, _digest(rows), source_type, source, context, profile=profile)


def text_set_ref(name: str, spec: TextPool | TextSet, items: list[TextItem], context: str) -> DatasetRef:
    """A plain-text instruction pool (training) or held-out text set (evaluation)."""
    source_type, source = source_of(spec.source)
    rows = [[it.id, it.language, it.instruction, it.answer] for it in items]
    profile = {"items": len(items), "languages": dict(Counter(it.language for it in items))}
    return DatasetRef(name, _digest(rows), source_type, source, context, text=True, profile=profile)
