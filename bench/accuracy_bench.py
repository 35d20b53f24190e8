"""int8 accuracy of the pretrained EfficientNet-Lite0 per runtime, for a set of quantization
recipes and calibration/evaluation splits (issue #5).

    python bench/accuracy_bench.py [--data DIR --class-index FILE] [--variants default,no_bias_correction]
                                   [--splits 0,1,2] [--formats onnx,tflite,executorch]

Data: an ImageNet-style folder (``<wnid>_*.JPEG``) with its class index (default: the 200
photos of ../shared/data/imagenet-dev). Split ``s`` shuffles the folder with seed ``s``,
calibrates on the first ``--calib-pool`` images and evaluates on all the others; split 0 is
the one ``edgeconv.data.load_data`` makes (``split="calib"`` / ``"eval"``). A variant with fewer
calibration images takes a prefix of the pool, so every variant of a split is scored on the
same images, none of which it was calibrated on.

fp32 files are exported once, int8 files once per variant, split and format, under ``--work``;
an export is reused while its manifest records the same recipe. Logits are cached as .npy.
Results: one JSON (``--out``), rewritten atomically after every export.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgeconv.accuracy import paired_delta, run_file, sqnr_db, top1_agreement, topk_correct  # noqa: E402
from edgeconv.artifact import Artifact, file_name, write_json_atomic  # noqa: E402
from edgeconv.data import load_data  # noqa: E402
from edgeconv.exporters import export  # noqa: E402
from edgeconv.quantize import QuantRecipe  # noqa: E402
from edgeconv.zoo import create_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
FORMATS = ("onnx", "tflite", "executorch")
# name -> (QuantRecipe fields, formats the variant changes). "default" is QuantRecipe() as shipped.
VARIANTS = {
    "default": ({}, FORMATS),
    "no_bias_correction": ({"bias_correction": False}, FORMATS),
    "minmax": ({"method": "minmax"}, ("onnx",)),
    "calib32": ({"calib_count": 32}, FORMATS),
    "keep_b0": ({"keep_fp32": ("blocks.0",)}, FORMATS),
    # the quantizers' stock ReLU6 annotation (the clamp shares the conv's observer), min-max
    # calibration in ONNX Runtime and no bias correction: where the recipe started
    "stock": ({"method": "minmax", "bias_correction": False, "_stock_relu6": True}, FORMATS),
}


def _stock_relu6(on: bool) -> None:
    """The stock PT2E annotation of ReLU6 (the clamp shares the conv's observer), for the "stock" row."""
    import edgeconv.quantize as q
    if not hasattr(q, "_fuse_clamp_annotations"):
        q._fuse_clamp_annotations = q.fuse_clamp_annotations
    q.fuse_clamp_annotations = (lambda gm: gm) if on else q._fuse_clamp_annotations


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "imagenet-dev"))
    ap.add_argument("--class-index", default=str(SHARED / "imagenet_classes.txt"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--variants", default="default", help=f"comma-separated of {', '.join(VARIANTS)}")
    ap.add_argument("--splits", default="0", help="comma-separated shuffle seeds; 0 is edgeconv's own split")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--calib-pool", type=int, default=64, help="images reserved for calibration")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "edgeconv" / "accuracy_bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy_lite0.json"))
    args = ap.parse_args(argv)
    for p, what in ((args.data, "--data"), (args.class_index, "--class-index")):
        if not Path(p).exists():
            ap.error(f"{what} {p} does not exist; pass an ImageNet-style folder and its class-index file")
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(os.cpu_count() or 1)
    formats = [f for f in args.formats.split(",") if f]
    seeds = [int(s) for s in args.splits.split(",") if s]
    model = create_model(args.model, pretrained=True)
    data = load_data(args.data, split="all", input_shape=model.input_shape, preprocess=model.spec.preprocess,
                     class_index=args.class_index)
    n = len(data)
    print(f"{n} images ({len(data.skipped)} files skipped); calibration pool {args.calib_pool}, "
          f"evaluation {n - args.calib_pool} per split", flush=True)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("data_files") != [Path(f).name for f in data.files]:
        results = {}
    results.update(model=args.model, data=str(args.data), data_files=[Path(f).name for f in data.files],
                   calib_pool=args.calib_pool, eval_count=n - args.calib_pool,
                   split_rule="np.random.default_rng(seed).permutation(n): calibration = the first "
                              "calib_pool, evaluation = the rest")
    results.setdefault("variants", {})
    fp32 = {f: _logits(_exported(model, work / "fp32" / f, f, "fp32", None, None, None), data.x,
                       work / "fp32" / f / "logits.npy") for f in formats}
    for name in names:
        fields, applies = VARIANTS[name]
        fields = dict(fields)
        _stock_relu6(fields.pop("_stock_relu6", False))
        quant = QuantRecipe(**fields)
        entry = results["variants"].setdefault(name, {"splits": {}})
        entry.update(quant=quant.to_dict(), formats=[f for f in formats if f in applies])
        for seed in seeds:
            order = np.random.default_rng(seed).permutation(n)
            cal, ev = np.sort(order[:quant.calib_count]), np.sort(order[args.calib_pool:])
            rows = entry["splits"].setdefault(str(seed), {})
            for f in entry["formats"]:
                folder = work / name / f"split{seed}" / f
                t0 = time.time()
                try:
                    path = _exported(model, folder, f, "int8", data.x[cal], quant,
                                     {"source": str(args.data), "split": f"seed {seed}", "count": len(cal)})
                    q = _logits(path, data.x[ev], folder / "logits.npy")
                except RuntimeError as e:
                    rows[f] = {"error": str(e)}
                    print(f"{name:20s} split {seed} {f:10s} {e}", flush=True)
                    continue
                rows[f] = r = _row(fp32[f][ev], q, data.y[ev]) | {"seconds": round(time.time() - t0, 1)}
                print(f"{name:20s} split {seed} {f:10s} fp32 {100 * r['fp32_top1']:5.1f}  int8 "
                      f"{100 * r['int8_top1']:5.1f}  drop {r['drop_points']:+5.2f}  agree "
                      f"{100 * r['agreement']:5.1f}%  SQNR {r['sqnr_db']:5.1f} dB", flush=True)
                entry["summary"] = _summary(entry["splits"])
                write_json_atomic(out, results)
    print(f"wrote {out}")
    return 0


def _row(ref: np.ndarray, q: np.ndarray, y: np.ndarray) -> dict:
    c32, c8 = topk_correct(ref, y), topk_correct(q, y)
    return {"fp32_top1": float(c32.mean()), "int8_top1": float(c8.mean()),
            "fp32_top5": float(topk_correct(ref, y, 5).mean()), "int8_top5": float(topk_correct(q, y, 5).mean()),
            "drop_points": round(100 * float(c32.mean() - c8.mean()), 3),
            "agreement": top1_agreement(ref, q), "sqnr_db": sqnr_db(ref, q), "delta": paired_delta(c32, c8)}


def _summary(splits: dict) -> dict:
    """Per format over the splits: the worst drop, the lowest agreement, the median SQNR."""
    out = {}
    for f in FORMATS:
        rows = [s[f] for s in splits.values() if f in s and "error" not in s[f]]
        if rows:
            out[f] = {"splits": len(rows), "max_drop_points": max(r["drop_points"] for r in rows),
                      "min_agreement": min(r["agreement"] for r in rows),
                      "median_sqnr_db": float(np.median([r["sqnr_db"] for r in rows]))}
    return out


def _exported(model, folder: Path, fmt: str, precision: str, calib, quant, calib_info) -> Path:
    path = folder / file_name(fmt, precision)
    manifest = folder / "manifest.json"
    if path.exists() and manifest.exists() and (
            quant is None or json.loads(manifest.read_text()).get("quant") == quant.to_dict()):
        return path
    t0 = time.time()
    art = export(model, calib=calib, out=folder, formats=[fmt], precisions=[precision], recipe=quant,
                 force=True, calib_info=calib_info)
    if art.errors:
        raise RuntimeError(f"export failed: {art.errors[0]['message']}")
    print(f"  exported {folder.relative_to(folder.parents[2])} {precision} in {time.time() - t0:.0f}s", flush=True)
    return path


def _logits(path: Path, x: np.ndarray, cache: Path) -> np.ndarray:
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        y = np.load(cache)
        if len(y) == len(x):
            return y
    y = run_file(Artifact.load(path.parent), path.name, x)
    np.save(cache, y)
    return y


if __name__ == "__main__":
    sys.exit(main())
