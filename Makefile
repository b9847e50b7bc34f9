# llmos — `make run` (install, prepare data, build the default models, serve them), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LLMOS_HOME ?= $(HOME)/.llmos
export LLMOS_HOME
PORT   ?= 8000

.PHONY: help install run test test-fast browser lint format bench postgres clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on this machine's disk (an unpinned torch pulls CUDA)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install llmos with its dev tools

run: install  ## build the missing default models (~24 min the first time), print a demo API key, serve with a job worker (which builds a sample of the material index, ~2 min more, in the background)
	$(BIN)/llmos data prepare
	$(BIN)/llmos setup --models runs --demo-user demo --background materials
	@echo "console: http://127.0.0.1:$(PORT)/  (sign in with the API key above; Ctrl-C stops the server)"
	$(BIN)/llmos serve --models runs --port $(PORT) --workers 1

test: install  ## run the test suite
	$(BIN)/pytest -q

test-fast: install  ## the test suite without the slow end-to-end tests
	$(BIN)/pytest -q -m "not slow"

postgres:  ## start a local PostgreSQL for the store tests (installs it on Debian; root or sudo)
	@bash .ci/postgres.sh
	@echo "# run the line above (or: eval \"\$$(make -s postgres)\"), then make test" >&2

browser: install  ## the web console's browser tests (installs Debian's Chromium if missing)
	.ci/chromium.sh
	LLMOS_REQUIRE_BROWSER=1 $(BIN)/pytest -q tests/e2e

lint: install  ## ruff lint + format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install  ## apply ruff formatting and fixes
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: install  ## pretraining + generation speed against Hugging Face (-> docs/BENCHMARKS.md)
	$(BIN)/llmos data prepare
	test -f $(LLMOS_HOME)/tokenizers/wordpiece-zh/tokenizer.json || \
		$(BIN)/llmos tokenizer train --kind wordpiece --corpus zh --vocab-size 21128
	test -f $(LLMOS_HOME)/tokenizers/bpe-zh/tokenizer.json || \
		$(BIN)/llmos tokenizer train --kind bpe --corpus zh --vocab-size 8000
	$(BIN)/python bench/pretrain_throughput.py
	$(BIN)/python bench/generate.py

clean:  ## remove the virtualenv and caches (not $(LLMOS_HOME) or runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
