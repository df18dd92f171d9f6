# ragmesh: `make up` starts the mesh, `make test` runs the whole suite. Both install first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first and pinned: it resolves to the CPU wheel; unpinned it drags in a CUDA build.
TORCH_PIN := torch==2.13.0
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install test-tools up test lint generate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: install
	$(BIN)/ragmesh up

# The suite scrapes a running mesh with a real Prometheus (Debian's package).
test-tools:
	@command -v prometheus >/dev/null || { \
	  echo "installing prometheus (Debian package) for the observability tests"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

test: install test-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

# gen/python (the stubs), gen/descriptors (the descriptor set Envoy's gRPC-JSON transcoder
# reads: every ragmesh proto and its imports, with the google.api.http annotations).
generate: install
	$(BIN)/buf generate
	mkdir -p gen/descriptors
	$(BIN)/buf build --exclude-source-info -o gen/descriptors/ragmesh.binpb

bench: install
	$(BIN)/ragmesh bench embed

clean:
	rm -rf $(VENV) .ragmesh
