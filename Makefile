# Two set-up commands, both working on a fresh machine:
#   make demo   creates .venv, installs cnnkit, runs the main job (LeNet-5 on the bundled digits)
#   make test   creates .venv, installs the dev extras, runs the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := build/.installed-dev

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint install clean bench bench-keras-venv chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	@mkdir -p build && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnnkit train model=lenet5 data=digits

# Debian's Chromium renders a run's report.html in tests/report/test_report_page.py
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the report page test opens report.html in it)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) chromium
	$(PY) -m pytest $(if $(CI),-n 2 -q,) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# benchmarks (not part of the tests): Keras 3 on JAX lives in its own venv
KERAS_VENV := benchmarks/.venv-keras

bench-keras-venv:
	$(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/python -m pip install -q "keras>=3" "jax[cpu]"

bench: $(STAMP)
	$(PY) benchmarks/train_bench.py

clean:
	rm -rf build $(VENV) .pytest_cache .hypothesis
