"""Docker cannot run here, so the Dockerfile is checked as text against what the package needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_copies_every_package_folder_and_the_kernel_toolchain() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    copied = {m.group(1) for m in re.finditer(r"^COPY (\S+) \./\1$", dockerfile, re.MULTILINE)}
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
    assert re.search(r"^COPY pyproject.toml README.md", dockerfile, re.MULTILINE)
    assert re.search(r"install[^\n]*\bg\+\+", dockerfile), "the simulator's C kernel needs a compiler in the image"
    assert re.search(r"install[^\n]*\bperl\b", dockerfile), "Verilator's build scripts need perl in the image"
    python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.MULTILINE).group(1)
    assert project["project"]["requires-python"] == f">={python}"
    assert re.search(r'^ENTRYPOINT \["bnnflow"\]', dockerfile, re.MULTILINE)
