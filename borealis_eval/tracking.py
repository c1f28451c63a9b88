"""MLflow: where the store is (mlflow.yaml), run identity, parent/child runs, batched logging.

The embedded default is a sqlite store and an artifact folder next to mlflow.yaml; the same
code points at a server through mlflow.yaml or MLFLOW_TRACKING_URI. Runs are driven through
`MlflowClient` with explicit run ids (no global active-run state), so nesting is explicit.

The records are MLflow's own where MLflow has one, so its UI shows a study the way its users
expect: the experiment is tagged as model development (`mlflow.experimentKind`), every set a
run reads is a dataset input, a trained variant is a logged model linked to its run (with its
axes as params and its eval metrics per dataset), system metrics come from MLflow's monitor,
and a study's runs table has a saved view with WER per set (`save_runs_view`).

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
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from filelock import FileLock
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from borealis_eval import records
from borealis_eval.errors import StoreError, TrackingError

if TYPE_CHECKING:
    from borealis_eval.data.lineage import DatasetRef

DEFAULT_CONFIG = Path("mlflow.yaml")


def _brief(e: BaseException) -> str:
    """'Type: first line of the message' (store drivers attach pages of SQL and tracebacks)."""
    first = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {first}"


def _unique_key_race(e: BaseException) -> bool:
    """A store error that says a row another writer inserted first broke a unique key (sqlite,
    PostgreSQL, MySQL; through a tracking server it arrives as the message of an MlflowException)."""
    text = str(e)
    return any(s in text for s in ("IntegrityError", "UNIQUE constraint failed", "duplicate key value",
                                   "Duplicate entry"))


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


FIELDS = ("tracking_uri", "artifact_location", "system_metrics")


@dataclass
class TrackingConfig:
    """mlflow.yaml: where runs go, and how they are monitored.

    `system_metrics` (true / false / auto, default auto = on when a CUDA GPU is visible) samples
    CPU, RAM, disk, network and, with pynvml, GPU utilisation into each variant's and baseline's
    run (`system/*`, MLflow's SystemMetricsMonitor; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL sets
    the period, 10 s by default). It lives here, not in the ablation file, because it describes
    the machine and the store, not the study: switching it must not change a variant's config
    hash (that would re-train finished variants and break resume).
    """

    tracking_uri: str
    artifact_location: str | None = None
    system_metrics: bool | str = "auto"

    @classmethod
    def load(cls, path: str | Path | None = None, tracking_uri: str | None = None) -> "TrackingConfig":
        """Explicit URI > MLFLOW_TRACKING_URI > mlflow.yaml > embedded default (./mlruns.db)."""
        path = Path(path or os.environ.get("BOREALIS_MLFLOW_CONFIG", DEFAULT_CONFIG))
        data: dict[str, Any] = {}
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            unknown = set(data) - set(FIELDS)
            if unknown:
                raise TrackingError(f"{path}: unknown field(s) {sorted(unknown)} (allowed: {', '.join(FIELDS)})")
        monitor = data.get("system_metrics", "auto")
        if monitor not in (True, False, "auto"):
            raise TrackingError(f"{path}: system_metrics must be true, false or auto, got {monitor!r}")
        base = path.resolve().parent
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or data.get("tracking_uri", "sqlite:///mlruns.db")
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = f"sqlite:///{(base / uri.removeprefix('sqlite:///')).resolve()}"
        art = data.get("artifact_location", "mlartifacts")
        if art and "://" not in art:
            art = (base / art).resolve().as_uri()
        return cls(uri, art, monitor)

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def monitors_system(self) -> bool:
        """System metrics on? `auto`: only where a CUDA GPU is visible (on CPU the samples cost a
        store write every interval and tell little)."""
        if self.system_metrics == "auto":
            import torch

            return torch.cuda.is_available()
        return bool(self.system_metrics)


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
    if (exp.tags if exp else {}).get(records.EXPERIMENT_KIND) != records.MODEL_DEVELOPMENT:
        # UIs that read the kind open on training runs, not GenAI traces (3.17 also needs UI_TRAINING_MODE)
        client.set_experiment_tag(eid, records.EXPERIMENT_KIND, records.MODEL_DEVELOPMENT)
    if description:
        client.set_experiment_tag(eid, records.DESCRIPTION, description)
        client.set_experiment_tag(eid, records.NOTE, description)
    return eid


class RunLogger:
    """One MLflow run with buffered metrics (one log_batch per flush, not one call per point).

    The buffer goes to the store at FLUSH_EVERY points or FLUSH_SECONDS after its oldest point,
    whichever comes first, so a slow run's curves appear in the MLflow UI as it trains (a
    Gemma-3 step on CPU takes seconds: 200 points were ~40 minutes of a run)."""

    FLUSH_EVERY = 200  # metric points buffered before one log_batch
    FLUSH_SECONDS = 30.0  # ... or this long after the oldest buffered point

    def __init__(self, client: MlflowClient, run_id: str, flush_every: int | None = None):
        self.client, self.run_id, self.flush_every = client, run_id, flush_every or self.FLUSH_EVERY
        self._metrics: list[Metric] = []
        self._oldest = 0.0  # time.monotonic() of the oldest buffered point
        self.latest: dict[str, Metric] = {}  # last point per key (a logged model re-links its eval metrics)
        self.log_seconds = 0.0
        self._monitor = None

    @classmethod
    def start(cls, client: MlflowClient, exp_id: str, name: str, tags: dict[str, Any],
              parent_id: str | None = None, system_metrics: bool = False) -> "RunLogger":
        """Create the run; with `system_metrics`, MLflow's monitor samples the machine into it until `end`."""
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags[records.PARENT_RUN] = parent_id
        try:
            run = client.create_run(exp_id, run_name=name, tags=tags)
        except Exception as e:  # noqa: BLE001 - see _store_call
            raise StoreError(f"MLflow store {client.tracking_uri} failed creating run '{name}' ({_brief(e)}); "
                             "rerun the same command once the store is back") from e
        logger = cls(client, run.info.run_id)
        if system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logger._monitor = SystemMetricsMonitor(run.info.run_id, tracking_uri=client.tracking_uri)
            logger._monitor.start()
        return logger

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        points = [Metric(k, float(v), ts, step) for k, v in values.items()]
        if not self._metrics:
            self._oldest = time.monotonic()
        self._metrics.extend(points)
        self.latest.update((m.key, m) for m in points)
        if len(self._metrics) >= self.flush_every or time.monotonic() - self._oldest >= self.FLUSH_SECONDS:
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

    DATASET_TRIES = 4

    @_store_call
    def datasets(self, refs: list[DatasetRef]) -> None:
        """The sets this run reads, as MLflow dataset inputs (name, digest, source, context, profile).

        MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when it is
        missing, in one transaction; two workers logging the same set at once can both miss it, and the
        second insert then fails the unique key. The transaction is rolled back whole, and a retry finds
        the row the other worker wrote, so a unique-key failure is retried, a few times with a short pause.
        """
        inputs = [DatasetInput(Dataset(d.name, d.digest, d.source_type, json.dumps(d.source, ensure_ascii=False),
                                       profile=json.dumps(d.profile, ensure_ascii=False)),
                               tags=[InputTag(records.DATASET_CONTEXT, d.context)]) for d in refs]
        for attempt in range(self.DATASET_TRIES):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except Exception as e:  # noqa: BLE001 - the store's error type differs by backend (sql, REST)
                if attempt == self.DATASET_TRIES - 1 or not _unique_key_race(e):
                    raise
                time.sleep(0.05 * (attempt + 1))

    @_store_call
    def log_model(self, name: str, folder: str | Path, params: dict[str, Any], tags: dict[str, Any],
                  model_type: str, metric_datasets: dict[str, DatasetRef]) -> str:
        """`folder` as an MLflow logged model of this run (the runs table's Model column); the run's
        latest values of `metric_datasets`' keys are attached to it, each linked to its dataset.
        Returns the model id."""
        self.flush()
        exp_id = self.client.get_run(self.run_id).info.experiment_id
        model = self.client.create_logged_model(exp_id, name, source_run_id=self.run_id, model_type=model_type,
                                                params={k: str(v)[:6000] for k, v in params.items()},
                                                tags={k: str(v) for k, v in tags.items()})
        try:
            self.client.log_model_artifacts(model.model_id, str(folder))
        except BaseException:
            with suppress(Exception):  # not left PENDING, if the store still answers; the upload error is the news
                self.client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self.client.finalize_logged_model(model.model_id, "READY")
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])
        linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id, dataset_name=d.name,
                         dataset_digest=d.digest)
                  for k, d in metric_datasets.items() if (m := self.latest.get(k)) is not None]
        for s in range(0, len(linked), 1000):
            self.client.log_batch(self.run_id, metrics=linked[s : s + 1000])
        return model.model_id

    @_store_call
    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        if self._monitor is not None:  # before the run ends: the monitor stops sampling a finished run
            self._monitor.finish()
            self._monitor = None
        self.client.set_terminated(self.run_id, status)


# ------------------------------------------------------------------ the study in the MLflow UI
# MLflow UI 3.17 takes the GenAI / model-training mode from this URL parameter, else from the
# browser's last choice (GenAI at first): the experiment kind tag alone does not switch it
UI_TRAINING_MODE = "workflowType=machine_learning"


def ui_experiment_path(experiment_id: str, view: str | None = None) -> str:
    """The UI's route (after '#') to an experiment's runs table in training mode, optionally in a saved view."""
    path = f"/experiments/{experiment_id}/runs?{UI_TRAINING_MODE}"
    return f"{path}&viewStateShareKey={view}" if view else path


def ui_artifact_path(experiment_id: str, run_id: str, artifact: str) -> str:
    return f"/experiments/{experiment_id}/runs/{run_id}/artifacts/{artifact}?{UI_TRAINING_MODE}"


def save_runs_view(client: MlflowClient, experiment_id: str, eval_sets: list[str], axes: list[str] = (),
                   name: str = "WER per eval set", view: str = records.WER_VIEW) -> str:
    """A named saved view of the runs table (MLflow UI 3.17 keeps them as experiment tags): the
    variants and the baseline side by side, with their axes, datasets, logged models and WER per
    eval set as columns, best first on the first set. Returns the view id."""
    columns = ["attributes.`Dataset`", "attributes.`Models`",
               *(f"tags.`{t}`" for t in (*map(records.axis_label_tag, axes), records.SEED)),
               *(f"metrics.`{records.set_metric('wer', s)}`" for s in eval_sets)]
    state = {"selectedColumns": columns, "searchFilter": f"tags.{records.ROLE} != '{records.PARENT}'"}
    if eval_sets:
        state.update(orderByKey=f"metrics.`{records.set_metric('wer', eval_sets[0])}`", orderByAsc=True)
    now = int(time.time() * 1000)
    old = client.get_experiment(experiment_id).tags.get(records.SAVED_VIEW_PREFIX + view)
    created = json.loads(old).get("createdAt", now) if old else now
    client.set_experiment_tag(experiment_id, records.SAVED_VIEW_PREFIX + view, json.dumps(
        {"name": name, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}))
    return view


def describe_study(client: MlflowClient, experiment_id: str, parent_run_id: str, headline: str, question: str,
                   report_artifact: str) -> str:
    """The parent run's description (the UI's run note): the answer first, then the question and
    a link to the report artifact. Returns the text."""
    link = ui_artifact_path(experiment_id, parent_run_id, report_artifact)
    answer = headline if headline.startswith("- ") else f"**{headline}**"  # a list stays a list
    text = f"{answer}\n\n{question.strip()}\n\nReport: [{report_artifact}](#{link})"
    client.set_tag(parent_run_id, records.NOTE, text)
    return text
