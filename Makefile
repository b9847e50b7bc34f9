# llmos — `make run` (install, prepare data, train the default model, show results), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LLMOS_HOME ?= $(HOME)/.llmos
export LLMOS_HOME

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

run: install  ## prepare data, train tokenizer + default Chinese BERT, print fill-mask examples
	$(BIN)/llmos data prepare
	test -f $(LLMOS_HOME)/tokenizers/wordpiece-zh/tokenizer.json || \
		$(BIN)/llmos tokenizer train --kind wordpiece --corpus zh --vocab-size 21128
	$(BIN)/llmos pretrain --config configs/pretrain/bert-zh.yaml --resume
	$(BIN)/llmos fill-mask runs/bert-zh/checkpoint "今天天气很[MASK]。" "中国的首都是北[MASK]。" \
		"这家酒店的服务很[MASK]，下次还会再来。" "曹操率领大[MASK]南下。" --top-k 5

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
