# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   installs into .venv, then runs the embedded stack with demo traffic
#   make test   installs into .venv, then runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt requirements/clients.txt pyproject.toml | cksum | cut -d' ' -f1)

BROWSER := /usr/bin/chromium

.PHONY: install browser demo up test lint bench clean

install: $(STAMP)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build from local disk, never a multi-GB CUDA download.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements/lock.txt
	$(PY) -m pip install --quiet -r requirements/clients.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: install
	$(VENV)/bin/llmwatch demo

up: install
	$(VENV)/bin/llmwatch up

# The console's browser test drives Debian's Chromium (never a downloaded one). Once it is
# installed the test must run: LLMWATCH_REQUIRE_BROWSER=1 turns a skip into a failure.
test: install browser lint
	LLMWATCH_REQUIRE_BROWSER=$$(test -x $(BROWSER) && echo 1 || echo 0) $(PY) -m pytest

# Lint and types, clean, on every `make test` (pyproject.toml holds their settings).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

browser:
	@test -x $(BROWSER) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "make: no $(BROWSER) and no root for apt-get: the browser test will be skipped"; exit 0; fi; \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; } \
	    || echo "make: apt-get install chromium failed: the browser test will be skipped"; }

bench: install
	$(PY) bench/emit.py
	$(PY) bench/instrument.py
	$(PY) bench/consumer.py
	$(PY) bench/pipeline.py
	$(PY) bench/store_batches.py
	$(PY) bench/batch_overlap.py
	$(PY) bench/rejection_lookup.py
	$(PY) bench/drift.py
	$(PY) bench/quality.py
	$(PY) bench/learning.py
	$(PY) bench/detectors.py
	$(PY) bench/alerts.py
	$(PY) bench/ingest_http.py
	$(PY) bench/evaluations.py
	$(PY) bench/console.py
	$(PY) bench/chaos.py

clean:
	rm -rf $(VENV) .llmwatch .pytest_cache .hypothesis bench/results
