"""``qemu-arm64``: the emulated arm64 device built by ``bench_device/setup_arm64.sh``
(an arm64 Python 3.11 with numpy, onnxruntime and LiteRT under qemu-aarch64 user-mode
emulation). It shares the host's file system, so files are used in place. Timings are of
an emulator (~100x slower than native): good for checking that artifacts run and agree on
arm64 kernels, not for latency."""
from __future__ import annotations

import os
from pathlib import Path

from . import TransportError, register
from .local import LocalTransport

CHECKOUT = Path(__file__).resolve().parent.parent.parent


def cache_dir() -> Path:
    """Where the emulated device lives: $EDGECONV_CACHE, else ``.cache`` of a source checkout, else
    ~/.cache/edgeconv (the same rule as setup_arm64.sh)."""
    if os.environ.get("EDGECONV_CACHE"):
        return Path(os.environ["EDGECONV_CACHE"])
    if (CHECKOUT / "pyproject.toml").exists():
        return CHECKOUT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeconv"


def arm64_python() -> Path:
    return cache_dir() / "arm64" / "bin" / "python3"


@register
class QemuArm64Transport(LocalTransport):
    name = "qemu-arm64"
    default_timeout = 3600.0

    def __init__(self, device):
        py = Path(device.python) if device.python else arm64_python()
        if not py.exists():
            raise TransportError(f"device {device.name!r}: the emulated arm64 device is not set up ({py} is "
                                 "missing); build it with: edgeconv device setup-arm64 (bench_device/setup_arm64.sh)")
        super().__init__(device)
        self.python = str(py)
