"""The FINN backend: a FINN build directory from a run, FINN's builder run on it, and PYNQ deployment.

FINN is not on PyPI and its builder needs Vivado for everything past the estimates, so this package writes a
directory that FINN's own tooling runs (``build.py`` inside the Docker image, or in any FINN checkout) and runs
it itself only when a FINN installation is present.
"""
