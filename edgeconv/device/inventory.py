"""Devices by name, from an inventory file (``devices.toml``)::

    [devices.pi4]
    transport = "ssh"
    host = "192.168.1.42"
    port = 22
    user = "pi"
    key = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"
    python = "python3"
    runtimes = ["onnxruntime", "litert"]
    workdir = ".cache/edgeconv"
    node = "lab-host-2"          # optional: the Ray node that drives it (edgeconv.cluster)

``local`` (this machine) and ``qemu-arm64`` (the emulated arm64 device) need no entry.

``node`` names the host a device is plugged into when benchmarks run on a Ray cluster
(``--cluster``): that node's address, hostname, id, or the value of its ``edgeconv.node``
label. Its ``key`` and ``known_hosts`` are files on that host, so they must be absolute or
start with ``~`` (expanded there); without ``--cluster`` the key is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_INVENTORY = "devices.toml"
BUILTIN = {
    "local": {"transport": "local"},
    "qemu-arm64": {"transport": "qemu-arm64", "runtimes": ["onnxruntime", "litert"]},
}
FIELDS = ("transport", "host", "port", "user", "key", "known_hosts", "python", "runtimes",
          "workdir", "serial", "native", "connect_timeout", "timeout", "node")


@dataclass
class Device:
    name: str
    transport: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    python: str | None = None
    runtimes: list[str] | None = None
    workdir: str | None = None
    serial: str | None = None
    native: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    timeout: float | None = None
    node: str | None = None

    def open(self):
        """A Transport to this device (use as a context manager: cleanup on exit)."""
        from . import get_transport
        return get_transport(self.transport)(self)


def load_inventory(path: str | Path | None) -> dict[str, dict]:
    if path is None:
        path = Path(DEFAULT_INVENTORY)
        if not path.exists():
            return {}
    from ..spec import read_toml
    path = Path(path)
    data = read_toml(path, "inventory", " (see bench_device/devices.example.toml)")
    devices = data.get("devices", {})
    if not isinstance(devices, dict):
        raise ValueError(f"{path}: 'devices' must be tables, one per device: [devices.NAME] with transport = ...")
    base = path.resolve().parent
    for name, d in devices.items():
        if not isinstance(d, dict):
            raise ValueError(f"{path}: devices.{name} = {d!r}: each device is a table [devices.{name}] with "
                             "transport = ...")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ValueError(f"{path}: device {name!r} has unknown key(s) {unknown}; known: {', '.join(FIELDS)}")
        if "transport" not in d:
            raise ValueError(f"{path}: device {name!r} has no transport")
        problem = _field_problem(d)
        if problem:
            raise ValueError(f"{path}: devices.{name}.{problem}")
        if "node" in d:
            _check_node(path, name, d)
            continue
        for k in ("key", "known_hosts"):  # relative to the inventory file, ~ expanded
            if d.get(k):
                p = Path(d[k]).expanduser()
                d[k] = str(p if p.is_absolute() else base / p)
    return devices


def _field_problem(d: dict) -> str | None:
    """What is wrong with one device's values (``key = value: why``), or None."""
    import math

    from ..artifact import RUNTIMES
    for key in ("transport", "host", "user", "key", "known_hosts", "python", "workdir", "serial"):
        if key in d and (not isinstance(d[key], str) or not d[key]):
            return f"{key} = {d[key]!r}: must be a non-empty string"
    port = d.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
        return f"port = {port!r}: must be a whole number from 1 to 65535"
    for key in ("connect_timeout", "timeout"):
        v = d.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0):
            return f"{key} = {v!r}: must be a number of seconds > 0"
    runtimes = d.get("runtimes")
    if runtimes is not None and (not isinstance(runtimes, list) or any(r not in RUNTIMES for r in runtimes)):
        return f"runtimes = {runtimes!r}: a list of {', '.join(RUNTIMES)}"
    native = d.get("native")
    if native is not None and (not isinstance(native, dict) or not all(isinstance(v, str) for v in native.values())):
        return f"native = {native!r}: a table of tool = \"/path/on/the/device\""
    return None


def _check_node(path: Path, name: str, d: dict) -> None:
    if not isinstance(d["node"], str) or not d["node"].strip():
        raise ValueError(f"{path}: device {name!r}: node = {d['node']!r}; name the Ray node that drives it (its "
                         "address, hostname or edgeconv.node label), e.g. node = \"lab-host-2\"")
    for k in ("key", "known_hosts"):  # files on the node that drives the device, not beside this file
        v = d.get(k)
        if v and not (v.startswith("~") or Path(v).is_absolute()):
            raise ValueError(f"{path}: device {name!r}: {k} = {v!r} is relative, but the device is driven by node "
                             f"{d['node']!r}, which does not see this inventory's folder; give a path on that "
                             "host, absolute or starting with ~")


def get_device(name: str, inventory: str | Path | None = None) -> Device:
    devices = {**BUILTIN, **load_inventory(inventory)}
    if name not in devices:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(sorted(devices))}"
                         + ("" if inventory else f" (no --inventory given; looked for ./{DEFAULT_INVENTORY})"))
    d = dict(devices[name])
    from . import get_transport
    get_transport(d["transport"])  # unknown transport: an error listing the known ones
    return Device(name=name, **d)
