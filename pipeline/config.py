"""The run configuration: frozen dataclasses, loaded from TOML, validated field by field.

A config file has one table per section (``[data]``, ``[model]``, ``[method]``, ``[train]``, ...); every key is
optional and falls back to the bundled default (the digits MLP). Validation names the offending key and what
it accepts, so a typo never silently trains the wrong thing. ``Config.to_dict()`` round-trips through
``Config.from_dict()``; the resolved config is written to ``RUN/config.toml`` before anything else runs.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from bnnflow.errors import ConfigError


class DatasetName(str, enum.Enum):
    """Data sets the loaders know; all but digits read a local folder in torchvision's layout."""

    DIGITS = "digits"
    MNIST = "mnist"
    CIFAR10 = "cifar10"
    IMAGEFOLDER = "imagefolder"


class OptimizerName(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


class AmpMode(str, enum.Enum):
    """Mixed precision of the training forward pass (``torch.autocast``); fp16 adds a gradient scaler."""

    OFF = "off"
    BF16 = "bf16"
    FP16 = "fp16"


class ScheduleName(str, enum.Enum):
    """Learning-rate schedules over epochs, applied after the linear warm-up."""

    CONSTANT = "constant"
    COSINE = "cosine"
    STEP = "step"
    LINEAR = "linear"


def _range(lo: float | None = None, hi: float | None = None, *, zero: bool = False) -> dict[str, Any]:
    """Field metadata: the value must lie in [lo, hi]; with ``zero``, 0 (a "use the natural default" value) too."""
    return {"range": (lo, hi), "zero": zero}


def _choices(*allowed: int) -> dict[str, Any]:
    """Field metadata: the value must be one of ``allowed`` (numbers that are not a contiguous range)."""
    return {"choices": allowed}


def _device_syntax(value: str) -> str | None:
    """Why ``value`` is not a device ``train.device`` takes (auto, cpu, cuda, cuda:N, mps), or None."""
    kind, _, index = value.partition(":")
    if value in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and index.isdigit()):
        return None
    return "is not a device (allowed: auto, cpu, cuda, cuda:N, mps)"


#: metadata of a field that names a file or folder ("" = none); the CLI makes it absolute (``with_absolute_paths``)
_PATH = {"path": True}


@dataclass(frozen=True)
class DataConfig:
    #: which data set to train and test on
    name: DatasetName = DatasetName.DIGITS
    #: folder holding the data set (unused for digits, which scikit-learn ships)
    root: str = field(default="", metadata=_PATH)
    #: fraction of the digits set held out for testing (a seeded, stratified split)
    test_fraction: float = field(default=0.2, metadata=_range(0.05, 0.95))
    #: seed of the digits train/test split; fixed so every run tests on the same images
    split_seed: int = field(default=0, metadata=_range(0))
    #: use only the first N training samples (0 = all); for smoke tests and quick looks
    limit_train: int = field(default=0, metadata=_range(0))
    #: use only the first N test samples (0 = all)
    limit_test: int = field(default=0, metadata=_range(0))
    #: side length images are resized to (bilinear, antialiased: ``pipeline/image_shape.py``). 0 = the data set's
    #: own: 8 for digits, 28 for MNIST, 32 for CIFAR-10; image folders have none, and get 32
    image_size: int = field(default=0, metadata=_range(8, 1024, zero=True))
    #: image channels: 1 (colour becomes its luma) or 3 (grey is repeated). 0 = the data set's own: 1 for digits
    #: and MNIST, 3 for CIFAR-10 and image folders
    channels: int = field(default=0, metadata=_choices(0, 1, 3))
    #: random crop (padding 4) and horizontal flip for image training sets
    augment: bool = False


@dataclass(frozen=True)
class ModelConfig:
    #: a registered model name (``bnnflow models`` lists them)
    name: str = "digits_mlp"
    #: keyword arguments of the model's entry point (bit widths, widths); checked against its signature
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodConfig:
    #: the training method (``bnnflow methods`` lists them): ``ste`` is plain Brevitas
    name: str = "ste"
    #: the method's options (keyword arguments of its class); checked against its signature
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeConfig:
    #: the published result a config reproduces, e.g. "RBNN (Lin et al., NeurIPS 2020), Table 1"
    paper: str = ""
    #: the paper's test accuracy for this setting (a fraction; 0 = none published or not retrieved)
    expected_accuracy: float = field(default=0.0, metadata=_range(0.0, 1.0))
    #: where the number comes from and how sure it is (methods.md's [V] verified / [R] recalled)
    source: str = ""


@dataclass(frozen=True)
class TrainConfig:
    #: number of passes over the training set
    epochs: int = field(default=100, metadata=_range(1, 100_000))
    #: global batch size (split across processes under torchrun)
    batch_size: int = field(default=64, metadata=_range(1, 65_536))
    optimizer: OptimizerName = OptimizerName.ADAM
    #: peak learning rate, reached after warm-up
    lr: float = field(default=0.01, metadata=_range(0.0, 10.0))
    #: SGD momentum (ignored by Adam)
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    #: L2 weight decay applied to every parameter
    weight_decay: float = field(default=0.0, metadata=_range(0.0, 1.0))
    schedule: ScheduleName = ScheduleName.COSINE
    #: epochs of linear warm-up from 0 to ``lr``
    warmup_epochs: int = field(default=0, metadata=_range(0))
    #: epochs between decays of the step schedule
    step_epochs: int = field(default=30, metadata=_range(1))
    #: factor of each step-schedule decay
    step_gamma: float = field(default=0.1, metadata=_range(0.0, 1.0))
    #: label smoothing of the cross-entropy loss
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 0.99))
    #: the teacher to distil from: a trained run's checkpoint (RUN/train/checkpoint.safetensors), or a plain
    #: safetensors state dict of ``teacher_model`` (e.g. a converted pretrained ResNet-34). The loss becomes
    #: ReActNet's distribution loss against its softmax instead of the cross-entropy on the labels ("" = none)
    teacher: str = field(default="", metadata=_PATH)
    #: the registered model a plain state dict in ``teacher`` is loaded into, e.g. "resnet34" ("" = a run
    #: checkpoint, which names its own model)
    teacher_model: str = ""
    #: keyword arguments of ``teacher_model``, e.g. { normalize = true } for torchvision's pretrained weights
    teacher_args: dict[str, Any] = field(default_factory=dict)
    #: a trained run's checkpoint to start from (the second step of a two-step recipe): parameters whose names
    #: and shapes match are loaded, the rest keep their initialisation ("" = from scratch)
    init_from: str = field(default="", metadata=_PATH)
    #: seed of initialisation, shuffling and augmentation
    seed: int = field(default=0, metadata=_range(0))
    #: CPU threads for PyTorch (0 = PyTorch's default)
    threads: int = field(default=0, metadata=_range(0, 1024))
    #: where to train: auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:N or mps; under torchrun
    #: every process takes the GPU of its local rank
    device: str = field(default="auto", metadata={"check": _device_syntax})
    #: mixed precision: off, bf16 (CUDA with bf16 support, CPU) or fp16 (CUDA, MPS; with a loss scaler); some
    #: methods take only bf16 (``bnnflow methods``)
    amp: AmpMode = AmpMode.OFF
    #: keep image batches and conv weights in channels-last memory order (faster convolutions on recent GPUs)
    channels_last: bool = False
    #: DataLoader worker processes reading and decoding batches (0 = in the training process); with workers the
    #: loader keeps them between epochs, and pins memory when training on CUDA
    workers: int = field(default=0, metadata=_range(0, 256))


@dataclass(frozen=True)
class ExportConfig:
    #: run qonnx's executor on the whole test split and compare with PyTorch
    verify: bool = True
    #: images per qonnx execution call while verifying
    verify_batch: int = field(default=256, metadata=_range(1, 65_536))


@dataclass(frozen=True)
class CompileConfig:
    #: board whose LUT and block-RAM budget the folding fits (``bnnflow boards`` lists them)
    board: str = "ulx3s"
    #: frames/s to reach with the fewest resources (0 = the fastest folding that fits the board, up to fps_cap)
    target_fps: float = field(default=0.0, metadata=_range(0.0))
    #: with target_fps = 0, stop speeding the design up once it reaches this rate (0 = no cap): a design faster
    #: than the application needs costs LUTs, synthesis time and timing closure
    fps_cap: float = field(default=250_000.0, metadata=_range(0.0))
    #: clock of the accelerator in MHz (0 = the board's default clock)
    clock_mhz: float = field(default=0.0, metadata=_range(0.0, 2000.0))
    #: end the accelerator with a label select (the class index) instead of the class scores
    label_select: bool = False
    #: check model.qonnx, streamlined.onnx and dataflow.onnx against each other with qonnx's executor
    verify: bool = True
    #: test samples to verify on (0 = the whole test split)
    verify_samples: int = field(default=1024, metadata=_range(0))


@dataclass(frozen=True)
class FpgaConfig:
    #: cosimulate the generated RTL on this many test samples (0 = all that the compile step verified on)
    cosim_samples: int = field(default=1024, metadata=_range(0))
    #: during cosimulation, the chance per cycle that the source offers a beat and that the sink takes one
    #: (random back-pressure; 1 = none)
    cosim_throughput: float = field(default=0.6, metadata=_range(0.05, 1.0))
    #: build a bitstream for the board in `bnnflow run` (open-toolchain boards; Xilinx boards go through FINN)
    bitstream: bool = True
    #: baud rate of the board's UART wrapper
    baud: int = field(default=115_200, metadata=_range(1_200, 12_000_000))
    #: place-and-route seed of nextpnr
    seed: int = field(default=1, metadata=_range(0))


@dataclass(frozen=True)
class FinnConfig:
    #: FINN board to build for (FINN's name, e.g. Pynq-Z1, ZCU104, KV260_SOM, U250; `bnnflow finn --help`)
    board: str = "Pynq-Z1"
    #: frames/s for FINN's own folding (0 = bnnflow's folding from dataflow.onnx, as FINN's folding config)
    target_fps: float = field(default=0.0, metadata=_range(0.0))
    #: accelerator clock in MHz (0 = compile.clock_mhz, or 100)
    clock_mhz: float = field(default=0.0, metadata=_range(0.0, 1000.0))
    #: test samples FINN's verification steps run (each one goes through C++ and RTL simulation: keep it small)
    verify_samples: int = field(default=10, metadata=_range(0, 10_000))


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
    "export": ExportConfig,
    "compile": CompileConfig,
    "fpga": FpgaConfig,
    "finn": FinnConfig,
    "recipe": RecipeConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    fpga: FpgaConfig = field(default_factory=FpgaConfig)
    finn: FinnConfig = field(default_factory=FinnConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        """Build and validate a config from nested dicts (a parsed TOML file)."""
        if not isinstance(raw, dict):
            raise ConfigError("config: expected a table of sections")
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"config: unknown section [{unknown[0]}] (allowed: {', '.join(SECTIONS)})")
        sections = {}
        for name, section_cls in SECTIONS.items():
            value = raw.get(name, {})
            if not isinstance(value, dict):
                raise ConfigError(f"config: [{name}] must be a table, got {type(value).__name__}")
            sections[name] = _build_section(name, section_cls, value)
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts of TOML-writable values (enums as their string values)."""

        def plain(value: Any) -> Any:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {name: {k: plain(v) for k, v in dataclasses.asdict(getattr(self, name)).items()} for name in SECTIONS}

    def identity(self) -> "Config":
        """The config with where it trains (``train.device``, ``train.workers``) at the defaults: what makes two
        runs the same run. A run trained on a GPU continues, and stays up to date, on a machine without one."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, device="auto", workers=0))

    def changes(self, before: "Config") -> list[str]:
        """``section.key = new (was old)`` for every setting that differs from ``before``, for messages."""
        old, new = before.to_dict(), self.to_dict()
        return [f"{section}.{key} = {new[section][key]!r} (was {old[section].get(key)!r})" for section in new
                for key in new[section] if new[section][key] != old[section].get(key)]

    def with_absolute_paths(self, base: Path) -> "Config":
        """A copy whose relative file and folder fields are resolved against ``base``, so the run reads the same
        files whatever the working directory of the stages that follow."""
        sections = {}
        for name in SECTIONS:
            section = getattr(self, name)
            changes = {f.name: os.path.abspath(Path(base, Path(getattr(section, f.name)).expanduser()))
                       for f in fields(section) if f.metadata.get("path") and getattr(section, f.name)}
            sections[name] = dataclasses.replace(section, **changes)
        return Config(**sections)

    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """A copy with dotted keys (``train.epochs``) replaced; values are validated like file values."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            parts = dotted.split(".")
            if len(parts) < 2 or parts[0] not in SECTIONS:
                raise ConfigError(f"override {dotted!r}: expected SECTION.KEY with SECTION one of {', '.join(SECTIONS)}")
            target = raw[parts[0]]
            for part in parts[1:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"override {dotted!r}: {part} is not a table")
            target[parts[-1]] = value
        return Config.from_dict(raw)


def _build_section(section: str, section_cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(section_cls)
    known = {f.name: f for f in fields(section_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"config: unknown key {section}.{unknown[0]} (allowed: {', '.join(known)})")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _check_value(f"{section}.{name}", hints[name], known[name], value)
    return section_cls(**kwargs)


def _check_value(key: str, hint: Any, spec: dataclasses.Field, value: Any) -> Any:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if isinstance(value, hint):
            return value
        if value not in allowed:
            raise ConfigError(f"config: {key} = {value!r} is not allowed (allowed: {', '.join(allowed)})")
        return hint(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {key} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {key} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"config: {key} must be a finite number, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {key} must be a string, got {value!r}")
    elif getattr(hint, "__origin__", None) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config: {key} must be a table, got {value!r}")
        return dict(value)
    check = spec.metadata.get("check")
    problem = check(value) if check is not None else None
    if problem:
        raise ConfigError(f"config: {key} = {value!r} {problem}")
    choices = spec.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config: {key} = {value!r} is not allowed (allowed: {', '.join(map(str, choices))})")
    lo, hi = spec.metadata.get("range", (None, None))
    if spec.metadata.get("zero") and value == 0:
        return value
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'}"
        zero = "0 or " if spec.metadata.get("zero") else ""
        raise ConfigError(f"config: {key} = {value!r} is out of range (allowed: {zero}{bounds})")
    return value


def load_config(path: Path | None) -> Config:
    """Read a TOML config file; ``None`` gives the bundled default."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: {path} does not exist (pass a TOML file, or no file for the digits default)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config: {path} is not valid TOML ({err})") from None
    return Config.from_dict(raw)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` from the command line, reading VALUE as a TOML value (falling back to a string)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value
