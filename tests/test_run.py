"""`edgeconv run` end to end on the embedded default (shortened), the report in a real
headless browser, resume after a kill, and config errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.artifact import FORMATS, PRECISIONS
from edgeconv.pipeline import STAGES, RunConfig


@pytest.fixture(scope="module")
def finished_run(digits_run):
    return digits_run[0]


def test_every_stage_recorded_and_consistent(finished_run):
    d = finished_run
    state = json.loads((d / "run.json").read_text())
    assert [s for s in STAGES if state["stages"][s]["status"] == "done"] == list(STAGES)
    models = json.loads((d / "models.json").read_text())
    assert models["twin"]["cost"]["macs"] > models["model"]["cost"]["macs"]
    for side in ("model", "twin"):
        assert (d / "checkpoints" / f"{side}.pt").exists()
        man = json.loads((d / "artifacts" / side / "manifest.json").read_text())
        assert len(man["files"]) == len(FORMATS) * len(PRECISIONS) and not man["errors"]
        assert man["macs"] == models[side]["cost"]["macs"]
        assert json.loads((d / "artifacts" / side / "verify.json").read_text())["ok"]
        acc = json.loads((d / "artifacts" / side / "accuracy.json").read_text())
        assert {r["runtime"] for r in acc["rows"]} == {"onnxruntime", "litert", "executorch"}
        assert acc["data"]["count"] == 500
    records = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(FORMATS) * len(PRECISIONS)
    assert all(r["status"] == "ok" and len(r["samples_ms"]) >= 10 for r in records)
    shas = {e["sha256"] for side in ("model", "twin")
            for e in json.loads((d / "artifacts" / side / "manifest.json").read_text())["files"].values()}
    assert {r["sha256"] for r in records} == shas
    md = (d / "report.md").read_text()
    for section in ("Per-block cost: model", "Latency", "Twin speedup", "Accuracy: int8 vs fp32",
                    "Model files", "Environment"):
        assert f"## {section}" in md


def test_plots_are_real_images(finished_run):
    from PIL import Image
    plots = sorted((finished_run / "plots").glob("*.png"))
    assert {p.stem for p in plots} == {"cost", "latency", "twin_speedup", "accuracy"}
    for p in plots:
        with Image.open(p) as img:
            assert img.width > 300 and img.height > 200
            assert len(set(img.convert("L").getdata())) > 10  # drawn, not blank


def test_report_rebuilds_from_files_alone(finished_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    for f in ["report.html", "report.md", *(f"plots/{p.name}" for p in (copy / "plots").glob("*.png"))]:
        (copy / f).unlink()
    res = CliRunner().invoke(main, ["report", str(copy)])
    assert res.exit_code == 0, res.output
    assert (copy / "report.html").stat().st_size > 10_000 and len(list((copy / "plots").glob("*.png"))) == 4


def test_report_in_headless_chromium(finished_run):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get((finished_run / "report.html").resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 4 and all(w > 0 for w in widths), widths
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert "edgeconv report" in driver.title
    finally:
        driver.quit()


def test_kill_during_bench_then_resume(digits_run):
    out, killed, output = digits_run
    assert killed["state"]["stages"]["bench"]["status"] == "running"
    assert killed["state"]["stages"]["export"]["status"] == "done"
    total = 2 * len(FORMATS) * len(PRECISIONS)
    assert 2 <= killed["records"] < total
    for stage in ("build", "train", "export", "verify", "check"):
        assert f"[{stage}] done before, skipped" in output
    for path, mtime in killed["mtimes"].items():
        assert (out / path).stat().st_mtime == mtime, f"{path} was written again"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == total and all(r["status"] == "ok" for r in records)  # finished ones not redone
    assert len({r["sha256"] for r in records}) == total
    assert (out / "report.html").exists()


@pytest.mark.parametrize("text, message", [
    ('[model]\nmodle = "tiny"\n', "unknown key 'modle'; allowed keys: model, "),
    ('[export]\nformats = ["onnx", "coreml"]\n', "key 'formats': 'coreml' is not allowed; allowed values: "
                                                  "onnx, tflite, executorch"),
    ('[model]\nmodel = "resnet50"\n', "key 'model' = 'resnet50': allowed values: efficientnet_lite0, "),
    ('[bench]\nthreads = [0]\n', "key 'threads' = [0]"),
    ('[bench]\nmin_runs = "ten"\n', "key 'min_runs' = 'ten': expected int"),
    ("model = [", "not valid TOML"),
    # found only after train and export before: now before any stage
    ('[bench]\nmodel = "mobilenet_v2"\n', "key 'model' is in [bench] but belongs in [model]"),
    ('[bench]\ndevices = []\n', "key 'devices' is empty"),
    ('[bench]\ndevices = ["pi9"]\n', "key 'devices': unknown device 'pi9'"),
    ('[bench]\nwarmup = -1\n', "key 'warmup' = -1: must be >= 0"),
    ('[bench]\nmin_seconds = 1000.0\n', "[bench]: min_seconds=1000.0 is more than max_seconds=120.0"),
    ('[quant]\nkeep_fp32 = ["blocks.9"]\n', "[quant] keep_fp32: no module named blocks.9 in tiny"),
    ('[model]\npretrained = true\n', "key 'pretrained' = true: tiny has no pretrained weights"),
    ('[model]\ninput_size = 100000\n', "key 'model' = 'tiny': input_size=100000: must be a whole number from 1 to"),
    ('[export]\nformats = ["onnx"]\n[bench]\nruntimes = ["litert"]\n',
     "key 'runtimes': 'litert' runs none of the formats exported (onnx)"),
])
def test_broken_config_names_key_and_allowed_values(tmp_path, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    res = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "run").exists()


def test_every_config_key_has_one_table():
    from dataclasses import fields

    from edgeconv.pipeline import SECTIONS
    keys = [k for keys in SECTIONS.values() for k in keys]
    assert len(keys) == len(set(keys))
    flat = [k for s, keys in SECTIONS.items() if s != "sweep" for k in keys] + ["sweep"]  # [sweep] is one field
    assert sorted(flat) == sorted(f.name for f in fields(RunConfig))
    RunConfig().validate()  # the embedded default needs no file, data or device


def test_force_deletes_only_what_runs_write(tmp_path):
    from edgeconv.artifact import Artifact, FileEntry, IOSpec, Manifest
    from edgeconv.pipeline import _clear_run
    out = tmp_path / "run"
    ours = ["run.json", "results.jsonl", "report.html", "checkpoints/model.pt", "checkpoints/model.json",
            "plots/latency.png", "artifacts/model/model_fp32.onnx", "artifacts/model/reference.pt",
            "artifacts/model/verify.json"]
    mine = ["notes.md", "checkpoints/my_experiment.pt", "plots/my_plot.svg", "artifacts/model/my_notes.txt",
            "artifacts/elsewhere/model_fp32.onnx"]
    for name in ours + mine:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    io = IOSpec("input", [1, 3, 32, 32])
    Artifact(out / "artifacts" / "model", Manifest("tiny", [1, 3, 32, 32], files={
        "model_fp32.onnx": FileEntry("onnx", "fp32", io, io, "0" * 64, 1)})).save()
    _clear_run(out, force=True)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == sorted(mine)
    assert not (out / "artifacts" / "model" / "manifest.json").exists()


def test_second_run_on_a_folder_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    from edgeconv.artifact import FolderLock, LockedError
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgeconv", "run", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    lock = out / FolderLock.NAME
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == proc.pid:
                break
            assert proc.poll() is None, "the first run ended before it locked its folder"
            time.sleep(0.1)
        # what the first run has written, not its writes in flight (a .tmp file is renamed into place)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".tmp"}
        res = CliRunner().invoke(main, ["run", "--out", str(out)])
        assert res.exit_code == 2, res.output
        assert f"in use by another edgeconv process (pid {proc.pid}" in " ".join(res.output.split())
        with pytest.raises(LockedError):
            FolderLock(out).__enter__()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert all(p.read_bytes() == data for p, data in before.items() if p.name not in ("run.json", ".edgeconv.lock"))
    # kill -9 left the lock file naming a dead process: the next writer takes it over, then removes it
    assert json.loads(lock.read_text())["pid"] == proc.pid
    with FolderLock(out) as held:
        assert json.loads(lock.read_text())["pid"] == os.getpid() and held.fd is not None
    assert not lock.exists()


def test_stale_lock_file_in_an_artifact_folder_is_taken_over(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / ".edgeconv.lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": "gone", "command": "edgeconv export"}))
    res = CliRunner().invoke(main, ["export", "tiny", "--formats", "onnx", "--precision", "fp32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "manifest.json", "model_fp32.onnx", "reference.pt"]
