"""report.html: rendered from a real run in headless Chromium, every section there with the run's own figures
and without a console error; a run part-way through, a run compiled from a bare QONNX file and a run with damaged
files still give a whole page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnnflow.pipeline.report import render_page, write_report
from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.rundir import RunDir
from tests.conftest import run_cli
from tests.pipeline.chromium import Chromium, find_chromium

SECTIONS = {"run": "", "accuracy": "Accuracy through the verification ladder", "confusion": "Confusion matrix",
            "training": "Training", "accelerator": "Accelerator", "resources": "Resources and timing",
            "edge": "Edge latency"}

#: what the tests read off the page (JavaScript evaluated in the loaded page)
PAGE = {
    "sections": "[...document.querySelectorAll('body section')].map(s => ({id: s.id, "
                "title: s.querySelector('h2') ? s.querySelector('h2').textContent : '', text: s.innerText}))",
    "stages": "Object.fromEntries([...document.querySelectorAll('li[data-stage]')]"
              ".map(li => [li.dataset.stage, li.innerText]))",
    "ladder": "Object.fromEntries([...document.querySelectorAll('tr[data-level]')].map(r => [r.dataset.level, "
              "{accuracy: r.querySelector('.acc').innerText, differing: r.querySelector('.mism').innerText, "
              "text: r.innerText}]))",
    "confusion": "[...document.querySelectorAll('table.confusion tbody tr')].map(r => "
                 "[...r.querySelectorAll('td.cm')].map(td => Number(td.textContent.replace(/,/g, ''))))",
    "charts": "[...document.querySelectorAll('#training svg.chart')].map(svg => [...svg.querySelectorAll('polyline')]"
              ".map(p => p.getAttribute('points').trim().split(/\\s+/).length))",
    "layers": "[...document.querySelectorAll('.layer')].map(d => ({name: d.dataset.layer, "
              "bottleneck: d.classList.contains('bottleneck'), text: d.innerText}))",
    "scripts": "document.querySelectorAll('script').length",
    "overflow": "document.documentElement.scrollWidth - document.documentElement.clientWidth",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A digits run through every stage (3 epochs, 50,000 frames/s, 50 cosimulated samples, the ULX3S bitstream,
    the edge variants and their latencies), with copies of its folder as it was after training and after compile."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    base = tmp_path_factory.mktemp("report")
    cfg = validate(Config().with_overrides({"train.epochs": 3, "train.threads": 1, "compile.target_fps": 50_000,
                                            "fpga.cosim_samples": 50}))
    run = prepare_run(cfg, base / "run")
    run_steps(cfg, run, ["train"])
    shutil.copytree(run.root, base / "after-train")
    run_steps(cfg, run, ["export", "compile"])
    shutil.copytree(run.root, base / "after-compile")
    run_steps(cfg, run, ["simulate", "rtl", "bitstream"])
    for args in (["edge", "export", str(run.root)], ["edge", "bench", str(run.root), "--runs", "5"]):
        done = run_cli("-q", *args, cwd=base)
        assert done.returncode == 0, done.stderr
    return {"full": run.root, "after-train": base / "after-train", "after-compile": base / "after-compile"}


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; `make test` does it as root), so "
                    "report.html cannot be rendered")
    with Chromium(binary) as chromium:
        yield chromium


def rendered(browser: Chromium, root: Path) -> dict[str, Any]:
    """Write the run's report, load it, fail on any console error, exception or request; the page's values."""
    page = write_report(RunDir(root))
    loaded = browser.load(page, PAGE)
    assert loaded.problems == [], loaded.problems
    values = loaded.values
    assert values["scripts"] == 0 and values["overflow"] <= 0, "a static page that fits a 1280 px window"
    sections = {s["id"]: s for s in values["sections"]}
    assert list(sections) == list(SECTIONS)
    assert all(sections[i]["title"] == title for i, title in SECTIONS.items())
    values["text"] = {i: s["text"] for i, s in sections.items()}
    return values


def summary(root: Path) -> dict[str, Any]:
    return json.loads((root / "summary.json").read_text())["stages"]


def test_full_run_report_shows_every_section_with_the_runs_figures(runs, browser) -> None:
    root = runs["full"]
    stages = summary(root)
    page = rendered(browser, root)
    text = page["text"]
    assert "nreadable" not in "".join(text.values()) and "Not run yet" not in "".join(text.values())

    # header: identity, headline figures, every stage ok with its time
    assert str(root.resolve()) in text["run"] and "digits_mlp" in text["run"] and "ulx3s" in text["run"]
    assert set(page["stages"]) == set(stages)
    for name, entry in stages.items():
        assert entry["status"] in page["stages"][name] and fmt.seconds(entry["seconds"]) in page["stages"][name], name

    # the ladder: every level's accuracy on the test split, 0 outputs differing at every exact level
    ladder = page["ladder"]
    assert ladder["PyTorch"]["accuracy"].startswith(fmt.percent(stages["train"]["test_accuracy"]))
    assert ladder["model.qonnx"]["accuracy"].startswith(fmt.percent(stages["export"]["qonnx_accuracy"]))
    for level in ("model.qonnx", "streamlined.onnx", "dataflow.onnx", "simulator", "RTL", "edge reference",
                  "edge bitpacked"):
        assert ladder[level]["differing"].split()[0] == "0", level
    for level in ("streamlined.onnx", "dataflow.onnx", "simulator"):
        assert ladder[level]["accuracy"].startswith(fmt.percent(stages["export"]["qonnx_accuracy"])), level
    assert "50 cosimulated samples" in ladder["RTL"]["text"] and "/ 50" in ladder["RTL"]["accuracy"]
    for variant in ("reference", "int8", "bitpacked"):
        shown = ladder[f"edge {variant}"]["accuracy"]
        assert shown.startswith(fmt.percent(stages["edge"][f"{variant}_test_accuracy"])), variant

    # the confusion matrix of the simulator: all 360 test samples, its diagonal the correct ones
    matrix = np.array(page["confusion"])
    assert "simulator" in text["confusion"] and matrix.shape == (10, 10) and matrix.sum() == 360
    assert fmt.percent(np.trace(matrix) / 360) == fmt.percent(stages["export"]["qonnx_accuracy"])

    # training curves: two charts, train and test, one point per epoch
    assert page["charts"] == [[3, 3], [3, 3]]
    metrics = [json.loads(line) for line in (root / "train" / "metrics.jsonl").read_text().splitlines()]
    assert fmt.percent(metrics[-1]["test_accuracy"]) in text["training"]

    # the accelerator: dataflow.onnx's layers in order with their cycles, the bottleneck marked
    estimates = json.loads((root / "compile" / "estimates.json").read_text())
    assert [layer["name"] for layer in page["layers"]] == [layer["name"] for layer in estimates["layers"]]
    for shown, layer in zip(page["layers"], estimates["layers"]):
        assert f"{fmt.integer(layer['cycles'])} cycles/frame" in shown["text"]
        assert f"PE {layer['PE']}" in shown["text"] and f"SIMD {layer['SIMD']}" in shown["text"]
        assert shown["bottleneck"] == (layer["name"] == stages["compile"]["bottleneck"])
    assert "lanes" in text["accelerator"], "the width converters between layers of different lanes"

    # resources: estimate and place and route against the board, Fmax, timing, frames/s at the clock and at Fmax
    built = stages["bitstream"]
    for figure in (fmt.integer(estimates["luts"], "LUT4"), fmt.integer(built["luts"], "LUT4"), "of 83,640",
                   fmt.integer(built["flip_flops"]), fmt.mhz(built["fmax_mhz"]),
                   fmt.integer(built["frames_per_second"], "frames/s"),
                   fmt.integer(built["frames_per_second_at_fmax"], "frames/s")):
        assert figure in text["resources"], figure
    assert ("timing met" if built["timing_met"] else "timing not met") in text["resources"]

    # edge latencies: each model's p50, p90, p99 and speed-up
    bench = json.loads((root / "edge" / "bench.json").read_text())
    for name, entry in bench["models"].items():
        row = next(line for line in text["edge"].splitlines() if line.startswith(name))
        for key in ("p50_ms", "p90_ms", "p99_ms"):
            assert fmt.latency_ms(entry[key]) in row, (name, key)
        assert fmt.ratio(entry["speedup_vs_float"]) in row


def test_report_after_training_says_what_has_not_run(runs, browser, tmp_path: Path) -> None:
    root = shutil.copytree(runs["after-train"], tmp_path / "run")
    page = rendered(browser, root)
    text = page["text"]
    assert "ok" in page["stages"]["train"] and "not run yet" in page["stages"]["compile"]
    assert page["charts"] == [[3, 3], [3, 3]]
    for section in ("accuracy", "confusion", "accelerator", "resources", "edge"):
        assert "Not run yet" in text[section], section
    assert page["layers"] == [] and page["ladder"] == {}


def test_report_after_compile_has_estimates_but_no_build(runs, browser, tmp_path: Path) -> None:
    root = shutil.copytree(runs["after-compile"], tmp_path / "run")
    page = rendered(browser, root)
    assert page["ladder"]["dataflow.onnx"]["differing"].split()[0] == "0"
    assert "not run yet" in page["ladder"]["simulator"]["text"]
    assert "dataflow.onnx" in page["text"]["confusion"], "the deepest level with predictions so far"
    assert "bottleneck" in page["text"]["accelerator"] and "Not run yet" in page["text"]["resources"]


def test_report_of_a_bare_qonnx_run_says_there_are_no_labels(runs, browser, tmp_path: Path) -> None:
    done = run_cli("-q", "compile", str(runs["full"] / "model.qonnx"), "--out", "bare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = rendered(browser, tmp_path / "bare")
    assert "no labels" in page["text"]["accuracy"] and "no labels" in page["text"]["confusion"]
    assert page["ladder"]["dataflow.onnx"]["differing"].split()[0] == "0"
    assert "PyTorch" not in page["ladder"] and "train" not in page["stages"]
    assert "made elsewhere" in page["text"]["run"] and "No training" in page["text"]["training"]


#: run files and what damages them; each must leave the page whole, the part that needs it saying so
DAMAGE = ["summary.json", "config.toml", "train/metrics.jsonl", "verify/export.npz", "verify/compile.npz",
          "sim/outputs.npy", "sim/report.json", "compile/estimates.json", "dataflow.onnx", "rtl/interface.json",
          "rtl/cosim.json", "fpga/ulx3s/report.json", "edge/export.json", "edge/bench.json"]


@pytest.mark.parametrize("rel", DAMAGE)
def test_a_damaged_file_does_not_stop_the_report(runs, tmp_path: Path, rel: str) -> None:
    root = shutil.copytree(runs["full"], tmp_path / "run")
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2] + b"\x00garbage{")
    page = render_page(root)
    assert all(f"<section id='{section}'>" in page for section in SECTIONS)
    assert "unreadable" in page.lower() and rel in page, rel


def test_failed_stage_and_markup_from_files(runs, browser, tmp_path: Path) -> None:
    """A failed stage shows its error, escaped like everything the page takes from a file; wrong JSON types read
    as unreadable, not as an exception."""
    root = shutil.copytree(runs["full"], tmp_path / "run")
    stages = summary(root)
    stages["rtl"] = {"status": "failed", "seconds": 3.5,
                     "error": "rtl: the Verilog disagrees <script>alert('x')</script> on 2 of 50 samples"}
    (root / "summary.json").write_text(json.dumps({"bnnflow_version": "0.1.0", "stages": stages}))
    (root / "edge" / "bench.json").write_text(json.dumps({"models": {"<b>float</b>": {"p50_ms": "fast"}}}))
    (root / "rtl" / "interface.json").write_text("[1, 2, 3]")
    page = rendered(browser, root)
    assert "failed" in page["stages"]["rtl"] and "rtl failed" in page["text"]["accuracy"]
    assert "disagrees <script>alert('x')</script> on 2 of 50" in page["text"]["accuracy"]
    assert "<b>float</b>" in page["text"]["edge"] and "nreadable" in page["text"]["accelerator"]


def test_console_errors_are_caught(browser, tmp_path: Path) -> None:
    """The harness itself: a script error, a console error and a request off the page are all reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><title>t</title><script>console.error('boom'); missing();</script>"
                    "<img src='http://192.0.2.1/x.png'>")
    problems = " | ".join(browser.load(page, {}).problems)
    assert "console.error: boom" in problems and "missing is not defined" in problems
    assert "network request: http://192.0.2.1/x.png" in problems
