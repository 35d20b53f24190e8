"""Transports: how the host reaches a device to copy files to it and run the agent there.

A ``Transport`` (``push``, ``run``, ``pull``, ``cleanup``) registers itself by name:
``local`` (this machine), ``qemu-arm64`` (the emulated arm64 device of
``bench_device/setup_arm64.sh``), ``ssh`` (any Linux board), ``adb`` (Android phones).
Commands are argv lists; where a remote shell reads them (ssh, adb shell) every element
is quoted with ``shlex.quote``. Devices are named in an inventory file (see
``bench_device/devices.example.toml`` and ``inventory.py``).
"""
from __future__ import annotations

import shlex
from pathlib import Path

TRANSPORTS: dict[str, type] = {}
AGENT = Path(__file__).resolve().parent.parent.parent / "bench_device" / "agent.py"


class TransportError(RuntimeError):
    """The device cannot be reached or refused us (host key, missing tool, no device)."""


def register(cls):
    TRANSPORTS[cls.name] = cls
    return cls


def get_transport(name: str) -> type:
    _load()
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; known: {', '.join(sorted(TRANSPORTS))}")
    return TRANSPORTS[name]


def _load() -> None:
    from . import adb, local, qemu, ssh  # noqa: F401  (each registers itself)


def quote_argv(argv: list[str]) -> str:
    """One command line for a remote POSIX shell, each element quoted: the only safe way to
    pass an argv through ssh or adb shell."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class Transport:
    """The contract. ``push`` copies files to the device (only those that changed) and
    returns their paths there; ``run`` runs an argv in the per-run work folder and returns
    (rc, stdout, stderr); ``pull`` copies a file back; ``cleanup`` removes the work folder
    (called in ``finally``). ``python`` is the device's interpreter, ``agent`` the agent
    path there after ``push_agent``; ``native`` lists native benchmark binaries (adb)."""

    name = "?"
    default_timeout = 600.0

    def __init__(self, device):
        self.device = device
        self.python = device.python or "python3"
        self.agent: str | None = None
        self.native: dict[str, str] = dict(device.native or {})

    def push(self, local_files: list[Path], group: str | None = None) -> list[str]:
        raise NotImplementedError

    def run(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        raise NotImplementedError

    def pull(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass

    def push_agent(self) -> str:
        self.agent = self.push([AGENT], group="agent")[0]
        return self.agent

    def has_agent_python(self) -> bool:
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def model_runner(name: str, inventory: str | Path | None = None, threads: int = 1):
    """A callable ``(model_file, inputs NCHW float32) -> outputs`` that runs the file on device
    ``name`` through the agent (``agent.py MODEL --inputs x.npy --outputs y.npy``): what
    ``edgeconv check --device`` uses to score int8 on the device's own kernels."""
    import tempfile
    from pathlib import PurePosixPath

    import numpy as np

    from .inventory import get_device
    device = get_device(name, inventory)

    def run(model_file: Path, x: np.ndarray) -> np.ndarray:
        model_file = Path(model_file)
        with tempfile.TemporaryDirectory() as tmp, device.open() as tr:
            if not tr.has_agent_python():
                raise TransportError(f"device {name!r} has no Python for the agent; running given inputs "
                                     "needs one (set 'python' in its inventory entry)")
            tr.push_agent()
            remote_model = tr.push([model_file, model_file.parent / "manifest.json"])[0]
            inputs = Path(tmp) / f"inputs-{model_file.stem}.npy"
            np.save(inputs, np.ascontiguousarray(x, np.float32))
            remote_inputs = tr.push([inputs], group="inputs")[0]
            remote_outputs = str(PurePosixPath(remote_inputs).parent / f"outputs-{model_file.stem}.npy")
            rc, out, err = tr.run([tr.python, tr.agent, remote_model, "--threads", str(threads),
                                   "--inputs", remote_inputs, "--outputs", remote_outputs])
            if rc != 0:
                raise TransportError(f"agent on {name} failed (rc {rc}): {(err or out).strip()[-600:]}")
            local = Path(tmp) / "outputs.npy"
            tr.pull(remote_outputs, local)
            return np.load(local)

    return run
