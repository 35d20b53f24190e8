"""Export to ONNX, TFLite and ExecuTorch: one artifact folder per model (``edgeconv.artifact``).

Exporters register themselves by name (``EXPORTERS``); each has ``name`` and
``export(model, example, precision, calib, recipe, io_options, path) -> {"input": IOSpec, "output":
IOSpec, "int8_report": dict | None}``; the int8 report says which ops of the file run in int8.
One backend failing (an op it cannot export) is recorded in the manifest's ``errors`` and the
others go on.

An export is resumable: the manifest lists what was asked for and is marked ``complete`` only
at the end; running the same export again (same model, weights, recipe and calibration
samples: the manifest's ``fingerprint``; fp32 files may be added to int8 ones and back) keeps
the files that are there and intact and writes
only the missing ones. ``force`` replaces an earlier export of another model, deleting only
the files edgeconv wrote there.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import sys
import time
import traceback
import types
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ..artifact import (FORMATS, MANIFEST, PRECISIONS, Artifact, ArtifactError, FileEntry, FolderLock, Manifest,
                        cached_sha256, ensure_writable, file_name, write_bytes_atomic)
from ..quiet import native_output

EXPORTERS: dict[str, object] = {}
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@dataclass(frozen=True)
class ExportIO:
    """How the files take and give tensors (not part of the int8 recipe): ``channels_last``
    makes TFLite take NHWC input (camera frames); ``int8_io`` keeps a TFLite int8 file's int8
    input/output tensors (their scale and zero point in the manifest)."""
    channels_last: bool = False
    int8_io: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def register(cls):
    EXPORTERS[cls.name] = cls()
    return cls


def _load_backends() -> None:
    from . import executorch, onnx, tflite  # noqa: F401  (each registers itself)


def get_exporter(name: str):
    _load_backends()
    if name not in EXPORTERS:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return EXPORTERS[name]


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


def versions() -> dict:
    out = {}
    for dist in ("edgeconv", "torch", "onnx", "onnxruntime", "onnxscript", "litert-torch",
                 "ai-edge-litert", "executorch", "torchao"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def exportable(model, example) -> None:
    """Refuse, before anything is written, a model ``torch.export`` cannot capture, saying why and
    where in the model's code."""
    import torch
    try:
        torch.export.export(model, (example,))
    except Exception as e:  # torch.export raises many types; one named error
        text = str(e)
        where = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
        user = [w for w in where if "site-packages/torch" not in w[0]]
        at = f" at {Path(user[-1][0]).name}:{user[-1][1]} (in {user[-1][2]})" if user else ""
        kind = ("data-dependent control flow (a Python branch on a tensor's value)"
                if re.search(r"[Dd]ata.dependent|control flow|GuardOnDataDependent", text) else
                f"{type(e).__name__}: {' '.join(text.split())[:200]}")
        raise ValueError(f"torch.export cannot capture {model.card.name}{at}: {kind}; every format exports "
                         "through torch.export, so make that code path static (or use torch.cond)") from None


def _fingerprint(model, example, calib, recipe, io) -> str:
    """What an artifact's files depend on, apart from which files were asked for:
    ``"<model>:<int8>"``, the model's weights, source, input shape and I/O options, then (for int8
    files only) the calibration samples and the recipe."""
    import json
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([model.card.source, list(example.shape), io.to_dict()], sort_keys=True, default=str).encode())
    if calib is None:
        return h.hexdigest()[:32] + ":"
    q = hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode())
    q.update(np.ascontiguousarray(calib).tobytes())
    return h.hexdigest()[:32] + ":" + q.hexdigest()[:32]


def _same_export(old: str, new: str) -> str | None:
    """The fingerprint of the two exports together, or None if they cannot share a folder (another
    model, or int8 files from other calibration samples or recipe)."""
    om, _, oq = old.partition(":")
    nm, _, nq = new.partition(":")
    if om != nm or (oq and nq and oq != nq):
        return None
    return f"{nm}:{nq or oq}"


def _refuse_foreign(out: Path) -> None:
    """Refuse a folder edgeconv did not make: not empty and without an artifact's manifest."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out names an artifact folder")
    if out.is_dir() and any(p.name != FolderLock.NAME for p in out.iterdir()) and not (out / MANIFEST).is_file():
        raise FileExistsError(f"{out} is not empty and is not an artifact folder (no {MANIFEST}); edgeconv "
                              "will not write into it or delete anything there: choose another --out")


def _prepare_folder(out: Path, fingerprint: str, force: bool) -> Artifact | None:
    """The earlier export in ``out`` to resume or extend, or None to start afresh (after removing,
    with ``force``, only the files its manifest says edgeconv wrote). Refuses a folder that is
    not an artifact, and one whose manifest cannot be read (what edgeconv wrote there is then
    unknown, so nothing is deleted)."""
    _refuse_foreign(out)
    if not out.exists() or not any(p.name != FolderLock.NAME for p in out.iterdir()):
        return None
    try:
        old = Artifact.load(out)
    except ArtifactError as e:
        raise FileExistsError(f"{out} holds a manifest edgeconv cannot read, so it cannot tell which files there "
                              f"it wrote and deletes none, even with --force: remove {out} yourself or choose "
                              f"another --out ({e})") from None
    joint = _same_export(old.manifest.fingerprint, fingerprint)
    if joint and not force:
        old.manifest.fingerprint = joint
        return old
    if not force:
        raise FileExistsError(f"{out} already holds an export of {old.manifest.model} made from other weights, "
                              "recipe or calibration data; pass --force to replace it or choose another --out")
    for name in old.own_files():
        path = out / name
        if path.is_file():
            path.unlink()
    for leftover in out.glob(".model_*.partial*"):
        leftover.unlink()
    return None


def save_reference(model, example, out: Path) -> dict:
    """The eager model for ``verify`` and ``check --localize``: its weights (``reference.pt``, a
    state dict) beside the manifest's ``source`` record, or a ``torch.export`` program
    (``reference.pt2``) when the model has no source to import again. Returns the manifest's
    record of it (file, sha256, bytes), so a replaced reference is refused like a model file."""
    import io

    import torch

    buf = io.BytesIO()
    if model.card.source.get("kind") == "pt2":
        name = "reference.pt2"
        torch.export.save(torch.export.export(model, (example,)), buf)
    else:
        name = "reference.pt"
        torch.save({"state_dict": model.state_dict()}, buf)
    data = buf.getvalue()
    write_bytes_atomic(out / name, data)
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def export(model, example=None, *, formats=tuple(FORMATS), precisions=PRECISIONS, calib: np.ndarray | None = None,
           recipe=None, io: ExportIO | None = None, out: str | Path = "artifacts", force: bool = False,
           calib_info: dict | None = None, progress=None, log=None, workers: int | None = None) -> Artifact:
    """Export ``model`` to every format x precision into the folder ``out``.

    ``model`` is any single-input ``nn.Module``: a zoo or card model (``create_model``), or your
    own module with ``example`` (one input tensor). ``calib`` (N x C x H x W float32,
    preprocessed real samples) is required for int8; ``calib_info`` says where it came from
    (recorded in the manifest). Returns the Artifact; failures are listed in
    ``artifact.errors`` and did not stop other formats.

    ``workers``: how many files are exported at once, each in a process of its own that
    rebuilds the model from the folder's reference (``parallel_workers``; None: one per core
    for a model of ``PARALLEL_MIN_LAYERS`` layers or more, else 1, in this process). The files
    are the same either way.
    """
    import torch

    from ..card import adopt, check_module_paths, model_cost
    from ..quantize import QuantRecipe, fold_batchnorm
    _load_backends()
    model = adopt(model.eval(), example)
    recipe = recipe or QuantRecipe()
    io = io or ExportIO()
    for f in formats:
        get_exporter(f)
    if not formats:
        raise ValueError("no format to export: pass at least one of " + ", ".join(FORMATS))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"unknown precision(s) {bad}; known: {', '.join(PRECISIONS)}")
    if example is None:
        example = torch.zeros(1, *model.input_shape)
    if "int8" in precisions:
        if calib is None or len(calib) == 0:
            raise ValueError("int8 needs calibration samples: pass --calib digits, an image folder or a .npy")
        if tuple(calib.shape[1:]) != tuple(example.shape[1:]):
            raise ValueError(f"calibration samples have shape {tuple(calib.shape[1:])}; the model takes "
                             f"{tuple(example.shape[1:])}")
        calib = calib[:recipe.calib_count]
    check_module_paths(model, recipe.keep_fp32)
    exportable(model, example)
    out = Path(out)
    fingerprint = _fingerprint(model, example, calib if "int8" in precisions else None, recipe, io)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out names an artifact folder")
    ensure_writable(out, "--out")
    # The folder is judged under the lock: another export may be writing it right now.
    with FolderLock(out, "--out folder"):
        art = _prepare_folder(out, fingerprint, force)
        requested = [[f, p] for f in formats for p in precisions]
        if art is None:
            card = model.card
            art = Artifact(out, Manifest(
                model=card.name, twin=card.twin, source=card.source, arch=_arch(model),
                input_shape_nchw=list(example.shape), output_shape=_output_shape(model, example),
                labels=list(card.labels) if card.labels else None, preprocess=card.preprocess,
                params=sum(p.numel() for p in model.parameters()), macs=model_cost(model)["macs"],
                calibration=calib_info or ({"source": "given", "count": len(calib)} if calib is not None else None),
                quant=recipe.to_dict(), io=io.to_dict(), versions=versions(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), fingerprint=fingerprint, requested=requested))
            if card.labels:
                write_bytes_atomic(out / "labels.txt", ("\n".join(card.labels) + "\n").encode())
            art.manifest.reference = save_reference(model, example, out)
        else:
            art.manifest.requested = [list(r) for r in dict.fromkeys(
                map(tuple, art.manifest.requested + requested))]
            art.manifest.errors = []
            for name in [n for n in art.files if not _intact(art, n)]:
                del art.files[name]
        art.manifest.complete = False
        art.save()
        todo = art.missing()
        done = len(art.manifest.requested) - len(todo)
        if todo:  # what verify and check said no longer describes the folder
            for name in ("verify.json", "accuracy.json"):
                (out / name).unlink(missing_ok=True)
        if log and done:
            log(f"reusing {out}: all {done} file(s) already exported" if not todo else
                f"resuming the export in {out}: {done} file(s) already there, {len(todo)} to go")
        folded = fold_batchnorm(model, example)
        calib_tensors = _batch_one(calib)
        total, n_workers = len(todo), parallel_workers(model, len(todo), workers)
        if n_workers > 1:
            todo = _export_in_workers(art, folded, example, todo, calib, recipe, io, n_workers, progress, log)
        for i, (fmt, precision) in enumerate(todo, start=total - len(todo)):
            if progress:
                progress(i, total, f"{fmt} {precision}")
            _record(art, fmt, precision, _attempt(art.path, folded, example, fmt, precision, calib_tensors, recipe, io))
        order = {tuple(r): i for i, r in enumerate(art.manifest.requested)}   # workers finish in any order
        art.manifest.files = dict(sorted(art.files.items(), key=lambda kv: order.get((kv[1].format,
                                                                                       kv[1].precision), 0)))
        art.errors.sort(key=lambda e: order.get((e["format"], e["precision"]), 0))
        art.manifest.complete = True
        art.save()
    if progress:
        progress(total, total, "done")
    return art


def _intact(art: Artifact, name: str) -> bool:
    try:
        art.checked(name)
        return True
    except ArtifactError:
        return False


def _batch_one(calib) -> list:
    """The calibration samples as batch-1 tensors, the shape the exporters calibrate with."""
    import torch
    return [torch.from_numpy(np.ascontiguousarray(calib[i:i + 1])) for i in range(len(calib))] \
        if calib is not None else []


def _attempt(folder: Path, folded, example, fmt, precision, calib, recipe, io) -> tuple:
    """Run one exporter into a ``.partial`` name of this process's own: ``("done", result,
    seconds)`` (``result["partial"]``: that file) or ``("error", record, seconds)`` (the record
    that goes into the manifest's ``errors``). A full disk is raised (``OSError``), not
    recorded: the file stays missing for a rerun."""
    name = file_name(fmt, precision)
    path = folder / name
    tmp = folder / f".{name}.partial-{os.getpid()}{path.suffix}"
    t0 = time.perf_counter()
    try:
        with native_output(f"{fmt} {precision} export"):
            result = EXPORTERS[fmt].export(folded, example, precision, calib, recipe, io, tmp)
        return "done", {**result, "partial": tmp.name}, round(time.perf_counter() - t0, 2)
    except Exception as e:  # any backend failure is recorded; the other formats go on
        for leftover in folder.glob(f".{name}.partial-{os.getpid()}*"):
            leftover.unlink()
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            raise OSError(e.errno, e.strerror, str(path)) from None
        err = e if isinstance(e, ExportError) else ExportError(fmt, _first_line(e), failing_op(e))
        for note in getattr(e, "__notes__", ()):
            err.add_note(note)
        return "error", {"format": fmt, "precision": precision, "op": err.op, "message": str(err),
                         "traceback": traceback.format_exc(limit=8)}, round(time.perf_counter() - t0, 2)


def _record(art: Artifact, fmt, precision, outcome) -> None:
    """Put one ``_attempt`` outcome into the folder: the file under its name and in the
    manifest, or the error in the manifest."""
    kind, payload, seconds = outcome
    if kind == "error":
        art.errors.append(payload)
    else:
        name = file_name(fmt, precision)
        path = art.path / name
        (art.path / payload["partial"]).replace(path)
        art.files[name] = FileEntry(fmt, precision, payload["input"], payload["output"], cached_sha256(path),
                                    path.stat().st_size, seconds, payload.get("int8_report"))
    art.save()


# -- several files at once ------------------------------------------------------------------------
# Most of an export is single-threaded Python (torch.export, the PT2E passes, ExecuTorch's
# lowering, the converters), so on a machine with several cores the files are made side by side,
# one process each (spawned: a fork would inherit torch's OpenMP pool and the parent's locks).

PARALLEL_MIN_LAYERS = 24   # conv/linear layers; a smaller model exports faster than a worker starts
_COST = {"executorch": 3, "onnx": 2, "tflite": 1}   # longest first: ExecuTorch int8 takes the longest


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_workers(model, jobs: int, workers: int | None = None) -> int:
    """How many worker processes export ``jobs`` files of ``model``: ``workers`` if given (at most
    one per file), else one per core when the model has ``PARALLEL_MIN_LAYERS`` conv/linear
    layers or more and can be rebuilt from its reference (a zoo spec or a model card), else 1."""
    import multiprocessing

    from torch import nn
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r}: must be a whole number >= 1")
        return max(1, min(workers, jobs))
    if jobs < 2 or model.card.source.get("kind") not in ("spec", "card") \
            or multiprocessing.current_process().daemon:   # a daemonic process may not start any
        return 1
    layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    return min(cores(), jobs, _memory_for_workers()) if layers >= PARALLEL_MIN_LAYERS else 1


WORKER_MEMORY = 5 << 30   # bytes a worker may take at its peak (measured: 4.6 GB, EfficientNet-Lite0 int8)


def _memory_for_workers() -> int:
    """How many workers the memory available now holds (1 where that cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 1
    return max(1, avail // WORKER_MEMORY)


def _export_in_workers(art: Artifact, folded, example, todo, calib, recipe, io, workers: int, progress,
                       log=None) -> list:
    """Export ``todo`` in ``workers`` spawned processes, longest first; each rebuilds the model
    from the folder's reference and checks that it gives ``folded``'s outputs. Returns the
    files that still need an export here: all of them when no worker can start (or the
    reference cannot be read), else those whose model did not rebuild alike or whose worker died."""
    import concurrent.futures as cf
    import multiprocessing

    import torch

    from .. import quiet

    def here(why: str) -> list:
        if log:
            log(f"exporting in this process instead of {workers} workers: {why}")
        return list(todo)

    try:
        reference = str(art.reference())
    except ArtifactError as e:
        return here(str(e))
    probes = _probes(example, calib)
    job = {"folder": str(art.path), "source": art.manifest.source, "reference": reference,
           "example": example.numpy(), "probes": probes, "expected": _answers(folded, probes), "calib": calib,
           "recipe": recipe, "io": io}
    order = sorted(todo, key=lambda fp: (fp[1] != "int8", -_COST.get(fp[0], 0)))
    threads = max(1, torch.get_num_threads() // workers)
    left, done = [], 0
    try:
        pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_start,
                                      initargs=(quiet.verbose(), quiet.log_path(), threads))
    except Exception as e:  # no process can be started here
        return here(f"{type(e).__name__}: {e}")
    try:
        futures = {}
        try:
            with _caller_script_hidden():
                for fmt, precision in order:
                    futures[pool.submit(_worker_export, job, fmt, precision)] = (fmt, precision)
        except Exception as e:  # e.g. a daemonic process may not have children
            if not futures:
                return here(f"{type(e).__name__}: {e}")
            left += [fp for fp in order if fp not in futures.values()]
        if progress:
            progress(0, len(todo), f"{len(order)} files, {workers} at a time")
        for fut in cf.as_completed(futures):
            fmt, precision = futures[fut]
            try:
                outcome = fut.result()
            except OSError as e:
                if e.errno in DISK_ERRNOS:
                    raise
                outcome = ("retry", f"{type(e).__name__}: {e}", 0.0)
            except Exception as e:  # the worker died (BrokenProcessPool)
                outcome = ("retry", f"{type(e).__name__}: {e}", 0.0)
            if outcome[0] == "retry":
                left.append((fmt, precision))
                if log:
                    log(f"{fmt} {precision}: exporting it in this process instead ({outcome[1]})")
                continue
            _record(art, fmt, precision, outcome)
            done += 1
            if progress:
                progress(done, len(todo), f"{fmt} {precision}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [fp for fp in todo if tuple(fp) in left]


def _probes(example, calib) -> list[np.ndarray]:
    """The inputs a rebuilt model must answer alike: ``example``, two calibration samples and a
    seeded random input (zeros alone hide anything that scales the input), each batch 1."""
    rows = [example.numpy()] + ([calib[i:i + 1] for i in range(min(2, len(calib)))] if calib is not None else [])
    rows.append(np.random.default_rng(0).standard_normal(example.shape).astype(rows[0].dtype))
    return [np.ascontiguousarray(r) for r in rows]


def _answers(model, probes: list[np.ndarray]) -> list[np.ndarray]:
    import torch
    with torch.no_grad():
        return [model(torch.from_numpy(x)).numpy() for x in probes]


@contextlib.contextmanager
def _caller_script_hidden():
    """Spawn runs the caller's ``__main__`` script again in every new process unless the script
    guards its top level with ``if __name__ == "__main__"``; the workers need nothing from it
    (they import edgeconv by name), so while they start, ``__main__`` is an empty module."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


_worker: dict = {}   # in a worker: its model, and its native log and the shared one


def _worker_start(verbose: bool, log_file: str, threads: int) -> None:
    """A worker's set-up: it ends when the exporting process does (Linux), follows edgeconv's
    quiet rules and (unless verbose) keeps its fds 1 and 2 on a native log of its own, handed on
    to the shared one after each file (``_hand_over_log``): a worker has nothing of its own to
    say, it returns outcomes, and what one worker's libraries print stays out of another's
    error notes."""
    import multiprocessing.util
    import signal
    with contextlib.suppress(Exception):   # PR_SET_PDEATHSIG: no orphan writing into a folder no one locks
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    from .. import quiet
    private = f"{log_file}.{os.getpid()}"
    _worker.update(shared=log_file, private=private)
    quiet.configure(verbose, private)
    if not verbose:
        fd = os.open(private, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        multiprocessing.util.Finalize(None, _hand_over_log, kwargs={"last": True}, exitpriority=0)
    import torch
    torch.set_num_threads(threads)
    _load_backends()


def _hand_over_log(last: bool = False) -> None:
    """Append what this worker's libraries printed to the shared native log (one write) and
    empty its own; the last time, remove it."""
    private, shared = _worker.get("private"), _worker.get("shared")
    if not private or not os.path.exists(private):
        return
    with contextlib.suppress(OSError):
        with open(private, "rb") as f:
            text = f.read()
        if text:
            fd = os.open(shared, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
        if last:
            os.unlink(private)
        else:
            os.truncate(private, 0)


def _worker_export(job: dict, fmt: str, precision: str) -> tuple:
    """One file in a worker: the outcome of ``_attempt``, or ``("retry", why, 0)`` when the model
    rebuilt from the reference does not give the parent's outputs."""
    import torch

    from ..quantize import fold_batchnorm
    from ..zoo import load_reference
    key = (job["folder"], job["reference"])
    if _worker.get("key") != key:
        example = torch.from_numpy(job["example"])
        try:
            folded = fold_batchnorm(load_reference(job["source"], Path(job["reference"])), example)
            got = _answers(folded, job["probes"])
        except Exception as e:  # the parent exports this file itself
            return "retry", f"the model could not be rebuilt from its reference ({type(e).__name__}: {e})", 0.0
        for g, want in zip(got, job["expected"]):
            scale = max(1.0, float(np.abs(want).max()))
            if g.shape != want.shape or not np.allclose(g, want, rtol=1e-4, atol=1e-4 * scale):
                return "retry", "the model rebuilt from its reference gives other outputs", 0.0
        _worker.update(key=key, model=(folded, example))
    folded, example = _worker["model"]
    outcome = _attempt(Path(job["folder"]), folded, example, fmt, precision, _batch_one(job["calib"]),
                       job["recipe"], job["io"])
    _hand_over_log()
    if outcome[0] == "error":   # its notes name the log the text is in now
        record = {k: v.replace(_worker["private"], _worker["shared"]) if isinstance(v, str) else v
                  for k, v in outcome[1].items()}
        outcome = ("error", record, outcome[2])
    return outcome


def _arch(model) -> dict:
    from ..card import blocks
    if hasattr(model, "arch"):
        return dict(model.arch)
    mods = dict(model.named_modules())
    try:
        return {b: type(mods[b]).__name__ for b in blocks(model)}
    except Exception:  # a graph module may not run hooks; blocks are optional metadata
        return {}


def _output_shape(model, example) -> list:
    import torch
    with torch.no_grad():
        return list(model(example).shape)


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:600]}"
