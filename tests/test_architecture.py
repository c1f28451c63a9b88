"""Contracts of the package's structure: error handling at the CLI, what a light command imports,
one way to set a dotted path (grid, search, --set), the feature cache keyed by weight content."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from _tiny import claims_of, tiny_ablation
from borealis_eval import cli
from borealis_eval.config import ConfigError, apply_overrides, load_ablation, parse_assignment
from borealis_eval.errors import UserError


# ------------------------------------------------------------------ errors at the CLI
def test_an_internal_value_error_keeps_its_traceback(monkeypatch):
    def broken(a):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(cli, "cmd_models_list", broken)
    with pytest.raises(ValueError, match="a bug"):  # not swallowed into a one-line "error:" with exit 2
        cli.main(["models", "list"])


def test_a_user_error_is_one_line_with_exit_2(monkeypatch, capsys):
    def refused(a):
        raise UserError("the data is not there")

    monkeypatch.setattr(cli, "cmd_models_list", refused)
    assert cli.main(["models", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the data is not there") and err.count("\n") == 1 and "Traceback" not in err


def test_score_imports_no_tracking_or_plotting_stack(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"id": "1", "text": "hello world"}\n')
    (tmp_path / "h.jsonl").write_text('{"id": "1", "text": "hello word"}\n')
    code = ("import sys; from borealis_eval.cli import main; rc = main(['score', 'r.jsonl', 'h.jsonl', '--lang', 'en']); "
            "print(sorted(m for m in ('mlflow', 'pandas', 'matplotlib', 'torch', 'optuna') if m in sys.modules)); "
            "sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert '"wer": 0.5' in out
    assert out.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ dotted paths
BASE = {"data": {"augment": None, "text_fraction": 0.0}, "train": {"steps": 10}}


def test_apply_overrides_sets_creates_and_refuses():
    out = apply_overrides(BASE, {"train.steps": 20, "model.adapter.hidden_sizes": [8]})
    assert out["train"]["steps"] == 20 and out["model"]["adapter"]["hidden_sizes"] == [8]
    assert BASE["train"]["steps"] == 10  # the input is not modified
    with pytest.raises(ConfigError, match=r"data\.augment: must be a mapping to set 'data\.augment\.noise\.p'"):
        apply_overrides(BASE, {"data.augment.noise.p": 0.5})  # a null section blocks the path: never dropped
    with pytest.raises(ConfigError, match="unknown field 'stepz'"):
        apply_overrides(BASE, {"train.stepz": 1})


def test_parse_assignment_reads_values_as_yaml():
    assert parse_assignment("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_assignment("data.language_mix={ru: 1.0}") == ("data.language_mix", {"ru": 1.0})
    assert parse_assignment("data.augment=null") == ("data.augment", None)
    with pytest.raises(ConfigError, match="expected PATH=VALUE"):
        parse_assignment("train.lr")


def test_search_refuses_a_sampled_path_that_the_base_blocks(tmp_path, corpus):
    """Before: the sampled value was dropped silently and the trial ran the base config."""
    from borealis_eval.search import run_search, trial_variant
    from borealis_eval.study import StudyOptions

    search = {"n_trials": 2, "space": {"data.augment.noise.p": {"low": 0.1, "high": 0.9}}}
    abl = tiny_ablation(tmp_path, corpus, "tiny_blocked", search=search, overrides={"base": {"data": {"augment": None}}})
    with pytest.raises(ConfigError, match=r"search\.space\.data\.augment\.noise\.p: base\.data\.augment must be a mapping"):
        run_search(abl, StudyOptions(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", progress=False))
    base = yaml.safe_load(abl.read_text())["base"]
    with pytest.raises(ConfigError, match="must be a mapping"):
        trial_variant(base, {"data.augment.noise.p": 0.5}, 0)


def test_set_option_overrides_the_base_before_the_grid(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setattr(cli, "console", cli.Console(width=300, color_system=None))
    abl = tiny_ablation(tmp_path, corpus, "tiny_set", grid={"data.text_fraction": [0.0, 0.25]})
    assert cli.main(["sweep", str(abl), "--dry-run", "--set", "train.steps=7", "--set", "seed=3"]) == 0
    out = capsys.readouterr().out
    _, variants = load_ablation(abl, {"train.steps": 7, "seed": 3})
    assert all(v.config.train.steps == 7 and v.config.seed == 3 for v in variants)
    assert all(v.config_hash in out for v in variants)
    assert cli.main(["sweep", str(abl), "--dry-run", "--set", "train.stepz=7"]) == 2
    assert "--set train.stepz: unknown field 'stepz'" in capsys.readouterr().err


# ------------------------------------------------------------------ feature-cache identity
def test_feature_cache_identity_follows_the_weights_not_the_reference(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    from borealis_eval.config import EncoderConfig
    from borealis_eval.models.encoder import FrozenWhisperEncoder

    folder = tmp_path / "my-whisper"
    conf = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80)
    torch.manual_seed(0)
    WhisperModel(conf).save_pretrained(folder)
    cfg = EncoderConfig(ref=str(folder), short_input=True)
    first = FrozenWhisperEncoder(cfg).identity.key
    assert FrozenWhisperEncoder(cfg).identity.key == first  # stable for the same weights

    torch.manual_seed(1)
    WhisperModel(conf).save_pretrained(folder)  # the same reference, re-saved with other weights
    assert FrozenWhisperEncoder(cfg).identity.key != first


# ------------------------------------------------------------------ store outage while saving weights
def test_store_failing_while_saving_the_model_is_a_resumable_interrupt(tmp_path, corpus, monkeypatch, capsys):
    """Before: the tokenizer upload bypassed the store-error path and the variant was marked failed.
    Weights and tokenizer now go up as the variant's logged model, through the same path."""
    monkeypatch.setenv("BOREALIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    abl = tiny_ablation(tmp_path, corpus, "tiny_artifacts_down", steps=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def down(self, *a, **k):
        raise MlflowException("(sqlite3.OperationalError) disk I/O error (injected)")

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", down)
    rc = cli.main(["--tracking-uri", uri, "sweep", str(abl), "--no-progress", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "rerun the same command once the store is back to resume" in err
    (claim,) = claims_of(tmp_path / "borealis-studies.db").values()
    assert claim["status"] == "interrupted"  # resumable, not failed
    client = MlflowClient(uri)
    (model,) = client.search_logged_models([client.get_experiment_by_name("tiny_artifacts_down").experiment_id])
    assert model.status.name == "FAILED"  # the half-uploaded logged model is not left pending


# ------------------------------------------------------------------ layering
def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere: function-level and `if TYPE_CHECKING:` imports
    too (an import deferred into a function, or made for annotations only, still ties the two modules)."""
    import ast
    from pathlib import Path

    import borealis_eval

    root = Path(borealis_eval.__file__).parent.parent
    files = {}
    for f in (root / "borealis_eval").rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in files.items():
        deps = set()
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Import):
                deps.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    here = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - n.level + 1] + ([n.module] if n.module else []))
                deps.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in n.names)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(planted) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    graph = _import_graph()
    assert "borealis_eval.recipe" in graph and "borealis_eval.study" in graph["borealis_eval.recipe"]  # it reads imports
    assert _cycles(graph) == []


def test_one_lifecycle_study_and_drivers_do_not_reach_into_a_unit_of_work():
    """study.py (claims, heartbeats, signals) knows nothing of what a unit does; the drivers (sweep, search)
    run units only through recipe.run_claimed, never a recipe's steps themselves."""
    graph = _import_graph()
    assert "borealis_eval.recipe" not in graph["borealis_eval.study"]
    import inspect

    from borealis_eval import search, sweep

    for mod in (sweep, search):
        src = inspect.getsource(mod)
        assert "run_claimed(" in src
        assert not any(s in src for s in (".run_all(", "VariantRecipe(", "store.finish(", ".params("))
