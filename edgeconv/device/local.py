"""``local``: this machine. Files are used in place; the agent runs with this Python."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import Transport, register


def run_process(argv: list[str], timeout: float | None, cwd: str | None = None) -> tuple[int, str, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        return 124, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), \
            f"timed out after {timeout:.0f} s"
    except FileNotFoundError as e:
        return 127, "", str(e)
    return p.returncode, p.stdout, p.stderr


@register
class LocalTransport(Transport):
    name = "local"

    def __init__(self, device):
        super().__init__(device)
        if not device.python:
            self.python = sys.executable
        self.workdir = tempfile.mkdtemp(prefix="edgeconv-run-")

    def push(self, local_files, group=None):
        return [str(Path(f).resolve()) for f in local_files]

    def run(self, argv, timeout=None):
        return run_process([str(a) for a in argv], timeout or self.default_timeout, cwd=self.workdir)

    def pull(self, remote, local):
        shutil.copyfile(remote if Path(remote).is_absolute() else Path(self.workdir) / remote, local)

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)
