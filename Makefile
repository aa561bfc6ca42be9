# The two commands of the README:
#   make demo   - set up .venv/ and train + evaluate the demo on built-in synthetic data (runs/demo)
#   make test   - set up .venv/ and run the linter and the test suite
#                 (with the web app's runtimes from npm and Debian's Chromium for its browser tests)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The real-data tests read FracAtlas from here (CI sets it; see ../shared/README.md).
TF_FRACTURE_FRACATLAS ?= $(wildcard $(abspath ../shared/fracatlas/FracAtlas))
export TF_FRACTURE_FRACATLAS

.PHONY: demo test lint benchmark clean web browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The web app's runtimes (LiteRT.js, OpenCV.js), pinned by web/package-lock.json: tf-fracture export --web
# copies them into the site.
WEB_STAMP := web/node_modules/.installed
$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

# Debian's Chromium and ChromeDriver for the web app's tests (nothing downloads a browser at run time).
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ ! -x "$(CHROMIUM)" ] || [ ! -x "$(CHROMEDRIVER)" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

demo: $(STAMP)
	$(VENV)/bin/tf-fracture train

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --check --no-cache .

test: lint web browser
	CHROMIUM=$(CHROMIUM) CHROMEDRIVER=$(CHROMEDRIVER) $(VENV)/bin/python -m pytest -n 2 --dist loadfile

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/models_benchmark.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache web/node_modules build
