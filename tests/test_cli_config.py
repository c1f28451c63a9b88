"""`borealis-eval sweep --dry-run` and one-line config errors (exit 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rich.console import Console

from borealis_eval import cli
from borealis_eval.config import load_ablation

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "ablations" / "text_ratio.yaml"


@pytest.fixture
def wide_console(monkeypatch):
    """A wide console so table cells are not wrapped (rich uses 80 columns when not a terminal)."""
    monkeypatch.setattr(cli, "console", Console(width=400, force_terminal=False, color_system=None))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def bad_file(tmp_path: Path, mutate) -> Path:
    d = yaml.safe_load(FULL.read_text())
    mutate(d)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
    return p


def test_dry_run_lists_12_variants(wide_console, capsys):
    assert cli.main(["sweep", str(FULL), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    _, variants = load_ablation(FULL)
    rows = [line for line in out.splitlines() if "language_mix=" in line]
    assert len(rows) == 12
    for v in variants:  # stdout is not a terminal here: one tab-separated row per variant
        assert sum(v.name in r.split("\t") for r in rows) == 1, v.name
        assert v.config_hash in out
    assert "12 variants" in err and "dry run" in err  # the title goes to stderr in a pipe


@pytest.mark.parametrize("mutate,field,why", [
    (lambda d: d["base"]["train"].__setitem__("lrr", 1), "base.train.lrr", "unknown field"),
    (lambda d: d["base"]["train"].__setitem__("steps", "many"), "base.train.steps", "integer"),
    (lambda d: d["grid"].__setitem__("data.text_fraction", [0.0, 1.0]), "base.data.text_fraction", "[0, 1)"),
    (lambda d: d["grid"].__setitem__("data.language_mix", [{"ru": 0.5, "en": 0.4}]), "base.data.language_mix",
     "sum to 1"),
    (lambda d: d["grid"].__setitem__("data.text_fraction", []), "grid.data.text_fraction", "empty"),
    (lambda d: d["grid"].__setitem__("data.foo", [1]), "grid.data.foo", "unknown field"),
])
def test_malformed_ablation_exits_2_with_one_line(tmp_path, capsys, wide_console, mutate, field, why):
    p = bad_file(tmp_path, mutate)
    assert cli.main(["sweep", str(p), "--dry-run"]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and str(p) in err and field in err and why in err
    assert "Traceback" not in cap.err and "language_mix=" not in cap.out


def test_malformed_yaml_exits_2(tmp_path, capsys, wide_console):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nbase:\n  a: [1, 2\n  b: 3\n")
    assert cli.main(["sweep", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {p}:4: malformed YAML")


def test_console_script_bad_file_has_no_traceback(tmp_path):
    """The installed entry point as a user runs it (one subprocess: importing the stack takes ~10 s)."""
    exe = Path(sys.executable).with_name("borealis-eval")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "borealis_eval.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    bad = bad_file(tmp_path, lambda d: d["base"]["train"].__setitem__("lrr", 1))
    res = subprocess.run([*cmd, "sweep", str(bad), "--dry-run"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stdout == ""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0] and "base.train.lrr: unknown field" in lines[0]


def test_list_title_never_runs_into_a_row():
    """`models list | cat` with stdout and stderr in one pipe: the title (stderr) is a line of its own."""
    from borealis_eval.models.bundled import BUNDLED

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    res = subprocess.run([sys.executable, "-m", "borealis_eval.cli", "models", "list"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout
    lines = res.stdout.splitlines()
    assert lines.count("bundled models (no hub needed)") == 1, res.stdout
    rows = [line for line in lines if line.startswith("bundled:")]
    assert len(rows) == len(BUNDLED) and all(r.endswith(s.description) for r, s in zip(rows, BUNDLED.values()))
