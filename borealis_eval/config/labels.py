"""Readable names for grid values, variants and cells: defined once, used by the loader, the
sweep's tags, the dry-run and the report.

A variant is named by its axes, `<last path part>=<label>` joined by `__`
(`language_mix=ru50_en50__text_fraction=0.15__seed=1`); its cell is that name without the seed
(`cell_of`). A value's label is the grid's own `labels:` entry when given, else `axis_label`:
numbers as `0.15`, mixes as `ru50_en50`, lists as `[192]`, sections by their fields. Hashes
appear only in config hashes, never in a name.
"""

from __future__ import annotations

import json
from typing import Any

LANGUAGES = ("ru", "en")
SEED_AXIS = "seed"
PART_SEP = "__"  # between a name's axes
KEY_SEP = "="  # between an axis and its value's label
SECTION_LABEL_MAX = 48  # longer sections are named by their fields only (give `labels:` to tell them apart)


def mix_label(mix: dict[str, float]) -> str:
    """{ru: 0.5, en: 0.5} -> 'ru50_en50'; stable order (LANGUAGES first, then other codes sorted)."""
    def order(kv):
        return (LANGUAGES.index(kv[0]) if kv[0] in LANGUAGES else len(LANGUAGES), str(kv[0]))

    return "_".join(f"{k}{round(v * 100):d}" for k, v in sorted(mix.items(), key=order) if v > 0)


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "null"
    return str(v)


def _compact(v: Any) -> str:
    """[384, 192] -> '[384,192]'; {p: 0.5, db: [1, 2]} -> 'p=0.5,db=[1,2]' (nested sections in braces)."""
    if isinstance(v, list):
        return "[" + ",".join(_compact(x) for x in v) + "]"
    if isinstance(v, dict):
        return ",".join(f"{k}={'{' + _compact(x) + '}' if isinstance(x, dict) else _compact(x)}"
                        for k, x in v.items() if x is not None)
    return _scalar(v)


def axis_label(v: Any) -> str:
    """A short, readable label of an axis value: mixes as ru50_en50, lists as [192], small sections
    as field=value pairs, larger ones by their field names (`noise+reverb`), null as 'off'."""
    if isinstance(v, dict) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values()):
        return mix_label(v)
    if v is None:
        return "off"  # e.g. data.augment: [null, {...}]
    if isinstance(v, dict):
        full = _compact(v)
        if len(full) <= SECTION_LABEL_MAX:
            return full
        return "+".join(str(k) for k, x in v.items() if x is not None)
    if isinstance(v, list):
        return _compact(v)
    return _scalar(v)


def value_key(v: Any) -> str:
    """A value's identity for looking up its user label (mapping order does not matter)."""
    return json.dumps(v, sort_keys=True, default=str)


def cell_labels(cell: dict[str, Any], labels: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """{axis: label} for one grid cell; `labels` are the grid's own ({axis: {value_key: label}})."""
    labels = labels or {}
    return {d: labels.get(d, {}).get(value_key(v)) or axis_label(v) for d, v in cell.items()}


def name_of(labelled: dict[str, str]) -> str:
    """{axis: label} -> `language_mix=ru50_en50__text_fraction=0.15`; 'base' for an empty grid."""
    return PART_SEP.join(f"{d.split('.')[-1]}{KEY_SEP}{x}" for d, x in labelled.items()) or "base"


def variant_name(cell: dict[str, Any], labels: dict[str, dict[str, str]] | None = None) -> str:
    return name_of(cell_labels(cell, labels))


def cell_of(variant_name: str) -> str:
    """The cell a variant belongs to: its name without the seed (the runs of one cell differ only by seed)."""
    seed = f"{SEED_AXIS}{KEY_SEP}"
    return PART_SEP.join(n for n in variant_name.split(PART_SEP) if not n.startswith(seed)) or "base"
