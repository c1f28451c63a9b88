"""The exceptions the CLI reports as one-line user errors (exit code 2)."""

from __future__ import annotations

from borealis_eval.config import ConfigError
from borealis_eval.data.manifest import AudioError
from borealis_eval.data.mixer import MixError
from borealis_eval.data.sources import BadDataError
from borealis_eval.models.refs import ModelRefError
from borealis_eval.report import ReportError
from borealis_eval.tracking import TrackingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, AudioError, MixError, ModelRefError, ReportError, BadDataError, TrackingError,
    FileNotFoundError, ValueError,
)
