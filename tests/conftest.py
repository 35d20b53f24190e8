"""Shared fixtures: a real sshd on 127.0.0.1 with its own keys, the emulated arm64 device,
a small exported artifact of the `tiny` model, and a run folder of `edgeconv run` on tiny and
its twin trained on digits."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Under pytest-xdist, each worker (and all it starts) runs on cores of its own: torch, the
    runtimes and the trainer size their thread pools to the cores a process may use, and two
    workers each spinning a pool over every core would slow each other several times over."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus, i = sorted(os.sched_getaffinity(0)), int(worker.removeprefix("gw"))
    mine = cpus[i % count::count] if len(cpus) >= count else [cpus[i % len(cpus)]]
    os.sched_setaffinity(0, mine)
    asked = os.environ.get("OMP_NUM_THREADS", "")
    os.environ["OMP_NUM_THREADS"] = str(min(len(mine), int(asked)) if asked.isdigit() and int(asked) > 0 else len(mine))


# test files that share a session fixture only one of them makes (the others wait for it): kept
# on one xdist worker, so no worker waits idle while another makes it
SHARED_FIXTURE_FILES = {"test_run.py": "digits_run", "test_accuracy.py": "digits_run"}


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist's: unknown without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadfile`` (make test) each test file runs on one worker, except the files
    of ``SHARED_FIXTURE_FILES``, which run together on one; other modes are xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            file = nodeid.split("::", 1)[0]
            return SHARED_FIXTURE_FILES.get(Path(file).name, file)
    return ByFile(config, log)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_openssh() -> None:
    if shutil.which("sshd") or Path("/usr/sbin/sshd").exists():
        if shutil.which("ssh") and shutil.which("ssh-keygen"):
            return
    if os.geteuid() != 0:
        pytest.skip("openssh-server/openssh-client missing and not root to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"], check=True, env=env)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class SSHD:
    root: Path
    port: int
    user_key: Path
    host_key: Path
    known_hosts: Path
    config: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "ab"))
        deadline = time.time() + 15
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-800:]}")
            time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

    def sessions(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def kill_all(self, keep=()) -> None:
        """Kill the daemon and every session it runs (a dropped link, as the host sees it), except
        the processes in ``keep`` (what runs on the "device" when only the network goes away)."""
        if self.proc is None:
            return
        for pid in [p for p in [self.proc.pid, *descendants(self.proc.pid)] if p not in keep]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def inventory(self, path: Path, name: str = "board", known_hosts: Path | None = None,
                  workdir: Path | None = None) -> Path:
        path.write_text(
            f'[devices.{name}]\ntransport = "ssh"\nhost = "127.0.0.1"\nport = {self.port}\nuser = "root"\n'
            f'key = "{self.user_key}"\nknown_hosts = "{known_hosts or self.known_hosts}"\n'
            f'python = "{sys.executable}"\nworkdir = "{workdir or self.root / "device-cache"}"\n'
            f'connect_timeout = 5\n')
        return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (a free port) with its own host key, a user key in
    its authorized_keys and a known_hosts holding its host key; the "device" is this host."""
    _ensure_openssh()
    if os.geteuid() != 0:
        pytest.skip("the sshd fixture runs sshd as root")
    root = tmp_path_factory.mktemp("sshd")
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    subprocess.run([*keygen, "-f", str(root / "host_key")], check=True)
    subprocess.run([*keygen, "-f", str(root / "user_key")], check=True)
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    port = _free_port()
    host_pub = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
        f"PidFile {root / 'sshd.pid'}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        # bash skips ~/.bashrc for a command run by sshd at shell level 2 or more: the test
        # device's sessions do not depend on this machine's shell set-up (a pyenv init there
        # rehashes its shims on every login, minutes under load)
        f"SetEnv SHLVL=1\n")
    server = SSHD(root, port, root / "user_key", root / "host_key", root / "known_hosts", config)
    server.start()
    yield server
    server.kill_all()


@pytest.fixture(scope="session")
def arm64_python():
    """The emulated arm64 device (bench_device/setup_arm64.sh; ~2 s when already built)."""
    if shutil.which("bash") is None:
        pytest.skip("bash missing")
    p = subprocess.run(["bash", str(REPO / "bench_device" / "setup_arm64.sh"), "--no-check"],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        pytest.fail(f"setup_arm64.sh failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    py = Path(os.environ.get("EDGECONV_CACHE") or REPO / ".cache") / "arm64" / "bin" / "python3"
    assert py.exists()
    return py


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """The `tiny` model (32x32) exported to ONNX and TFLite, fp32 and int8."""
    import torch

    from edgeconv.data import load_data
    from edgeconv.exporters import export
    from edgeconv.zoo import create_model
    model = create_model("tiny")
    torch.manual_seed(0)
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=32)
    art = export(model, calib=calib.x, out=tmp_path_factory.mktemp("tiny"), formats=("onnx", "tflite"),
                 calib_info=calib.describe())
    assert not art.errors, art.errors
    return art.path


DIGITS_RUN = """
[model]
model = "tiny"
[train]
train_epochs = 4
[export]
formats = ["onnx", "tflite", "executorch"]
[bench]
devices = ["local"]
warmup = 2
min_runs = 10
min_seconds = 0.5
"""


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """`edgeconv run` of tiny and its twin (trained on digits for 4 epochs, exported to every
    format, checked, benched), made the hard way: killed (SIGKILL) once its bench stage has
    written two records, then run again to the end. Returns the folder, what the kill left
    (run.json, record count, mtimes of a checkpoint and an export) and the second run's output.
    Readers that write into it work on a copy. Under pytest-xdist (make test) the workers share
    one: the first to need it makes it, another waits for it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _digits_run(tmp_path_factory.mktemp("run"))
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent   # the workers' common base folder
    made = shared / "digits_run.json"
    with FileLock(str(shared / "digits_run.lock")):
        if not made.exists():
            out, killed, output = _digits_run(shared / "digits_run")
            made.write_text(json.dumps({"out": str(out), "killed": killed, "output": output}))
        doc = json.loads(made.read_text())
    return Path(doc["out"]), doc["killed"], doc["output"]


def _digits_run(d: Path):
    from click.testing import CliRunner

    from edgeconv.cli import main
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "fast.toml"
    cfg.write_text(DIGITS_RUN)
    out = d / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgeconv", "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 600
    while not (results.exists() and results.read_text().count("\n") >= 2):
        assert proc.poll() is None, "the run ended before the bench stage"
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the run wrote no two bench records in 600 s")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = {"state": json.loads((out / "run.json").read_text()),
              "records": len([line for line in results.read_text().splitlines() if line.strip()]),
              "mtimes": {p: (out / p).stat().st_mtime for p in ("checkpoints/model.pt",
                                                               "artifacts/model/model_int8.onnx")}}
    res = CliRunner().invoke(main, ["run", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, killed, res.output
