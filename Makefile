# The README's commands. Each target creates .venv and installs the project when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install system-deps demo test test-fast lint serve stop compare bench clean

# local: SQLite + one serve process; team: PostgreSQL, a work pool with workers, Dask (README: Teams)
STACK ?= local
# make serve PROFILE=smoke SET="train.batch_size=4 eval.seeds=[0]": the profile the deployment and the sensor use
PROFILE ?= $(or $(CDCO_PROFILE),demo)
SET ?=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch from the local wheel first: an unpinned torch would pull CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages the integration tests and the team stack need (PostgreSQL); quick when present.
system-deps:
	bash scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/cdco run --profile demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q --durations=25 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check cdco_core cli flows tasks bench tests

compare: $(STAMP)
	$(BIN)/cdco compare --profile demo

bench: $(STAMP)
	$(BIN)/cdco bench embed
	$(BIN)/cdco bench negatives
	$(BIN)/cdco bench train
	$(BIN)/cdco bench pipeline

serve: $(STAMP)
	@if [ "$(STACK)" = team ]; then bash scripts/system-deps.sh; fi
	$(BIN)/python -m cli.serve start --stack $(STACK) --profile $(PROFILE) $(foreach s,$(SET),--set '$(s)')

stop:
	$(BIN)/python -m cli.serve stop

clean:
	rm -rf .cdco
