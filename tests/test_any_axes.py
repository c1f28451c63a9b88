"""Acceptance (issue 25): a child ablation over two axes the demo never uses, a list-valued one
(model.adapter.hidden_sizes) and a float (train.lr), on tiny random models.

The child's grid replaces the parent's (the dry-run lists exactly its cells x seeds); with
`grid: {extends: true}` the parent's axes merge in and the dry-run says so. Names, report rows,
verdict tables and plots use readable values and are built for the child's axes; the float axis
is drawn on a numeric x-axis.
"""

from pathlib import Path

import pytest
import yaml

from _tiny import tiny_ablation

CHILD_GRID = {"model.adapter.hidden_sizes": [[16], [24]], "train.lr": [0.001, 0.003]}
NAMES = {f"hidden_sizes=[{w}]__lr={lr}__seed={s}" for w in (16, 24) for lr in ("0.001", "0.003") for s in (0, 1)}


def _files(tmp: Path, corpus: Path) -> tuple[Path, Path, Path]:
    """The parent (the demo's two axes, 3 x 2 cells, 2 seeds), a child asking another question, and
    the same child opting in to the parent's grid."""
    tiny_ablation(tmp, corpus, "parent", steps=2, grid={
        "data.language_mix": [{"ru": 1.0}, {"en": 1.0}, {"ru": 0.5, "en": 0.5}], "data.text_fraction": [0.0, 0.25]},
        overrides={"seeds": [0, 1]})
    child = tmp / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": "parent.yaml", "name": "wider_or_slower",
                                     "description": "Does a wider adapter or a higher learning rate help?",
                                     "grid": CHILD_GRID}))
    merged = tmp / "merged.yaml"
    merged.write_text(yaml.safe_dump({"extends": "parent.yaml", "name": "merged", "grid": {"extends": True, **CHILD_GRID}}))
    return tmp / "parent.yaml", child, merged


def _dry_run(path: Path, capsys) -> tuple[list[dict], str]:
    from borealis_eval.cli import main

    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#\tvariant\t"))
    cols = lines[header].split("\t")
    rows = []
    for line in lines[header + 1:]:
        cells = line.split("\t")
        if len(cells) != len(cols) or not cells[0].isdigit():
            break
        rows.append(dict(zip(cols, cells)))
    return rows, out


def test_child_grid_replaces_and_opt_in_merges(tmp_path, corpus, capsys):
    parent, child, merged = _files(tmp_path, corpus)
    rows, out = _dry_run(child, capsys)
    assert {r["variant"] for r in rows} == NAMES and len(rows) == 8  # 4 cells x 2 seeds, nothing inherited
    assert [c for c in rows[0] if c.startswith(("data.", "model.", "train."))] == list(CHILD_GRID)
    assert {r["model.adapter.hidden_sizes"] for r in rows} == {"[16]", "[24]"}
    assert f"grid axes from {child.resolve()}: model.adapter.hidden_sizes, train.lr" in out
    assert "merges" not in out and str(parent.resolve()) not in out

    rows, out = _dry_run(merged, capsys)
    assert len(rows) == 6 * 4 * 2
    assert f"grid axes from {parent.resolve()}: data.language_mix, data.text_fraction" in out
    assert f"grid axes from {merged.resolve()}: model.adapter.hidden_sizes, train.lr" in out
    assert "grid: merged.yaml merges the grid of parent.yaml (grid.extends: true)" in out


def test_child_sweep_report_and_plots_follow_its_axes(tmp_path, corpus, monkeypatch):
    from borealis_eval.cli import main
    from borealis_eval.report.cells import analyse_cells
    from borealis_eval.report.collect import load_report_data
    from borealis_eval.report.plots import wer_per_cell, x_axis

    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _, child, _ = _files(tmp_path, corpus)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    seed0 = sorted(n for n in NAMES if n.endswith("seed=0"))
    report = tmp_path / "report"
    assert main(["--tracking-uri", uri, "sweep", str(child), "--no-progress", "--only", *seed0,
                 "--out", str(report)]) == 0

    data = load_report_data("wider_or_slower", uri)
    assert data.axes() == list(CHILD_GRID)
    assert data.axis_columns() == {"model.adapter.hidden_sizes": "hidden_sizes", "train.lr": "lr"}
    assert set(data.variants["variant"]) == set(seed0)
    assert {r["model.adapter.hidden_sizes"] for r in data.variants["axes"]} == {"[16]", "[24]"}
    assert {r["train.lr"] for r in data.variants["axis_values"]} == {0.001, 0.003}

    md = (report / "report.md").read_text(encoding="utf-8")
    runs_table = md[md.index("Word error rate per run"):]
    header = next(line for line in runs_table.splitlines() if line.startswith("|"))
    assert header.startswith("| hidden_sizes | lr | seed | variant | run |")
    assert "| [16] | 0.001 | 0 | hidden_sizes=[16]__lr=0.001__seed=0 |" in runs_table
    assert "language_mix" not in md and "text_fraction=" not in md
    # the verdict tables are built per axis of this grid
    assert "Contrasts: hidden sizes" in md and "Contrasts: lr" in md

    cells = analyse_cells(data, n_boot=100)
    assert [c.label for c in cells.cells][0] == "hidden_sizes=[16] · lr=0.001"
    assert {c.axis for c in cells.contrasts} == set(CHILD_GRID)
    assert x_axis(cells) == "train.lr"  # the float is drawn along x; the list value is a category
    plot = wer_per_cell(data, cells, tmp_path / "plots")
    ax = plot.figure.axes[0]
    assert ax.get_xlabel() == "train.lr"
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert {line.get_label() for line in lines} == {"hidden_sizes=[16]", "hidden_sizes=[24]"}
    for line in lines:
        assert [float(x) for x in line.get_xdata()] == pytest.approx([0.001, 0.003])
    lo, hi = ax.get_xlim()
    assert lo < 0.001 and 0.003 < hi < 1  # a numeric axis, scaled to the values, not category positions 0, 1


def _cells(rows: list[dict]):
    from borealis_eval.config import axis_label
    from borealis_eval.report.cells import Cell, CellAnalysis

    return CellAnalysis(cells=[Cell(str(i), "", {a: axis_label(v) for a, v in r.items()}, (str(i),), ("0",), "", r)
                               for i, r in enumerate(rows)])


def test_x_axis_is_the_numeric_axis_that_forms_lines():
    from borealis_eval.report.plots import x_axis

    grid = [{"model.adapter.hidden_sizes": w, "train.lr": lr} for w in ([16], [24]) for lr in (1e-3, 3e-3)]
    assert x_axis(_cells(grid)) == "train.lr"
    # any numeric path, not only the demo's; bools and lists are categories
    assert x_axis(_cells([{"train.warmup_ratio": x, "eval.merge_lora": b} for x in (0.0, 0.1) for b in (True, False)])) \
        == "train.warmup_ratio"
    assert x_axis(_cells([{"eval.merge_lora": b} for b in (True, False)])) is None
    # a search: every trial its own cell, no two share the other axes: no lines, categories
    assert x_axis(_cells([{"train.lr": lr, "train.warmup_ratio": w} for lr, w in ((1e-3, 0.1), (2e-3, 0.2))])) is None
