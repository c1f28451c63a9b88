"""The report's display vocabulary: cells, rows, tables, run links and number formats.

Renderers (answer.py: the first screen; render.py: details and output) build these; the
Markdown and HTML templates draw them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Cell:
    value: str = ""
    ci: str = ""  # "[lo, hi]" when CI bounds exist
    href: str | None = None
    bold: bool = False
    links: tuple[tuple[str, str], ...] = ()  # small (text, href) links after the value, e.g. one per seed run
    title: str = ""  # HTML tooltip

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
    folded: bool = False  # HTML: under a <details> element (wide matrices, long verdict lists)


@dataclass
class Links:
    ui_base: str
    in_markdown: bool
    experiment_id: str

    def run(self, run_id: str) -> str:
        return f"{self.ui_base}/#/experiments/{self.experiment_id}/runs/{run_id}"


def pct(v: float) -> str:
    return "" if pd.isna(v) else f"{v:.1f}"


def share(v: float) -> str:
    """A fraction in [0, 1] as percent."""
    return "" if pd.isna(v) else f"{100 * v:.1f}"


def num(v: float) -> str:
    if pd.isna(v):
        return ""
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def frac(v: float) -> str:
    text = f"{v:g}"
    return text if "." in text or "e" in text else f"{text}.0"
