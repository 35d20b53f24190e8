"""Where ExecuTorch's int8 speed-up goes, by its own profiler: the pretrained EfficientNet-Lite0
exported to ExecuTorch (XNNPACK) fp32 and int8, timed on this machine with one thread (pinned to
one core) and then run under ETDump, in ``--rounds`` rounds that alternate the two files. The
operators' median times are summed per XNNPACK operator kind (depthwise conv, GEMM, ...) and per
block of the model (``edgeconv.profiling.op_order_blocks``); the int8 speed-up of each goes to
bench/results/etdump_lite0.json.

    python bench/etdump_bench.py                          # calibrated on digits
    python bench/etdump_bench.py --calib ~/photos --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--calib", default="digits", help="calibration data (default: the bundled digits)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=50, help="runs under ETDump per file and round")
    p.add_argument("--out", default=str(HERE / "results" / "etdump_lite0.json"))
    a = p.parse_args()

    from edgeconv.benchmark import ResultsFile, TimingConfig, bench, record_stats
    from edgeconv.data import calibration
    from edgeconv.exporters import export
    from edgeconv.prediction import model_features
    from edgeconv.profiling import op_order_blocks
    from edgeconv.zoo import create_model
    model = create_model(a.model, pretrained=True)
    layers = {n: f["layers"] for n, f in model_features(model)}   # as `profile` counts each block's layers
    core = str(max(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        ds = calibration(a.calib, model, 128)
        art = export(model, calib=ds.x, formats=["executorch"], out=Path(tmp) / "art", calib_info=ds.describe())
        cfg = TimingConfig(affinity=core, op_profile_runs=a.runs)
        rf = Path(tmp) / "results.jsonl"
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}")
            bench([art.path], ["local"], rf, precisions=["fp32", "int8"] if r % 2 == 0 else ["int8", "fp32"],
                  cfg=cfg, force=True)
        recs = [x for x in ResultsFile(rf).records() if x["status"] == "ok"]
    if not recs:
        raise SystemExit("no file was timed: see the errors above")
    out = {"machine": {"cpu": recs[0]["device"].get("cpu"), "python": platform.python_version(),
                       "runtime_version": recs[0].get("runtime_version")},
           "model": a.model, "calib": a.calib, "rounds": a.rounds, "etdump_runs": a.runs, "pinned_core": core,
           "precisions": {}}
    for precision in ("fp32", "int8"):
        mine = [x for x in recs if x["precision"] == precision and "nodes" in (x.get("op_profile") or {})]
        kinds, blocks = {}, {}
        for x in mine:
            nodes = x["op_profile"]["nodes"]
            where = op_order_blocks(list(nodes), layers)
            if where is None:
                raise SystemExit(f"{x['file']}: its conv and linear operators do not match the model's "
                                 f"{sum(layers.values())} layers; cannot put them to blocks")
            k_round, b_round = {}, {}
            for name, v in nodes.items():
                k = name.split(" #")[0]
                k_round[k] = k_round.get(k, 0.0) + v["ms"]
                b = str(where.get(name))
                b_round[b] = b_round.get(b, 0.0) + v["ms"]
            for d, r in ((kinds, k_round), (blocks, b_round)):
                for k, v in r.items():
                    d.setdefault(k, []).append(v)
        out["precisions"][precision] = {
            "p50_ms": float(np.median([record_stats(x)["p50"] for x in mine])),
            "min_ms": float(np.median([record_stats(x)["min"] for x in mine])),
            "etdump_run_ms": float(np.median([x["op_profile"]["run_ms"] for x in mine])),
            "by_kind_ms": {k: float(np.median(v)) for k, v in kinds.items()},
            "by_block_ms": {k: float(np.median(v)) for k, v in blocks.items()}}
    fp, i8 = out["precisions"]["fp32"], out["precisions"]["int8"]
    out["int8_speedup"] = {"p50": fp["p50_ms"] / i8["p50_ms"], "min": fp["min_ms"] / i8["min_ms"],
                           "etdump_run": fp["etdump_run_ms"] / i8["etdump_run_ms"]}

    def kind(name: str) -> str:  # XNNPACK puts the datatypes after the layout: (NHWC, QC8) -> (NHWC)
        return re.sub(r"\((N[A-Z]*)(, [^)]*)?\)", r"(\1)", name)
    fk = {kind(k): v for k, v in fp["by_kind_ms"].items()}
    ik = {kind(k): v for k, v in i8["by_kind_ms"].items()}
    out["by_kind"] = [{"kind": k, "fp32_ms": fk.get(k), "int8_ms": ik.get(k),
                       "speedup": fk[k] / ik[k] if fk.get(k) and ik.get(k) else None,
                       "share_of_int8": ik.get(k, 0) / sum(ik.values())}
                      for k in sorted(set(fk) | set(ik), key=lambda k: -(ik.get(k) or 0))]
    out["by_block"] = [{"block": b, "fp32_ms": fp["by_block_ms"][b], "int8_ms": i8["by_block_ms"].get(b),
                        "speedup": fp["by_block_ms"][b] / i8["by_block_ms"][b] if i8["by_block_ms"].get(b) else None}
                       for b in fp["by_block_ms"]]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    s = out["int8_speedup"]
    print(f"{a.model} ExecuTorch int8 over fp32: p50 {s['p50']:.2f}x, min {s['min']:.2f}x, "
          f"ETDump run {s['etdump_run']:.2f}x")
    print(f"{'operator kind':42s} {'fp32 ms':>8s} {'int8 ms':>8s} {'x':>6s} {'int8 share':>10s}")
    for r in out["by_kind"]:
        print(f"{r['kind']:42s} {r['fp32_ms'] or 0:8.3f} {r['int8_ms'] or 0:8.3f} {r['speedup'] or 0:6.2f} "
              f"{100 * r['share_of_int8']:9.1f}%")
    print(f"{'block':12s} {'fp32 ms':>8s} {'int8 ms':>8s} {'x':>6s}")
    for r in out["by_block"]:
        print(f"{r['block']:12s} {r['fp32_ms']:8.3f} {r['int8_ms'] or 0:8.3f} {r['speedup'] or 0:6.2f}")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
