"""The emulated arm64 device (qemu-aarch64, bench_device/setup_arm64.sh): the agent runs
int8 and fp32 ONNX and TFLite artifacts of `tiny` there, and their outputs agree with the
same files run on this x86_64 host, on held-out real digits.

Tolerances, relative to the x86 output range (max - min over the 64 images):
  fp32: 1e-5 (float rounding: the two builds sum in other orders with other SIMD kernels;
        measured 3.6e-8 ONNX Runtime, 4.3e-7 LiteRT).
  int8 LiteRT: 1e-6 (measured identical: the same integer kernels reach the same integers).
  int8 ORT (QDQ): 1% (measured identical here on `tiny`, ~0.4% before on another tiny model:
        onnxruntime's x86 (AVX2/VNNI u8s8) and ARM (NEON dot-product) int8 kernels are
        different code and may requantise a few outputs one int8 step apart; 1% is about
        2.5 steps of the output scale).
  top-1: equal on >= 98% of the 64 images (measured 100% for all four files).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeconv.benchmark import TimingConfig, bench
from edgeconv.data import load_data

pytestmark = pytest.mark.arm64
AGENT = Path(__file__).resolve().parent.parent / "bench_device" / "agent.py"
PREPROCESS = {"resize": 32, "crop": 32, "mean": [.5, .5, .5], "std": [.5, .5, .5]}
REL_TOL = {("onnx", "fp32"): 1e-5, ("tflite", "fp32"): 1e-5, ("tflite", "int8"): 1e-6, ("onnx", "int8"): 1e-2}
MIN_TOP1_AGREEMENT = 0.98


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    x = load_data("digits", input_shape=(3, 32, 32), preprocess=PREPROCESS, split="eval", limit=64).x
    path = tmp_path_factory.mktemp("inputs") / "x.npy"
    np.save(path, x)
    return path


def _run(python, model, inputs, out):
    p = subprocess.run([str(python), str(AGENT), str(model), "--inputs", str(inputs), "--outputs", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    return np.load(out)


@pytest.mark.parametrize("fmt,precision", sorted(REL_TOL))
def test_arm64_matches_x86(arm64_python, tiny_artifact, digits, tmp_path, fmt, precision):
    model = tiny_artifact / f"model_{precision}.{fmt}"
    y86 = _run(sys.executable, model, digits, tmp_path / "x86.npy")
    yarm = _run(arm64_python, model, digits, tmp_path / "arm.npy")
    assert yarm.shape == y86.shape == (64, 10)
    rel = float(np.max(np.abs(yarm - y86)) / (y86.max() - y86.min()))
    top1 = float(np.mean(yarm.argmax(1) == y86.argmax(1)))
    print(f"\n{fmt} {precision}: max |arm64 - x86| / range = {rel:.2e}, top-1 agreement {top1:.1%}")
    assert rel <= REL_TOL[(fmt, precision)]
    assert top1 >= MIN_TOP1_AGREEMENT


def test_bench_on_arm64(arm64_python, tiny_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    recs = bench([tiny_artifact], ["qemu-arm64"], results, precisions=["int8"],
                 cfg=TimingConfig(warmup=1, min_runs=3, min_seconds=0, max_seconds=60))
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), [r["error"] for r in recs]
    for r in recs:
        assert r["device"]["arch"] == "aarch64" and r["device"]["emulated"].startswith("qemu-aarch64")
        assert "Cortex-A76" in r["device"]["cpu"] and len(r["samples_ms"]) >= 3
    assert [json.loads(line)["status"] for line in results.read_text().splitlines()] == ["ok", "ok"]


def test_check_on_arm64_beside_host(arm64_python, tiny_artifact, tmp_path):
    """`check --device qemu-arm64`: the int8 files scored on the emulated ARM CPU's own kernels,
    beside this host's int8 and fp32 figures (same labels, same model files), both kept in
    accuracy.json and shown side by side."""
    from click.testing import CliRunner

    from edgeconv.cli import main
    res = CliRunner().invoke(main, ["check", str(tiny_artifact), "--data", "digits", "--limit", "48",
                                    "--max-drop", "100", "--device", "qemu-arm64", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{"):])
    rows = {r["runtime"]: r for r in doc["rows"]}
    assert set(rows) == {"onnxruntime", "litert"}
    for r in rows.values():
        assert "error" not in r, r
        assert r["sqnr_db"] > 20 and r["device"]["sqnr_db"] > 20  # host and ARM int8 both track fp32
        assert r["device"]["name"] == "qemu-arm64" and "top1" in r["device"]["int8"] and "top1" in r["int8"]
        assert r["device"]["agreement_with_host_int8"] >= 0.95 and float(r["device"]["sqnr_db_vs_host_int8"]) > 25
    assert doc["device"] == "qemu-arm64"
    assert doc["data"]["count"] == 48
    saved = json.loads((tiny_artifact / "accuracy.json").read_text())
    assert all("device" in r and "int8" in r for r in saved["rows"])
    table = CliRunner().invoke(main, ["check", str(tiny_artifact), "--data", "digits", "--limit", "16",
                                      "--max-drop", "100", "--device", "qemu-arm64"])
    assert table.exit_code == 0 and "qemu-arm64 int8 top-1" in table.output and "int8 top-1" in table.output
