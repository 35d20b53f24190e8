"""Optional: a device lab beyond one host, on a Ray cluster (``pip install 'edgeconv[cluster]'``).

The only module that imports ``ray``, and nothing imports it unless ``--cluster``,
``cluster =`` or a ``[sweep]`` table is used.

* ``connect(address)`` joins a running cluster (``auto``: ``RAY_ADDRESS``, else the cluster
  ``ray start --head`` started on this host); an address where nothing answers fails in
  seconds, before any work.
* **Devices as actors.** Each device is one ``DeviceActor``, pinned to the node that drives it
  by the custom resource ``edgeconv_device:<name>``, which that host's ``ray start
  --resources`` declares (a device no node declares runs on the head). An actor's calls run
  one at a time, so runs on a device queue while devices on other hosts run in parallel; a
  second driver's actor for the same device waits for the resource. The actor measures with
  the same ``AgentSession`` and ``benchmark.device_records`` as a run without a cluster. Model
  files and their manifest travel through the object store and are checked by sha256 on
  arrival; records stream back and the driver appends each to the results file as it
  arrives (the resume rules are ``benchmark.pending``'s), with ``node`` = where it was made.
  A node lost mid-run turns its devices' remaining runs into error records naming it.
* ``check_devices``: every device of an inventory, the node that drives it, and its facts.
* ``sweep``: build (+ train on the digits), export, verify and check every ``[sweep]``
  variant (``pipeline.run_variant``) as a Ray task on any node with a free CPU. Each variant's
  folder comes back through the object store and is renamed into place whole, so a present
  folder is a finished variant and a rerun runs only the missing ones.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .artifact import MANIFEST, Artifact, ArtifactError, FolderLock
from .device import TransportError


class ClusterError(TransportError):
    """The cluster cannot be reached, or cannot place a device."""


try:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
except ImportError:
    raise ClusterError("--cluster and [sweep] run on Ray, which is not installed: "
                       "pip install 'edgeconv[cluster]'") from None

RESOURCE = "edgeconv_device:{}"
NODE_LABEL = "edgeconv.node"
HEAD_RESOURCE = "node:__internal_head__"  # every Ray head has it
# ray.init against an address where no cluster answers retries for ~14 minutes by default
# (20 attempts of ~41 s); these make it give up after ~4 s, and a live cluster still joins.
FAIL_FAST_ENV = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_gcs_rpc_server_connect_timeout_s": "1",
                 "RAY_py_gcs_connect_timeout_s": "1"}
# An actor whose device another run holds waits for its resource; past this it is an error
# record ("run again later"), not a silent hang.
PLACE_TIMEOUT = 120.0

_joined: str | None = None


# -- joining ---------------------------------------------------------------------------------
def resolve(address: str) -> str:
    """``auto`` or HOST:PORT -> HOST:PORT (``auto``: ``RAY_ADDRESS``, else the address file
    ``ray start --head`` writes on this host)."""
    if address == "auto":
        env = os.environ.get("RAY_ADDRESS", "")
        if env and env != "auto":
            return resolve(env)
        # where `ray start --head` records the cluster it started (Ray's default temp dir)
        path = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            return resolve(path.read_text().strip())
        except (OSError, ValueError):
            raise ClusterError("--cluster auto: no Ray cluster was started on this host (no RAY_ADDRESS, no "
                               f"{path}); start one with `ray start --head`, or give the head's HOST:PORT") from None
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise ValueError(f"cluster address {address!r}: give auto or the head's HOST:PORT (the address "
                         "`ray start --head` prints, e.g. 192.168.1.10:6379)")
    return f"{host}:{port}"


def connect(address: str | None) -> str | None:
    """Join the cluster at ``address`` (``auto`` or HOST:PORT) for this process, once;
    ``None`` starts Ray on this machine alone. An address where nothing answers raises
    ``ClusterError`` within seconds."""
    global _joined
    if address is None:
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        return None
    target = resolve(address)
    if ray.is_initialized() and _joined == target:
        return target
    host, port = target.rsplit(":", 1)
    try:  # refused in a millisecond, where ray.init would retry for minutes
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ClusterError(f"no Ray cluster answers at {target} ({e.strerror or e}); start the head there with "
                           f"`ray start --head --port={port}`, or give the address it printed "
                           "(--cluster, or cluster = in [bench])") from None
    if ray.is_initialized():
        ray.shutdown()
    added = {k: v for k, v in {**FAIL_FAST_ENV, "RAY_USAGE_STATS_ENABLED": "0"}.items() if k not in os.environ}
    os.environ.update(added)
    try:
        ray.init(address=target, log_to_driver=False, logging_level="ERROR")
    except Exception as e:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError, ValueError...)
        raise ClusterError(f"cannot join the Ray cluster at {target}: {type(e).__name__}: "
                           f"{' '.join(str(e).split())[:300]} (a head with token authentication also refuses "
                           "a driver without its token: ~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
    finally:
        for k in added:
            os.environ.pop(k, None)
    _joined = target
    return target


def nodes() -> list[dict]:
    """The live nodes: id, ip, hostname, labels, resources, head."""
    return [{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "hostname": n.get("NodeManagerHostname"),
             "labels": n.get("Labels") or {}, "resources": n.get("Resources") or {},
             "head": HEAD_RESOURCE in (n.get("Resources") or {})}
            for n in ray.nodes() if n.get("Alive")]


def node_fields(node: dict) -> dict:
    """The ``node`` field of a record: where it was made."""
    return {"id": node["id"], "ip": node["ip"], "hostname": node["hostname"]}


def describe(node: dict) -> str:
    label = (node.get("labels") or {}).get(NODE_LABEL)
    return f"{label or node['hostname']} ({node['ip']}, id {node['id'][:12]})"


def _matches(node: dict, name: str) -> bool:
    return name in (node["ip"], node["hostname"], node["id"], node["labels"].get(NODE_LABEL))


def placement(device, live: list[dict]) -> tuple[dict, dict]:
    """(actor options, node) for ``device``: the node that declares ``edgeconv_device:<name>``,
    which must be the inventory's ``node`` when it names one; the head when no node declares it
    and the inventory names none."""
    res = RESOURCE.format(device.name)
    holders = [n for n in live if n["resources"].get(res, 0) >= 1]
    if len(holders) > 1:
        raise ClusterError(f"device {device.name!r}: {len(holders)} nodes declare {res} "
                           f"({', '.join(map(describe, holders))}); a device is driven by one host: drop it from "
                           "the other hosts' `ray start --resources`")
    if holders:
        if device.node and not _matches(holders[0], device.node):
            raise ClusterError(f"device {device.name!r}: the inventory says node = {device.node!r}, but {res} is "
                               f"declared by node {describe(holders[0])}; fix the inventory's node or that host's "
                               "`ray start --resources`")
        return {"resources": {res: 1}}, holders[0]
    if device.node:
        raise ClusterError(f"device {device.name!r}: the inventory says node = {device.node!r}, but no live node "
                           f"declares {res}; start that host's node with `ray start --address=<head> "
                           f"--resources='{{\"{res}\": 1}}'` (each host declares the devices it drives)")
    head = next(n for n in live if n["head"])
    return {"resources": {HEAD_RESOURCE: 0.001}}, head


def here() -> dict:
    """Where the calling Ray worker runs."""
    return {"id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname()}


def _reason(e: BaseException) -> str:
    """The error an actor or task raised, without Ray's wrapping and traceback."""
    if isinstance(e, RayTaskError) and getattr(e, "cause", None) is not None:
        e = e.cause
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:400]}"


# -- devices as actors -----------------------------------------------------------------------
@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class DeviceActor:
    """One device, on the node that drives it. Ray runs an actor's calls one at a time, so
    runs on the device never overlap. Files arrive in a folder of its own, keyed by sha256."""

    def __init__(self, device):
        # Ray sets OMP_NUM_THREADS=1 in workers that reserve no CPU; each run gives the agent its
        # thread count (--threads), and the agent's processes should not inherit Ray's.
        if os.environ.get("OMP_NUM_THREADS") == "1":
            del os.environ["OMP_NUM_THREADS"]
        self.device = device
        self.node = here()
        self.cache = Path(tempfile.mkdtemp(prefix=f"edgeconv-{device.name}-"))

    def where(self) -> dict:
        return self.node

    def facts(self) -> dict:
        from .device import device_facts
        return device_facts(self.device)

    def bench(self, jobs: list, files: dict, cfg, run_id: str):
        """Yield one record per ``(job, model sha256, manifest sha256)`` of ``jobs``, each as soon as
        it is measured; ``files`` maps a sha256 to the object holding those bytes."""
        from .benchmark import base_record, device_records
        ready, origin = [], []
        for job, model_sha, manifest_sha in jobs:
            try:
                ready.append(self._arrive(job, files, model_sha, manifest_sha))
                origin.append(job)
            except ArtifactError as e:
                rec = base_record(job, self.device, cfg, run_id)
                rec.update(error=str(e), node=self.node)
                yield rec
        # device_records yields one record per job, in order; the record names the artifact
        # folder the driver sees, not this node's copy
        for job, rec in zip(origin, device_records(self.device, ready, cfg, run_id)):
            rec.update(artifact=str(job.artifact.path), node=self.node)
            yield rec

    def _arrive(self, job, files: dict, model_sha: str, manifest_sha: str):
        from .benchmark import Job
        folder = self.cache / f"{model_sha}-{manifest_sha[:16]}"
        if not folder.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=self.cache, prefix=".arriving-"))
            try:
                for name, sha in ((job.file, model_sha), (MANIFEST, manifest_sha)):
                    data = ray.get(files[sha])
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise ArtifactError(f"{job.artifact.path / name} arrived on {self.node['hostname']} "
                                            f"({self.node['ip']}) with another sha256 than it left with; run again")
                    (tmp / name).write_bytes(data)
                os.rename(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return Job(Artifact.load(folder), job.file, job.entry, job.threads, job.block)

    def close(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)


def _start(device, options: dict):
    actor = DeviceActor.options(**options).remote(device)
    return actor, actor.where.remote()


def _stop(actor, lost: bool) -> None:
    if not lost:
        try:
            ray.get(actor.close.remote(), timeout=30)
        except RayError:
            pass
    ray.kill(actor)


def _share(jobs) -> tuple[dict, dict]:
    """Put every model file and manifest the jobs need into the object store once:
    ({sha256: object}, {(artifact folder, file): (model sha256, manifest sha256)})."""
    objects, shas, manifests = {}, {}, {}

    def put(path: Path) -> str:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha not in objects:
            objects[sha] = ray.put(data)
        return sha

    for j in jobs:
        key = (str(j.artifact.path), j.file)
        if key not in shas:
            j.artifact.checked(j.file)  # the file the manifest describes, before it travels
            folder = str(j.artifact.path)
            if folder not in manifests:
                manifests[folder] = put(j.artifact.path / MANIFEST)
            shas[key] = (put(j.path), manifests[folder])
    return objects, shas


def bench_on_cluster(address: str, jobs: list, devs: list, rf, cfg, run_id: str, done: set,
                     progress=None) -> list[dict]:
    """``benchmark.run_jobs`` on a cluster: every device is placed before anything runs, then
    each device's jobs stream through its actor and every record is appended as it arrives.
    Returns the records written."""
    from .benchmark import _key_of, base_record, pending, run_key
    connect(address)
    live = nodes()
    todo = {d.name: pending(d, jobs, done) for d in devs}
    where = {d.name: placement(d, live) for d in devs if todo[d.name]}
    objects, shas = _share(j for t in todo.values() for j in t)
    written, lock = [], threading.Lock()

    def drive(device) -> None:
        mine = todo[device.name]
        if progress:
            skipped = len(jobs) - len(mine)
            progress(device.name, 0, len(mine), f"{skipped} done before" if skipped else "start")
        if not mine:
            return
        options, node = where[device.name]
        node = node_fields(node)
        got: set = set()

        def emit(rec: dict) -> None:
            rf.append(rec)
            with lock:
                written.append(rec)
                got.add(_key_of(rec))
            if progress:
                progress(device.name, len(got), len(mine), f"{rec['file']} {rec['runtime']} t{rec['threads']} "
                                                           f"on {rec['node']['hostname']}")

        actor, started = _start(device, options)
        error, lost = None, False
        try:
            node = ray.get(started, timeout=PLACE_TIMEOUT)
            batch = [(j, *shas[(str(j.artifact.path), j.file)]) for j in mine]
            for ref in actor.bench.remote(batch, objects, cfg, run_id):
                emit(ray.get(ref))
        except GetTimeoutError:
            lost = True
            error = (f"device {device.name!r} did not start on node {node['hostname']} ({node['ip']}, id "
                     f"{node['id'][:12]}) within {PLACE_TIMEOUT:.0f} s: another run holds "
                     f"{options['resources']} (runs on a device queue), or that node is overloaded; run again")
        except RayActorError as e:
            lost = True
            error = (f"lost node {node['hostname']} ({node['ip']}, id {node['id'][:12]}) that drives device "
                     f"{device.name!r} ({type(e).__name__}); run again to resume")
        except RayError as e:
            error = f"device {device.name!r} on node {node['hostname']} ({node['ip']}): {_reason(e)}"
        finally:
            _stop(actor, lost)
        if error:
            for j in mine:
                if run_key(j.entry.sha256, j.runtime, device.name, j.threads, j.block) not in got:
                    rec = base_record(j, device, cfg, run_id)
                    rec.update(error=error, node=node)
                    emit(rec)

    with ThreadPoolExecutor(max_workers=len(devs)) as pool:
        for f in [pool.submit(drive, d) for d in devs]:
            f.result()
    return written


def check_devices(address: str, inventory=None, names=None, timeout: float = 300.0) -> list[dict]:
    """``edgeconv device check --cluster``: for every device of ``inventory`` (or ``names``),
    plus the built-in ones a node declares, the node that drives it and whether it answers:
    ``{device, transport, node, answers, facts | error}`` each, checked in parallel."""
    from .device.inventory import BUILTIN, get_device, load_inventory
    connect(address)
    live = nodes()
    if not names:
        listed = list(load_inventory(inventory))
        declared = {k.split(":", 1)[1] for n in live for k in n["resources"] if k.startswith("edgeconv_device:")}
        names = listed + sorted(b for b in BUILTIN if b in declared and b not in listed)
    if not names:
        raise ValueError("no device to check: the inventory lists none (--inventory) and no node declares "
                         "edgeconv_device:local or edgeconv_device:qemu-arm64")

    def one(name: str) -> dict:
        row = {"device": name, "transport": None, "node": None, "answers": False}
        actor, lost = None, False
        try:
            device = get_device(name, inventory)
            row["transport"] = device.transport
            options, node = placement(device, live)
            row["node"] = node_fields(node)
            actor, started = _start(device, options)
            wait = f"did not start within {PLACE_TIMEOUT:.0f} s (another run holds it, or its node is overloaded)"
            row["node"] = ray.get(started, timeout=PLACE_TIMEOUT)
            wait = f"no answer within {timeout:.0f} s"
            row["facts"] = ray.get(actor.facts.remote(), timeout=timeout)
            row["answers"] = True
        except GetTimeoutError:
            row["error"] = wait
            lost = True
        except RayError as e:  # before TransportError: an actor's TransportError comes wrapped in both
            lost = isinstance(e, RayActorError)
            row["error"] = _reason(e)
        except (ValueError, TransportError) as e:
            row["error"] = str(e)
        finally:
            if actor is not None:
                _stop(actor, lost)
        return row

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(one, names))


# -- sweeps as tasks -------------------------------------------------------------------------
# A variant exported on a lost node is exported again elsewhere: the work is the same every time.
@ray.remote(num_cpus=1, max_retries=2)
def _variant_task(cfg, variant) -> tuple[dict, dict]:
    from .pipeline import run_variant
    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    with tempfile.TemporaryDirectory(prefix="edgeconv-sweep-") as tmp:
        out = Path(tmp) / variant.id
        info = run_variant(cfg, variant, out, threads=threads, about={"node": here()})
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
                 if p.is_file() and p.name != FolderLock.NAME}
    return info, files


def _place(root: Path, name: str, files: dict) -> None:
    """Write a variant's files into a hidden folder beside its place, check every model file
    against its manifest, then rename the folder into place: present means whole."""
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".arriving-{name}-"))
    try:
        for rel, data in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        art = Artifact.load(tmp)
        for f in art.files:
            art.checked(f)
        os.rename(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep(cfg, root: str | Path, address: str | None = None, log=print) -> dict:
    """The ``[sweep]`` of run config ``cfg`` into ``root`` (``<run>/sweep``): one Ray task per
    variant not already there (``pipeline.run_variant``), on the cluster at ``address`` (``None``:
    Ray on this machine alone); each finished variant is placed as soon as it returns. Writes
    and returns a summary; raises naming the variants that failed (the others stay done)."""
    from .artifact import write_json_atomic
    from .pipeline import sweep_variants
    variants = sweep_variants(cfg)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".arriving-*"):  # left by an interrupted sweep: never a finished variant
        shutil.rmtree(stale, ignore_errors=True)
    todo = [v for v in variants if not (root / v.id).is_dir()]
    log(f"  sweep: {len(variants)} variant(s), {len(variants) - len(todo)} done before, {len(todo)} to run")
    t0 = time.perf_counter()
    ran, failed = [], {}
    if todo:
        connect(address)
        pending = {_variant_task.remote(cfg, v): v for v in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                v = pending.pop(ref)
                try:
                    info, files = ray.get(ref)
                    _place(root, v.id, files)
                except (RayError, ArtifactError, OSError) as e:
                    failed[v.id] = _reason(e)
                    log(f"  {v.id}: failed: {failed[v.id]}")
                    continue
                ran.append(v.id)
                log(f"  {v.id}: done in {info['seconds']:.0f} s on {info['node']['hostname']} "
                    f"({info['node']['ip']}, id {info['node']['id'][:12]}); verify "
                    f"{'ok' if info['verify_ok'] else 'FAILED'}, check {info['check']}")
    summary = {"variants": [v.id for v in variants], "ran": ran, "failed": failed,
               "skipped": [v.id for v in variants if v not in todo], "seconds": round(time.perf_counter() - t0, 1),
               "cluster": address}
    write_json_atomic(root / "sweep.json", summary)
    if failed:
        raise ValueError(f"{len(failed)} of {len(variants)} sweep variant(s) failed: "
                         + "; ".join(f"{k}: {v}" for k, v in failed.items())
                         + f". The others are in {root}; run again to retry only the missing ones")
    return summary
