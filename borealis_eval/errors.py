"""Every exception type of the project, in one leaf module (it imports nothing of the package).

`UserError` and its subclasses are problems a user can fix (a bad config, missing data, an
unreachable store): the CLI prints them as one line and exits with status 2. Everything else
is a bug and keeps its traceback (exit 1). Training faults are recorded on the variant's run
by the study and never reach the CLI as user errors.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says what and where, on one line."""


class ConfigError(UserError, ValueError):
    """A config problem: the message is one line and names file, line and field."""

    def __init__(self, message: str):
        # keys, values and paths come from the user's file: keep the message on one line
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class UsageError(UserError, ValueError):
    """A command was called with arguments that cannot work (unknown set, no matching variant)."""


class DataError(UserError):
    """A data source cannot be read: a missing manifest, file or column."""


class AudioError(DataError, ValueError):
    """An audio clip that cannot be used; `kind` names why, for the run's bad-item list.

    Kinds: missing, corrupt, empty, nan (NaN or inf samples), sample_rate (implausible rate),
    too_long / too_short (outside the set's duration limits, found after reading the header).
    """

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message)
        self.kind = kind


class BadDataError(DataError):
    """Too many unusable items in one set (over data.max_bad_share), or an empty set."""


class MixError(UserError, ValueError):
    """The training stream cannot be drawn as configured (no audio of a language, empty pool)."""


class ModelRefError(UserError, ValueError):
    """A model reference cannot be resolved (unknown form, hub while offline, missing folder)."""


class WeightImportError(UserError):
    """A bundled weight package is missing, corrupted or not what the importer expects."""


class SynthesisError(UserError):
    """A speech synthesiser is missing or failed."""


class RealDataError(UserError):
    """Real speech recordings could not be fetched or prepared."""


class TrackingError(UserError):
    """The MLflow store is unreachable or unusable."""


class StoreError(TrackingError):
    """The tracking store failed after the run started (a write was refused or timed out)."""


class ReportError(UserError):
    """The store does not hold what a report needs (missing experiment, parent, runs)."""


class RunRecordError(UserError):
    """An MLflow run is not what a command needs (e.g. not a finished variant run)."""


# ---------------------------------------------------------------- training faults (recorded per variant)
class TrainingDiverged(RuntimeError):
    """Loss or gradients became NaN/inf; carries the step and the batch's example ids."""

    def __init__(self, step: int, what: str, ids: list[str]):
        self.step, self.ids = step, ids
        super().__init__(f"{what} is not finite at step {step} (batch ids: {', '.join(ids[:8])}"
                         f"{' ...' if len(ids) > 8 else ''})")


class TrainingOOM(RuntimeError):
    """Out of memory in a training step; the message says which settings to change."""

    def __init__(self, step: int, cfg, ids: list[str], cause: BaseException):
        """`cfg`: the TrainConfig (its batch_size and grad_accum go into the hint)."""
        self.step, self.ids = step, ids
        bs, ga = cfg.batch_size, cfg.grad_accum
        fix = (f"lower train.batch_size and raise train.grad_accum by the same factor (the effective batch "
               f"{bs * ga} stays), e.g. batch_size: {max(1, bs // 2)}, grad_accum: {ga * 2}" if bs > 1 else
               "train.batch_size is already 1: use a smaller model, LoRA (model.llm.train: lora) or bf16")
        super().__init__(f"out of memory at step {step} (train.batch_size={bs}, train.grad_accum={ga}): {fix} "
                         f"[{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}]")


class TrainingInterrupted(RuntimeError):
    """Training stopped on request (a signal); the checkpoint at `step` is on disk."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"{reason}; stopped at step {step} (checkpoint saved)")


def is_oom(e: BaseException) -> bool:
    """CUDA OOM, a host allocation failure, or a CPU allocator 'can't allocate memory' RuntimeError."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch's, without importing torch
        return True
    return isinstance(e, RuntimeError) and any(m in str(e) for m in ("out of memory", "can't allocate memory"))
