# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint format clean soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Herald needs Python 3.11 or newer (set PYTHON=...)") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: $(STAMP)  ## Herald on this machine: embedded PostgreSQL and Redis unless HERALD_*_URL are set
	$(BIN)/herald dev

test: $(STAMP)  ## the whole suite, against HERALD_TEST_*_URL or embedded servers
	$(BIN)/pytest

soak: $(STAMP)  ## minutes, not part of `make test`: real processes under load, then a deeper schema fuzz
	$(BIN)/python -m bench.soak
	HERALD_FUZZ_EXAMPLES=300 $(BIN)/pytest -q tests/test_schema_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .herald .pytest_cache .mypy_cache .ruff_cache
