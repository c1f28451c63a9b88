"""Step times read back from earlier runs of the same variants in the MLflow store."""

from __future__ import annotations

import logging

from borealis_eval.config import Variant

log = logging.getLogger("borealis_eval")


def measured_step_seconds(tracking_uri: str, experiment: str, variants: list[Variant]) -> dict[str, float]:
    """config hash -> median seconds per step of earlier finished runs of that variant."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        df = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.role = 'variant'",
                                output_format="pandas")
    except Exception as e:  # noqa: BLE001 - no store, no experiment: nothing measured
        log.info("plan: no earlier runs read from %s (%s)", tracking_uri, str(e).splitlines()[0][:120])
        return {}
    col = "metrics.train/steps_per_second"
    if df.empty or col not in df or "tags.config_hash" not in df:
        return {}
    wanted = {v.config_hash for v in variants}
    rates = df[df["tags.config_hash"].isin(wanted) & (df[col] > 0)].groupby("tags.config_hash")[col].median()
    return {k: 1.0 / r for k, r in rates.items()}
