"""``ssh``: any Linux board (Raspberry Pi OS, Debian/Ubuntu arm64) through the system's
``ssh`` and ``scp`` binaries.

Safety: the host key is checked against ``known_hosts`` with ``StrictHostKeyChecking=yes``
(an unknown or changed key is refused with a message saying how to add it after checking
it, never accepted silently); key authentication only (``BatchMode=yes``, ``-i key``);
argv lists, each element quoted for the remote shell with ``shlex.quote``.

Files go to a cache folder on the device (``workdir``, default ``.cache/edgeconv`` under
the login's home); a file is copied only when its sha256 there differs (``sha256sum`` on the
device). Each session gets its own work folder (``mktemp -d``), removed by ``cleanup``.

A lost link leaves nothing behind for long: commands run with the connection as their stdin
and the agent exits when it closes (``--exit-with-stdin``); each work folder names its owner
(host, pid, session), and on the next connection from this host the folders of sessions that
are gone are removed, after stopping any agent still running there (its process group).
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

from ..artifact import sha256
from . import Transport, TransportError, quote_argv, register

CONNECTION_LOST = 255
_LIVE: set[str] = set()  # ids of this process's open sessions


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_folders(listing: str, host: str, pid: int, live: set[str]) -> list[str]:
    """Work folders (``run.*``, one ``folder owner`` line each) left by sessions of this host that
    are gone: their process is dead, or it is this process and the session is closed. Folders of
    other hosts, or without an owner, are left alone."""
    out = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 2 or ":" not in parts[1]:
            continue
        folder, owner = parts
        o_host, o_pid, o_session = (owner.split(":") + ["", ""])[:3]
        if o_host != host or not o_pid.isdigit():
            continue
        if (int(o_pid) == pid and o_session not in live) or (int(o_pid) != pid and not _pid_alive(int(o_pid))):
            out.append(folder)
    return out


class HostKeyError(TransportError):
    pass


@register
class SSHTransport(Transport):
    name = "ssh"
    keeps_stdin = True

    def __init__(self, device):
        super().__init__(device)
        if not device.host:
            raise TransportError(f"device {device.name!r}: ssh needs a host")
        self.port = int(device.port or 22)
        self.target = f"{device.user}@{device.host}" if device.user else device.host
        self.connect_timeout = float(device.connect_timeout or 10)
        if device.timeout:
            self.default_timeout = float(device.timeout)
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]
        if device.known_hosts:
            self.known_hosts = str(Path(device.known_hosts).expanduser())
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        else:
            self.known_hosts = "~/.ssh/known_hosts"
        if device.key:
            opts += ["-i", str(Path(device.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        self.opts = opts
        self.cache = device.workdir or ".cache/edgeconv"
        self.workdir: str | None = None
        self._connect()

    # -- plumbing ----------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.device.host}:{self.port}" if self.port != 22 else self.device.host

    def _ssh(self, command: str, timeout: float, hold_stdin: bool = False) -> tuple[int, str, str]:
        """Run ``command`` over ssh. With ``hold_stdin`` the remote command's stdin stays open for as
        long as the connection does (nothing is written to it), so it can tell a lost link."""
        argv = ["ssh", *self.opts, "-p", str(self.port), self.target, "--", command]
        r, w = os.pipe() if hold_stdin else (subprocess.DEVNULL, None)
        try:
            p = subprocess.Popen(argv, stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            raise TransportError("the ssh client is not installed (Debian: apt-get install openssh-client)") from None
        finally:
            if w is not None:
                os.close(r)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return 124, "", f"timed out after {timeout:.0f} s (ssh to {self._where()})"
        finally:
            if w is not None:
                os.close(w)
        self._check_host_key(err)
        return p.returncode, out, err

    def _check_host_key(self, stderr: str) -> None:
        keyscan = (f"ssh-keyscan -p {self.port} {self.device.host} >> {self.known_hosts}" if self.port != 22
                   else f"ssh-keyscan {self.device.host} >> {self.known_hosts}")
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            raise HostKeyError(
                f"device {self.device.name!r}: the host key of {self._where()} has CHANGED from the one in "
                f"{self.known_hosts}; refusing to connect (a reinstalled board, or someone in between). If the "
                f"change is expected, remove the old key with `ssh-keygen -R '[{self.device.host}]:{self.port}' "
                f"-f {self.known_hosts}`, check the new key's fingerprint on the device, then add it: {keyscan}")
        if "Host key verification failed" in stderr or "No matching host key" in stderr:
            raise HostKeyError(
                f"device {self.device.name!r}: the host key of {self._where()} is not in {self.known_hosts}; "
                f"refusing to connect to an unknown host. Check its fingerprint on the device "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add it: {keyscan}")

    def _connect(self) -> None:
        cache = quote_argv([self.cache])
        self.session = uuid.uuid4().hex[:12]
        owner = quote_argv([f"{socket.gethostname()}:{os.getpid()}:{self.session}"])
        rc, out, err = self._ssh(
            f"mkdir -p {cache} && cd {cache} && "
            "for d in run.*; do [ -f \"$d/owner\" ] && echo \"$d $(cat \"$d/owner\")\"; done; "
            f"pwd && d=$(mktemp -d \"$(pwd)/run.XXXXXX\") && echo {owner} > \"$d/owner\" && echo \"$d\"",
            self.connect_timeout + 20)
        if rc != 0:
            raise TransportError(f"device {self.device.name!r}: cannot reach {self.target} port {self.port} "
                                 f"over ssh (rc {rc}): {err.strip()[-400:] or out.strip()[-400:]}")
        lines = out.strip().splitlines()
        self.cache, self.workdir = lines[-2], lines[-1]
        _LIVE.add(self.session)
        stale = stale_folders("\n".join(lines[:-2]), socket.gethostname(), os.getpid(), _LIVE)
        if stale:
            self.cleaned = stale
            script = " ".join(
                f"p=$(cat {quote_argv([f])}/agent.pid 2>/dev/null) && {{ kill -TERM -- -$p 2>/dev/null || "
                f"kill -TERM $p 2>/dev/null; }}; rm -rf -- {quote_argv([f])};" for f in stale)
            self._ssh(f"cd {cache} && {{ {script} }}", self.connect_timeout + 20)

    def _scp(self, sources: list[str], dest: str, timeout: float) -> None:
        argv = ["scp", "-q", "-B", *self.opts, "-P", str(self.port), *sources, f"{self.target}:{dest}"]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TransportError(f"device {self.device.name!r}: copying to {dest} timed out after {timeout:.0f} s") from None
        self._check_host_key(p.stderr)
        if p.returncode != 0:
            raise TransportError(f"device {self.device.name!r}: scp to {dest} failed: {p.stderr.strip()[-400:]}")

    # -- the contract -------------------------------------------------------------------------
    def push(self, local_files, group=None):
        files = [Path(f).resolve() for f in local_files]
        if group is None:  # one remote folder per local folder: files keep their neighbours (manifest)
            group = hashlib.sha256(str(files[0].parent).encode()).hexdigest()[:16]
        folder = f"{self.cache}/{group}"
        remote = [f"{folder}/{f.name}" for f in files]
        rc, out, err = self._ssh(f"mkdir -p {quote_argv([folder])} && cd {quote_argv([folder])} && "
                                 f"{{ sha256sum -- {quote_argv([f.name for f in files])} 2>/dev/null; true; }}",
                                 self.connect_timeout + 60)
        if rc != 0:
            raise TransportError(f"device {self.device.name!r}: cannot prepare {folder}: {err.strip()[-400:]}")
        have = {}
        for line in out.splitlines():
            m = re.match(r"([0-9a-f]{64})\s+\*?(.+)$", line.strip())
            if m:
                have[m.group(2)] = m.group(1)
        changed = [str(f) for f in files if have.get(f.name) != sha256(f)]
        self.pushed = len(changed)
        if changed:
            size = sum(Path(f).stat().st_size for f in changed)
            self._scp(changed, folder + "/", timeout=60 + size / 1e6)
        return remote

    def run(self, argv, timeout=None):
        cmd = f"cd {quote_argv([self.workdir])} && exec {quote_argv(argv)}"
        rc, out, err = self._ssh(cmd, timeout or self.default_timeout, hold_stdin=True)
        if rc == CONNECTION_LOST:
            err = f"connection to {self._where()} lost (ssh rc 255): {err.strip()[-300:]}"
        return rc, out, err

    def pull(self, remote, local):
        src = remote if remote.startswith("/") else f"{self.workdir}/{remote}"
        argv = ["scp", "-q", "-B", *self.opts, "-P", str(self.port), f"{self.target}:{src}", str(local)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=self.default_timeout,
                           stdin=subprocess.DEVNULL)
        self._check_host_key(p.stderr)
        if p.returncode != 0:
            raise TransportError(f"device {self.device.name!r}: scp of {src} failed: {p.stderr.strip()[-400:]}")

    def cleanup(self):
        if self.workdir and "/run." in self.workdir:
            try:
                self._ssh(f"rm -rf -- {quote_argv([self.workdir])}", self.connect_timeout + 10)
            except TransportError:
                pass  # the device is gone: the next connection from this host removes the folder
            self.workdir = None
        _LIVE.discard(getattr(self, "session", None))
