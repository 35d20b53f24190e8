"""Export to ONNX, TFLite and ExecuTorch: one artifact folder per model.

An artifact folder holds ``model_<precision>.<ext>`` files, ``labels.txt`` and
``manifest.json``: input/output name, shape, layout, dtype and int8 quantisation of every
file, the preprocessing, labels, arch, params and MACs, the exporters' versions, the
sha256 of every file and, for int8 files, which ops run in int8 (``int8_report``).

Exporters register themselves by name (``EXPORTERS``); each has ``name``, ``suffix``,
``export(model, example, precision, calib, quant, path) -> {"input": .., "output": ..}``
and ``inspect(path) -> int8 report``. One backend failing (an op it cannot export) is
recorded in the manifest's ``errors`` and the others go on.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from ..quantize import QuantConfig, fold_batchnorm

SCHEMA_VERSION = 1
EXPORTERS: dict[str, object] = {}
PRECISIONS = ("fp32", "int8")


def register(cls):
    EXPORTERS[cls.name] = cls()
    return cls


def get_exporter(name: str):
    _load_backends()
    if name not in EXPORTERS:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(EXPORTERS)}")
    return EXPORTERS[name]


def _load_backends() -> None:
    from . import executorch, onnx, tflite  # noqa: F401  (each registers itself)


def formats() -> list[str]:
    _load_backends()
    return list(EXPORTERS)


class ExportError(RuntimeError):
    """A backend could not export the model; names the backend and, where known, the op."""

    def __init__(self, backend: str, message: str, op: str | None = None):
        self.backend, self.op = backend, op
        where = f"op {op!r}" if op else "the model"
        super().__init__(f"{backend} cannot export {where}: {message}")


_OP_PATTERNS = (
    r"No ONNX function found for <OpOverload\(op='([^']+)'",
    r"[Oo]perator '([\w:.]+)'",
    r"target=torch\.ops\.([\w.]+)",
    r"(aten\.\w+)(?:\.\w+)?",
    r"(aten::\w+)",
    r"torch\.ops\.([\w.]+)",
)


def failing_op(exc: BaseException) -> str | None:
    """The op named anywhere in an exporter's exception chain, if any."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for pat in _OP_PATTERNS:
            m = re.search(pat, str(e))
            if m:
                return m.group(1)
        e = e.__cause__ or e.__context__
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def versions() -> dict:
    out = {}
    for dist in ("edgeconv", "torch", "onnx", "onnxruntime", "onnxscript", "litert-torch",
                 "ai-edge-litert", "executorch", "torchao"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


@dataclass
class Artifact:
    """An artifact folder and its manifest."""
    path: Path
    manifest: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.exists():
            raise FileNotFoundError(f"{path} is not an artifact folder: no manifest.json "
                                    "(make one with `edgeconv export`)")
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{mf}: not valid JSON ({e})") from None
        return cls(path, manifest)

    @property
    def files(self) -> dict[str, dict]:
        return self.manifest.get("files", {})

    @property
    def errors(self) -> list[dict]:
        return self.manifest.get("errors", [])

    def file(self, fmt: str, precision: str) -> Path | None:
        for name, e in self.files.items():
            if e["format"] == fmt and e["precision"] == precision:
                return self.path / name
        return None

    def save(self) -> None:
        write_json_atomic(self.path / "manifest.json", self.manifest)


def refuse_existing(out: str | Path, force: bool) -> bool:
    """True when ``out`` holds earlier results that ``force`` allows to replace; without
    ``force`` those results are kept and this raises."""
    out = Path(out)
    if not (out.exists() and any(out.iterdir())):
        return False
    if not force:
        raise FileExistsError(f"{out} already exists and is not empty; pass --force to overwrite it "
                              "or choose another --out")
    return True


def model_meta(model) -> dict:
    """Manifest fields of a zoo model: name, twin, spec and arch strings, cost, labels,
    preprocessing."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return {"model": type(model).__name__}
    from ..data import Preprocess
    from ..zoo import labels_for
    cost = model.cost()
    return {"model": spec.name, "twin": spec.twin, "spec": spec.to_dict(), "arch": model.arch,
            "params": cost.params, "macs": cost.macs, "labels": labels_for(spec),
            "preprocess": Preprocess.from_dict(spec.preprocess, spec.input_size).to_dict()}


def _save_reference(model, path: Path) -> None:
    """The eager model, so ``verify`` can compare every file with PyTorch later."""
    spec = getattr(model, "spec", None)
    payload = ({"spec": spec.to_dict(), "state_dict": model.state_dict()} if spec is not None
               else {"module": model})
    torch.save(payload, path)


def export(model, example: torch.Tensor | None = None, *, formats=("onnx", "tflite", "executorch"),
           precisions=("fp32", "int8"), calib: np.ndarray | None = None,
           quant: QuantConfig | None = None, out: str | Path = "artifacts", force: bool = False,
           calib_info: dict | None = None, progress=None) -> Artifact:
    """Export ``model`` to every format x precision into the folder ``out``.

    ``calib`` (N x C x H x W float32, preprocessed real samples) is required for int8;
    ``calib_info`` says where it came from (recorded in the manifest). Returns the
    Artifact; failures are listed in ``artifact.errors`` and did not stop other formats.
    """
    _load_backends()
    quant = quant or QuantConfig()
    for f in formats:
        get_exporter(f)
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown precision(s) {bad}; known: {', '.join(PRECISIONS)}")
    if example is None:
        example = torch.zeros(1, *model.input_shape)
    if "int8" in precisions:
        if calib is None or len(calib) == 0:
            raise ValueError("int8 needs calibration samples: pass --calib digits, an image folder or a .npy")
        if tuple(calib.shape[1:]) != tuple(example.shape[1:]):
            raise ValueError(f"calibration samples have shape {tuple(calib.shape[1:])}; the model takes "
                             f"{tuple(example.shape[1:])}")
    out = Path(out)
    if refuse_existing(out, force):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    folded = fold_batchnorm(model)
    calib_tensors = [torch.from_numpy(calib[i:i + 1]) for i in range(len(calib))] if calib is not None else []
    art = Artifact(out, {
        "schema_version": SCHEMA_VERSION, **model_meta(model),
        "input_shape_nchw": list(example.shape),
        "calibration": calib_info or ({"source": "given", "count": len(calib)} if calib is not None else None),
        "quant": quant.to_dict(), "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": {}, "errors": [],
    })
    labels = art.manifest.get("labels")
    if labels:
        (out / "labels.txt").write_text("\n".join(labels) + "\n")
    _save_reference(model.eval(), out / "reference.pt")
    art.save()
    jobs = [(f, p) for f in formats for p in precisions]
    for i, (fmt, precision) in enumerate(jobs):
        exporter = EXPORTERS[fmt]
        name = f"model_{precision}{exporter.suffix}"
        if progress:
            progress(i, len(jobs), f"{fmt} {precision}")
        t0 = time.perf_counter()
        try:
            io = exporter.export(folded, example, precision, calib_tensors, quant, out / name)
            entry = {"format": fmt, "precision": precision, **io}
            if precision == "int8":
                entry["int8_report"] = exporter.inspect(out / name)
        except Exception as e:  # any backend failure is recorded; the other formats go on
            err = e if isinstance(e, ExportError) else ExportError(fmt, _first_line(e), failing_op(e))
            art.manifest["errors"].append({"format": fmt, "precision": precision, "op": err.op,
                                           "message": str(err),
                                           "traceback": traceback.format_exc(limit=8)})
            for leftover in out.glob(f"model_{precision}{exporter.suffix}*"):
                leftover.unlink()
            art.save()
            continue
        entry.update(sha256=sha256(out / name), bytes=(out / name).stat().st_size,
                     export_seconds=round(time.perf_counter() - t0, 2))
        art.manifest["files"][name] = entry
        art.save()
    if progress:
        progress(len(jobs), len(jobs), "done")
    return art


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:600]}"
