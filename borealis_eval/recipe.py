"""One variant's life, top to bottom: setup -> train -> evaluate -> save -> cleanup.

A variant is one grid cell (language mix x text fraction x seed x ...) of an ablation. Its
recipe draws the training stream from the shared resources, builds the speech-LLM (frozen
encoder features -> adapter -> LLM), trains it, scores it on every eval set and on held-out
text instructions, and records everything on its MLflow run (names in records.py). The study
(study.py) decides which variants run where and records failures; this file is only what one
variant does, in the manner of torchtune's single-device recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from borealis_eval import records
from borealis_eval.config import TrainConfig, Variant
from borealis_eval.data.augment import Augmenter
from borealis_eval.data.augment_batches import AugmentBatches
from borealis_eval.data.mixer import Mix
from borealis_eval.data.sources import AudioItem
from borealis_eval.decode import evaluate_speech_lm, evaluate_text_skill, weights_id
from borealis_eval.distributed import is_main_process
from borealis_eval.evaluate.runner import SetResult, metrics_for_mlflow
from borealis_eval.logged_model import log_variant_model
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.resources import Resources
from borealis_eval.tracking import RunLogger
from borealis_eval.train import TrainResult, train, uses_bf16


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
        self.tokenizer = res.tokenizer_for(cfg.model.llm)
        torch.manual_seed(cfg.seed)
        self.model = SpeechLM.from_config(cfg.model, res.encoder.dim, self.tokenizer, device=res.device).to(res.device)
        self.examples = [  # audio features stay in the feature cache until their batch is built
            Example(answer=e.text, feature_key=e.id, id=e.id) if isinstance(e, AudioItem)
            else Example(answer=e.answer, instruction=e.instruction, id=e.id)
            for e in self.mix.examples if not isinstance(e, AudioItem) or e.id in res.features
        ]
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
        self.run.params({records.PRECISION_USED: "bf16" if uses_bf16(tc) else "fp32"})
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
