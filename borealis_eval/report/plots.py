"""Report figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state).

Each function writes one PNG and returns a ``Plot`` (or None when the data cannot support the
figure, e.g. a heatmap with a single language mix).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from borealis_eval import records
from borealis_eval.atomic import atomic_path
from borealis_eval.report.cells import CellAnalysis
from borealis_eval.report.collect import ReportData

DPI = 110


@dataclass(frozen=True)
class Plot:
    name: str  # file stem
    title: str
    path: Path  # absolute PNG path
    caption: str
    figure: Figure | None = field(default=None, compare=False, repr=False)  # what was drawn (tests read its axes)


WRAP = 34  # characters per line of a legend entry or category tick: long cell names wrap, not overflow


def _wrap(text: str, width: int = WRAP) -> str:
    """Wrap at ' · ' between axes first, then anywhere (a long list label has no spaces)."""
    parts = str(text).split(" · ")
    lines, cur = [], ""
    for p in parts:
        cand = f"{cur} · {p}" if cur else p
        if len(cand) <= width or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = p
    lines.append(cur)
    return "\n".join(textwrap.fill(x, width, break_long_words=True, break_on_hyphens=False) for x in lines)


def _shared_legend(fig, axes) -> None:
    """One legend below the subplots, each label once (subplots repeat the same lines); entries
    wrapped and as many columns as fit the figure's width."""
    labels = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(_wrap(label), handle)
    if not labels:
        return
    widest = max(len(line) for label in labels for line in label.splitlines())
    fits = max(1, int(fig.get_figwidth() * DPI // (widest * 6.5 + 40)))  # ~6.5 px per small character
    fig.legend(labels.values(), labels.keys(), loc="outside lower center",
               ncol=min(len(labels), 4, fits), fontsize="small", frameon=False)

def draw_all(data: ReportData, cells: CellAnalysis, plot_dir: Path) -> list[Plot]:
    """Draw every figure the data supports into ``plot_dir``; remove stale report PNGs.

    The first is the answer's figure (WER per cell with its interval and seeds, baselines as lines).
    """
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        p
        for p in (
            wer_per_cell(data, cells, plot_dir),
            learning_curves(data, cells, plot_dir),
            loss_curves(data, plot_dir),
            rtfx_vs_wer(data, plot_dir),
        )
        if p is not None
    ]
    keep = {p.path.name for p in plots}
    for stem in ALL_PLOTS:
        stale = plot_dir / f"{stem}.png"
        if stale.name not in keep and stale.exists():
            stale.unlink()
    return plots


def numeric_axis(cells: CellAnalysis, axis: str) -> bool:
    """Every cell's value on `axis` is a number (bools are categories)."""
    values = [c.values.get(axis) for c in cells.cells]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def x_axis(cells: CellAnalysis) -> str | None:
    """The factor drawn along x: the last varying numeric grid axis (any dotted path) along which
    some cells form a line (the same levels of the other axes), else none (one point per cell,
    named on a categorical x-axis: e.g. a search's trials, each its own cell)."""
    def forms_lines(axis: str) -> bool:
        rest = [tuple((a, v) for a, v in c.axes.items() if a != axis) for c in cells.cells]
        return len(set(rest)) < len(rest)

    return next((a for a in reversed(cells.axes()) if numeric_axis(cells, a) and forms_lines(a)), None)


def wer_per_cell(data: ReportData, cells: CellAnalysis, plot_dir: Path) -> Plot | None:
    """Per eval set: each cell's mean WER over seeds, its 95% interval (band or bar), its seeds as dots;
    with a text-fraction axis, one line per setting of the other factors; baselines as horizontal lines."""
    sets = [s for s in data.eval_sets if any((c.key, s) in cells.summaries for c in cells.cells)]
    if not sets:
        return None
    along = x_axis(cells)
    groups: dict[str, list] = {}
    for c in cells.cells:
        rest = " · ".join(f"{a.split('.')[-1]}={v}" for a, v in c.axes.items() if a != along) or "cells"
        groups.setdefault(rest if along else "cells", []).append(c)
    ncol = min(len(sets), 4)
    nrow = -(-len(sets) // ncol)
    fig = Figure(figsize=(3.9 * ncol + 0.6, 3.3 * nrow + 0.5), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False).ravel())
    for ax in axes[len(sets):]:
        ax.set_visible(False)
    for ax, s in zip(axes, sets):
        for i, (name, members) in enumerate(groups.items()):
            color = f"C{i % 10}"
            pts = [(c, cells.summaries[(c.key, s)]) for c in members if (c.key, s) in cells.summaries]
            if not pts:
                continue
            xs = [float(c.values[along]) if along else j for j, (c, _) in enumerate(pts)]
            mean = [100 * m.mean for _, m in pts]
            lo, hi = [100 * m.ci_low for _, m in pts], [100 * m.ci_high for _, m in pts]
            if along:
                ax.plot(xs, mean, marker="o", color=color, label=name)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
            else:
                ax.errorbar(xs, mean, yerr=[np.subtract(mean, lo), np.subtract(hi, mean)], fmt="o", color=color,
                            capsize=3, label="mean over seeds, 95% interval")
            for x, (c, _) in zip(xs, pts):
                seeds = _seed_rates(data, cells, c, s)
                ax.scatter([x] * len(seeds), seeds, s=9, color=color, alpha=0.55, linewidths=0)
        for j, run_id in enumerate(data.baselines.index):
            b = cells.baselines.get((run_id, s))
            if b is not None:
                ax.axhline(100 * b.mean, color="0.3", linestyle=("--", ":", "-.")[j % 3], linewidth=1.2,
                           label=f"baseline: {data.runs.at[run_id, 'model'] or data.runs.at[run_id, 'variant']}")
        ax.set_title(s)
        if along:
            ax.set_xlabel(along)
        else:
            labels = [_wrap(c.label, 24) for c in cells.cells if (c.key, s) in cells.summaries]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="x-small")
        ax.set_ylabel("WER (%)")
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes[: len(sets)])
    lo_s, hi_s = cells.seeds_per_cell
    band = ("band/bars: 95% interval over seeds and test utterances" if cells.training_variance_measured
            else "one seed per cell: band/bars cover test sampling only")
    return _save(fig, plot_dir, "wer_per_cell", "WER per cell",
                 f"Mean WER over {lo_s}{f'-{hi_s}' if hi_s != lo_s else ''} seed(s) per cell and eval set; {band}; "
                 "dots: the seeds; lines: plain-Whisper baselines (decoded once).")


def _seed_rates(data: ReportData, cells: CellAnalysis, cell, s: str) -> list[float]:
    wer = data.family("wer")
    return [float(wer.at[r, s]) for r in cell.runs if s in wer and r in wer.index and pd.notna(wer.at[r, s])]


def learning_curves(data: ReportData, cells: CellAnalysis, plot_dir: Path) -> Plot | None:
    """Dev WER against training step per cell: the mean over seeds, the seeds' range as a band."""
    dev_sets = sorted({s for per_run in data.curves.values() for s in per_run})
    if not dev_sets:
        return None
    fig = Figure(figsize=(4.6 * len(dev_sets) + 2.4, 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(dev_sets), squeeze=False)[0])
    colors = _cmap_colors(len(cells.cells))
    for ax, s in zip(axes, dev_sets):
        for color, c in zip(colors, cells.cells):
            runs = [data.curves[r][s].set_index("step")["value"] for r in c.runs if s in data.curves.get(r, {})]
            if not runs:
                continue
            table = pd.concat(runs, axis=1).sort_index() * 100
            ax.plot(table.index, table.mean(axis=1), color=color, linewidth=1.3, label=_wrap(c.label))
            if table.shape[1] > 1:
                ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=color, alpha=0.15,
                                linewidth=0)
        ax.set_title(f"{s} (dev)")
        ax.set_xlabel("training step")
        ax.set_ylabel("WER (%)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, plot_dir, "learning_curves", "Learning curves",
                 "Greedy WER on the fixed dev subset every eval.every_steps training steps; line: mean over "
                 "seeds, band: the seeds' range. Does the ranking of cells change with the training budget?")


def loss_curves(data: ReportData, plot_dir: Path) -> Plot | None:
    histories = {k: data.loss_history[k] for k in data.variants.index if k in data.loss_history}
    if not histories:
        return None
    fig = Figure(figsize=(7.5, 4.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    colors = _cmap_colors(len(histories))
    for color, (run_id, hist) in zip(colors, histories.items()):
        ax.plot(hist["step"], hist["value"], color=color, linewidth=1.2,
                label=_wrap(data.runs.at[run_id, "variant"].replace("__", " · ")))
    ax.set_xlabel("step")
    ax.set_ylabel(records.TRAIN_LOSS)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2 if len(histories) > 6 else 1,
              loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, plot_dir, "train_loss", "Training loss",
                 f"{records.TRAIN_LOSS} history of each variant.")


def rtfx_vs_wer(data: ReportData, plot_dir: Path) -> Plot | None:
    """Speed against accuracy per eval set: one point per run, baselines as black crosses."""
    rtfx, wer = data.family("rtfx"), data.family("wer")
    sets = [s for s in data.eval_sets if s in rtfx and rtfx[s].notna().any()]
    if not sets:
        return None
    fig = Figure(figsize=(4.2 * len(sets) + 0.6, 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sets), sharey=True, squeeze=False)[0])
    first = next(iter(data.axes()), None)  # points coloured by the first grid axis
    colour_of = lambda run: run["axes"].get(first, "") if first else ""  # noqa: E731
    levels = sorted({colour_of(run) for _, run in data.variants.iterrows()})
    for ax, s in zip(axes, sets):
        for run_id, run in data.runs.iterrows():
            x, y = rtfx.at[run_id, s], wer.at[run_id, s] if s in wer else np.nan
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            if data.is_baseline(run_id):
                ax.scatter(x, y, marker="X", s=70, color="black", label=f"baseline: {run['variant']}")
            else:
                i = levels.index(colour_of(run))
                ax.scatter(x, y, marker="o", s=30, color=f"C{i % 10}", alpha=0.85,
                           label=f"{first.split('.')[-1]}={colour_of(run)}" if first else "variant")
        ax.set_xscale("log")
        ax.set_title(s)
        ax.set_xlabel("RTFx (audio s / decoding s, log)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("WER (%)")
    _shared_legend(fig, axes)
    return _save(fig, plot_dir, "rtfx_vs_wer", "RTFx vs WER",
                 "Decoding speed (RTFx, higher is faster) against WER per eval set; one point "
                 "per run, coloured by " + (f"{first}" if first else "run") + "; crosses: baseline Whisper.")


ALL_PLOTS = ("wer_per_cell", "learning_curves", "train_loss", "rtfx_vs_wer",
             "wer_vs_text_fraction", "wer_heatmap")  # the last two: older reports' names, removed


def _cmap_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, plot_dir: Path, stem: str, title: str, caption: str) -> Plot:
    FigureCanvasAgg(fig)
    path = plot_dir / f"{stem}.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Plot(stem, title, path, caption, fig)
