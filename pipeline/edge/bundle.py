"""Deploy bundles: ``RUN/edge/bundle-TARGET.tar.gz``, what a Raspberry Pi or a Jetson needs to run the network.

Contents: the ONNX Runtime models the export wrote, ``labels.txt``, ``sample_inputs.npy`` (test inputs), a
one-file runner (``run.py``: onnxruntime and numpy only), ``bundle.json`` (defaults per target), ``README.md``
with the install commands for the target, and ``kernel/`` (``xnor_conv.c``, ``bnn_ops.py``) with the line that
builds the bit-packed kernel on the board for ``bitpacked.onnx``.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import ConfigError
from bnnflow.pipeline.edge.kernel import kernel_source
from bnnflow.pipeline.rundir import atomic_path

HERE = Path(__file__).resolve().parent
MODELS = ("reference.onnx", "int8.onnx", "bitpacked.onnx")

#: per target: the model run.py takes by default, the execution provider and threads, and the install lines
TARGETS: dict[str, dict[str, Any]] = {
    "rpi": {
        "default_model": "int8.onnx", "provider": "cpu", "threads": 4,
        "title": "Raspberry Pi 4 / 5 (Raspberry Pi OS 64-bit, aarch64)",
        "install": ["sudo apt install -y python3-venv", "python3 -m venv ~/bnn && . ~/bnn/bin/activate",
                    "pip install onnxruntime numpy"],
    },
    "jetson": {
        "default_model": "reference.onnx", "provider": "cuda", "threads": 1,
        "title": "NVIDIA Jetson (JetPack 6, aarch64, CUDA / TensorRT)",
        "install": ["sudo apt install -y python3-venv", "python3 -m venv --system-site-packages ~/bnn",
                    ". ~/bnn/bin/activate",
                    "pip install numpy onnxruntime-gpu  # the Jetson wheel for your JetPack, from "
                    "https://elinux.org/Jetson_Zoo#ONNX_Runtime"],
    },
}

README = """# {name}: a bnnflow edge bundle for {title}

Install (once):

```bash
{install}
```

Run (predicted labels of the sample inputs, then latency):

```bash
python run.py
python run.py --bench 100
python run.py --model reference.onnx --input my_images.npy    # float32, samples on axis 0, shape {shape}
```

Models: `reference.onnx` (standard ops, bit-exact against bnnflow's simulator), `int8.onnx` (binary layers as
int8 QDQ for ONNX Runtime's int8 kernels; test accuracy {int8_note}), `bitpacked.onnx` (binary layers on
bnnflow's XNOR-popcount kernel; exact). `run.py` defaults to `{default_model}` on `{provider}` with {threads}
thread(s) for this target (`bundle.json`).

`bitpacked.onnx` needs the kernel, built on the board, and onnxruntime-extensions:

```bash
pip install onnxruntime-extensions
cc -O3 -march=native -std=c99 -shared -fPIC kernel/xnor_conv.c -o kernel/libbnn_xnor.so
python run.py --model bitpacked.onnx --bench 100
```
"""


def write_bundle(edge_dir: Path, target: str, labels: list[str], inputs: np.ndarray, name: str,
                 accuracy: dict[str, float]) -> Path:
    """Pack ``edge_dir``'s models into ``edge_dir/bundle-TARGET.tar.gz`` (written whole or not at all)."""
    if target not in TARGETS:
        raise ConfigError(f"unknown bundle target {target!r} (known: {', '.join(TARGETS)})")
    missing = [m for m in MODELS if not (edge_dir / m).is_file()]
    if missing:
        raise ConfigError(f"{edge_dir} has no {', '.join(missing)}; run `bnnflow edge export RUN` first")
    spec = TARGETS[target]
    folder_name = f"{name}-{target}"
    int8_note = (f"{accuracy['int8']:.2%} against {accuracy['reference']:.2%} for the exact models"
                 if {"int8", "reference"} <= accuracy.keys() else "measured in bnnflow's export.json")
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
        manifest = {k: spec[k] for k in ("default_model", "provider", "threads")}
        (root / "bundle.json").write_text(json.dumps({**manifest, "target": target, "name": name}, indent=2) + "\n")
        (root / "README.md").write_text(README.format(
            name=name, title=spec["title"], install="\n".join(spec["install"]), shape=list(inputs.shape[1:]),
            int8_note=int8_note, **manifest))
        archive = edge_dir / f"bundle-{target}.tar.gz"
        with atomic_path(archive) as out:
            with tarfile.open(out, "w:gz", compresslevel=1) as tar:  # float weights barely shrink; level 9 took minutes
                tar.add(root, arcname=folder_name)
    return archive
