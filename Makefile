# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   installs into .venv, then runs the embedded stack with demo traffic
#   make test   installs into .venv, then runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo up test bench clean

install: $(STAMP)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build from local disk, never a multi-GB CUDA download.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: install
	$(VENV)/bin/llmwatch demo

up: install
	$(VENV)/bin/llmwatch up

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/emit.py
	$(PY) bench/pipeline.py
	$(PY) bench/drift.py
	$(PY) bench/quality.py
	$(PY) bench/detectors.py
	$(PY) bench/alerts.py
	$(PY) bench/ingest_http.py

clean:
	rm -rf $(VENV) .llmwatch .pytest_cache .hypothesis bench/results
