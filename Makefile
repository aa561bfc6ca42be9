# The two commands of the README:
#   make demo   - set up .venv/ and train + evaluate the demo on built-in synthetic data (runs/demo)
#   make test   - set up .venv/ and run the linter and the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The real-data tests read FracAtlas from here (CI sets it; see ../shared/README.md).
TF_FRACTURE_FRACATLAS ?= $(wildcard $(abspath ../shared/fracatlas/FracAtlas))
export TF_FRACTURE_FRACATLAS

.PHONY: demo test lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tf-fracture train

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --check --no-cache .

test: lint
	$(VENV)/bin/python -m pytest

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/models_benchmark.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
