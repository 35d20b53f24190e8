"""Accuracy metrics: output agreement between two models, and accuracy against labels."""
from __future__ import annotations

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(|ref|^2 / |ref - test|^2), in dB."""
    ref, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    noise = np.sum((ref - test) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(ref ** 2) / noise))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def max_errors(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(max absolute error, max absolute error relative to the reference's largest magnitude)."""
    diff = float(np.max(np.abs(np.asarray(reference, np.float64) - test)))
    scale = float(np.max(np.abs(reference))) or 1.0
    return diff, diff / scale


# ---------------------------------------------------------------------------------------------
# Accuracy against labels, fp32 vs int8, per runtime (``edgeconv check``).
#
# The int8 - fp32 difference is a *paired* comparison: both models see the same images, so
# the per-image difference d_i = correct_int8_i - correct_fp32_i (in {-1, 0, +1}) carries the
# signal and the images both get right (or both get wrong) carry none. We report the mean
# paired difference with a normal (Wald) 95% interval, mean +- z * sd(d) / sqrt(n) with the
# sample standard deviation (ddof=1); this is the interval for the difference of two paired
# proportions. When every pair agrees (sd = 0) the interval is [0, 0]: with n images it cannot
# see a change smaller than 1/n. ``discordant`` gives the counts a McNemar test would use.
# ---------------------------------------------------------------------------------------------

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Z95 = 1.959963984540054
Runner = Callable[[Path, np.ndarray], np.ndarray]   # (model file, NCHW float32 inputs) -> logits


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """Per-sample bool: the label is among the ``k`` largest logits. Ties (common in int8
    outputs) go to the lower class index, as ``argmax`` does, so top-1 and agreement agree."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    k = min(k, logits.shape[-1])
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def paired_delta(correct_ref: np.ndarray, correct_test: np.ndarray, confidence: float = 0.95) -> dict:
    """Mean paired difference test - ref of per-sample correctness (a fraction; x100 for
    points) with its normal interval. ``better``/``worse``: samples only test / only ref got right."""
    a = np.asarray(correct_ref, np.float64)
    b = np.asarray(correct_test, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_delta needs two equal-length, non-empty 1-D arrays, got {a.shape} and {b.shape}")
    d = b - a
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    z = Z95 if confidence == 0.95 else _z(confidence)
    half = z * sd / math.sqrt(n)
    return {"delta": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n,
            "confidence": confidence, "method": "normal interval on the mean paired difference",
            "better": int(np.sum(d > 0)), "worse": int(np.sum(d < 0))}


def _z(confidence: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def run_local(path: Path, x: np.ndarray) -> np.ndarray:
    """The default runner: the file in its runtime on this machine (bench_device.agent)."""
    from bench_device.agent import Session
    return Session(path).run(x)


@dataclass
class EvalData:
    x: np.ndarray
    y: np.ndarray
    info: dict


def eval_data(art, data: str, class_index: str | None = None, limit: int | None = None) -> EvalData:
    """Labelled evaluation samples for artifact ``art`` from ``data`` (digits or a folder), in the
    model's preprocessing (from the manifest). When ``data`` is the artifact's calibration source,
    the calibration samples are left out (the loaders' ``eval`` split), so the two never overlap."""
    from .data import load_data
    m = art.manifest
    labels = m.get("labels")
    shape = tuple(m["input_shape_nchw"][1:])
    calib = m.get("calibration") or {}
    calib_count = int(calib.get("count") or m.get("quant", {}).get("calib_count", 64))
    same = _same_source(data, calib.get("source"))
    class_index = class_index or (calib.get("class_index") if same else None)
    if data == "digits":
        split = "eval"    # the 500 held out of training and calibration
    else:
        split = "eval" if same else "all"
    ds = load_data(data, input_shape=shape, preprocess=m.get("preprocess"), split=split,
                   calib_count=calib_count, limit=limit, labels=labels, class_index=class_index)
    if ds.y is None:
        raise ValueError(f"{data}: the images are not labelled; use one sub-folder per class (named like "
                         "the model's labels) or ImageNet-style <wnid>_*.JPEG files with --class-index")
    if labels and int(ds.y.max()) >= len(labels):
        raise ValueError(f"{data}: labels go up to {int(ds.y.max())} but the model has {len(labels)} classes; "
                         "the data's classes do not match the model's labels (wrong --class-index?)")
    info = {"source": ds.source, "split": split, "count": len(ds), "skipped": len(ds.skipped),
            "skipped_files": [Path(s).name for s in ds.skipped[:20]], "class_index": class_index,
            "calibration": {"source": calib.get("source"), "count": calib.get("count"),
                            "disjoint": True if data == "digits" or not same or split == "eval" else False,
                            "how": ("digits: calibration from the 1297 training digits, evaluation on the "
                                    "500 held out" if data == "digits" else
                                    f"the first {calib_count} of the folder's seeded shuffle calibrated; "
                                    "evaluation on the rest" if same else
                                    "evaluation folder is not the calibration source: all of it is used")}}
    return EvalData(ds.x, ds.y, info)


def _same_source(data: str, source: str | None) -> bool:
    if source is None:
        return False
    if data == source:
        return True
    try:
        return Path(data).resolve() == Path(source).resolve()
    except OSError:
        return False


def _scores(logits: np.ndarray, y: np.ndarray) -> dict:
    return {"top1": float(topk_correct(logits, y, 1).mean()), "top5": float(topk_correct(logits, y, 5).mean())}


def check_artifact(artifact, data: EvalData, *, max_drop: float = 1.0, runner: Runner | None = None,
                   int8_runner: Runner | None = None, formats: list[str] | None = None,
                   write: bool = True) -> dict:
    """fp32 and int8 accuracy of every format in ``artifact`` on ``data``, one row per runtime.

    ``runner`` runs a model file on inputs (default: locally in its runtime); ``int8_runner``
    runs the int8 files (e.g. on a device; default ``runner``). A runtime that fails gets a row
    with ``error`` and the others go on. ``ok`` is false when any row failed or dropped more
    than ``max_drop`` points of top-1. Writes ``accuracy.json`` in the artifact folder.
    """
    from .export import Artifact, write_json_atomic
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    runner = runner or run_local
    int8_runner = int8_runner or runner
    x, y = data.x, data.y
    fmts = formats or sorted({e["format"] for e in art.files.values()} | {e["format"] for e in art.errors})
    rows = []
    for fmt in fmts:
        row = {"format": fmt, "runtime": RUNTIME_OF.get(fmt, fmt)}
        try:
            logits = {}
            for precision, run in (("fp32", runner), ("int8", int8_runner)):
                path = art.file(fmt, precision)
                if path is None:
                    why = next((e["message"] for e in art.errors
                                if e["format"] == fmt and e["precision"] == precision), None)
                    raise FileNotFoundError(f"no {precision} {fmt} file in {art.path}"
                                            + (f" (export failed: {why})" if why else ""))
                row[f"{precision}_file"] = path.name
                try:
                    out = np.asarray(run(path, x), np.float32)
                except Exception as e:
                    raise RuntimeError(f"{path.name}: {type(e).__name__}: {_short(e)}") from e
                if out.shape[0] != len(x):
                    raise RuntimeError(f"{path.name}: {out.shape[0]} outputs for {len(x)} inputs")
                logits[precision] = out
                row[precision] = _scores(out, y)
            c32, c8 = topk_correct(logits["fp32"], y, 1), topk_correct(logits["int8"], y, 1)
            d = paired_delta(c32, c8)
            row.update(delta_top1=d, agreement=top1_agreement(logits["fp32"], logits["int8"]),
                       sqnr_db=sqnr_db(logits["fp32"], logits["int8"]),
                       drop_points=100 * (row["fp32"]["top1"] - row["int8"]["top1"]))
            row["ok"] = row["drop_points"] <= max_drop + 1e-9
        except Exception as e:  # one runtime failing: its row says why, the others go on
            row.update(ok=False, error=str(e) if isinstance(e, (RuntimeError, FileNotFoundError))
                       else f"{type(e).__name__}: {_short(e)}")
        rows.append(row)
    result = {"schema_version": 1, "artifact": str(art.path), "model": art.manifest.get("model"),
              "twin": art.manifest.get("twin"), "quant": art.manifest.get("quant"),
              "data": data.info, "max_drop_points": max_drop, "rows": rows,
              "ok": bool(rows) and all(r["ok"] for r in rows)}
    if write:
        write_json_atomic(art.path / "accuracy.json", _jsonable(result))
    return result


RUNTIME_OF = {"onnx": "onnxruntime", "tflite": "litert", "executorch": "executorch"}


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:400]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj
