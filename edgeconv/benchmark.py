"""Latency on devices: ``bench`` (every file of some artifacts on some devices) and ``compare``
(a model against its standard-conv twin).

Plan the runs, drive the agent (or a native tool) on each device through an
``edgeconv.device.AgentSession``, append one record per (artifact file, runtime, device,
threads) run to a JSON Lines file, and compute statistics from the raw samples.

Timing method (the agent's, after MLPerf Mobile's single-stream scenario, shortened):
``warmup`` untimed runs, then timed runs until both ``min_runs`` and ``min_seconds`` are
reached (capped by ``max_seconds``); every sample is kept. Statistics (p50, p90, mean,
coefficient of variation) are computed here from ``samples_ms``, never stored as strings.
Sustained mode (``sustained_seconds``) times for that long instead and samples temperature,
clock and throttling on the way; ``drift`` compares the p50 of the first and last windows.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .artifact import FORMATS, PRECISIONS, RUNTIMES, Artifact, ArtifactError, FileEntry, jsonable
from .device import TransportError

RESULTS_SCHEMA_VERSION = 1
DRIFT_THRESHOLD = 0.05


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 3.0
    max_seconds: float = 120.0
    affinity: str | None = None
    sustained_seconds: float = 0.0
    sample_every: float = 5.0
    drift_threshold: float = DRIFT_THRESHOLD
    # then, runs under the runtime's op profiler (ONNX Runtime, ExecuTorch), a cross-check; and the
    # files timed one after another in one agent process. None: the verb's default (bench: 0 and 1;
    # profile: OP_PROFILE_RUNS where the runtime has a profiler, and FILES_PER_AGENT)
    op_profile_runs: int | None = None
    files_per_agent: int | None = None

    def __post_init__(self):
        for name in ("warmup", "min_runs", "op_profile_runs", "files_per_agent"):
            v, least = getattr(self, name), 1 if name in ("min_runs", "files_per_agent") else 0
            if v is None and name in ("op_profile_runs", "files_per_agent"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"{name}={v!r}: must be a whole number >= {least}")
        for name in ("min_seconds", "max_seconds", "sustained_seconds", "sample_every", "drift_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 <= v < float("inf")):
                raise ValueError(f"{name}={v!r}: must be a finite number of seconds >= 0")
        for name in ("max_seconds", "sample_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be > 0")
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds={self.min_seconds!r} is more than max_seconds={self.max_seconds!r}: "
                             "timing stops at max_seconds; raise it or lower min_seconds")
        if self.affinity is not None and not all(p.replace("-", "").isdigit() for p in self.affinity.split(",")):
            raise ValueError(f"affinity={self.affinity!r}: CPUs like 0-3 or 2,3")


# -- statistics -------------------------------------------------------------------------------
STATISTICS = ("p50", "min")   # what a file's timings are summed up by for predictions (predict --statistic)


def stats(samples_ms) -> dict:
    """p50, p90, mean, std, CoV (std/mean), min and count of a list of per-run times (ms)."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "p50": None, "p90": None, "mean": None, "std": None, "cov": None, "min": None}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return {"n": int(x.size), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "mean": mean, "std": std, "cov": std / mean if mean else None, "min": float(x.min())}


def record_stats(rec: dict) -> dict:
    """Statistics of a record: from its samples, or from a native tool's reported summary
    (then p50 is the tool's if it printed one, else None; ``source`` says which)."""
    if rec.get("samples_ms"):
        return {**stats(rec["samples_ms"]), "source": "samples"}
    rep = rec.get("reported") or {}
    mean, std = rep.get("avg_ms"), rep.get("std_ms")
    return {"n": rep.get("count"), "p50": rep.get("p50_ms"), "p90": rep.get("p90_ms"), "mean": mean,
            "std": std, "cov": std / mean if std is not None and mean else None, "min": rep.get("min_ms"),
            "source": "reported"}


def drift(rec: dict, threshold: float = DRIFT_THRESHOLD) -> dict | None:
    """For a sustained record: the p50 of its first and last window (a minute, or a third of
    the run when it is shorter than three minutes) and whether they differ by more than
    ``threshold`` (a throttled or warming device)."""
    t, s = rec.get("samples_t_s"), rec.get("samples_ms")
    if not t or not s or len(t) != len(s):
        return None
    t, s = np.asarray(t), np.asarray(s)
    window = min(60.0, float(t[-1]) / 3)
    first, last = s[t <= t[0] + window], s[t >= t[-1] - window]
    if len(first) == 0 or len(last) == 0:
        return None
    p_first, p_last = float(np.median(first)), float(np.median(last))
    change = (p_last - p_first) / p_first
    return {"window_s": round(window, 2), "p50_first_ms": p_first, "p50_last_ms": p_last,
            "change": change, "threshold": threshold, "drifted": abs(change) > threshold}


# -- results file -------------------------------------------------------------------------------
class ResultsFile:
    """A JSON Lines file written one complete line at a time (one ``write`` of the whole line
    on an O_APPEND descriptor, then fsync); a torn last line left by a crash is cut off before
    the next append, and lines that are not records are skipped and counted on read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.skipped = 0
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"--results {self.path} is a folder; name a .jsonl file")

    def _repair(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
        data = self.path.read_bytes()
        keep = data[:data.rfind(b"\n") + 1]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(keep)
        os.replace(tmp, self.path)

    def records(self, warn: bool = True) -> list[dict]:
        """Every record in the file; ``skipped`` counts the lines that are not (torn, garbage, or
        records whose fields have the wrong types), and ``warn`` says so in a warning."""
        self.skipped = 0
        if not self.path.exists():
            return []
        out = []
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read the results file {self.path} ({e.strerror})") from None
        for line in data.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                self.skipped += 1
                continue
            if is_record(rec):
                out.append(rec)
            else:
                self.skipped += 1
        if warn and self.skipped:
            import warnings
            warnings.warn(f"{self.path}: skipped {self.skipped} line(s) that are not benchmark records (torn, "
                          "garbage or malformed)", stacklevel=2)
        return out

    def check_writable(self) -> None:
        """Refuse, before anything is measured, a results file that cannot be appended to, and a
        file that is not one (records are appended only to a results file or a new one)."""
        if self.path.is_file() and self.path.stat().st_size and not self.records(warn=False):
            raise ValueError(f"--results {self.path} exists and holds no benchmark records; edgeconv appends "
                             "only to its own results files: choose another --results")
        from .artifact import ensure_writable
        ensure_writable(self.path.parent, "--results")
        if self.path.exists():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
            except OSError as e:
                raise ValueError(f"cannot write the results file {self.path} ({e.strerror}); choose another "
                                 "--results") from None

    def append(self, rec: dict) -> None:
        line = (json.dumps(jsonable(rec), separators=(",", ":")) + "\n").encode()
        with self.lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._repair()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:  # a full or read-only disk: the measured record is kept elsewhere
                import tempfile
                spare = Path(tempfile.gettempdir()) / f"edgeconv-unsaved-{os.getpid()}.jsonl"
                with open(spare, "ab") as f:
                    f.write(line)
                raise OSError(e.errno, f"cannot append to {self.path} ({e.strerror}); the record measured "
                                       f"is kept in {spare}") from None


_RECORD_FIELDS = {"status": str, "sha256": str, "runtime": str, "format": str, "precision": str, "file": str,
                  "artifact": str, "model": str, "block": str, "threads": int, "samples_ms": list,
                  "samples_t_s": list, "reported": dict, "config": dict}


def is_record(rec) -> bool:
    """A benchmark record whose fields every reader uses have the types they expect."""
    if not isinstance(rec, dict) or not isinstance(rec.get("device"), dict) \
            or not all(k in rec for k in ("status", "runtime", "threads", "file")):
        return False
    if not isinstance(rec["device"].get("name"), str):
        return False
    for key, kind in _RECORD_FIELDS.items():
        v = rec.get(key)
        if v is not None and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))):
            return False
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for key in ("samples_ms", "samples_t_s")
               for x in rec.get(key) or ())


def run_key(sha256: str, runtime: str, device: str, threads: int, block: str | None = None) -> tuple:
    return (sha256, runtime, device, int(threads), block)


def _key_of(r: dict) -> tuple:
    return run_key(r.get("sha256"), r.get("runtime"), (r.get("device") or {}).get("name"), r.get("threads", 0),
                   r.get("block"))


def completed(records: list[dict], sustained: bool = False) -> set[tuple]:
    """The run keys of the ok records, of sustained runs (``bench --sustained``) or of ordinary
    ones: each kind of run resumes on its own, so a sustained run is not skipped for an earlier
    ordinary timing of the same file, nor the other way round."""
    return {_key_of(r) for r in records if r.get("status") == "ok" and _sustained(r) == sustained}


def _sustained(r: dict) -> bool:
    return bool((r.get("config") or {}).get("sustained_seconds"))


def latest(records: list[dict]) -> dict[tuple, dict]:
    """The newest record per (sha256, runtime, device, threads, block), ok ones preferred, and of
    those an ordinary timing before a sustained run (which may have throttled)."""
    best: dict[tuple, dict] = {}
    for r in records:
        k = _key_of(r)
        rank = (r.get("status") == "ok", not _sustained(r))
        if k not in best or rank >= (best[k].get("status") == "ok", not _sustained(best[k])):
            best[k] = r
    return best


def repeated(records: list[dict]) -> dict[tuple, list[dict]]:
    """Every ok record per (sha256, runtime, device, threads, block), in file order: a file timed
    more than once (``bench --force``, the rounds of ``bench/predict_bench.py``); of a file with
    ordinary timings, those only (not its sustained runs)."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("status") == "ok":
            out.setdefault(_key_of(r), []).append(r)
    return {k: [r for r in rs if not _sustained(r)] or rs for k, rs in out.items()}


def file_timings(records: list[dict], statistic: str = "p50") -> list[tuple[dict, float | None]]:
    """Per (sha256, runtime, device, threads, block): the newest ok record and the median of its
    ok records' ``statistic`` (the p50 or the min of their runs), so a file timed more than once
    counts with the median of its timings, not whichever came last (None when none has one: a
    native tool's report without it)."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: one of {', '.join(STATISTICS)}")
    out = []
    for rs in repeated(records).values():
        vals = [v for v in (record_stats(r)[statistic] for r in rs) if v is not None]
        out.append((rs[-1], float(np.median(vals)) if vals else None))
    return out


# -- planning -----------------------------------------------------------------------------------
@dataclass
class Job:
    artifact: Artifact
    file: str
    entry: FileEntry
    threads: int
    block: str | None = None

    @property
    def path(self) -> Path:
        return self.artifact.path / self.file

    @property
    def runtime(self) -> str:
        return self.entry.runtime


def _csv_check(values, allowed, what: str) -> None:
    bad = [v for v in values or () if v not in allowed]
    if bad:
        raise ValueError(f"{what}: {', '.join(map(str, bad))} not known; known: {', '.join(allowed)}")


def plan(artifact_dirs, runtimes=None, threads=(1,), precisions=None, formats=None) -> list[Job]:
    """The runs: every file of every artifact (complete exports only), filtered, x ``threads``."""
    _csv_check(runtimes, RUNTIMES, "runtime")
    _csv_check(precisions, PRECISIONS, "precision")
    _csv_check(formats, tuple(FORMATS), "format")
    if not threads or any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in threads):
        raise ValueError(f"threads {list(threads)}: thread counts are whole numbers >= 1")
    jobs, seen = [], set()
    for d in artifact_dirs:
        art = d if isinstance(d, Artifact) else Artifact.load(d)
        if art.path.resolve() in seen:  # named twice: timed once, not twice against itself
            continue
        seen.add(art.path.resolve())
        art.require_complete()
        for name, entry in sorted(art.files.items()):
            if (runtimes and entry.runtime not in runtimes) or (precisions and entry.precision not in precisions) \
                    or (formats and entry.format not in formats):
                continue
            for t in dict.fromkeys(threads):
                jobs.append(Job(art, name, entry, int(t)))
    return jobs


# -- running -----------------------------------------------------------------------------------
def base_record(job: Job, device, cfg: TimingConfig, run_id: str) -> dict:
    m = job.artifact.manifest
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "run_id": run_id,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": m.model, "twin": m.twin, "arch": m.arch, "macs": m.macs, "params": m.params,
        "quant": m.quant if job.entry.precision == "int8" else None,
        "format": job.entry.format, "precision": job.entry.precision, "runtime": job.runtime,
        "runtime_version": None, "artifact": str(job.artifact.path), "file": job.file, "sha256": job.entry.sha256,
        "threads": job.threads, "block": job.block,
        "device": {"name": device.name, "transport": device.transport},
        "config": {"warmup": cfg.warmup, "runs": cfg.min_runs, "threads": job.threads,
                   "min_seconds": cfg.min_seconds, "max_seconds": cfg.max_seconds, "affinity": cfg.affinity,
                   "sustained_seconds": cfg.sustained_seconds or None},
        "timing": "samples", "samples_ms": [], "load_ms": None, "first_ms": None, "peak_rss_mb": None,
        "status": "error", "error": None,
    }


def _device_fields(facts: dict, rec: dict) -> dict:
    return {"arch": facts.get("arch"), "cpu": facts.get("cpu"), "cores": facts.get("cores"),
            "governor": facts.get("governor"), "freq_mhz": facts.get("freq_mhz"),
            "temp_c_before": rec.get("temp_c_before"), "temp_c_after": rec.get("temp_c_after"),
            "throttled": rec.get("throttled"), "emulated": facts.get("emulated"),
            "hostname": facts.get("hostname"), "os": facts.get("os")}


def fill_record(rec: dict, doc: dict, cfg: TimingConfig) -> None:
    """Fill ``rec`` in place from the agent's document for its file (or a native tool's fields)."""
    if "records" not in doc:  # a native tool's parsed output
        rec.update(doc, status="ok", error=None)
        return
    r = doc["records"][0]
    rec["device"].update(_device_fields(doc.get("device", {}), r))
    for k in ("runtime_version", "samples_ms", "samples_t_s", "telemetry", "load_ms", "first_ms", "peak_rss_mb",
              "op_profile", "status", "error", "traceback", "process_index"):
        if k in r:
            rec[k] = r[k]
    rec["agent_version"] = doc.get("agent_version")
    if cfg.sustained_seconds and rec["status"] == "ok":
        rec["drift"] = drift(rec, cfg.drift_threshold)


def agent_batches(todo: list[Job], cfg: TimingConfig) -> list[list[Job]]:
    """``todo`` in order, cut into the groups one agent process times: consecutive jobs of one
    runtime and thread count, at most ``cfg.files_per_agent`` of them (a sustained run alone)."""
    out: list[list[Job]] = []
    size = 1 if cfg.sustained_seconds else cfg.files_per_agent or 1
    for j in todo:
        last = out[-1] if out else None
        if last and len(last) < size and (last[0].runtime, last[0].threads) == (j.runtime, j.threads):
            last.append(j)
        else:
            out.append([j])
    return out


def run_batch(session, batch: list[Job], cfg: TimingConfig, recs: list[dict]) -> None:
    """Time the jobs of ``batch`` in one agent process on the device of ``session`` and fill
    their records in place. A file that fails its manifest check, or cannot be run, gets an error
    record; if the agent process dies, each of its files is timed again alone, so one file that
    crashes the runtime costs only its own record."""
    ready = []
    for job, rec in zip(batch, recs):
        try:
            job.artifact.checked(job.file)  # the file is the one the manifest describes, before it is timed
            ready.append((job, rec))
        except ArtifactError as e:
            rec["error"] = str(e)
    _time_checked(session, ready, cfg)


def _time_checked(session, ready: list[tuple[Job, dict]], cfg: TimingConfig) -> None:
    """``run_batch`` after the manifest checks: (job, record) pairs timed in one agent process,
    each again alone if that process dies."""
    if not ready:
        return
    try:
        docs = session.bench([j.path for j, _ in ready], ready[0][0].runtime, ready[0][0].threads, cfg)
    except (TransportError, OSError) as e:
        if len(ready) == 1:
            ready[0][1]["error"] = f"{type(e).__name__}: {e}"
            return
        for pair in ready:
            _time_checked(session, [pair], cfg)
        return
    for (_, rec), doc in zip(ready, docs):
        fill_record(rec, doc, cfg)


def pending(device, jobs: list[Job], done: set) -> list[Job]:
    """The jobs still to run on ``device``: not completed before (same sha256, runtime, device,
    threads, block with status ok; the resume rule) and in a runtime the device offers."""
    todo = [j for j in jobs if run_key(j.entry.sha256, j.runtime, device.name, j.threads, j.block) not in done]
    if device.runtimes:
        todo = [j for j in todo if j.runtime in device.runtimes]
    return todo


def device_records(device, todo: list[Job], cfg: TimingConfig, run_id: str, progress=None):
    """Run ``todo`` on ``device`` through one ``AgentSession`` and yield one record per job, in
    order, each as soon as it is measured. A device that cannot be reached gives an error record
    per job; a failed run is an error record, never an exception."""
    from .device import AgentSession
    if not todo:
        return
    try:
        session = AgentSession(device).__enter__()
    except (TransportError, OSError) as e:
        for j in todo:
            rec = base_record(j, device, cfg, run_id)
            rec["error"] = f"{type(e).__name__}: {e}"
            yield rec
        return
    try:
        i = 0
        for batch in agent_batches(todo, cfg):
            job = batch[0]
            if progress:
                more = f" and {len(batch) - 1} more in one agent" if len(batch) > 1 else ""
                progress(device.name, i, len(todo), f"{job.file}{' ' + job.block if job.block else ''} "
                                                    f"{job.runtime} t{job.threads}{more}")
            recs = [base_record(j, device, cfg, run_id) for j in batch]
            run_batch(session, batch, cfg, recs)
            for rec in recs:
                if rec["status"] == "ok" and not rec.get("samples_ms") and rec.get("timing") == "samples":
                    rec.update(status="error", error=rec.get("error") or "no samples")
                yield rec
            i += len(batch)
        if progress:
            progress(device.name, len(todo), len(todo), "done")
    finally:
        session.__exit__(None, None, None)


def bench_device(device, jobs: list[Job], results: ResultsFile, cfg: TimingConfig,
                 force: bool = False, progress=None, run_id: str | None = None, done: set | None = None) -> list[dict]:
    """Run ``jobs`` on one device; append a record per job; return the records written.
    Jobs already completed are skipped unless ``force`` (``pending``); every record is written
    as soon as it is measured."""
    run_id = run_id or uuid.uuid4().hex[:12]
    done = set() if force else (done if done is not None else completed(results.records(),
                                                                        bool(cfg.sustained_seconds)))
    todo = pending(device, jobs, done)
    skipped = len(jobs) - len(todo)
    if progress:
        progress(device.name, 0, len(todo), f"{skipped} done before" if skipped else "start")
    written = []
    for rec in device_records(device, todo, cfg, run_id, progress):
        results.append(rec)
        written.append(rec)
    return written


def bench(artifact_dirs, devices: list[str], results: str | Path, *, inventory=None, runtimes=None,
          threads=(1,), precisions=None, formats=None, cfg: TimingConfig | None = None, force=False,
          progress=None, cluster: str | None = None) -> list[dict]:
    """``edgeconv bench``: time every file of ``artifact_dirs`` on every device (one thread per
    device, in parallel) and append the records to ``results``; returns the records written.
    With ``cluster`` (``auto`` or the head's HOST:PORT) each device runs on the Ray node that
    drives it (``edgeconv.cluster``). Everything (cluster, devices, artifacts, options) is
    checked before anything runs."""
    from .device.inventory import get_device
    cfg = cfg or TimingConfig()
    if cluster:
        from .cluster import connect
        connect(cluster)
    if not devices:
        raise ValueError("no device given: name at least one (local, qemu-arm64, or one of the inventory)")
    devs = [get_device(n, inventory) for n in dict.fromkeys(devices)]  # one timing thread per device
    jobs = plan(artifact_dirs, runtimes, threads, precisions, formats)
    if not jobs:
        raise ValueError("nothing to run: no artifact file matches the runtime/precision/format given")
    return run_jobs(jobs, devs, ResultsFile(results), cfg, force=force, progress=progress, cluster=cluster)


def run_jobs(jobs: list[Job], devs, rf: ResultsFile, cfg: TimingConfig, *, force=False, progress=None,
             cluster: str | None = None) -> list[dict]:
    """Run ``jobs`` on ``devs`` into ``rf``, which is locked meanwhile: a second bench into the
    same file would time its runs against this one's and write the same records again."""
    from .artifact import FolderLock
    rf.check_writable()
    with FolderLock(rf.path.parent, "--results file", name=f".{rf.path.name}.lock", subject=rf.path):
        run_id = uuid.uuid4().hex[:12]
        done = set() if force else completed(rf.records(), bool(cfg.sustained_seconds))
        if cluster:
            from .cluster import bench_on_cluster
            return bench_on_cluster(cluster, jobs, devs, rf, cfg, run_id, done, progress)
        with ThreadPoolExecutor(max_workers=len(devs)) as pool:
            futures = [pool.submit(bench_device, d, jobs, rf, cfg, force, progress, run_id, done) for d in devs]
            out = []
            for f in futures:
                out.extend(f.result())
        return out


# -- compare: a model against its standard-conv twin ------------------------------------------
def export_pair(model: str, out: str | Path, *, formats=("onnx", "tflite"), precisions=PRECISIONS,
                weights=None, input_size=None, calib: str = "digits", class_index=None, recipe=None,
                force=False, log=print) -> tuple[Path, Path]:
    """Export ``model`` and its twin into ``out``/<name>[_twin], calibrated on ``calib`` with
    ``recipe``; an earlier export of the same model, weights, recipe and data is reused."""
    from .data import calibration
    from .exporters import export
    from .quantize import QuantRecipe
    from .zoo import model_pair
    recipe = recipe or QuantRecipe()
    out = Path(out)
    dirs = []
    for side, net in model_pair(model, weights, input_size):
        d = out / f"{net.card.name}{'_twin' if side == 'twin' else ''}"
        calib_x, info = None, None
        if "int8" in precisions:
            ds = calibration(calib, net, recipe.calib_count, class_index)
            calib_x, info = ds.x, ds.describe()
        log(f"exporting {net.card.name}{' twin' if side == 'twin' else ''} -> {d}")
        export(net, calib=calib_x, out=d, force=force, formats=tuple(formats), precisions=tuple(precisions),
               recipe=recipe, calib_info=info, log=log)
        dirs.append(d)
    return dirs[0], dirs[1]


def compare_rows(records: list[dict], model_dir: Path, twin_dir: Path) -> list[dict]:
    """One row per (device, format, precision, runtime, threads): p50 of the model and of
    its twin, the latency ratio twin/model beside the MAC and parameter ratios."""
    mm, tm = Artifact.load(model_dir).manifest, Artifact.load(twin_dir).manifest
    sides = {Path(model_dir).resolve(): "model", Path(twin_dir).resolve(): "twin"}
    by = {}
    for r in latest(records).values():
        side = sides.get(Path(r.get("artifact", "")).resolve())
        if r.get("status") == "ok" and side and not r.get("block"):
            by.setdefault((r["device"]["name"], r["format"], r["precision"], r["runtime"], r["threads"]), {})[side] = r
    rows = []
    for (dev, fmt, prec, rt, th), pair in sorted(by.items()):
        if "model" not in pair or "twin" not in pair:
            continue
        pm, pt = record_stats(pair["model"])["p50"], record_stats(pair["twin"])["p50"]
        rows.append({"device": dev, "format": fmt, "precision": prec, "runtime": rt, "threads": th,
                     "model_p50_ms": pm, "twin_p50_ms": pt,
                     "latency_ratio": pt / pm if pm and pt else None,
                     "mac_ratio": tm.macs / mm.macs if mm.macs and tm.macs else None,
                     "param_ratio": tm.params / mm.params if mm.params and tm.params else None,
                     "emulated": pair["model"]["device"].get("emulated")})
    return rows


def compare(model: str, devices=("local",), *, out: str | Path = "artifacts/compare", results=None,
            inventory=None, weights=None, input_size=None, calib: str = "digits", class_index=None, recipe=None,
            formats=("onnx", "tflite"), precisions=PRECISIONS, threads=(1,), cfg: TimingConfig | None = None,
            force=False, progress=None, log=print) -> dict:
    """``edgeconv compare``: export ``model`` and its standard-conv twin (calibrated on ``calib``
    with ``recipe``), time both on ``devices``, and return the rows of latency ratio beside MAC
    and param ratios, with the records they come from."""
    from .device.inventory import get_device
    devs = [get_device(n, inventory) for n in devices]
    cfg = cfg or TimingConfig()
    _csv_check(formats, tuple(FORMATS), "format")
    _csv_check(precisions, PRECISIONS, "precision")
    mdir, tdir = export_pair(model, out, formats=formats, precisions=precisions, weights=weights,
                             input_size=input_size, calib=calib, class_index=class_index, recipe=recipe,
                             force=force, log=log)
    results = Path(results or Path(out) / "results.jsonl")
    rf = ResultsFile(results)
    jobs = plan([mdir, tdir], precisions=precisions, formats=formats, threads=threads)
    run_jobs(jobs, devs, rf, cfg, force=force, progress=progress)
    wanted = {j.entry.sha256 for j in jobs}
    names = {d.name for d in devs}
    recs = [r for r in rf.records(warn=False) if r.get("sha256") in wanted and r["device"]["name"] in names]
    newest = list(latest(recs).values())
    return {"model_dir": str(mdir), "twin_dir": str(tdir), "results": str(results),
            "rows": compare_rows(newest, mdir, tdir), "failed": [r for r in newest if r.get("status") != "ok"],
            "timing": asdict(cfg)}
