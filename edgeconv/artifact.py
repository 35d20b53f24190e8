"""The artifact folder, the ground floor every other module reads through.

An artifact folder holds ``model_<precision><suffix>`` files, ``manifest.json``,
``labels.txt`` and the eager reference (``reference.pt``: a state dict, or ``reference.pt2``:
a ``torch.export`` program). This module owns the facts about it, each in one place:

* ``FORMATS``: each format's file suffix, runtime and native benchmark tool;
* ``Manifest`` / ``FileEntry`` / ``IOSpec``: the typed manifest, versioned, with a JSON round
  trip that reads older manifests and names the key of a malformed one;
* ``Artifact``: a folder and its manifest; ``Artifact.checked(name)`` refuses a file whose
  size or sha256 differs from the manifest, and ``missing()`` names what an interrupted
  export did not write;
* ``split_indices``: the one calibration / evaluation split of a data source;
* ``sha256``, ``write_json_atomic``, ``write_bytes_atomic`` and ``FolderLock`` (an advisory
  lock file naming its holder, taken over when the holder is dead).

It imports neither torch nor the exporters, so a transport or the report can use it cheaply.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
PRECISIONS = ("fp32", "int8")
MANIFEST = "manifest.json"
OWN_FILES = (MANIFEST, "labels.txt", "reference.pt", "reference.pt2", "verify.json", "accuracy.json")
SEED = 0


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str
    native_tool: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "onnxruntime", "onnxruntime_perf_test"),
    Format("tflite", ".tflite", "litert", "benchmark_model"),
    Format("executorch", ".pte", "executorch", "executor_runner"),
)}
RUNTIMES = tuple(f.runtime for f in FORMATS.values())


def runtime_of(fmt: str) -> str:
    return FORMATS[fmt].runtime


def format_of(runtime: str) -> str:
    """The format ``runtime`` runs (one each)."""
    return next(f.name for f in FORMATS.values() if f.runtime == runtime)


def file_name(fmt: str, precision: str) -> str:
    return f"model_{precision}{FORMATS[fmt].suffix}"


class ArtifactError(ValueError):
    """An artifact folder or one of its files cannot be trusted: names the file and the fix."""


# -- small, safe file writing -------------------------------------------------------------------
def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``: readers see
    the old file or the new one, never half of one; the temp file never outlives a failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a crash after the rename must not leave an empty file behind
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # say which file could not be written
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


MIN_FREE_BYTES = 64 << 10  # less than this and even a results record or a manifest will not fit


def ensure_writable(folder: str | Path, what: str) -> None:
    """Refuse, before any long work, a folder that cannot take the files that work will write."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:  # where it will be made
        folder = folder.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".edgeconv-probe.")
        os.close(fd)
        os.unlink(tmp)
        st = os.statvfs(folder)
    except OSError as e:
        raise ValueError(f"cannot write into {folder} ({e.strerror}); choose another {what}") from None
    if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
        raise ValueError(f"cannot write into {folder}: no space left on its disk; free some space or choose "
                         f"another {what}")


def save_result(path: str | Path, data) -> bool:
    """Write a verb's result (verify.json, accuracy.json) beside what it describes; on a read-only
    or full disk, warn and go on: the result is still printed, and nothing half-written is left."""
    try:
        write_json_atomic(path, data)
        return True
    except OSError as e:
        import warnings
        warnings.warn(f"could not write {path} ({e.strerror}); the result is printed but not saved",
                      stacklevel=2)
        return False


def _json_default(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def jsonable(obj):
    """``obj`` with non-finite floats as strings and numpy scalars as Python numbers, for JSON
    that other tools (and browsers) can read."""
    import math
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


# -- the one calibration / evaluation split -----------------------------------------------------
def split_indices(n: int, split: str, calib_count: int) -> list[int]:
    """Indices of ``split`` among ``n`` samples: ``calib`` is the first ``calib_count`` of a
    seeded shuffle, ``eval`` the rest, ``all`` everything (sorted, so files keep their order)."""
    import numpy as np
    order = np.random.default_rng(SEED).permutation(n)
    if split == "calib":
        return sorted(int(i) for i in order[:calib_count])
    if split == "eval":
        return sorted(int(i) for i in order[calib_count:])
    if split == "all":
        return list(range(n))
    raise ValueError(f"split={split!r}: must be calib, eval or all")


def file_digest(path: str | Path) -> str:
    """A short content digest of a data file: calibration and evaluation files are told apart by
    what they hold, wherever they lie and whatever they are called."""
    return sha256(path)[:24]


# -- the typed manifest -----------------------------------------------------------------------------
def _require(d, key: str, kind, where: str):
    if key not in d:
        raise ArtifactError(f"{where}: missing key {key!r}")
    v = d[key]
    if kind is not None and (not isinstance(v, kind) or (isinstance(v, bool) and kind is int)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ArtifactError(f"{where}: {key!r} is {json.dumps(v)[:60]}; expected {names}")
    return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_str_list(d: dict, key: str, where: str) -> None:
    v = d.get(key)
    if v is not None and (not isinstance(v, list) or not all(isinstance(s, str) for s in v)):
        raise ArtifactError(f"{where}: {key!r} is {json.dumps(v)[:60]}; expected a list of strings")


SOURCE_KINDS = ("spec", "card", "pt2")
IO_DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32")
REFERENCE_FILES = ("reference.pt", "reference.pt2")


@dataclass
class IOSpec:
    """One input or output tensor of a model file, as the file itself takes or gives it."""
    name: str | None
    shape: list | None
    layout: str | None = None
    dtype: str = "float32"
    quant: dict | None = None           # {"scale", "zero_point"} for integer tensors
    shape_nchw: list | None = None      # inputs: the NCHW shape the runtime adapters feed

    @classmethod
    def from_dict(cls, d, where: str) -> IOSpec:
        if not isinstance(d, dict):
            raise ArtifactError(f"{where}: expected an object, got {json.dumps(d)[:60]}")
        for key in ("shape", "shape_nchw"):
            v = d.get(key)
            if v is not None and (not isinstance(v, list) or not all(_is_int(s) and s >= 0 for s in v)):
                raise ArtifactError(f"{where}: {key} {json.dumps(v)[:60]} is not a list of whole numbers")
        if d.get("dtype", "float32") not in IO_DTYPES:
            raise ArtifactError(f"{where}: dtype {json.dumps(d.get('dtype'))} is not one of {', '.join(IO_DTYPES)}")
        if d.get("layout") not in (None, "NCHW", "NHWC"):
            raise ArtifactError(f"{where}: layout {json.dumps(d.get('layout'))} is not NCHW or NHWC")
        if d.get("quant") is not None and not isinstance(d["quant"], dict):
            raise ArtifactError(f"{where}: quant must be an object with scale and zero_point")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["shape_nchw"] is None:
            del d["shape_nchw"]
        return d


@dataclass
class FileEntry:
    format: str
    precision: str
    input: IOSpec
    output: IOSpec
    sha256: str
    bytes: int
    export_seconds: float = 0.0
    int8_report: dict | None = None

    @property
    def runtime(self) -> str:
        return runtime_of(self.format)

    @classmethod
    def from_dict(cls, d, where: str, name: str | None = None) -> FileEntry:
        if not isinstance(d, dict):
            raise ArtifactError(f"{where}: expected an object, got {json.dumps(d)[:60]}")
        fmt = _require(d, "format", str, where)
        if fmt not in FORMATS:
            raise ArtifactError(f"{where}: format {fmt!r} is unknown; known: {', '.join(FORMATS)}")
        prec = _require(d, "precision", str, where)
        if prec not in PRECISIONS:
            raise ArtifactError(f"{where}: precision {prec!r} is unknown; known: {', '.join(PRECISIONS)}")
        # A name is where the file is read from: only edgeconv's own names, inside the folder.
        if name is not None and name != file_name(fmt, prec):
            raise ArtifactError(f"{where}: a {fmt} {prec} file is named {file_name(fmt, prec)}, not {name!r}; "
                                "export again")
        if _require(d, "bytes", int, where) < 0:
            raise ArtifactError(f"{where}: 'bytes' is negative")
        return cls(fmt, prec, IOSpec.from_dict(_require(d, "input", dict, where), f"{where}.input"),
                   IOSpec.from_dict(_require(d, "output", dict, where), f"{where}.output"),
                   _require(d, "sha256", str, where), int(_require(d, "bytes", int, where)),
                   float(d.get("export_seconds") or 0.0), d.get("int8_report"))

    def to_dict(self) -> dict:
        d = {"format": self.format, "precision": self.precision, "input": self.input.to_dict(),
             "output": self.output.to_dict(), "sha256": self.sha256, "bytes": self.bytes,
             "export_seconds": self.export_seconds}
        if self.int8_report is not None:
            d["int8_report"] = self.int8_report
        return d


@dataclass
class Manifest:
    """What an artifact folder holds and how it was made (``manifest.json``).

    ``source`` says how to rebuild the eager model without unpickling anything: ``{"kind":
    "spec", "spec": ...}`` for arch-string models, ``{"kind": "card", ...}`` for a model card's
    ``source`` callable, ``{"kind": "pt2"}`` for a saved ``torch.export`` program. ``requested``
    lists the (format, precision) pairs asked for; ``complete`` turns true only when the export
    finished, so an interrupted one is never mistaken for a whole one."""
    model: str
    input_shape_nchw: list
    schema_version: int = SCHEMA_VERSION
    twin: bool = False
    source: dict = field(default_factory=dict)
    arch: dict = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    labels: list | None = None
    preprocess: dict | None = None
    output_shape: list | None = None
    calibration: dict | None = None
    quant: dict = field(default_factory=dict)
    io: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    created: str = ""
    fingerprint: str = ""
    requested: list = field(default_factory=list)
    complete: bool = False
    files: dict[str, FileEntry] = field(default_factory=dict)
    errors: list = field(default_factory=list)
    android: dict | None = None
    reference: dict | None = None       # {"file", "sha256", "bytes"} of the eager reference

    @property
    def recipe(self):
        """The int8 recipe (``edgeconv.quantize.QuantRecipe``) the int8 files were made with."""
        from .quantize import QuantRecipe
        return QuantRecipe.from_dict(self.quant)

    @classmethod
    def from_dict(cls, d, where: str = MANIFEST) -> Manifest:
        """The manifest in ``d`` (parsed JSON), every key checked against ``_SCHEMA``: a malformed
        one is an ArtifactError naming the key, never a crash later in a verb that reads it."""
        if not isinstance(d, dict):
            raise ArtifactError(f"{where}: expected a JSON object, got a {type(d).__name__}; "
                                "export again (`edgeconv export ... --force`)")
        version = d.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise ArtifactError(f"{where}: schema_version {json.dumps(version)} is not one this edgeconv "
                                f"reads ({', '.join(map(str, READABLE_SCHEMAS))}); export again")
        for key, (kind, required) in _SCHEMA.items():
            if key in d and d[key] is None and not required:
                continue
            if required or key in d:
                _require(d, key, kind, where)
        model, shape = d["model"], d["input_shape_nchw"]
        if not model or len(shape) != 4 or not all(_is_int(s) and s > 0 for s in shape):
            raise ArtifactError(f"{where}: input_shape_nchw {shape} is not N x C x H x W" if model else
                                f"{where}: 'model' is empty")
        files = {name: FileEntry.from_dict(e, f"{where}: files[{name!r}]", name)
                 for name, e in (d.get("files") or {}).items()}
        errors = d.get("errors") or []
        for i, e in enumerate(errors):
            if not isinstance(e, dict) or not isinstance(e.get("message"), str):
                raise ArtifactError(f"{where}: errors[{i}] is not an export error record (format, precision, message)")
        _check_str_list(d, "labels", where)
        for key in ("output_shape",):
            v = d.get(key)
            if v is not None and not all(_is_int(s) and s > 0 for s in v):
                raise ArtifactError(f"{where}: {key} {v} is not a list of positive whole numbers")
        for key in ("params", "macs"):
            if d.get(key) is not None and d[key] < 0:
                raise ArtifactError(f"{where}: {key} = {d[key]} is negative")
        calibration = d.get("calibration")
        if calibration is not None:
            if not isinstance(calibration.get("source", ""), str):
                raise ArtifactError(f"{where}: calibration.source must be a string")
            _check_str_list(calibration, "digests", f"{where}: calibration")
        quant, io = dict(d.get("quant") or {}), dict(d.get("io") or {})
        for key in ("channels_last", "int8_io"):  # version 1 kept the I/O options in the recipe
            if key in quant:
                io.setdefault(key, quant.pop(key))
            if not isinstance(io.get(key, False), bool):
                raise ArtifactError(f"{where}: io.{key} is {json.dumps(io[key])[:40]}; expected true or false")
        if quant:
            from .quantize import QuantRecipe
            try:
                QuantRecipe.from_dict(quant)
            except (TypeError, ValueError) as e:
                raise ArtifactError(f"{where}: quant: {e}") from None
        source = d.get("source") or ({"kind": "spec", "spec": d["spec"]} if isinstance(d.get("spec"), dict) else {})
        if source and source.get("kind") not in SOURCE_KINDS:
            raise ArtifactError(f"{where}: source.kind {json.dumps(source.get('kind'))} is not one of "
                                f"{', '.join(SOURCE_KINDS)}; export again")
        if d.get("preprocess") is not None:
            from .data import Preprocess
            try:
                Preprocess.from_dict(d["preprocess"], shape[2])
            except (TypeError, ValueError) as e:
                raise ArtifactError(f"{where}: preprocess: {e}") from None
        reference = d.get("reference")
        if reference is not None:
            _require(reference, "sha256", str, f"{where}: reference")
            _require(reference, "bytes", int, f"{where}: reference")
            if _require(reference, "file", str, f"{where}: reference") not in REFERENCE_FILES:
                raise ArtifactError(f"{where}: reference.file must be one of {', '.join(REFERENCE_FILES)}")
        requested = d.get("requested")
        complete = d.get("complete")
        if requested is None:  # version 1: the manifest was written whole at the end
            requested = sorted({(e.format, e.precision) for e in files.values()}
                               | {(e.get("format"), e.get("precision")) for e in errors})
            complete = True
        for r in requested:
            if not (isinstance(r, (list, tuple)) and len(r) == 2 and r[0] in FORMATS and r[1] in PRECISIONS):
                raise ArtifactError(f"{where}: requested holds {json.dumps(r)[:60]}; expected [format, precision] "
                                    f"pairs of {', '.join(FORMATS)} and {', '.join(PRECISIONS)}")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.update(model=model, input_shape_nchw=shape, files=files, errors=errors, quant=quant, io=io,
                  source=source, requested=[list(r) for r in requested], complete=bool(complete),
                  schema_version=SCHEMA_VERSION, arch=d.get("arch") or {})
        return cls(**kw)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["files"] = {name: e.to_dict() for name, e in self.files.items()}
        for key in ("android", "reference"):
            if d[key] is None:
                del d[key]
        return d


# The manifest's keys: (JSON type, required). Optional keys may also be null.
_SCHEMA: dict[str, tuple] = {
    "model": (str, True), "input_shape_nchw": (list, True), "twin": (bool, False), "source": (dict, False),
    "arch": (dict, False), "params": (int, False), "macs": (int, False), "labels": (list, False),
    "preprocess": (dict, False), "output_shape": (list, False), "calibration": (dict, False),
    "quant": (dict, False), "io": (dict, False), "versions": (dict, False), "created": (str, False),
    "fingerprint": (str, False), "requested": (list, False), "complete": (bool, False), "files": (dict, False),
    "errors": (list, False), "android": (dict, False), "reference": (dict, False),
}


_SHA_CACHE: dict[tuple, str] = {}


def cached_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered per (path, size, mtime) for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256(path)
    return _SHA_CACHE[key]


class Artifact:
    """An artifact folder and its manifest."""

    def __init__(self, path: str | Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        mf = path / MANIFEST
        if not path.is_dir():
            raise FileNotFoundError(f"artifact folder {path} does not exist (make one with `edgeconv export`)")
        if not mf.exists():
            raise FileNotFoundError(f"{path} is not an artifact folder: no {MANIFEST} "
                                    "(make one with `edgeconv export`)")
        try:
            raw = json.loads(mf.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{mf}: not valid JSON ({e}); export again (`edgeconv export ... --force`)") from None
        except OSError as e:
            raise ArtifactError(f"{mf}: cannot be read ({e.strerror}); export again") from None
        return cls(path, Manifest.from_dict(raw, str(mf)))

    @property
    def files(self) -> dict[str, FileEntry]:
        return self.manifest.files

    @property
    def errors(self) -> list[dict]:
        return self.manifest.errors

    def name_of(self, fmt: str, precision: str) -> str | None:
        for name, e in self.files.items():
            if e.format == fmt and e.precision == precision:
                return name
        return None

    def file(self, fmt: str, precision: str) -> Path | None:
        name = self.name_of(fmt, precision)
        return None if name is None else self.path / name

    def missing(self) -> list[tuple[str, str]]:
        """Requested (format, precision) pairs with no file and no recorded export error: what an
        interrupted export left undone."""
        have = {(e.format, e.precision) for e in self.files.values()}
        failed = {(e.get("format"), e.get("precision")) for e in self.errors if isinstance(e, dict)}
        return [tuple(r) for r in self.manifest.requested if tuple(r) not in have | failed]

    def incomplete(self) -> str | None:
        """Why the export is not whole (naming what is missing), or None."""
        missing = self.missing()
        if missing or not self.manifest.complete:
            what = ", ".join(f"{f} {p}" for f, p in missing) or "its last steps"
            return (f"{self.path}: the export did not finish (missing: {what}); run the same `edgeconv export` "
                    "again to fill in what is missing")
        return None

    def require_complete(self) -> None:
        """Raise naming what is missing when the export did not finish."""
        why = self.incomplete()
        if why:
            raise ArtifactError(why)

    def checked(self, name: str) -> Path:
        """The path of file ``name``, after checking it is the file the manifest describes."""
        entry = self.files.get(name)
        if entry is None:
            raise ArtifactError(f"{self.path}: {name} is not listed in the manifest")
        return self._checked(name, entry.sha256, entry.bytes, f"{entry.format}", f"the {entry.precision} file")

    def reference(self) -> Path:
        """The eager reference (``reference.pt`` or ``.pt2``), checked against the manifest where it
        records one (manifests before the record was added name none: the file is trusted)."""
        ref = self.manifest.reference
        if ref is None:
            name = "reference.pt2" if self.manifest.source.get("kind") == "pt2" else "reference.pt"
            path = self.path / name
            if not path.exists():
                raise ArtifactError(f"{path} is missing: the eager reference is written by `edgeconv export`; "
                                    "export again")
            return path
        return self._checked(ref["file"], ref["sha256"], ref["bytes"], "eager reference", "the reference")

    def _checked(self, name: str, sha: str, size: int, kind: str, what: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in the manifest but " + ("is not a regular file" if path.exists()
                                else "does not exist") + "; export again")
        actual = path.stat().st_size
        if actual != size or cached_sha256(path) != sha:
            raise ArtifactError(f"{path} ({kind}): its sha256 does not match the manifest's (expected {sha}, "
                                f"{size} bytes; the file has {actual}): not {what} that was exported; it was "
                                "changed, replaced or truncated since; export again")
        return path

    def own_files(self) -> list[str]:
        """The names of the files edgeconv wrote in this folder: what ``--force`` may delete."""
        return sorted(set(OWN_FILES) | set(self.files))

    def save(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.manifest.to_dict())


# -- folder locks -----------------------------------------------------------------------------------
class LockedError(RuntimeError):
    """Another live edgeconv process holds the folder."""


class FolderLock:
    """An advisory lock on a folder (``.edgeconv.lock`` inside it) held for a block of work.

    The lock is ``flock`` on the file, so the kernel releases it when its holder dies however it
    dies (kill -9 included), and the next writer takes it over; the file names the holder (pid,
    host, command, start time) for the error a second writer gets. The holder removes the file
    when it is done, so no lock file is left in the folder; a writer that locked a file which was
    removed meanwhile (the inode no longer at the path) starts again on the new one."""

    NAME = ".edgeconv.lock"

    def __init__(self, folder: str | Path, what: str = "folder", name: str | None = None, subject=None):
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / (name or self.NAME)
        self.subject = subject or self.folder  # what the error says is in use
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        import fcntl
        import sys
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise LockedError(self._held_by()) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder before us removed the file after we opened it
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(sys.argv[:6])}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without its holder's name, and the work will say why it stops
        self.fd = fd
        return self

    def _held_by(self) -> str:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        return (f"{self.subject} is in use by another edgeconv process (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}: {holder.get('command', '?')}); wait "
                f"for it to finish or use another {self.what}")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # still ours: removed while the lock is held
            except OSError:
                pass
            finally:
                os.close(self.fd)  # closing releases the flock
            self.fd = None
            if self.created:  # a folder made for work that wrote nothing is not left behind
                try:
                    self.folder.rmdir()
                except OSError:
                    pass
