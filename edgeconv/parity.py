"""``verify``: the parity matrix of an artifact folder, every file run on the same inputs in its
runtime.

* fp32 files against PyTorch eager: max absolute and relative error (``fp32_rtol``);
* int8 files against fp32 eager: SQNR in dB (``min_sqnr_db``) and top-1 agreement
  (``min_agreement``);
* int8 files against each other: SQNR and agreement (reported).
A file that fails its threshold, fails to load, or is not the file the manifest describes
(size or sha256) makes the verdict ``ok: false``, as does an export that did not finish.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .accuracy import max_errors, run_file, sqnr_db, top1_agreement
from .artifact import Artifact, ArtifactError, jsonable, save_result
from .quiet import message


MAX_COUNT = 10_000  # parity is settled long before; more only fills memory


@dataclass(frozen=True)
class Thresholds:
    fp32_rtol: float = 1e-4
    min_sqnr_db: float = 15.0
    min_agreement: float = 0.9

    def __post_init__(self):
        for name in ("fp32_rtol", "min_sqnr_db", "min_agreement"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"{name}={v!r}: must be a finite number")
        if self.fp32_rtol < 0:
            raise ValueError(f"fp32_rtol={self.fp32_rtol!r}: must be >= 0")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement={self.min_agreement!r}: a fraction between 0 and 1 (0.9 = 90%)")


def reference_model(art: Artifact):
    """The eager model the artifact was exported from (see ``edgeconv.zoo.load_reference``)."""
    from .zoo import load_reference
    return load_reference(art.manifest.source, art.reference())


def verify_inputs(art: Artifact, count: int = 32) -> tuple[np.ndarray, str]:
    """Inputs for the parity run: samples of the calibration source that did not calibrate
    (``edgeconv.data.heldout``), the calibration samples when none are left, else seeded noise."""
    from .data import heldout
    m = art.manifest
    source = (m.calibration or {}).get("source")
    if source == "digits" or (source and Path(source).is_dir()):
        kw = dict(input_shape=tuple(m.input_shape_nchw[1:]), preprocess=m.preprocess, labels=m.labels,
                  limit=count, labelled=False)
        try:
            ds = heldout(source, calibration=m.calibration, **kw)
            return ds.x, f"{source} (held-out, {len(ds)})"
        except ValueError:
            # every image calibrated the artifact: parity compares runtimes on the same inputs,
            # so the calibration images serve (accuracy, in `check`, never uses them)
            ds = heldout(source, calibration=None, **kw)
            return ds.x, f"{source} (calibration images: none held out, {len(ds)})"
    shape = tuple(m.input_shape_nchw[1:])
    return np.random.default_rng(1).standard_normal((count, *shape)).astype(np.float32), f"random ({count})"


def verify(artifact: str | Path | Artifact, thresholds: Thresholds = Thresholds(), count: int = 32,
           inputs: np.ndarray | None = None) -> dict:
    """Run every file of ``artifact`` and hold it against PyTorch eager; writes verify.json
    into the folder and returns the same dict."""
    import torch
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"--count {count}: from 1 to {MAX_COUNT} inputs")
    x, source = (inputs, "given") if inputs is not None else verify_inputs(art, count)
    model = reference_model(art)
    with torch.no_grad():  # one sample at a time, as the files run (a .pt2 reference has batch 1)
        ref = np.concatenate([model(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])
    rows, outputs = [], {}
    for name, entry in art.files.items():
        row = {"file": name, "format": entry.format, "precision": entry.precision, "ok": True}
        try:
            y = run_file(art, name, x)
            outputs[name] = y
            if entry.precision == "fp32":
                row["max_abs"], row["max_rel"] = max_errors(ref, y)
                row["ok"] = row["max_rel"] <= thresholds.fp32_rtol
            else:
                row["sqnr_db"], row["agreement"] = sqnr_db(ref, y), top1_agreement(ref, y)
                row["ok"] = row["sqnr_db"] >= thresholds.min_sqnr_db and row["agreement"] >= thresholds.min_agreement
        except Exception as e:  # one broken file is a failed row; the others are still checked
            row.update(ok=False, error=str(e) if isinstance(e, ArtifactError) else f"{type(e).__name__}: {message(e)}")
        rows.append(row)
    pairs = []
    int8 = [n for n in outputs if art.files[n].precision == "int8"]
    for a, b in itertools.combinations(int8, 2):
        pairs.append({"a": a, "b": b, "sqnr_db": sqnr_db(outputs[a], outputs[b]),
                      "agreement": top1_agreement(outputs[a], outputs[b])})
    unfinished = art.incomplete()
    incomplete = [unfinished] if unfinished else []
    result = {"artifact": str(art.path), "inputs": source, "count": int(len(x)),
              "thresholds": asdict(thresholds), "rows": rows, "int8_pairs": pairs,
              "export_errors": [e["message"] for e in art.errors] + incomplete,
              "ok": all(r["ok"] for r in rows) and not art.errors and not incomplete and bool(rows)}
    result = jsonable(result)
    save_result(art.path / "verify.json", result)
    return result
