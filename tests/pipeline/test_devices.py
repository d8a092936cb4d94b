"""Where training runs: device choice, mixed precision per method, method state on the device (``meta`` tensors),
teachers from a run or a plain state dict, and the GPU runs themselves (marked ``gpu``, skipped without CUDA)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models import create_model
from bnnflow.models.methods import create_method, list_methods
from bnnflow.pipeline.config import AmpMode, Config
from bnnflow.pipeline.data import load_data
from bnnflow.pipeline.distributed import autocast, check_amp, rank_batches, resolve_device, shares
from bnnflow.pipeline.train import load_teacher

CUDA = torch.cuda.is_available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (PyTorch sees none here)")]
TINY = ["--set", "data.limit_train=32", "--set", "data.limit_test=16", "--set", "train.batch_size=16",
        "--set", "train.threads=1", "--set", "model.args={hidden = 16, depth = 1}", "--epochs", "1"]


@pytest.mark.parametrize("name,facts,expected", [
    ("auto", dict(cuda_devices=2, mps=True, local_rank=1, world=2), "cuda:1"),
    ("auto", dict(cuda_devices=0, mps=True), "mps"),
    ("auto", dict(cuda_devices=0, mps=False), "cpu"),
    ("cuda", dict(cuda_devices=4, local_rank=3, world=4), "cuda:3"),
    ("cuda:1", dict(cuda_devices=2), "cuda:1"),
    ("cpu", dict(cuda_devices=8, local_rank=5, world=8), "cpu"),
])
def test_resolve_device_follows_the_machine_and_the_local_rank(name: str, facts: dict, expected: str) -> None:
    assert resolve_device(name, **facts) == torch.device(expected)


@pytest.mark.parametrize("name,facts,message", [
    ("cuda", dict(cuda_devices=0), "no CUDA device"),
    ("cuda:2", dict(cuda_devices=2), "there is no cuda:2"),
    ("cuda", dict(cuda_devices=2, local_rank=2, world=3), "local rank 2 needs cuda:2"),
    ("cuda:0", dict(cuda_devices=2, world=2), "names one GPU"),
    ("mps", dict(mps=False), "no Apple MPS device"),
])
def test_resolve_device_refuses_what_the_machine_lacks(name: str, facts: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        resolve_device(name, **facts)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("amp,device,method,message", [
    ("fp16", "cpu", "ste", "not available on cpu; use bf16 or off"),
    ("bf16", "mps", "ste", "not available on mps; use fp16 or off"),
    ("fp16", "cuda", "rebnn", "rebnn method trains only with bf16"),
    ("fp16", "cuda", "rbonn", "rbonn method trains only with bf16"),
])
def test_amp_refused_where_device_or_method_cannot(amp: str, device: str, method: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_amp(AmpMode(amp), torch.device(device), method, create_method(method).amp)


def test_global_batches_split_the_same_permutation_whatever_the_process_count() -> None:
    one = rank_batches(37, 8, 1, 0, torch.Generator().manual_seed(5))
    assert [s.indices for s in one] == [torch.randperm(37, generator=torch.Generator().manual_seed(5)).tolist()[i:i + 8]
                                        for i in range(0, 37, 8)], "one process: RandomSampler's batches"
    for world in (2, 3):
        ranks = [rank_batches(37, 8, world, r, torch.Generator().manual_seed(5)) for r in range(world)]
        for step, share in enumerate(one):
            parts = [ranks[r][step] for r in range(world)]
            assert sum((p.indices for p in parts), []) == share.indices
            assert [p.offset for p in parts] == [sum(shares(share.batch, world)[:r]) for r in range(world)]
    assert shares(5, 3) == [2, 2, 1] and len(rank_batches(17, 8, 2, 0, torch.Generator())) == 2, \
        "a last global batch of 1 sample cannot be split over 2 processes"


def _tiny(name: str = "digits_mlp", **args) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, input_shape=(1, 8, 8), num_classes=10, **args)


@pytest.mark.parametrize("model_name,args", [("digits_mlp", dict(hidden=16, depth=1)),
                                             ("resnet20", dict(widths=[4, 8, 8], blocks=[1, 1, 1], stem_width=4))])
def test_every_method_keeps_its_state_on_the_model_device(model_name: str, args: dict) -> None:
    """After ``model.to("meta")`` every parameter and buffer is on ``meta``, and the hooks that work on the weights
    alone (epoch start, extra loss, after step) run there: a tensor a method made on the CPU would fail them."""
    for name in list_methods():
        model = _tiny(model_name, **args)
        method = create_method(name)
        method.prepare(model)
        model.to("meta")
        assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}, name
        method.on_epoch_start(model, 0, 2)
        extra = method.extra_loss(model)
        assert extra is None or extra.device.type == "meta", name
        method.after_step(model)


def test_every_method_trains_under_bf16_and_rbnn_rotates_in_float32() -> None:
    for name in list_methods():
        model, method = _tiny(hidden=16, depth=1), create_method(name)
        method.prepare(model)
        method.on_epoch_start(model, 0, 2)
        images, labels = torch.rand(8, 1, 8, 8), torch.arange(8)
        with autocast(AmpMode.BF16, torch.device("cpu")):
            outputs = model(images)
            loss = nn.functional.cross_entropy(outputs, labels)
        extra = method.extra_loss(model)
        loss = loss if extra is None else loss + extra
        loss.backward()
        method.after_backward(model)
        assert outputs.dtype == torch.bfloat16 and math.isfinite(loss.item()), name
        if name == "rbnn":
            layer = next(m for m in model.modules() if hasattr(m, "parametrizations"))
            with autocast(AmpMode.BF16, torch.device("cpu")):
                rotated = layer.parametrizations.weight[0].transform(layer.parametrizations.weight.original)
            plain = layer.parametrizations.weight[0].transform(layer.parametrizations.weight.original)
            assert rotated.dtype == torch.float32 and torch.equal(rotated, plain)


def test_cli_refuses_bad_device_and_amp_in_one_line(cli) -> None:
    for args, message in ((["--device", "gpu"], "train.device = 'gpu' is not a device"),
                          (["--set", "train.amp=fp16"], "train.amp = fp16 is not available on cpu"),
                          (["--method", "rebnn", "--set", "train.amp=fp16"], "rebnn method trains only with bf16"),
                          *([] if CUDA else [(["--device", "cuda"], "PyTorch sees no CUDA device")])):
        result = cli("train", "--out", "run", *TINY, *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not Path("run").exists(), "nothing is written for a bad device or amp"


def test_training_writes_images_per_second_and_placement(cli) -> None:
    result = cli("train", "--out", "run", *TINY, "--device", "cpu", "--set", "train.amp=bf16")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in Path("run/train/metrics.jsonl").read_text().splitlines()]
    assert row["images_per_second"] > 0 and (row["device"], row["amp"]) == ("cpu", "bf16")
    again = cli("train", "--out", "run", *TINY, "--device", "auto", "--set", "train.amp=bf16", "--resume")
    assert again.returncode == 0 and "different configuration" not in again.stderr, "the device is not the run"


# ---------------------------------------------------------------------------------------------------------------
# Teachers


@pytest.fixture(scope="module")
def digits():
    return load_data(Config().data)


def test_teacher_from_a_plain_state_dict_checked_by_name_and_shape(tmp_path: Path, digits) -> None:
    source = create_model("resnet18", input_shape=digits.input_shape, num_classes=digits.num_classes)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    teacher = load_teacher(str(path), "resnet18", digits)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.rand(4, *digits.input_shape)
    with torch.no_grad():
        assert torch.equal(teacher(x), source.eval()(x))

    wide = create_model("resnet18", input_shape=digits.input_shape, num_classes=1000).state_dict()
    save_file({k: v.contiguous() for k, v in wide.items()}, str(tmp_path / "imagenet.safetensors"))
    renamed = {f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}
    save_file(renamed, str(tmp_path / "ddp.safetensors"))
    (tmp_path / "notes.safetensors").write_text("not tensors")
    cases = [
        (tmp_path / "imagenet.safetensors", "resnet18", "fc.weight has shape (1000, 512), resnet18 for this data set "
                                                        "needs (10, 512)"),
        (tmp_path / "ddp.safetensors", "resnet18", "lacks conv1.weight"),
        (path, "resnet34", "lacks layer1.2.conv1.weight"),
        (path, "", "set train.teacher_model"),
        (tmp_path / "missing.safetensors", "resnet18", "does not exist"),
        (tmp_path / "notes.safetensors", "resnet18", "is not a safetensors file"),
    ]
    rgb = load_data(dataclasses.replace(Config().data, channels=3))
    pretrained = create_model("resnet18", input_shape=rgb.input_shape, num_classes=10)
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, str(tmp_path / "rgb.safetensors"))
    normalized = load_teacher(str(tmp_path / "rgb.safetensors"), "resnet18", rgb, {"normalize": True})
    x = torch.rand(2, *rgb.input_shape)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).reshape(
        1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), pretrained.eval()((x - mean) / std))
    cases.append((path, "resnet18", "normalize uses ImageNet's RGB statistics and needs 3 channels", {"normalize": True}))
    for file, model_name, message, *args in cases:
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            load_teacher(str(file), model_name, digits, *args)
        assert "\n" not in str(err.value)


def test_distillation_from_a_run_and_from_a_state_dict(cli, tmp_path: Path) -> None:
    assert cli("train", "--out", "teacher", *TINY).returncode == 0
    plain = tmp_path / "mlp.safetensors"
    torch.manual_seed(3)
    model = create_model("digits_mlp", input_shape=(1, 8, 8), num_classes=10)  # teacher_model's default args
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    losses = {}
    for name, sets in (("run", ["--set", "train.teacher=teacher/train/checkpoint.safetensors"]),
                       ("plain", ["--set", f"train.teacher={plain}", "--set", "train.teacher_model=digits_mlp"]),
                       ("labels", [])):
        result = cli("train", "--out", name, *TINY, *sets)
        assert result.returncode == 0, result.stderr
        losses[name] = json.loads(Path(name, "train", "metrics.jsonl").read_text())["train_loss"]
    assert len(set(losses.values())) == 3, f"each teacher gives its own loss: {losses}"
    wrong = cli("train", "--out", "wrong", *TINY, "--set", f"train.teacher={plain}", "--set",
                "train.teacher_model=resnet18")
    assert wrong.returncode == 2 and "lacks conv1.weight" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    assert not Path("wrong").exists(), "refused before anything is written"


# ---------------------------------------------------------------------------------------------------------------
# On a GPU


def _kill_after_first_epoch(args: list[str], cwd: Path) -> None:
    import signal
    import subprocess
    import time

    from tests.conftest import CLI

    proc = subprocess.Popen([*CLI, *args], cwd=cwd, stderr=subprocess.PIPE, text=True)
    metrics, deadline = cwd / "run" / "train" / "metrics.jsonl", time.monotonic() + 600
    while (not metrics.is_file() or not metrics.read_text().strip()) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (PyTorch sees none here)")
@pytest.mark.parametrize("method,amp", [("ste", "fp16"), ("rebnn", "bf16"), ("rbnn", "fp16")])
def test_gpu_checkpoint_resumes_and_exports_on_the_cpu(tmp_path: Path, method: str, amp: str) -> None:
    """Trained on the GPU with amp until killed after an epoch, continued on the CPU, exported on the CPU."""
    import subprocess

    from bnnflow.pipeline.checkpoint import load_checkpoint
    from tests.conftest import CLI

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    args = ["-q", "train", "--out", "run", "--method", method, "--set", f"train.amp={amp}", "--epochs", "20",
            "--set", "train.threads=1"]
    _kill_after_first_epoch([*args, "--device", "cuda"], tmp_path)
    state = load_checkpoint(tmp_path / "run" / "train" / "checkpoint.safetensors")
    assert state.extra["device"].startswith("cuda") and 1 <= state.epoch < 20
    assert all(t.device.type == "cpu" for t in state.model_state.values())
    for step in ([*args, "--device", "cpu", "--resume"], ["-q", "export", "run"]):
        done = subprocess.run([*CLI, *step], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["device"].startswith("cuda") and rows[-1]["device"] == "cpu"
    assert (tmp_path / "run" / "model.qonnx").is_file()


def test_methods_command_says_which_amp_each_method_takes(cli) -> None:
    result = cli("methods")
    lines = {line.split("(")[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == set(list_methods())
    for name, line in lines.items():
        assert f"[amp: {', '.join(create_method(name).amp)}]" in line
    assert "[amp: bf16]" in lines["rebnn"] and "[amp: bf16, fp16]" in lines["ste"]


def test_loader_workers_and_channels_last_train_the_same_steps(tmp_path: Path) -> None:
    """Batches read by a persistent worker process are the batches read in the training process (the same weights,
    bit for bit, over two epochs); channels-last memory order changes only the rounding of the convolutions."""
    from bnnflow.pipeline.checkpoint import load_checkpoint
    from bnnflow.pipeline.steps import prepare_run
    from bnnflow.pipeline.train import train
    from tests.pipeline import ddp_worker

    runs = {"plain": {}, "workers": {"train.workers": 1}, "channels_last": {"train.channels_last": True}}
    states = {}
    for name, overrides in runs.items():
        cfg = ddp_worker.case_config("conv-rebnn", 2).with_overrides({**overrides, "data.augment": True})
        train(cfg, prepare_run(cfg, tmp_path / name))
        states[name] = load_checkpoint(tmp_path / name / "train" / "checkpoint.safetensors").model_state
    for key, value in states["plain"].items():
        assert torch.equal(value, states["workers"][key]), key
        torch.testing.assert_close(value, states["channels_last"][key], rtol=1e-4, atol=1e-4, msg=key)


def test_image_folders_train_and_evaluate_through_loader_workers(tmp_path: Path) -> None:
    """An image folder is decoded by the loader's workers for training and streamed batch by batch for evaluation
    (never held whole in memory): the same weights and test figures as decoding in the training process."""
    from bnnflow.pipeline.checkpoint import load_checkpoint
    from bnnflow.pipeline.steps import prepare_run
    from bnnflow.pipeline.train import train
    from tests.pipeline.test_data import _make_imagefolder

    _make_imagefolder(tmp_path / "data")
    rows, states = {}, {}
    for workers in (0, 1):
        cfg = Config().with_overrides({"data.name": "imagefolder", "data.root": str(tmp_path / "data"),
                                       "data.image_size": 8, "model.args": {"hidden": 16, "depth": 1},
                                       "train.epochs": 2, "train.batch_size": 2, "train.threads": 1,
                                       "train.workers": workers})
        run = tmp_path / f"workers{workers}"
        train(cfg, prepare_run(cfg, run))
        rows[workers] = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
        states[workers] = load_checkpoint(run / "train" / "checkpoint.safetensors").model_state
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())
    for a, b in zip(rows[0], rows[1]):
        assert (a["test_loss"], a["test_accuracy"]) == (b["test_loss"], b["test_accuracy"])


def test_streamed_evaluation_equals_the_in_memory_one(digits) -> None:
    from torch.utils.data import DataLoader

    from bnnflow.pipeline.data import stack
    from bnnflow.pipeline.train import evaluate, evaluate_batches

    model = _tiny(hidden=16, depth=1)
    images, labels = stack(digits.test)
    loss, accuracy, _ = evaluate(model, images, labels, torch.device("cpu"))
    streamed = evaluate_batches(model, DataLoader(digits.test, batch_size=100), torch.device("cpu"))
    assert math.isclose(streamed[1], accuracy, rel_tol=1e-6) and math.isclose(streamed[0], loss, rel_tol=1e-6)
    assert model.training, "the model is left in the mode it was in"
