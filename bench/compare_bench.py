"""`edgeconv compare` on mobilenet_v2 and efficientnet_lite0 at 224 on the local device:
the twin's latency ratio beside its MAC ratio, per runtime and precision, written to
bench/results/compare.json.

    python bench/compare_bench.py [--models mobilenet_v2,efficientnet_lite0] [--min-runs 10]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgeconv.benchmark import ResultsFile, TimingConfig, bench, compare_rows, export_pair, latest
from edgeconv.quantize import QuantRecipe

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--formats", default="onnx,tflite")
    p.add_argument("--precision", default="fp32,int8")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--work", default=str(HERE.parent / ".cache" / "compare_artifacts"))
    p.add_argument("--out", default=str(HERE / "results" / "compare.json"))
    a = p.parse_args()
    fmts, precs = a.formats.split(","), a.precision.split(",")
    cfg = TimingConfig(warmup=a.warmup, min_runs=a.min_runs, min_seconds=a.min_seconds, max_seconds=300)
    rows = []
    for model in a.models.split(","):
        t0 = time.time()
        mdir, tdir = export_pair(model, a.work, formats=fmts, precisions=precs, input_size=a.input_size,
                                 recipe=QuantRecipe(calib_count=16))
        print(f"{model}: exported in {time.time() - t0:.0f} s", flush=True)
        results = Path(a.work) / "results.jsonl"
        bench([mdir, tdir], ["local"], results, precisions=precs, formats=fmts, cfg=cfg)
        recs = [r for r in ResultsFile(results).records() if r.get("model") == model]
        for r in compare_rows(list(latest(recs).values()), mdir, tdir):
            rows.append({"model": model, "input_size": a.input_size, **r})
            print(f"{model} {r['format']:7s} {r['precision']} {r['runtime']:12s} model p50 {r['model_p50_ms']:.2f} ms"
                  f"  twin p50 {r['twin_p50_ms']:.2f} ms  latency x{r['latency_ratio']:.2f}  MACs x{r['mac_ratio']:.2f}",
                  flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "timing": vars(cfg),
                                       "note": "local 2-core shared machine, other jobs running: noisy",
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
