"""Read one sweep (parent run + child runs) from an MLflow store into pandas tables.

Nothing here formats or plots; the report is rebuilt from what the tracking store holds,
following the layout in records.py (the names writers use). Metric keys are grouped generically as
``<family>/<column>`` (split on the last ``/``), so a new metric family logged by another
module (``fail_...``, ``rtfx/...``) shows up in the report without changes here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from borealis_eval import records
from borealis_eval.config.labels import axis_label
from borealis_eval.errors import ReportError
from borealis_eval.evaluate.adaptive import SeedDecision

CURVE_FAMILY = records.split_metric(records.curve_wer("x"))[0]
#: Families whose values are error rates (fractions in the store, percent in the report).
RATE_FAMILIES = ("wer", "cer")
#: Also fractions of WER, shown in percent points: protocol variants and paired deltas.
RATE_PREFIXES = ("wer_", "cer_", "delta_wer")
RATE_SCALE = 100.0
#: Per-set word/character counts and audio length (scoring details, not headline numbers).
COUNT_FAMILIES = ("n_utts", "ref_words", "hyp_words", "sub", "dele", "ins", "hits",
                  "ref_chars", "char_edits", "audio_seconds")
#: Families that are read by dedicated sections, not shown as generic "other metrics" tables.
#: ``system`` is MLflow's own system-metrics prefix.
HANDLED_FAMILIES = ("train", "data", "system", "rtfx", CURVE_FAMILY, "capped_rate", "wer_raw", "wer_basic",
                    "wer_whisper",
                    "wer_uncapped", "delta_wer_vs_baseline", "p_vs_baseline", "text_chrf",
                    "text_exact") + COUNT_FAMILIES
CI_SUFFIXES = ("_ci_low", "_ci_high")
LOSS_KEY = records.TRAIN_LOSS
FINISHED = "FINISHED"


@dataclass
class ReportData:
    """Everything the report shows, as plain pandas objects.

    ``runs``: finished child runs, one row per run (index run_id), columns role, variant, cell,
    axes ({grid axis: readable label}), axis_values ({grid axis: value}), seed, run_name, status;
    baselines first, then variants sorted by their grid axes (in grid order), then seed; ``model`` is the baseline's model tag.
    ``families``: family name -> DataFrame (index run_id, columns = the part after the last
    ``/``); WER/CER families (CI bounds, raw/basic/uncapped WER, paired deltas) are in percent.
    ``normalizers``: eval set -> normaliser tag (``english@1.0``) from the runs' tags.
    ``paired``: the parent's paired bootstrap rows (artifact ``paired/<set>.jsonl``) with a
    ``set`` column; ``delta_wer`` and CI in percent points. Empty when not logged.
    ``predictions``: every finished run's raw predictions per eval set (the per-utterance
    statistics and the error analysis re-score them). ``curves``: learning-curve histories.
    """

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    description: str
    parent: dict
    runs: pd.DataFrame
    unfinished: pd.DataFrame
    families: dict[str, pd.DataFrame]
    eval_sets: list[str]
    rates_scale: float
    loss_history: dict[str, pd.DataFrame] = field(default_factory=dict)
    normalizers: dict[str, str] = field(default_factory=dict)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # run id -> set -> rows
    references: dict[str, list[dict]] = field(default_factory=dict)  # eval set -> published figures
    curves: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)  # run id -> dev set -> step, value

    @property
    def baselines(self) -> pd.DataFrame:
        return self.runs[self.runs["role"] == records.BASELINE]

    @property
    def variants(self) -> pd.DataFrame:
        return self.runs[self.runs["role"] == records.VARIANT]

    def is_baseline(self, run_id: str) -> bool:
        return self.runs.at[run_id, "role"] == records.BASELINE

    def axes(self) -> list[str]:
        """The grid's axes (dotted paths, seed excluded) in the order the runs logged them."""
        return grid_axes(self.runs)

    def axis_columns(self) -> dict[str, str]:
        """{axis: column header}: the path's last part, or the whole path where two axes share it."""
        axes = self.axes()
        last = [a.split(".")[-1] for a in axes]
        return {a: n if last.count(n) == 1 else a for a, n in zip(axes, last)}

    def is_numeric(self, axis: str) -> bool:
        """Every variant's value on `axis` is a number (not a bool): the axis is drawn as numbers."""
        return axis_is_numeric(self.variants, axis)

    def family(self, name: str) -> pd.DataFrame:
        """Family table restricted to the finished runs, in report row order (may be empty)."""
        table = self.families.get(name)
        if table is None:
            return pd.DataFrame(index=self.runs.index)
        return table.reindex(self.runs.index)

    def ci(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """(low, high) tables for family ``name`` when its CI bounds were logged."""
        low, high = (self.families.get(name + s) for s in CI_SUFFIXES)
        if low is None or high is None:
            return None
        return low.reindex(self.runs.index), high.reindex(self.runs.index)

    def other_families(self) -> list[str]:
        """Metric families without a dedicated section (shown as generic tables)."""
        skip = set(HANDLED_FAMILIES) | set(RATE_FAMILIES)
        skip |= {f + s for f in self.families for s in CI_SUFFIXES}
        names = [f for f in self.families if f not in skip and not is_failure(f)]
        # keys without a "/" (family "") last
        return sorted(names, key=lambda f: (not f, f))

    def failure_families(self) -> list[str]:
        """``fail_<name>`` families (``fail/<name>`` in older stores), in logged order."""
        return [f for f in self.families if is_failure(f)]

    def best_variant(self) -> str | None:
        """Run id of the variant with the lowest mean WER over eval sets (None without WER)."""
        avg = self.family("wer").loc[self.variants.index].mean(axis=1).dropna()
        return None if avg.empty else str(avg.idxmin())


def is_failure(family: str) -> bool:
    return family.startswith(("fail_", "fail/"))


def is_rate(family: str) -> bool:
    return family in RATE_FAMILIES or family.startswith(RATE_PREFIXES)


def load_report_data(
    experiment_name: str,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
) -> ReportData:
    """Load the newest sweep of ``experiment_name`` (or the given parent run) and its children."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        listing = ", ".join(repr(n) for n in names) if names else "(none)"
        raise ReportError(
            f"experiment {experiment_name!r} not found in tracking store "
            f"{client.tracking_uri}; available experiments: {listing}"
        )
    exp_id = experiment.experiment_id
    parent = find_parent(client, exp_id, experiment_name, parent_run_id)

    children = search_all(client, exp_id, f"tags.{records.PARENT_RUN} = '{parent.info.run_id}'")
    children = [r for r in children if r.data.tags.get(records.ROLE) in (records.VARIANT, records.BASELINE)]
    if not children:
        raise ReportError(
            f"parent run {parent.info.run_id} of experiment {experiment_name!r} has no child "
            "runs tagged role=variant or role=baseline"
        )
    table = pd.DataFrame([_describe(r) for r in children]).set_index("run_id")
    finished_mask = table["status"] == FINISHED
    unfinished = table.loc[~finished_mask, ["role", "variant", "status", "error"]].reset_index()
    finished = [r for r in children if r.info.status == FINISHED]
    if not finished:
        raise ReportError(
            f"none of the {len(children)} child runs of parent {parent.info.run_id} finished "
            f"(statuses: {', '.join(sorted(set(table['status'])))})"
        )
    runs = _sort_runs(table.loc[finished_mask])

    metrics = pd.DataFrame({r.info.run_id: r.data.metrics for r in finished}).T
    families, scale = _group_families(metrics)
    eval_sets = list(families["wer"].columns) if "wer" in families else []
    loss = {
        r.info.run_id: _history(client, r.info.run_id, LOSS_KEY)
        for r in finished
        if LOSS_KEY in r.data.metrics
    }
    curves = {
        r.info.run_id: {k.rpartition("/")[2]: _history(client, r.info.run_id, k)
                        for k in r.data.metrics if records.split_metric(k)[0] == CURVE_FAMILY}
        for r in finished
    }
    description = experiment.tags.get(records.DESCRIPTION) or parent.data.tags.get(records.DESCRIPTION, "")
    normalizers: dict[str, str] = {}
    for r in finished:
        for set_name, tag in records.normalizers_of(r.data.tags).items():
            normalizers.setdefault(set_name, tag)
    return ReportData(
        tracking_uri=client.tracking_uri,
        experiment_id=exp_id,
        experiment_name=experiment_name,
        description=description,
        parent={
            "run_id": parent.info.run_id,
            "run_name": parent.info.run_name,
            "start_time": pd.to_datetime(parent.info.start_time, unit="ms", utc=True),
            "status": parent.info.status,
            "ablation": parent.data.tags.get(records.ABLATION, ""),
            "margins": json.loads(parent.data.tags.get(records.MARGINS) or "{}"),  # analysis.margin_pts
            "seed_design": json.loads(parent.data.tags.get(records.SEED_DESIGN) or "{}"),  # adaptive seeds
            "seed_decision": (SeedDecision.from_json(parent.data.tags[records.SEED_DECISION])
                              if records.SEED_DECISION in parent.data.tags else None),
            # the seed plan logged before the sweep: {set: detectable pts}, and where its variance came from
            "planned": {col: v for k, v in parent.data.metrics.items()
                        if k == records.plan_detectable(col := records.split_metric(k)[1])},
            "plan_variance": parent.data.tags.get(records.PLAN_VARIANCE, ""),
        },
        runs=runs,
        unfinished=unfinished,
        families=families,
        eval_sets=eval_sets,
        rates_scale=scale,
        loss_history={k: v for k, v in loss.items() if not v.empty},
        normalizers=normalizers,
        paired=_paired(client, parent.info.run_id, eval_sets),
        predictions=_predictions(client, [r.info.run_id for r in finished], eval_sets),
        references=_references(client, parent.info.run_id),
        curves={k: v for k, v in curves.items() if v},
    )


def find_parent(client: MlflowClient, exp_id: str, exp_name: str, run_id: str | None) -> Run:
    """`run_id` if it is a run of the experiment, else the experiment's newest parent run."""
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception as exc:  # mlflow raises MlflowException (RESOURCE_DOES_NOT_EXIST)
            raise ReportError(f"parent run {run_id!r} not found: {exc}") from exc
        if run.info.experiment_id != exp_id:
            raise ReportError(f"run {run_id} does not belong to experiment {exp_name!r}")
        return run
    found = client.search_runs(
        [exp_id], f"tags.{records.ROLE} = '{records.PARENT}'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not found:
        raise ReportError(
            f"experiment {exp_name!r} has no parent run (tag role=parent); run a sweep first"
        )
    return found[0]


def search_all(client: MlflowClient, exp_id: str, filter_string: str) -> list[Run]:
    """Every run of the experiment matching `filter_string`, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _parse_axis_value(raw: str):
    """A logged axis value back as data: JSON (numbers, lists, mappings) where it parses, else the text."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw


def _describe(run: Run) -> dict:
    tags = run.data.tags
    logged = records.axes_of(tags)
    values = {a: _parse_axis_value(v) for a, (v, _) in logged.items()}
    return {
        "run_id": run.info.run_id,
        "cell": tags.get(records.CELL, ""),
        "text_mode": tags.get(records.TEXT_MODE, ""),
        # {axis: readable label}: the label the sweep logged, else one derived the same way (older stores)
        "axes": {a: label or axis_label(values[a]) for a, (_, label) in logged.items()},
        "axis_values": values,
        "start_time": run.info.start_time,
        "role": tags.get(records.ROLE, ""),
        "variant": tags.get(records.VARIANT_NAME) or run.info.run_name or run.info.run_id[:8],
        "seed": tags.get(records.SEED, ""),
        "model": tags.get(records.MODEL, ""),
        "protocol": tags.get(records.PROTOCOL, ""),
        "precision": run.data.params.get(records.PRECISION_USED, ""),
        "encoder_precision": run.data.params.get(records.ENCODER_PRECISION_USED, ""),
        "cpu": run.data.params.get(records.MACHINE_CPU, ""),
        "run_name": run.info.run_name or "",
        "status": run.info.status,
        "error": (tags.get(records.ERROR) or "").splitlines()[0][:300] if tags.get(records.ERROR) else "",
    }


def grid_axes(runs: pd.DataFrame) -> list[str]:
    names: list[str] = []
    for axes in runs.get("axes", pd.Series(dtype=object)):
        names += [a for a in (axes or {}) if a not in names]
    return names


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def axis_is_numeric(runs: pd.DataFrame, axis: str) -> bool:
    values = [d[axis] for d in runs.get("axis_values", pd.Series(dtype=object)) if isinstance(d, dict) and axis in d]
    return bool(values) and all(_is_number(v) for v in values)


def _sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Baselines first, then variants by each grid axis (numbers by value, others by label), then seed."""
    columns: dict[str, pd.Series] = {"baseline_first": runs["role"] != records.BASELINE}
    for i, axis in enumerate(grid_axes(runs)):
        if axis_is_numeric(runs, axis):
            col = pd.to_numeric(runs["axis_values"].map(lambda d: d.get(axis)), errors="coerce").fillna(-1e300)
        else:
            col = runs["axes"].map(lambda d: str(d.get(axis, "")))
        columns[f"axis{i}"] = col
    columns["seed"] = pd.to_numeric(runs["seed"], errors="coerce").fillna(-1)
    columns["variant"] = runs["variant"]
    key = pd.DataFrame(columns, index=runs.index)
    order = key.sort_values(list(key.columns), kind="stable").index
    return runs.loc[order]


def _group_families(metrics: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], float]:
    """Split ``<family>/<column>`` metric keys into one table per family; rates to percent.

    The sweep logs WER/CER (and their CIs, raw/basic/uncapped variants, paired deltas) as
    fractions; the report shows percent.
    """
    groups: dict[str, dict[str, str]] = {}
    for key in metrics.columns:
        family, column = records.split_metric(key)
        groups.setdefault(family, {})[column] = key
    families = {
        fam: metrics[list(cols.values())].set_axis(list(cols), axis=1).sort_index(axis=1)
        for fam, cols in groups.items()
    }
    for name in families:
        if is_rate(name):
            families[name] = families[name] * RATE_SCALE
    return families, RATE_SCALE


@contextlib.contextmanager
def quiet_downloads():
    """No MLflow progress bars while the report downloads its few small artifacts."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _paired(client: MlflowClient, parent_id: str, eval_sets: list[str]) -> pd.DataFrame:
    """The parent's ``paired/<set>.jsonl`` rows (every pair of systems), deltas in percent."""
    columns = ["set", "a", "b", "delta_wer", "ci_low", "ci_high", "p_value", "n"]
    try:
        names = {Path(a.path).name for a in client.list_artifacts(parent_id, records.PAIRED_DIR)}
    except Exception:  # a store without artifact access still renders the metric tables
        return pd.DataFrame(columns=columns)
    frames = []
    with tempfile.TemporaryDirectory(prefix="borealis-report-") as tmp, quiet_downloads():
        for s in eval_sets:
            if Path(records.paired(s)).name not in names:
                continue
            local = client.download_artifacts(parent_id, records.paired(s), tmp)
            frame = pd.read_json(local, lines=True)
            if not frame.empty:
                frames.append(frame.assign(set=s))
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    for c in ("delta_wer", "ci_low", "ci_high"):
        out[c] = out[c] * RATE_SCALE
    return out


def _references(client: MlflowClient, parent_id: str) -> dict[str, list[dict]]:
    """Published figures per eval set, as the ablation cited them (``eval/references.json``)."""
    try:
        with tempfile.TemporaryDirectory(prefix="borealis-report-") as tmp, quiet_downloads():
            return json.loads(Path(client.download_artifacts(parent_id, records.REFERENCES, tmp)).read_text("utf-8"))
    except Exception:  # noqa: BLE001 - none cited (or an older study)
        return {}


def _predictions(client: MlflowClient, run_ids: list[str], eval_sets: list[str]) -> dict[str, dict[str, list[dict]]]:
    """Raw predictions (``predictions/<set>.jsonl``) of each run; a set without the artifact is left out."""
    out: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="borealis-report-") as tmp, quiet_downloads():
        for run_id in run_ids:
            try:
                names = {Path(a.path).name for a in client.list_artifacts(run_id, records.PREDICTIONS_DIR)}
            except Exception:  # noqa: BLE001 - artifacts unreachable: the metric tables still render
                continue
            for s in eval_sets:
                if Path(records.predictions(s)).name not in names:
                    continue
                local = Path(client.download_artifacts(run_id, records.predictions(s), f"{tmp}/{run_id}"))
                with local.open(encoding="utf-8") as f:
                    out.setdefault(run_id, {})[s] = [json.loads(line) for line in f if line.strip()]
    return out


def _history(client: MlflowClient, run_id: str, key: str) -> pd.DataFrame:
    points = client.get_metric_history(run_id, key)
    frame = pd.DataFrame([(m.step, m.value) for m in points], columns=["step", "value"])
    return frame.sort_values("step", kind="stable").reset_index(drop=True)
