# One command each; every target bootstraps .venv first (a fresh machine needs nothing by hand).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PAPER  ?= sac
TIER   ?= mini
SEEDS  ?=
DEVICE ?= auto
# runs in parallel (one torch thread each): this machine's cores, at most 8
JOBS   ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n > 8 ? 8 : n )))
ARGS   ?=

.PHONY: setup reproduce test bench status site serve clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

reproduce: setup  ## make reproduce PAPER=sac TIER=mini SEEDS=1,2,3 DEVICE=cpu JOBS=2 (JOBS: the cores by default)
	$(BIN)/repro reproduce $(PAPER) --tier $(TIER) $(if $(SEEDS),--seeds $(SEEDS)) --device $(DEVICE) --jobs $(JOBS) $(ARGS)

test: setup /usr/bin/chromium
	$(BIN)/python -m pytest

/usr/bin/chromium:  ## the browser of the site's end-to-end test (Debian's package), when missing
	bash scripts/ensure_chromium.sh

bench: setup
	$(BIN)/python scripts/bench.py

status: setup
	$(BIN)/repro status

site: setup  ## the leaderboard site, built from the specs and results/ into site-build/
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

serve: setup  ## the site on http://127.0.0.1:8000, rebuilt on change
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs serve --strict -a 127.0.0.1:8000

clean:
	rm -rf runs site-build .pytest_cache
