"""Dotted-path overrides and grid cells: one way to set `a.b.c` in a config, for every caller.

The grid, searches and the CLI's `--set a.b=c` all go through `apply_overrides`, which refuses
a path that names no field, or that runs through a value that is not a mapping (e.g. setting
`data.augment.noise.p` where `data.augment` is null), instead of silently dropping the value.
"""

from __future__ import annotations

import copy
import itertools
import json
import types
import typing
from typing import Any, Union

from pydantic import BaseModel

from borealis_eval.config.labels import axis_label
from borealis_eval.config.schema import Ablation, ExperimentConfig, Variant
from borealis_eval.errors import ConfigError


class UnknownPath(ConfigError):
    """A dotted path that names no field of the experiment config."""

    def __init__(self, dotted: str, problem: str):
        self.dotted, self.problem = dotted, problem
        super().__init__(f"{dotted}: {problem}")


class BlockedPath(ConfigError):
    """A dotted path that runs through a value that is not a mapping (e.g. a section set to null)."""

    def __init__(self, dotted: str, blocked: list[str], value: Any):
        self.dotted, self.blocked, self.value = dotted, blocked, value
        shown = json.dumps(value, ensure_ascii=False, default=str)
        super().__init__(f"{'.'.join(blocked)}: must be a mapping to set '{dotted}' (got {shown[:80]}); "
                         f"give the whole section instead, e.g. {blocked[-1]}: {{...}}")


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` (a raw, unvalidated experiment mapping) with each dotted path set.

    Missing intermediate mappings are created; a path naming no field raises `UnknownPath`,
    one running through a non-mapping value raises `BlockedPath`. The caller validates.
    """
    out = copy.deepcopy(config)
    for dotted, value in overrides.items():
        problem = check_path(dotted)
        if problem:
            raise UnknownPath(dotted, problem)
        parts = dotted.split(".")
        d = out
        for i, p in enumerate(parts[:-1]):
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise BlockedPath(dotted, parts[: i + 1], d)
        d[parts[-1]] = copy.deepcopy(value)
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """`--set a.b=c` -> ('a.b', c); the value is read as YAML (numbers, lists, mappings, null)."""
    import yaml

    dotted, sep, raw = text.partition("=")
    if not sep or not dotted.strip():
        raise ConfigError(f"--set {text!r}: expected PATH=VALUE, e.g. --set train.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string: a shell user means the number
        try:
            value = float(value)
        except ValueError:
            pass
    return dotted.strip(), value


def cells(grid: dict[str, list[Any]], slowest: str | None = None) -> list[dict[str, Any]]:
    """Every combination of the grid's axis values, the last axis varying fastest; the axis named
    `slowest` varies slowest (seed by seed over the whole grid), keeping its place in each cell."""
    names = list(grid)
    order = ([slowest] if slowest in grid else []) + [n for n in names if n != slowest]
    combos = itertools.product(*[grid[n] for n in order])
    return [{n: dict(zip(order, combo))[n] for n in names} for combo in combos]


def _section(ann: Any) -> type[BaseModel] | type[dict] | None:
    """The section model a field holds (Optional unwrapped), `dict` for free-form mappings, else None."""
    args = typing.get_args(ann) if typing.get_origin(ann) in (Union, types.UnionType) else (ann,)
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(models) == 1:
        return models[0]
    if any(a is dict or typing.get_origin(a) is dict for a in args):
        return dict
    return None


def check_path(dotted: str) -> str | None:
    """What is wrong with `dotted` as a field path of ExperimentConfig, or None."""
    model: Any = ExperimentConfig
    for part in dotted.split("."):
        if model is dict:  # free-form mapping (e.g. model.encoder.config): validated later
            return None
        if model is None:
            return f"'{part}' is below a field that is not a section"
        if part not in model.model_fields:
            return f"unknown field '{part}' (allowed here: {', '.join(sorted(model.model_fields))})"
        model = _section(model.model_fields[part].annotation)
    return None


def variants_table(variants: list[Variant]) -> list[dict[str, Any]]:
    """Rows for `sweep --dry-run`: one per variant, axes as columns."""
    rows = []
    for i, v in enumerate(variants):
        row: dict[str, Any] = {"#": i, "variant": v.name}
        row.update({k: v.labels.get(k) or axis_label(x) for k, x in v.axes.items()})
        row["steps"] = v.config.train_steps  # text_mode add grows them
        row["config_hash"] = v.config_hash
        rows.append(row)
    return rows


def grid_origin(abl: Ablation) -> list[str]:
    """Lines saying which file gave each grid axis (and how the grid was inherited), for the
    dry-run and the plan."""
    by_file: dict[str, list[str]] = {}
    for axis, source in abl.grid_sources.items():
        by_file.setdefault(source, []).append(axis)
    lines = [f"grid axes from {source}: {', '.join(axes)}" for source, axes in by_file.items()]
    return lines + list(abl.grid_notes) if lines or abl.grid_notes else ["grid: none (one cell)"]
