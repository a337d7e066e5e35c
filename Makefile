# The README's commands. Each target creates .venv and installs the project when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lint serve stop compare bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch from the local wheel first: an unpinned torch would pull CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cdco run --profile demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check cdco_core flows tasks bench tests

compare: $(STAMP)
	$(BIN)/cdco compare --profile demo

bench: $(STAMP)
	$(BIN)/cdco bench embed
	$(BIN)/cdco bench negatives
	$(BIN)/cdco bench train
	$(BIN)/cdco bench pipeline

serve: $(STAMP)
	$(BIN)/python -m cli.serve start

stop:
	$(BIN)/python -m cli.serve stop

clean:
	rm -rf .cdco
