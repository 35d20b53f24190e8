"""int8 accuracy of the pretrained EfficientNet-Lite0 per runtime, for a set of quantization
recipes (issue #5). Reproduces the figures in the accuracy section of the report.

    python bench/accuracy_bench.py --data DIR --class-index FILE [--variants default,minmax_64,...]

Data: an ImageNet-style folder (``<wnid>_*.JPEG``) with its class index. Calibration takes the
first ``--calib-pool`` images of the loaders' seeded shuffle (a variant with fewer calibration
images takes a prefix of them); evaluation is always the rest of the folder, so every variant is
scored on the same images and none of them was seen in calibration.

fp32 files are exported once (``<work>/fp32``) and int8 files once per variant
(``<work>/<variant>``); logits are cached as .npy, so a re-run only computes what is missing.
Results: one JSON (``--out``), rewritten atomically after every variant.
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

from edgeconv.accuracy import paired_delta, run_local, sqnr_db, top1_agreement, topk_correct  # noqa: E402
from edgeconv.data import load_data  # noqa: E402
from edgeconv.export import export, write_json_atomic  # noqa: E402
from edgeconv.quantize import QuantConfig  # noqa: E402
from edgeconv.zoo import create_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
FORMATS = ("onnx", "tflite", "executorch")
# name -> (QuantConfig fields, formats it applies to). "default" is QuantConfig() as shipped.
VARIANTS = {
    "default": ({}, FORMATS),
    "calib16": ({"calib_count": 16}, FORMATS),
    "calib32": ({"calib_count": 32}, FORMATS),
    "percentile": ({"method": "percentile"}, ("onnx",)),
    "entropy": ({"method": "entropy"}, ("onnx",)),
    "keep_stem": ({"keep_fp32": ("stem",)}, FORMATS),
    "keep_classifier": ({"keep_fp32": ("classifier",)}, FORMATS),
    "keep_stem_classifier": ({"keep_fp32": ("stem", "classifier")}, FORMATS),
    "onnx_int8_act": ({"extra": {"onnx": {"ActivationSymmetric": True}}}, ("onnx",)),
    # PT2E with conv->ReLU6 annotated like conv->ReLU (edgeconv.localize.fuse_clamp_annotations)
    "fuse_clamp": ({"_fuse_clamp": True}, ("tflite", "executorch")),
    "fuse_clamp_calib32": ({"_fuse_clamp": True, "calib_count": 32}, ("tflite", "executorch")),
    "fuse_clamp_keep_b0": ({"_fuse_clamp": True, "keep_fp32": ("blocks.0",)}, FORMATS),
    "fuse_clamp_keep_stem_b0": ({"_fuse_clamp": True, "keep_fp32": ("stem", "blocks.0")}, FORMATS),
    # PT2E recipe experiments (exporters already wrap ClampFusingQuantizer)
    "keep_b0": ({"keep_fp32": ("blocks.0",)}, ("tflite", "executorch")),
    "obs_minmax": ({"_act_observer": "minmax"}, ("tflite", "executorch")),
    "obs_movavg": ({"_act_observer": "movavg"}, ("tflite", "executorch")),
    "obs_hist8k": ({"_act_observer": "hist8k"}, ("tflite", "executorch")),
    # keep_b0 with litert-torch's module-name filter fixed (it strips "L__self___", torch.export's
    # nn_module_stack keys are now "L__self__blocks.0...", so keep_fp32 was silently ignored)
    "keep_b0_fixed": ({"keep_fp32": ("blocks.0",), "_fix_litert_filter": True}, ("tflite", "executorch")),
    "cle_b0": ({"_cle": (("blocks.0.project", "blocks.1.expand"),)}, ("tflite", "executorch")),
}


def _patch_act_observer(kind) -> None:
    """Swap the activation observer the PT2E symmetric configs are built with (both quantizer
    modules bind ``HistogramObserver`` by name; their config factories are lru_cached)."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq
    from litert_torch.quantize import pt2e_quantizer as lq
    from torchao.quantization.pt2e import observer as ob
    ctr = {None: ob.HistogramObserver, "minmax": ob.MinMaxObserver,
           "movavg": ob.MovingAverageMinMaxObserver,
           "hist8k": ob.HistogramObserver.with_args(bins=8192)}[kind]
    for mod in (xq, lq):
        mod.HistogramObserver = ctr
        mod.get_symmetric_quantization_config.cache_clear()


def _patch_litert_name_filter(on: bool) -> None:
    from litert_torch.quantize import pt2e_quantizer as lq
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter
    orig = getattr(lq, "_edgeconv_orig_name_filter", lq._get_module_name_filter)
    lq._edgeconv_orig_name_filter = orig
    lq._get_module_name_filter = get_module_name_filter if on else orig


def equalize_pair(model, a: str, b: str):
    """Cross-layer equalization of a linear conv ``a`` (no activation) feeding conv ``b``
    (BN already folded): output channel i of ``a`` scaled by 1/s_i, input channel i of ``b``
    by s_i, s_i = sqrt(r_a,i / r_b,i) with r the per-channel weight ranges. Exact in fp32;
    evens out the per-tensor activation range between them."""
    ca = model.get_submodule(a).conv
    cb = model.get_submodule(b).conv
    with torch.no_grad():
        ra = ca.weight.abs().flatten(1).amax(1)
        rb = cb.weight.abs().transpose(0, 1).flatten(1).amax(1)
        s = torch.sqrt(ra / rb).clamp_min(1e-8)
        ca.weight.div_(s.reshape(-1, 1, 1, 1))
        ca.bias.div_(s)
        cb.weight.mul_(s.reshape(1, -1, 1, 1))
    return model


def _patch_cle(pairs) -> None:
    import edgeconv.export as ex
    from edgeconv.quantize import fold_batchnorm
    if not pairs:
        ex.fold_batchnorm = fold_batchnorm
        return

    def fold_and_equalize(model):
        m = fold_batchnorm(model)
        for a, b in pairs:
            equalize_pair(m, a, b)
        return m
    ex.fold_batchnorm = fold_and_equalize


def _patch_pt2e(fuse_clamp: bool) -> None:
    """What the exporters get from the recipe fixes proposed in the report, applied from outside:
    ``set_module_name(block, None)`` accepted (the quantizers assert on None, while their
    annotators skip it), and optionally the ReLU6 clamp fused into the conv's output observer."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from torchao.quantization.pt2e import quantize_pt2e as qp
    from edgeconv.localize import ClampFusingQuantizer

    def set_module_name(self, name, config):
        self.module_name_config[name] = config
        return self
    XNNPACKQuantizer.set_module_name = PT2EQuantizer.set_module_name = set_module_name
    orig = getattr(qp, "_edgeconv_orig_prepare", qp.prepare_pt2e)
    qp._edgeconv_orig_prepare = orig
    qp.prepare_pt2e = (lambda gm, q: orig(gm, ClampFusingQuantizer(q))) if fuse_clamp else orig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "imagenet-dev"))
    ap.add_argument("--class-index", default=str(SHARED / "imagenet_classes.txt"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--variants", default="default", help=f"comma-separated of {', '.join(VARIANTS)}")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--calib-pool", type=int, default=64, help="images reserved for calibration")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "edgeconv" / "accuracy_bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy_lite0.json"))
    args = ap.parse_args(argv)
    for p, what in ((args.data, "--data"), (args.class_index, "--class-index")):
        if not Path(p).exists():
            ap.error(f"{what} {p} does not exist; pass an ImageNet-style folder and its class-index file")
    torch.set_num_threads(os.cpu_count() or 1)
    formats = [f for f in args.formats.split(",") if f]
    model = create_model(args.model, pretrained=True)
    common = dict(input_shape=model.input_shape, preprocess=model.spec.preprocess,
                  calib_count=args.calib_pool, class_index=args.class_index)
    calib = load_data(args.data, split="calib", **common)
    ev = load_data(args.data, split="eval", **common)
    assert not set(calib.files) & set(ev.files), "calibration and evaluation overlap"
    print(f"calibration pool {len(calib)}, evaluation {len(ev)} images ({len(ev.skipped)} files skipped)",
          flush=True)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(model=args.model, data=str(args.data), calib_pool=len(calib), eval_count=len(ev),
                   eval_files_sha=_files_key(ev.files))
    results.setdefault("variants", {})
    with torch.no_grad():
        eager = model(torch.from_numpy(ev.x)).numpy()
    results["eager_fp32_top1"] = float(topk_correct(eager, ev.y).mean())
    fp32 = {}
    for f in formats:
        path = _exported(model, work / "fp32" / f, f, "fp32", None, None, None)
        fp32[f] = _logits(path, ev.x, work / "fp32" / f / "logits.npy")
    for name in [v for v in args.variants.split(",") if v]:
        fields, applies = VARIANTS[name]
        fields = dict(fields)
        _patch_pt2e(fields.pop("_fuse_clamp", False))
        _patch_act_observer(fields.pop("_act_observer", None))
        _patch_cle(fields.pop("_cle", ()))
        _patch_litert_name_filter(fields.pop("_fix_litert_filter", False))
        quant = QuantConfig(**{"calib_count": args.calib_pool, **fields})
        fmts = [f for f in formats if f in applies]
        t0 = time.time()
        rows = {}
        for f in fmts:
            try:
                path = _exported(model, work / name / f, f, "int8", calib.x[:quant.calib_count], quant,
                                 calib.describe())
            except RuntimeError as e:
                rows[f] = {"error": str(e)}
                print(f"{name:22s} {f:10s} {e}", flush=True)
                continue
            q = _logits(path, ev.x, path.parent / "logits.npy")
            c32, c8 = topk_correct(fp32[f], ev.y), topk_correct(q, ev.y)
            rows[f] = {"fp32_top1": float(c32.mean()), "int8_top1": float(c8.mean()),
                       "fp32_top5": float(topk_correct(fp32[f], ev.y, 5).mean()),
                       "int8_top5": float(topk_correct(q, ev.y, 5).mean()),
                       "agreement": top1_agreement(fp32[f], q), "sqnr_db": sqnr_db(fp32[f], q),
                       "delta": paired_delta(c32, c8)}
            r = rows[f]
            print(f"{name:22s} {f:10s} fp32 {100 * r['fp32_top1']:5.1f}  int8 {100 * r['int8_top1']:5.1f}  "
                  f"agree {100 * r['agreement']:5.1f}%  SQNR {r['sqnr_db']:5.1f} dB", flush=True)
        results["variants"][name] = {"quant": quant.to_dict(), "rows": rows, "fuse_clamp": "_fuse_clamp" in VARIANTS[name][0],
                                     "seconds": round(time.time() - t0, 1)}
        write_json_atomic(out, results)
    print(f"wrote {out}")
    return 0


def _exported(model, folder: Path, fmt: str, precision: str, calib, quant, calib_info) -> Path:
    path = folder / f"model_{precision}{_suffix(fmt)}"
    if path.exists():
        return path
    t0 = time.time()
    art = export(model, calib=calib, out=folder, formats=[fmt], precisions=[precision], quant=quant,
                 force=True, calib_info=calib_info)
    if art.errors:
        raise RuntimeError(f"export failed: {art.errors[0]['message']}")
    print(f"  exported {folder.name} {precision} in {time.time() - t0:.0f}s", flush=True)
    return path


def _suffix(fmt: str) -> str:
    return {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte"}[fmt]


def _files_key(files) -> str:
    import hashlib
    return hashlib.sha256("\n".join(Path(f).name for f in files).encode()).hexdigest()[:16]


def _logits(path: Path, x: np.ndarray, cache: Path) -> np.ndarray:
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        y = np.load(cache)
        if len(y) == len(x):
            return y
    y = run_local(path, x)
    np.save(cache, y)
    return y


if __name__ == "__main__":
    sys.exit(main())
