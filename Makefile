# Everything bootstraps into .venv: a fresh machine needs only python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo starts local Salesforce, ODK Central and Kobo sandboxes plus an Excel workbook of generated
# cases and runs deploy/examples/demo.yaml. It exits 1 when generated values were rejected (they are
# messy on purpose): that is a success.
demo: $(STAMP)
	$(BIN)/htcds-connector sandbox demo deploy/examples/demo.yaml --cases 3000; code=$$?; [ $$code -le 1 ] || exit $$code

# Both cores (pytest-xdist); a test that hangs fails after 15 minutes instead of stalling CI.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --timeout 900

# Benchmarks print the tables the README quotes. Full sizes; see each script's --help for smaller runs.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/kanon.py
	$(BIN)/python bench/privacy.py
	$(BIN)/python bench/e2e.py --sizes 10000,30000,100000

clean:
	rm -rf $(VENV) releases state .pytest_cache
