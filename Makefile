# notarium: the two commands a user needs are `make run` and `make test`.
# Everything else (virtual environments, oracles) is set up on demand from the pinned
# requirements in requirements/.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
RUN_DIR ?= run/ledger

# Compatibility oracles live in their own environments: the `ccf` package needs
# cryptography<=46 and cbor2<6, and the two Azure SDK versions share one package name; mgmt is
# azure-mgmt-confidentialledger, the management SDK the ledger host (notarium host) serves, and
# mgmtbeta its newest beta (another package version, so another environment).
ORACLES := ccf acl1 acl2 mgmt mgmtbeta

.PHONY: run test lint typecheck unit bench setup oracles clean

setup: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements/dev.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

.venv-%/.stamp: requirements/oracle-%.txt
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip --disable-pip-version-check -q install -r $<
	touch $@

oracles: $(foreach o,$(ORACLES),.venv-$(o)/.stamp)

run: setup
	$(BIN)/notarium run $(RUN_DIR)

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

test: setup oracles lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup oracles
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(foreach o,$(ORACLES),.venv-$(o)) .mypy_cache .ruff_cache .pytest_cache
