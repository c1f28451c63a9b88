"""Reading ablation files: YAML with `extends`, line numbers, precise errors, grid expansion.

Every error names the file, the line where known, the dotted field path, the bad value and
what is allowed, in one line (`ConfigError`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from borealis_eval.config.grid import BlockedPath, UnknownPath, apply_overrides, cells, check_path
from borealis_eval.config.labels import cell_labels, name_of, value_key
from borealis_eval.config.schema import Ablation, EvalScope, ExperimentConfig, GridAxis, Variant
from borealis_eval.errors import ConfigError


def _fmt_value(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


class _LineMap:
    """Dotted path -> line number, read from the YAML node tree of each file in the chain."""

    def __init__(self):
        self.files: list[tuple[Path, yaml.Node | None]] = []

    def add(self, path: Path, text: str):
        try:
            node = yaml.compose(text)
        except (yaml.YAMLError, RecursionError):
            node = None
        self.files.append((path, node))

    def find(self, dotted: list[str]) -> tuple[Path, int | None]:
        for path, node in self.files:  # child first, then the files it extends
            line = _node_line(node, dotted)
            if line is not None:
                return path, line
        return self.files[0][0], None


def _node_line(node, parts: list[str]) -> int | None:
    best = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == part), None)
            if hit is None:
                return best
            best = hit[0].start_mark.line + 1
            node = hit[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            best = node.start_mark.line + 1
        else:
            return best
    return best


def _where(lines: _LineMap, dotted: list[str]) -> str:
    path, line = lines.find(dotted)
    return f"{path}:{line}" if line else str(path)


GRID_EXTENDS = "extends"  # `grid: {extends: true, ...}`: merge the parent's grid axes into this file's


def _read_yaml(path: Path, chain: tuple[Path, ...], lines: _LineMap) -> tuple[dict[str, Any], dict[str, Path], list[str]]:
    """The file's mapping with its `extends` chain merged, which file each grid axis came from,
    and notes on how the grid was inherited."""
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{chain[0]}: 'extends' cycle: {cycle}")
    where = f" (extended by {chain[-1]})" if chain else ""
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: file not found{where}")
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # name too long, NUL byte, unreadable, not UTF-8
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: cannot read file{where}: {e}") from None
    lines.add(path, text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{loc}: malformed YAML: {problem}") from None
    except ValueError as e:  # a scalar YAML resolves but cannot build, e.g. the date 2020-13-01
        raise ConfigError(f"{path}: malformed YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping with name/description/base/grid, got {type(data).__name__}")
    parent = data.pop("extends", None)
    grid = data.get("grid")
    opt_in = isinstance(grid, dict) and GRID_EXTENDS in grid
    if opt_in:
        grid = dict(grid)
        flag = grid.pop(GRID_EXTENDS)
        if not isinstance(flag, bool):
            raise ConfigError(f"{_where(lines, ['grid', GRID_EXTENDS])}: grid.{GRID_EXTENDS}: must be true (merge the "
                              f"parent's grid axes) or false, got {_fmt_value(flag)}")
        if flag and parent is None:
            raise ConfigError(f"{_where(lines, ['grid', GRID_EXTENDS])}: grid.{GRID_EXTENDS}: true needs a parent "
                              "file (a top-level 'extends:')")
        data["grid"], opt_in = grid, flag
    if parent is None:
        return data, {axis: path for axis in (grid or {})} if isinstance(grid, dict) else {}, []
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{_where(lines, ['extends'])}: extends: must be a relative file path, got {_fmt_value(parent)}")
    try:
        parent_path = (path.parent / parent).resolve()
    except (OSError, ValueError) as e:
        raise ConfigError(f"{_where(lines, ['extends'])}: extends: bad file path {_fmt_value(parent)}: {e}") from None
    base, sources, notes = _read_yaml(parent_path, (*chain, path), lines)
    # the grid is not merged like the other sections: a child's grid replaces the parent's (so
    # inheriting cannot silently multiply a study), unless the child opts in with `extends: true`
    child_grid = data.pop("grid", None)
    merged = deep_merge(base, data)
    if child_grid is None:
        return merged, sources, notes
    if not isinstance(child_grid, dict):
        merged["grid"] = child_grid  # validation names the problem
        return merged, {}, notes
    if opt_in and isinstance(base.get("grid"), dict):
        merged["grid"] = {**base["grid"], **child_grid}
        kept = [a for a in base["grid"] if a not in child_grid]
        notes = [*notes, f"grid: {path.name} merges the grid of {parent_path.name} (grid.{GRID_EXTENDS}: true)"
                         + (f"; inherited axes: {', '.join(kept)}" if kept else "")]
        return merged, {**{a: sources.get(a, parent_path) for a in kept}, **{a: path for a in child_grid}}, notes
    merged["grid"] = child_grid
    return merged, {a: path for a in child_grid}, notes


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge recursively; anything else (lists included) in `over` replaces.

    A mapping whose `kind` differs from the inherited one (a data source of another type)
    replaces it whole: merging fields of two different source types would be meaningless.
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and v.get("kind", out[k].get("kind")) == out[k].get("kind"):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _validation_error(err: ValidationError, lines: _LineMap, prefix: list[str], context: str = "") -> ConfigError:
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-union")))]
    # pydantic puts the union tag into the location (e.g. source.synth.split): drop tag names
    loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "source" and p in _SOURCE_TAGS)
           and not (i > 0 and loc[i - 1] == "seeds" and p in ("list", "adaptive"))]
    dotted = [*prefix, *loc]
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    elif e["type"] == "missing":
        msg = "required field is missing"
    shown = "" if e["type"] == "missing" else f" (got {_fmt_value(e.get('input'))})"
    path_s = ".".join(dotted) or "(top level)"
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return ConfigError(f"{_where(lines, dotted)}: {path_s}: {msg}{shown}{context}{more}")


_SOURCE_TAGS = {"manifest", "synth", "hf", "hf_disk", "parquet", "audiofolder", "hf_text", "json"}


def _get_dotted(d: dict[str, Any], parts: list[str]) -> Any:
    for p in parts:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def load_ablation(path: str | Path, overrides: dict[str, Any] | None = None, *,
                  seeds_per_cell: int | None = None) -> tuple[Ablation, list[Variant]]:
    """Load, merge `extends`, apply `overrides` (dotted path -> value, the CLI's --set) to `base`,
    validate, and expand the grid into variants. An adaptive seed design (`seeds: {initial, max,
    target_pts}`) expands to its first stage, seeds 0..initial-1, unless `seeds_per_cell` asks for
    more (the sweep's second stage: 0..n-1, n at most `max`)."""
    path = Path(path).resolve()
    lines = _LineMap()
    raw, sources, notes = _read_yaml(path, (), lines)
    try:
        abl = Ablation.model_validate(raw)
    except ValidationError as err:
        raise _validation_error(err, lines, []) from None
    values, labels = {}, {}
    for dotted, axis in abl.grid.items():
        where = _where(lines, ['grid', dotted])
        if isinstance(axis, dict):
            try:
                axis = GridAxis.model_validate(axis)
            except ValidationError as err:
                raise _validation_error(err, lines, ["grid", dotted]) from None
            if axis.labels:
                labels[dotted] = {value_key(v): x for v, x in zip(axis.values, axis.labels)}
            axis = axis.values
        if not isinstance(axis, list) or not axis:
            raise ConfigError(f"{where}: grid.{dotted}: grid axis is empty; give a non-empty list of values "
                              "(or {values: [...], labels: [...]})")
        values[dotted] = axis
    abl.grid = values
    abl._grid_labels = labels
    abl._grid_sources = {a: str(sources.get(a, path)) for a in values}
    abl._grid_notes = notes
    if overrides:
        try:
            abl.base = apply_overrides(abl.base, overrides)
        except (UnknownPath, BlockedPath) as e:
            raise ConfigError(f"{path}: --set {e}") from None

    if seeds_per_cell is not None and (abl.adaptive is None or not 1 <= seeds_per_cell <= abl.adaptive.max):
        raise ValueError(f"seeds_per_cell={seeds_per_cell}: only for an adaptive seed design, 1..its max")
    seeds = abl.seed_values(seeds_per_cell)
    grid = {**abl.grid, "seed": seeds} if seeds else dict(abl.grid)
    for dotted in abl.grid:
        problem = check_path(dotted)
        if problem:
            raise ConfigError(f"{_where(lines, ['grid', dotted])}: grid.{dotted}: {problem}")

    variants: list[Variant] = []
    seen: dict[str, str] = {}
    for cell in cells(grid, slowest="seed"):
        ctx = f" in grid cell {json.dumps(cell, ensure_ascii=False, default=str)}" if cell else ""
        try:
            merged = apply_overrides(abl.base, cell)
        except BlockedPath as e:
            at = ["base", *e.blocked]
            raise ConfigError(f"{_where(lines, at)}: {'.'.join(at)}: must be a mapping for grid axis '{e.dotted}' "
                              f"(got {_fmt_value(_get_dotted(abl.base, e.blocked))})") from None
        try:
            cfg = ExperimentConfig.model_validate(merged)
        except ValidationError as err:
            raise _validation_error(err, lines, ["base"], ctx) from None
        named = cell_labels(cell, abl.grid_labels)
        name = name_of(named)
        v = Variant(name=name, axes=cell, config=cfg, labels=named)
        if v.config_hash in seen:
            raise ConfigError(f"{_where(lines, ['grid'])}: grid: cells {seen[v.config_hash]} and {name} give the same config")
        if name in seen.values():  # e.g. {ru: 1.0} and {ru: 1.0, en: 0.0}: run names must be unique
            raise ConfigError(f"{_where(lines, ['grid'])}: grid: two cells are both named {name}; make their values "
                              "distinct or name them: {{values: [...], labels: [...]}}")
        seen[v.config_hash] = name
        variants.append(v)
    return abl, variants


def load_eval_scope(path: str | Path, overrides: dict[str, Any] | None = None) -> EvalScope:
    """Only what scoring needs of an ablation file: `base.eval` (and `base.data.max_bad_share`),
    with `extends` and `overrides` applied. The grid is not expanded and the training sections are
    not validated, so an error names an eval field, never a training cell."""
    path = Path(path).resolve()
    lines = _LineMap()
    raw, _, _ = _read_yaml(path, (), lines)
    base = raw.get("base")
    if not isinstance(base, dict):
        raise ConfigError(f"{_where(lines, ['base'])}: base: must be a mapping holding the eval section "
                          f"(got {_fmt_value(base)})")
    if overrides:
        try:
            base = apply_overrides(base, overrides)
        except (UnknownPath, BlockedPath) as e:
            raise ConfigError(f"{path}: --set {e}") from None
    if not isinstance(base.get("eval"), dict):
        raise ConfigError(f"{_where(lines, ['base', 'eval'])}: base.eval: required section is missing or not a mapping")
    data = base.get("data") if isinstance(base.get("data"), dict) else {}
    scope = {"eval": base["eval"]}
    if "max_bad_share" in data:
        scope["data"] = {"max_bad_share": data["max_bad_share"]}
    try:
        return EvalScope.model_validate(scope)
    except ValidationError as err:
        raise _validation_error(err, lines, ["base"]) from None
