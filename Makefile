# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint format clean bench soak

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

# Benchmarks, not tests (never part of `make test`): every hot path beside this machine's raw limit,
# one table, rows in bench/results/latest.json. BENCH_ARGS="--quick" or figure names (fanout badge
# list visible readall snooze expiry streams erase grouped tabs bulk webhooks small) for a shorter, unsaved
# run. wrk is the load generator; installed if missing. The Django peer runs in its own venv, bench/peer/.venv,
# which the bench builds on first use.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make bench: installing wrk (apt-get install -y wrk)"; \
	    apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; } || true; \
	  fi; \
	  command -v wrk >/dev/null 2>&1 || echo "make bench: wrk is missing and could not be installed (as root: apt-get install -y wrk); the badge and list figures will be skipped"; \
	}
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: $(STAMP)  ## minutes, not part of `make test`: real processes under load, then a deeper schema fuzz
	$(BIN)/python -m bench.soak
	HERALD_FUZZ_EXAMPLES=300 HYPOTHESIS_PROFILE=random $(BIN)/pytest -q tests/test_schema_fuzz.py tests/workers/test_generated_events.py tests/test_consistency.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) bench/peer/.venv .herald .pytest_cache .mypy_cache .ruff_cache
