"""Deploy bundles: ``RUN/edge/bundle-TARGET.tar.gz``, what a Raspberry Pi or a Jetson needs to run the network and
to check that it computes what bnnflow checked.

Contents: the ONNX Runtime models the export wrote, ``labels.txt``, ``sample_inputs.npy`` (test inputs),
``expected.json`` (every model's labels and scores on those inputs, with a tolerance per sample: see
``expected.py``), a one-file runner (``run.py``: onnxruntime and numpy only), ``bundle.json`` (defaults per target,
the onnxruntime version bnnflow checked with, each model file's sha256), ``README.md`` with the install commands
for the target, and ``kernel/`` (``xnor_conv.c``, ``bnn_ops.py``) with the line that builds the bit-packed kernel
on the board for ``bitpacked.onnx``.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bnnflow.errors import ConfigError
from bnnflow.pipeline.edge.bundle_runner import sha256, tolerance_share
from bnnflow.pipeline.edge.expected import expected_json
from bnnflow.pipeline.edge.kernel import kernel_source
from bnnflow.pipeline.rundir import atomic_path

HERE = Path(__file__).resolve().parent
MODELS = ("reference.onnx", "int8.onnx", "bitpacked.onnx")

#: per target: the model run.py takes by default, the execution provider and threads, and the install lines
#: ({ort}: the onnxruntime version bnnflow checked the bundle with)
TARGETS: dict[str, dict[str, Any]] = {
    "rpi": {
        "default_model": "int8.onnx", "provider": "cpu", "threads": 4,
        "title": "Raspberry Pi 4 / 5 (Raspberry Pi OS 64-bit, aarch64)",
        "install": ["sudo apt install -y python3-venv", "python3 -m venv ~/bnn && . ~/bnn/bin/activate",
                    "pip install onnxruntime=={ort} numpy"],
        "version_note": "onnxruntime {ort} is the version bnnflow checked this bundle with; PyPI has its aarch64 "
                        "wheels.",
    },
    "jetson": {
        "default_model": "reference.onnx", "provider": "cuda", "threads": 1,
        "title": "NVIDIA Jetson (JetPack 6, aarch64, CUDA / TensorRT)",
        "install": ["sudo apt install -y python3-venv", "python3 -m venv --system-site-packages ~/bnn",
                    ". ~/bnn/bin/activate", "pip install numpy",
                    "pip install ./onnxruntime_gpu-{ort}-*.whl  # from https://elinux.org/Jetson_Zoo#ONNX_Runtime"],
        "version_note": "bnnflow checked this bundle with onnxruntime {ort}: download the Jetson Zoo's "
                        "onnxruntime-gpu {ort} wheel for your JetPack and Python (where it lists no {ort}, the "
                        "nearest version: `python run.py` then tells whether it computes the same).",
    },
}

README = """# {name}: a bnnflow edge bundle for {title}

Install (once):

```bash
{install}
```

{version_note}

Run (predicted labels of the sample inputs, checked, then latency):

```bash
python run.py
python run.py --bench 100
python run.py --model reference.onnx --input my_images.npy    # float32, samples on axis 0, shape {shape}
```

Models: `reference.onnx` (standard ops, bit-exact against bnnflow's simulator), `int8.onnx` (binary layers
as int8 QDQ for ONNX Runtime's int8 kernels; test accuracy {int8_note}), `bitpacked.onnx` (binary
layers on bnnflow's XNOR-popcount kernel; exact). `run.py` defaults to `{default_model}` on `{provider}` with
{threads} thread(s) for this target (`bundle.json`).

## What run.py checks

Before it runs, `run.py` compares every model file's sha256 with `bundle.json`: a model that is missing or was
altered after bnnflow wrote the bundle stops it (exit 3): extract the archive again, or rebuild it with
`bnnflow edge bundle RUN --target {target}`. On the bundle's own sample inputs (no `--input`) it then compares the
outputs with `expected.json`, which holds each model's labels and scores on them, and exits 4 naming how many of
the {samples} differ and the first; on your own inputs there is nothing to compare with, and it only runs.

- `reference.onnx` and `bitpacked.onnx` must equal {exact_rule}.
- `int8.onnx` requantizes each binary layer's accumulator to 8 bits, which none of bnnflow's levels computes,
  so it must reproduce the outputs of {int8_against}: each score within its sample's
  `tolerance` (here at most {int8_share} of the sample's largest score). A tolerance is twice what the scores
  moved when bnnflow nudged the requantization scales by 1e-6 either way (another ONNX Runtime build may round
  ties the other way), and at least 1e-4 of the largest score (float rounding). Measured: onnxruntime 1.31.1's
  aarch64 wheel on emulated Cortex-A72 and A76 (Raspberry Pi 4 and 5) gave the x86 int8 outputs bit for bit.
  Labels follow from the scores: two classes can only swap where their expected scores are within twice the
  tolerance.

Exit codes: 0 checked (or run on your inputs), 1 a dependency missing, 2 bad arguments, 3 a model file missing or
altered, 4 outputs that differ from bnnflow's: try onnxruntime {ort} on the CPU (`--provider cpu`), the
combination bnnflow checked.

## bitpacked.onnx: build the kernel on the board

`bitpacked.onnx` runs its binary layers on bnnflow's C kernel, which is compiled on the board, so the board needs
a C compiler (`build-essential`: gcc), and onnxruntime-extensions:

```bash
sudo apt install -y build-essential
pip install onnxruntime-extensions=={ortx}
cc -O3 -march=native -std=c99 -shared -fPIC kernel/xnor_conv.c -o kernel/libbnn_xnor.so
python run.py --model bitpacked.onnx --bench 100
```
"""


def _exact_rule(expected: dict[str, Any]) -> str:
    """How README.md states the exact models' check, from their expected.json entry."""
    if expected["scores"] is None:
        return f"the labels of {expected['against']}"
    return (f"the outputs of {expected['against']} (scores to float rounding: within {tolerance_share(expected):.0e}\n"
            "  of the sample's largest score)")


def require_export(edge_dir: Path, target: str) -> None:
    """A known target and every model of the export, before anything is computed for a bundle."""
    if target not in TARGETS:
        raise ConfigError(f"unknown bundle target {target!r} (known: {', '.join(TARGETS)})")
    missing = [m for m in MODELS if not (edge_dir / m).is_file()]
    if missing:
        raise ConfigError(f"{edge_dir} has no {', '.join(missing)}; run `bnnflow edge export RUN` first")


def write_bundle(edge_dir: Path, target: str, labels: list[str], inputs: np.ndarray, name: str,
                 accuracy: dict[str, float], expected: dict[str, Any]) -> Path:
    """Pack ``edge_dir``'s models into ``edge_dir/bundle-TARGET.tar.gz`` (written whole or not at all), with
    ``expected`` (``expected.expected_record`` of ``inputs``) for run.py's check."""
    require_export(edge_dir, target)
    spec = TARGETS[target]
    folder_name = f"{name}-{target}"
    int8_note = (f"{accuracy['int8']:.2%} against {accuracy['reference']:.2%} for the exact models"
                 if {"int8", "reference"} <= accuracy.keys() else "measured in bnnflow's export.json")
    versions = {"onnxruntime": ort.__version__,
                "onnxruntime_extensions": importlib.metadata.version("onnxruntime-extensions")}
    with tempfile.TemporaryDirectory(prefix="bnnflow-bundle-") as tmp:
        root = Path(tmp) / folder_name
        (root / "kernel").mkdir(parents=True)
        for model in MODELS:
            shutil.copyfile(edge_dir / model, root / model)
        shutil.copyfile(HERE / "bundle_runner.py", root / "run.py")
        shutil.copyfile(HERE / "bundle_ops.py", root / "kernel" / "bnn_ops.py")
        shutil.copyfile(kernel_source(), root / "kernel" / "xnor_conv.c")
        (root / "labels.txt").write_text("\n".join(labels) + "\n")
        np.save(root / "sample_inputs.npy", inputs.astype(np.float32))
        (root / "expected.json").write_text(expected_json(expected) + "\n")
        manifest = {k: spec[k] for k in ("default_model", "provider", "threads")}
        (root / "bundle.json").write_text(json.dumps({
            **manifest, "target": target, "name": name, **versions,
            "sha256": {model: sha256(root / model) for model in MODELS}}, indent=2) + "\n")
        models = expected["models"]
        (root / "README.md").write_text(README.format(
            name=name, title=spec["title"], install="\n".join(spec["install"]).format(ort=versions["onnxruntime"]),
            version_note=spec["version_note"].format(ort=versions["onnxruntime"]), shape=list(inputs.shape[1:]),
            int8_note=int8_note, target=target, samples=f"{len(inputs)} samples",
            exact_rule=_exact_rule(models["reference.onnx"]), int8_against=models["int8.onnx"]["against"],
            int8_share=f"{tolerance_share(models['int8.onnx']):.2%}", ort=versions["onnxruntime"],
            ortx=versions["onnxruntime_extensions"], **manifest))
        archive = edge_dir / f"bundle-{target}.tar.gz"
        with atomic_path(archive) as out:
            with tarfile.open(out, "w:gz", compresslevel=1) as tar:  # float weights barely shrink; level 9 took minutes
                tar.add(root, arcname=folder_name)
    return archive
