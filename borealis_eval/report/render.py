"""Turn ReportData into display tables, a headline sentence, and report.md / report.html."""

from __future__ import annotations

import base64
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd
from mlflow.tracking import MlflowClient

from borealis_eval.report.collect import ReportData, cell_means, load_report_data
from borealis_eval.report.plots import Plot, draw_all

DEFAULT_UI_BASE = "http://127.0.0.1:5000"
TEMPLATES = Path(__file__).parent / "templates"
ARTIFACT_PATH = "report"


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
    tables: list[Table]
    plots: list[Plot]
    unfinished: list[dict]
    tracking_uri: str
    generated: str
    md_links: bool
    notes: list[str] = field(default_factory=list)


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
    context = make_context(data, plots, _links(data, ui_base))

    env = _environment()
    md = out_dir / "report.md"
    html = out_dir / "report.html"
    _write_atomic(md, env.get_template("report.md.j2").render(r=context))
    _write_atomic(html, env.get_template("report.html.j2").render(r=context))

    if log_artifact:
        client = MlflowClient(tracking_uri=data.tracking_uri)
        run_id = data.parent["run_id"]
        client.log_artifact(run_id, str(md), ARTIFACT_PATH)
        client.log_artifact(run_id, str(html), ARTIFACT_PATH)
        for plot in plots:
            client.log_artifact(run_id, str(plot.path), f"{ARTIFACT_PATH}/plots")
    return ReportPaths(md=md, html=html, plots=tuple(p.path for p in plots))


def make_context(data: ReportData, plots: list[Plot], links: Links) -> Context:
    tables = [t for t in _tables(data, links) if t.rows]
    notes = []
    if data.rates_scale != 1.0:
        notes.append("WER/CER were logged as fractions; shown here in percent.")
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
        f"{data.runs.at[i, 'variant']} {avg[i]:.1f}%"
        for i in data.baselines.index
        if pd.notna(avg[i])
    ]
    if base:
        parts.append("baseline Whisper: " + ", ".join(base))
    return "; ".join(parts) + "."


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
        if has_ci:
            detail += ", " + _separation(best, zero, sets)
        out.append(f"{label} -> {_frac(best.text_fraction)} ({detail})")
    return out


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
    tables = [
        _rate_table(data, links, "wer", "Word error rate (WER, %)"),
        _rate_table(data, links, "cer", "Character error rate (CER, %)"),
        _data_table(data, links),
    ]
    for family in data.other_families():
        if not family:
            title = "Other metrics"
        else:
            title = ("Failure metric: " if family.startswith("fail/") else "Metric: ") + family
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
    delta_header = "Δ vs baseline" + (
        f" ({data.runs.at[ref_ids[0], 'variant']})" if len(ref_ids) > 1 else ""
    )
    rows = []
    for run_id in data.runs.index:
        cells = _id_cells(data, run_id, links)
        for s in values.columns:
            v = values.at[run_id, s]
            lo, hi = (ci[0].at[run_id, s], ci[1].at[run_id, s]) if ci and s in ci[0] and s in ci[1] else (math.nan, math.nan)
            cells.append(Cell(_pct(v), f"[{lo:.1f}, {hi:.1f}]" if pd.notna(v) and pd.notna(lo) and pd.notna(hi) else ""))
        cells.append(Cell(_pct(avg[run_id]), bold=run_id == best))
        if ref_ids:
            is_ref = run_id == ref_ids[0]
            delta = "" if is_ref or pd.isna(avg[run_id]) else f"{avg[run_id] - ref:+.1f}"
            cells.append(Cell(delta))
        rows.append(Row(cells, baseline=data.runs.at[run_id, "role"] == "baseline"))
    note = "avg = mean over eval sets" + ("; Δ in percentage points." if ref_ids else ".")
    if ci:
        note = "Cells: value [95% CI]. " + note
    columns = ID_COLUMNS + headers + ["avg"] + ([delta_header] if ref_ids else [])
    return Table(title, columns, rows, note, len(ID_COLUMNS))


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
    return env


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
