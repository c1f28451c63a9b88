"""What the variants of one study share, prepared once: data, the frozen encoder, cached features.

Order of work: load the training clips some variant's mix draws, the text pool and the eval
sets; encode every clip (eval recordings cut into `eval.window_seconds` windows) through the
on-disk feature cache, so N variants pay for encoding once; keep the features in fp16. Unusable
clips and text rows are skipped and listed in `bad_items`; a set with more of them than
`data.max_bad_share` stops the study here, before any training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from borealis_eval.audio import SAMPLE_RATE, windows
from borealis_eval.config import ExperimentConfig, ModelConfig, TextPool, TokenizerTrain, Variant
from borealis_eval.data.features import FeatureCache, FeatureStore, audio_hash, cache_features
from borealis_eval.data.lineage import EVALUATION, TRAINING, VALIDATION, DatasetRef, audio_set_ref, text_set_ref
from borealis_eval.data.mixer import Mix, mix_for
from borealis_eval.data.sources import (AudioItem, TextItem, check_bad, load_audio_set, load_text_pool, load_waves,
                                        set_language)
from borealis_eval.errors import BadDataError, UsageError
from borealis_eval.evaluate.decode_cache import DecodeCache
from borealis_eval.models.encoder import FrozenWhisperEncoder
from borealis_eval.models.speech_lm import AUDIO_MARK
from borealis_eval.models.tokenizer import layout_pieces, load_tokenizer, train_bpe_tokenizer


TEXT_POOL = "text_pool"  # the training text pool's name (its bad items and its dataset input)


@dataclass
class EvalData:
    name: str
    language: str
    items: list[AudioItem]
    waves: dict[str, np.ndarray]

    @property
    def audio_keys(self) -> list[str]:
        return [audio_hash(self.waves[it.id]) for it in self.items]

    @property
    def durations(self) -> dict[str, float]:
        return {k: len(w) / SAMPLE_RATE for k, w in self.waves.items()}


@dataclass
class Resources:
    """Everything the variants of one study share: data, encoder, cached features, tokenizers."""

    base: ExperimentConfig
    device: torch.device
    train_items: list[AudioItem]
    text_items: list[TextItem]
    eval_sets: list[EvalData]
    encoder: FrozenWhisperEncoder
    cache: FeatureCache
    features: FeatureStore
    dev_sets: list[EvalData] = field(default_factory=list)  # scored while training (learning curves)
    bad_items: list[dict] = field(default_factory=list)
    text_sets: list[tuple[str, list[TextItem]]] = field(default_factory=list)
    decodes: DecodeCache = field(default_factory=DecodeCache)
    tokenizers: dict[str, object] = field(default_factory=dict)
    datasets: list[DatasetRef] = field(default_factory=list)  # every set loaded, for the runs' MLflow inputs

    def datasets_for(self, v: Variant | None) -> list[DatasetRef]:
        """The sets a run uses: a variant's train sets, its text pool (when its mix draws text or its
        tokenizer is trained on it), eval and text sets; the baseline (`None`) only the audio eval sets."""
        if v is None:
            return [d for d in self.datasets if d.context == EVALUATION and not d.text]
        uses_pool = bool(self.text_items) and (v.config.data.text_fraction > 0
                                               or isinstance(v.config.model.llm.tokenizer, TokenizerTrain))
        return [d for d in self.datasets if d.context in (EVALUATION, VALIDATION) or not d.text or uses_pool]

    def tokenizer_for(self, model: ModelConfig):
        return tokenizer_for(model, self.train_items, self.text_items, self.tokenizers)

    def mix_for(self, v: Variant) -> Mix:
        """The variant's training stream: language mix x text fraction, drawn with its seed."""
        return mix_for(v, self.train_items, self.text_items)

    def window_keys(self, item_id: str) -> list[str]:
        """Feature keys of a recording's windows, in order (`<id>#0`, `<id>#1`, ...)."""
        keys = []
        while f"{item_id}#{len(keys)}" in self.features:
            keys.append(f"{item_id}#{len(keys)}")
        return keys


def tokenizer_for(model: ModelConfig, audio: list[AudioItem], text: list[TextItem], built: dict[str, object]):
    """The tokenizer of a model's LLM setting, built once per setting into `built`: a byte-level BPE
    trained on the training transcripts and the text pool (`tokenizer: {vocab_size: ...}`; with
    `prompt_tokens`, the audio prompt's fixed pieces as whole tokens), or a named one loaded
    (`tokenizer: REF`, else the LLM's own). Used by the study's resources and by the plan."""
    llm = model.llm
    trained = isinstance(llm.tokenizer, TokenizerTrain)
    whole = layout_pieces(f"{AUDIO_MARK}\n{model.prompt}", [AUDIO_MARK]) if trained and llm.tokenizer.prompt_tokens else []
    key = json.dumps([llm.tokenizer.model_dump(), whole] if trained else llm.tokenizer or llm.ref)
    if key not in built:
        if trained:
            texts = [it.text for it in audio] + [t for it in text for t in (it.instruction, it.answer)]
            built[key] = train_bpe_tokenizer(texts, llm.tokenizer.vocab_size, whole)
        else:
            built[key] = load_tokenizer(llm.tokenizer or llm.ref)
    return built[key]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_resources(variants: list[Variant], all_train: bool = False, encode_threads: int | None = None) -> Resources:
    """Load and encode what the variants need; `all_train` encodes every training clip (searches,
    whose variants are not known in advance). `encode_threads`: torch threads while encoding (a sweep
    with local workers encodes with all of them before they start; the encoder's features are the same
    bit for bit with 1 or 2 threads here); afterwards `train.threads` again."""
    base = variants[0].config
    for v in variants[1:]:
        if v.config.model.encoder != base.model.encoder or v.config.data.train_sets != base.data.train_sets:
            raise UsageError("variants of one sweep must share the encoder and training sets (grid over them "
                             "is not supported yet); split the study into several ablation files")
    dev = device()
    if encode_threads or base.train.threads:
        torch.set_num_threads(encode_threads or base.train.threads)
    bad: list[dict] = []
    train_sets = [(s, load_audio_set(s)) for s in base.data.train_sets]
    train_items = [it for _, items in train_sets for it in items]
    pool = next((v.config.data.text_pool for v in variants if v.config.data.text_pool), None)
    text_items = load_text_pool(pool, TEXT_POOL, bad, base.data.max_bad_share) if pool else []
    encoder = FrozenWhisperEncoder(base.model.encoder, device=dev)
    cache = FeatureCache(encoder.identity.key)
    res = Resources(base, dev, train_items, text_items, [], encoder, cache, FeatureStore(cache), bad_items=bad)
    res.datasets = [audio_set_ref(s, items, TRAINING) for s, items in train_sets]
    if pool:
        res.datasets.append(text_set_ref(TEXT_POOL, pool, text_items, TRAINING))

    # Only clips that some variant's mix draws are loaded and encoded.
    needed: dict[str, AudioItem] = {it.id: it for it in train_items} if all_train else {}
    for v in variants if not all_train else []:
        for ex in res.mix_for(v).examples:
            if isinstance(ex, AudioItem):
                needed[ex.id] = ex
    ids = sorted(needed)
    for s in range(0, len(ids), 512):  # bounded memory: waves of one chunk at a time
        chunk = [needed[i] for i in ids[s : s + 512]]
        waves = load_waves(chunk, bad, "train")
        res.features.add(cache_features(encoder, waves, cache, base.eval.batch_size, "encoding train"))
    n_train_bad = sum(b["set"] == "train" for b in bad)
    check_bad(bad, "train", len(ids), base.data.max_bad_share)
    if n_train_bad:
        res.train_items = [it for it in train_items if it.id in res.features or it.id not in needed]

    load_eval_data(res, base)
    if base.train.threads:
        torch.set_num_threads(base.train.threads)
    return res


def load_eval_data(res: Resources, base: ExperimentConfig, encode: bool = True) -> None:
    """Eval and dev sets: waves kept for the baseline, window features encoded once through the cache."""
    bad, encoder, cache = res.bad_items, res.encoder, res.cache
    for spec, into in [*((s, res.eval_sets) for s in base.eval.sets), *((s, res.dev_sets) for s in base.eval.dev_sets)]:
        items = load_audio_set(spec)
        if not items:
            raise BadDataError(f"eval set '{spec.name}' is empty")
        waves = load_waves(items, bad, spec.name)
        check_bad(bad, spec.name, len(items), base.data.max_bad_share)
        items = [it for it in items if it.id in waves]
        es = EvalData(spec.name, spec.language or set_language(items), items, waves)
        into.append(es)
        res.datasets.append(audio_set_ref(spec, items, EVALUATION if into is res.eval_sets else VALIDATION,
                                          es.audio_keys))
        if not encode:
            continue
        win = {f"{i}#{j}": w for i, wave in waves.items()
               for j, w in enumerate(windows(wave, base.eval.window_seconds))}
        res.features.add(cache_features(encoder, win, cache, base.eval.batch_size, f"encoding {spec.name}"))
    for ts in base.eval.text_sets:
        pool = TextPool(source=ts.source, max_samples=ts.max_samples)
        res.text_sets.append((ts.name, load_text_pool(pool, ts.name, bad, base.data.max_bad_share)))
        res.datasets.append(text_set_ref(ts.name, ts, res.text_sets[-1][1], EVALUATION))
