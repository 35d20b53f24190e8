"""Bad input to export and verify: clear errors, nothing already written is lost."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeconv.cli import main
from edgeconv.artifact import Artifact
from edgeconv.exporters import export
from edgeconv.parity import verify


class SpectralNet(nn.Module):
    """A conv net with an FFT: ONNX has DFT for it, TFLite and ExecuTorch do not."""
    input_shape = (3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.fft.rfft2(self.conv(x)).abs()
        return self.fc(y.mean((2, 3)))


def test_unsupported_op_names_op_and_backend_and_others_still_export(tmp_path):
    art = export(SpectralNet().eval(), precisions=["fp32"], out=tmp_path / "a")
    assert list(art.files) == ["model_fp32.onnx"]
    failed = {e["format"]: e for e in art.errors}
    assert set(failed) == {"tflite", "executorch"}
    for fmt, e in failed.items():
        assert e["op"] and ("fft" in e["op"] or "abs" in e["op"]), e
        assert e["message"].startswith(f"{fmt} cannot export op ")
    # the failures are on disk too, and the ONNX file is intact
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(manifest["errors"]) == 2 and "model_fp32.onnx" in manifest["files"]
    assert not list((tmp_path / "a").glob("*.tflite")) and not list((tmp_path / "a").glob("*.pte"))


def test_empty_or_misshapen_calibration_fails_before_export(tmp_path):
    from edgeconv.zoo import create_model
    model = create_model("tiny")
    with pytest.raises(ValueError, match="int8 needs calibration samples"):
        export(model, calib=np.zeros((0, 3, 32, 32), np.float32), out=tmp_path / "a")
    with pytest.raises(ValueError, match=r"calibration samples have shape \(3, 28, 28\)"):
        export(model, calib=np.zeros((4, 3, 28, 28), np.float32), out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_bad_calibration_sources(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["export", "tiny", "--calib", str(empty), "--out", str(tmp_path / "o1")])
    assert res.exit_code == 2 and "holds no image files" in res.output
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 1, 8, 8), np.float32))
    res = runner.invoke(main, ["export", "tiny", "--calib", str(bad), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "has shape (5, 1, 8, 8); the model needs N x 3 x 32 x 32" in res.output
    res = runner.invoke(main, ["export", "tiny", "--formats", "onnx,coreml", "--out", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "coreml" in res.output and "executorch, onnx, tflite" in res.output
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "tiny"
    res = CliRunner().invoke(main, ["export", "tiny", "--formats", "onnx,tflite", "--calib-count", "16",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_existing_output_is_not_overwritten_without_force(tiny_artifact):
    before = {p.name: p.read_bytes() for p in tiny_artifact.iterdir()}
    res = CliRunner().invoke(main, ["export", "tiny", "--formats", "onnx", "--out", str(tiny_artifact)])
    assert res.exit_code == 2 and "--force" in res.output
    assert {p.name: p.read_bytes() for p in tiny_artifact.iterdir()} == before


@pytest.mark.parametrize("name, fmt", [("model_int8.tflite", "tflite"), ("model_fp32.onnx", "onnx")])
def test_verify_names_truncated_file_and_format(tiny_artifact, tmp_path, name, fmt):
    import shutil
    art_dir = tmp_path / "copy"
    shutil.copytree(tiny_artifact, art_dir)
    path = art_dir / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    res = verify(art_dir, count=4)
    row = next(r for r in res["rows"] if r["file"] == name)
    assert not res["ok"] and not row["ok"]
    assert name in row["error"] and f"({fmt})" in row["error"] and "sha256" in row["error"]
    assert all(r["ok"] for r in res["rows"] if r["file"] != name)  # the others were still checked
    # the manifest agreeing with the broken file: the runtime itself refuses it, named
    art = Artifact.load(art_dir)
    from edgeconv.artifact import sha256
    art.files[name].sha256, art.files[name].bytes = sha256(path), path.stat().st_size
    art.save()
    cli = CliRunner().invoke(main, ["verify", str(art_dir), "--count", "4"])
    assert cli.exit_code == 1
    assert name in cli.output and "cannot load this" in cli.output


# -- a file that is not the exported one: every verb that runs it refuses it -----------------------
def test_every_verb_refuses_the_fp32_file_copied_over_the_int8_one(tiny_artifact, tmp_path):
    import shutil
    art_dir = tmp_path / "copy"
    shutil.copytree(tiny_artifact, art_dir)
    shutil.copy(art_dir / "model_fp32.onnx", art_dir / "model_int8.onnx")
    expected = Artifact.load(art_dir).files["model_int8.onnx"].sha256
    runner = CliRunner()
    results = tmp_path / "r.jsonl"
    res = runner.invoke(main, ["bench", str(art_dir), "--runtime", "onnxruntime", "--results", str(results),
                               "--warmup", "0", "--min-runs", "2", "--min-seconds", "0"])
    assert res.exit_code == 1 and "model_int8.onnx" in res.output and expected in " ".join(res.output.split())
    recs = {r["file"]: r for r in map(json.loads, results.read_text().splitlines())}
    # no fp32 latency is recorded under the int8 file's name and hash
    assert recs["model_int8.onnx"]["status"] == "error" and not recs["model_int8.onnx"]["samples_ms"]
    assert recs["model_fp32.onnx"]["status"] == "ok"
    res = runner.invoke(main, ["check", str(art_dir), "--data", "digits", "--limit", "10", "--formats", "onnx"])
    assert res.exit_code == 1 and "model_int8.onnx" in res.output and expected in " ".join(res.output.split())
    row = json.loads((art_dir / "accuracy.json").read_text())["rows"][0]
    assert not row["ok"] and "sqnr_db" not in row and expected in row["error"]
    res = runner.invoke(main, ["verify", str(art_dir), "--count", "4"])
    assert res.exit_code == 1 and expected in " ".join(res.output.split())
    # the eager reference is held to its checksum too (verify and check --localize compare against it)
    shutil.copy(tiny_artifact / "model_int8.onnx", art_dir / "model_int8.onnx")
    (art_dir / "reference.pt").write_bytes((art_dir / "reference.pt").read_bytes()[:-10])
    res = runner.invoke(main, ["verify", str(art_dir), "--count", "4"])
    assert res.exit_code == 2 and "reference.pt" in res.output and "sha256" in res.output


# -- an interrupted export: named as such by every verb, finished by running it again ---------------
def test_killed_export_is_named_missing_and_filled_in_by_a_rerun(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "art"
    argv = ["export", "tiny", "--formats", "onnx,executorch,tflite", "--precision", "fp32", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "edgeconv", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                files = json.loads((out / "manifest.json").read_text())["files"]
            except (OSError, ValueError):
                files = {}
            if len(files) >= 2:
                break
            assert proc.poll() is None, "the export ended before its second file"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["model_fp32.onnx", "model_fp32.pte"] and manifest["complete"] is False
    assert manifest["errors"] == [] and ["tflite", "fp32"] in manifest["requested"]
    runner = CliRunner()
    for args, code in ((["verify", str(out), "--count", "2"], 1),
                       (["bench", str(out), "--results", str(tmp_path / "r.jsonl")], 2),
                       (["check", str(out), "--data", "digits", "--limit", "5"], 2)):
        res = runner.invoke(main, args)
        assert res.exit_code == code, res.output
        assert "did not finish" in res.output and "missing: tflite fp32" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "r.jsonl").exists()
    kept = {name: (out / name).stat().st_mtime_ns for name in ("model_fp32.onnx", "model_fp32.pte", "reference.pt")}
    res = runner.invoke(main, argv)
    assert res.exit_code == 0, res.output
    assert "2 file(s) already there, 1 to go" in res.output
    art = Artifact.load(out)
    assert art.manifest.complete and sorted(art.files) == ["model_fp32.onnx", "model_fp32.pte", "model_fp32.tflite"]
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # only the missing file was written
    assert not list(out.glob(".*partial*")) and not (out / ".edgeconv.lock").exists()
    assert runner.invoke(main, ["verify", str(out), "--count", "2"]).exit_code == 0


# -- --force replaces what edgeconv wrote, and nothing else ----------------------------------------
def test_force_deletes_only_what_the_manifest_names(tiny_artifact, tmp_path):
    import shutil
    runner = CliRunner()
    argv = ["export", "tiny", "--formats", "onnx", "--precision", "fp32", "--force", "--out"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    (foreign / "model_fp32.onnx").write_text("my own file of that name")
    res = runner.invoke(main, [*argv, str(foreign)])
    assert res.exit_code == 2 and "not an artifact folder" in res.output
    assert sorted(p.name for p in foreign.iterdir()) == ["model_fp32.onnx", "notes.txt"]
    assert (foreign / "model_fp32.onnx").read_text() == "my own file of that name"

    art_dir = tmp_path / "art"
    shutil.copytree(tiny_artifact, art_dir)
    (art_dir / "notes.txt").write_text("keep")
    res = runner.invoke(main, [*argv, str(art_dir)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in art_dir.iterdir()) == ["labels.txt", "manifest.json", "model_fp32.onnx",
                                                         "notes.txt", "reference.pt"]
    (art_dir / "manifest.json").write_text("{}")  # not readable: which files are edgeconv's is unknown
    before = {p.name: p.read_bytes() for p in art_dir.iterdir()}
    res = runner.invoke(main, [*argv, str(art_dir)])
    assert res.exit_code == 2 and "deletes none" in res.output
    assert {p.name: p.read_bytes() for p in art_dir.iterdir()} == before
