# The two commands of the README: `make run` (the main job on the bundled digits set) and `make test`.
# Both create .venv and install bnnflow into it on first use, at the versions in constraints.txt; later calls
# reuse it (re-installing only when pyproject.toml or constraints.txt changes).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.bnnflow-installed
PIP_QUIET := $(if $(CI),--quiet,)

.PHONY: setup run test system-tools clean

setup: $(STAMP)

# constraints.txt holds the exact versions the suite ran with; pyproject.toml only compatible ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(VENV)/bin/python -m pip install $(PIP_QUIET) -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/bnnflow run

# Debian packages a few tests need: the aarch64 cross compiler and qemu-user run the edge kernel's NEON path (the
# boards'), headless Chromium renders report.html, Icarus Verilog reads the ROM images as a second simulator. Where
# one is missing, `make test` installs it with apt-get if it can (Debian or Ubuntu, as root); elsewhere the tests
# that need it are skipped, saying why. Each pair: a command, then the package that provides it.
SYSTEM_TOOLS := aarch64-linux-gnu-gcc=gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc=libc6-dev-arm64-cross \
                qemu-aarch64=qemu-user chromium=chromium iverilog=iverilog

system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v "$${pair%%=*}" >/dev/null || missing="$$missing $${pair#*=}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing for the tests that need them"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing) >/dev/null || echo "apt-get could not install$$missing: the tests that need them will be skipped"; \
	  else echo "no apt-get as root: the tests that need$$missing will be skipped"; fi; \
	fi

test: $(STAMP) system-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
