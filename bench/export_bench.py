"""Export wall time against the targets: the pretrained EfficientNet-Lite0, all six files
(ONNX, TFLite, ExecuTorch x fp32/int8 with the default recipe, calibrated on 64 photos),
in under 60 s; MobileNetV2 (no pretrained weights in the zoo, so random ones, calibrated
on the same photos) and Lite0 together in under 2 minutes.

Both models are exported from one process, Lite0 first, with export's default ``workers``
(one process per core, each making whole files; ``--workers 1`` exports in this process, one
file after the other, so its time includes loading the exporters' libraries). Writes the
per-file times (the manifests' ``export_seconds``), each model's wall time and CPU time (all
threads and worker processes) and whether the targets were met to
bench/results/export.json, with the host's load average before and after: on a shared
machine, compare runs made side by side.
``--latency`` also times every file on this host, fp32 against int8.

    python bench/export_bench.py [--models efficientnet_lite0,mobilenet_v2] [--workers N]
                                 [--data DIR --class-index FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
TARGETS_S = {"efficientnet_lite0": 60.0, "total": 120.0}
PRETRAINED = {"efficientnet_lite0"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    p.add_argument("--data", default=str(SHARED / "imagenet-dev"), help="calibration images (or 'digits')")
    p.add_argument("--class-index", default=str(SHARED / "imagenet_classes.txt"))
    p.add_argument("--calib-count", type=int, default=64)
    p.add_argument("--workers", type=int, help="files exported at once (default: export's own choice)")
    p.add_argument("--latency", action="store_true", help="also time every file on this host")
    p.add_argument("--runs", type=int, default=60, help="--latency: timed runs per file per round")
    p.add_argument("--rounds", type=int, default=3, help="--latency: interleaved rounds")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "export.json"))
    a = p.parse_args()

    import torch

    from bench_device.agent import device_facts
    from edgeconv.data import calibration
    from edgeconv.exporters import export, parallel_workers
    from edgeconv.zoo import create_model

    results = {"host": device_facts(), "torch_threads": torch.get_num_threads(),
               "load_average_before": os.getloadavg(), "targets_s": TARGETS_S, "models": {}}
    for name in a.models.split(","):
        model = create_model(name, pretrained=name in PRETRAINED)
        ds = calibration(a.data, model, a.calib_count, a.class_index if a.data != "digits" else None)
        out = Path(tempfile.mkdtemp(prefix=f"edgeconv-bench-{name}-")) / "art"
        t0, c0 = time.perf_counter(), _cpu()
        art = export(model, calib=ds.x, out=out, calib_info=ds.describe(), workers=a.workers)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        files = {n: {"format": e.format, "precision": e.precision, "seconds": e.export_seconds,
                     "bytes": e.bytes, "sha256": e.sha256} for n, e in art.files.items()}
        row = {"pretrained": name in PRETRAINED, "calibration": ds.describe(),
               "workers": parallel_workers(model, len(files), a.workers), "export_s": round(seconds, 2),
               "peak_rss_mb": {"this process": _rss_mb(resource.RUSAGE_SELF),
                               "largest child process": _rss_mb(resource.RUSAGE_CHILDREN)},
               "cpu_s": round(cpu, 2), "files": files, "export_errors": art.errors}
        if a.latency:
            row["latency"] = _latency(art, a.runs, a.rounds)
        results["models"][name] = row
        print(f"\n{name}: {len(files)} files in {seconds:.1f} s ({cpu:.1f} s of CPU)"
              + (f"; errors: {art.errors}" if art.errors else ""))
        for n, f in files.items():
            print(f"  {n:20s} {f['seconds']:7.2f} s")
    times = {n: r["export_s"] for n, r in results["models"].items()}
    met = {}
    if "efficientnet_lite0" in times:
        met["efficientnet_lite0"] = times["efficientnet_lite0"] < TARGETS_S["efficientnet_lite0"]
    if {"efficientnet_lite0", "mobilenet_v2"} <= set(times):
        met["total"] = times["efficientnet_lite0"] + times["mobilenet_v2"] < TARGETS_S["total"]
    results.update(total_s=round(sum(times.values()), 2), met=met, load_average_after=os.getloadavg())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2, default=float))
    print(f"\ntotal {results['total_s']:.1f} s; targets met: {met}; load average "
          f"{results['load_average_before'][0]:.1f} -> {results['load_average_after'][0]:.1f}\nwritten {a.out}")
    return 0


def _rss_mb(who) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)   # KiB on Linux


def _cpu() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _latency(art, runs: int, rounds: int) -> dict:
    """Median latency of every file on this host (1 thread), files interleaved so that machine
    noise hits them alike; fp32 against int8 per format."""
    from bench_device.agent import Session, make_input
    sessions = {n: Session(art.path / n, threads=1) for n in art.files}
    inputs = {n: s.to_model_input(make_input(s.entry)) for n, s in sessions.items()}
    samples = {n: [] for n in sessions}
    for n, s in sessions.items():  # warm-up
        for _ in range(10):
            s.adapter.run(inputs[n])
    for _ in range(rounds):
        for n, s in sessions.items():
            for _ in range(runs):
                t = time.perf_counter_ns()
                s.adapter.run(inputs[n])
                samples[n].append((time.perf_counter_ns() - t) / 1e6)
    lat = {n: statistics.median(v) for n, v in samples.items()}
    rows = {}
    for fmt in ("onnx", "tflite", "executorch"):
        f32, i8 = art.file(fmt, "fp32"), art.file(fmt, "int8")
        if f32 is not None and i8 is not None:
            rows[fmt] = {"fp32_ms": lat[f32.name], "int8_ms": lat[i8.name], "int8_speedup": lat[f32.name] / lat[i8.name]}
    return rows


if __name__ == "__main__":
    sys.exit(main())
