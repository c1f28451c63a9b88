"""MLflow: where the store is (mlflow.yaml), run identity, parent/child runs, batched logging.

The embedded default is a sqlite store and an artifact folder next to mlflow.yaml; the same
code points at a server through mlflow.yaml or MLFLOW_TRACKING_URI. Runs are driven through
`MlflowClient` with explicit run ids (no global active-run state), so nesting is explicit.

A store that fails mid-run fails loudly (StoreError, a TrackingError the CLI prints in one line)
instead of losing data quietly: unsent metrics stay buffered, the training loop checkpoints first,
and the sweep marks the variant's claim interrupted, so rerunning the same command resumes it.
"""

from __future__ import annotations

import functools
import json
import os
import time
import urllib.error
import urllib.request
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from borealis_eval.errors import StoreError, TrackingError

DEFAULT_CONFIG = Path("mlflow.yaml")


def _brief(e: BaseException) -> str:
    """'Type: first line of the message' (store drivers attach pages of SQL and tracebacks)."""
    first = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {first}"


def _store_call(fn):
    """RunLogger methods: a store failure becomes a StoreError that names the run and says how to recover."""

    @functools.wraps(fn)
    def wrapper(self, *a, **k):
        try:
            return fn(self, *a, **k)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - mlflow raises many types (MlflowException, OSError, sqlalchemy)
            raise StoreError(
                f"MLflow store {self.client.tracking_uri} failed while writing run {self.run_id} "
                f"({_brief(e)}); nothing finished is lost and "
                "training is checkpointed: rerun the same command once the store is back to resume") from e
    return wrapper


@dataclass
class TrackingConfig:
    tracking_uri: str
    artifact_location: str | None = None

    @classmethod
    def load(cls, path: str | Path | None = None, tracking_uri: str | None = None) -> "TrackingConfig":
        """Explicit URI > MLFLOW_TRACKING_URI > mlflow.yaml > embedded default (./mlruns.db)."""
        path = Path(path or os.environ.get("BOREALIS_MLFLOW_CONFIG", DEFAULT_CONFIG))
        data: dict[str, Any] = {}
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            unknown = set(data) - {"tracking_uri", "artifact_location"}
            if unknown:
                raise TrackingError(f"{path}: unknown field(s) {sorted(unknown)} (allowed: tracking_uri, artifact_location)")
        base = path.resolve().parent
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or data.get("tracking_uri", "sqlite:///mlruns.db")
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = f"sqlite:///{(base / uri.removeprefix('sqlite:///')).resolve()}"
        art = data.get("artifact_location", "mlartifacts")
        if art and "://" not in art:
            art = (base / art).resolve().as_uri()
        return cls(uri, art)

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))


def preflight(tc: TrackingConfig, timeout: float = 5.0) -> MlflowClient:
    """Fail before any training if the store cannot be reached."""
    if tc.is_remote:
        url = tc.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                if r.status != 200:
                    raise TrackingError(f"MLflow server at {tc.tracking_uri} answered {r.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"MLflow tracking server {tc.tracking_uri} is unreachable ({getattr(e, 'reason', e)}); "
                "start it, or unset MLFLOW_TRACKING_URI to use the embedded store in mlflow.yaml"
            ) from None
    elif tc.tracking_uri.startswith("sqlite:///"):
        try:
            Path(tc.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"MLflow store {tc.tracking_uri}: cannot create its folder ({e})") from None
    lock = nullcontext()
    if tc.tracking_uri.startswith("sqlite:///"):  # workers starting together: one creates the schema, not both
        lock = FileLock(tc.tracking_uri.removeprefix("sqlite:///") + ".lock")
    try:
        with lock:
            client = MlflowClient(tracking_uri=tc.tracking_uri)
            client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any store failure is a tracking failure
        raise TrackingError(f"MLflow store {tc.tracking_uri} is not usable: {e}") from None
    return client


def experiment_id(client: MlflowClient, tc: TrackingConfig, name: str, description: str = "") -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            eid = client.create_experiment(name, artifact_location=f"{tc.artifact_location}/{name}"
                                           if tc.artifact_location else None)
        except Exception:  # another worker created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            eid = exp.experiment_id
    else:
        eid = exp.experiment_id
    if description:
        client.set_experiment_tag(eid, "borealis.description", description)
        client.set_experiment_tag(eid, "mlflow.note.content", description)
    return eid


class RunLogger:
    """One MLflow run with buffered metrics (one log_batch per flush, not one call per point)."""

    FLUSH_EVERY = 200  # metric points buffered before one log_batch

    def __init__(self, client: MlflowClient, run_id: str, flush_every: int | None = None):
        self.client, self.run_id, self.flush_every = client, run_id, flush_every or self.FLUSH_EVERY
        self._metrics: list[Metric] = []
        self.log_seconds = 0.0

    @classmethod
    def start(cls, client: MlflowClient, exp_id: str, name: str, tags: dict[str, Any],
              parent_id: str | None = None) -> "RunLogger":
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        try:
            run = client.create_run(exp_id, run_name=name, tags=tags)
        except Exception as e:  # noqa: BLE001 - see _store_call
            raise StoreError(f"MLflow store {client.tracking_uri} failed creating run '{name}' ({_brief(e)}); "
                             "rerun the same command once the store is back") from e
        return cls(client, run.info.run_id)

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), ts, step) for k, v in values.items())
        if len(self._metrics) >= self.flush_every:
            self.flush()

    @_store_call
    def params(self, values: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in values.items()]
        t = time.perf_counter()
        for s in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[s : s + 100])
        self.log_seconds += time.perf_counter() - t

    @_store_call
    def tags(self, values: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    @_store_call
    def flush(self) -> None:
        t = time.perf_counter()
        while self._metrics:
            self.client.log_batch(self.run_id, metrics=self._metrics[:1000])
            del self._metrics[:1000]  # only once stored: a failed write keeps them for the next flush
        self.log_seconds += time.perf_counter() - t

    @_store_call
    def artifact_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def artifact_json_lines(self, rows: list[dict], path: str) -> None:
        self.artifact_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), path)

    @_store_call
    def artifact_file(self, local: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local), folder)

    @_store_call
    def artifact_dir(self, local: str | Path, folder: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local), folder)

    @_store_call
    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status)
