"""Test-wide settings: never touch the hub, never write the project's own MLflow store; one tiny
corpus per test process; under pytest-xdist (`make test` runs two workers) one core per worker and
the slowest files first, so that the workers finish together."""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: torch's default of one thread per core would run four threads on two
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Files whose tests take the longest (make test's --durations; into an empty cache, test_bundled.py
# imports the bundled models, Gemma-3 for minutes): scheduled first, the others follow in order, and
# test_llm_family.py, which needs the same imported tokenizers, last, so that its worker does not wait
# on the import's file lock while the other one imports.
SLOW_FIRST = ("test_bundled.py", "test_slurm.py", "test_workers.py", "test_benchmarks_smoke.py", "test_resume.py",
              "test_baseline.py", "test_train_variant_cost.py", "test_report_browser.py", "test_mlflow_native.py",
              "test_sweep_e2e.py", "test_faults.py", "test_synth.py")
LAST = ("test_llm_family.py",)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    rank.update({name: len(SLOW_FIRST) + 1 + i for i, name in enumerate(LAST)})
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: order within a file is kept


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The scale-out tests' tiny synthetic corpus (tests/_tiny.py), built once per test process and
    only read: a test that damages clips copies it first."""
    from _tiny import tiny_corpus

    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "c")
