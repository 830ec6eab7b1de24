# SR-IOV Console. `make demo` runs everything locally; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test chaos lint fmt clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python manage.py demo

test: $(STAMP)
	CONSOLE_VAR_DIR=$(CURDIR)/var/test $(BIN)/python -m pytest $(PYTEST_ARGS)

# Fault injection against real processes (benchmarks/chaos/run.py); not part of `make test`.
CHAOS_TRIALS       ?= 50
CHAOS_OTHER_TRIALS ?= 10
CHAOS_FAULTS       ?=
CHAOS_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/postgres)
chaos: $(STAMP)
	DATABASE_URL=$(CHAOS_DATABASE_URL) CONSOLE_VAR_DIR=$(CURDIR)/var/chaos $(BIN)/python benchmarks/chaos/run.py \
		--trials $(CHAOS_TRIALS) --other-trials $(CHAOS_OTHER_TRIALS) --faults "$(CHAOS_FAULTS)" \
		--write benchmarks/results/chaos.md $(CHAOS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/test var/broker var/chaos
