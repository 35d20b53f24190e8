"""Device side without a device: native-tool parsers on real recorded outputs, adb errors,
inventory, statistics, the results file, the agent's ARM facts, and local bench/resume."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench_device import agent
from edgeconv.artifact import sha256
from edgeconv.benchmark import ResultsFile, TimingConfig, bench, record_stats, stats
from edgeconv.cli import main
from edgeconv.device import TransportError, get_transport
from edgeconv.device.inventory import get_device
from edgeconv.device.native import parse_benchmark_model, parse_executor_runner, parse_onnxruntime_perf_test

NATIVE = Path(__file__).parent / "data" / "native"


def _fixture(name):
    text = (NATIVE / name).read_text()
    assert text.startswith("# source: ")  # where the recorded output came from
    return text


# -- native tools (outputs recorded by their users, see each file's first line) ------------------
def test_benchmark_model_android():
    r = parse_benchmark_model(_fixture("tflite_benchmark_model_android.txt"))
    assert r["timing"] == "reported" and r["samples_ms"] == []
    assert r["reported"]["count"] == 50 and r["warmup_runs"] == 15
    assert r["reported"]["avg_ms"] == pytest.approx(33.2094)
    assert r["reported"]["min_ms"] == pytest.approx(32.641) and r["reported"]["max_ms"] == pytest.approx(34.005)
    assert r["reported"]["std_ms"] == pytest.approx(0.450)
    assert r["load_ms"] == pytest.approx(0.855) and r["first_ms"] == pytest.approx(49.060)
    assert r["peak_rss_mb"] == pytest.approx(12.8672)
    s = record_stats(r)
    assert s["source"] == "reported" and s["mean"] == pytest.approx(33.2094) and s["p50"] is None


def test_benchmark_model_linux_info_prefix():
    r = parse_benchmark_model(_fixture("tflite_benchmark_model_linux.txt"))
    assert r["reported"]["count"] == 74 and r["reported"]["avg_ms"] == pytest.approx(13.5202)
    assert r["load_ms"] == pytest.approx(12.75) and r["first_ms"] == pytest.approx(14.744)


def test_onnxruntime_perf_test_summary():
    r = parse_onnxruntime_perf_test(_fixture("ort_perf_test_android_acl.txt"))
    assert r["reported"]["count"] == 10 and r["reported"]["avg_ms"] == pytest.approx(144.871)
    assert r["load_ms"] == pytest.approx(127.918) and r["reported"]["cpu_percent"] == 68
    assert r["peak_rss_mb"] == pytest.approx(158171136 / 2**20)


def test_onnxruntime_perf_test_percentiles():
    r = parse_onnxruntime_perf_test(_fixture("ort_perf_test_percentiles.txt"))
    rep = r["reported"]
    assert rep["count"] == 1000 and rep["avg_ms"] == pytest.approx(58.8053)
    assert rep["p50_ms"] == pytest.approx(58.7108) and rep["p90_ms"] == pytest.approx(59.9845)
    assert rep["min_ms"] == pytest.approx(55.9777) and rep["max_ms"] == pytest.approx(62.3472)
    assert record_stats(r)["p50"] == pytest.approx(58.7108)


def test_executor_runner_timed_and_untimed():
    r = parse_executor_runner(_fixture("executorch_executor_runner_timed.txt"))
    assert r["reported"]["count"] == 1 and r["reported"]["avg_ms"] == pytest.approx(0.691078)
    r = parse_executor_runner(_fixture("executorch_executor_runner_untimed.txt"))
    assert r["timing"] == "none" and r["reported"]["avg_ms"] is None


def test_parsers_reject_other_output():
    for parse in (parse_benchmark_model, parse_onnxruntime_perf_test, parse_executor_runner):
        with pytest.raises(ValueError):
            parse("Segmentation fault\n")


# -- adb ----------------------------------------------------------------------------------------
def test_adb_not_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb here
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.phone]\ntransport = "adb"\n[devices.phone.native]\n'
                   'benchmark_model = "/data/local/tmp/benchmark_model"\n')
    with pytest.raises(TransportError, match="adb is not installed"):
        get_device("phone", inv).open()


@pytest.mark.skipif(not __import__("shutil").which("adb"), reason="adb not installed (apt-get install adb)")
def test_adb_no_device_attached(tmp_path):
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.phone]\ntransport = "adb"\n')
    try:
        with pytest.raises(TransportError, match="no Android device attached"):
            get_device("phone", inv).open()
    finally:  # `adb devices` started an adb server daemon: stop it
        import subprocess
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


# -- inventory ----------------------------------------------------------------------------------
def test_inventory_errors_list_known_names(tmp_path):
    with pytest.raises(ValueError, match="known: .*local.*qemu-arm64"):
        get_device("nope")
    with pytest.raises(ValueError, match="known: adb, local, qemu-arm64, ssh"):
        get_transport("telnet")
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.x]\ntransport = "telnet"\n')
    with pytest.raises(ValueError, match="unknown transport 'telnet'"):
        get_device("x", inv)
    inv.write_text('[devices.x]\ntransport = "ssh"\nhots = "a"\n')
    with pytest.raises(ValueError, match="unknown key"):
        get_device("x", inv)
    for text, message in (('devices = 3\n', "'devices' must be tables"),
                          ('[devices]\nx = 3\n', "devices.x = 3"),
                          ('[devices.x]\ntransport = "ssh"\nport = "22"\n', "devices.x.port = '22'"),
                          ('[devices.x]\ntransport = "ssh"\nconnect_timeout = -1\n', "devices.x.connect_timeout = -1"),
                          ('[devices.x]\ntransport = "local"\nruntimes = ["tensorrt"]\n', "devices.x.runtimes")):
        inv.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            get_device("x", inv)


def test_example_inventory_parses():
    from edgeconv.device.inventory import load_inventory
    devs = load_inventory(Path(__file__).parent.parent / "bench_device" / "devices.example.toml")
    assert {d["transport"] for d in devs.values()} == {"ssh", "adb", "qemu-arm64", "local"}


def test_inventory_node_key(tmp_path):
    """`node` (the host that drives a device on a Ray cluster) is checked, and a device's key and
    known_hosts are then that host's files: relative paths are refused, ~ is kept for it."""
    from edgeconv.device.inventory import load_inventory
    lab = load_inventory(Path(__file__).parent.parent / "bench_device" / "lab.example.toml")
    assert len(lab) == 40 and len({d["node"] for d in lab.values()}) == 10
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.pi]\ntransport = "ssh"\nhost = "10.0.0.2"\nkey = "~/.ssh/lab"\nnode = "lab-host-2"\n')
    dev = get_device("pi", inv)
    assert dev.node == "lab-host-2" and dev.key == "~/.ssh/lab"
    inv.write_text('[devices.pi]\ntransport = "ssh"\nhost = "10.0.0.2"\nnode = 2\n')
    with pytest.raises(ValueError, match="node = 2; name the Ray node that drives it"):
        get_device("pi", inv)
    inv.write_text('[devices.pi]\ntransport = "ssh"\nhost = "10.0.0.2"\nknown_hosts = "kh"\nnode = "h2"\n')
    with pytest.raises(ValueError, match="known_hosts = 'kh' is relative, but the device is driven by node 'h2'"):
        get_device("pi", inv)


def test_qemu_missing_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECONV_CACHE", str(tmp_path))
    with pytest.raises(TransportError, match="setup_arm64.sh"):
        get_device("qemu-arm64").open()


# -- statistics and the results file --------------------------------------------------------------
def test_stats():
    s = stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["p50"] == 3.0 and s["n"] == 5 and s["mean"] == 22.0
    assert s["p90"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))
    assert s["cov"] == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1) / 22.0)
    assert stats([])["p50"] is None


def test_results_file_cuts_a_torn_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"status": "ok", "a": 1}\n{"status": "o')
    rf = ResultsFile(p)
    rf.append({"status": "ok", "a": 2})
    assert [json.loads(line)["a"] for line in p.read_text().splitlines()] == [1, 2]


def test_lines_that_are_not_records_are_skipped_and_counted_by_every_reader(tiny_artifact, tmp_path):
    good = {"device": {"name": "local"}, "status": "ok", "sha256": "0" * 64, "runtime": "onnxruntime",
            "threads": 1, "samples_ms": [1.0, 2.0], "file": "model_int8.onnx", "precision": "int8"}
    lines = [json.dumps(good), "garbage", "[1, 2]", json.dumps({**good, "samples_ms": "abc"}),
             json.dumps({**good, "threads": "x"}), json.dumps({**good, "device": "local"}), '{"status": "o']
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = run_dir / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    rf = ResultsFile(results)
    with pytest.warns(UserWarning, match=r"skipped 6 line\(s\)"):
        assert rf.records() == [good]
    assert rf.skipped == 6
    res = CliRunner().invoke(main, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert "6 line(s) that are not records" in " ".join(res.output.split())
    assert "6 line(s) that are not records" in (run_dir / "report.md").read_text()
    before = results.read_bytes()
    res = CliRunner().invoke(main, ["bench", str(tiny_artifact), "--runtime", "onnxruntime", "--precision", "int8",
                                    "--results", str(results), "--warmup", "0", "--min-runs", "2",
                                    "--min-seconds", "0"])
    assert res.exit_code == 0 and "skipped 6 line(s)" in " ".join(res.output.split()), res.output
    after = results.read_bytes()
    assert after.startswith(before) and json.loads(after[len(before):])["status"] == "ok"


def test_a_record_measured_on_a_full_disk_is_kept(tiny_artifact, tmp_path, monkeypatch):
    import errno
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spare"))
    (tmp_path / "spare").mkdir()
    real_write = os.write

    def full(fd, data):
        if data.startswith(b'{"schema_version"'):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", full)
    res = CliRunner().invoke(main, ["bench", str(tiny_artifact), "--runtime", "onnxruntime", "--precision", "int8",
                                    "--results", str(tmp_path / "r.jsonl"), "--warmup", "0", "--min-runs", "2",
                                    "--min-seconds", "0"])
    assert res.exit_code == 2 and "No space left" in res.output and "kept in" in res.output, res.output
    spare = list((tmp_path / "spare").glob("edgeconv-unsaved-*.jsonl"))
    assert len(spare) == 1 and json.loads(spare[0].read_text())["status"] == "ok"
    assert not (tmp_path / "r.jsonl").exists() or (tmp_path / "r.jsonl").read_bytes() == b""


# -- the agent's device facts ----------------------------------------------------------------------
def test_arm_core_names():
    rpi5 = "".join(f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n" for i in range(4))
    assert agent.arm_cores(rpi5) == "4x Cortex-A76"
    biglittle = ("CPU implementer\t: 0x41\nCPU part\t: 0xd05\n" * 4) + ("CPU implementer\t: 0x41\nCPU part\t: 0xd41\n" * 4)
    assert agent.arm_cores(biglittle) == "4x Cortex-A55 + 4x Cortex-A78"
    assert agent.arm_cores("model name\t: AMD EPYC\n") is None
    assert agent.arm_cores("CPU implementer\t: 0x51\nCPU part\t: 0x802\n") == "1x CPU part 0x802 (implementer 0x51)"


def test_emulated_fact(monkeypatch):
    monkeypatch.delenv("EDGECONV_ARM64_PYTHON", raising=False)
    assert agent.device_facts()["emulated"] is None
    monkeypatch.setenv("EDGECONV_ARM64_PYTHON", "/x/python3")
    monkeypatch.setenv("QEMU_CPU", "cortex-a53")
    assert agent.emulated().endswith("cortex-a53")


# -- local bench, CLI, resume ----------------------------------------------------------------------
def test_local_bench_cli_and_resume(tiny_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    args = ["bench", str(tiny_artifact), "--threads", "1,2", "--precision", "int8", "--results", str(results),
            "--warmup", "1", "--min-runs", "5", "--min-seconds", "0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(recs) == 4 and {(r["runtime"], r["threads"]) for r in recs} == \
        {("onnxruntime", 1), ("onnxruntime", 2), ("litert", 1), ("litert", 2)}
    for r in recs:
        for k in ("schema_version", "run_id", "model", "twin", "arch", "quant", "format", "runtime",
                  "runtime_version", "device", "config", "samples_ms", "load_ms", "first_ms", "peak_rss_mb",
                  "status", "error", "sha256", "timestamp", "precision", "file", "artifact"):
            assert k in r, k
        assert set(r["device"]) >= {"name", "arch", "cpu", "cores", "governor", "temp_c_before", "temp_c_after",
                                    "throttled", "emulated"}
        assert r["config"] == {"warmup": 1, "runs": 5, "threads": r["threads"], "min_seconds": 0.0,
                               "max_seconds": 120.0, "affinity": None, "sustained_seconds": None}
        assert all(isinstance(s, float) for s in r["samples_ms"]) and len(r["samples_ms"]) >= 5
    assert "p50" in res.output and "CoV" in res.output
    res = CliRunner().invoke(main, args)  # resume: nothing to do
    assert res.exit_code == 0 and len(results.read_text().splitlines()) == 4
    res = CliRunner().invoke(main, args + ["--force", "--threads", "1", "--runtime", "litert"])
    assert res.exit_code == 0 and len(results.read_text().splitlines()) == 5


def test_bench_failed_run_is_an_error_record(tiny_artifact, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    for name, entry in manifest["files"].items():  # files the manifest vouches for, that no runtime loads
        (bad / name).write_bytes(b"not a model")
        entry.update(sha256=sha256(bad / name), bytes=len(b"not a model"))
    (bad / "manifest.json").write_text(json.dumps(manifest))
    recs = bench([bad], ["local"], tmp_path / "r.jsonl", precisions=["int8"],
                 cfg=TimingConfig(warmup=1, min_runs=2, min_seconds=0))
    assert recs and all(r["status"] == "error" and "cannot load" in r["error"] for r in recs)


def test_files_share_an_agent_and_one_that_kills_it_loses_only_its_own_record(tiny_artifact, tmp_path):
    import shutil
    import sys
    crashing = tmp_path / "crashing"
    shutil.copytree(tiny_artifact, crashing)
    # the device's interpreter: the real agent, except that the process aborts (as a runtime that
    # crashes would) once it is asked to time a file of the folder above
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!{sys.executable}\nimport os, runpy, sys\n"
                       "if any('/crashing/' in a for a in sys.argv[2:]): os.abort()\n"
                       "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    wrapper.chmod(0o755)
    inv = tmp_path / "devices.toml"
    inv.write_text(f'[devices.box]\ntransport = "local"\npython = "{wrapper}"\n')
    res = CliRunner().invoke(main, ["bench", str(tiny_artifact), "--device", "box", "--inventory", str(inv),
                                    "--runtime", "onnxruntime", "--files-per-agent", "8", "--results",
                                    str(tmp_path / "one.jsonl"), "--warmup", "1", "--min-runs", "3",
                                    "--min-seconds", "0"])
    assert res.exit_code == 0, res.output
    one = ResultsFile(tmp_path / "one.jsonl").records()
    assert [r["status"] for r in one] == ["ok", "ok"]
    assert [r["process_index"] for r in one] == [0, 1]  # both files in one agent process
    assert one[0]["peak_rss_mb"] and one[1]["peak_rss_mb"] is None  # a process's high-water mark is the first file's
    recs = bench([tiny_artifact, crashing], ["box"], tmp_path / "r.jsonl", inventory=inv, runtimes=["onnxruntime"],
                 cfg=TimingConfig(warmup=1, min_runs=3, min_seconds=0, files_per_agent=8))
    by_folder = {}
    for r in recs:
        by_folder.setdefault(Path(r["artifact"]).name, []).append(r)
    assert [r["status"] for r in by_folder["crashing"]] == ["error", "error"]
    assert all("the agent failed" in r["error"] for r in by_folder["crashing"])
    ok = by_folder[tiny_artifact.name]
    assert [r["status"] for r in ok] == ["ok", "ok"] and all(len(r["samples_ms"]) >= 3 for r in ok)
    assert [r["process_index"] for r in ok] == [0, 0]  # timed again, each alone, after the shared agent died


def test_compare_cli(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "tiny", "--formats", "tflite", "--precision", "int8", "--out", str(out),
            "--json", str(tmp_path / "rows.json"), "--warmup", "1", "--min-runs", "5", "--min-seconds", "0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 1 and rows[0]["mac_ratio"] > 5 and rows[0]["latency_ratio"] > 0
    assert "latency ratio" in res.output and "MAC ratio" in res.output
    res = CliRunner().invoke(main, args)  # reuses the artifacts and the results
    assert res.exit_code == 0 and "reusing" in res.output
