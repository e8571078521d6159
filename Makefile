# `make demo`: set up .venv and run the main job on the bundled demo corpus.
# `make test`: set up .venv and run the test suite (what CI runs).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE ?= disabled

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m pipeline demo

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m bench all --out bench

clean:
	rm -rf runs .pytest_cache

# Headless Chromium for the report's browser test (tests/report/test_report.py skips without it).
.PHONY: browser
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium) || \
	  echo "chromium could not be installed: the report's browser test will skip"
