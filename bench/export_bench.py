"""Export + verify wall time, and host latency per runtime, fp32 vs int8.

For mobilenet_v2 1.0/224 and efficientnet_lite0 (pretrained): times `export` (3 formats x
fp32/int8) and `verify`, then benchmarks every file on this host with the device agent's
timing loop (1 thread, warm-up, >= 50 timed runs), interleaving files so that machine noise
hits them alike. Writes bench/results/export.json and prints a table.

    python bench/export_bench.py [--models mobilenet_v2,efficientnet_lite0] [--calib digits]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_device.agent import Session, make_input  # noqa: E402
from edgeconv.data import load_data  # noqa: E402
from edgeconv.exporters import export  # noqa: E402
from edgeconv.parity import verify  # noqa: E402
from edgeconv.zoo import create_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    p.add_argument("--calib", default="digits", help="calibration source (digits or an image folder)")
    p.add_argument("--class-index", default=None)
    p.add_argument("--runs", type=int, default=60, help="timed runs per file per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median of all samples is kept")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "export.json"))
    a = p.parse_args()
    results = {"host": {}, "models": {}}
    from bench_device.agent import device_facts
    results["host"] = device_facts()
    for name in a.models.split(","):
        model = create_model(name, pretrained=name == "efficientnet_lite0")
        ds = load_data(a.calib, input_shape=model.input_shape, preprocess=model.spec.preprocess,
                       calib_count=64, class_index=a.class_index)
        out = Path(tempfile.mkdtemp(prefix=f"edgeconv-bench-{name}-"))
        t0 = time.perf_counter()
        art = export(model, calib=ds.x, out=out / "art", calib_info=ds.describe())
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        ver = verify(out / "art", count=32)
        t_verify = time.perf_counter() - t0
        sessions = {n: Session(art.path / n, threads=1) for n in art.files}
        inputs = {n: s.to_model_input(make_input(s.entry)) for n, s in sessions.items()}
        samples = {n: [] for n in sessions}
        for n, s in sessions.items():  # warm-up
            for _ in range(10):
                s.adapter.run(inputs[n])
        for _ in range(a.rounds):
            for n, s in sessions.items():
                for _ in range(a.runs):
                    t = time.perf_counter_ns()
                    s.adapter.run(inputs[n])
                    samples[n].append((time.perf_counter_ns() - t) / 1e6)
        lat = {n: statistics.median(v) for n, v in samples.items()}
        rows = {}
        for fmt in ("onnx", "tflite", "executorch"):
            f32, i8 = art.file(fmt, "fp32"), art.file(fmt, "int8")
            if f32 is None or i8 is None:
                continue
            rows[fmt] = {"fp32_ms": lat[f32.name], "int8_ms": lat[i8.name],
                         "int8_speedup": lat[f32.name] / lat[i8.name],
                         "fp32_mb": f32.stat().st_size / 1e6, "int8_mb": i8.stat().st_size / 1e6,
                         "int8_report": art.files[i8.name]["int8_report"].get("float_ops")}
        results["models"][name] = {
            "export_s": t_export, "verify_s": t_verify, "export_plus_verify_s": t_export + t_verify,
            "verify_ok": ver["ok"], "parity": ver["rows"], "latency": rows,
            "samples_per_file": a.runs * a.rounds, "export_errors": art.errors}
        print(f"\n{name}: export {t_export:.0f} s + verify {t_verify:.0f} s = {t_export + t_verify:.0f} s "
              f"(verify ok: {ver['ok']})")
        print(f"{'runtime':<12}{'fp32 ms':>10}{'int8 ms':>10}{'int8 speedup':>14}{'fp32 MB':>9}{'int8 MB':>9}")
        for fmt, r in rows.items():
            print(f"{fmt:<12}{r['fp32_ms']:>10.2f}{r['int8_ms']:>10.2f}{r['int8_speedup']:>13.2f}x"
                  f"{r['fp32_mb']:>9.2f}{r['int8_mb']:>9.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwritten {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
