# Two entry points (see README): `make demo` and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The tested versions (see constraints.txt); `make install CONSTRAINTS=` resolves the newest.
CONSTRAINTS ?= constraints.txt

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m coleaf_jax.demo

# Lint and format check first (ruff, configured in pyproject.toml), then the tests.
# pytest exits 5 when it collects no test: that is a failure too. Two workers (-n 2):
# the suite is dominated by XLA compiles, which use one core each.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	COLEAF_CONSTRAINTS=$(CONSTRAINTS) XLA_FLAGS=--xla_force_host_platform_device_count=2 $(PY) -m pytest -q -n 2 --dist worksteal --durations=20 tests; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Fix what ruff can (imports, formatting); review the diff.
lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs/demo
