"""Transports, and the agent session every device verb goes through.

A ``Transport`` (``push``, ``run``, ``pull``, ``cleanup``) registers itself by name: ``local``
(this machine), ``qemu-arm64`` (the emulated arm64 device of ``bench_device/setup_arm64.sh``),
``ssh`` (any Linux board), ``adb`` (Android phones). Commands are argv lists; where a remote
shell reads them (ssh, adb shell) every element is quoted with ``shlex.quote``. Devices are
named in an inventory file (see ``bench_device/devices.example.toml`` and ``inventory.py``).

``AgentSession`` is the one sequence that talks to a device: open the transport, copy the
agent there, then ``facts()``, ``bench(files, ...)`` (timed runs, several files in one agent
process) or ``run_inputs(file, x)`` (outputs for given inputs), and clean up however it ends.
Nothing here imports torch.
"""
from __future__ import annotations

import json
import shlex
from importlib import resources
from pathlib import Path

TRANSPORTS: dict[str, type] = {}
AGENT = Path(str(resources.files("bench_device") / "agent.py"))


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
    keeps_stdin = False   # run() holds the command's stdin open for as long as the link lives

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


def last_json(text: str):
    """The last line of ``text`` that is a JSON document (the agent prints one), or None."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


class AgentSession:
    """A device opened for a block of work: ``with AgentSession("pi5", "devices.toml") as s:``.

    The transport is opened and the agent copied there on entry, the work folder removed on exit
    whatever happened. A device without a Python (a phone with only native tools) supports
    ``bench`` through those tools and ``facts`` through ``getprop``/``uname``."""

    def __init__(self, device, inventory=None):
        from .inventory import Device, get_device
        self.device = device if isinstance(device, Device) else get_device(device, inventory)
        self.transport = None
        self._remote: dict[Path, str] = {}

    def __enter__(self) -> AgentSession:
        self.transport = self.device.open()
        try:
            if self.transport.has_agent_python():
                self.transport.push_agent()
        except BaseException:
            self.transport.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.transport is not None:
            self.transport.cleanup()
            self.transport = None

    @property
    def has_python(self) -> bool:
        return self.transport.has_agent_python()

    def _agent(self, args: list[str], timeout: float | None = None) -> dict:
        tr = self.transport
        if tr.keeps_stdin:
            args = [*args, "--exit-with-stdin"]
        rc, out, err = tr.run([tr.python, tr.agent, *args], timeout=timeout or tr.default_timeout)
        doc = last_json(out)
        if rc != 0 or doc is None:
            raise TransportError(f"device {self.device.name!r}: the agent failed (rc {rc}): "
                                 f"{(err or out).strip()[-600:]}")
        return doc

    def push_model(self, path: Path) -> str:
        """Copy a model file and the manifest beside it (the agent reads I/O layout and dtype
        from it); returns the file's path on the device."""
        path = Path(path)
        if path not in self._remote:
            files = [path] + ([path.parent / "manifest.json"] if (path.parent / "manifest.json").exists() else [])
            self._remote[path] = self.transport.push(files)[0]
        return self._remote[path]

    def facts(self) -> dict:
        """What the agent reports of the device: arch, CPU, cores, governor, runtimes present..."""
        tr = self.transport
        if not self.has_python:
            facts = {"device": {"name": self.device.name}, "runtimes": {}, "native": tr.native}
            facts["device"]["cpu"] = tr.run(["getprop", "ro.product.model"], timeout=30)[1].strip()
            facts["device"]["arch"] = tr.run(["uname", "-m"], timeout=30)[1].strip()
            return facts
        return self._agent(["--facts"])

    def bench(self, paths: list[Path], runtime: str, threads: int, timing) -> list[dict]:
        """Timed runs of the files ``paths`` (``timing``: warmup, min_runs, min_seconds, max_seconds,
        affinity, sustained_seconds, sample_every), one after another in one agent process: per
        file, the agent's document with that file's record, or for a native tool its parsed
        timing fields. A failed file is an error record; an agent that dies (a runtime crashing
        the process) raises ``TransportError`` and the records of its files are lost."""
        paths = [Path(p) for p in paths]
        if not self.has_python and getattr(timing, "sustained_seconds", 0):
            raise TransportError(f"device {self.device.name!r} has no Python for the agent, and a native benchmark "
                                 "tool cannot sample temperature and clocks over a sustained run; run --sustained "
                                 "on a device with Python (or install python3 on it)")
        remotes = [self.push_model(p) for p in paths]
        if not self.has_python:
            return [self._native(p, r, threads, timing) for p, r in zip(paths, remotes)]
        args = [*remotes, "--runtime", runtime, "--threads", str(threads), "--warmup", str(timing.warmup),
                "--min-runs", str(timing.min_runs), "--min-seconds", str(timing.min_seconds),
                "--max-seconds", str(timing.max_seconds)]
        if timing.affinity:
            args += ["--affinity", timing.affinity]
        if getattr(timing, "sustained_seconds", 0):
            args += ["--sustained-seconds", str(timing.sustained_seconds),
                     "--sample-every", str(timing.sample_every)]
        if getattr(timing, "op_profile_runs", 0):
            args += ["--op-profile-runs", str(timing.op_profile_runs)]
        longest = max(timing.max_seconds, getattr(timing, "sustained_seconds", 0) or 0)
        doc = self._agent(args, timeout=len(paths) * longest * 2 + self.transport.default_timeout / 4)
        recs = doc.pop("records", [])
        if [r.get("path") for r in recs] != remotes:
            raise TransportError(f"device {self.device.name!r}: the agent returned records for "
                                 f"{[r.get('path') for r in recs]}, not for {remotes}")
        return [{**doc, "records": [r]} for r in recs]

    def _native(self, path: Path, remote: str, threads: int, timing) -> dict:
        from ..artifact import FORMATS
        from .native import PARSERS, native_argv
        fmt = next(f for f in FORMATS.values() if f.suffix == Path(path).suffix)
        tool = fmt.native_tool
        binary = self.transport.native.get(tool)
        if not binary:
            raise TransportError(f"device {self.device.name!r} has no Python for the agent and no native "
                                 f"`{tool}` in its inventory entry (native.{tool} = \"/data/local/tmp/{tool}\")")
        rc, out, err = self.transport.run(native_argv(tool, binary, remote, threads, timing.warmup, timing.min_runs,
                                                      timing.min_seconds), timeout=timing.max_seconds * 2 + 120)
        if rc != 0:
            raise TransportError(f"{tool} failed (rc {rc}): {(err or out).strip()[-600:]}")
        try:
            parsed = PARSERS[tool](out + "\n" + err)
        except ValueError as e:
            raise TransportError(f"{tool}: {e}") from None
        return {**parsed, "runtime_version": f"native {tool}"}

    def run_inputs(self, path: Path, x, threads: int = 1):
        """The outputs of model file ``path`` on NCHW float32 inputs ``x``, computed on the device."""
        import tempfile
        from pathlib import PurePosixPath

        import numpy as np
        if not self.has_python:
            raise TransportError(f"device {self.device.name!r} has no Python for the agent; running given inputs "
                                 "needs one (set 'python' in its inventory entry)")
        path = Path(path)
        remote_model = self.push_model(path)
        with tempfile.TemporaryDirectory() as tmp:
            inputs = Path(tmp) / f"inputs-{path.stem}.npy"
            np.save(inputs, np.ascontiguousarray(x, np.float32))
            remote_inputs = self.transport.push([inputs], group="inputs")[0]
            remote_outputs = str(PurePosixPath(remote_inputs).parent / f"outputs-{path.stem}.npy")
            self._agent([remote_model, "--threads", str(threads), "--inputs", remote_inputs,
                         "--outputs", remote_outputs])
            local = Path(tmp) / "outputs.npy"
            self.transport.pull(remote_outputs, local)
            return np.load(local, allow_pickle=False)


def device_facts(device: str, inventory=None) -> dict:
    """``edgeconv device check``: reach ``device``, copy the agent there and return its facts
    (arch, CPU, cores, governor, runtimes present with versions or how to install them),
    plus ``warnings`` (a CPU governor other than ``performance``, a Raspberry Pi that throttles)."""
    with AgentSession(device, inventory) as s:
        facts = s.facts()
    facts["warnings"] = governor_warnings(facts.get("device", {})) + throttle_warnings(facts.get("throttled"))
    facts["transport"] = s.device.transport
    facts["wanted_runtimes"] = s.device.runtimes
    return facts


# Raspberry Pi firmware flags (`vcgencmd get_throttled`): now (bits 0-3), since boot (bits 16-19)
THROTTLE_FLAGS = ("under-voltage", "ARM frequency capped", "throttled", "soft temperature limit")


def throttle_flags(flags: str | None) -> tuple[list[str], list[str]] | None:
    """The names of the conditions a Raspberry Pi's throttling flags (``get_throttled=0x50005``'s
    value) report now and since boot; none for 0x0 and for no flags; None for a value that is not
    flags (a tool's error text)."""
    try:
        bits = int(flags, 0) if flags else 0
    except ValueError:
        return None
    return ([n for i, n in enumerate(THROTTLE_FLAGS) if bits >> i & 1],
            [n for i, n in enumerate(THROTTLE_FLAGS) if bits >> (16 + i) & 1])


def throttle_warnings(flags: str | None) -> list[str]:
    """What a Raspberry Pi's throttling flags mean for timing it: a board throttling now times
    slow; one that throttled since boot may again under load."""
    now, since = throttle_flags(flags) or ([], [])
    fix = ("check the power supply (the official one for the board: 5 V 5 A for a Pi 5, 5 V 3 A for a Pi 4) and "
           "the cooling (a heatsink and fan), then time again")
    if now:
        return [f"the board is throttling now ({', '.join(now)}; get_throttled={flags}): its timings are slow; {fix}"]
    if since:
        return [f"the board has throttled since boot ({', '.join(since)}; get_throttled={flags}) and may again "
                f"under load; {fix}, or use `bench --sustained` to see it"]
    return []


def governor_warnings(dev: dict) -> list[str]:
    gov = dev.get("governor")
    if gov and gov != "performance" and not dev.get("emulated"):
        return [f"the CPU frequency governor is {gov!r}, not 'performance': clocks move with load, so timings "
                "drift; set it for benchmarking with `echo performance | sudo tee "
                "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor` (Raspberry Pi OS: also "
                "`sudo cpufreq-set -g performance` where cpufrequtils is installed)"]
    return []
