"""The life of one unit of work of a study, top to bottom, in one place.

A unit is a grid cell's variant (language mix x text fraction x seed x ...; or a search trial)
or a baseline. `run_claimed` owns a claimed unit's whole life: open its nested MLflow run (a
dead earlier attempt's run closed first), log its params and resolved config, train and/or
decode, score, save, compare it with the main baseline (ΔWER, p-value), record how it ended on
the run and on the claim, and clean up (the checkpoint removed once it finished). Every kind of
unit goes through it: a variant runs `VariantRecipe` (setup -> train -> evaluate -> save ->
cleanup, in the manner of torchtune's single-device recipes), a baseline `BaselineRecipe`
(decode and score), a non-main DDP rank the same `VariantRecipe` with nothing recorded
(`run_on_follower`). The study (study.py) owns the claims, heartbeats, signals and the parent
run; the drivers (sweep.py, search.py) choose which units to claim. Names in records.py.

| how it ends                    | unit run    | claim        | the caller sees           |
|--------------------------------|-------------|--------------|---------------------------|
| finished                       | FINISHED    | finished     | the results               |
| an error in the unit           | FAILED      | failed       | None (the others go on)   |
| SIGINT/SIGTERM, or Ctrl-C      | KILLED      | interrupted  | the interruption          |
| the tracking store failed      | FAILED      | interrupted  | StoreError (resumable)    |
| pruned by Optuna               | KILLED      | pruned       | optuna.TrialPruned        |

An interrupted or stale claim is taken over by the next worker or rerun, which resumes from the
variant's checkpoint (`<checkpoint_root>/<study>/<config hash>`).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import yaml

from borealis_eval import records
from borealis_eval.align import align
from borealis_eval.claims import Claim
from borealis_eval.config import BaselineConfig, ExperimentConfig, TrainConfig, Variant
from borealis_eval.data.augment import Augmenter
from borealis_eval.data.augment_batches import AugmentBatches
from borealis_eval.data.mixer import Mix
from borealis_eval.data.sources import AudioItem
from borealis_eval.decode import evaluate_baseline, evaluate_speech_lm, evaluate_text_skill, weights_id
from borealis_eval.distributed import NullRun, is_main_process
from borealis_eval.errors import StoreError, TrainingInterrupted
from borealis_eval.evaluate.runner import PairedScores, SetResult, metrics_for_mlflow
from borealis_eval.logged_model import log_variant_model
from borealis_eval.machine import cpu_name
from borealis_eval.models.baseline_protocol import describe_protocol
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.resources import Resources
from borealis_eval.study import Study, close_previous_attempt, failure_reason, record_failure
from borealis_eval.tracking import RunLogger
from borealis_eval.train import TrainResult, has_checkpoint, train, uses_bf16


@dataclass
class TrainOptions:
    """How the recipe trains: checkpoints, stop requests, per-step hooks."""

    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    should_stop: Callable[[], str | None] | None = None
    on_step: Callable[[SpeechLM], Callable[[int], None]] | None = None  # model -> hook(step)


def variant_tags(v: Variant, role: str = records.VARIANT) -> dict[str, str]:
    """The tags that identify a variant's run: its name, config hash and grid axes."""
    return {records.ROLE: role, **records.variant_identity(v)}


def log_results(run: RunLogger, results: list[SetResult]) -> None:
    """Per eval set: metrics, the normaliser that produced them, the raw predictions."""
    for r in results:
        run.metrics(metrics_for_mlflow(r))
        run.tags({records.normalizer_tag(r.name): r.normalizer})
        run.artifact_json_lines(r.records, records.predictions(r.name))
    run.flush()


def _merged(parts) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for p in parts:
        out.update(p or {})
    return out or None


class VariantRecipe:
    """Train and score one variant on shared resources, logging to `run`."""

    def __init__(self, v: Variant, res: Resources, run: RunLogger, progress: bool = True,
                 opts: TrainOptions | None = None):
        self.v, self.cfg, self.res, self.run = v, v.config, res, run
        self.progress = progress
        self.opts = opts or TrainOptions()
        self.mix: Mix | None = None
        self.model: SpeechLM | None = None
        self.examples: list[Example] = []
        self.augment: AugmentBatches | None = None
        self.trained: TrainResult | None = None

    def setup(self) -> None:
        """The training stream (realised mix logged), the tokenizer and a freshly seeded model."""
        cfg, res = self.cfg, self.res
        self.mix = res.mix_for(self.v)
        self.run.metrics({records.data_metric(k): x for k, x in self.mix.stats.items()})
        self.run.datasets(res.datasets_for(self.v))
        self.tokenizer = res.tokenizer_for(cfg.model)
        torch.manual_seed(cfg.seed)
        self.model = SpeechLM.from_config(cfg.model, res.encoder.dim, self.tokenizer, device=res.device).to(res.device)
        self.examples = [  # audio features stay in the feature cache until their batch is built
            Example(answer=e.text, feature_key=e.id, id=e.id) if isinstance(e, AudioItem)
            else Example(answer=e.answer, instruction=e.instruction, id=e.id)
            for e in self.mix.examples if not isinstance(e, AudioItem) or e.id in res.features
        ]
        if self.model.adapter.ctc is not None:  # every cell classifies over the same tokens: the study's transcripts
            self.run.params({records.ALIGN_VOCABULARY: self.model.set_ctc_vocabulary([it.text for it in res.train_items])})
        n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.run.params({records.TRAINABLE_PARAMS: n_params})
        if cfg.data.augment is not None:  # augmented clips are re-encoded on the fly; the others keep cached features
            self.augment = AugmentBatches(Augmenter(cfg.data.augment, cfg.seed), res.encoder,
                                          {e.id: e for e in self.mix.examples if isinstance(e, AudioItem)},
                                          len(self.examples))

    def train_config(self) -> TrainConfig:
        """The training settings; with text_mode add the steps grow with the stream, so every
        variant sees the same number of audio examples at the same batch size."""
        tc = self.cfg.train
        return tc if self.cfg.train_steps == tc.steps else tc.model_copy(update={"steps": self.cfg.train_steps})

    def train(self) -> TrainResult:
        """Train (or resume from the checkpoint) and log the curve and the training summary."""
        o, tc = self.opts, self.train_config()
        self.run.params({records.PRECISION_USED: "bf16" if uses_bf16(tc) else "fp32", records.MACHINE_CPU: cpu_name(),
                         records.ENCODER_PRECISION_USED: self.res.encoder.precision})
        if tc.align is not None and not has_checkpoint(o.checkpoint_dir):  # a resumed run has the aligned adapter
            aligned = align(self.model, self.examples, tc.align, self.cfg.seed, tc.precision, self.res.features,
                            log=self.run.metrics, log_every=tc.log_every, progress=self.progress)
            self.run.metrics({records.ALIGN_SECONDS: aligned.seconds})
        if tc.align is not None and tc.align.freeze:  # also on a resume: the checkpoint's adapter stays fixed
            self.model.freeze_aligned_adapter()
        hooks = [h for h in (self._curve_hook(tc), o.on_step(self.model) if o.on_step else None) if h]
        result = train(self.model, self.examples, tc, self.cfg.seed, log=self.run.metrics,
                       progress=self.progress, checkpoint_dir=o.checkpoint_dir, checkpoint_every=o.checkpoint_every,
                       should_stop=o.should_stop, on_step=(lambda step: _merged(h(step) for h in hooks)) if hooks else None,
                       batch_transform=self.augment, features=self.res.features)
        if self.augment is not None:
            self.run.metrics(self.augment.metrics())  # every rank takes part (counts are summed over ranks)
        if result.resumed_from:
            self.run.tags({records.RESUMED_FROM: result.resumed_from})
        self.run.metrics({records.TRAIN_FIRST_LOSS: result.first_loss, records.TRAIN_LAST_LOSS: result.last_loss,
                          records.TRAIN_SECONDS: result.seconds, records.TRAIN_STEPS: result.steps,
                          records.TRAIN_STEPS_PER_SECOND: (result.steps - result.resumed_from) / max(result.seconds, 1e-9)})
        self.trained = result
        return result

    def _curve_hook(self, tc: TrainConfig) -> Callable[[int], dict[str, float] | None] | None:
        """Every `eval.every_steps` steps (and at the last): greedy WER on the dev sets, returned to
        train() as metrics of that step (so a resumed run replays the points before the resume)."""
        every = self.cfg.eval.every_steps
        if not every or not self.res.dev_sets or not is_main_process():
            return None

        def hook(step: int) -> dict[str, float] | None:
            if step % every and step != tc.steps:
                return None
            self.model.eval()
            with torch.random.fork_rng():  # scoring must not move the training's random stream
                results = evaluate_speech_lm(self.model, self.res, self.cfg, eval_sets=self.res.dev_sets,
                                             progress=False, warmup=False)
            return {records.curve_wer(r.name): r.metrics["wer"] for r in results}

        return hook

    def evaluate(self) -> list[SetResult]:
        """Score every eval set (raw predictions kept) and the held-out text instructions."""
        results = evaluate_speech_lm(self.model, self.res, self.cfg, model_id=weights_id(self.model))
        log_results(self.run, results)
        for name, (score, rows) in evaluate_text_skill(self.model, self.res, self.cfg).items():
            self.run.metrics({records.text_chrf(name): score["chrf"], records.text_exact(name): score["exact_match"]})
            self.run.artifact_json_lines(rows, records.text_predictions(name))
        return results

    def save(self) -> None:
        """The trained weights (only what was trained) and the tokenizer, as the run's MLflow logged
        model, with the variant's axes and eval metrics attached (logged_model.py)."""
        log_variant_model(self.run, self.v, self.model, self.tokenizer, self.res.datasets_for(self.v))

    def cleanup(self) -> None:
        """Drop the model and the stream (the next variant of this worker builds its own)."""
        self.model, self.examples, self.augment = None, [], None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run_all(self) -> list[SetResult]:
        """setup -> train -> evaluate -> save -> cleanup; under DDP only the main process evaluates and saves."""
        try:
            self.setup()
            self.train()
            if not is_main_process():
                return []
            results = self.evaluate()
            self.save()
            return results
        finally:
            self.cleanup()


def run_on_follower(v: Variant, res: Resources, checkpoint_dir: Path, checkpoint_every: int) -> None:
    """A non-main DDP rank's part of a variant's life: the same recipe, nothing recorded (the main
    rank owns the run and the claim); the same checkpoint directory, so a resume resumes on every rank."""
    VariantRecipe(v, res, NullRun(), False,  # type: ignore[arg-type]
                  TrainOptions(checkpoint_dir, checkpoint_every)).run_all()


class BaselineRecipe:
    """A plain-Whisper baseline on shared resources: nothing to train; decode and score every eval set."""

    def __init__(self, b: BaselineConfig, cfg: ExperimentConfig, res: Resources, run: RunLogger):
        self.b, self.cfg, self.res, self.run = b, cfg, res, run

    def run_all(self) -> list[SetResult]:
        self.run.datasets(self.res.datasets_for(None))
        results = evaluate_baseline(self.res, self.cfg, self.b)
        log_results(self.run, results)
        return results


@dataclass
class VariantWork:
    """A variant (grid cell or search trial) as a unit of work: trained, so a signal lets the step
    finish and checkpoint (`graceful`), and compared with the main baseline."""

    v: Variant
    extra_tags: dict = field(default_factory=dict)
    graceful = True
    compares = True

    @property
    def key(self) -> str:
        return self.v.config_hash

    @property
    def run_name(self) -> str:
        return self.v.name

    @property
    def system(self) -> str:
        return self.v.name

    def tags(self) -> dict:
        return {**variant_tags(self.v), **self.extra_tags}

    def log_inputs(self, run: RunLogger) -> None:
        """The flattened resolved config as params, and the resolved config itself."""
        resolved = self.v.config.model_dump(mode="json")
        run.params(records.flatten(resolved))
        run.artifact_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), records.RESOLVED_CONFIG)

    def recipe(self, res: Resources, run: RunLogger, progress: bool, opts: TrainOptions) -> VariantRecipe:
        return VariantRecipe(self.v, res, run, progress, opts)


@dataclass
class BaselineWork:
    """A baseline as a unit of work (claim key: sweep.baseline_key): nothing to checkpoint, so a
    signal stops it at once; it is the reference of the comparisons, not compared itself."""

    b: BaselineConfig
    cfg: ExperimentConfig
    key: str
    graceful = False
    compares = False

    @property
    def run_name(self) -> str:
        return f"{self.b.name}-whisper"

    @property
    def system(self) -> str:
        return self.b.name

    def tags(self) -> dict:
        b = self.b
        protocol = describe_protocol({"num_beams": b.num_beams, "timestamps": b.timestamps, "backend": b.backend,
                                      "compute_type": b.compute_type})
        return {records.ROLE: records.BASELINE, records.VARIANT_NAME: b.name, records.MODEL: b.ref,
                records.CONFIG_HASH: self.key, records.PROTOCOL: protocol}

    def log_inputs(self, run: RunLogger) -> None:
        run.params({f"baseline.{k}": v for k, v in self.b.model_dump(mode="json").items()})

    def recipe(self, res: Resources, run: RunLogger, progress: bool, opts: TrainOptions) -> BaselineRecipe:
        return BaselineRecipe(self.b, self.cfg, res, run)


Work = VariantWork | BaselineWork


def open_run(st: Study, key: str, name: str, tags: dict, claim: Claim | None) -> RunLogger:
    """A nested run under the study's parent for a claimed unit; a dead earlier attempt's run is closed first."""
    if claim is not None:
        close_previous_attempt(st.client, claim)
        tags = {**tags, records.ATTEMPT: claim.attempts}
        if claim.previous_run_id:
            tags[records.PREVIOUS_ATTEMPT] = claim.previous_run_id
    try:
        run = RunLogger.start(st.client, st.exp_id, name, {**tags, records.STUDY: st.name},
                              st.parent.run_id, system_metrics=st.system_metrics)
    except StoreError as e:
        st.store.interrupt(st.name, key, str(e))
        raise
    st.store.set_run(st.name, key, run.run_id)
    return run


@contextmanager
def recorded_outcome(st: Study, run: RunLogger, key: str) -> Iterator[dict]:
    """Record how a claimed unit ends, on its run and its claim (the table in the module docstring).

    An ordinary error is recorded and swallowed (the yielded dict gets `failed` = the reason),
    so the study goes on; interruptions, store failures and pruning propagate.
    """
    outcome: dict = {}
    try:
        yield outcome
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        record_failure(run, e, "KILLED")
        st.store.interrupt(st.name, key, str(e) or "interrupted")
        raise
    except StoreError as e:  # the tracking store failed, not the work: stop loudly, resumable (checkpoint kept)
        record_failure(run, e)
        st.store.interrupt(st.name, key, str(e))
        raise
    except Exception as e:
        if type(e).__name__ == "TrialPruned":
            run.tags({records.OPTUNA_PRUNED: "true"})
            run.end("KILLED")
            st.store.prune(st.name, key)
            shutil.rmtree(st.checkpoint_dir(key), ignore_errors=True)
            raise
        record_failure(run, e)
        st.store.fail(st.name, key, failure_reason(e))
        outcome["failed"] = failure_reason(e)


def run_claimed(st: Study, work: Work, resources: Callable[[], Resources], claim: Claim | None, *,
                compare: PairedScores | None = None, on_step=None,
                started: Callable[[str], None] | None = None) -> list[SetResult] | None:
    """One claimed unit's whole life (module docstring); its results, or None when it failed.

    `compare` collects every system's per-utterance scores; a unit that `compares` gets its ΔWER
    and p-value against the main baseline on its run before it is marked FINISHED.
    """
    key = work.key
    ckdir = st.checkpoint_dir(key)
    with st.heartbeat(key):  # the claim stays fresh from here (shared data may be prepared first)
        res = resources()
        run = open_run(st, key, work.run_name, work.tags(), claim)
        if started is not None:
            started(run.run_id)
        with recorded_outcome(st, run, key) as outcome:
            work.log_inputs(run)
            st.stop.graceful = work.graceful
            try:
                results = work.recipe(res, run, st.progress, TrainOptions(
                    ckdir, st.checkpoint_every, st.stop, on_step)).run_all()
            finally:
                st.stop.graceful = False
            if compare is not None:
                compare.add(work.system, results)
                if work.compares:
                    run.metrics(compare.vs_main(work.system))
            run.end("FINISHED")
            st.store.finish(st.name, key, run.run_id)
            shutil.rmtree(ckdir, ignore_errors=True)
            return results
    assert "failed" in outcome
    return None
