#!/usr/bin/env python3
"""edgeconv device agent: runs exported model files and prints one JSON document.

Needs only the Python standard library, numpy and one runtime, so it runs on a bare
Raspberry Pi OS / Debian arm64 board, an emulated arm64 machine, or the host. The host
imports this same file for local runs and copies it to devices for remote ones.

Runtime adapters (``RUNTIMES``): ``onnxruntime`` (.onnx), ``litert`` (.tflite, through
``ai_edge_litert`` or else ``tflite_runtime``), ``executorch`` (.pte, XNNPACK delegate).
Each takes NCHW float32 inputs and returns float32 outputs: layout changes and int8 I/O
quantisation are done here, from the artifact's manifest.

Timing method (single stream, one inference at a time, after MLPerf Mobile's rules,
shortened for development): ``--warmup`` untimed runs, then timed runs until both
``--min-runs`` and ``--min-seconds`` are reached (capped by ``--max-seconds``). Every run
is timed alone with a monotonic clock and kept in ``samples_ms``; statistics are computed
from those samples by the reader, never here. Several files on one command line are timed
one after another in this one process (a profile's many micro-models pay the interpreter's
start-up and the runtime's import once); each record says which of the process's files it was,
and only the first one's peak RSS is its own.

    python3 agent.py MODEL_FILE --runtime onnxruntime --threads 1,4
    python3 agent.py FILE_A FILE_B FILE_C --runtime litert       # one record per file, in order
    python3 agent.py MODEL_FILE --inputs x.npy --outputs y.npy   # run given inputs
    python3 agent.py --facts                                     # device facts and runtimes
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

AGENT_VERSION = 5
SCHEMA_VERSION = 1
RUNTIMES: dict[str, type] = {}


def register(cls):
    RUNTIMES[cls.name] = cls
    return cls


def get_runtime(name: str):
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


class ModelFileError(RuntimeError):
    """A model file that its runtime cannot load (truncated, corrupt, wrong format)."""


@register
class OnnxRuntimeAdapter:
    name = "onnxruntime"
    suffix = ".onnx"
    install = "pip install onnxruntime"

    @staticmethod
    def version() -> str:
        import onnxruntime
        return onnxruntime.__version__

    @staticmethod
    def options(threads: int):
        """The session options every timing uses: ``threads`` intra-op threads, run sequentially."""
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return so

    def __init__(self, path: str, threads: int = 1):
        import onnxruntime as ort
        so = self.options(threads)
        try:
            self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: onnxruntime cannot load this ONNX file: {e}") from None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


@register
class LiteRTAdapter:
    name = "litert"
    suffix = ".tflite"
    install = "pip install ai-edge-litert   (or, where it has no wheel: pip install tflite-runtime)"

    @staticmethod
    def _module():
        try:
            from ai_edge_litert import interpreter
            return interpreter, "ai_edge_litert"
        except ImportError:
            from tflite_runtime import interpreter
            return interpreter, "tflite_runtime"

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version
        _, dist = cls._module()
        return f"{dist.replace('_', '-')} {version(dist.replace('_', '-'))}"

    def __init__(self, path: str, threads: int = 1):
        interpreter, _ = self._module()
        try:
            self.interp = interpreter.Interpreter(model_path=path, num_threads=threads)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(f"{path}: LiteRT cannot load this TFLite file: {e}") from None
        self.inp = self.interp.get_input_details()[0]["index"]
        self.out = self.interp.get_output_details()[0]["index"]

    def run(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp, x)
        self.interp.invoke()
        return self.interp.get_tensor(self.out)


@register
class ExecuTorchAdapter:
    name = "executorch"
    suffix = ".pte"
    install = "pip install executorch"

    @staticmethod
    def version() -> str:
        from importlib.metadata import version
        return version("executorch")

    def __init__(self, path: str, threads: int = 1):
        import torch
        from executorch.runtime import Runtime
        self._torch = torch
        self.set_threads(threads)
        try:
            program = Runtime.get().load_program(Path(path))
            self.method = program.load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError / ValueError subclasses
            raise ModelFileError(f"{path}: the ExecuTorch runtime cannot load this .pte file: {e}") from None

    @staticmethod
    def set_threads(threads: int) -> None:
        """torch's pool and ExecuTorch's own threadpool (which otherwise uses every core) to
        ``threads``."""
        import torch
        torch.set_num_threads(threads)
        try:
            from executorch.extension.pybindings import portable_lib
            portable_lib._unsafe_reset_threadpool(threads)
        except (ImportError, AttributeError):
            pass

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([self._torch.from_numpy(x)])
        return out[0].numpy()


class Session:
    """A model file opened in a runtime, fed and read in the manifest's terms: NCHW float32
    in, float32 out, whatever layout and dtype the file itself takes."""

    def __init__(self, path: str | Path, runtime: str | None = None, threads: int = 1,
                 entry: dict | None = None):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"model file {path} does not exist")
        self.path = path
        by_suffix = {cls.suffix: name for name, cls in RUNTIMES.items()}
        self.runtime_name = runtime or by_suffix.get(path.suffix)
        if self.runtime_name is None:
            raise ValueError(f"{path}: no runtime for '{path.suffix}' files; known suffixes: "
                             f"{', '.join(by_suffix)}")
        cls = get_runtime(self.runtime_name)
        if path.suffix != cls.suffix:
            raise ValueError(f"{path}: runtime {cls.name} runs {cls.suffix} files, not {path.suffix}")
        self.entry = entry if entry is not None else manifest_entry(path)
        t0 = time.perf_counter()
        self.adapter = cls(str(path), threads)
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def to_model_input(self, x: np.ndarray) -> np.ndarray:
        spec = self.entry.get("input", {})
        if spec.get("layout") == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        q = spec.get("quant")
        if q:
            info = np.iinfo(np.dtype(spec["dtype"]))
            x = np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max)
        return np.ascontiguousarray(x.astype(spec.get("dtype", "float32")))

    def from_model_output(self, y: np.ndarray) -> np.ndarray:
        q = self.entry.get("output", {}).get("quant")
        if q:
            y = (y.astype(np.float32) - q["zero_point"]) * q["scale"]
        return y.astype(np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch one sample at a time (exports have a fixed batch of 1)."""
        return np.concatenate([self.from_model_output(self.adapter.run(self.to_model_input(x[i:i + 1])))
                               for i in range(len(x))])


def manifest_entry(path: Path) -> dict:
    """The manifest's entry for ``path`` ({} when the file has no manifest beside it)."""
    manifest = path.parent / "manifest.json"
    if not manifest.exists():
        return {}
    return json.loads(manifest.read_text()).get("files", {}).get(path.name, {})


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def temperature_c() -> float | None:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw = _read(str(zone / "temp"))
        if raw and raw.lstrip("-").isdigit():
            return int(raw) / 1000.0
    return None


def throttled() -> str | None:
    """Raspberry Pi firmware throttling flags (``vcgencmd get_throttled``), where present."""
    if not shutil.which("vcgencmd"):
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip().split("=")[-1] or None
    except (OSError, subprocess.SubprocessError):
        return None


# /proc/cpuinfo "CPU part" of Arm Ltd. cores (implementer 0x41), from Arm's TRMs and the
# Linux kernel's arch/arm64/include/asm/cputype.h.
ARM_CORES = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd0e": "Cortex-A76AE", "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2", "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720",
    "0xd82": "Cortex-X4",
}


def _cpuinfo_values(key: str, info: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in info.splitlines()
            if line.split(":", 1)[0].strip() == key and ":" in line]


def arm_cores(info: str | None = None) -> str | None:
    """The ARM core names from /proc/cpuinfo "CPU part" lines, e.g. "4x Cortex-A76" or
    "4x Cortex-A55 + 4x Cortex-A76" (big.LITTLE); None when there are none."""
    info = (_read("/proc/cpuinfo") or "") if info is None else info
    implementers = _cpuinfo_values("CPU implementer", info)
    parts = _cpuinfo_values("CPU part", info)
    if not parts:
        return None
    counts: dict[str, int] = {}
    for i, part in enumerate(parts):
        impl = implementers[i] if i < len(implementers) else "0x41"
        name = ARM_CORES.get(part.lower()) if impl.lower() == "0x41" else None
        name = name or f"CPU part {part} (implementer {impl})"
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{n}x {name}" for name, n in counts.items())


def cpu_model() -> str:
    cores = arm_cores()
    model = _read("/proc/device-tree/model")
    if model:
        model = model.rstrip("\x00")
        return f"{model} ({cores})" if cores else model
    if cores:
        return cores
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model"):
        for value in _cpuinfo_values(key, info):
            return value
    return platform.processor() or "unknown"


def emulated() -> str | None:
    """How this device is emulated ("qemu-aarch64 cortex-a76"), None on real hardware. The
    arm64 wrapper of setup_arm64.sh sets EDGECONV_ARM64_PYTHON and QEMU_CPU."""
    if os.environ.get("EDGECONV_ARM64_PYTHON"):
        return f"qemu-{platform.machine()} {os.environ.get('QEMU_CPU', '')}".strip()
    return None


CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq/"


def freq_mhz() -> float | None:
    """The current clock of CPU 0 (cpufreq), or the first "cpu MHz" of /proc/cpuinfo."""
    freq = _read(CPUFREQ + "scaling_cur_freq")
    if freq and freq.isdigit():
        return int(freq) / 1000
    for value in _cpuinfo_values("cpu MHz", _read("/proc/cpuinfo") or ""):
        try:
            return float(value)
        except ValueError:
            break
    return None


def device_facts() -> dict:
    return {
        "hostname": platform.node(), "arch": platform.machine(), "cpu": cpu_model(),
        "cores": os.cpu_count(), "governor": _read(CPUFREQ + "scaling_governor"),
        "freq_mhz": freq_mhz(), "emulated": emulated(),
        "os": platform.platform(), "python": platform.python_version(),
    }


def runtimes_present() -> dict:
    found = {}
    for name, cls in RUNTIMES.items():
        try:
            found[name] = cls.version()
        except Exception as e:  # missing module, broken install: reported, not raised
            found[name] = None
            found[f"{name}_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
            found[f"{name}_install"] = cls.install
    return found


def peak_rss_mb() -> float | None:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return None


def make_input(entry: dict, seed: int = 0) -> np.ndarray:
    shape = entry.get("input", {}).get("shape_nchw") or [1, 3, 224, 224]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def time_runs(fn, warmup: int, min_runs: int, min_seconds: float, max_seconds: float) -> list[float]:
    warm_until = time.perf_counter() + max_seconds  # the host's timeout allows max_seconds for each phase
    for _ in range(warmup):
        fn()
        if time.perf_counter() > warm_until:
            break
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        if (len(samples) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return samples


def telemetry(t_s: float) -> dict:
    return {"t_s": round(t_s, 3), "temp_c": temperature_c(), "freq_mhz": freq_mhz(), "throttled": throttled()}


def time_sustained(fn, warmup: int, seconds: float, every: float) -> tuple[list[float], list[float], list[dict]]:
    """Sustained mode: time runs for ``seconds`` of wall time (heat and clocks settle or drift),
    sampling temperature, clock and throttling every ``every`` seconds. Returns (samples in ms,
    each sample's start in s from the first, telemetry)."""
    for _ in range(warmup):
        fn()
    samples, starts, tele = [], [], [telemetry(0.0)]
    start = time.perf_counter()
    next_probe = every
    while True:
        t0 = time.perf_counter_ns()
        fn()
        t1 = time.perf_counter_ns()
        samples.append((t1 - t0) / 1e6)
        starts.append(round(t0 / 1e9 - start, 4))
        elapsed = time.perf_counter() - start
        if elapsed >= next_probe:
            tele.append(telemetry(elapsed))
            next_probe += every
        if elapsed >= seconds:
            tele.append(telemetry(elapsed))
            return samples, starts, tele


def watch_stdin() -> None:
    """Exit when stdin closes: over ssh the agent's stdin is the connection, so a lost link stops
    the agent instead of leaving it to run on the device."""
    import threading

    def watch():  # os.read, not sys.stdin: a buffered reader's lock blocks interpreter shutdown
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(75)
    threading.Thread(target=watch, daemon=True).start()


def ort_op_profile(path: str, threads: int, x: np.ndarray, warmup: int, runs: int) -> dict:
    """ONNX Runtime's own profiler on ``path``, in a session of its own after the timing (its
    bookkeeping slows every op): the median time of each node of the optimised graph over
    ``runs`` runs after ``warmup``, by the node names ONNX Runtime gives its fused and layout
    nodes. A cross-check of the timing, not a timing: the profiler's overhead is in it."""
    import tempfile

    import onnxruntime as ort
    so = get_runtime("onnxruntime").options(threads)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                     and e.get("name") == "model_run")[-runs:]
    per_run: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = next((k for k, (a, b) in enumerate(windows) if a <= e["ts"] <= b), None)
        if i is None:
            continue
        name = e["name"][: -len("_kernel_time")]
        ops[name] = e.get("args", {}).get("op_name", "")
        per_run.setdefault(name, [0.0] * len(windows))[i] += e["dur"] / 1e3
    return {"runs": len(windows), "source": f"onnxruntime {ort.__version__} profiler",
            "nodes": {n: {"op": ops[n], "ms": float(np.median(t))} for n, t in per_run.items()},
            "run_ms": float(np.median([b - a for a, b in windows]) / 1e3) if windows else None}


def et_op_profile(path: str, threads: int, x: np.ndarray, warmup: int, runs: int) -> dict:
    """ExecuTorch's own profiler (ETDump) on ``path``, in a program of its own after the timing:
    the median time of each operator over the last ``runs`` runs after ``warmup``, in the order
    they ran: XNNPACK's operators by the names it gives them (``Convolution (NHWC, QC8) DWConv
    #3``) inside its delegate calls, a kernel outside any delegate as ``OPERATOR_CALL`` (ETDump
    names those only through an ETRecord); a name met twice in a run (a second delegate
    partition counts its operators from #1 again) gets the instruction's index (``@7``). XNNPACK
    times its operators in whole microseconds. A cross-check of the timing, not a timing."""
    import tempfile

    import torch
    from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc
    from executorch.runtime import Runtime
    ExecuTorchAdapter.set_threads(threads)
    program = Runtime.get().load_program(Path(path), enable_etdump=True)
    method = program.load_method("forward")
    inputs = [torch.from_numpy(x)]
    for _ in range(warmup + runs):
        method.execute(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        etdp = Path(tmp) / "run.etdp"
        program.write_etdump_result_to_file(str(etdp), str(Path(tmp) / "debug.bin"))
        if not etdp.is_file():
            raise RuntimeError("this ExecuTorch runtime wrote no ETDump: it was built without its event tracer")
        dump = deserialize_from_etdump_flatcc(etdp.read_bytes())
    per_run: list[dict[str, float]] = []
    totals = []
    for block in dump.run_data:
        events = [e.profile_event for e in block.events if e.profile_event is not None]
        total = [(p.end_time - p.start_time) / 1e6 for p in events if p.name == "Method::execute"]
        if not total:
            continue  # the program's load, not a run
        totals.append(total[0])
        ops: dict[str, float] = {}
        for p in events:
            name = p.name or p.delegate_debug_id_str or (f"delegate op {p.delegate_debug_id_int}"
                                                         if p.delegate_debug_id_int not in (None, -1) else None)
            if not name or name in ("Method::execute", "DELEGATE_CALL"):
                continue
            if name in ops:
                name = f"{name} @{p.instruction_id}"
            ops[name] = ops.get(name, 0.0) + (p.end_time - p.start_time) / 1e6
        per_run.append(ops)
    per_run, totals = per_run[-runs:], totals[-runs:]
    names = list(dict.fromkeys(n for ops in per_run for n in ops))
    return {"runs": len(totals), "source": f"executorch {ExecuTorchAdapter.version()} etdump",
            "nodes": {n: {"op": n.split(" (")[0].split(" #")[0].split(" @")[0],
                          "ms": float(np.median([ops.get(n, 0.0) for ops in per_run]))} for n in names},
            "run_ms": float(np.median(totals)) if totals else None}


OP_PROFILERS = {"onnxruntime": ort_op_profile, "executorch": et_op_profile}


def bench(path: str, runtime: str | None, threads: int, warmup: int, min_runs: int,
          min_seconds: float, max_seconds: float, sustained_seconds: float = 0.0, sample_every: float = 5.0,
          op_profile_runs: int = 0) -> dict:
    rec = {"file": Path(path).name, "runtime": runtime, "threads": threads,
           "config": {"warmup": warmup, "runs": min_runs, "threads": threads,
                      "min_seconds": min_seconds, "max_seconds": max_seconds,
                      "sustained_seconds": sustained_seconds or None},
           "temp_c_before": temperature_c(), "samples_ms": [], "status": "ok", "error": None}
    try:
        session = Session(path, runtime, threads)
        rec["runtime"] = session.runtime_name
        rec["runtime_version"] = get_runtime(session.runtime_name).version()
        rec["load_ms"] = session.load_ms
        x = session.to_model_input(make_input(session.entry))
        t0 = time.perf_counter()
        session.adapter.run(x)
        rec["first_ms"] = (time.perf_counter() - t0) * 1e3
        if sustained_seconds:
            rec["samples_ms"], rec["samples_t_s"], rec["telemetry"] = time_sustained(
                lambda: session.adapter.run(x), warmup, sustained_seconds, sample_every)
        else:
            rec["samples_ms"] = time_runs(lambda: session.adapter.run(x), warmup, min_runs,
                                          min_seconds, max_seconds)
        if op_profile_runs and session.runtime_name in OP_PROFILERS:
            try:  # a profiler that fails costs its cross-check, not the timing
                rec["op_profile"] = OP_PROFILERS[session.runtime_name](path, threads, x, min(warmup, 5),
                                                                       op_profile_runs)
            except Exception as e:
                rec["op_profile"] = {"error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # one failed run is a record, not a lost benchmark
        rec["status"] = "error"
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc(limit=5)
    rec["temp_c_after"] = temperature_c()
    rec["throttled"] = throttled()
    rec["peak_rss_mb"] = peak_rss_mb()
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="*", help="model files (.onnx, .tflite or .pte), each with manifest.json beside "
                   "it; several are timed one after another in this process")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), help="default: by file suffix")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,4")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--min-runs", type=int, default=50, help="timed runs at least (default 50)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds at least (default 3)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop timing after this (default 120)")
    p.add_argument("--affinity", help="pin to these CPUs, e.g. 0-3 or 2,3")
    p.add_argument("--inputs", help=".npy of NCHW float32 inputs to run instead of timing")
    p.add_argument("--outputs", help="with --inputs: where to save the outputs (.npy)")
    p.add_argument("--facts", action="store_true", help="print device facts and runtimes, then exit")
    p.add_argument("--sustained-seconds", type=float, default=0.0,
                   help="sustained mode: keep timing this long, sampling temperature and clocks")
    p.add_argument("--sample-every", type=float, default=5.0, help="sustained mode: telemetry period (s)")
    p.add_argument("--op-profile-runs", type=int, default=0,
                   help="after timing, this many runs under the runtime's own op profiler "
                        "(ONNX Runtime's profiler, ExecuTorch's ETDump)")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="exit when stdin closes (the host's connection), leaving nothing running; the "
                        "pid goes to agent.pid in the working folder, for a later clean-up")
    a = p.parse_args(argv)
    if a.inputs and len(a.model) != 1:
        p.error(f"--inputs runs one model file, not {len(a.model)}")
    if a.exit_with_stdin:
        Path("agent.pid").write_text(str(os.getpid()))
        watch_stdin()
    doc: dict = {"agent_version": AGENT_VERSION, "schema_version": SCHEMA_VERSION}
    if a.affinity:
        cpus = set()
        try:
            for part in a.affinity.split(","):
                lo, _, hi = part.partition("-")
                cpus.update(range(int(lo), int(hi or lo) + 1))
            os.sched_setaffinity(0, cpus)
        except (ValueError, OSError):
            allowed = sorted(os.sched_getaffinity(0))
            print(f"--affinity {a.affinity}: not CPUs of this device (it has CPUs {allowed[0]}-{allowed[-1]}); "
                  "name CPUs like 0-3 or 2,3", file=sys.stderr)
            return 2
        doc["affinity"] = sorted(cpus)
    doc["device"] = device_facts()
    if a.facts or not a.model:
        doc["runtimes"] = runtimes_present()
        doc["throttled"] = throttled()
        doc["temp_c"] = temperature_c()
    elif a.inputs:
        session = Session(a.model[0], a.runtime, int(a.threads.split(",")[0]))
        y = session.run(np.load(a.inputs).astype(np.float32))
        np.save(a.outputs or "outputs.npy", y)
        doc.update(status="ok", runtime=session.runtime_name, outputs=a.outputs or "outputs.npy",
                   shape=list(y.shape))
    else:
        doc["records"] = []
        for path in a.model:
            for t in a.threads.split(","):
                rec = bench(path, a.runtime, int(t), a.warmup, a.min_runs, a.min_seconds, a.max_seconds,
                            a.sustained_seconds, a.sample_every, a.op_profile_runs)
                rec["path"], rec["process_index"] = path, len(doc["records"])
                if rec["process_index"]:  # the process's high-water mark, not this file's
                    rec["peak_rss_mb"] = None
                doc["records"].append(rec)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
