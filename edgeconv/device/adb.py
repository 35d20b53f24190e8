"""``adb``: Android phones over USB or adb-over-TCP.

Files go to ``/data/local/tmp/edgeconv`` (sha256-checked with the phone's toybox
``sha256sum``, copied only when changed); each run gets a ``mktemp -d`` folder there.
Two ways to run: the agent, where the phone has a Python (inventory key ``python``, e.g.
Termux's), or the native benchmark binaries the user pushed (inventory table ``native``:
``benchmark_model``, ``onnxruntime_perf_test``, ``executor_runner`` paths on the phone),
whose output ``native.py`` parses into the same record.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..artifact import sha256
from . import Transport, TransportError, quote_argv, register

REMOTE_ROOT = "/data/local/tmp/edgeconv"


def adb_binary() -> str:
    adb = shutil.which("adb")
    if not adb:
        raise TransportError("adb is not installed or not on PATH: install Android platform-tools "
                             "(Debian: apt-get install adb) and plug in the phone with USB debugging on")
    return adb


def attached_devices(adb: str) -> list[str]:
    try:
        p = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise TransportError("`adb devices` did not answer within 30 s") from None
    return [line.split()[0] for line in p.stdout.splitlines()[1:]
            if line.strip() and len(line.split()) >= 2 and line.split()[1] == "device"]


@register
class ADBTransport(Transport):
    name = "adb"

    def __init__(self, device):
        super().__init__(device)
        self.adb = adb_binary()
        found = attached_devices(self.adb)
        if not found:
            raise TransportError(f"device {device.name!r}: no Android device attached (`adb devices` lists "
                                 "none): connect the phone, enable USB debugging and accept the prompt, "
                                 "or `adb connect HOST:PORT`")
        if device.serial and device.serial not in found:
            raise TransportError(f"device {device.name!r}: serial {device.serial} is not attached; "
                                 f"attached: {', '.join(found)}")
        if not device.serial and len(found) > 1:
            raise TransportError(f"device {device.name!r}: several phones attached ({', '.join(found)}); "
                                 "set `serial` in the inventory")
        self.serial = device.serial or found[0]
        self.python = device.python  # None: native binaries only
        self.cache = device.workdir or REMOTE_ROOT
        rc, out, err = self._shell(f"mkdir -p {quote_argv([self.cache])} && mktemp -d "
                                   f"{quote_argv([self.cache + '/run.XXXXXX'])}", 60)
        if rc != 0:
            raise TransportError(f"device {device.name!r}: cannot make a work folder: {err.strip()}")
        self.workdir = out.strip().splitlines()[-1]

    def _adb(self, *args, timeout=600.0):
        try:
            p = subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "", f"timed out after {timeout:.0f} s"
        return p.returncode, p.stdout, p.stderr

    def _shell(self, command: str, timeout: float):
        return self._adb("shell", command, timeout=timeout)

    def has_agent_python(self) -> bool:
        return bool(self.python)

    def push(self, local_files, group=None):
        import hashlib
        files = [Path(f).resolve() for f in local_files]
        group = group or hashlib.sha256(str(files[0].parent).encode()).hexdigest()[:16]
        folder = f"{self.cache}/{group}"
        rc, out, _ = self._shell(f"mkdir -p {quote_argv([folder])} && cd {quote_argv([folder])} && "
                                 f"sha256sum {quote_argv([f.name for f in files])} 2>/dev/null; true", 120)
        have = {m.group(2): m.group(1) for m in re.finditer(r"([0-9a-f]{64})\s+\*?(\S+)", out)}
        for f in files:
            if have.get(f.name) != sha256(f):
                rc, _, err = self._adb("push", str(f), f"{folder}/{f.name}")
                if rc != 0:
                    raise TransportError(f"adb push {f} failed: {err.strip()}")
        return [f"{folder}/{f.name}" for f in files]

    def run(self, argv, timeout=None):
        return self._shell(f"cd {quote_argv([self.workdir])} && {quote_argv(argv)}", timeout or self.default_timeout)

    def pull(self, remote, local):
        src = remote if remote.startswith("/") else f"{self.workdir}/{remote}"
        rc, _, err = self._adb("pull", src, str(local))
        if rc != 0:
            raise TransportError(f"adb pull {src} failed: {err.strip()}")

    def cleanup(self):
        if getattr(self, "workdir", None):
            self._shell(f"rm -rf {quote_argv([self.workdir])}", 60)
            self.workdir = None
