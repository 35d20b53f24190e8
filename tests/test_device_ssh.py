"""The ssh transport against a real OpenSSH server on 127.0.0.1 (tests/conftest.py): real
benchmarks through it, refused unknown and changed host keys, and a connection killed in
the middle of a run."""
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgeconv.benchmark import ResultsFile, TimingConfig, bench, completed
from edgeconv.device import TransportError
from edgeconv.device.inventory import get_device
from edgeconv.device.ssh import HostKeyError


pytestmark = pytest.mark.ssh
FAST = TimingConfig(warmup=1, min_runs=3, min_seconds=0, max_seconds=30)


def _jsonl(path):
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line must parse: a torn line fails here


def test_bench_over_ssh(sshd, tiny_artifact, tmp_path):
    inv = sshd.inventory(tmp_path / "devices.toml")
    results = tmp_path / "r.jsonl"
    recs = bench([tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], cfg=FAST)
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), [r["error"] for r in recs]
    for r in recs:
        assert len(r["samples_ms"]) >= 3 and r["load_ms"] > 0 and r["first_ms"] > 0
        assert r["device"]["name"] == "board" and r["device"]["arch"] and r["device"]["cores"]
        assert r["runtime_version"] and r["sha256"] and r["peak_rss_mb"] > 0
    # Again: nothing runs (resume), and nothing is pushed again (sha256 on the device).
    assert bench([tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], cfg=FAST) == []
    with get_device("board", inv).open() as tr:
        tr.push([tiny_artifact / "model_int8.onnx", tiny_artifact / "manifest.json"])
        assert tr.pushed == 0
        workdir = tr.workdir
        rc, out, _ = tr.run(["echo", "a b; $(touch /tmp/pwned)"], timeout=30)
        assert rc == 0 and out.strip() == "a b; $(touch /tmp/pwned)"  # quoted: no shell expansion
    assert not Path(workdir).exists()  # cleanup removed the per-run work folder
    assert len(_jsonl(results)) == 2


def test_device_check_over_ssh(sshd, tmp_path):
    from click.testing import CliRunner

    from edgeconv.cli import main
    inv = sshd.inventory(tmp_path / "devices.toml")
    res = CliRunner().invoke(main, ["device", "check", "board", "--inventory", str(inv), "--json"])
    assert res.exit_code == 0, res.output
    facts = json.loads(res.output)
    assert facts["device"]["arch"] == os.uname().machine and facts["runtimes"]["onnxruntime"]


def test_unknown_host_key_refused(sshd, tiny_artifact, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = sshd.inventory(tmp_path / "devices.toml", known_hosts=empty)
    with pytest.raises(HostKeyError) as e:
        get_device("board", inv).open()
    msg = str(e.value)
    assert "not in" in msg and f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in msg
    assert empty.read_text() == ""  # never accepted silently
    results = tmp_path / "r.jsonl"
    recs = bench([tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], cfg=FAST)
    assert recs and all(r["status"] == "error" and "host key" in r["error"] for r in recs)
    assert not completed(_jsonl(results))


def test_changed_host_key_refused(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    inv = sshd.inventory(tmp_path / "devices.toml", known_hosts=kh)
    with pytest.raises(HostKeyError, match="CHANGED") as e:
        get_device("board", inv).open()
    assert "ssh-keygen -R" in str(e.value) and "ssh-keyscan" in str(e.value)


def test_unreachable_port(tmp_path):
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.gone]\ntransport = "ssh"\nhost = "127.0.0.1"\nport = 9\nconnect_timeout = 3\n')
    with pytest.raises(TransportError, match="cannot reach"):
        get_device("gone", inv).open()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):  # the process ended meanwhile
        return ""


def _running_agents(sshd) -> list[int]:
    """The agent processes sshd runs, once there are any (the agent started on the "device")."""
    agents, deadline = [], time.time() + 60
    while time.time() < deadline and not agents:
        time.sleep(0.5)
        agents = [p for p in sshd.sessions() if "agent.py" in _cmdline(p)]
    assert agents, "the agent never started over ssh"
    return agents


def test_connection_killed_mid_run(sshd, tiny_artifact, tmp_path):
    cache = tmp_path / "device-cache"
    inv = sshd.inventory(tmp_path / "devices.toml", workdir=cache)
    results = tmp_path / "r.jsonl"
    first = bench([tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], cfg=FAST)
    assert all(r["status"] == "ok" for r in first)
    long = TimingConfig(warmup=1, min_runs=3, min_seconds=20, max_seconds=60)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("recs", bench(
        [tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], threads=[2], cfg=long)))
    t.start()
    agents = _running_agents(sshd)
    time.sleep(2)
    sshd.kill_all()
    t.join(timeout=120)
    for pid in agents:  # the orphaned agent on this same machine
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    recs = out["recs"]
    assert recs and all(r["status"] == "error" for r in recs)
    assert "connection" in recs[0]["error"] and "lost" in recs[0]["error"]
    lines = _jsonl(results)  # valid JSONL, earlier ok records kept
    assert [r["status"] for r in lines[:2]] == ["ok", "ok"] and len(lines) == 2 + len(recs)
    sshd.start()
    again = bench([tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], threads=[1, 2], cfg=FAST)
    assert sorted((r["threads"], r["status"]) for r in again) == [(2, "ok"), (2, "ok")]  # resumed: t1 not rerun
    assert len(completed(_jsonl(results))) == 4


def test_lost_link_stops_the_agent_and_the_next_connection_cleans_up(sshd, tiny_artifact, tmp_path):
    """A link that drops without the device dying: the agent notices its connection is gone and
    stops (it does not keep timing for minutes), and the next connection from this host removes
    the work folder the lost session could not."""
    cache = tmp_path / "device-cache"
    inv = sshd.inventory(tmp_path / "devices.toml", workdir=cache)
    results = tmp_path / "r.jsonl"
    long = TimingConfig(warmup=1, min_runs=3, min_seconds=40, max_seconds=60)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("recs", bench(
        [tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], runtimes=["onnxruntime"], cfg=long)))
    t.start()
    agents = _running_agents(sshd)
    time.sleep(1)
    sshd.kill_all(keep=agents)  # the network goes away: sshd dies, the agent (on the "device") does not
    t0 = time.time()
    while time.time() - t0 < 15 and any(_cmdline(p) for p in agents):
        time.sleep(0.2)
    assert not any(_cmdline(p) for p in agents), "the agent kept running after its connection was lost"
    t.join(timeout=120)
    assert out["recs"] and all(r["status"] == "error" for r in out["recs"])
    left = [p for p in cache.glob("run.*")]
    assert left, "the lost session's work folder should still be there (the device could not be reached)"
    sshd.start()
    again = bench([tiny_artifact], ["board"], results, inventory=inv, precisions=["int8"], runtimes=["onnxruntime"],
                  cfg=FAST)
    assert [r["status"] for r in again] == ["ok"], [r.get("error") for r in again]
    assert not any(p.exists() for p in left), "the next connection did not remove the lost session's folder"
    assert not list(cache.glob("run.*"))
