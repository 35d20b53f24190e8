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
