"""Report built from a synthetic MLflow store laid out as in notes/CONTRACT.md."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from borealis_eval.report import ReportError, build_report

SETS = ("test_ru", "test_en")
EXPERIMENT = "text-ratio-synthetic"
DESCRIPTION = "Does mixing plain-text instructions into training help, and at what fraction?"
# Mean WER (fraction) per (language mix, text fraction); ru50_en50 @ 0.15 is the planted best.
PLANTED = {
    ("ru50_en50", 0.0): 0.250,
    ("ru50_en50", 0.15): 0.180,
    ("ru50_en50", 0.25): 0.270,
    ("ru100", 0.0): 0.230,
    ("ru100", 0.15): 0.220,
    ("ru100", 0.25): 0.260,
}
SET_OFFSET = {"test_ru": 0.02, "test_en": -0.02}
CI_HALF = 0.012


def _log_child(client, exp_id, parent_id, *, role, variant, wers, scale, tags=(), status="FINISHED",
               mix=None, fraction=None, seed=0, loss_steps=20):
    run_tags = {"mlflow.parentRunId": parent_id, "role": role, "variant": variant,
                "config_hash": f"{abs(hash(variant)) % 16**12:012x}", "seed": str(seed), **dict(tags)}
    if mix is not None:
        run_tags.update({"language_mix": mix, "text_fraction": str(fraction),
                         "axis.data.language_mix": mix, "axis.data.text_fraction": str(fraction)})
    run = client.create_run(exp_id, run_name=variant, tags=run_tags)
    now = int(time.time() * 1000)
    metrics = []
    for s, w in wers.items():
        for fam, v in (("wer", w), ("cer", w / 2)):
            metrics += [Metric(f"{fam}/{s}", v * scale, now, 0),
                        Metric(f"{fam}_ci_low/{s}", (v - CI_HALF) * scale, now, 0),
                        Metric(f"{fam}_ci_high/{s}", (v + CI_HALF) * scale, now, 0)]
        metrics.append(Metric(f"n_utts/{s}", 50, now, 0))
        metrics.append(Metric(f"fail/empty_rate/{s}", 0.02, now, 0))
    if role == "variant":
        floor = sum(wers.values()) / len(wers) if wers else 0.5
        metrics += [Metric("train/loss", 3.0 / (1 + step) + floor, now, step)
                    for step in range(loss_steps)]
        text = round(400 * fraction)
        metrics += [Metric("data/count_ru", 400 - text if mix == "ru100" else (400 - text) // 2, now, 0),
                    Metric("data/count_en", 0 if mix == "ru100" else (400 - text) // 2, now, 0),
                    Metric("data/count_text", text, now, 0),
                    Metric("data/text_fraction_realised", text / 400, now, 0)]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def make_store(root: Path, grid=PLANTED, scale=1.0, failed=True, experiment=EXPERIMENT) -> str:
    """Synthetic sweep: parent + one variant per grid cell + baseline (+ a FAILED variant).

    Experiments share one sqlite store per module: creating a store costs seconds.
    """
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(
        experiment, artifact_location=(root / "artifacts" / experiment).as_uri(),
        tags={"borealis.description": DESCRIPTION})
    parent = client.create_run(exp_id, run_name="sweep-20261126T1200Z",
                               tags={"role": "parent", "borealis.ablation": "ablations/cpu/text_ratio.yaml",
                                     "borealis.description": DESCRIPTION})
    parent_id = parent.info.run_id
    for (mix, fraction), w in grid.items():
        wers = {s: w + SET_OFFSET[s] for s in SETS}
        _log_child(client, exp_id, parent_id, role="variant", variant=f"{mix}-tf{fraction:.2f}-s0",
                   wers=wers, scale=scale, mix=mix, fraction=fraction)
    _log_child(client, exp_id, parent_id, role="baseline", variant="whisper-base",
               wers={"test_ru": 0.090, "test_en": 0.066}, scale=scale)
    if failed:
        _log_child(client, exp_id, parent_id, role="variant", variant="ru100-tf0.50-s0",
                   wers={}, scale=scale, mix="ru100", fraction=0.5, status="FAILED")
    client.set_terminated(parent_id)
    return uri


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        uri = make_store(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        out = root / "report"
        paths = build_report(EXPERIMENT, out, tracking_uri=uri)
    return uri, out, paths


def _section(md: str, title: str) -> list[str]:
    body = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("|")]


def test_files_exist(built):
    _, out, paths = built
    assert paths.md == out / "report.md" and paths.md.exists()
    assert paths.html == out / "report.html" and paths.html.exists()
    assert {p.name for p in (out / "plots").glob("*.png")} == {
        "wer_vs_text_fraction.png", "train_loss.png", "wer_heatmap.png"}
    assert not list(out.glob(".*.tmp"))


def test_markdown_tables(built):
    _, _, paths = built
    md = paths.md.read_text()
    assert md.startswith(f"# {EXPERIMENT}\n")
    assert DESCRIPTION in md
    rows = _section(md, "Word error rate (WER, %)")[2:]  # skip header + separator
    assert len(rows) == len(PLANTED) + 1
    assert "baseline" in rows[0] and "whisper-base" in rows[0]
    best = next(r for r in rows if "ru50_en50-tf0.15-s0" in r)
    assert "| 20.0 [18.8, 21.2] |" in best  # test_ru: (0.18 + 0.02) as percent with CI
    assert "**18.0**" in best and "| +10.2 |" in best  # avg, delta vs baseline avg 7.8
    assert len(_section(md, "Character error rate (CER, %)")[2:]) == len(PLANTED) + 1
    data_rows = _section(md, "Realised data mix")
    assert "text_fraction_realised" in data_rows[0] and len(data_rows[2:]) == len(PLANTED)
    assert "## Failure metric: fail/empty_rate" in md


def test_headline_names_planted_best(built):
    _, _, paths = built
    md = paths.md.read_text()
    headline = next(line for line in md.splitlines() if line.startswith("**Best variant"))
    assert "Best variant: ru50_en50-tf0.15-s0 (mean WER 18.0% over 2 sets)" in headline
    assert "ru50_en50 -> 0.15 (ΔWER -7.0 pts vs 0.0, separated at 95%)" in headline
    assert "ru100 -> 0.15 (ΔWER -1.0 pts vs 0.0, not separable at 95%)" in headline
    assert "baseline Whisper: whisper-base 7.8%" in headline


def test_unfinished_run_listed(built):
    _, _, paths = built
    md = paths.md.read_text()
    rows = _section(md, "Runs that did not finish")
    assert any("ru100-tf0.50-s0" in r and "FAILED" in r for r in rows)
    assert "ru100-tf0.50-s0" not in "\n".join(_section(md, "Word error rate (WER, %)"))
    assert "Runs that did not finish" in paths.html.read_text()


def test_images_inline_in_html_and_linked_in_markdown(built):
    _, out, paths = built
    html = paths.html.read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(sources) == 3
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", paths.md.read_text())
    assert len(links) == 3
    for link in links:
        assert not Path(link).is_absolute() and (out / link).is_file()
    assert "http://" not in html.split("<main>")[0]  # no external resources in the head


def test_run_links(built):
    uri, _, paths = built
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    run = client.search_runs([exp.experiment_id], "tags.variant = 'ru100-tf0.25-s0'")[0]
    href = f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    assert f'href="{href}"' in paths.html.read_text()
    assert run.info.run_id[:8] in paths.md.read_text()


def test_report_logged_on_parent(built):
    uri, _, _ = built
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parent = client.search_runs([exp.experiment_id], "tags.role = 'parent'")[0]
    names = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report.md", "report.html", "plots"} <= names
    plots = client.list_artifacts(parent.info.run_id, "report/plots")
    assert len(plots) == 3


def test_missing_experiment_lists_available(built):
    uri, out, _ = built
    with pytest.raises(ReportError, match=rf"'nope' not found.*available experiments:.*'{EXPERIMENT}'"):
        build_report("nope", out / "x", tracking_uri=uri)


def test_missing_parent(built, tmp_path):
    uri = built[0]
    MlflowClient(uri).create_experiment("empty", artifact_location=(tmp_path / "a").as_uri())
    with pytest.raises(ReportError, match="no parent run"):
        build_report("empty", tmp_path / "out", tracking_uri=uri)


def test_twelve_variants_render_fast_and_percent_metrics(built, tmp_path):
    grid = {(mix, f): 0.20 + 0.01 * i + 0.004 * j
            for i, mix in enumerate(("ru100", "ru50_en50", "en100"))
            for j, f in enumerate((0.0, 0.1, 0.15, 0.25))}
    root = Path(built[0].removeprefix("sqlite:///")).parent
    uri = make_store(root, grid, scale=100.0, failed=False, experiment="twelve")  # WER in percent
    start = time.perf_counter()
    paths = build_report("twelve", tmp_path / "out", tracking_uri=uri)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, elapsed
    md = paths.md.read_text()
    rows = _section(md, "Word error rate (WER, %)")[2:]
    assert len(rows) == 13
    assert "Best variant: ru100-tf0.00-s0 (mean WER 20.0% over 2 sets)" in md
    assert "ru100 -> 0.0 (no text fraction beat 0.0)" in md
    assert "logged as fractions" not in md
