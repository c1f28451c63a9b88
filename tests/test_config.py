"""Ablation config: loading, `extends`, grid expansion, and one-line errors naming file, line and field."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from borealis_eval.config import (
    ConfigError,
    HFSource,
    SynthSource,
    deep_merge,
    load_ablation,
    variants_table,
)

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "ablations" / "text_ratio.yaml"
CPU = ROOT / "ablations" / "cpu" / "text_ratio.yaml"


def minimal() -> dict:
    """A small valid ablation (no network is touched by loading it)."""
    synth = {"kind": "synth", "corpus": "data/synth/t", "split": "train"}
    return {
        "name": "tiny",
        "description": "does the text fraction matter?",
        "base": {
            "seed": 0,
            "model": {"encoder": {"ref": "bundled:whisper-base"}, "llm": {"ref": "hf:Qwen/Qwen3-0.6B"}},
            "data": {
                "train_sets": [{"name": "train", "source": synth}],
                "text_pool": {"source": {**synth, "split": "text_train"}},
                "language_mix": {"ru": 0.5, "en": 0.5},
                "text_fraction": 0.0,
            },
            "train": {"steps": 10, "lr": 0.001},
            "eval": {"sets": [{"name": "test_ru", "source": {**synth, "split": "test_ru"}}]},
        },
        "grid": {"data.text_fraction": [0.0, 0.1]},
    }


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, l in enumerate(path.read_text().splitlines(), 1) if needle in l)


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as ei:
        load_ablation(path)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg, f"error is not one line: {msg!r}"
    assert str(path) in msg, f"error does not name the file: {msg}"
    return msg


# ------------------------------------------------------------------ the shipped ablation files
def test_full_ablation_expands_to_12_distinct_variants():
    abl, variants = load_ablation(FULL)
    assert abl.name == "text_ratio"
    assert len(variants) == 12
    assert len({v.config_hash for v in variants}) == 12
    names = [v.name for v in variants]
    assert len(set(names)) == 12
    assert "language_mix=ru50_en50__text_fraction=0.15" in names
    assert "language_mix=ru100__text_fraction=0" in names
    assert "language_mix=en100__text_fraction=0.25" in names
    v = variants[names.index("language_mix=ru50_en50__text_fraction=0.15")]
    assert v.config.data.language_mix == {"ru": 0.5, "en": 0.5}
    assert v.config.data.text_fraction == pytest.approx(0.15)
    assert v.axes == {"data.language_mix": {"ru": 0.5, "en": 0.5}, "data.text_fraction": 0.15}
    assert v.language_mix_label == "ru50_en50"
    # every cell of the 3 x 4 grid is present exactly once
    cells = {(v.language_mix_label, v.config.data.text_fraction) for v in variants}
    assert cells == {(m, f) for m in ("ru100", "en100", "ru50_en50") for f in (0.0, 0.10, 0.15, 0.25)}


def test_cpu_ablation_extends_full_one():
    _, full = load_ablation(FULL)
    abl, variants = load_ablation(CPU)
    assert abl.name == "text_ratio" and len(variants) == 18  # its own, smaller grid: 9 cells x 2 seeds
    assert len({v.cell for v in variants}) == 9 and {v.config.seed for v in variants} == {0, 1}
    assert abl.description.startswith("Which share")
    cfg = variants[0].config
    # lists replace: one synthetic train set instead of the three hub sets
    assert [s.name for s in cfg.data.train_sets] == ["synth_train"]
    assert isinstance(cfg.data.train_sets[0].source, SynthSource)
    assert [s.name for s in cfg.eval.sets] == ["test_ru", "test_en", "webinar", "real_ru_read", "real_ru_ivr",
                                                "real_en_ivr", "real_longform"]
    assert cfg.model.adapter.hidden_sizes == [384]
    # mappings merge: overridden fields change, the others are inherited
    assert cfg.model.encoder.ref == "bundled:whisper-base" and cfg.model.encoder.short_input is True
    assert cfg.model.adapter.activation == "gelu"
    assert cfg.model.llm.ref is None and cfg.model.llm.config["hidden_size"] == 192
    assert cfg.model.llm.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.train.steps == 550 and cfg.train.precision == "auto"
    assert cfg.eval.max_new_tokens == 128 and cfg.eval.baseline.ref == "bundled:whisper-base"
    # a source whose kind changes (hf_text -> synth) is replaced whole, no hf_text fields left over
    src = cfg.data.text_pool.source
    assert isinstance(src, SynthSource) and src.split == "text_train"
    assert not hasattr(src, "instruction_column")
    # its cells are a subset of the full study's, with different configs
    full_cells = {v.cell: v.config_hash for v in full}
    assert all(v.cell in full_cells and full_cells[v.cell] != v.config_hash for v in variants)
    assert {v.config_hash for v in variants}.isdisjoint({v.config_hash for v in full})


def test_deep_merge_rules():
    base = {"a": {"x": 1, "y": [1, 2]}, "src": {"kind": "hf", "id": "d", "split": "test"}, "keep": 1}
    over = {"a": {"y": [3]}, "src": {"kind": "synth", "split": "train"}}
    out = deep_merge(base, over)
    assert out == {"a": {"x": 1, "y": [3]}, "src": {"kind": "synth", "split": "train"}, "keep": 1}
    # same kind: fields merge
    assert deep_merge(base, {"src": {"split": "dev"}})["src"] == {"kind": "hf", "id": "d", "split": "dev"}
    assert base["a"]["y"] == [1, 2]  # inputs are not mutated


def test_variants_table_rows():
    _, variants = load_ablation(FULL)
    rows = variants_table(variants)
    assert len(rows) == 12
    assert [r["#"] for r in rows] == list(range(12))
    for r, v in zip(rows, variants):
        assert r["variant"] == v.name
        assert r["config_hash"] == v.config_hash and re.fullmatch(r"[0-9a-f]{12}", r["config_hash"])
        assert r["steps"] == 12000
        assert set(r) == {"#", "variant", "data.language_mix", "data.text_fraction", "steps", "config_hash"}
    assert {r["data.language_mix"] for r in rows} == {"ru100", "en100", "ru50_en50"}
    assert {r["data.text_fraction"] for r in rows} == {"0", "0.1", "0.15", "0.25"}


# ------------------------------------------------------------------ grid and extends
def test_seed_axis_is_a_top_level_field(tmp_path):
    d = minimal()
    d["grid"] = {"seed": [0, 1, 2], "data.text_fraction": [0.0, 0.1]}
    _, variants = load_ablation(write(tmp_path / "a.yaml", d))
    assert len(variants) == 6
    assert sorted({v.config.seed for v in variants}) == [0, 1, 2]
    assert "seed=1__text_fraction=0.1" in [v.name for v in variants]
    assert len({v.config_hash for v in variants}) == 6


def test_no_grid_gives_one_base_variant(tmp_path):
    d = minimal()
    del d["grid"]
    _, variants = load_ablation(write(tmp_path / "a.yaml", d))
    assert [v.name for v in variants] == ["base"] and variants[0].axes == {}


def test_nested_axis_and_optional_section_axis(tmp_path):
    d = minimal()
    d["grid"] = {"model.llm.lora.r": [4, 8], "data.text_pool.max_samples": [10]}
    _, variants = load_ablation(write(tmp_path / "a.yaml", d))
    assert [v.config.model.llm.lora.r for v in variants] == [4, 8]
    assert all(v.config.data.text_pool.max_samples == 10 for v in variants)
    assert all(v.config.model.llm.lora.alpha == 32 for v in variants)  # siblings kept


def test_extends_chain_of_three_files(tmp_path):
    grand = write(tmp_path / "grand.yaml", minimal())
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "parent.yaml", {
        "extends": "../grand.yaml", "name": "parent",
        "base": {"train": {"steps": 20}, "data": {"train_sets": [
            {"name": "hub", "source": {"kind": "hf", "id": "google/fleurs", "config": "ru_ru"}}]}},
    })
    child = write(tmp_path / "sub" / "child.yaml", {
        "extends": "parent.yaml", "name": "child",
        "base": {"train": {"batch_size": 2}},
        "grid": {"extends": True, "seed": [3, 4]},  # opt in: the grand-parent's axes merge with this one
    })
    abl, variants = load_ablation(child)
    assert abl.name == "child" and abl.description == minimal()["description"]
    assert abl.grid == {"data.text_fraction": [0.0, 0.1], "seed": [3, 4]}
    assert abl.grid_sources == {"data.text_fraction": str(grand.resolve()), "seed": str(child.resolve())}
    assert any("merges the grid of parent.yaml" in n for n in abl.grid_notes)
    assert [v.name for v in variants] == ["text_fraction=0__seed=3", "text_fraction=0.1__seed=3",  # seed by seed
                                          "text_fraction=0__seed=4", "text_fraction=0.1__seed=4"]
    cfg = variants[0].config
    assert cfg.train.steps == 20 and cfg.train.batch_size == 2 and cfg.train.lr == pytest.approx(0.001)
    assert isinstance(cfg.data.train_sets[0].source, HFSource)
    assert grand.is_file()


def test_child_grid_replaces_the_parents(tmp_path):
    """Inheriting cannot multiply a study: the child's grid is the whole grid."""
    parent = write(tmp_path / "p.yaml", minimal())
    child = write(tmp_path / "c.yaml", {"extends": "p.yaml", "grid": {"seed": [0, 1]}})
    abl, variants = load_ablation(child)
    assert abl.grid == {"seed": [0, 1]} and len(variants) == 2
    assert abl.grid_sources == {"seed": str(child.resolve())} and abl.grid_notes == []
    # no grid: the parent's grid is kept, and said to come from the parent
    bare = write(tmp_path / "bare.yaml", {"extends": "p.yaml", "name": "bare"})
    abl, variants = load_ablation(bare)
    assert set(abl.grid) == {"data.text_fraction"} and len(variants) == 2
    assert abl.grid_sources == {"data.text_fraction": str(parent.resolve())}


def test_grid_axes_merge_on_explicit_opt_in(tmp_path):
    parent = write(tmp_path / "p.yaml", minimal())
    child = write(tmp_path / "c.yaml", {"extends": "p.yaml", "grid": {"extends": True, "seed": [0, 1]}})
    abl, variants = load_ablation(child)
    assert set(abl.grid) == {"data.text_fraction", "seed"} and len(variants) == 4
    assert abl.grid_sources == {"data.text_fraction": str(parent.resolve()), "seed": str(child.resolve())}
    assert abl.grid_notes == ["grid: c.yaml merges the grid of p.yaml (grid.extends: true); inherited axes: "
                              "data.text_fraction"]
    # a same-named axis in the child wins; extends: false is the default (replace)
    over = write(tmp_path / "o.yaml", {"extends": "p.yaml", "grid": {"extends": True, "data.text_fraction": [0.3]}})
    assert load_ablation(over)[0].grid == {"data.text_fraction": [0.3]}
    off = write(tmp_path / "off.yaml", {"extends": "p.yaml", "grid": {"extends": False, "seed": [0]}})
    assert load_ablation(off)[0].grid == {"seed": [0]}


@pytest.mark.parametrize("grid, message", [
    ({"extends": "yes", "seed": [0]}, "grid.extends: must be true"),
])
def test_grid_extends_flag_errors(tmp_path, grid, message):
    write(tmp_path / "p.yaml", minimal())
    child = write(tmp_path / "c.yaml", {"extends": "p.yaml", "grid": grid})
    assert message in error_of(child)


def test_grid_extends_without_parent(tmp_path):
    p = write(tmp_path / "a.yaml", {**minimal(), "grid": {"extends": True, "seed": [0]}})
    assert "needs a parent file" in error_of(p)


def test_grid_labels_name_list_values(tmp_path):
    """List values get readable labels ([192]); a `labels:` list names them; no hashes in names."""
    plain = write(tmp_path / "plain.yaml", {**minimal(), "grid": {
        "model.adapter.hidden_sizes": [[192], [384, 192]], "train.lr": [1e-3, 3e-3]}})
    _, variants = load_ablation(plain)
    assert [v.name for v in variants] == ["hidden_sizes=[192]__lr=0.001", "hidden_sizes=[192]__lr=0.003",
                                          "hidden_sizes=[384,192]__lr=0.001", "hidden_sizes=[384,192]__lr=0.003"]
    assert variants[0].labels == {"model.adapter.hidden_sizes": "[192]", "train.lr": "0.001"}
    named = write(tmp_path / "named.yaml", {**minimal(), "grid": {
        "model.adapter.hidden_sizes": {"values": [[192], [768]], "labels": ["narrow", "wide"]}}})
    abl, variants = load_ablation(named)
    assert abl.grid == {"model.adapter.hidden_sizes": [[192], [768]]}
    assert [v.name for v in variants] == ["hidden_sizes=narrow", "hidden_sizes=wide"]
    assert [v.config.model.adapter.hidden_sizes for v in variants] == [[192], [768]]


@pytest.mark.parametrize("axis, message", [
    ({"values": [[1], [2]], "labels": ["a"]}, "one label per value"),
    ({"values": [[1], [2]], "labels": ["a", "a"]}, "labels must be distinct"),
    ({"values": [[1], [2]], "labels": ["a__b", "c"]}, "without '__'"),
    ({"values": [], "labels": []}, "grid.model.adapter.hidden_sizes.values"),
    ({"values": [[1]], "names": ["a"]}, "grid.model.adapter.hidden_sizes.names: unknown field"),
])
def test_grid_labels_errors(tmp_path, axis, message):
    p = write(tmp_path / "a.yaml", {**minimal(), "grid": {"model.adapter.hidden_sizes": axis}})
    assert message in error_of(p)


def test_extends_cycle_is_detected(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write(a, {**minimal(), "extends": "b.yaml"})
    write(b, {"extends": "a.yaml", "name": "b"})
    msg = error_of(a)
    assert "cycle" in msg and "a.yaml -> " in msg and "b.yaml" in msg


def test_extends_self_is_a_cycle(tmp_path):
    p = write(tmp_path / "a.yaml", {**minimal(), "extends": "a.yaml"})
    assert "cycle" in error_of(p)


def test_extends_missing_file(tmp_path):
    p = write(tmp_path / "a.yaml", {**minimal(), "extends": "nope.yaml"})
    msg = error_of(p)
    assert "nope.yaml" in msg and "not found" in msg


@pytest.mark.parametrize("bad", [3, "", "a\0b", "x" * 400])
def test_extends_bad_value(tmp_path, bad):
    p = write(tmp_path / "a.yaml", {**minimal(), "extends": bad})
    assert "extends" in error_of(p) or "cannot read" in error_of(p)


# ------------------------------------------------------------------ validation errors
def test_unknown_key(tmp_path):
    d = minimal()
    d["base"]["train"]["lrr"] = 0.1
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'lrr:')}:" in msg
    assert "base.train.lrr" in msg and "unknown field" in msg


def test_unknown_top_level_key(tmp_path):
    p = write(tmp_path / "a.yaml", {**minimal(), "grdi": {}})
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'grdi:')}: grdi: unknown field" in msg


def test_unknown_key_in_parent_file_names_the_parent(tmp_path):
    d = minimal()
    d["base"]["train"]["lrr"] = 0.1
    parent = write(tmp_path / "parent.yaml", d)
    child = write(tmp_path / "child.yaml", {"extends": "parent.yaml", "name": "child"})
    with pytest.raises(ConfigError) as ei:
        load_ablation(child)
    assert f"{parent}:{line_of(parent, 'lrr:')}: base.train.lrr: unknown field" in str(ei.value)


def test_wrong_type(tmp_path):
    d = minimal()
    d["base"]["train"]["steps"] = "many"
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'steps:')}:" in msg
    assert "base.train.steps" in msg and "integer" in msg and "'many'" in msg


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, float("nan")])
def test_text_fraction_out_of_range(tmp_path, value):
    d = minimal()
    d["base"]["data"]["text_fraction"] = value
    del d["grid"]
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'text_fraction:')}:" in msg
    assert "base.data.text_fraction" in msg and "[0, 1)" in msg


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_text_fraction_out_of_range_via_grid(tmp_path, value):
    d = minimal()
    d["grid"] = {"data.text_fraction": [0.1, value]}
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert "base.data.text_fraction" in msg and "[0, 1)" in msg
    assert "grid cell" in msg and str(value) in msg


def test_text_fraction_just_below_one_is_allowed(tmp_path):
    d = minimal()
    d["grid"] = {"data.text_fraction": [0.0, 0.999]}
    _, variants = load_ablation(write(tmp_path / "a.yaml", d))
    assert [v.config.data.text_fraction for v in variants] == [0.0, 0.999]


@pytest.mark.parametrize("mix", [{"ru": 0.5, "en": 0.4}, {"ru": 0.7, "en": 0.7}, {"ru": 0.0}])
def test_language_mix_must_sum_to_one(tmp_path, mix):
    d = minimal()
    d["base"]["data"]["language_mix"] = mix
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'language_mix:')}:" in msg
    assert "base.data.language_mix" in msg and "sum to 1" in msg


@pytest.mark.parametrize("mix", [{"ru": 1.5, "en": -0.5}, {"ru": float("nan")}, {"ru": float("inf")}, {}])
def test_language_mix_bad_weights(tmp_path, mix):
    d = minimal()
    d["base"]["data"]["language_mix"] = mix
    assert "base.data.language_mix" in error_of(write(tmp_path / "a.yaml", d))


def test_language_mix_via_grid(tmp_path):
    d = minimal()
    d["grid"] = {"data.language_mix": [{"ru": 1.0}, {"ru": 0.6, "en": 0.6}]}
    msg = error_of(write(tmp_path / "a.yaml", d))
    assert "base.data.language_mix" in msg and "sum to 1" in msg and "grid cell" in msg


@pytest.mark.parametrize("axis_value", [[], None, 0.1])
def test_grid_axis_must_be_a_non_empty_list(tmp_path, axis_value):
    d = minimal()
    d["grid"] = {"seed": [0], "data.text_fraction": axis_value}
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'data.text_fraction:')}: grid.data.text_fraction:" in msg
    assert ("empty" in msg) if axis_value == [] else ("list" in msg)


@pytest.mark.parametrize("axis,bad_part", [("data.foo", "foo"), ("nonsense.x", "nonsense"),
                                           ("train.steps.x", "x"), ("data..x", "")])
def test_unknown_grid_axis_path(tmp_path, axis, bad_part):
    d = minimal()
    d["grid"] = {axis: [1]}
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, axis + ':')}: grid.{axis}:" in msg
    assert f"'{bad_part}'" in msg


def test_grid_axis_into_a_non_mapping(tmp_path):
    d = minimal()
    d["base"]["data"] = 5
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert "base.data" in msg and "mapping" in msg


def test_duplicate_grid_values(tmp_path):
    d = minimal()
    d["grid"] = {"data.text_fraction": [0.1, 0.1]}
    assert "same config" in error_of(write(tmp_path / "a.yaml", d))


def test_duplicate_variant_names(tmp_path):
    d = minimal()
    d["grid"] = {"data.language_mix": [{"ru": 1.0}, {"ru": 1.0, "en": 0.0}]}
    msg = error_of(write(tmp_path / "a.yaml", d))
    assert "language_mix=ru100" in msg


@pytest.mark.parametrize("text,line,what", [
    ("name: x\nbase:\n  a: [1, 2\n  b: 3\n", 4, "malformed YAML"),
    ("name: x\n\tdescription: y\n", 2, "malformed YAML"),
    ("name: x\nbase: {a: 1\n", 3, "malformed YAML"),
    ("name: x\n---\nname: y\n", 2, "malformed YAML"),
])
def test_malformed_yaml_names_the_line(tmp_path, text, line, what):
    p = write(tmp_path / "a.yaml", text)
    msg = error_of(p)
    assert msg.startswith(f"{p}:{line}: {what}")


def test_yaml_value_that_cannot_be_built(tmp_path):
    assert "malformed YAML" in error_of(write(tmp_path / "a.yaml", "name: 2020-13-45\n"))


def test_python_tags_are_refused(tmp_path):
    p = write(tmp_path / "a.yaml", "name: !!python/object/apply:os.system [echo hi]\n")
    assert "malformed YAML" in error_of(p)


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n", "---\n...\n"])
def test_empty_file(tmp_path, text):
    assert "empty" in error_of(write(tmp_path / "a.yaml", text))


@pytest.mark.parametrize("text,kind", [("- 1\n- 2\n", "list"), ("hello\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    msg = error_of(write(tmp_path / "a.yaml", text))
    assert "top level must be a mapping" in msg and kind in msg


def test_missing_file(tmp_path):
    assert "not found" in error_of(tmp_path / "nope.yaml")


@pytest.mark.parametrize("drop,dotted", [
    (("description",), "description"),
    (("base", "model", "encoder"), "base.model.encoder"),
    (("base", "eval", "sets"), "base.eval.sets"),
    (("base", "data", "language_mix"), "base.data.language_mix"),
])
def test_missing_required_field(tmp_path, drop, dotted):
    d = minimal()
    node = d
    for k in drop[:-1]:
        node = node[k]
    del node[drop[-1]]
    msg = error_of(write(tmp_path / "a.yaml", d))
    assert f"{dotted}: required field is missing" in msg


def test_text_fraction_needs_a_text_pool(tmp_path):
    d = minimal()
    del d["base"]["data"]["text_pool"]
    p = write(tmp_path / "a.yaml", d)
    msg = error_of(p)
    assert f"{p}:{line_of(p, 'data:')}: base.data:" in msg and "text_pool" in msg
    assert '"data.text_fraction": 0.1' in msg  # the grid cell that needs it
    d["grid"] = {"data.text_fraction": [0.0]}  # no text: no pool needed
    _, variants = load_ablation(write(tmp_path / "b.yaml", d))
    assert variants[0].config.data.text_pool is None


def test_model_needs_exactly_one_source(tmp_path):
    d = minimal()
    d["base"]["model"]["encoder"] = {"ref": "bundled:whisper-base", "config": {"d_model": 64}}
    msg = error_of(write(tmp_path / "a.yaml", d))
    assert "base.model.encoder" in msg and "exactly one" in msg


def test_field_of_a_tagged_source(tmp_path):
    d = minimal()
    d["base"]["eval"]["sets"][0]["source"]["splt"] = "x"
    msg = error_of(write(tmp_path / "a.yaml", d))
    assert "base.eval.sets.0.source.splt: unknown field" in msg


def test_newline_in_a_key_still_gives_one_line(tmp_path):
    d = minimal()
    d["base"]["train"]["a\nb"] = 1
    msg = error_of(write(tmp_path / "a.yaml", d))
    assert "unknown field" in msg


def test_valid_file_is_not_mutated_by_loading(tmp_path):
    d = minimal()
    p = write(tmp_path / "a.yaml", d)
    before = p.read_text()
    a1, v1 = load_ablation(p)
    a2, v2 = load_ablation(p)
    assert p.read_text() == before
    assert [v.config_hash for v in v1] == [v.config_hash for v in v2]
    assert a1.base == copy.deepcopy(d["base"])
    assert not math.isnan(v1[0].config.data.text_fraction)


# ------------------------------------------------------------------ property: never anything but ConfigError
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KEYS = ["name", "description", "base", "grid", "extends", "model", "data", "train", "eval", "seed",
         "encoder", "llm", "adapter", "ref", "config", "sets", "train_sets", "text_pool", "source", "kind",
         "language_mix", "text_fraction", "steps", "ru", "en", "synth", "hf", "split", "data.text_fraction",
         "seed", "data.language_mix", "model.llm.lora.r", "data.foo", "tokenizer", "vocab_size", "lora"]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["synth", "hf", "hf_text", "manifest", "bundled:whisper-base",
                                           "nope.yaml", "2020-13-45", "0.5", "[", "{a: 1"]),
)
_keys = st.one_of(st.sampled_from(_KEYS), st.text(max_size=10), st.integers(-3, 3))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)
_top = st.one_of(
    st.fixed_dictionaries({}, optional={"name": _values, "description": _values, "base": _values,
                                         "grid": _values, "extends": _values}),
    st.dictionaries(_keys, _values, max_size=6),
    _values,
)


def _mutated_minimal(draw_path: list, value) -> dict:
    d = minimal()
    node = d
    for k in draw_path[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[draw_path[-1]] = value
    return d


_near_valid = st.builds(
    _mutated_minimal,
    st.lists(st.sampled_from(["base", "data", "train", "model", "grid", "llm", "encoder", "language_mix",
                              "text_fraction", "seed", "steps", "eval", "sets", "text_pool", "source"]),
             min_size=1, max_size=4),
    _values,
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _check(path: Path):
    try:
        load_ablation(path)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and str(path.parent) in msg, msg  # names the file (or the one it extends)
    # any other exception propagates and fails the test


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(_top, _near_valid))
def test_random_structures_load_or_raise_config_error(fuzz_dir, data):
    path = fuzz_dir / "fuzz.yaml"
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8")
    _check(path)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:- \n\t[]{},#&*!|>'\"%@`?0.1")), max_size=60))
def test_random_text_loads_or_raises_config_error(fuzz_dir, text):
    path = fuzz_dir / "fuzz_text.yaml"
    path.write_text(text, encoding="utf-8")
    _check(path)


def test_full_ablation_scores_the_seed_benchmark_sets_with_references():
    _, variants = load_ablation(FULL)
    ev = variants[0].config.eval
    sets = {s.name: s for s in ev.sets}
    russian = {"ruls": "Russian_LibriSpeech", "cv22": "Common_Voice_Corpus_22.0", "webinars": "Tone_Webinars",
               "books": "Tone_Books", "speak": "Tone_Speak", "sova": "Sova_RuDevices"}
    for name, split in russian.items():
        src = sets[name].source
        assert (src.id, src.split, src.audio_column, src.text_column) == ("Vikhrmodels/RuASRBenchmark", split, "audio", "text")
        assert src.streaming and sets[name].max_samples == 1000  # the first 1000 rows, as Borealis scored them
        assert {r.system for r in sets[name].reference} >= {"whisper-large-v3"}
    assert sets["librispeech_en"].source.split == "test" and sets["librispeech_en"].language == "en"
    assert [r.wer for r in sets["webinars"].reference if r.system == "whisper-large-v3"] == [7.77, 7.24]
    assert ev.window_seconds == 30 and ev.long_form == "concat"
    pool = variants[0].config.data.text_pool
    assert pool.source.id == "Vikhrmodels/GrandMaster-PRO-MAX" and pool.source.messages_column == "conversation"
    assert pool.max_samples == 100_000
    _, cpu = load_ablation(CPU)  # the CPU profile keeps per-window decoding, whatever the full file says
    assert cpu[0].config.eval.long_form == "window" and not any(s.reference for s in cpu[0].config.eval.sets)


def test_eval_set_reference_one_or_many_and_validated(tmp_path):
    cfg = minimal()
    ref = {"wer": 7.24, "system": "whisper-large-v3", "source": "https://example.org/lb"}
    cfg["base"]["eval"]["sets"][0]["reference"] = ref
    _, variants = load_ablation(write(tmp_path / "one.yaml", cfg))
    (r,) = variants[0].config.eval.sets[0].reference
    assert (r.wer, r.cer, r.system, r.note) == (7.24, None, "whisper-large-v3", "")
    cfg["base"]["eval"]["sets"][0]["reference"] = [ref, {**ref, "wer": 7.77, "cer": 5.36}]
    _, variants = load_ablation(write(tmp_path / "two.yaml", cfg))
    assert [x.wer for x in variants[0].config.eval.sets[0].reference] == [7.24, 7.77]
    cfg["base"]["eval"]["sets"][0]["reference"] = {**ref, "wer": -1}
    msg = error_of(write(tmp_path / "bad.yaml", cfg))
    assert "base.eval.sets.0.reference.0.wer" in msg
    cfg["base"]["eval"]["sets"][0]["reference"] = {"wer": 7.2, "system": "w"}
    assert "reference.0.source: required field is missing" in error_of(write(tmp_path / "nosrc.yaml", cfg))


# ------------------------------------------------------------------ learning curves off
@pytest.mark.parametrize("off", [0, None])
def test_every_steps_zero_or_null_turns_curves_off(tmp_path, off):
    d = minimal()
    d["base"]["eval"]["every_steps"] = off
    _, variants = load_ablation(write(tmp_path / "a.yaml", d))
    assert variants[0].config.eval.every_steps == 0


def test_derived_file_with_empty_dev_sets_turns_inherited_curves_off(tmp_path):
    d = minimal()
    d["base"]["eval"]["every_steps"] = 10
    d["base"]["eval"]["dev_sets"] = [{"name": "dev", "source": {"kind": "synth", "corpus": "data/synth/t", "split": "dev"}}]
    write(tmp_path / "p.yaml", d)
    assert load_ablation(tmp_path / "p.yaml")[1][0].config.eval.every_steps == 10
    child = write(tmp_path / "c.yaml", {"extends": "p.yaml", "base": {"eval": {"dev_sets": []}}})
    cfg = load_ablation(child)[1][0].config
    assert cfg.eval.every_steps == 0 and cfg.eval.dev_sets == []
    # every_steps without any dev_sets given is still an error that says how to turn curves off
    d["base"]["eval"].pop("dev_sets")
    assert "every_steps: 0 (or null) turns learning curves off" in error_of(write(tmp_path / "x.yaml", d))


# ------------------------------------------------------------------ evaluate reads only the eval section
def test_eval_scope_ignores_the_training_grid(tmp_path):
    from borealis_eval.config import load_eval_scope

    d = minimal()
    d["grid"] = {"data.language_mix": [{"ru": 0.5, "xx": 0.7}]}  # an invalid training cell
    p = write(tmp_path / "a.yaml", d)
    assert "grid cell" in error_of(p)  # a sweep refuses it ...
    scope = load_eval_scope(p)  # ... scoring does not need it
    assert [s.name for s in scope.eval.sets] == [s["name"] for s in d["base"]["eval"]["sets"]]
    d["base"]["eval"]["batch_size"] = 0
    with pytest.raises(ConfigError) as ei:
        load_eval_scope(write(tmp_path / "b.yaml", d))
    msg = str(ei.value)
    assert "base.eval.batch_size" in msg and "grid cell" not in msg and str(tmp_path / "b.yaml") in msg
