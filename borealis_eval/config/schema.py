"""The typed ablation config: one pydantic model per section, validated in one place.

An `ExperimentConfig` is one fully resolved variant (model, data, train, eval, seed); an
`Ablation` is the file: name, the question (`description`), `base`, `grid` and `search`.
Unknown keys are rejected everywhere (`Strict`).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

from borealis_eval.config.labels import LANGUAGES, cell_of, mix_label

__all__ = [
    "added_text",
    "Ablation",
    "DataLimits",
    "EvalScope",
    "GridAxis",
    "AdapterConfig",
    "AlignConfig",
    "AudioSet",
    "AugmentConfig",
    "BaselineConfig",
    "CodecAug",
    "DataConfig",
    "EncoderConfig",
    "EvalConfig",
    "EvalSet",
    "ExperimentConfig",
    "GainAug",
    "HFSource",
    "HFTextSource",
    "LANGUAGES",
    "LLMConfig",
    "LoraConfig",
    "ManifestSource",
    "ModelConfig",
    "NoiseAug",
    "PositiveRange",
    "Range",
    "ReverbAug",
    "SearchAxis",
    "SearchConfig",
    "SearchObjective",
    "SearchPrune",
    "Source",
    "SpeedAug",
    "Strict",
    "SynthSource",
    "TelephoneAug",
    "TextPool",
    "TextSet",
    "TextSource",
    "TokenizerTrain",
    "TrainConfig",
    "Variant",
    "config_hash",
    "mix_label",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- data sources
class ManifestSource(Strict):
    """A JSONL manifest (see README: id, audio, text, language, duration, speaker)."""

    kind: Literal["manifest"]
    path: str


class SynthSource(Strict):
    """A split of the project's synthetic corpus, generated on first use."""

    kind: Literal["synth"]
    corpus: str = "data/synth/cpu-v1"
    split: str
    seed: int = 0


class HFSource(Strict):
    """Audio rows from a hub dataset by id/config/split (`hf`), a `load_from_disk` folder
    (`hf_disk`), parquet files (`parquet`: a file or a folder) or an `audiofolder` (audio files
    beside metadata.csv/.jsonl with a `file_name` column); for the local kinds `id` is the path."""

    kind: Literal["hf", "hf_disk", "parquet", "audiofolder"]
    id: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    audio_column: str = "audio"
    text_column: str = "text"
    language_column: str | None = None
    language: str | None = None
    # read rows as they arrive instead of preparing the whole set (hf, parquet): with max_samples
    # the first N rows are taken, not a random subset
    streaming: bool = False


class HFTextSource(Strict):
    """Plain-text instruction pairs from a hub dataset (`hf_text`), a `load_from_disk` folder
    (`hf_disk`), or parquet / JSON(L) files (`parquet`, `json`: a file or a folder; id = path)."""

    kind: Literal["hf_text", "hf_disk", "parquet", "json"]
    id: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    instruction_column: str = "instruction"
    input_column: str | None = None  # alpaca-style context, appended to the instruction when non-empty
    answer_column: str = "output"
    # chat-format datasets: a column of [{role, content}, ...]; the last assistant turn is the
    # answer and the user turn before it the instruction (instruction/answer columns are then unused)
    messages_column: str | None = None
    language: str | None = None  # every row's language; else read per row from language_column
    language_column: str | None = None

    @model_validator(mode="after")
    def _language(self):
        if self.language is None and self.language_column is None:
            raise ValueError("set 'language' (one for all rows) or 'language_column' (per row)")
        return self


Source = Annotated[Union[ManifestSource, SynthSource, HFSource], Field(discriminator="kind")]
TextSource = Annotated[Union[ManifestSource, SynthSource, HFTextSource], Field(discriminator="kind")]


class AudioSet(Strict):
    name: str
    source: Source
    language: str | None = None  # overrides the rows' language when set
    max_samples: int | None = Field(default=None, gt=0)
    min_duration: float = Field(default=0.0, ge=0)
    max_duration: float = Field(default=30.0, gt=0)


class TextPool(Strict):
    source: TextSource
    max_samples: int | None = Field(default=None, gt=0)


# ---------------------------------------------------------------- sections
class EncoderConfig(Strict):
    ref: str | None = None  # hf:<id>[@rev] | local folder | bundled:<name>
    config: dict[str, Any] | None = None  # WhisperConfig kwargs for a random tiny encoder
    short_input: bool = False  # feed only the real mel frames, not 30 s of padding
    bucket_seconds: float = Field(default=2.0, gt=0)  # short-input length rounding
    # The frozen encoder's arithmetic: bf16 autocast halves the encoding CPU on a CPU with native bf16
    # (features: cosine >= 0.999 against fp32, benchmarks/README.md); auto = bf16 on a CUDA GPU or a
    # CPU with native bf16 (AVX512-BF16, AMX), fp32 elsewhere. Features are cached per precision.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"

    @model_validator(mode="after")
    def _one_source(self):
        if (self.ref is None) == (self.config is None):
            raise ValueError("set exactly one of 'ref' (a model reference) or 'config' (random init)")
        return self


class AdapterConfig(Strict):
    downsample_k: int = Field(default=4, ge=1)
    hidden_sizes: list[int] = Field(default_factory=lambda: [2560])
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # rows: the MLP's rows go to the LLM as they are. ctc_tokens: a CTC head classifies them over the LLM's own
    # token embeddings and the LLM reads one soft token per non-blank run (models/ctc_tokens.py)
    output: Literal["rows", "ctc_tokens"] = "rows"
    ctc_weight: float = Field(default=0.3, ge=0)  # ctc_tokens: the CTC loss's weight beside the LM loss


class LoraConfig(Strict):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TokenizerTrain(Strict):
    """Train a byte-level BPE tokenizer on the corpus text (for LLMs trained from scratch)."""

    vocab_size: int = Field(default=2000, ge=300)
    # the prompt layout's fixed text (role names, model.prompt) as whole tokens: ~30 fewer positions
    # per example at 1,500 types (models/tokenizer.py layout_pieces); false = the BPE splits them
    prompt_tokens: bool = True


class LLMConfig(Strict):
    ref: str | None = None
    config: dict[str, Any] | None = None  # Qwen3Config kwargs for an LLM trained from scratch
    tokenizer: str | TokenizerTrain | None = None  # ref, or train one; default: the LLM's own
    train: Literal["frozen", "lora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    # LLM weights: "auto" = bf16 on a GPU when frozen or LoRA, else fp32 (see speech_lm.llm_dtype)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _one_source(self):
        if (self.ref is None) == (self.config is None):
            raise ValueError("set exactly one of 'ref' (a model reference) or 'config' (random init)")
        if self.config is not None and self.tokenizer is None:
            raise ValueError("an LLM built from 'config' needs a 'tokenizer' (a ref, or {vocab_size: N} to train one)")
        return self


class ModelConfig(Strict):
    encoder: EncoderConfig
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    llm: LLMConfig
    prompt: str = "Transcribe the audio."


Range = tuple[float, float]
PositiveRange = tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]


class _Aug(Strict):
    p: float = Field(default=0.5, ge=0, le=1)  # probability that a training clip gets this effect

    @model_validator(mode="after")
    def _ordered(self):
        for name in type(self).model_fields:
            v = getattr(self, name)
            if isinstance(v, tuple) and len(v) == 2 and v[0] > v[1]:
                raise ValueError(f"{name}: low > high ({v[0]:g} > {v[1]:g})")
        return self


class NoiseAug(_Aug):
    snr_db: Range = (5.0, 20.0)
    files: list[str] = Field(default_factory=list)  # noise recordings (files or folders); generated noise if empty


class ReverbAug(_Aug):
    p: float = Field(default=0.3, ge=0, le=1)
    rt60: PositiveRange = (0.2, 0.8)  # seconds; synthetic room impulse responses


class TelephoneAug(_Aug):
    p: float = Field(default=0.2, ge=0, le=1)
    band_hz: Range = (300.0, 3400.0)  # Butterworth band-pass edges
    sample_rate: int = Field(default=8000, gt=0, le=16000)  # resampled down to this and back

    @model_validator(mode="after")
    def _band(self):
        if not 0 < self.band_hz[0] < self.band_hz[1] < self.sample_rate / 2:
            raise ValueError(f"band_hz must satisfy 0 < low < high < sample_rate/2 = {self.sample_rate / 2:g} "
                             f"(got {self.band_hz[0]:g}, {self.band_hz[1]:g})")
        return self


class CodecAug(_Aug):
    p: float = Field(default=0.2, ge=0, le=1)
    bits: tuple[Annotated[int, Field(ge=2, le=16)], Annotated[int, Field(ge=2, le=16)]] = (4, 8)  # mu-law depth range


class SpeedAug(_Aug):
    p: float = Field(default=0.3, ge=0, le=1)
    factor: PositiveRange = (0.9, 1.1)  # > 1 plays faster (shorter); pitch moves with it


class GainAug(_Aug):
    db: Range = (-6.0, 6.0)


class AugmentConfig(Strict):
    """Training-audio augmentation; seeded per (seed, epoch, clip) and logged. Augmented clips are
    encoded on the fly (the feature cache holds only clean audio)."""

    noise: NoiseAug | None = None
    reverb: ReverbAug | None = None
    telephone: TelephoneAug | None = None
    codec: CodecAug | None = None
    speed: SpeedAug | None = None
    gain: GainAug | None = None
    # curriculum: every probability ramps linearly from 0 to its configured p over this many epochs
    curriculum_epochs: int = Field(default=0, ge=0)


class DataConfig(Strict):
    train_sets: list[AudioSet] = Field(min_length=1)
    text_pool: TextPool | None = None
    language_mix: dict[str, float]
    text_fraction: float = 0.0
    # replace: text takes `text_fraction` of a fixed stream of `num_examples` (fewer audio examples);
    # add: `num_examples` audio examples stay and text is added on top until it is `text_fraction` of
    # the stream (train.steps grow in proportion: equal audio exposure)
    text_mode: Literal["replace", "add"] = "replace"
    num_examples: int = Field(default=2000, gt=0)  # size of the mixed training stream (audio, in add mode)
    augment: AugmentConfig | None = None
    # a set whose unusable audio (missing, corrupt, empty, NaN, too long) exceeds this share fails the run
    max_bad_share: float = Field(default=0.05, ge=0, le=1)

    @field_validator("text_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not (0.0 <= v < 1.0) or math.isnan(v):
            raise ValueError("text_fraction must be in [0, 1)")  # the caller appends the value
        return v

    @field_validator("language_mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("language_mix is empty; give weights like {ru: 0.5, en: 0.5}")
        bad = [k for k, w in v.items() if not (w >= 0) or math.isinf(w)]
        if bad:
            raise ValueError(f"language_mix weights must be >= 0 (bad: {bad})")
        total = sum(v.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"language_mix weights must sum to 1, got {total:g}")
        return v

    @model_validator(mode="after")
    def _pool_needed(self):
        if self.text_fraction > 0 and self.text_pool is None:
            raise ValueError("text_fraction > 0 needs a 'text_pool'")
        return self


class AlignConfig(Strict):
    """`train.align`: a first phase that trains the adapter alone by CTC against the LLM's token
    embeddings (needs `model.adapter.output: ctc_tokens`; no LLM forward, so a step costs a small
    fraction of an LM step), before the LM phase of `train.steps`."""

    steps: int = Field(gt=0)
    batch_size: int = Field(default=16, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    # keep the aligned adapter (MLP and CTC head) fixed in the LM phase: only the LLM (LoRA) and the audio
    # markers train there, learning to read the soft tokens the alignment made, not to move them
    freeze: bool = False


class TrainConfig(Strict):
    steps: int = Field(default=1000, gt=0)
    batch_size: int = Field(default=8, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    # auto: bf16 autocast where the hardware computes bf16 natively (CUDA; a CPU with AVX512-BF16 or AMX:
    # about half a CPU-profile step, benchmarks/README.md), else fp32. Decoding always runs in fp32.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    log_every: int = Field(default=10, gt=0)
    max_answer_tokens: int = Field(default=128, gt=0)
    threads: int | None = Field(default=None, gt=0)  # torch CPU threads
    # processes reading the training batches ahead (features from the feature store); None: 2 on CUDA, 0 on CPU
    loader_workers: int | None = Field(default=None, ge=0)
    align: AlignConfig | None = None  # the CTC alignment phase before the LM phase (AlignConfig)


class Reference(Strict):
    """A published score for an eval set, shown beside our baseline (never used in scoring).
    Figures are percentages as published; `note` says how they were measured (subset,
    normaliser, long-form), since a gap to our baseline is often a protocol mismatch."""

    wer: float = Field(ge=0, le=1000)
    cer: float | None = Field(default=None, ge=0, le=1000)
    system: str = Field(min_length=1)  # e.g. whisper-large-v3
    source: str = Field(min_length=1)  # URL, or repo + path
    note: str = ""


class EvalSet(AudioSet):
    max_duration: float = Field(default=600.0, gt=0)
    # published figures for this set: one mapping or a list (e.g. a leaderboard and a paper)
    reference: list[Reference] = Field(default_factory=list)

    @field_validator("reference", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v


class TextSet(Strict):
    """Held-out plain-text instruction pairs: does the LLM keep its text skills?"""

    name: str
    source: TextSource
    max_samples: int | None = Field(default=None, gt=0)


class BaselineConfig(Strict):
    """Plain Whisper, decoded once per study with its own protocol (independent of the speech-LLM's):
    by default as Whisper's users run it (OpenAI's transcribe, faster-whisper, the transformers ASR
    pipeline): beam 5, deterministic, no temperature fallback, the language forced per clip."""

    enabled: bool = True
    name: str = Field(default="baseline", pattern=r"^[A-Za-z0-9_.\-]+$")  # its row in the report
    ref: str = "hf:openai/whisper-large-v3"
    batch_size: int = Field(default=8, gt=0)
    backend: Literal["transformers", "ctranslate2"] = "transformers"
    # ctranslate2: default | int8 | int8_float32 | float32; transformers runs float32 (default | float32)
    compute_type: Literal["default", "int8", "int8_float32", "float32"] = "default"
    num_beams: int = Field(default=5, gt=0)
    # auto: no timestamps up to 30 s, sequential long-form with timestamps beyond (the pipeline's way);
    # always: every clip through the sequential algorithm (OpenAI's transcribe, faster-whisper)
    timestamps: Literal["auto", "always"] = "auto"

    @model_validator(mode="after")
    def _backend(self):
        if self.backend == "transformers" and self.compute_type not in ("default", "float32"):
            raise ValueError(f"the transformers backend runs float32; compute_type {self.compute_type!r} needs "
                             "backend: ctranslate2")
        return self


class EvalConfig(Strict):
    sets: list[EvalSet] = Field(min_length=1)
    text_sets: list[TextSet] = Field(default_factory=list)
    batch_size: int = Field(default=8, gt=0)
    max_new_tokens: int = Field(default=128, gt=0)
    # runaway cap: at most this many new tokens per second of audio (+16), so a looping decoder
    # stops near the length any real transcript could have instead of at max_new_tokens
    max_tokens_per_second: float = Field(default=15.0, gt=0)
    num_beams: int = Field(default=1, gt=0)
    window_seconds: float = Field(default=30.0, gt=0)  # long-form window for the speech-LLM
    # long audio for the speech-LLM: decode each window and join the texts ("window"), or splice
    # every window's audio embeddings into one prompt and decode once ("concat")
    long_form: Literal["window", "concat"] = "window"
    # decode with LoRA adapters merged into a copy of the weights (the same function; unmerged LoRA
    # decoding was measured 6x slower on an H200)
    merge_lora: bool = True
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    # more baselines beside it, each its own row (e.g. the same model greedy, to show what beam search buys)
    extra_baselines: list[BaselineConfig] = Field(default_factory=list)
    bootstrap: int = Field(default=1000, ge=100)
    # learning curves: every N training steps, greedy WER on the small fixed `dev_sets` (0: off)
    every_steps: int = Field(default=0, ge=0)  # 0 or null: no learning curves
    dev_sets: list[EvalSet] = Field(default_factory=list)  # given as []: no learning curves either

    @field_validator("every_steps", mode="before")
    @classmethod
    def _null_is_off(cls, v):
        return 0 if v is None else v

    @property
    def baselines(self) -> list[BaselineConfig]:
        """Every enabled baseline, the main one first (the reference of Δ-vs-baseline metrics)."""
        return [b for b in (self.baseline, *self.extra_baselines) if b.enabled]

    @model_validator(mode="after")
    def _curve(self):
        if self.every_steps and not self.dev_sets:
            if "dev_sets" in self.model_fields_set:  # `dev_sets: []` (e.g. in a derived file) turns the curves off
                object.__setattr__(self, "every_steps", 0)
            else:
                raise ValueError("every_steps needs 'dev_sets' (a small fixed set to score while training); "
                                 "every_steps: 0 (or null) turns learning curves off")
        names = [s.name for s in [*self.sets, *self.dev_sets]]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"eval set names must be unique across sets and dev_sets (repeated: {', '.join(dup)})")
        bnames = [b.name for b in (self.baseline, *self.extra_baselines)]
        if len(set(bnames)) != len(bnames):
            raise ValueError(f"baseline names must be unique (got {bnames}); give each extra_baselines entry a name")
        return self


class DataLimits(Strict):
    """The part of the data section that scoring reads (text sets obey the same bad-item budget)."""

    max_bad_share: float = Field(default=0.05, ge=0, le=1)


class EvalScope(BaseModel):
    """What `evaluate` reads of an ablation: its eval section (sets, protocol, baselines) and the
    data section's bad-item budget; the grid and the training sections play no part."""

    eval: EvalConfig
    data: DataLimits = Field(default_factory=DataLimits)


def added_text(n: int, text_fraction: float) -> int:
    """Text examples on top of `n` audio examples (text_mode add) so that text is `text_fraction` of
    the stream: the mixer draws this many and the step count grows by it (one formula for both)."""
    return round(text_fraction * n / (1.0 - text_fraction))


class ExperimentConfig(Strict):
    """One fully resolved variant."""

    @property
    def train_steps(self) -> int:
        """Optimizer steps: `train.steps`, grown in proportion to the stream when text is added on top
        of a fixed audio budget (text_mode add), so every variant sees the same audio at the same batch."""
        d = self.data
        if d.text_mode != "add" or not d.text_fraction:
            return self.train.steps
        total = d.num_examples + added_text(d.num_examples, d.text_fraction)
        return round(self.train.steps * total / d.num_examples)

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig
    seed: int = 0

    @model_validator(mode="after")
    def _align_needs_ctc(self):
        if self.train.align is not None and self.model.adapter.output != "ctc_tokens":
            raise ValueError("train.align trains the adapter's CTC head: set model.adapter.output: ctc_tokens "
                             "(or remove train.align)")
        return self


class SearchAxis(Strict):
    """One search dimension: a range (`low`/`high`, optional `log`/`step`; ints if both are ints) or `choices`."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(default=None, gt=0)
    choices: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _kind(self):
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either 'low' and 'high' (a range) or 'choices' (a list)")
        if self.choices is None:
            if not self.low < self.high:  # type: ignore[operator]
                raise ValueError(f"'low' must be below 'high' (got {self.low:g} and {self.high:g})")
            if self.log and self.low <= 0:  # type: ignore[operator]
                raise ValueError("a 'log' range needs low > 0")
            if self.log and self.step is not None:
                raise ValueError("'log' and 'step' cannot be combined")
        return self

    @property
    def is_int(self) -> bool:
        return (self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)
                and (self.step is None or isinstance(self.step, int)))


class SearchObjective(Strict):
    """Mean `metric` over `sets` (default: every eval set); `cost: train_seconds` adds a 2nd objective."""

    sets: list[str] = Field(default_factory=list)
    metric: Literal["wer", "cer"] = "wer"
    cost: Literal["train_seconds"] | None = None


class SearchPrune(Strict):
    """Report `metric` on eval set `set` every `every` steps; the pruner stops hopeless trials."""

    set: str
    every: int = Field(default=50, gt=0)


class SearchConfig(Strict):
    n_trials: int = Field(default=20, gt=0)
    objective: SearchObjective = Field(default_factory=SearchObjective)
    space: dict[str, SearchAxis] = Field(min_length=1)
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    pruner: Literal["median", "none"] = "none"
    prune: SearchPrune | None = None
    storage: str | None = None  # Optuna RDB URL; default: borealis-studies.db beside the MLflow store

    @model_validator(mode="after")
    def _pruning(self):
        if self.pruner != "none" and self.prune is None:
            raise ValueError("pruner needs 'prune: {set: <eval set>, every: N}' (what to report while training)")
        if self.pruner != "none" and self.objective.cost is not None:
            raise ValueError("pruning works with one objective only; drop 'objective.cost' or set pruner: none")
        return self


class GridAxis(Strict):
    """A grid axis with its own names: `{values: [[192], [768]], labels: [narrow, wide]}`."""

    values: list[Any] = Field(min_length=1)
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _labels(self):
        if self.labels is None:
            return self
        if len(self.labels) != len(self.values):
            raise ValueError(f"give one label per value ({len(self.values)} values, {len(self.labels)} labels)")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be distinct (got {self.labels})")
        bad = [x for x in self.labels if not x or "__" in x or "=" in x or x != x.strip()]
        if bad:
            raise ValueError(f"a label must be non-empty, without '__', '=' or outer spaces (got {bad[0]!r})")
        return self


class AnalysisConfig(Strict):
    """How the report judges contrasts (no effect on training: not part of any config hash).

    ``margin_pts``: the practical margin in WER points within which two cells count as
    "equivalent" (TOST); ``sets`` overrides it per eval set (e.g. a noisy long-form set)."""

    margin_pts: float = Field(default=2.0, gt=0, le=100)
    sets: dict[str, Annotated[float, Field(gt=0, le=100)]] = Field(default_factory=dict)

    def margin(self, set_name: str) -> float:
        return self.sets.get(set_name, self.margin_pts)


class LauncherConfig(Strict):
    """`launcher:` - how `sweep FILE --launcher slurm --workers N` submits its N workers, one SLURM
    job each (launch/slurm.py); the command line's options override these."""

    partition: str | None = None
    account: str | None = None
    time_min: int = Field(default=240, gt=0)  # per job: near it, the job checkpoints and requeues itself
    gpus_per_worker: int = Field(default=0, ge=0)  # > 1: the worker trains data-parallel (torchrun)
    cpus_per_worker: int = Field(default=1, gt=0)
    mem_gb: float | None = Field(default=None, gt=0)
    sbatch: dict[str, Any] = Field(default_factory=dict)  # more sbatch options, e.g. {qos: high, constraint: a100}
    log_dir: str | None = None  # default: slurm-logs/<study> in the working directory


class AdaptiveSeeds(Strict):
    """`seeds: {initial: 2, max: 6, target_pts: 5}` - the adaptive seed design (evaluate/adaptive.py):
    the sweep trains seeds 0..initial-1 of every cell, re-estimates the seed variance blind to the
    contrasts, then trains every cell up to the seeds 80% power at `target_pts` needs (at most
    `max`; seeds initial..final-1), and analyses once at the end. `estimator`: pooled (within-cell,
    the default) or lumped (one-sample, Kieser & Friede 2003)."""

    initial: int = Field(ge=2)  # two seeds per cell at least: the first stage must measure the seed variance
    max: int = Field(gt=0)
    target_pts: float = Field(gt=0, le=100)
    estimator: Literal["pooled", "lumped"] = "pooled"

    @model_validator(mode="after")
    def _order(self):
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) must not exceed max ({self.max})")
        return self


def _seeds_form(v: Any) -> str:
    return "adaptive" if isinstance(v, (dict, AdaptiveSeeds)) else "list"


# `seeds:` is a list, or a mapping (the adaptive design): validated as the one its form says, so an
# error names that form's field (seeds.initial), not both forms' mismatches
Seeds = Annotated[Union[Annotated[list[int], Field(min_length=1), Tag("list")], Annotated[AdaptiveSeeds, Tag("adaptive")]],
                  Discriminator(_seeds_form)]


class Ablation(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str
    base: dict[str, Any]
    # axis (dotted path) -> its values, or {values: [...], labels: [...]} (GridAxis); the loader
    # leaves plain lists here and the labels in `grid_labels`. A child file's grid replaces the
    # parent's unless it says `extends: true` (config/loader.py)
    grid: dict[str, Any] = Field(default_factory=dict)
    # every grid cell is trained once per seed (the seed drives initialisation, data order, mix
    # sampling and augmentation); the same as a `seed` grid axis, run seed by seed over the grid.
    # Or the adaptive design {initial, max, target_pts} (AdaptiveSeeds): seeds 0, 1, ... as it decides
    seeds: Seeds | None = None
    search: SearchConfig | None = None  # for `borealis-eval search`; the grid is then ignored
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)  # margins of the report's verdicts
    launcher: LauncherConfig | None = None  # for `sweep --launcher slurm`
    # filled by the loader: {axis: {value_key: label}}, {axis: the file it came from}, inheritance notes
    _grid_labels: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)
    _grid_sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _grid_notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def grid_labels(self) -> dict[str, dict[str, str]]:
        """{axis: {value_key: label}}: the grid's own `labels:`."""
        return self._grid_labels

    @property
    def grid_sources(self) -> dict[str, str]:
        """{axis: the file whose grid gave it}."""
        return self._grid_sources

    @property
    def grid_notes(self) -> list[str]:
        """How the grid was inherited (e.g. merged with the parent's by `grid: {extends: true}`)."""
        return self._grid_notes

    @model_validator(mode="after")
    def _analysis_sets(self):
        sets = (self.base.get("eval") or {}).get("sets") if isinstance(self.base.get("eval"), dict) else None
        names = {s.get("name") for s in sets if isinstance(s, dict)} if isinstance(sets, list) else set()
        unknown = sorted(set(self.analysis.sets) - names) if names else []
        if unknown:
            raise ValueError(f"analysis.sets names eval sets the ablation does not have: {', '.join(unknown)} "
                             f"(eval sets: {', '.join(sorted(n for n in names if n))})")
        return self

    @model_validator(mode="after")
    def _seeds(self):
        if self.seeds is not None:
            if isinstance(self.seeds, list) and len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds must be distinct (got {self.seeds})")
            if "seed" in self.grid:
                raise ValueError("give the seeds once: either 'seeds:' or a grid axis 'seed', not both")
        return self


    @property
    def adaptive(self) -> AdaptiveSeeds | None:
        """The adaptive seed design, if `seeds:` gives one."""
        return self.seeds if isinstance(self.seeds, AdaptiveSeeds) else None

    def seed_values(self, per_cell: int | None = None) -> list[int] | None:
        """The seeds every cell is trained with: the list, or the adaptive design's 0..n-1 for
        `per_cell` = n seeds (default: its first stage, `initial`); None without `seeds:`."""
        if self.adaptive is not None:
            return list(range(self.adaptive.initial if per_cell is None else per_cell))
        return self.seeds


class Variant(BaseModel):
    name: str
    axes: dict[str, Any]
    config: ExperimentConfig
    labels: dict[str, str] = Field(default_factory=dict)  # axis -> its value's readable label (labels.py)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def language_mix_label(self) -> str:
        return mix_label(self.config.data.language_mix)

    @property
    def cell(self) -> str:
        """The grid cell without its seed: the variants of one cell differ only by training seed."""
        return cell_of(self.name)


# Fields added after studies were run, left out of the hash at the value that reproduces the older
# code, so a study started before a field existed still finds its finished variants.
_HASH_NEUTRAL: dict[tuple[str, ...], Any] = {("model", "encoder", "precision"): "fp32",
                                             ("model", "adapter", "output"): "rows",
                                             ("model", "adapter", "ctc_weight"): 0.3,
                                             ("train", "align"): None}


def config_hash(cfg: ExperimentConfig) -> str:
    dump = cfg.model_dump(mode="json")
    for path, value in _HASH_NEUTRAL.items():
        *parents, leaf = path
        node = dump
        for key in parents:
            node = node.get(key) or {}
        if node.get(leaf, value) == value:
            node.pop(leaf, None)
    blob = json.dumps(dump, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


