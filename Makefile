# The two commands in the README: `make demo` (main job on a built-in synthetic cohort) and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medtl-installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint schemas install clean

$(STAMP): pyproject.toml deploy/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c deploy/constraints.txt -e '.[dev,pdf,dask]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medtl demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/ruff check medtl pipelines tests benchmarks
	$(BIN)/python -m pytest -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check medtl pipelines tests benchmarks
	$(BIN)/ruff format --check medtl pipelines tests benchmarks

schemas: $(STAMP)
	$(BIN)/python -m medtl.contracts.schemas data_contracts

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
