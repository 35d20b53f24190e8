"""Accuracy: output agreement between two models, accuracy against labels, and ``check``: fp32 vs
int8 per runtime, on this host and on a device."""
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

Z95 = 1.959963984540054


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


def run_file(art, name: str, x: np.ndarray, session=None) -> np.ndarray:
    """Outputs of file ``name`` of artifact ``art`` on NCHW float32 inputs ``x``, after checking the
    file is the one the manifest describes: in its runtime on this machine (the device agent's
    adapters), or on a device through ``session`` (``edgeconv.device.AgentSession``)."""
    path = art.checked(name)
    if session is not None:
        return session.run_inputs(path, x)
    from bench_device.agent import Session

    from .quiet import native_output
    with native_output(f"{name} run"):
        return Session(path, entry=art.files[name].to_dict()).run(x)


@dataclass
class EvalData:
    x: np.ndarray
    y: np.ndarray
    info: dict


def eval_data(art, data: str, class_index: str | None = None, limit: int | None = None) -> EvalData:
    """Labelled evaluation samples for artifact ``art`` from ``data`` (digits or a folder), in the
    model's preprocessing (from the manifest), without any sample that calibrated it
    (``edgeconv.data.heldout``: decided from the files' contents)."""
    from .data import heldout
    m = art.manifest
    fields = {"labels": 'labels = "labels.txt" (one class name per line)',
              "preprocess": "[preprocess] with resize, crop, mean and std"}
    missing = [text for key, text in fields.items() if not getattr(m, key)]
    if missing:
        raise ValueError(f"{art.path}: check needs the model's {' and '.join(k for k in fields if not getattr(m, k))}; "
                         f"add {' and '.join(missing)} to its model card and export again")
    out = m.output_shape
    if out is not None and (len(out) != 2 or out[1] != len(m.labels)):
        raise ValueError(f"{art.path}: the model's output is {' x '.join(map(str, out))}, not N x {len(m.labels)} "
                         f"(one score per label); check scores classifiers only (export, verify and bench still work)")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: must be at least 1")
    ds = heldout(data, input_shape=tuple(m.input_shape_nchw[1:]), preprocess=m.preprocess,
                 calibration=m.calibration, labels=m.labels, class_index=class_index, limit=limit)
    if not ds.disjoint:
        import warnings
        warnings.warn(f"{art.path}: its manifest records no fingerprint of the calibration images (from "
                      f"{(m.calibration or {}).get('source') or 'an unknown source'}), so evaluation on {data} cannot "
                      "leave them out and may include them; export again (from digits or an image folder) to "
                      "evaluate on held-out images only", stacklevel=2)
    if ds.y is None:
        raise ValueError(f"{data}: the images are not labelled; use one sub-folder per class (named like "
                         "the model's labels) or ImageNet-style <wnid>_*.JPEG files with --class-index")
    if int(ds.y.max()) >= len(m.labels):
        raise ValueError(f"{data}: labels go up to {int(ds.y.max())} but the model has {len(m.labels)} classes; "
                         "the data's classes do not match the model's labels (wrong --class-index?)")
    calib = m.calibration or {}
    info = {"source": ds.source, "split": ds.split, "count": len(ds), "skipped": len(ds.skipped),
            "skipped_files": [Path(s).name for s in ds.skipped[:20]], "class_index": ds.class_index,
            "calibration": {"source": calib.get("source"), "count": calib.get("count"),
                            "left_out": ds.left_out, "disjoint": ds.disjoint,
                            "how": ("digits: calibration from the 1297 training digits, evaluation on the 500 "
                                    "held out" if data == "digits" else
                                    "the calibration samples are not fingerprinted: evaluation may include them"
                                    if not ds.disjoint else
                                    f"{ds.left_out} file(s) that calibrated the artifact (same content) left out"
                                    if ds.left_out else "no evaluation file calibrated the artifact")}}
    return EvalData(ds.x, ds.y, info)


def _scores(logits: np.ndarray, y: np.ndarray) -> dict:
    return {"top1": float(topk_correct(logits, y, 1).mean()), "top5": float(topk_correct(logits, y, 5).mean())}


def _compare(ref: np.ndarray, test: np.ndarray, y: np.ndarray) -> dict:
    c_ref, c_test = topk_correct(ref, y, 1), topk_correct(test, y, 1)
    scores = _scores(test, y)
    return {"delta_top1": paired_delta(c_ref, c_test), "agreement": top1_agreement(ref, test),
            "sqnr_db": sqnr_db(ref, test), "drop_points": 100 * (float(c_ref.mean()) - scores["top1"])}


def check_artifact(art, data: EvalData, *, max_drop: float = 1.0, formats: list[str] | None = None,
                   session=None) -> dict:
    """fp32 and int8 accuracy of every format in ``art`` on ``data``, one row per runtime, run on
    this machine; with ``session`` (a device), the int8 files also run there and each row holds
    both: the device's int8 against fp32 and against this host's int8. A runtime that fails gets
    a row with ``error`` and the others go on. ``ok`` is false when any row failed or dropped more
    than ``max_drop`` points of top-1 (on the host or on the device)."""
    from .artifact import Artifact, runtime_of
    art = art if isinstance(art, Artifact) else Artifact.load(art)
    art.require_complete()
    x, y = data.x, data.y
    fmts = formats or sorted({e.format for e in art.files.values()} | {e["format"] for e in art.errors})
    rows = []
    for fmt in fmts:
        row = {"format": fmt, "runtime": runtime_of(fmt)}
        try:
            logits = {}
            for precision in ("fp32", "int8"):
                name = art.name_of(fmt, precision)
                if name is None:
                    why = next((e["message"] for e in art.errors
                                if e["format"] == fmt and e["precision"] == precision), None)
                    raise FileNotFoundError(f"no {precision} {fmt} file in {art.path}"
                                            + (f" (export failed: {why})" if why else ""))
                row[f"{precision}_file"] = name
                logits[precision] = _outputs(art, name, x)
                row[precision] = _scores(logits[precision], y)
            row.update(_compare(logits["fp32"], logits["int8"], y))
            row["ok"] = row["drop_points"] <= max_drop + 1e-9
            if session is not None:
                dev = _outputs(art, row["int8_file"], x, session)
                d = {"name": session.device.name, "int8": _scores(dev, y), **_compare(logits["fp32"], dev, y),
                     "agreement_with_host_int8": top1_agreement(logits["int8"], dev),
                     "sqnr_db_vs_host_int8": sqnr_db(logits["int8"], dev)}
                row["device"] = d
                row["ok"] = row["ok"] and d["drop_points"] <= max_drop + 1e-9
        except Exception as e:  # one runtime failing: its row says why, the others go on
            row.update(ok=False, error=str(e) if isinstance(e, (RuntimeError, FileNotFoundError, ValueError))
                       else f"{type(e).__name__}: {_short(e)}")
        rows.append(row)
    m = art.manifest
    return {"schema_version": 2, "artifact": str(art.path), "model": m.model, "twin": m.twin, "quant": m.quant,
            "data": data.info, "max_drop_points": max_drop, "rows": rows,
            "device": session.device.name if session is not None else None,
            "ok": bool(rows) and all(r["ok"] for r in rows)}


def _outputs(art, name: str, x: np.ndarray, session=None) -> np.ndarray:
    from .quiet import message
    try:
        out = np.asarray(run_file(art, name, x, session), np.float32)
    except Exception as e:
        raise RuntimeError(f"{name}: {message(e)}" if isinstance(e, ValueError) else
                           f"{name}: {type(e).__name__}: {_short(e)}") from e
    if out.shape[0] != len(x):
        raise RuntimeError(f"{name}: {out.shape[0]} outputs for {len(x)} inputs")
    return out


def check(artifact, data: str = "digits", *, class_index: str | None = None, max_drop: float = 1.0,
          limit: int | None = None, formats: list[str] | None = None, device: str | None = None,
          inventory: str | None = None, localize: bool = False, keep_fp32=(), depth: int = 1) -> dict:
    """``edgeconv check``: fp32 vs int8 accuracy of every runtime in ``artifact`` on the labelled
    ``data`` (``digits`` or an image folder), never on samples that calibrated it; with ``device``
    the int8 files also run on that device's own kernels, beside this host's. ``localize`` adds
    the per-block int8 error (``edgeconv.localize``) and, with ``keep_fp32``, what leaving those
    blocks in fp32 recovers. Writes ``accuracy.json`` into the artifact folder and returns it."""
    from .artifact import Artifact, jsonable, save_result
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if not -100 <= max_drop <= 100:
        raise ValueError(f"--max-drop {max_drop}: must be between -100 and 100 points")
    ev = eval_data(art, data, class_index, limit)
    if device:
        from .device import AgentSession
        with AgentSession(device, inventory) as session:
            res = check_artifact(art, ev, max_drop=max_drop, formats=formats, session=session)
    else:
        res = check_artifact(art, ev, max_drop=max_drop, formats=formats)
    if localize:
        from .localize import localize_artifact
        res.update(localize_artifact(art, ev, keep_fp32=tuple(keep_fp32), depth=depth))
    res = jsonable(res)
    return {**res, "saved": save_result(art.path / "accuracy.json", res)}


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:400]
