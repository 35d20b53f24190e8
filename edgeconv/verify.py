"""Parity matrix of an artifact folder: every file run on the same inputs in its runtime.

* fp32 files against PyTorch eager: max absolute and relative error (``fp32_rtol``);
* int8 files against fp32 eager: SQNR in dB (``min_sqnr_db``) and top-1 agreement
  (``min_agreement``);
* int8 files against each other: SQNR and agreement (reported).
A file that fails its threshold, fails to load, or whose sha256 differs from the manifest
makes the verdict ``ok: false``.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .accuracy import max_errors, run_local, sqnr_db, top1_agreement
from .export import Artifact, sha256, write_json_atomic


@dataclass(frozen=True)
class Thresholds:
    fp32_rtol: float = 1e-4
    min_sqnr_db: float = 15.0
    min_agreement: float = 0.9


def reference_model(art: Artifact) -> torch.nn.Module:
    path = art.path / "reference.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the eager reference is written by `edgeconv export`")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if "spec" in saved:
        from .spec import ModelSpec
        from .zoo import EdgeNet
        model = EdgeNet(ModelSpec.from_dict(saved["spec"]))
        model.load_state_dict(saved["state_dict"])
        return model.eval()
    return saved["module"].eval()


def verify_inputs(art: Artifact, count: int = 32) -> tuple[np.ndarray, str]:
    """Inputs for the parity run: held-out samples of the calibration source where it has
    them (never the calibration samples themselves), else seeded noise."""
    from .data import load_data
    m = art.manifest
    shape = tuple(m["input_shape_nchw"][1:])
    source = m.get("calibration", {}).get("source")
    if source == "digits" or (source and Path(source).is_dir()):
        ds = load_data(source, input_shape=shape, preprocess=m.get("preprocess"), split="eval",
                       calib_count=m.get("quant", {}).get("calib_count", 64), limit=count,
                       labels=m.get("labels"), class_index=m.get("calibration", {}).get("class_index"))
        return ds.x, f"{source} (held-out, {len(ds)})"
    return np.random.default_rng(1).standard_normal((count, *shape)).astype(np.float32), f"random ({count})"


def verify(artifact: str | Path, thresholds: Thresholds = Thresholds(), count: int = 32,
           inputs: np.ndarray | None = None) -> dict:
    art = Artifact.load(artifact)
    x, source = (inputs, "given") if inputs is not None else verify_inputs(art, count)
    with torch.no_grad():
        ref = reference_model(art)(torch.from_numpy(x)).numpy()
    rows, outputs = [], {}
    for name, entry in art.files.items():
        row = {"file": name, "format": entry["format"], "precision": entry["precision"], "ok": True}
        path = art.path / name
        try:
            if not path.exists():
                raise FileNotFoundError(f"{path} is listed in the manifest but missing")
            if entry.get("sha256") and sha256(path) != entry["sha256"]:
                raise ValueError(f"{path} ({entry['format']}): sha256 differs from the manifest; the "
                                 "file changed or was truncated after export; export it again")
            y = run_local(path, x)
            outputs[name] = y
            if entry["precision"] == "fp32":
                row["max_abs"], row["max_rel"] = max_errors(ref, y)
                row["ok"] = row["max_rel"] <= thresholds.fp32_rtol
            else:
                row["sqnr_db"], row["agreement"] = sqnr_db(ref, y), top1_agreement(ref, y)
                row["ok"] = row["sqnr_db"] >= thresholds.min_sqnr_db and row["agreement"] >= thresholds.min_agreement
        except Exception as e:  # one broken file is a failed row; the others are still checked
            row.update(ok=False, error=f"{type(e).__name__}: {e}")
        rows.append(row)
    pairs = []
    int8 = [n for n in outputs if art.files[n]["precision"] == "int8"]
    for a, b in itertools.combinations(int8, 2):
        pairs.append({"a": a, "b": b, "sqnr_db": sqnr_db(outputs[a], outputs[b]),
                      "agreement": top1_agreement(outputs[a], outputs[b])})
    result = {"artifact": str(art.path), "inputs": source, "count": int(len(x)),
              "thresholds": asdict(thresholds), "rows": rows, "int8_pairs": pairs,
              "export_errors": [e["message"] for e in art.errors],
              "ok": all(r["ok"] for r in rows) and not art.errors}
    write_json_atomic(art.path / "verify.json", result)
    return result
