"""Parsers for the native benchmark tools a phone can run without Python: TFLite
``benchmark_model``, ``onnxruntime_perf_test`` and ExecuTorch ``executor_runner``.

Each returns the timing part of a result record: ``samples_ms`` when the tool printed
per-run times, otherwise the tool's own summary in ``reported`` (avg/min/max/std/count,
in ms) and ``timing: "reported"`` so that readers know the statistics are the tool's.
"""
from __future__ import annotations

import re

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _f(x):
    return float(x) if x is not None else None


def parse_benchmark_model(text: str) -> dict:
    """TFLite ``benchmark_model``: the "count=.. first=.. curr=.. min=.. max=.. avg=.. std=.."
    lines (µs; the warmup pass first, then the timed one) and "Inference timings in us:"."""
    runs = [dict(re.findall(r"(\w+)=" + _NUM, line)) for line in text.splitlines()
            if re.search(r"\bcount=\d+ first=", line)]
    m = re.search(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM +
                  r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM, text)
    if not runs and not m:
        raise ValueError("no benchmark_model timings found (no 'count=... avg=...' line)")
    timed = runs[-1] if runs else {}
    us = 1e-3
    rec = {"timing": "reported", "samples_ms": [],
           "reported": {"count": int(float(timed["count"])) if "count" in timed else None,
                        "avg_ms": _f(timed.get("avg")) * us if "avg" in timed else None,
                        "min_ms": _f(timed.get("min")) * us if "min" in timed else None,
                        "max_ms": _f(timed.get("max")) * us if "max" in timed else None,
                        "std_ms": _f(timed.get("std")) * us if "std" in timed else None},
           "warmup_runs": int(float(runs[0]["count"])) if len(runs) > 1 else None}
    if m:
        rec["load_ms"] = float(m.group(1)) * us
        rec["first_ms"] = float(m.group(2)) * us
        rec["reported"]["warmup_avg_ms"] = float(m.group(3)) * us
        if rec["reported"]["avg_ms"] is None:
            rec["reported"]["avg_ms"] = float(m.group(4)) * us
    mem = re.search(r"Peak memory footprint \(MB\): init=" + _NUM + r" overall=" + _NUM, text)
    if mem:
        rec["peak_rss_mb"] = float(mem.group(2))
    return rec


def parse_onnxruntime_perf_test(text: str) -> dict:
    """``onnxruntime_perf_test``: "Average inference time cost: X ms", "Total inference
    requests: N" (older: "Average time cost", "Total iterations"), "P50 Latency is X sec",
    "Min/Max Latency is X sec", "Session creation time cost: X s", "Avg CPU usage: X %"."""
    def grab(pattern):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None
    avg = grab(r"Average (?:inference )?time cost:\s*" + _NUM + r"\s*ms")
    count = grab(r"Total (?:inference requests|iterations):\s*" + _NUM)
    if avg is None:
        raise ValueError("no onnxruntime_perf_test timings found (no 'Average inference time cost' line)")
    rep = {"count": int(count) if count is not None else None, "avg_ms": avg,
           "min_ms": None, "max_ms": None, "std_ms": None}
    for key, name in (("min_ms", "Min"), ("max_ms", "Max"), ("p50_ms", "P50"), ("p90_ms", "P90"),
                      ("p95_ms", "P95"), ("p99_ms", "P99")):
        v = grab(name + r" Latency is\s*" + _NUM + r"\s*sec")
        if v is not None:
            rep[key] = v * 1e3
    rec = {"timing": "reported", "samples_ms": [], "reported": rep}
    load = grab(r"Session creation time cost:\s*" + _NUM + r"\s*s")
    if load is not None:
        rec["load_ms"] = load * 1e3
    cpu = grab(r"Avg CPU usage:\s*" + _NUM + r"\s*%")
    if cpu is not None:
        rep["cpu_percent"] = cpu
    ws = grab(r"Peak working set size:\s*" + _NUM + r"\s*bytes")
    if ws is not None:
        rec["peak_rss_mb"] = ws / 2**20
    return rec


def parse_executor_runner(text: str) -> dict:
    """ExecuTorch ``executor_runner``: "Model executed successfully N time(s) in X ms." (the
    total over N runs) and, where printed, "Iteration i of N: X ms" per run and "Model loaded
    in X ms". Older runners print only "Model executed successfully." (no timing)."""
    if "Model executed successfully" not in text:
        raise ValueError("executor_runner did not report 'Model executed successfully'")
    samples = [float(x) for x in re.findall(r"Iteration \d+ of \d+: " + _NUM + r" ms", text)]
    m = re.search(r"Model executed successfully (\d+) time\(s\) in " + _NUM + r" ms", text)
    rec: dict = {"samples_ms": samples, "timing": "samples" if samples else "reported",
                 "reported": {"count": None, "avg_ms": None, "min_ms": None, "max_ms": None, "std_ms": None}}
    if m:
        n, total = int(m.group(1)), float(m.group(2))
        rec["reported"].update(count=n, avg_ms=total / n, total_ms=total)
    elif not samples:
        rec["timing"] = "none"
        rec["note"] = "this executor_runner prints no timing; rebuild a newer one (--num_executions)"
    load = re.search(r"Model loaded in " + _NUM + r" ms", text)
    if load:
        rec["load_ms"] = float(load.group(1))
    return rec


PARSERS = {"benchmark_model": parse_benchmark_model,
           "onnxruntime_perf_test": parse_onnxruntime_perf_test,
           "executor_runner": parse_executor_runner}


def native_argv(tool: str, binary: str, model: str, threads: int, warmup: int, runs: int,
                min_seconds: float) -> list[str]:
    if tool == "benchmark_model":
        return [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                f"--num_runs={runs}", f"--min_secs={min_seconds}"]
    if tool == "onnxruntime_perf_test":
        return [binary, "-m", "times", "-r", str(runs), "-x", str(threads), "-e", "cpu", model]
    if tool == "executor_runner":
        return [binary, f"--model_path={model}", f"--num_executions={runs}"]
    raise ValueError(f"unknown native tool {tool!r}; known: {', '.join(PARSERS)}")
