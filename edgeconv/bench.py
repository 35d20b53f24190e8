"""Latency on devices: plan runs, drive the agent (or a native tool) through a transport,
append one record per (artifact file, runtime, device, threads) run to a JSON Lines file,
and compute statistics from the raw samples.

Timing method (the agent's, after MLPerf Mobile's single-stream scenario, shortened):
``warmup`` untimed runs, then timed runs until both ``min_runs`` and ``min_seconds`` are
reached (capped by ``max_seconds``); every sample is kept. Statistics (p50, p90, mean,
coefficient of variation) are computed here from ``samples_ms``, never stored as strings.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .device import TransportError
from .export import sha256
from .device.inventory import Device, get_device
from .device.native import FORMAT_TOOL, PARSERS, native_argv

RESULTS_SCHEMA_VERSION = 1
FORMAT_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "executorch": "executorch"}


@dataclass
class TimingConfig:
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 3.0
    max_seconds: float = 120.0
    affinity: str | None = None


# -- statistics -------------------------------------------------------------------------------
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


# -- results file -------------------------------------------------------------------------------
class ResultsFile:
    """A JSON Lines file written one complete line at a time (one ``write`` of the whole line
    on an O_APPEND descriptor, then fsync); a torn last line left by a crash of some other
    writer is cut off on open, and unreadable lines are skipped on read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            keep = data[:data.rfind(b"\n") + 1]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(keep)
            os.replace(tmp, self.path)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def append(self, rec: dict) -> None:
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def run_key(sha256: str, runtime: str, device: str, threads: int) -> tuple:
    return (sha256, runtime, device, int(threads))


def completed(records: list[dict]) -> set[tuple]:
    return {run_key(r.get("sha256"), r.get("runtime"), r.get("device", {}).get("name"), r.get("threads", 0))
            for r in records if r.get("status") == "ok"}


# -- planning -----------------------------------------------------------------------------------
@dataclass
class Job:
    artifact: Path
    file: str
    format: str
    precision: str
    runtime: str
    threads: int
    sha256: str
    manifest: dict

    @property
    def path(self) -> Path:
        return self.artifact / self.file


def plan(artifact_dirs, runtimes=None, threads=(1,), precisions=None, formats=None) -> list[Job]:
    jobs = []
    for d in artifact_dirs:
        d = Path(d)
        mf = d / "manifest.json"
        if not mf.exists():
            raise FileNotFoundError(f"{d} is not an artifact folder: no manifest.json "
                                    "(make one with `edgeconv export`)")
        manifest = json.loads(mf.read_text())
        for name, entry in sorted(manifest.get("files", {}).items()):
            fmt, prec = entry["format"], entry["precision"]
            rt = FORMAT_RUNTIME.get(fmt)
            if (runtimes and rt not in runtimes) or (precisions and prec not in precisions) \
                    or (formats and fmt not in formats) or not (d / name).exists():
                continue
            sha = entry.get("sha256") or sha256(d / name)
            for t in threads:
                jobs.append(Job(d, name, fmt, prec, rt, int(t), sha, manifest))
    return jobs


# -- running -----------------------------------------------------------------------------------
def _base_record(job: Job, device: Device, cfg: TimingConfig, run_id: str) -> dict:
    m = job.manifest
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "run_id": run_id,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": m.get("model"), "twin": m.get("twin"), "arch": m.get("arch"),
        "macs": m.get("macs"), "params": m.get("params"),
        "quant": m.get("quant") if job.precision == "int8" else None,
        "format": job.format, "precision": job.precision, "runtime": job.runtime, "runtime_version": None,
        "artifact": str(job.artifact), "file": job.file, "sha256": job.sha256, "threads": job.threads,
        "device": {"name": device.name, "transport": device.transport},
        "config": {"warmup": cfg.warmup, "runs": cfg.min_runs, "threads": job.threads,
                   "min_seconds": cfg.min_seconds, "max_seconds": cfg.max_seconds, "affinity": cfg.affinity},
        "timing": "samples", "samples_ms": [], "load_ms": None, "first_ms": None, "peak_rss_mb": None,
        "status": "error", "error": None,
    }


def _device_fields(facts: dict, rec: dict) -> dict:
    return {"arch": facts.get("arch"), "cpu": facts.get("cpu"), "cores": facts.get("cores"),
            "governor": facts.get("governor"), "freq_mhz": facts.get("freq_mhz"),
            "temp_c_before": rec.get("temp_c_before"), "temp_c_after": rec.get("temp_c_after"),
            "throttled": rec.get("throttled"), "emulated": facts.get("emulated"),
            "hostname": facts.get("hostname"), "os": facts.get("os")}


def _agent_job(tr, job: Job, remote_model: str, cfg: TimingConfig, rec: dict) -> None:
    argv = [tr.python, tr.agent, remote_model, "--runtime", job.runtime, "--threads", str(job.threads),
            "--warmup", str(cfg.warmup), "--min-runs", str(cfg.min_runs),
            "--min-seconds", str(cfg.min_seconds), "--max-seconds", str(cfg.max_seconds)]
    if cfg.affinity:
        argv += ["--affinity", cfg.affinity]
    timeout = cfg.max_seconds * 2 + tr.default_timeout / 4
    rc, out, err = tr.run(argv, timeout=timeout)
    doc = None
    for line in reversed(out.strip().splitlines()):
        try:
            doc = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if rc != 0 or doc is None or not doc.get("records"):
        rec["error"] = f"agent failed (rc {rc}): {(err or out).strip()[-600:]}"
        return
    r = doc["records"][0]
    rec["device"].update(_device_fields(doc.get("device", {}), r))
    for k in ("runtime_version", "samples_ms", "load_ms", "first_ms", "peak_rss_mb", "status", "error",
              "traceback"):
        if k in r:
            rec[k] = r[k]
    rec["agent_version"] = doc.get("agent_version")


def _native_job(tr, job: Job, remote_model: str, cfg: TimingConfig, rec: dict) -> None:
    tool = FORMAT_TOOL[job.format]
    binary = tr.native.get(tool)
    if not binary:
        rec["error"] = (f"device {tr.device.name!r} has no Python for the agent and no native `{tool}` "
                        f"in its inventory entry (native.{tool} = \"/data/local/tmp/{tool}\")")
        return
    rc, out, err = tr.run(native_argv(tool, binary, remote_model, job.threads, cfg.warmup, cfg.min_runs,
                                      cfg.min_seconds), timeout=cfg.max_seconds * 2 + 120)
    if rc != 0:
        rec["error"] = f"{tool} failed (rc {rc}): {(err or out).strip()[-600:]}"
        return
    try:
        parsed = PARSERS[tool](out + "\n" + err)
    except ValueError as e:
        rec["error"] = f"{tool}: {e}"
        return
    rec.update(parsed, status="ok", error=None, runtime_version=f"native {tool}")


def bench_device(device: Device, jobs: list[Job], results: ResultsFile, cfg: TimingConfig,
                 force: bool = False, progress=None, run_id: str | None = None) -> list[dict]:
    """Run ``jobs`` on one device; append a record per job; return the records written.
    Jobs already completed (same sha256, runtime, device, threads, status ok) are skipped
    unless ``force``. A device that cannot be reached gives an error record per job."""
    run_id = run_id or uuid.uuid4().hex[:12]
    done = set() if force else completed(results.records())
    todo = [j for j in jobs if run_key(j.sha256, j.runtime, device.name, j.threads) not in done]
    if device.runtimes:
        todo = [j for j in todo if j.runtime in device.runtimes]
    skipped = len(jobs) - len(todo)
    if progress:
        progress(device.name, 0, len(todo), f"{skipped} done before" if skipped else "start")
    written = []

    def emit(rec):
        results.append(rec)
        written.append(rec)

    tr = None
    try:
        try:
            tr = device.open()
            if tr.has_agent_python():
                tr.push_agent()
        except (TransportError, OSError) as e:
            for j in todo:
                rec = _base_record(j, device, cfg, run_id)
                rec["error"] = f"{type(e).__name__}: {e}"
                emit(rec)
            return written
        remote: dict[Path, str] = {}
        for i, job in enumerate(todo):
            rec = _base_record(job, device, cfg, run_id)
            if progress:
                progress(device.name, i, len(todo), f"{job.file} {job.runtime} t{job.threads}")
            try:
                if job.path not in remote:
                    paths = tr.push([job.path, job.artifact / "manifest.json"])
                    remote[job.path] = paths[0]
                if tr.has_agent_python():
                    _agent_job(tr, job, remote[job.path], cfg, rec)
                else:
                    _native_job(tr, job, remote[job.path], cfg, rec)
            except (TransportError, OSError) as e:
                rec["error"] = f"{type(e).__name__}: {e}"
            if rec["status"] == "ok" and not rec.get("samples_ms") and rec.get("timing") == "samples":
                rec.update(status="error", error=rec.get("error") or "no samples")
            emit(rec)
        if progress:
            progress(device.name, len(todo), len(todo), "done")
        return written
    finally:
        if tr is not None:
            tr.cleanup()


def bench(artifact_dirs, devices: list[str], results: str | Path, *, inventory=None, runtimes=None,
          threads=(1,), precisions=None, formats=None, cfg: TimingConfig | None = None, force=False,
          progress=None) -> list[dict]:
    """Benchmark every artifact file on every device (one thread per device, in parallel)."""
    cfg = cfg or TimingConfig()
    devs = [get_device(n, inventory) for n in devices]
    jobs = plan(artifact_dirs, runtimes, threads, precisions, formats)
    if not jobs:
        raise ValueError("nothing to run: no artifact file matches the --runtime/--precision given")
    rf = ResultsFile(results)
    run_id = uuid.uuid4().hex[:12]
    with ThreadPoolExecutor(max_workers=len(devs)) as pool:
        futures = [pool.submit(bench_device, d, jobs, rf, cfg, force, progress, run_id) for d in devs]
        out = []
        for f in futures:
            out.extend(f.result())
    return out


def latest(records: list[dict]) -> dict[tuple, dict]:
    """The newest record per (sha256, runtime, device, threads), ok ones preferred."""
    best: dict[tuple, dict] = {}
    for r in records:
        k = run_key(r.get("sha256"), r.get("runtime"), r.get("device", {}).get("name"), r.get("threads", 0))
        if k not in best or r.get("status") == "ok" or best[k].get("status") != "ok":
            best[k] = r
    return best


# -- compare: a model against its standard-conv twin ------------------------------------------
def export_pair(model: str, out: str | Path, *, formats=("onnx", "tflite"), precisions=("fp32", "int8"),
                weights=None, input_size=None, calib_count=32, force=False, log=print) -> tuple[Path, Path]:
    """Export (or reuse, when their manifests already hold the files) ``model`` and its twin."""
    import torch

    from .data import load_data
    from .export import export
    from .zoo import create_model, load_weights
    out = Path(out)
    dirs = []
    for twin in (False, True):
        d = out / f"{model}{'_twin' if twin else ''}"
        mf = d / "manifest.json"
        if mf.exists() and not force:
            have = {(e["format"], e["precision"]) for e in json.loads(mf.read_text()).get("files", {}).values()}
            if all((f, p) in have for f in formats for p in precisions):
                log(f"reusing {d}")
                dirs.append(d)
                continue
        overrides = {"input_size": input_size} if input_size else {}
        net = create_model(model, twin=twin, **overrides)
        if weights and not twin:
            load_weights(net, weights)
        torch.manual_seed(0)
        calib = load_data("digits", input_shape=net.input_shape, preprocess=net.spec.preprocess,
                          calib_count=calib_count)
        log(f"exporting {model}{' twin' if twin else ''} -> {d}")
        export(net, calib=calib.x, out=d, force=True, formats=tuple(formats), precisions=tuple(precisions),
               calib_info=calib.describe())
        dirs.append(d)
    return dirs[0], dirs[1]


def compare_rows(records: list[dict], model_dir: Path, twin_dir: Path) -> list[dict]:
    """One row per (device, format, precision, runtime, threads): p50 of the model and of
    its twin, the latency ratio twin/model beside the MAC and parameter ratios."""
    mm = json.loads((Path(model_dir) / "manifest.json").read_text())
    tm = json.loads((Path(twin_dir) / "manifest.json").read_text())
    by = {}
    for r in latest(records).values():
        if r.get("status") != "ok":
            continue
        side = "twin" if Path(r["artifact"]).resolve() == Path(twin_dir).resolve() else \
            "model" if Path(r["artifact"]).resolve() == Path(model_dir).resolve() else None
        if side:
            by.setdefault((r["device"]["name"], r["format"], r["precision"], r["runtime"], r["threads"]), {})[side] = r
    rows = []
    for (dev, fmt, prec, rt, th), pair in sorted(by.items()):
        if "model" not in pair or "twin" not in pair:
            continue
        pm, pt = record_stats(pair["model"])["p50"], record_stats(pair["twin"])["p50"]
        rows.append({"device": dev, "format": fmt, "precision": prec, "runtime": rt, "threads": th,
                     "model_p50_ms": pm, "twin_p50_ms": pt,
                     "latency_ratio": pt / pm if pm and pt else None,
                     "mac_ratio": tm["macs"] / mm["macs"], "param_ratio": tm["params"] / mm["params"],
                     "emulated": pair["model"]["device"].get("emulated")})
    return rows
