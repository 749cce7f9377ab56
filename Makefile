# One command each; every target bootstraps .venv first (a fresh machine needs nothing by hand).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PAPER  ?= sac
TIER   ?= mini
SEEDS  ?=
DEVICE ?= auto
JOBS   ?= 1
ARGS   ?=

.PHONY: setup reproduce test bench status clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

reproduce: setup  ## make reproduce PAPER=sac TIER=mini SEEDS=1,2,3 DEVICE=cpu JOBS=2
	$(BIN)/repro reproduce $(PAPER) --tier $(TIER) $(if $(SEEDS),--seeds $(SEEDS)) --device $(DEVICE) --jobs $(JOBS) $(ARGS)

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python scripts/bench.py

status: setup
	$(BIN)/repro status

clean:
	rm -rf runs site-build .pytest_cache
