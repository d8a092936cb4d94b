# The two commands of the README: `make run` (the main job on the bundled digits set) and `make test`.
# Both create .venv and install bnnflow into it on first use; later calls reuse it (re-installing only when
# pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.bnnflow-installed
PIP_QUIET := $(if $(CI),--quiet,)

.PHONY: setup run test arm-tools chromium clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(VENV)/bin/python -m pip install $(PIP_QUIET) -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/bnnflow run

# The aarch64 cross compiler and qemu-user run the edge kernel's NEON path (the boards') in the suite. Where they
# are missing, `make test` installs them with apt-get if it can (Debian or Ubuntu, as root); elsewhere that one
# test is skipped, saying why.
ARM_TOOLS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user

arm-tools:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(ARM_TOOLS) for the NEON kernel test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(ARM_TOOLS)) >/dev/null || echo "apt-get could not install them: the NEON kernel test will be skipped"; \
	  else echo "no apt-get as root: the NEON kernel test will be skipped"; fi; \
	fi

# Headless Chromium renders report.html in the suite (no console error, every section there). Where no Chromium is
# found, `make test` installs Debian's chromium with apt-get if it can (as root); elsewhere that test is skipped,
# saying why.
chromium:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
	    && ! command -v google-chrome >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the report.html test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium) >/dev/null || echo "apt-get could not install chromium: the report.html test will be skipped"; \
	  else echo "no apt-get as root: the report.html test will be skipped (install chromium to run it)"; fi; \
	fi

test: $(STAMP) arm-tools chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
