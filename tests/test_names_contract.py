"""One contract for names: every metric, tag, param and artifact name the harness writes or reads
comes from borealis_eval/records.py. The scan below reads every module of the package (records.py
excepted) and fails on a string literal that is, or starts with, a name records.py owns, and on a
comparison with a run role written as a raw string. It is shown to catch planted raw names first.
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

from borealis_eval import records

PACKAGE = Path(records.__file__).parent
PROBE = "PROBE"
CONFIG_SECTIONS = ("model.", "data.", "train.", "eval.")  # dotted config paths share these with params


def _constants() -> dict[str, str]:
    return {k: v for k, v in vars(records).items() if isinstance(v, str) and k.lstrip("_").isupper()}


def _prefixes() -> set[str]:
    """Name prefixes: each helper's output before its argument (axis_tag -> 'axis.', set_metric('wer', .)
    -> 'wer/'), each '/'-name's family, each '.'-name's namespace unless it is a config section."""
    out = set()
    for name, fn in vars(records).items():
        if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != records.__name__:
            continue
        params = list(inspect.signature(fn).parameters)
        try:
            got = fn(PROBE) if len(params) == 1 else fn("wer", PROBE) if name == "set_metric" else None
        except Exception:  # takes something else than a name (flatten, axes_of, ...)
            continue
        if isinstance(got, str) and PROBE in got and got.index(PROBE) > 0:
            out.add(got[: got.index(PROBE)])
    for family in records.SET_METRICS:
        out.add(records.set_metric(family, ""))
    for value in _constants().values():
        if "/" in value:
            out.add(value.split("/")[0] + "/")
        elif "." in value and not value.startswith(CONFIG_SECTIONS):
            out.add(value.split(".")[0] + ".")
    return out


def _exact() -> set[str]:
    return {v for v in _constants().values() if "/" in v or "." in v}


ROLES = {records.PARENT, records.VARIANT, records.BASELINE}
# Literals that look like names but are not MLflow names: literal -> why
ALLOWED: dict[str, str] = {
    "data/synth/cpu-v1": "the synthetic corpus folder (a file path under data/)",
    "data/real": "the real sets' folder",
    "data/fortunes/v1": "the open-vocabulary corpus folder (borealis-eval data fortunes)",
    "data/model.bin.part1": "a CTranslate2 file name inside a package",
    "data/model.bin.part2": "a CTranslate2 file name inside a package",
    "mlflow.yaml": "the tracking config file",
}


def _mentions_role(node: ast.AST) -> bool:
    """`role`, `run.role`, `run["role"]`, `tags.get(ROLE)`: an expression that reads a run's role."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and "role" in n.id.lower():
            return True
        if isinstance(n, ast.Attribute) and "role" in n.attr.lower():
            return True
        if isinstance(n, ast.Constant) and n.value == records.ROLE:
            return True
    return False


def raw_names(source: str, exact: set[str], prefixes: set[str]) -> list[tuple[int, str]]:
    """(line, literal) for each raw name in `source`."""
    hits = []
    tree = ast.parse(source)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            s = node.value
            if s in exact or any(s.startswith(p) and len(s) >= len(p) for p in prefixes if p.strip("./")):
                if not re.search(r"\s", s):  # prose in a message is not a name
                    hits.append((node.lineno, s))
        if isinstance(node, ast.Compare):  # a role compared with a raw string
            sides = (node.left, *node.comparators)
            if any(_mentions_role(x) for x in sides if not isinstance(x, ast.Constant)):
                hits += [(node.lineno, x.value) for x in sides if isinstance(x, ast.Constant) and x.value in ROLES]
    return hits


PLANTED = '''
def log(run, role, k):
    """Docstrings may mention train/loss."""
    run.metrics({"train/loss": 1.0})
    tags = {f"axis.{k}": 1}
    if role == "baseline":
        return f"wer/{k}"
    print("the train/loss curve is shown below")
'''


def test_scan_ignores_what_is_not_a_name():
    clean = '''
from borealis_eval import records
def f(run, costs, k):
    run.metrics({records.TRAIN_LOSS: 1.0, records.set_metric("wer", k): 0.5})
    if run["role"] == records.BASELINE:
        pass
    x = costs["baseline"]  # a cost table's own key: no role is read here
    return "model.adapter.hidden_sizes: must be a list"  # a config path in a message
'''
    assert raw_names(clean, _exact(), _prefixes()) == []


def test_scan_catches_planted_raw_names():
    found = [s for _, s in raw_names(PLANTED, _exact(), _prefixes())]
    assert found == ["train/loss", "axis.", "baseline", "wer/"] or sorted(found) == sorted(
        ["train/loss", "axis.", "baseline", "wer/"]), found


def test_prefixes_cover_the_documented_families():
    p = _prefixes()
    for want in ("axis.", "axis_label.", "normalizer/", "wer/", "dev_wer/", "data/", "train/", "augment/",
                 "predictions/", "plan/", "sweep/", "search/", "borealis.", "mlflow."):
        assert want in p, want


def test_no_raw_name_outside_records():
    exact, prefixes = _exact(), _prefixes()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "records.py":
            continue
        rel = str(path.relative_to(PACKAGE.parent))
        for line, s in raw_names(path.read_text(encoding="utf-8"), exact, prefixes):
            if s not in ALLOWED:
                offenders.append(f"{rel}:{line}: {s!r}")
    assert not offenders, "raw names outside records.py (use its constants/helpers):\n" + "\n".join(offenders)


@pytest.mark.parametrize("name", sorted({v for k, v in _constants().items() if not k.startswith("_")}))
def test_every_name_is_documented(name):
    """records.py's docstring is the contract a reader sees: it must name every constant's value."""
    assert f"``{name}" in records.__doc__ or name in records.__doc__, name
