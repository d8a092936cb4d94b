# The two commands of the README: `make run` (the main job on the bundled digits set) and `make test`.
# Both create .venv and install bnnflow into it on first use; later calls reuse it (re-installing only when
# pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.bnnflow-installed
PIP_QUIET := $(if $(CI),--quiet,)

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(VENV)/bin/python -m pip install $(PIP_QUIET) -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/bnnflow run

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
