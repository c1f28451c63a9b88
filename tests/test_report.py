"""Report built from a synthetic MLflow store laid out as in notes/CONTRACT.md."""

from __future__ import annotations

import base64
import json
import random
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


BASE_WER = {"test_ru": 0.090, "test_en": 0.066}
VOCAB = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey").split()
# planted worst utterance of the best variant on test_ru: one substitution, deletion, insertion
PLANTED_UTT = {"id": "test_ru-planted", "ref": "Fox jumps over the lazy dog.",
               "hyp": "box jumps the lazy dog today"}
BEST = "ru50_en50-tf0.15-s0"


def _predictions(variant: str, s: str, wer: float, n: int = 40) -> list[dict]:
    """n utterances of 8 words, the same references for every system; round(wer * 8n) words are
    substituted, spread over the utterances (so the predictions re-score to the planted WER)."""
    rng = random.Random(f"refs/{s}")
    refs = [[rng.choice(VOCAB) for _ in range(8)] for _ in range(n)]
    refs[0] = PLANTED_UTT["ref"].rstrip(".").split() if s == "test_ru" else refs[0]
    hyps = [list(r) for r in refs]
    order = random.Random(f"{variant}/{s}").sample(range(1, n), n - 1) + [0]  # the planted utterance last
    for j in range(round(wer * sum(len(r) for r in refs))):
        i = order[j % n]
        k = (j // n) % len(refs[i])
        hyps[i][k] = hyps[i][k].upper() + "x"
    rows = [{"id": f"{s}-{i:03d}", "language": s.removeprefix("test_"), "duration": 1.0 + (i % 12) * 1.5,
             "speaker": f"spk{i % 5}", "ref": " ".join(ref).capitalize() + ".", "hyp": " ".join(hyp)}
            for i, (ref, hyp) in enumerate(zip(refs, hyps))]
    rows[0]["id"] = PLANTED_UTT["id"] if s == "test_ru" else rows[0]["id"]
    if variant.startswith(BEST.rsplit("-s", 1)[0]) and s == "test_ru":
        rows[0]["hyp"] = PLANTED_UTT["hyp"]
    return rows


def _log_child(client, exp_id, parent_id, *, role, variant, wers, tags=(), status="FINISHED",
               mix=None, fraction=None, seed=0, loss_steps=20):
    """A child run as the sweep logs it: WER/CER as fractions, predictions as artifacts."""
    run_tags = {"mlflow.parentRunId": parent_id, "role": role, "variant": variant,
                "config_hash": f"{abs(hash(variant)) % 16**12:012x}", "seed": str(seed), **dict(tags)}
    run_tags.update({f"normalizer/{s}": ("russian@1.0" if s == "test_ru" else "english@1.0") for s in wers})
    if mix is not None:
        run_tags.update({"language_mix": mix, "text_fraction": str(fraction), "cell": f"{mix}-tf{fraction:.2f}",
                         "axis.data.language_mix": mix, "axis.data.text_fraction": str(fraction)})
    run = client.create_run(exp_id, run_name=variant, tags=run_tags)
    now = int(time.time() * 1000)
    metrics = []
    for s, w in wers.items():
        for fam, v in (("wer", w), ("cer", w / 2)):
            metrics += [Metric(f"{fam}/{s}", v, now, 0),
                        Metric(f"{fam}_ci_low/{s}", v - CI_HALF, now, 0),
                        Metric(f"{fam}_ci_high/{s}", v + CI_HALF, now, 0)]
        metrics += [Metric(f"n_utts/{s}", 50, now, 0), Metric(f"fail_empty_rate/{s}", 0.02, now, 0),
                    Metric(f"fail_len_ratio_mean/{s}", 1.05, now, 0),
                    Metric(f"wer_basic/{s}", w + 0.01, now, 0),
                    # raw scoring flips the order of the two best ru50_en50 variants on test_en
                    Metric(f"wer_raw/{s}", w + 0.2 - (0.1 if s == "test_en" and fraction == 0.25 else 0),
                           now, 0),
                    Metric(f"rtfx/{s}", 40.0 if role == "baseline" else 120.0 + 10 * (fraction or 0), now, 0),
                    Metric(f"sub/{s}", 30, now, 0), Metric(f"dele/{s}", 5, now, 0),
                    Metric(f"ins/{s}", 3, now, 0), Metric(f"ref_words/{s}", 400, now, 0)]
        if role == "variant":
            delta = w - BASE_WER[s]
            metrics += [Metric(f"delta_wer_vs_baseline/{s}", delta, now, 0),
                        Metric(f"p_vs_baseline/{s}", 0.004 if abs(delta) > 0.1 else 0.03 if abs(delta) > 0.05 else 0.4,
                               now, 0)]
    if role == "variant":
        floor = sum(wers.values()) / len(wers) if wers else 0.5
        metrics += [Metric("train/loss", 3.0 / (1 + step) + floor, now, step)
                    for step in range(loss_steps)]
        text = round(400 * fraction)
        metrics += [Metric("data/count_ru", 400 - text if mix == "ru100" else (400 - text) // 2, now, 0),
                    Metric("data/count_en", 0 if mix == "ru100" else (400 - text) // 2, now, 0),
                    Metric("data/count_text", text, now, 0),
                    Metric("data/text_fraction_realised", text / 400, now, 0),
                    Metric("text_chrf/heldout", 40 + 100 * fraction, now, 0),
                    Metric("text_exact/heldout", fraction, now, 0)]
    client.log_batch(run.info.run_id, metrics=metrics)
    for s, w in wers.items():
        client.log_text(run.info.run_id, _jsonl(_predictions(variant, s, w)), f"predictions/{s}.jsonl")
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def make_store(root: Path, grid=PLANTED, failed=True, experiment=EXPERIMENT, seeds: dict | None = None,
               parent_tags: dict | None = None) -> str:
    """Synthetic sweep: parent + one variant per grid cell + baseline (+ a FAILED variant).

    `seeds`: {seed: {(mix, fraction): WER offset}} trains every cell once per seed, each seed
    moving the cell's WER by its offset (training variance); default one seed, no offset.
    Experiments share one sqlite store per module: creating a store costs seconds.
    """
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(
        experiment, artifact_location=(root / "artifacts" / experiment).as_uri(),
        tags={"borealis.description": DESCRIPTION})
    parent = client.create_run(exp_id, run_name="sweep-20261126T1200Z",
                               tags={"role": "parent", "borealis.ablation": "ablations/cpu/text_ratio.yaml",
                                     "borealis.description": DESCRIPTION, **(parent_tags or {})})
    parent_id = parent.info.run_id
    systems = {"baseline": BASE_WER}
    for seed, offsets in (seeds or {0: {}}).items():
        for (mix, fraction), w in grid.items():
            wers = {s: w + SET_OFFSET[s] + offsets.get((mix, fraction), 0.0) for s in SETS}
            name = f"{mix}-tf{fraction:.2f}-s{seed}"
            systems[name] = wers
            _log_child(client, exp_id, parent_id, role="variant", variant=name,
                       wers=wers, mix=mix, fraction=fraction, seed=seed)
    _log_child(client, exp_id, parent_id, role="baseline", variant="baseline",
               wers=BASE_WER, tags={"model": "whisper-base"})
    if failed:
        _log_child(client, exp_id, parent_id, role="variant", variant="ru100-tf0.50-s0",
                   wers={}, mix="ru100", fraction=0.5, status="FAILED")
    names = list(systems)
    for s in SETS:
        rows = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                d = systems[a][s] - systems[b][s]
                rows.append({"a": a, "b": b, "delta_wer": d, "ci_low": d - 0.01, "ci_high": d + 0.01,
                             "p_value": 0.001 if abs(d) > 0.03 else 0.4, "n": 40})
        client.log_text(parent_id, _jsonl(rows), f"paired/{s}.jsonl")
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


def _headline(md: str) -> list[str]:
    """The headline list (first screen): its items, without the bold marks."""
    return [line[4:-2] for line in md.split("\n\nSweep `", 1)[0].splitlines() if line.startswith("- **")]


def _section(md: str, title: str) -> list[str]:
    body = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("|")]


def test_files_exist(built):
    _, out, paths = built
    assert paths.md == out / "report.md" and paths.md.exists()
    assert paths.html == out / "report.html" and paths.html.exists()
    assert {p.name for p in (out / "plots").glob("*.png")} == {"wer_per_cell.png", "train_loss.png", "rtfx_vs_wer.png"}
    assert not list(out.glob(".*.tmp"))


def test_markdown_tables(built):
    _, _, paths = built
    md = paths.md.read_text()
    assert md.startswith(f"# {EXPERIMENT}\n")
    assert DESCRIPTION in md
    rows = _section(md, "Word error rate per run (WER, %)")[2:]  # skip header + separator
    assert len(rows) == len(PLANTED) + 1
    assert "**baseline**" in rows[0]
    best = next(r for r in rows if "ru50_en50-tf0.15-s0" in r)
    assert "| 20.0 [18.8, 21.2] |" in best  # test_ru: (0.18 + 0.02) as percent with CI
    assert "**18.0**" in best and "| +10.2 |" in best  # avg, delta vs baseline avg 7.8
    # per-set delta vs baseline with the logged paired-bootstrap p-value as a mark
    assert "| +9.4* | +11.0** |" in best
    assert "* p < 0.05, ** p < 0.01" in md
    assert len(_section(md, "Character error rate per run (CER, %)")[2:]) == len(PLANTED) + 1
    data_rows = _section(md, "Realised data mix")
    assert "text_fraction_realised" in data_rows[0] and len(data_rows[2:]) == len(PLANTED)
    failures = _section(md, "Failure metrics: test_ru")
    assert failures[0].count("empty %") == 1 and "len_ratio_mean" in failures[0]
    assert "| 2.0 | 1.05 |" in failures[2]  # rate as percent, ratio as is
    text = _section(md, "Text ability (held-out text-only instructions)")
    assert "chrF heldout" in text[0] and "| 55.0 | 15.0 |" in next(r for r in text if BEST in r)
    assert "RTFx test_ru" in _section(md, "Speed and capping")[0]
    assert "WER and CER are logged as fractions" in md and "russian@1.0" in md


def test_single_seed_headline_says_training_variance_was_not_measured(built):
    _, _, paths = built
    md = paths.md.read_text()
    lines = _headline(md)
    assert lines[0].startswith("One training run per cell")
    assert "training variance was not measured" in lines[0] and "test-utterance sampling only" in lines[0]
    # one line per factor, one against the baseline: a short list, not a paragraph
    assert [line.split(":")[0] for line in lines[1:]] == ["language mix", "text fraction",
                                                          "best cell vs plain Whisper, baseline (whisper-base)"]
    fraction = lines[2]
    # planted: ru50_en50 0.15 beats 0.0 by 7 pts on both sets (320 words each: beyond test sampling,
    # after Holm over every contrast the headline summarises)
    for s in SETS:
        assert (f"language_mix=ru50_en50 · text_fraction=0.15 lower than language_mix=ru50_en50 · text_fraction=0 "
                f"on {s} (-") in fraction
    assert fraction.endswith("(test sampling only).")
    # against the baseline: one short line grouped by verdict (planted: the best cell is 9-11 pts worse)
    # (the re-scored predictions hold one planted extra-bad utterance: within 1.5 pts of the planted gap)
    gaps = [100 * (PLANTED[("ru50_en50", 0.15)] + SET_OFFSET[s] - BASE_WER[s]) for s in SETS]
    got = re.fullmatch(rf"best cell vs plain Whisper, baseline \(whisper-base\): higher on {', '.join(sorted(SETS))} "
                       r"\(\+(\d+) to \+(\d+) pts\); the best cell is language_mix=ru50_en50 · text_fraction=0.15 on "
                       r"every set\.", lines[3])
    assert got and abs(int(got[1]) - min(gaps)) <= 1.5 and abs(int(got[2]) - max(gaps)) <= 1.5, lines[3]
    assert "no difference" not in md and "ties" not in md
    cells = _section(md, "WER per cell (%)")
    assert cells[0].startswith("| cell | test_en (n=40, detects ≥ ") and "| test_ru (n=40, detects ≥ " in cells[0]
    assert cells[2].startswith("| **baseline (whisper-base)** | 6.6 [")
    best = next(r for r in cells if r.startswith("| language_mix=ru50_en50 · text_fraction=0.15 |"))
    assert best.count("**") == 4 and "±" not in best and "`s0`" in best  # best on both sets; one seed: no spread
    assert "one seed per cell: [95% interval over test utterances only]" in md


def test_unfinished_run_listed(built):
    _, _, paths = built
    md = paths.md.read_text()
    rows = _section(md, "Runs that did not finish")
    assert any("ru100-tf0.50-s0" in r and "FAILED" in r for r in rows)
    assert "ru100-tf0.50-s0" not in "\n".join(_section(md, "Word error rate per run (WER, %)"))
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


def test_twelve_variants_render(built, tmp_path):
    grid = {(mix, f): 0.20 + 0.01 * i + 0.004 * j
            for i, mix in enumerate(("ru100", "ru50_en50", "en100"))
            for j, f in enumerate((0.0, 0.1, 0.15, 0.25))}
    root = Path(built[0].removeprefix("sqlite:///")).parent
    uri = make_store(root, grid, failed=False, experiment="twelve")
    paths = build_report("twelve", tmp_path / "out", tracking_uri=uri)
    md = paths.md.read_text()
    rows = _section(md, "Word error rate per run (WER, %)")[2:]
    assert len(rows) == 13
    assert len(_section(md, "WER per cell (%)")[2:]) == 13  # baseline + 12 cells
    assert "## Contrasts: text fraction" in md and "## Contrasts: language mix" in md
    matrix = _section(md, "Single-run paired tests: test_ru")
    assert len(matrix) == 2 + 13 and matrix[0].count("|") == 3 + 13 + 1
    assert "## Worst utterances: test_en" in md


def test_normalisation_sensitivity(built):
    _, _, paths = built
    rows = _section(paths.md.read_text(), "Normalisation sensitivity")
    assert "Kendall τ vs raw" in rows[0] and "ranking identical (basic)" in rows[0]
    en = next(r for r in rows if r.startswith("| test_en |"))
    ru = next(r for r in rows if r.startswith("| test_ru |"))
    # basic keeps the order everywhere; raw scoring crowns another variant on test_en only
    assert "| 1.00 | yes | ru100-tf0.25-s0 |" in en and en.rstrip().endswith("| no |")
    assert en.count("| yes |") == 1 and ru.count("| yes |") == 2


def test_paired_matrix(built):
    _, _, paths = built
    md = paths.md.read_text()
    # single-run marks live in a labelled appendix, after everything the verdicts say
    assert md.index("# Appendix: single-run diagnostics (not used by the verdicts)") > md.index("# Verdicts")
    rows = _section(md, "Single-run paired tests: test_en")
    assert rows[0].startswith("| system | better than | worse than | baseline |")
    best = next(r for r in rows if r.startswith(f"| {BEST} |"))
    cells = [c.strip() for c in best.strip("|").split("|")]
    assert cells[1:3] == ["5", "1"]  # beats every variant, loses to the baseline
    assert cells[3] == "+9.4**" and "–" in cells


def test_error_analysis(built):
    _, _, paths = built
    md = paths.md.read_text()
    assert f"**best: {BEST}**" in md and "**baseline**" in md
    worst = md.split("## Worst utterances: test_ru\n", 1)[1]
    first = next(line for line in worst.splitlines() if line.startswith("- "))
    assert "`test_ru-planted`" in first and "(1 S, 1 D, 1 I of 6 words)" in first
    assert "{fox->box} jumps [-over-] the lazy dog {+today+}" in first
    html = paths.html.read_text()
    assert ('<span class="sub"><span class="r">fox</span> → box</span> jumps '
            '<span class="del">over</span> the lazy dog <span class="ins">today</span>') in html
    durations = _section(md, "WER by duration")
    assert durations[0].startswith("| eval set | duration | n utts | WER best:")
    assert [r.split("|")[2].strip() for r in durations[2:6]] == ["0–3 s", "3–6 s", "6–10 s", "10–20 s"]
    speakers = _section(md, "WER by speaker")
    assert sum(r.startswith("| test_ru | spk") for r in speakers) == 5
    assert len(_section(md, "WER by language")) == 2 + 2


def test_seeds_decide_what_survives(built, tmp_path):
    """Three seeds per cell whose WER moves by up to 2 pts between seeds in every cell (a shared seed
    spread, the pooling assumption). Planted: ru50_en50 0.15 beats 0.0 by 7 pts (holds); ru100 0.15
    beats 0.0 by 1 pt, within the seed spread (no difference beyond training variance)."""
    root = Path(built[0].removeprefix("sqlite:///")).parent
    patterns = {("ru50_en50", 0.0): (-1, 0, 1), ("ru50_en50", 0.15): (1, -1, 0),
                ("ru100", 0.0): (0, 1, -1), ("ru100", 0.15): (-1, 1, 0)}
    seeds = {s: {cell: 0.02 * p[s] for cell, p in patterns.items()} for s in range(3)}
    uri = make_store(root, {k: PLANTED[k] for k in patterns}, failed=False, experiment="seeded", seeds=seeds)
    # the seed plan `sweep` logs on the parent before training (plan/power.py): shown beside what was achieved
    from borealis_eval import records
    client = MlflowClient(tracking_uri=uri)
    parent = client.search_runs([client.get_experiment_by_name("seeded").experiment_id], "tags.role = 'parent'")[0]
    planned = {s: 3.0 + i for i, s in enumerate(SETS)}
    for s, pts in planned.items():
        client.log_metric(parent.info.run_id, records.plan_detectable(s), pts)
    client.set_tag(parent.info.run_id, records.PLAN_VARIANCE, "default prior (a guess, not a measurement)")
    md = build_report("seeded", tmp_path / "out", tracking_uri=uri).md.read_text()
    power_rows = _section(md, "What this study could detect")
    assert "| planned (pts) |" in power_rows[0] and "default prior" in md
    col = [c.strip() for c in power_rows[0].split("|")].index("planned (pts)")
    for row in power_rows[2:]:
        cells_ = [c.strip() for c in row.split("|")]
        assert cells_[col] == f"{planned[cells_[1]]:.1f}"
    lines = _headline(md)
    assert lines[0] == "3 seeds per cell."
    fraction = next(line for line in lines if line.startswith("text fraction:"))
    assert fraction.startswith("text fraction: differs in 2 of 4 contrasts")
    for s in SETS:
        assert (f"language_mix=ru50_en50 · text_fraction=0.15 lower than language_mix=ru50_en50 · text_fraction=0 "
                f"on {s} (-") in fraction
    ru100_15 = "language_mix=ru100 · text_fraction=0.15"
    assert f"{ru100_15} lower" not in fraction and f"{ru100_15} higher" not in fraction
    assert "not resolved in 2 (this study would detect ≥ " in fraction
    verdicts = _section(md, "Contrasts: text fraction")
    ru100 = [r for r in verdicts if "| language_mix=ru100 · text_fraction=0.15 |" in r]
    assert len(ru100) == 2 and all("not resolved: would detect ≥ " in r for r in ru100)
    for row in verdicts[2:]:  # P(better) inside its interval, from the same estimator
        point, low, high = map(float, re.search(r"\| (\d\.\d\d) \[(\d\.\d\d), (\d\.\d\d)\] \|", row).groups())
        assert low <= point <= high
    assert 'Holm-adjusted over the family "headline" (16 contrasts' in verdicts[0] or "16 contrasts" in md
    cell = next(r for r in _section(md, "WER per cell (%)")
                if r.startswith("| language_mix=ru100 · text_fraction=0 |"))
    assert "±2.0" in cell and "`s0` `s1` `s2`" in cell  # half the seed range, and one link per seed


def test_diverged_seed_is_named_beside_its_cell_and_on_the_parent(built, tmp_path):
    """One seed of the cell ru100, text 0 diverges (+40 pts); the other cells' seeds agree within 2 pts. The
    unstable cell is named in the headline, beside its cell and on the parent run; the contrasts
    that do not involve it keep narrow intervals."""
    from borealis_eval import records

    root = Path(built[0].removeprefix("sqlite:///")).parent
    patterns = {("ru50_en50", 0.0): (-1, 0, 1), ("ru50_en50", 0.15): (1, -1, 0),
                ("ru100", 0.0): (0, 1, 20), ("ru100", 0.15): (-1, 1, 0)}
    seeds = {s: {cell: 0.02 * p[s] for cell, p in patterns.items()} for s in range(3)}
    uri = make_store(root, {k: PLANTED[k] for k in patterns}, failed=False, experiment="diverged", seeds=seeds)
    md = build_report("diverged", tmp_path / "out", tracking_uri=uri).md.read_text()
    lines = _headline(md)
    assert lines[0].startswith("3 seeds per cell; unstable: language_mix=ru100 · text_fraction=0 on test_en (seeds ")
    fraction = next(line for line in lines if line.startswith("text fraction:"))
    assert re.search(r"2 with an unstable cell: would detect (≥ \d|only effects over 100 pts)", fraction), fraction
    # every "not resolved" the report prints states what the study would have detected, and an
    # effect above 100 pts is said as no usable power, never as "≥ 4568 pts"
    for m in re.finditer(r"not resolved", md):
        said = md[m.end(): m.end() + 80]
        assert "detect ≥ " in said or "detect only effects over 100 pts" in said, said
        got = re.search(r"detect ≥ (\d+)(?:\.\d)?(?:-(\d+))? pts", said)
        assert got is None or max(int(x) for x in got.groups() if x) <= 100, said
    # the contrasts without the unstable cell keep intervals of a few points (pooling every cell gave ±70)
    for row in _section(md, "Contrasts: text fraction")[2:]:
        low, high = map(float, re.search(r"\[([-+]\d+\.\d), ([-+]\d+\.\d)\]", row).groups())
        assert (high - low < 16) == ("| language_mix=ru50_en50 · text_fraction=0.15 |" in row), row
        assert ("unstable: language_mix=ru100 · text_fraction=0" in row) == \
            ("| language_mix=ru100 · text_fraction=0.15 |" in row)
    cell = next(r for r in _section(md, "WER per cell (%)")
                if r.startswith("| language_mix=ru100 · text_fraction=0 |"))
    assert cell.count("unstable cell: seeds ") == 2  # on both sets
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("diverged")
    parent = client.search_runs([exp.experiment_id], "tags.role = 'parent'")[0]
    assert "language_mix=ru100 · text_fraction=0 on test_ru: seeds " in parent.data.tags[records.UNSTABLE_CELLS]


def test_margin_from_the_parent_makes_small_differences_equivalent(built, tmp_path):
    """The seeded study of test_seeds_decide_what_survives with analysis.margin_pts 10 (and 1 on
    test_en): ru100's 1-pt text contrast is equivalent within ±10 pts on test_ru, and at a 1-pt
    margin on test_en it is not resolved, with the effect it would detect."""
    from borealis_eval import records

    root = Path(built[0].removeprefix("sqlite:///")).parent
    patterns = {("ru50_en50", 0.0): (-1, 0, 1), ("ru50_en50", 0.15): (1, -1, 0),
                ("ru100", 0.0): (0, 1, -1), ("ru100", 0.15): (-1, 1, 0)}
    seeds = {s: {cell: 0.02 * p[s] for cell, p in patterns.items()} for s in range(3)}
    margins = json.dumps({"default": 10, "sets": {"test_en": 1}})
    uri = make_store(root, {k: PLANTED[k] for k in patterns}, failed=False, experiment="margins", seeds=seeds,
                     parent_tags={records.MARGINS: margins})
    md = build_report("margins", tmp_path / "out", tracking_uri=uri).md.read_text()
    rows = _section(md, "Contrasts: text fraction")
    ru100 = {r.split("|")[1].strip(): r for r in rows if "| language_mix=ru100 · text_fraction=0.15 |" in r}
    assert "equivalent within ±10 pts" in ru100["test_ru"]
    assert "not resolved: would detect ≥ " in ru100["test_en"]
    fraction = next(line for line in _headline(md) if line.startswith("text fraction:"))
    assert "equivalent within ±10 pts in 1" in fraction
    power = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
             for r in _section(md, "What this study could detect")[2:]}
    detects, margin, needed = power["test_ru"][4:7]
    assert margin == "±10" and float(detects) < 10 and int(needed) <= 3  # 3 seeds already detect 10 pts
    assert power["test_en"][5] == "±1" and not power["test_en"][6].isdigit()  # 1 pt is out of reach
