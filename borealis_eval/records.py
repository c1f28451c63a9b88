"""What a study writes to MLflow, named in one place: every writer and the report's reader use this.

Experiment: one per ablation ``name``; tags ``borealis.description`` and ``mlflow.note.content``
(the question), ``mlflow.experimentKind=custom_model_development`` (the UI opens on training runs,
not its GenAI views), and, once a report is built, a saved runs-table view
``mlflow.sharedViewState.borealis-wer`` (WER per eval set as columns).

Runs (all in that experiment):
- parent (one per sweep/search study): tags ``role=parent``, ``borealis.ablation`` (file),
  ``borealis.description``, ``borealis.fingerprint`` (variant set), ``borealis.study``;
  searches add ``kind=search`` and, when done, ``best.trial``, ``best.run_id``, ``best.params``.
  Artifacts: ``ablation/<file>``, ``data/bad_items.jsonl`` (rows ``{set, id, kind, reason}``),
  ``paired/<set>.jsonl`` (rows ``{a, b, delta_wer, ci_low, ci_high, p_value, n}``),
  ``report/`` (report.md, report.html, plots/), ``search/best_trials.jsonl``, ``plan/plan.json``
  (the cost plan, plan/), ``plan/power.json`` (the seed plan: per set the variance used, the
  detectable effect, the seeds needed at the margin and their cost), ``eval/references.json``
  (published figures per set). A study launched
  on SLURM (`sweep --launcher slurm`) adds ``launcher=slurm``, ``slurm.job_ids`` (comma-separated,
  one per worker job and launch) and ``slurm.log_dir`` (the jobs' logs). Once the
  report is built, ``mlflow.note.content`` (the run's description in the UI) holds the headline
  answer, the question and a link to ``report/report.html``, and ``borealis.unstable_cells``
  names the cells whose seed spread is far above the rest (with their seeds' WER).
  ``borealis.margin_pts`` (JSON ``{"default": pts, "sets": {set: pts}}``): the ablation's
  analysis margins, read by the report for its "equivalent within ±m" verdicts.
  An adaptive seed design (``seeds: {initial, max, target_pts}``) adds ``borealis.seed_design``
  (that spec as JSON) when the study starts and ``borealis.seed_decision`` (the decision: initial,
  final and added seeds per cell, the variance per set, the reason; evaluate/adaptive.py) once the
  first stage is scored; the claims table keeps the same decision in its row ``seed-design``.
  ``borealis.plan_variance``: where the seed plan's variance came from (an earlier sweep of the
  experiment, or a prior, labelled as such).
  Metrics: ``plan/seconds``, ``plan/device_hours``, ``plan_detectable_pts/<set>`` and
  ``plan_seeds_needed/<set>`` (the seed plan), ``data/bad_items``, ``data/train_items``,
  ``data/text_items``, ``cache/encoded``,
  ``cache/hits``, ``sweep/finished``, ``sweep/failed``, ``search/complete``, ``search/pruned``,
  ``search/failed``, ``best/objective``.
- variant (nested: ``mlflow.parentRunId``): tags ``role=variant``, ``variant`` (name), ``cell``
  (the name without its seed: the runs of one cell differ only by training seed),
  ``config_hash``, ``text_mode``, ``seed``, ``axis.<dotted path>`` (the value, JSON for lists and
  mappings) and ``axis_label.<dotted path>`` (its readable label, e.g. ru50_en50 or [192]) per grid
  axis (stores written before 2026-12-07 also have ``language_mix`` and ``text_fraction`` tags and
  no ``axis_label.*``: the report derives the labels from ``axis.*``), ``borealis.study``, ``attempt`` (1 for the first try),
  ``previous_attempt_run`` on a retry, ``resumed_from_step`` after a resume,
  ``normalizer/<set>`` (e.g. ``english@1.0``); searches add ``optuna.trial``, ``optuna.study``,
  ``optuna.pruned=true`` (status KILLED). Params: the flattened resolved config plus
  ``model.trainable_params``, ``train.precision_used`` (bf16 or fp32: what precision auto chose here),
  ``encoder.precision_used`` (the same for the frozen encoder's features) and ``machine.cpu`` (the
  CPU's model name: two CPU families of one kind train to other numbers); with
  ``adapter.output: ctc_tokens`` also ``align.vocabulary`` (the CTC head's classes).
  Metrics: ``train/loss`` and ``train/lr`` (per logged step), ``train/first_loss``,
  ``train/last_loss``, ``train/seconds``, ``train/steps_per_second``, ``train/steps`` (realised:
  text_mode add grows them); ``dev_wer/<dev set>`` per curve step (learning curve); ``data/count_<lang>``,
  ``data/count_text``, ``data/count_total``, ``data/text_fraction_realised``; per eval set S the
  set metrics below as ``<name>/S``; ``delta_wer_vs_baseline/S``, ``p_vs_baseline/S``;
  ``text_chrf/<text set>``, ``text_exact/<text set>``; ``augment/*`` with augmentation;
  ``align/loss`` (per logged step of the alignment phase, its own step axis) and ``align/seconds``
  with ``train.align``.
  Artifacts: ``config/resolved.yaml``, ``predictions/S.jsonl`` (rows ``{id, language, duration,
  speaker, ref, hyp}``, raw hypotheses), ``predictions/text_<name>.jsonl``, ``error.txt``
  (traceback) on failure. Runs written before logged models also have ``weights/trainable.safetensors``
  and ``tokenizer/`` (still read by ``evaluate run:<id>``).
  Dataset inputs: every train set, the text pool (when the mix draws text or the tokenizer is
  trained on it) with context ``training``; every eval and text set with context ``evaluation``
  (an input tag ``mlflow.data.context``)
  (digest, source and profile: data/lineage.py).
  Logged model (one per finished variant, the run's output; type ``speech-lm``): the folder
  ``MLmodel`` (flavours ``borealis_speech_lm`` and ``python_function``), ``weights/trainable.safetensors``
  (what was trained: adapter, LoRA or LLM weights), ``tokenizer/``, ``config/resolved.yaml``;
  params: the variant's identity (the run's tags above but ``role``) and ``model.trainable_params``; tags ``variant`` (the exact name: a model name cannot hold . / : % " '),
  ``config_hash``; metrics:
  the set metrics and text-skill scores, each linked to its dataset.
- baseline (nested; one per eval.baseline / eval.extra_baselines): tags ``role=baseline``,
  ``variant`` (the baseline's name), ``model`` (reference), ``protocol`` (its decoding, in words),
  ``config_hash`` (the baseline's claim key), ``borealis.study``, ``normalizer/<set>``; params
  ``baseline.*``; the same per-set metrics and predictions as a variant; its eval sets as dataset
  inputs (``evaluation``).
- with ``system_metrics`` on (mlflow.yaml), variant and baseline runs carry MLflow's ``system/*``
  metrics (CPU, memory, disk, network; GPU with pynvml).
- registered model (``sweep --register NAME``): a version of NAME from the best variant's logged
  model, its description the selection rule, the headline and the report's location; tag
  ``borealis.selection_rule`` (why this variant).
- a run that did not finish: status FAILED (an error) or KILLED (a signal), tag ``error`` =
  ``<ExceptionType>: <message>``; training faults add ``error.step`` (0-based) and
  ``error.batch_ids``; an out-of-memory outside training adds ``error.hint``.

Set metrics (``<name>/<set>``; rates are fractions): wer, cer, wer_ci_low, wer_ci_high,
cer_ci_low, cer_ci_high, n_utts, ref_words, hyp_words, sub, dele, ins, hits, ref_chars,
char_edits, capped_rate, wer_uncapped, wer_raw, wer_basic, wer_whisper (+ _ci_low/_ci_high: Whisper's
own normaliser, whisper_en@ for English sets and whisper_basic@ for the others, as published
leaderboards score), fail_* (failures.py), rtfx, audio_seconds.
"""

from __future__ import annotations

import json
from typing import Any

# ---------------------------------------------------------------- roles and tags
PARENT, VARIANT, BASELINE = "parent", "variant", "baseline"

ROLE = "role"
VARIANT_NAME = "variant"
CELL = "cell"
TEXT_MODE = "text_mode"
CONFIG_HASH = "config_hash"
SEED = "seed"
MODEL = "model"
PROTOCOL = "protocol"  # a baseline's decoding protocol, in words (beam, timestamps, backend)
KIND = "kind"
STUDY = "borealis.study"
ABLATION = "borealis.ablation"
DESCRIPTION = "borealis.description"
FINGERPRINT = "borealis.fingerprint"
NOTE = "mlflow.note.content"
PARENT_RUN = "mlflow.parentRunId"
ATTEMPT = "attempt"
PREVIOUS_ATTEMPT = "previous_attempt_run"
RESUMED_FROM = "resumed_from_step"
ERROR = "error"
ERROR_STEP = "error.step"
ERROR_BATCH_IDS = "error.batch_ids"
ERROR_HINT = "error.hint"
OPTUNA_TRIAL = "optuna.trial"
OPTUNA_STUDY = "optuna.study"
OPTUNA_PRUNED = "optuna.pruned"
BEST_TRIAL = "best.trial"
BEST_RUN = "best.run_id"
BEST_PARAMS = "best.params"
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"  # a kind the MLflow UI knows (FACTS.md)
DATASET_CONTEXT = "mlflow.data.context"  # an input tag: TRAINING or EVALUATION (data/lineage.py)
SAVED_VIEW_PREFIX = "mlflow.sharedViewState."  # an experiment tag per saved runs-table view (MLflow UI 3.17)
WER_VIEW = "borealis-wer"  # our saved view's id
SELECTION_RULE = "borealis.selection_rule"  # a registered model version's tag: why this variant
UNSTABLE_CELLS = "borealis.unstable_cells"  # the parent's tag once reported: cells whose seed spread is far above the rest
MARGINS = "borealis.margin_pts"  # the parent's tag: analysis.margin_pts as JSON {"default": pts, "sets": {set: pts}}
SEED_DESIGN = "borealis.seed_design"  # parent: the adaptive seed design as JSON {initial, max, target_pts, estimator}
SEED_DECISION = "borealis.seed_decision"  # parent: its decision (evaluate/adaptive.py SeedDecision as JSON)
SEED_DESIGN_KEY = "seed-design"  # the claims row (config_hash) of the decision: one worker decides, all read it
PLAN_VARIANCE = "borealis.plan_variance"  # the parent's tag: where the seed plan's variance came from (runs or a prior)
LAUNCHER = "launcher"  # parent run: slurm when `sweep --launcher slurm` submitted the workers
SLURM_JOB_IDS = "slurm.job_ids"  # parent run: the worker jobs' ids, comma-separated
SLURM_LOG_DIR = "slurm.log_dir"  # parent run: where the worker jobs write their logs

_AXIS = "axis."
_AXIS_LABEL = "axis_label."
_NORMALIZER = "normalizer/"


def axis_tag(dotted: str) -> str:
    return _AXIS + dotted


def axis_label_tag(dotted: str) -> str:
    return _AXIS_LABEL + dotted


def axis_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def axes_of(tags: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """{dotted path: (logged value, its readable label or None)} for a run's grid axes, seed excluded.
    Runs logged before the label tags existed give None as the label (the reader derives one)."""
    return {k.removeprefix(_AXIS): (v, tags.get(axis_label_tag(k.removeprefix(_AXIS))))
            for k, v in tags.items() if k.startswith(_AXIS) and k != axis_tag(SEED)}


def variant_identity(v: Any) -> dict[str, str]:
    """The tags that identify a variant's run (and its logged model's params): name, cell, config
    hash, text mode, seed, and per grid axis its value (``axis.<path>``) and label (``axis_label.<path>``).
    `v` is a config.Variant (not imported: this module names things, it depends on nothing)."""
    out = {VARIANT_NAME: v.name, CELL: v.cell, CONFIG_HASH: v.config_hash, TEXT_MODE: v.config.data.text_mode,
           SEED: str(v.config.seed)}
    for dotted, value in v.axes.items():
        out[axis_tag(dotted)] = axis_value(value)
        if dotted in v.labels:
            out[axis_label_tag(dotted)] = v.labels[dotted]
    return out


def normalizer_tag(set_name: str) -> str:
    return _NORMALIZER + set_name


def normalizers_of(tags: dict[str, str]) -> dict[str, str]:
    """{eval set: normaliser tag} from a run's tags."""
    return {k.removeprefix(_NORMALIZER): v for k, v in tags.items() if k.startswith(_NORMALIZER)}


# ---------------------------------------------------------------- metrics
PLAN_SECONDS = "plan/seconds"
PLAN_DEVICE_HOURS = "plan/device_hours"
SWEEP_FINISHED = "sweep/finished"
SWEEP_FAILED = "sweep/failed"
CACHE_ENCODED = "cache/encoded"
CACHE_HITS = "cache/hits"
BEST_OBJECTIVE = "best/objective"
SEARCH_COMPLETE = "search/complete"
SEARCH_PRUNED = "search/pruned"
SEARCH_FAILED = "search/failed"
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_FIRST_LOSS = "train/first_loss"
TRAIN_LAST_LOSS = "train/last_loss"
TRAIN_SECONDS = "train/seconds"
TRAIN_STEPS_PER_SECOND = "train/steps_per_second"
TRAIN_STEPS = "train/steps"
ALIGN_LOSS = "align/loss"  # the alignment phase's CTC loss (train.align), by its own step
ALIGN_SECONDS = "align/seconds"
ALIGN_VOCABULARY = "align.vocabulary"  # param: the CTC head's classes (tokens of the training transcripts)
TRAINABLE_PARAMS = "model.trainable_params"
PRECISION_USED = "train.precision_used"  # param: what train.precision resolved to on this machine
MACHINE_CPU = "machine.cpu"  # param: the CPU model name the run trained on
ENCODER_PRECISION_USED = "encoder.precision_used"  # param: what model.encoder.precision resolved to (fp32, bf16)
OBJECTIVE = "objective"


# the per-eval-set metric families a sweep logs as ``<name>/<set>`` (the list in the docstring above)
SET_METRICS = ("wer", "cer", "n_utts", "ref_words", "hyp_words", "sub", "dele", "ins", "hits", "ref_chars",
               "char_edits", "capped_rate", "wer_uncapped", "wer_raw", "wer_basic", "wer_whisper", "rtfx",
               "audio_seconds")


def set_metric(name: str, set_name: str) -> str:
    """'wer', 'test_ru' -> 'wer/test_ru'."""
    return f"{name}/{set_name}"


def split_metric(key: str) -> tuple[str, str]:
    """'wer/test_ru' -> ('wer', 'test_ru'); a key without '/' -> ('', key). Splits on the last '/'."""
    family, _, column = key.rpartition("/")
    return family, column


def curve_wer(set_name: str) -> str:
    """Dev-set WER logged every `eval.every_steps` training steps (a learning curve)."""
    return set_metric("dev_wer", set_name)


def data_metric(name: str) -> str:
    return f"data/{name}"


def augment_metric(name: str) -> str:
    """Augmentation counters: ``augment/<effect>``, ``augment/audio_examples``, ``augment/seconds``."""
    return f"augment/{name}"


def delta_vs_baseline(set_name: str) -> str:
    return set_metric("delta_wer_vs_baseline", set_name)


def p_vs_baseline(set_name: str) -> str:
    return set_metric("p_vs_baseline", set_name)


def plan_detectable(set_name: str) -> str:
    """The seed plan's effect (WER pts) the sweep's seeds detect at 80% power on a set."""
    return set_metric("plan_detectable_pts", set_name)


def plan_seeds_needed(set_name: str) -> str:
    """The seed plan's seeds per cell for 80% power at the set's margin (absent: not reachable)."""
    return set_metric("plan_seeds_needed", set_name)


def text_chrf(name: str) -> str:
    return set_metric("text_chrf", name)


def text_exact(name: str) -> str:
    return set_metric("text_exact", name)


# ---------------------------------------------------------------- artifacts
RESOLVED_CONFIG = "config/resolved.yaml"
WEIGHTS_DIR = "weights"
WEIGHTS_FILE = "trainable.safetensors"
TOKENIZER_DIR = "tokenizer"
ERROR_TEXT = "error.txt"
BAD_ITEMS = "data/bad_items.jsonl"
REPORT_DIR = "report"
BEST_TRIALS = "search/best_trials.jsonl"
PLAN = "plan/plan.json"
PLAN_POWER = "plan/power.json"  # the seed plan: per set, detectable effect, seeds needed, their cost (plan/power.py)
REFERENCES = "eval/references.json"  # published figures per eval set ({set: [{wer, system, source, note}]})
PREDICTIONS_DIR = "predictions"
PAIRED_DIR = "paired"


MODEL_TYPE = "speech-lm"  # the logged models' model_type
MODEL_FLAVOR = "borealis_speech_lm"  # the MLmodel flavour rescore reads


def predictions(set_name: str) -> str:
    return f"{PREDICTIONS_DIR}/{set_name}.jsonl"


def text_predictions(name: str) -> str:
    return f"{PREDICTIONS_DIR}/text_{name}.jsonl"


def paired(set_name: str) -> str:
    return f"{PAIRED_DIR}/{set_name}.jsonl"


def ablation_copy(filename: str) -> str:
    return f"ablation/{filename}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b.c': value} (a run's params); lists and empty mappings become JSON strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out
