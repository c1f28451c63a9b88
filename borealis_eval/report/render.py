"""Turn ReportData into report.md / report.html: the answer first (answer.py), then per-run details."""

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
from borealis_eval.report.answer import (cell_table, family_note, headline, headline_lines, reference_table,
                                         verdict_tables)
from borealis_eval.report.cells import CellAnalysis, analyse_cells
from borealis_eval.report.collect import ReportData, load_report_data
from borealis_eval.report.design import design_line, design_table
from borealis_eval.report.errors import ErrorAnalysis, analyse
from borealis_eval.report.plots import Plot, draw_all
from borealis_eval.report.tables import Cell, Links, Row, Table, num, pct, share
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
class Context:
    title: str
    description: str
    headline: str  # Markdown: one "- " line per item of headline_lines
    parent: dict
    parent_href: str
    tables: list[Table]  # the first screen: one compact table per cell
    plots: list[Plot]  # the first is the answer's plot, shown under the headline
    unfinished: list[dict]
    tracking_uri: str
    generated: str
    md_links: bool
    notes: list[str] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)  # failures, data mix, text, speed, ...
    errors: ErrorAnalysis = field(default_factory=ErrorAnalysis)
    slices: list[Table] = field(default_factory=list)
    links: Links | None = None
    verdicts: list[Table] = field(default_factory=list)  # every contrast, with its interval and verdict
    runs: list[Table] = field(default_factory=list)  # per run: WER, CER, sensitivity
    headline_lines: list[str] = field(default_factory=list)
    appendix: list[Table] = field(default_factory=list)  # single-run diagnostics the verdicts do not use

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
    cells = analyse_cells(data)
    plots = draw_all(data, cells, out_dir / "plots")
    errors = analyse(data)
    context = make_context(data, cells, plots, _links(data, ui_base), errors)

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
        if cells.unstable:  # the unstable cells, on the parent run where a reader of the UI sees them
            client.set_tag(run_id, records.UNSTABLE_CELLS, "; ".join(
                f"{cells.cell(k).label} on {s}: {seeds}" for (k, s), seeds in cells.unstable.items()))
        save_runs_view(client, data.experiment_id, data.eval_sets, list(data.axis_columns()))
    return ReportPaths(md=md, html=html, plots=tuple(p.path for p in plots))


def machine_note(data: ReportData) -> str:
    """Which CPU and precision the variants trained in: two CPU families of one machine kind (one
    with native bf16, where `precision: auto` autocasts) give different trained numbers."""
    v = data.variants
    if v.empty or "precision" not in v or not (v["precision"].astype(bool) | v["cpu"].astype(bool)).any():
        return ""  # a store from before these params were logged
    groups = v.groupby([v["precision"].replace("", "unknown precision"),
                        v["cpu"].replace("", "an unlogged CPU"), v["encoder_precision"]]).size()

    def words(p: str) -> str:
        return "bf16 autocast" if p == "bf16" else p

    parts = [f"{n} in {words(p)} on {cpu}" + (f", encoder features in {words(e)}" if e else "")
             for (p, cpu, e), n in groups.items()]
    return ("Variants trained " + "; ".join(parts) + ": trained numbers can differ between CPU families "
            "and between fp32 and bf16.")


def make_context(data: ReportData, cells: CellAnalysis, plots: list[Plot], links: Links,
                 errors: ErrorAnalysis | None = None) -> Context:
    errors = errors or ErrorAnalysis()
    tables = [t for t in (cell_table(data, cells, links), reference_table(data, cells)) if t.rows]
    notes = ["WER and CER are logged as fractions and shown here in percent; "
             "differences are in percentage points (pts)."]
    if cells.skipped:
        notes.append("Left out of the cell statistics: " + "; ".join(cells.skipped[:5])
                     + (f" (+{len(cells.skipped) - 5} more)" if len(cells.skipped) > 5 else "") + ".")
    if family_note(cells):
        notes.append(family_note(cells))
    if data.parent.get("seed_design") and data.parent.get("seed_decision") is None:
        notes.append(design_line(data, cells))
    if machine_note(data):
        notes.append(machine_note(data))
    if data.normalizers:
        notes.append("Normalisers: " + ", ".join(
            f"{s} {tag}" for s, tag in sorted(data.normalizers.items())) + ".")
    return Context(
        title=data.experiment_name,
        description=data.description,
        headline=headline(data, cells),
        headline_lines=headline_lines(data, cells),
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
        verdicts=[t for t in (design_table(data, cells), *verdict_tables(data, cells)) if t.rows],
        runs=[t for t in _tables(data, links) if t.rows],
        appendix=[t for t in _paired_tables(data) if t.rows],
    )


# --- tables ---------------------------------------------------------------------------------


def id_columns(data: ReportData) -> list[str]:
    """The columns that say which run a row is: one per grid axis, then seed, variant, run."""
    return [*data.axis_columns().values(), "seed", "variant", "run"]


def _tables(data: ReportData, links: Links) -> list[Table]:
    return [
        _rate_table(data, links, "wer", "Word error rate per run (WER, %)"),
        _rate_table(data, links, "cer", "Character error rate per run (CER, %)"),
        _sensitivity_table(data),
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
    baseline = data.is_baseline(run_id)
    axes = [Cell(run["axes"].get(a, "")) for a in data.axis_columns()]
    if baseline and axes:
        axes[0] = Cell(records.BASELINE, bold=True)
    return [
        *axes,
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
            cells.append(Cell(pct(v), f"[{lo:.1f}, {hi:.1f}]" if pd.notna(v) and pd.notna(lo) and pd.notna(hi) else ""))
        cells.append(Cell(pct(avg[run_id]), bold=run_id == best))
        if set_deltas:
            for s in values.columns:
                if is_ref or data.is_baseline(run_id):
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
        rows.append(Row(cells, baseline=data.is_baseline(run_id)))
    note = "avg = mean over eval sets" + ("; Δ in percentage points." if ref_ids else ".")
    if ci:
        note = "Cells: value [95% CI over test utterances]. " + note
    note += (" One row per training run: its intervals and marks cover test sampling only; what survives training "
             "variance is in the table per cell.")
    if set_deltas and not p_values.empty and p_values.notna().any().any():
        note += (" Δ per set = variant − baseline; paired bootstrap test against the baseline: "
                 "* p < 0.05, ** p < 0.01.")
    columns = (id_columns(data) + headers + ["avg"]
               + ([f"Δ {s}" for s in values.columns] if set_deltas else [])
               + ([delta_header] if ref_ids else []))
    return Table(title, columns, rows, note, len(id_columns(data)))


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
    alts = [a for a in ("wer_whisper", "wer_basic", "wer_raw") if a in data.families
            and not data.family(a).loc[variants].isna().all().all()]
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
    """Paired bootstrap matrix per eval set: row system minus column system, in pts. One run per
    system (the sweep's first seed): single-run diagnostics, in the appendix, not used by any verdict."""
    paired = data.paired
    if paired.empty:
        return []
    label = {name: name for name in data.runs["variant"]}
    order = [n for n in [records.BASELINE, *data.runs["variant"]] if n in set(paired["a"]) | set(paired["b"])]
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
            cells = [Cell(label.get(a, a), bold=a == records.BASELINE)]
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
                            baseline=a == records.BASELINE))
        columns = ["system", "better than", "worse than", *present]
        n = int(rows_s["n"].max()) if rows_s["n"].notna().any() else 0
        tables.append(Table(
            f"Single-run paired tests: {s}", columns, rows,
            f"Single-run diagnostics, not used by the verdicts: ΔWER (row − column, pts) between single training "
            f"runs on the same {n} utterances; paired bootstrap over utterances only: * p < 0.05, ** p < 0.01, "
            "better/worse than = such wins/losses. They ignore training variance: two seeds of one cell can differ "
            "here. The verdicts above are over seeds and utterances.",
            numeric_from=1, folded=True))
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
                cells.append(Cell(share(v) if name.endswith("_rate") else num(v)))
            rows.append(Row(cells, baseline=data.is_baseline(run_id)))
        columns = id_columns(data) + [n.removesuffix("_rate") + (" %" if n.endswith("_rate") else "") for n in short]
        tables.append(Table(f"Failure metrics: {s}", columns, rows,
                            "Shares of utterances in %: empty output, repetition loop, wrong "
                            "script, over 100% WER, capped hypothesis; len_ratio = hypothesis / "
                            "reference words.", len(id_columns(data))))
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
            cells.append(Cell(share(v) if fam in ("capped_rate", "text_exact") else
                              pct(v) if fam.startswith("wer") else
                              ("" if pd.isna(v) else f"{v:.1f}") if fam == "text_chrf" else num(v)))
        rows.append(Row(cells, baseline=data.is_baseline(run_id)))
    return Table(title, id_columns(data) + columns, rows, note, len(id_columns(data)))


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
            cells.append(Cell("" if pd.isna(sub) else f"{num(sub)} / {num(dele)} / {num(ins)} of {num(ref)}"))
        rows.append(Row(cells, baseline=data.is_baseline(run_id)))
    return Table("Word errors by type", id_columns(data) + [f"S / D / I {s}" for s in sets], rows,
                 "Substituted / deleted / inserted words of the reference words, after "
                 "normalisation and capping.", len(id_columns(data)))


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
            cells = [Cell(values["eval_set"]), Cell(str(values["slice"])), Cell(num(values["n"]))]
            cells += [Cell(pct(values[c])) for c in systems]
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
        cells += [Cell(num(values.at[run_id, c])) for c in values.columns]
        rows.append(Row(cells, baseline=data.is_baseline(run_id)))
    return Table("Realised data mix", id_columns(data) + list(values.columns), rows,
                 "Counts of training examples per language and of plain-text examples; "
                 "compare text_fraction_realised with the target text_fraction.", len(id_columns(data)))


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
                interval = f"[{num(ci[0].at[run_id, c])}, {num(ci[1].at[run_id, c])}]"
            cells.append(Cell(num(v), interval))
        if per_set:
            cells.append(Cell(num(values.loc[run_id].mean())))
        rows.append(Row(cells, baseline=data.is_baseline(run_id)))
    columns = id_columns(data) + list(values.columns) + (["avg"] if per_set else [])
    return Table(title, columns, rows, numeric_from=len(id_columns(data)))


# --- formatting and output ------------------------------------------------------------------


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
    for label, href in cell.links:  # small run links: linked only where the store is a server
        text += f" [`{label}`]({href})" if links_in_markdown else f" `{label}`"
    return text.strip()


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

