"""``profile``: where the depthwise saving goes, block by block, on a device.

The model and its standard-conv twin are cut into blocks (zoo: the named blocks; your own model:
the modules ``depth`` levels down, ``edgeconv.card.blocks``). Each block becomes a standalone
micro-model at its real input shape, exported in the chosen format and precision; int8 is
calibrated on the block's real inputs, captured by running the calibration data through the
fp32 model. Every block, the whole model (to hold the sum of blocks against it: fusion and
per-call overheads) and a dense 3x3 conv (the device's attainable peak) are timed on the device
with the usual method, up to ``FILES_PER_AGENT`` files in one agent process (a board's or an
emulator's interpreter start-up and runtime import paid once for them, not per file); the
records go to the results file with a ``block`` field
(``model:blocks.3``, ``twin:blocks.3``, ``peak:_peak``; none for the whole models) and the
block's features in ``arch`` (MACs, weight and activation bytes, conv kinds, kernel, stride), so
a profile resumes like any bench run and ``edgeconv.predict`` can learn from it.

Under ONNX Runtime and ExecuTorch every file is also run under the runtime's own op profiler
after its timing (``op_profile`` in the record: ONNX Runtime's profiler, ExecuTorch's ETDump): a
cross-check, not a source. The whole model's node times, put to blocks (ONNX: by the module path
the exporter wrote into each node; ExecuTorch: by the order of its conv and linear operators)
say what a block costs inside the whole model beside what its micro-model took alone, and what
runs outside any block (layout reorders, the input's quantize). LiteRT's Python interpreter has
no op profiler.

Emulated devices (qemu) are profiled for function, not latency: their records say so.
"""
from __future__ import annotations

import re
from math import prod
from pathlib import Path

import numpy as np

from .artifact import FORMATS, PRECISIONS

OP_PROFILE_RUNS = 20      # runs under the runtime's op profiler, after each file's timing
FILES_PER_AGENT = 16      # block micro-models timed in one agent process (its start-up paid once)
PEAK = "_peak"            # the dense-conv micro-model: the device's attainable GMAC/s
WHOLE = None               # the block field of a whole-model record
KINDS = ("standard", "pointwise", "depthwise", "grouped", "linear")


class _Micro:
    """Factory for the micro-model of one block: takes the block's input as N x C x H x W (a
    flat input as N x C x 1 x 1) and returns the block's output."""

    @staticmethod
    def build(block, in_shape: tuple):
        from torch import nn

        class Micro(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = block

            def forward(self, x):
                return self.block(x if len(in_shape) == 3 else x.reshape(x.shape[0], *in_shape))

        return Micro().eval()


def features(module, in_shape: tuple) -> dict:
    """What the predictor learns latency from: MACs per conv kind, weight and activation bytes,
    layer count, largest kernel, stride (input over output size), channels, and the elements
    explicit pad ops write (``pad_elems``)."""
    from .card import layer_costs
    shape = in_shape if len(in_shape) == 3 else (in_shape[0], 1, 1)
    rows = layer_costs(module, shape)
    f = {f"macs_{k}": sum(r.macs for r in rows if r.kind == k) for k in KINDS}
    out = rows[-1].out_shape if rows else in_shape
    kernels = [m.kernel_size[0] for m in module.modules() if hasattr(m, "kernel_size") and
               isinstance(m.kernel_size, tuple)]
    in_hw = in_shape[1] if len(in_shape) == 3 else 1
    out_hw = out[1] if len(out) == 3 else 1
    f.update(macs=sum(r.macs for r in rows), params=sum(r.params for r in rows), layers=len(rows),
             kernel=max(kernels, default=1), stride=max(1, round(in_hw / max(out_hw, 1))),
             in_chs=in_shape[0], out_chs=out[0], in_hw=in_hw, out_hw=out_hw,
             in_elems=prod(in_shape), out_elems=prod(out), pad_elems=pad_elements(module, shape))
    return f


def pad_elements(module, in_shape: tuple) -> int:
    """Elements written by the explicit pad ops of one forward pass (``F.pad``, ``nn.ZeroPad2d``,
    TensorFlow SAME pads before a stride-2 conv): a pass over the activations of its own in
    the int8 runtimes, which a conv's built-in padding does not cost."""
    import torch
    from torch.overrides import TorchFunctionMode
    written = []

    class Pads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if getattr(func, "__name__", "") in ("pad", "constant_pad_nd") and isinstance(out, torch.Tensor):
                written.append(out.numel())
            return out

    x = torch.zeros(1, *in_shape)
    with torch.no_grad(), Pads():
        module.eval()(x)
    return int(sum(written))


def block_bytes(f: dict, precision: str) -> dict:
    """Weight and activation bytes a block moves at ``precision`` (1 byte an element in int8)."""
    size = 1 if precision == "int8" else 4
    return {"weight_bytes": f["params"] * size, "act_bytes": (f["in_elems"] + f["out_elems"]) * size}


def capture_inputs(model, names: list[str], x: np.ndarray) -> dict[str, tuple[np.ndarray, tuple]]:
    """The input of every block in ``names`` on the samples ``x`` (one forward pass, batch by
    batch): N x C x H x W float32 (flat inputs as N x C x 1 x 1, as they are exported) and the
    shape of one sample as the block takes it."""
    import torch
    mods = dict(model.named_modules())
    got: dict[str, list] = {n: [] for n in names}
    shapes: dict[str, tuple] = {}

    def hook(name):
        def pre(_m, args):
            a = args[0].detach()
            shapes[name] = tuple(a.shape[1:])
            got[name].append((a if a.dim() == 4 else a.reshape(a.shape[0], -1, 1, 1)).numpy().copy())
        return pre

    handles = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for i in range(0, len(x), 16):
                model(torch.from_numpy(x[i:i + 16]))
    finally:
        for h in handles:
            h.remove()
    return {n: (np.concatenate(v), shapes[n]) for n, v in got.items() if v}


def peak_module(chs: int, hw: int):
    """A dense 3x3 conv (+ReLU), compute-bound: its achieved GMAC/s is the device's roof."""
    from torch import nn

    from .card import seeded
    with seeded(0):
        return nn.Sequential(nn.Conv2d(chs, chs, 3, padding=1), nn.ReLU()).eval()


def plan_profile(model: str, out: str | Path, *, fmt: str, precision: str, calib: str = "digits",
                 class_index=None, weights=None, pretrained=False, input_size=None, width=None, depth: int = 1,
                 recipe=None, force=False, log=print) -> list:
    """Export the micro-models of ``model`` and its twin (and the whole models and the peak conv)
    into ``out`` and return the bench jobs that time them."""
    import torch

    from .benchmark import Job
    from .card import ModelCard, blocks
    from .data import calibration
    from .exporters import export
    from .quantize import QuantRecipe
    from .zoo import model_pair
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; known: {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown; known: {', '.join(PRECISIONS)}")
    recipe = recipe or QuantRecipe()
    out = Path(out)
    jobs = []
    for side, net in model_pair(model, weights, input_size, pretrained, width):
        twin = side == "twin"
        ds = calibration(calib, net, recipe.calib_count, class_index)
        names = blocks(net, depth)
        inputs = capture_inputs(net, names, ds.x)
        mods = dict(net.named_modules())
        log(f"profile {net.card.name} {side}: {len(names)} blocks -> {out / side}")
        arts = [(WHOLE, export(net, calib=ds.x, formats=[fmt], precisions=[precision], recipe=recipe,
                               out=out / side / "_whole", force=force, calib_info=ds.describe()),
                 {"macs": sum(r["macs"] for r in _cost_rows(net))})]
        for name in names:
            if name not in inputs:
                continue  # a block the forward pass never calls
            x, shape = inputs[name]
            micro = _Micro.build(mods[name], shape)
            micro.card = ModelCard(net.card.name, tuple(x.shape[1:]), None, None, None, {"kind": "pt2"}, twin)
            micro.input_shape = tuple(x.shape[1:])
            f = features(micro, tuple(x.shape[1:]))
            art = export(micro, torch.from_numpy(x[:1]), calib=x, formats=[fmt], precisions=[precision],
                         recipe=_recipe_for(recipe, name), out=out / side / name.replace("/", "_"), force=force,
                         calib_info={"source": f"inputs of {name} ({ds.source})", "count": len(x)})
            arts.append((name, art, f))
        # this plan's file of each (not the other files earlier profiles added to its folder)
        files = {block: art.name_of(fmt, precision) for block, art, _ in arts}
        for block, art, _ in arts:
            if not files[block]:
                err = next((e.get("message") for e in art.errors if isinstance(e, dict)
                            and (e.get("format"), e.get("precision")) == (fmt, precision)), "no file written")
                log(f"warning: {side} {block or 'whole model'}: not exported to {fmt} {precision}, so not timed "
                    f"({err})")
        # the whole model lists its blocks' files, per file of its own (a folder holds every format
        # and precision): a block two profiles share (a classifier at the same width) is one file,
        # timed once, and still part of both
        whole_file = files[WHOLE]
        if whole_file:
            before = arts[0][1].manifest.arch
            listed = dict(before.get("block_files") or {}) if isinstance(before, dict) else {}
            # a block that did not export is listed without a file: the whole model then has a
            # block missing, and the predictor leaves it out of its fit
            listed[whole_file] = {name: art.files[files[name]].sha256 if files[name] else None
                                  for name, art, _ in arts[1:]}
            arts[0][2]["block_files"] = listed
            arts[0][2]["block_layers"] = {name: f["layers"] for name, _, f in arts[1:]}
        for block, art, f in arts:
            art.manifest.arch = {"block": block, "side": side, **f}
            art.save()
            # a block the twin shares with the model (stem, head) is the same file: timed once per side
            if files[block]:
                jobs.append(Job(art, files[block], art.files[files[block]], 1,
                                None if block is None else f"{side}:{block}"))
    peak = peak_module(128, 28)  # 116M MACs: big enough for a device's wide kernels to reach their roof
    peak.card = ModelCard("peak_conv3x3_128", (128, 28, 28), None, None, None, {"kind": "pt2"})
    peak.input_shape = (128, 28, 28)
    x = np.random.default_rng(0).standard_normal((16, 128, 28, 28)).astype(np.float32)
    art = export(peak, calib=x, formats=[fmt], precisions=[precision], recipe=QuantRecipe(calib_count=16),
                 out=out / PEAK, force=force, calib_info={"source": "noise", "count": 16})
    art.manifest.arch = {"block": PEAK, "side": "peak", **features(peak, (128, 28, 28))}
    art.save()
    fname = art.name_of(fmt, precision)
    if fname:
        jobs.append(Job(art, fname, art.files[fname], 1, f"peak:{PEAK}"))
    return jobs


def _cost_rows(net) -> list[dict]:
    from .card import model_cost
    return model_cost(net)["blocks"]


def _recipe_for(recipe, block: str):
    """The model's recipe, with its fp32 modules mapped into the micro-model (``block.`` prefix)."""
    from dataclasses import replace
    keep = tuple("block" + k[len(block):] for k in recipe.keep_fp32 if k == block or k.startswith(block + "."))
    return replace(recipe, keep_fp32=keep)


def profile(model: str, device: str = "local", *, runtime: str = "onnxruntime", precision: str = "int8",
            results: str | Path | None = None, out: str | Path | None = None, inventory=None,
            calib: str = "digits", class_index=None, weights=None, pretrained=False, input_size=None, width=None,
            depth: int = 1, recipe=None, cfg=None, threads: int = 1, force=False, progress=None, log=print) -> dict:
    """``edgeconv profile``: export ``model``'s and its twin's blocks as micro-models into ``out``,
    time them with the whole models and a dense conv on ``device`` (records into ``results``,
    default ``out/results.jsonl``), write ``out/report.html`` (the per-block table, the bars and
    the roofline) and return ``table(...)`` of what was measured."""
    from dataclasses import replace

    from bench_device.agent import OP_PROFILERS   # the runtimes with an op profiler in Python

    from .artifact import RUNTIMES, format_of
    from .benchmark import ResultsFile, TimingConfig, run_jobs
    from .device.inventory import get_device
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is unknown; known: {', '.join(RUNTIMES)}")
    fmt = format_of(runtime)
    dev = get_device(device, inventory)
    if dev.runtimes and runtime not in dev.runtimes:
        raise ValueError(f"device {device!r} runs {', '.join(dev.runtimes)}, not {runtime}")
    variant = (f"_w{width:g}" if width else "") + (f"_{input_size}px" if input_size else "") + (
        f"_depth{depth}" if depth > 1 else "")
    out = Path(out or Path("profiles") / f"{folder_name(model)}{variant}_{runtime}")
    rf = ResultsFile(results or out / "results.jsonl")
    rf.check_writable()   # before the exports, not after them
    jobs = plan_profile(model, out, fmt=fmt, precision=precision, calib=calib, class_index=class_index,
                        weights=weights, pretrained=pretrained, input_size=input_size, width=width, depth=depth,
                        recipe=recipe, force=force, log=log)
    sides = [j for j in jobs if not (j.block or "").startswith("peak:")]
    if not sides:
        raise ValueError(f"nothing of {model} or its twin exported to {fmt} {precision} (see the warnings above and "
                         f"the errors in {out}/*/*/manifest.json); nothing was timed")
    for j in jobs:
        j.threads = threads
    cfg = cfg or TimingConfig()
    if cfg.op_profile_runs is None:
        cfg = replace(cfg, op_profile_runs=OP_PROFILE_RUNS if runtime in OP_PROFILERS else 0)
    if cfg.files_per_agent is None:
        cfg = replace(cfg, files_per_agent=FILES_PER_AGENT)
    run_jobs(jobs, [dev], rf, cfg, force=force, progress=progress)
    # this plan's files only: not another profile's (other size, depth or thread count) in a shared file
    mine = {(j.entry.sha256, j.block) for j in jobs}
    recs = [r for r in rf.records(warn=False) if (r.get("sha256"), r.get("block")) in mine
            and r.get("runtime") == runtime and r.get("threads") == threads
            and (r.get("device") or {}).get("name") == device]
    newest = {(r.get("sha256"), r.get("block")): r for r in recs}   # a file that failed when timed again counts
    failed = [{"block": r.get("block") or f"{(r.get('arch') or {}).get('side')}:whole model", "error": r.get("error")}
              for r in newest.values() if r.get("status") != "ok"]
    if not any(r.get("status") == "ok" and not (r.get("block") or "").startswith("peak:") for r in newest.values()):
        raise ValueError(f"every file of the profile failed on {device!r}, e.g. "
                         f"{failed[0]['error'] if failed else 'no record written'}; the error records are in {rf.path}")
    t = table(recs, device, runtime, precision, model_name=sides[0].artifact.manifest.model)
    t["errors"] = failed
    if rf.path.resolve() == (out / "results.jsonl").resolve():
        from .reporting import report
        t["report"] = str(report(out)["html"])
    t["results"] = str(rf.path)
    return t


def folder_name(model: str) -> str:
    """A folder name for a model named by zoo name, card file or source (``nets.py:small``)."""
    name = Path(str(model)).name
    for suffix in (".toml", ".pt2"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^\w.-]+", "_", name.replace(".py:", "_")).strip("_.") or "model"


def profile_folder(r: dict) -> str:
    """The profile folder (``out``) of a record of a micro-model or whole model (out/side/block)
    or of the peak conv (out/_peak)."""
    path = str(r.get("artifact", ""))
    return path.rsplit("/", 1)[0] if (r.get("arch") or {}).get("side") == "peak" else path.rsplit("/", 2)[0]


def node_blocks(path: str | Path, blocks: list[str]) -> dict[str, str]:
    """The node and output names of the ONNX graph at ``path``, each to the block of ``blocks``
    its node belongs to: the deepest module path of the node's ``namespace`` metadata (the torch
    exporter's) that is a block."""
    import onnx
    names, out = set(blocks), {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        ns = next((p.value for p in n.metadata_props if p.key == "namespace"), "")
        block = next((m for m in reversed([seg.split(":")[0].strip() for seg in ns.split("/")]) if m in names), None)
        if block:
            out.update({k: block for k in (n.name, *n.output)})
    return out


# what ONNX Runtime appends to the name of a node it fuses, quantizes or moves to its own layout
_ORT_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_QuantizeLinear|_DequantizeLinear)$")
# an ExecuTorch (XNNPACK) operator that is one conv or linear layer of the model
_ET_LAYER = re.compile(r"^(Convolution|Fully Connected) \(")
# an operator that belongs with the layer after it: an explicit pad (TensorFlow SAME) before its conv
_ET_BEFORE = re.compile(r"^Constant Pad \(")


def op_order_blocks(nodes: list[str], layers: dict[str, int]) -> dict[str, str | None] | None:
    """ExecuTorch's operators (``nodes``, in the order they ran) to the blocks of ``layers`` (each
    block's conv/linear layer count, in model order): the k-th conv or linear operator is the k-th
    layer, a pad goes with the layer after it, and every other operator with the layer before it
    (a residual add, a pooling); those before the first layer (the input's quantize and layout)
    with none. None when the operators' layers do not match the blocks' count (a graph the
    runtime rewrote, or ran partly outside XNNPACK, whose kernels ETDump does not name)."""
    slots = [b for b, n in layers.items() for _ in range(n)]
    if sum(bool(_ET_LAYER.search(n)) for n in nodes) != len(slots):
        return None
    out, i, cur, pending = {}, 0, None, []
    for n in nodes:
        if _ET_LAYER.search(n):
            cur, i = slots[i], i + 1
            out.update({k: cur for k in pending + [n]})
            pending = []
        elif _ET_BEFORE.search(n) and i < len(slots):
            pending.append(n)
        else:
            out[n] = cur
    return out


def in_whole_ms(rec: dict, blocks: dict[str, int]) -> dict | None:
    """From a whole model's record with an ``op_profile``: its node times (ms, median over the
    profiled runs) summed per block of ``blocks`` (name: conv/linear layer count, in model order),
    under None those of no block (layout reorders, the input's quantize); None without a profile,
    without the model file, or (ExecuTorch) with operators that do not match the blocks' layers."""
    op, path = rec.get("op_profile"), Path(rec.get("artifact", "")) / rec.get("file", "")
    if not op or "nodes" not in op or not path.is_file():
        return None
    if path.suffix == ".pte":
        where = op_order_blocks(list(op["nodes"]), blocks)
        if where is None:
            return None
    else:
        where = node_blocks(path, list(blocks))
    out: dict = {}
    for name, node in op["nodes"].items():
        key = name
        while key not in where and _ORT_SUFFIX.search(key):
            key = _ORT_SUFFIX.sub("", key)
        out[where.get(key)] = out.get(where.get(key), 0.0) + node["ms"]
    return out


def table(records: list[dict], device: str, runtime: str, precision: str, model_name: str | None = None) -> dict:
    """The per-block table of a profile from its records: block, kind, MACs, weight and activation
    bytes, model ms, twin ms, latency ratio beside MAC ratio, achieved GMAC/s; the sums of blocks
    against the whole models; the device's peak. Raises naming the profile command to run when
    the records hold no profile for (device, runtime, precision)."""
    from .benchmark import file_timings
    recs = [(r, t) for r, t in file_timings(records) if r["device"]["name"] == device
            and r.get("runtime") == runtime and r.get("precision") == precision and isinstance(r.get("arch"), dict)
            and "side" in r["arch"] and (model_name is None or r.get("model") == model_name
                                          or r["arch"]["side"] == "peak")]
    if not any(r["arch"]["side"] != "peak" for r, _ in recs):
        raise ValueError(f"no profile of {model_name or 'any model'} on {device!r} with {runtime} {precision} in these "
                         f"results; make one: edgeconv profile {model_name or 'MODEL'} --device {device} "
                         f"--runtime {runtime} --precision {precision}")
    p50 = {(r["arch"]["side"], r["arch"]["block"]): t for r, t in recs}
    feats = {(r["arch"]["side"], r["arch"]["block"]): r["arch"] for r, _ in recs}
    emulated = any(r["device"].get("emulated") for r, _ in recs)
    # model order: as planned (the whole model's arch), not as the records came (a block timed again last)
    planned = (feats.get(("model", None)) or {}).get("block_layers") or {}
    order = [b for b in planned if ("model", b) in feats]
    order += [b for s, b in feats if s == "model" and b is not None and b not in order]
    rows = []
    for b in order:
        fm, ft = feats[("model", b)], feats.get(("twin", b))
        mm, mt = p50.get(("model", b)), p50.get(("twin", b))
        # the conv kinds in the block, most MACs first: an inverted residual is pointwise+depthwise
        kind = "+".join(sorted((k for k in KINDS if fm.get(f"macs_{k}")), key=lambda k: -fm[f"macs_{k}"])) or "other"
        rows.append({"block": b, "kind": kind, "macs": fm["macs"], "twin_macs": ft["macs"] if ft else None,
                     **block_bytes(fm, precision), "model_ms": mm, "twin_ms": mt,
                     "latency_ratio": mt / mm if mm and mt else None,
                     "mac_ratio": ft["macs"] / fm["macs"] if ft and fm["macs"] else None,
                     "model_gmacs": fm["macs"] / mm / 1e6 if mm and fm["macs"] else None,
                     "twin_gmacs": ft["macs"] / mt / 1e6 if ft and mt and ft["macs"] else None,
                     "intensity": fm["macs"] / max(1, sum(block_bytes(fm, precision).values())),
                     "twin_intensity": ft["macs"] / max(1, sum(block_bytes(ft, precision).values())) if ft else None})
    # the op profiler's view of each whole model: its node times put to blocks
    # the whole model's blocks in model order with their layer counts (ExecuTorch maps by order)
    in_whole = {r["arch"]["side"]: in_whole_ms(r, r["arch"].get("block_layers") or {
                    b: feats[(r["arch"]["side"], b)].get("layers", 0) for b in order if (r["arch"]["side"], b) in feats})
                for r, _ in recs if r["arch"]["block"] is None}
    sources = {r["arch"]["side"]: r["op_profile"].get("source") for r, _ in recs
               if r["arch"]["block"] is None and r.get("op_profile")}
    for row in rows:
        for side in ("model", "twin"):
            row[f"{side}_in_whole_ms"] = (in_whole.get(side) or {}).get(row["block"])
    whole = {s: p50.get((s, None)) for s in ("model", "twin")}
    sums = {s: sum(v for (side, b), v in p50.items() if side == s and b not in (None, PEAK) and v) for s in ("model", "twin")}
    peak = p50.get(("peak", PEAK))
    return {"device": device, "runtime": runtime, "precision": precision, "model": model_name, "emulated": emulated,
            "rows": rows, "whole_ms": whole, "sum_of_blocks_ms": sums,
            "model_macs": sum(r["macs"] for r in rows), "twin_macs": sum(r["twin_macs"] or 0 for r in rows),
            "peak_gmacs": feats[("peak", PEAK)]["macs"] / peak / 1e6 if peak else None,
            "op_profile": {s: {"blocks_ms": sum(v for b, v in t.items() if b is not None),
                               "outside_blocks_ms": t.get(None, 0.0), "source": sources.get(s)}
                           for s, t in in_whole.items() if t},
            "note": "emulated device: functional timings, not latency" if emulated else ""}
