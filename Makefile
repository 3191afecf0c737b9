# The two commands of the README:
#   make serve   install into .venv and run attnmap under Gunicorn on the built-in models
#   make test    install into .venv (with test tools) and run the whole test suite
#   make image   build the CPU container image attnmap:cpu with podman (scripts/build-image.sh)
# The Dockerfile installs the project with `make install` too: what the install recipe gains
# (packages, conversion steps) the image gains.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install serve test lint bench image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(STAMP)

# Everything `make serve` needs; the Dockerfile runs this target too.
install: $(STAMP)

serve: install
	$(BIN)/gunicorn -c gunicorn.conf.py

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check app models bench tests
	$(BIN)/mypy app models

bench: $(DEV_STAMP)
	$(BIN)/python bench/http_bench.py

image:
	scripts/build-image.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
