"""Report figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state).

Each function writes one PNG and returns a ``Plot`` (or None when the data cannot support the
figure, e.g. a heatmap with a single language mix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from borealis_eval.atomic import atomic_path
from borealis_eval.report.collect import ReportData, cell_means

DPI = 110


@dataclass(frozen=True)
class Plot:
    name: str  # file stem
    title: str
    path: Path  # absolute PNG path
    caption: str


def _shared_legend(fig, axes) -> None:
    """One legend below the subplots, each label once (subplots repeat the same lines)."""
    labels = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    fig.legend(labels.values(), labels.keys(), loc="outside lower center",
               ncol=min(len(labels), 4), fontsize="small", frameon=False)

def draw_all(data: ReportData, plot_dir: Path) -> list[Plot]:
    """Draw every figure the data supports into ``plot_dir``; remove stale report PNGs."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        p
        for p in (
            wer_vs_text_fraction(data, plot_dir),
            loss_curves(data, plot_dir),
            mix_fraction_heatmap(data, plot_dir),
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


def wer_vs_text_fraction(data: ReportData, plot_dir: Path) -> Plot | None:
    cells = cell_means(data)
    sets = data.eval_sets
    if cells.empty or not sets:
        return None
    fig = Figure(figsize=(4.2 * len(sets) + 0.6, 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sets), sharey=True, squeeze=False)[0])
    baselines = data.family("wer").loc[data.baselines.index]
    for ax, s in zip(axes, sets):
        for i, (mix, group) in enumerate(cells.groupby("language_mix", sort=True)):
            group = group.sort_values("text_fraction")
            color = f"C{i % 10}"
            ax.plot(group["text_fraction"], group[s], marker="o", color=color, label=mix)
            if f"{s}_lo" in group and group[f"{s}_lo"].notna().any():
                ax.fill_between(
                    group["text_fraction"], group[f"{s}_lo"], group[f"{s}_hi"],
                    color=color, alpha=0.15, linewidth=0,
                )
        for j, (run_id, row) in enumerate(baselines.iterrows()):
            if pd.notna(row.get(s)):
                name = data.runs.at[run_id, "variant"]
                ax.axhline(row[s], color="0.3", linestyle=("--", ":", "-.")[j % 3],
                           linewidth=1.2, label=f"baseline: {name}")
        ax.set_title(s)
        ax.set_xlabel("text fraction")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("WER (%)")
    _shared_legend(fig, axes)
    band = " Shaded: 95% CI." if data.ci("wer") is not None else ""
    return _save(fig, plot_dir, "wer_vs_text_fraction", "WER vs text fraction",
                 "WER per eval set against the plain-text fraction, one line per language mix "
                 f"(mean over seeds); dashed: baseline Whisper.{band}")


def loss_curves(data: ReportData, plot_dir: Path) -> Plot | None:
    histories = {k: data.loss_history[k] for k in data.variants.index if k in data.loss_history}
    if not histories:
        return None
    fig = Figure(figsize=(7.5, 4.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    colors = _cmap_colors(len(histories))
    for color, (run_id, hist) in zip(colors, histories.items()):
        ax.plot(hist["step"], hist["value"], color=color, linewidth=1.2,
                label=data.runs.at[run_id, "variant"])
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2 if len(histories) > 6 else 1,
              loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, plot_dir, "train_loss", "Training loss",
                 "train/loss history of each variant.")


def mix_fraction_heatmap(data: ReportData, plot_dir: Path) -> Plot | None:
    cells = cell_means(data)
    if cells.empty:
        return None
    grid = cells.pivot(index="language_mix", columns="text_fraction", values="avg")
    if grid.shape[0] < 2 or grid.shape[1] < 2:
        return None
    fig = Figure(figsize=(1.1 * grid.shape[1] + 2.8, 0.6 * grid.shape[0] + 1.6),
                 dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdYlGn_r", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{f:g}" for f in grid.columns])
    ax.set_yticks(range(grid.shape[0]), list(grid.index))
    ax.set_xlabel("text fraction")
    ax.set_ylabel("language mix")
    for (r, c), value in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(value):
            dark = abs(image.norm(value) - 0.5) > 0.3  # both ends of RdYlGn are dark
            ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize="small",
                    color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="mean WER (%)")
    return _save(fig, plot_dir, "wer_heatmap", "Mean WER: language mix x text fraction",
                 "Mean WER over eval sets (and seeds) per grid cell; lower is better.")


def rtfx_vs_wer(data: ReportData, plot_dir: Path) -> Plot | None:
    """Speed against accuracy per eval set: one point per run, baselines as black crosses."""
    rtfx, wer = data.family("rtfx"), data.family("wer")
    sets = [s for s in data.eval_sets if s in rtfx and rtfx[s].notna().any()]
    if not sets:
        return None
    fig = Figure(figsize=(4.2 * len(sets) + 0.6, 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sets), sharey=True, squeeze=False)[0])
    mixes = sorted(set(data.variants["language_mix"]))
    for ax, s in zip(axes, sets):
        for run_id, run in data.runs.iterrows():
            x, y = rtfx.at[run_id, s], wer.at[run_id, s] if s in wer else np.nan
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            if run["role"] == "baseline":
                ax.scatter(x, y, marker="X", s=70, color="black", label=f"baseline: {run['variant']}")
            else:
                i = mixes.index(run["language_mix"])
                ax.scatter(x, y, marker="o", s=30, color=f"C{i % 10}", alpha=0.85,
                           label=run["language_mix"] or "variant")
        ax.set_xscale("log")
        ax.set_title(s)
        ax.set_xlabel("RTFx (audio s / decoding s, log)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("WER (%)")
    _shared_legend(fig, axes)
    return _save(fig, plot_dir, "rtfx_vs_wer", "RTFx vs WER",
                 "Decoding speed (RTFx, higher is faster) against WER per eval set; one point "
                 "per run, coloured by language mix; crosses: baseline Whisper.")


ALL_PLOTS = ("wer_vs_text_fraction", "train_loss", "wer_heatmap", "rtfx_vs_wer")


def _cmap_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, plot_dir: Path, stem: str, title: str, caption: str) -> Plot:
    FigureCanvasAgg(fig)
    path = plot_dir / f"{stem}.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Plot(stem, title, path, caption)
