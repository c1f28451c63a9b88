"""Turn ReportData into display tables, a headline sentence, and report.md / report.html."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd
from mlflow.tracking import MlflowClient

from borealis_eval import atomic, records
from borealis_eval.report.collect import ReportData, cell_means, load_report_data
from borealis_eval.report.errors import ErrorAnalysis, analyse
from borealis_eval.report.plots import Plot, draw_all
from borealis_eval.tracking import describe_study, save_runs_view

DEFAULT_UI_BASE = "http://127.0.0.1:5000"
TEMPLATES = Path(__file__).parent / "templates"
ARTIFACT_PATH = records.REPORT_DIR


@dataclass(frozen=True)
class ReportPaths:
    md: Path
    html: Path
    plots: tuple[Path, ...] = ()


@dataclass
class Cell:
    value: str = ""
    ci: str = ""  # "[lo, hi]" when CI bounds exist
    href: str | None = None
    bold: bool = False

    @property
    def text(self) -> str:
        return f"{self.value} {self.ci}" if self.ci else self.value


@dataclass
class Row:
    cells: list[Cell]
    baseline: bool = False


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row]
    note: str = ""
    numeric_from: int = 0  # index of the first numeric column (right-aligned)


@dataclass
class Links:
    ui_base: str
    in_markdown: bool
    experiment_id: str

    def run(self, run_id: str) -> str:
        return f"{self.ui_base}/#/experiments/{self.experiment_id}/runs/{run_id}"


@dataclass
class Context:
    title: str
    description: str
    headline: str
    parent: dict
    parent_href: str
    tables: list[Table]  # results: WER, CER, normalisation sensitivity, paired tests
    plots: list[Plot]
    unfinished: list[dict]
    tracking_uri: str
    generated: str
    md_links: bool
    notes: list[str] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)  # failures, data mix, text, speed, ...
    errors: ErrorAnalysis = field(default_factory=ErrorAnalysis)
    slices: list[Table] = field(default_factory=list)
    links: Links | None = None

    def run_href(self, run_id: str) -> str:
        return self.links.run(run_id) if self.links else ""


def build_report(
    experiment_name: str,
    out_dir: Path,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    log_artifact: bool = True,
    ui_base: str | None = None,
) -> ReportPaths:
    """Rebuild the sweep report of ``experiment_name`` from the tracking store alone.

    Writes out_dir/report.md, out_dir/report.html (self-contained, plots inlined) and
    out_dir/plots/*.png; with ``log_artifact`` also logs them to the parent run under
    ``report/``. ``ui_base`` is the MLflow UI address used for run links (default: the tracking
    URI when it is an http(s) server, else http://127.0.0.1:5000).
    """
    data = load_report_data(experiment_name, tracking_uri, parent_run_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = draw_all(data, out_dir / "plots")
    errors = analyse(data, MlflowClient(tracking_uri=data.tracking_uri))
    context = make_context(data, plots, _links(data, ui_base), errors)

    env = _environment()
    md = out_dir / "report.md"
    html = out_dir / "report.html"
    atomic.write_text(md, env.get_template("report.md.j2").render(r=context))
    atomic.write_text(html, env.get_template("report.html.j2").render(r=context))

    if log_artifact:
        client = MlflowClient(tracking_uri=data.tracking_uri)
        run_id = data.parent["run_id"]
        client.log_artifact(run_id, str(md), ARTIFACT_PATH)
        client.log_artifact(run_id, str(html), ARTIFACT_PATH)
        for plot in plots:
            client.log_artifact(run_id, str(plot.path), f"{ARTIFACT_PATH}/plots")
        # the study in the MLflow UI: the answer as the parent's description, WER per set as a saved view
        describe_study(client, data.experiment_id, run_id, context.headline, data.description,
                       f"{ARTIFACT_PATH}/{html.name}")
        save_runs_view(client, data.experiment_id, data.eval_sets)
    return ReportPaths(md=md, html=html, plots=tuple(p.path for p in plots))


def make_context(data: ReportData, plots: list[Plot], links: Links,
                 errors: ErrorAnalysis | None = None) -> Context:
    errors = errors or ErrorAnalysis()
    tables = [t for t in _tables(data, links) if t.rows]
    notes = ["WER and CER are logged as fractions and shown here in percent; "
             "differences are in percentage points (pts)."]
    if data.normalizers:
        notes.append("Normalisers: " + ", ".join(
            f"{s} {tag}" for s, tag in sorted(data.normalizers.items())) + ".")
    return Context(
        title=data.experiment_name,
        description=data.description,
        headline=headline(data),
        parent=data.parent,
        parent_href=links.run(data.parent["run_id"]),
        tables=tables,
        plots=plots,
        unfinished=data.unfinished.to_dict("records"),
        tracking_uri=data.tracking_uri,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        md_links=links.in_markdown,
        notes=notes,
        details=[t for t in _detail_tables(data, links) if t.rows],
        errors=errors,
        slices=[t for t in _slice_tables(errors) if t.rows],
        links=links,
    )


# --- headline -------------------------------------------------------------------------------


def headline(data: ReportData) -> str:
    """One sentence answering the ablation question, computed from the WER tables."""
    wer = data.family("wer")
    if wer.empty or wer.isna().all().all():
        return "No WER metrics were logged for this sweep."
    avg = wer.mean(axis=1)
    counts = wer.notna().sum(axis=1)
    parts = []
    variant_avg = avg.loc[data.variants.index].dropna()
    if not variant_avg.empty:
        best = variant_avg.idxmin()
        parts.append(
            f"Best variant: {data.runs.at[best, 'variant']} (mean WER {avg[best]:.1f}% "
            f"over {counts[best]} set{'s' if counts[best] != 1 else ''})"
        )
    mixes = _per_mix_summary(data)
    if mixes:
        parts.append("best text fraction per language mix: " + ", ".join(mixes))
    base = [
        f"{_baseline_label(data, i)} {avg[i]:.1f}%"
        for i in data.baselines.index
        if pd.notna(avg[i])
    ]
    if base:
        parts.append("baseline Whisper: " + ", ".join(base))
    return "; ".join(parts) + "."


def _baseline_label(data: ReportData, run_id: str) -> str:
    name, model = data.runs.at[run_id, "variant"], data.runs.at[run_id, "model"]
    return f"{name} ({model})" if model and model != name else name


def _per_mix_summary(data: ReportData) -> list[str]:
    cells = cell_means(data)
    sets = data.eval_sets
    has_ci = data.ci("wer") is not None
    out = []
    for mix, group in cells.groupby("language_mix", sort=True):
        group = group.dropna(subset=["avg"])
        if group.empty:
            continue
        best = group.loc[group["avg"].idxmin()]
        label = mix or "(no mix tag)"
        zero = group[group["text_fraction"] == 0.0]
        if zero.empty:
            out.append(f"{label} -> {_frac(best.text_fraction)} (WER {best.avg:.1f}%)")
            continue
        zero = zero.iloc[0]
        if best.text_fraction == 0.0:
            out.append(f"{label} -> 0.0 (no text fraction beat 0.0)")
            continue
        delta = best.avg - zero.avg
        detail = f"ΔWER {delta:+.1f} pts vs 0.0"
        tested = _paired_significance(data, mix, best.text_fraction, 0.0)
        if tested:
            detail += ", " + tested
        elif has_ci:
            detail += ", " + _separation(best, zero, sets)
        out.append(f"{label} -> {_frac(best.text_fraction)} ({detail})")
    return out


def _paired_significance(data: ReportData, mix: str, fraction_a: float, fraction_b: float) -> str:
    """Paired bootstrap verdict between two grid cells (single-seed cells only), per eval set."""
    if data.paired.empty:
        return ""
    variants = data.variants

    def name(fraction: float) -> str | None:
        hit = variants[(variants["language_mix"] == mix) & (variants["text_fraction"] == fraction)]
        return hit["variant"].iat[0] if len(hit) == 1 else None

    a, b = name(fraction_a), name(fraction_b)
    if a is None or b is None:
        return ""
    rows = data.paired[((data.paired["a"] == a) & (data.paired["b"] == b))
                       | ((data.paired["a"] == b) & (data.paired["b"] == a))]
    p = rows["p_value"].dropna()
    if p.empty:
        return ""
    k, n = int((p < 0.05).sum()), len(p)
    if k == n:
        return f"significant, paired bootstrap p < 0.05 on {'all ' if n > 1 else ''}{n} set{'s' if n != 1 else ''}"
    if k == 0:
        return "not significant (paired bootstrap)"
    return f"significant on {k} of {n} sets (paired bootstrap p < 0.05)"


def _separation(a: pd.Series, b: pd.Series, sets: list[str]) -> str:
    """Whether two cells' 95% CIs are disjoint, per eval set."""
    checked = separated = 0
    for s in sets:
        bounds = [a.get(f"{s}_lo"), a.get(f"{s}_hi"), b.get(f"{s}_lo"), b.get(f"{s}_hi")]
        if any(v is None or pd.isna(v) for v in bounds):
            continue
        a_lo, a_hi, b_lo, b_hi = bounds
        checked += 1
        separated += a_hi < b_lo or b_hi < a_lo
    if not checked:
        return "no CI"
    if separated == checked:
        return "separated at 95%"
    if separated == 0:
        return "not separable at 95%"
    return f"separated at 95% on {separated} of {checked} sets"


# --- tables ---------------------------------------------------------------------------------


ID_COLUMNS = ["language_mix", "text_fraction", "seed", "variant", "run"]


def _tables(data: ReportData, links: Links) -> list[Table]:
    return [
        _rate_table(data, links, "wer", "Word error rate (WER, %)"),
        _rate_table(data, links, "cer", "Character error rate (CER, %)"),
        _sensitivity_table(data),
        *_paired_tables(data),
    ]


def _detail_tables(data: ReportData, links: Links) -> list[Table]:
    tables = [
        *_failure_tables(data, links),
        _data_table(data, links),
        _per_set_table(data, links, {"text_chrf": "chrF", "text_exact": "exact match"},
                       "Text ability (held-out text-only instructions)",
                       "chrF (0-100) and exact-match share of answers to text-only instructions "
                       "never seen in training; does audio training cost text skills?"),
        _per_set_table(data, links, {"rtfx": "RTFx", "capped_rate": "capped", "wer_uncapped": "WER uncapped"},
                       "Speed and capping",
                       "RTFx = audio seconds per decoding second (after a warm-up batch). capped = "
                       "share of hypotheses cut at 3x the reference length; WER uncapped in %.",
                       eval_sets_only=True),
        _counts_table(data, links),
    ]
    for family in data.other_families():
        title = "Other metrics" if not family else "Metric: " + family
        tables.append(_generic_table(data, links, family, title))
    return tables


def _id_cells(data: ReportData, run_id: str, links: Links) -> list[Cell]:
    run = data.runs.loc[run_id]
    baseline = run["role"] == "baseline"
    return [
        Cell("baseline" if baseline else run["language_mix"], bold=baseline),
        Cell("" if pd.isna(run["text_fraction"]) else _frac(run["text_fraction"])),
        Cell(str(run["seed"])),
        Cell(run["variant"], bold=baseline),
        Cell(run_id[:8], href=links.run(run_id)),
    ]


def _rate_table(data: ReportData, links: Links, family: str, title: str) -> Table:
    values = data.family(family)
    if values.empty or values.isna().all().all():
        return Table(title, [], [])
    ci = data.ci(family)
    avg = values.mean(axis=1)
    ref_ids = [i for i in data.baselines.index if pd.notna(avg[i])]
    ref = avg[ref_ids[0]] if ref_ids else math.nan  # first baseline is the reference
    best = avg.loc[data.variants.index].idxmin() if avg.loc[data.variants.index].notna().any() else None
    n_utts = data.family("n_utts")
    headers = [
        f"{s} (n={int(n_utts[s].max())})" if s in n_utts and n_utts[s].notna().any() else s
        for s in values.columns
    ]
    delta_header = "Δ avg vs baseline" + (
        f" ({data.runs.at[ref_ids[0], 'variant']})" if len(ref_ids) > 1 else ""
    )
    # per-set Δ with paired-bootstrap marks: WER only (the sweep tests WER against the baseline)
    logged = data.family("delta_wer_vs_baseline") if family == "wer" else pd.DataFrame()
    p_values = data.family("p_vs_baseline") if family == "wer" else pd.DataFrame()
    set_deltas = family == "wer" and bool(ref_ids)
    rows = []
    for run_id in data.runs.index:
        cells = _id_cells(data, run_id, links)
        is_ref = bool(ref_ids) and run_id == ref_ids[0]
        for s in values.columns:
            v = values.at[run_id, s]
            lo, hi = (ci[0].at[run_id, s], ci[1].at[run_id, s]) if ci and s in ci[0] and s in ci[1] else (math.nan, math.nan)
            cells.append(Cell(_pct(v), f"[{lo:.1f}, {hi:.1f}]" if pd.notna(v) and pd.notna(lo) and pd.notna(hi) else ""))
        cells.append(Cell(_pct(avg[run_id]), bold=run_id == best))
        if set_deltas:
            for s in values.columns:
                if is_ref or data.runs.at[run_id, "role"] == "baseline":
                    cells.append(Cell(""))
                    continue
                d = logged.at[run_id, s] if s in logged else math.nan
                if pd.isna(d):
                    d = values.at[run_id, s] - values.at[ref_ids[0], s]
                p = p_values.at[run_id, s] if s in p_values else math.nan
                cells.append(Cell("" if pd.isna(d) else f"{d:+.1f}{significance(p)}"))
        if ref_ids:
            delta = "" if is_ref or pd.isna(avg[run_id]) else f"{avg[run_id] - ref:+.1f}"
            cells.append(Cell(delta))
        rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
    note = "avg = mean over eval sets" + ("; Δ in percentage points." if ref_ids else ".")
    if ci:
        note = "Cells: value [95% CI]. " + note
    if set_deltas and not p_values.empty and p_values.notna().any().any():
        note += (" Δ per set = variant − baseline; paired bootstrap test against the baseline: "
                 "* p < 0.05, ** p < 0.01.")
    columns = (ID_COLUMNS + headers + ["avg"]
               + ([f"Δ {s}" for s in values.columns] if set_deltas else [])
               + ([delta_header] if ref_ids else []))
    return Table(title, columns, rows, note, len(ID_COLUMNS))


def significance(p: float) -> str:
    if p is None or pd.isna(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


# --- normalisation sensitivity and paired tests -------------------------------------------------


def _sensitivity_table(data: ReportData) -> Table:
    """Does the ranking of variants by WER survive a change of normaliser (raw, basic)?"""
    from scipy.stats import kendalltau

    title = "Normalisation sensitivity"
    variants = data.variants.index
    main = data.family("wer").loc[variants]
    alts = [a for a in ("wer_basic", "wer_raw") if not data.family(a).loc[variants].isna().all().all()]
    if len(variants) < 2 or not alts:
        return Table(title, [], [])
    names = data.runs["variant"]
    rows = []
    for s in data.eval_sets:
        base = main[s].dropna() if s in main else pd.Series(dtype=float)
        if len(base) < 2:
            continue
        cells = [Cell(s), Cell(data.normalizers.get(s, "")), Cell(names[base.idxmin()])]
        for alt in alts:
            other = data.family(alt).loc[variants]
            other = other[s].reindex(base.index) if s in other else pd.Series(index=base.index, dtype=float)
            both = pd.concat([base, other], axis=1).dropna()
            if len(both) < 2:
                cells += [Cell(""), Cell(""), Cell("")]
                continue
            tau = kendalltau(both.iloc[:, 0], both.iloc[:, 1]).statistic
            same = list(both.iloc[:, 0].rank(method="min")) == list(both.iloc[:, 1].rank(method="min"))
            cells += [Cell(names[both.iloc[:, 1].idxmin()]), Cell("" if pd.isna(tau) else f"{tau:.2f}"),
                      Cell("yes" if same else "no")]
        rows.append(Row(cells))
    columns = ["eval set", "normaliser", "best by WER"]
    for alt in alts:
        short = alt.removeprefix("wer_")
        columns += [f"best by {short}", f"Kendall τ vs {short}", f"ranking identical ({short})"]
    return Table(title, columns, rows,
                 "Variants ranked by WER under the set's normaliser, then under the basic "
                 "(language-agnostic) and raw (whitespace only) normalisers; τ = 1 means the "
                 "same order. A ranking that does not survive is a protocol artefact.")


def _paired_tables(data: ReportData) -> list[Table]:
    """Paired bootstrap matrix per eval set: row system minus column system, in pts."""
    paired = data.paired
    if paired.empty:
        return []
    label = {name: name for name in data.runs["variant"]}
    order = [n for n in ["baseline", *data.runs["variant"]] if n in set(paired["a"]) | set(paired["b"])]
    order = list(dict.fromkeys(order + sorted(set(paired["a"]) | set(paired["b"]))))
    tables = []
    for s, rows_s in paired.groupby("set", sort=False):
        lookup = {}
        for r in rows_s.itertuples():
            lookup[(r.a, r.b)] = (r.delta_wer, r.p_value)
            lookup[(r.b, r.a)] = (-r.delta_wer, r.p_value)
        present = [n for n in order if any(k[0] == n for k in lookup)]
        rows = []
        for a in present:
            wins = losses = 0
            cells = [Cell(label.get(a, a), bold=a == "baseline")]
            for b in present:
                if a == b or (a, b) not in lookup:
                    cells.append(Cell("–" if a == b else ""))
                    continue
                d, p = lookup[(a, b)]
                if pd.notna(p) and p < 0.05:
                    wins += d < 0
                    losses += d > 0
                cells.append(Cell(f"{d:+.1f}{significance(p)}"))
            rows.append(Row([cells[0], Cell(str(wins)), Cell(str(losses)), *cells[1:]],
                            baseline=a == "baseline"))
        columns = ["system", "better than", "worse than", *present]
        n = int(rows_s["n"].max()) if rows_s["n"].notna().any() else 0
        tables.append(Table(
            f"Paired tests: {s}", columns, rows,
            f"ΔWER (row − column, pts) on the same {n} utterances; paired bootstrap: "
            "* p < 0.05, ** p < 0.01. better/worse than = significant (p < 0.05) wins/losses.",
            numeric_from=1))
    return tables


# --- detail tables ------------------------------------------------------------------------------


def _failure_tables(data: ReportData, links: Links) -> list[Table]:
    families = data.failure_families()
    tables = []
    for s in data.eval_sets:
        present = [f for f in families if s in data.families[f]]
        if not present:
            continue
        short = [f.removeprefix("fail_").removeprefix("fail/") for f in present]
        rows = []
        for run_id in data.runs.index:
            values = [data.family(f).at[run_id, s] for f in present]
            if all(pd.isna(v) for v in values):
                continue
            cells = _id_cells(data, run_id, links)
            for name, v in zip(short, values):
                cells.append(Cell(_share(v) if name.endswith("_rate") else _num(v)))
            rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
        columns = ID_COLUMNS + [n.removesuffix("_rate") + (" %" if n.endswith("_rate") else "") for n in short]
        tables.append(Table(f"Failure metrics: {s}", columns, rows,
                            "Shares of utterances in %: empty output, repetition loop, wrong "
                            "script, over 100% WER, capped hypothesis; len_ratio = hypothesis / "
                            "reference words.", len(ID_COLUMNS)))
    return tables


def _per_set_table(data: ReportData, links: Links, families: dict[str, str], title: str, note: str,
                   eval_sets_only: bool = False) -> Table:
    """Columns ``<label> <set>`` for each family and set (runs without any value are left out)."""
    columns, keys = [], []
    for fam, label in families.items():
        table = data.families.get(fam)
        if table is None:
            continue
        for s in table.columns:
            if eval_sets_only and s not in data.eval_sets:
                continue
            columns.append(f"{label} {s}")
            keys.append((fam, s))
    rows = []
    for run_id in data.runs.index:
        values = [data.family(f).at[run_id, s] for f, s in keys]
        if not values or all(pd.isna(v) for v in values):
            continue
        cells = _id_cells(data, run_id, links)
        for (fam, _), v in zip(keys, values):
            cells.append(Cell(_share(v) if fam in ("capped_rate", "text_exact") else
                              _pct(v) if fam.startswith("wer") else
                              ("" if pd.isna(v) else f"{v:.1f}") if fam == "text_chrf" else _num(v)))
        rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
    return Table(title, ID_COLUMNS + columns, rows, note, len(ID_COLUMNS))


def _counts_table(data: ReportData, links: Links) -> Table:
    """Word-level edit counts per set: substitutions / deletions / insertions of ref words."""
    fams = {f: data.family(f) for f in ("sub", "dele", "ins", "ref_words")}
    sets = [s for s in data.eval_sets if all(s in t for t in fams.values())]
    rows = []
    for run_id in data.runs.index:
        if all(pd.isna(fams["sub"].at[run_id, s]) for s in sets):
            continue
        cells = _id_cells(data, run_id, links)
        for s in sets:
            sub, dele, ins, ref = (fams[f].at[run_id, s] for f in ("sub", "dele", "ins", "ref_words"))
            cells.append(Cell("" if pd.isna(sub) else f"{_num(sub)} / {_num(dele)} / {_num(ins)} of {_num(ref)}"))
        rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
    return Table("Word errors by type", ID_COLUMNS + [f"S / D / I {s}" for s in sets], rows,
                 "Substituted / deleted / inserted words of the reference words, after "
                 "normalisation and capping.", len(ID_COLUMNS))


def _slice_tables(errors: ErrorAnalysis) -> list[Table]:
    titles = {"duration": "WER by duration", "speaker": "WER by speaker", "language": "WER by language"}
    tables = []
    for kind, frame in errors.slices.items():
        if frame is None or frame.empty:
            continue
        systems = [c for c in frame.columns if c not in ("eval_set", "slice", "n")]
        rows = []
        for r in frame.itertuples(index=False):
            values = dict(zip(frame.columns, r))
            cells = [Cell(values["eval_set"]), Cell(str(values["slice"])), Cell(_num(values["n"]))]
            cells += [Cell(_pct(values[c])) for c in systems]
            if len(systems) == 2:
                a, b = values[systems[0]], values[systems[1]]
                cells.append(Cell("" if pd.isna(a) or pd.isna(b) else f"{a - b:+.1f}"))
            rows.append(Row(cells))
        columns = ["eval set", kind, "n utts", *[f"WER {c}" for c in systems]]
        if len(systems) == 2:
            columns.append("Δ")
        tables.append(Table(titles.get(kind, kind), columns, rows,
                            "Corpus WER (%) within each slice, re-scored from the runs' "
                            "predictions under the same protocol.", numeric_from=2))
    return tables


def _data_table(data: ReportData, links: Links) -> Table:
    values = data.family("data").dropna(how="all")
    if values.empty:
        return Table("Realised data mix", [], [])
    counts = sorted(c for c in values.columns if c.startswith("count_") and c != "count_text")
    rest = [c for c in values.columns if c not in counts]
    values = values[counts + rest]
    rows = []
    for run_id in values.index:
        cells = _id_cells(data, run_id, links)
        cells += [Cell(_num(values.at[run_id, c])) for c in values.columns]
        rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
    return Table("Realised data mix", ID_COLUMNS + list(values.columns), rows,
                 "Counts of training examples per language and of plain-text examples; "
                 "compare text_fraction_realised with the target text_fraction.", len(ID_COLUMNS))


def _generic_table(data: ReportData, links: Links, family: str, title: str) -> Table:
    values = data.family(family).dropna(how="all")
    if values.empty:
        return Table(title, [], [])
    per_set = len(values.columns) > 1 and set(values.columns) <= set(data.eval_sets)
    ci = data.ci(family)
    rows = []
    for run_id in values.index:
        cells = _id_cells(data, run_id, links)
        for c in values.columns:
            v = values.at[run_id, c]
            interval = ""
            if ci and c in ci[0] and c in ci[1] and pd.notna(ci[0].at[run_id, c]) and pd.notna(v):
                interval = f"[{_num(ci[0].at[run_id, c])}, {_num(ci[1].at[run_id, c])}]"
            cells.append(Cell(_num(v), interval))
        if per_set:
            cells.append(Cell(_num(values.loc[run_id].mean())))
        rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
    columns = ID_COLUMNS + list(values.columns) + (["avg"] if per_set else [])
    return Table(title, columns, rows, numeric_from=len(ID_COLUMNS))


# --- formatting and output ------------------------------------------------------------------


def _pct(v: float) -> str:
    return "" if pd.isna(v) else f"{v:.1f}"


def _share(v: float) -> str:
    """A fraction in [0, 1] as percent."""
    return "" if pd.isna(v) else f"{100 * v:.1f}"


def _num(v: float) -> str:
    if pd.isna(v):
        return ""
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def _frac(v: float) -> str:
    text = f"{v:g}"
    return text if "." in text or "e" in text else f"{text}.0"


def _links(data: ReportData, ui_base: str | None) -> Links:
    server = data.tracking_uri.startswith(("http://", "https://"))
    base = ui_base or (data.tracking_uri if server else DEFAULT_UI_BASE)
    return Links(base.rstrip("/"), in_markdown=server or ui_base is not None,
                 experiment_id=data.experiment_id)


def _md_cell(cell: Cell, links_in_markdown: bool) -> str:
    text = cell.text.replace("|", "\\|")
    if cell.bold and text:
        text = f"**{text}**"
    if cell.href and links_in_markdown:
        text = f"[{text}]({cell.href})"
    return text


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = _md_cell
    env.filters["md_escape"] = lambda s: str(s).replace("|", "\\|")
    env.filters["data_uri"] = _data_uri
    env.filters["md_code"] = lambda s: "`` " + str(s).replace("`", "'") + " ``"
    return env

