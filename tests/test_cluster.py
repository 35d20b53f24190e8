"""edgeconv on a real Ray cluster started here on 127.0.0.1: a head node (device `local`) and
a second node process (the emulated arm64 device and an ssh board through the test sshd),
each node one `ray start --block` child with its own temp dir, killed with all its processes
at the end. Benchmarks across the three devices, each record made on the node that holds its
device; device check; a sweep of four tiny variants and its resume; a node killed mid-run;
an address where no cluster answers."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgeconv.benchmark import ResultsFile, TimingConfig, bench, completed

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.cluster
FAST = TimingConfig(warmup=1, min_runs=3, min_seconds=0, max_seconds=30)
RAY = Path(sys.executable).with_name("ray")
# Node flags that keep two nodes (and parallel test runs) on one machine out of each other's way:
# OS-chosen ports for everything that has a fixed default, no dashboard, no usage report.
NODE_FLAGS = ["--num-cpus=1", f"--object-store-memory={80 << 20}", "--num-gpus=0", "--min-worker-port=0",
              "--max-worker-port=0", "--dashboard-agent-listen-port=0", "--include-log-monitor=false",
              "--disable-usage-stats"]
NODE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray turns token authentication on for `ray start --head` when ~/.ray/auth_token exists (a
    # local ray.init() writes one); a test cluster on 127.0.0.1 runs without, whatever is there.
    "RAY_AUTH_MODE": "disabled",
    "RAY_worker_niceness": "0",  # Ray's default 15 would deprioritise the benchmarks
    # The GCS (head) declares a killed node dead after ~3 s instead of ~14 s.
    "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3",
}
START_TIMEOUT = 90.0


def _die_with_parent():  # in the child, between fork and exec: the node goes when the test process goes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _proc_table() -> dict[int, tuple[int, str]]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            rest = stat.read_text().rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (int(rest[1]), rest[0])
        except (OSError, IndexError, ValueError):
            continue
    return out


def _live_tree(pid: int) -> set[int]:
    t = _proc_table()
    found, frontier = set(), {pid}
    while frontier:
        found |= frontier
        frontier = {p for p, (pp, _) in t.items() if pp in frontier} - found
    return {p for p in found if p in t and t[p][1] != "Z"}


class Node:
    """One Ray node: a `ray start --block` child process, the parent of the node's daemons."""

    def __init__(self, name: str, args: list[str], temp_dir: Path):
        self.name, self.temp_dir = name, temp_dir
        (temp_dir / "tmp").mkdir(parents=True)
        self.log = temp_dir / "ray-start.log"
        # TMPDIR: what the node's workers leave behind when it is killed (actor caches, the agent's
        # work folders) goes with the cluster's folder
        self.proc = subprocess.Popen(
            [str(RAY), "start", "--block", f"--temp-dir={temp_dir}", f"--labels=edgeconv.node={name}", *args,
             *NODE_FLAGS], env={**os.environ, **NODE_ENV, "TMPDIR": str(temp_dir / "tmp")},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            preexec_fn=_die_with_parent)
        ready = threading.Event()

        def pump():  # keep draining: a node writing into a full pipe would stop
            with open(self.log, "w") as f:
                for line in self.proc.stdout:
                    f.write(line)
                    f.flush()
                    if "will now block forever" in line:
                        ready.set()
        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ray start {name} failed:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Crash the node: SIGKILL every live process below `ray start`, raylet first (as when a
        host dies), then wait until none is left. Workers sit in process groups of their own,
        so a process-group kill would miss them."""
        pids = _live_tree(self.proc.pid) if self.proc.poll() is None else set()

        def order(p):
            try:
                return Path(f"/proc/{p}/comm").read_text().strip() not in ("raylet", "gcs_server", "ray")
            except OSError:
                return True
        for p in sorted(pids, key=order):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            t = _proc_table()
            if not any(p in t and t[p][1] != "Z" for p in pids):
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name}: processes left after SIGKILL")


class LocalCluster:
    def __init__(self):
        # short: Ray puts its unix sockets under it, and their paths may not exceed 107 bytes
        self.base = Path(tempfile.mkdtemp(prefix="rayt-"))
        self.nodes: dict[str, Node] = {}
        self.address = ""

    def add(self, name: str, resources: dict) -> Node:
        args = [f"--resources={json.dumps(resources)}"]
        if not self.nodes:
            args = ["--head", "--port=0", "--include-dashboard=false", *args]
        else:
            args = [f"--address={self.address}", *args]
        node = Node(name, args, self.base / name)
        self.nodes[name] = node
        if not self.address:
            port = (node.temp_dir / "ray_current_cluster").read_text().strip().rsplit(":", 1)[1]
            self.address = f"127.0.0.1:{port}"  # the GCS listens on every interface
        return node

    def node_id(self, name: str) -> str:
        """The id of the live node labelled ``name`` (waits for it to register)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ids = [n["NodeID"] for n in ray.nodes()
                   if n["Alive"] and (n.get("Labels") or {}).get("edgeconv.node") == name]
            if ids:
                return ids[0]
            time.sleep(0.2)
        raise AssertionError(f"node {name} is not in the cluster")

    def wait_dead(self, node_id: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
                return
            time.sleep(0.2)
        raise AssertionError(f"the GCS still lists node {node_id[:12]} as alive after {timeout} s")

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):  # the head (GCS) last
            node.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    from edgeconv import cluster as ec
    c = LocalCluster()
    try:
        t0 = time.monotonic()
        c.add("head", {"edgeconv_device:local": 1})
        c.add("node2", {"edgeconv_device:qemu-arm64": 1, "edgeconv_device:board": 1})
        ec.connect(c.address)
        print(f"\ncluster of 2 nodes up and joined in {time.monotonic() - t0:.1f} s at {c.address}")
        yield c
    finally:
        ray.shutdown()
        c.stop()


@pytest.fixture
def lab(sshd, tmp_path):
    """An inventory: the ssh board and the emulated arm64 device both driven by node2."""
    inv = sshd.inventory(tmp_path / "devices.toml")
    with open(inv, "a") as f:
        f.write('node = "node2"\n\n[devices.qemu-arm64]\ntransport = "qemu-arm64"\n'
                'runtimes = ["onnxruntime", "litert"]\nnode = "node2"\n')
    return inv


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # a torn line fails here


def test_bench_across_nodes(cluster, lab, arm64_python, tiny_artifact, tmp_path):
    results = tmp_path / "results.jsonl"
    recs = bench([tiny_artifact], ["local", "qemu-arm64", "board"], results, inventory=lab, precisions=["int8"],
                 cfg=FAST, cluster=cluster.address)
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs), [r["error"] for r in recs]
    holder = {"local": cluster.node_id("head"), "qemu-arm64": cluster.node_id("node2"),
              "board": cluster.node_id("node2")}
    for r in recs:
        print(f"{r['device']['name']:10} {r['file']:18} made on node {r['node']['id'][:12]} "
              f"({r['node']['hostname']}, {r['node']['ip']})")
        assert r["node"]["id"] == holder[r["device"]["name"]]
        assert r["node"]["ip"] and r["node"]["hostname"]
        assert r["artifact"] == str(tiny_artifact) and len(r["samples_ms"]) >= 3
    by = {r["device"]["name"]: r for r in recs}
    assert by["qemu-arm64"]["device"]["arch"] == "aarch64" and by["qemu-arm64"]["device"]["emulated"]
    assert by["board"]["device"]["transport"] == "ssh"
    assert len(_lines(results)) == 6
    # Again: everything is done, so nothing runs (the resume rules of a run without a cluster).
    assert bench([tiny_artifact], ["local", "qemu-arm64", "board"], results, inventory=lab, precisions=["int8"],
                 cfg=FAST, cluster=cluster.address) == []


def test_device_check_lists_every_device_with_its_node(cluster, lab):
    from click.testing import CliRunner

    from edgeconv.cli import main
    with open(lab, "a") as f:  # a device whose host never joined the cluster
        f.write('\n[devices.pi9]\ntransport = "ssh"\nhost = "192.0.2.99"\nnode = "lab-host-9"\n')
    res = CliRunner().invoke(main, ["device", "check", "--cluster", cluster.address, "--inventory", str(lab),
                                    "--json"])
    assert res.exit_code == 1, res.output  # pi9 does not answer
    rows = {r["device"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"board", "qemu-arm64", "pi9", "local"}
    for name, node in (("board", "node2"), ("qemu-arm64", "node2"), ("local", "head")):
        assert rows[name]["answers"] and rows[name]["node"]["id"] == cluster.node_id(node), rows[name]
    assert rows["qemu-arm64"]["facts"]["device"]["arch"] == "aarch64"
    assert not rows["pi9"]["answers"] and "no live node declares edgeconv_device:pi9" in rows["pi9"]["error"]
    one = CliRunner().invoke(main, ["device", "check", "pi9", "--cluster", cluster.address, "--inventory", str(lab)])
    assert one.exit_code == 1 and "edgeconv_device:pi9" in one.stdout and "lab-host-9" in one.stdout


SWEEP = """
[train]
train_epochs = 1
[export]
formats = ["onnx"]
[sweep]
models = ["tiny"]
widths = [0.5, 1.0]
input_sizes = [32]
recipes = [{calib_count = 16}, {calib_count = 16, method = "minmax"}]
[bench]
cluster = "ADDRESS"
"""


def test_sweep_of_four_variants_then_resume(cluster, tmp_path):
    from edgeconv.cluster import sweep
    from edgeconv.pipeline import RunConfig
    cfg_path = tmp_path / "sweep.toml"
    cfg_path.write_text(SWEEP.replace("ADDRESS", cluster.address))
    cfg = RunConfig.from_toml(cfg_path)
    root = tmp_path / "run" / "sweep"
    t0 = time.monotonic()
    summary = sweep(cfg, root, cfg.cluster, log=print)
    print(f"4 variants on 2 nodes x 1 CPU: {time.monotonic() - t0:.1f} s")
    assert len(summary["ran"]) == 4 and not summary["failed"]
    nodes = {cluster.node_id("head"), cluster.node_id("node2")}
    for vid in summary["ran"]:
        d = root / vid
        info = json.loads((d / "variant.json").read_text())
        assert info["node"]["id"] in nodes and info["verify_ok"] and info["check"] in ("ok", "int8 drop above 1.0 points")
        assert {"model_fp32.onnx", "model_int8.onnx", "manifest.json", "verify.json", "accuracy.json"} <= \
            {p.name for p in d.iterdir()}
        manifest = json.loads((d / "manifest.json").read_text())
        assert manifest["complete"] and manifest["quant"]["calib_count"] == 16
        assert info["train"]["eval_count"] == 500  # trained on the digits, so its int8 check means something
        accuracy = json.loads((d / "accuracy.json").read_text())
        assert {r["runtime"] for r in accuracy["rows"]} == {"onnxruntime"}
    assert {json.loads((root / v / "variant.json").read_text())["width"] for v in summary["ran"]} == {0.5, 1.0}
    assert not list(root.glob(".*"))
    # An interrupted sweep: one variant never arrived, another was half written.
    gone = sorted(summary["ran"])[0]
    shutil.rmtree(root / gone)
    (root / f".arriving-{gone}-x").mkdir()
    again = sweep(cfg, root, cfg.cluster, log=print)
    assert again["ran"] == [gone] and len(again["skipped"]) == 3
    assert (root / gone / "model_int8.onnx").exists() and not list(root.glob(".arriving-*"))


def test_node_killed_mid_run(cluster, tiny_artifact, tmp_path):
    """The node driving `box` dies after box's first run: its other runs become error records
    naming that node, `local` on the head finishes, nothing written is lost, and once a node
    declaring box is back a rerun runs only box's missing runs."""
    node3 = cluster.add("node3", {"edgeconv_device:box": 1})
    lost_id = cluster.node_id("node3")
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.box]\ntransport = "local"\nnode = "node3"\n')
    results = tmp_path / "results.jsonl"
    slow = TimingConfig(warmup=1, min_runs=3, min_seconds=1.5, max_seconds=30)
    out = {}
    run = threading.Thread(target=lambda: out.setdefault("recs", bench(
        [tiny_artifact], ["local", "box"], results, inventory=inv, precisions=["int8"], threads=[1, 2], cfg=slow,
        cluster=cluster.address)))
    run.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            r["device"]["name"] == "box" for r in ResultsFile(results).records()):
        time.sleep(0.2)
    before = results.read_bytes()
    node3.kill()
    run.join(timeout=180)
    assert not run.is_alive()
    recs = out["recs"]
    box = [r for r in recs if r["device"]["name"] == "box"]
    local = [r for r in recs if r["device"]["name"] == "local"]
    assert [r["status"] for r in box] == ["ok", "error", "error", "error"], [r["error"] for r in box]
    for r in box[1:]:
        assert "lost node" in r["error"] and lost_id[:12] in r["error"] and r["node"]["id"] == lost_id
    assert len(local) == 4 and all(r["status"] == "ok" for r in local)
    lines = _lines(results)
    assert results.read_bytes().startswith(before) and len(lines) == 8
    cluster.wait_dead(lost_id)
    cluster.add("node3b", {"edgeconv_device:box": 1})
    inv.write_text('[devices.box]\ntransport = "local"\nnode = "node3b"\n')
    again = bench([tiny_artifact], ["local", "box"], results, inventory=inv, precisions=["int8"], threads=[1, 2],
                  cfg=FAST, cluster=cluster.address)
    assert sorted((r["device"]["name"], r["status"]) for r in again) == [("box", "ok")] * 3
    assert {r["node"]["id"] for r in again} == {cluster.node_id("node3b")}
    assert len(completed(_lines(results))) == 8


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_address_that_does_not_answer(tiny_artifact, tmp_path):
    from click.testing import CliRunner

    from edgeconv.cli import main
    from edgeconv.cluster import ClusterError
    address = f"127.0.0.1:{_dead_port()}"
    results = tmp_path / "r.jsonl"
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at {address}"):
        bench([tiny_artifact], ["local"], results, cluster=address)
    assert time.monotonic() - t0 < 10 and not results.exists()
    res = CliRunner().invoke(main, ["bench", str(tiny_artifact), "--cluster", address, "--results", str(results)])
    assert res.exit_code == 2 and "no Ray cluster answers" in res.output and not results.exists()
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[bench]\ncluster = "{address}"\n')
    res = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "no Ray cluster answers" in res.output
    assert not (tmp_path / "run").exists()  # before any stage


def test_inventory_and_placement_errors(cluster, tiny_artifact, tmp_path):
    """Wrong lab descriptions are named before anything runs."""
    from edgeconv.cluster import ClusterError
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.pi]\ntransport = "ssh"\nhost = "10.0.0.2"\nkey = "keys/pi"\nnode = "lab-host-2"\n')
    with pytest.raises(ValueError, match="key = 'keys/pi' is relative, but the device is driven by node"):
        bench([tiny_artifact], ["pi"], tmp_path / "r.jsonl", inventory=inv)
    inv.write_text('[devices.board]\ntransport = "ssh"\nhost = "10.0.0.2"\nnode = "lab-host-2"\n')
    with pytest.raises(ClusterError, match="the inventory says node = 'lab-host-2', but edgeconv_device:board "
                                           "is declared by node node2"):
        bench([tiny_artifact], ["board"], tmp_path / "r.jsonl", inventory=inv, cluster=cluster.address)
    assert not (tmp_path / "r.jsonl").exists() or not (tmp_path / "r.jsonl").read_text()


@pytest.mark.parametrize("table, message", [
    ('[sweep]\nwidths = [0]\n', "[sweep] widths = [0]: a list of width multipliers > 0"),
    ('[sweep]\nmodels = ["resnet"]\n', "[sweep] models = ['resnet']: a list of zoo models"),
    ('[sweep]\nrecipes = [{}, {methd = "minmax"}]\n', "[sweep] recipes[1]: unknown quantization option(s) ['methd']"),
    ('[sweep]\nsizes = [32]\n', "unknown key 'sizes'; allowed keys: models, widths, input_sizes, recipes (in [sweep])"),
    ('[bench]\ncluster = "head-node"\n', "cluster address 'head-node': give auto or the head's HOST:PORT"),
])
def test_sweep_and_cluster_config_errors(tmp_path, table, message):
    from edgeconv.pipeline import RunConfig
    cfg = tmp_path / "bad.toml"
    cfg.write_text(table)
    with pytest.raises(ValueError) as e:
        RunConfig.from_toml(cfg)
    assert message in str(e.value)
