"""Per-block int8 error localisation, in PyTorch.

The int8 model is simulated the way the TFLite and ExecuTorch exporters build it
(``edgeconv.quantize.quantize_pt2e``: batch norm folded, ``torch.export``, PT2E with the XNNPACK
quantizer, calibration, ``convert_pt2e``, bias correction); its quantize/dequantize pairs run
in float ("fake quantized", the arithmetic the int8 kernels approximate).

Each top-level block's output (block boundaries: ``model.named_blocks()``; in the int8 graph,
the dequantized tensor the next block reads) is compared with the fp32 model's on the same
samples, two ways:

* ``sqnr_db``: SQNR of the block's output against fp32 in the int8 model as it runs, i.e. the
  error accumulated up to there; ``added_db``: ``sqnr(previous block) - sqnr(this block)``;
* ``alone_db``: SQNR of the block's output when it is fed the fp32 model's input to it
  (quantized as the int8 graph quantizes its input): the error the block makes by itself.
  Blocks are ranked by it, so the block that breaks stands out even though its error then
  propagates to everything after it.

``what_if_fp32`` re-quantizes with named blocks left in fp32 and reports the logits' SQNR and
top-1 agreement with fp32, before and after.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .accuracy import sqnr_db, top1_agreement
from .quantize import QuantRecipe, fold_batchnorm, quantize_pt2e


def _block_of(node, names: list[str]) -> str | None:
    """The top-level block a graph node comes from (deepest match on its module path)."""
    stack = node.meta.get("nn_module_stack") or {}
    best = None
    for path, _ in stack.values():
        path = path[len("L['self']."):] if path.startswith("L['self'].") else path
        for b in names:
            if path == b or path.startswith(b + "."):
                if best is None or len(b) > len(best):
                    best = b
    return best


def quantize_int8(model: nn.Module, calib: np.ndarray, recipe: QuantRecipe | None = None,
                 keep_fp32: Iterable[str] | None = None) -> torch.fx.GraphModule:
    """The ExecuTorch exporter's int8 graph for ``model`` (batch norm folded, ``recipe`` with
    ``keep_fp32`` modules left float if given), calibrated on ``calib`` (N x C x H x W) one
    sample at a time: the converted, fake-quantized graph module."""
    recipe = recipe or QuantRecipe()
    recipe = replace(recipe, calib_count=len(calib),
                     keep_fp32=recipe.keep_fp32 if keep_fp32 is None else tuple(keep_fp32))
    samples = [torch.from_numpy(np.ascontiguousarray(calib[i:i + 1])) for i in range(len(calib))]
    gm, _ = quantize_pt2e(fold_batchnorm(model, samples[0]), samples[0], samples, "xnnpack", recipe,
                          fold_quantize=False)
    return gm


def _last_nodes(gm: torch.fx.GraphModule, names: list[str]) -> dict[str, torch.fx.Node]:
    """Each block's last node in the graph: its output before any output quantization."""
    last: dict[str, torch.fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function":
            b = _block_of(node, names)
            if b is not None:
                last[b] = node
    return last


def block_output_nodes(gm: torch.fx.GraphModule, names: list[str]) -> dict[str, torch.fx.Node]:
    """For each block, the node holding its output as the rest of the graph reads it: the
    block's last node, or the dequantize after its output quantize."""
    out = {}
    for b, node in _last_nodes(gm, names).items():
        cur = node
        q = [u for u in cur.users if "quantize_per_tensor" in str(u.target) and "dequant" not in str(u.target)]
        if len(q) == 1:  # the output is requantized: read it through (one of) its dequantize(s)
            dq = [u for u in q[0].users if "dequantize_per_tensor" in str(u.target)]
            cur = dq[0] if dq else cur
        out[b] = cur
    return out


def _capture_graph(gm: torch.fx.GraphModule, nodes: dict[str, torch.fx.Node], x: np.ndarray,
                   batch: int, feed: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The values of ``nodes`` (block -> node) and the logits, one sample at a time. With
    ``feed`` (block -> fp32 outputs), each of those nodes, once recorded, is replaced by the fp32
    value, so the next block starts from the fp32 model's input (quantized as the graph
    quantizes it) and each recorded value holds one block's own int8 error."""
    wanted = {n: b for b, n in nodes.items()}
    got: dict[str, list] = {b: [] for b in nodes}
    logits = []

    class Rec(torch.fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if n in wanted:
                b = wanted[n]
                got[b].append(r.detach().numpy().copy())
                if feed is not None and b in feed and tuple(r.shape) == (1, *feed[b].shape[1:]):
                    r = torch.from_numpy(feed[b][self.sample:self.sample + 1])
            return r

    with torch.no_grad():  # the graph was exported with a batch of 1, like the model files
        for i in range(len(x)):
            rec = Rec(gm)
            rec.sample = i
            logits.append(rec.run(torch.from_numpy(x[i:i + 1])).detach().numpy())
    return {b: np.concatenate(v) for b, v in got.items()}, np.concatenate(logits)


def _capture_eager(model: nn.Module, names: list[str], x: np.ndarray, batch: int):
    mods = dict(model.named_modules())
    got: dict[str, list] = {b: [] for b in names}
    hooks = [mods[b].register_forward_hook(lambda m, i, o, b=b: got[b].append(o.detach().numpy().copy()))
             for b in names]
    logits = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                logits.append(model(torch.from_numpy(x[i:i + batch])).numpy())
    finally:
        for h in hooks:
            h.remove()
    return {b: np.concatenate(v) for b, v in got.items()}, np.concatenate(logits)


@dataclass
class BlockError:
    name: str
    arch: str
    sqnr_db: float
    added_db: float | None
    alone_db: float | None = None
    rank: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "arch": self.arch, "sqnr_db": self.sqnr_db, "added_db": self.added_db,
                "alone_db": self.alone_db, "rank": self.rank}


def _rank_key(e: BlockError) -> float:
    return e.alone_db if e.alone_db is not None else e.sqnr_db


def localize(model: nn.Module, calib: np.ndarray, x: np.ndarray | None = None, *, keep_fp32: Iterable[str] = (),
             quantized: torch.fx.GraphModule | None = None, quant: QuantRecipe | None = None,
             batch: int = 16, depth: int = 1) -> dict:
    """Per-block SQNR of the int8 (PT2E, XNNPACK quantizer) model against fp32.

    ``calib``: calibration samples; ``x``: samples to measure on (default: ``calib``, as in the
    issue: the error the calibration itself leaves). ``quantized``: an already converted graph
    module (e.g. one with a deliberately corrupted scale) instead of quantizing here.
    Blocks are ranked by ``alone_db``, worst first.
    Returns {"blocks": [BlockError dicts in model order], "ranked": [names, worst first],
    "logits_sqnr_db", "agreement"}.
    """
    from .card import blocks
    x = calib if x is None else x
    if isinstance(model, torch.fx.GraphModule):
        batch = 1  # a .pt2 program was captured for one sample
    names = blocks(model, depth)
    mods = dict(model.named_modules())
    arch = getattr(model, "arch", None) or {b: type(mods[b]).__name__ for b in names}
    quant = quant or QuantRecipe()
    gm = quantized if quantized is not None else quantize_int8(model, calib, quant, keep_fp32)
    ref_blocks, ref_logits = _capture_eager(fold_batchnorm(model), names, x, batch)
    nodes = block_output_nodes(gm, names)
    q_blocks, q_logits = _capture_graph(gm, nodes, x, batch)
    alone, _ = _capture_graph(gm, _last_nodes(gm, names), x, batch, feed=ref_blocks)
    rows, prev = [], None
    for b in names:
        if b not in q_blocks:
            continue
        s = sqnr_db(ref_blocks[b], q_blocks[b].reshape(ref_blocks[b].shape))
        own = alone.get(b)
        own = sqnr_db(ref_blocks[b], own.reshape(ref_blocks[b].shape)) \
            if own is not None and own.size == ref_blocks[b].size else None
        rows.append(BlockError(b, arch.get(b, ""), s, None if prev is None else prev - s, own))
        prev = s
    for rank, e in enumerate(sorted(rows, key=_rank_key), 1):
        e.rank = rank
    return {"blocks": [e.to_dict() for e in rows],
            "ranked": [e.name for e in sorted(rows, key=lambda e: e.rank)],
            "logits_sqnr_db": sqnr_db(ref_logits, q_logits), "agreement": top1_agreement(ref_logits, q_logits),
            "keep_fp32": list(keep_fp32), "count": int(len(x)),
            "method": "PT2E XNNPACK quantizer (per-channel symmetric int8 weights, per-tensor int8 "
                      "activations), fake-quantized in PyTorch; BN folded"
                      + ("; bias corrected" if quant.bias_correction and quantized is None else "")}


def what_if_fp32(model: nn.Module, calib: np.ndarray, x: np.ndarray, keep_fp32: Iterable[str],
                 y: np.ndarray | None = None, quant: QuantRecipe | None = None, batch: int = 16) -> dict:
    """Logit SQNR and top-1 agreement with fp32 (and top-1 against ``y`` if given) of the int8
    simulation with every block int8, and with ``keep_fp32`` blocks left in fp32."""
    ref_logits = _capture_eager(fold_batchnorm(model), [], x, batch)[1]
    out = {}
    for label, keep in (("all_int8", ()), ("keep_fp32", tuple(keep_fp32))):
        gm = quantize_int8(model, calib, quant, keep)
        q = _capture_graph(gm, {}, x, batch)[1]
        out[label] = {"keep_fp32": list(keep), "logits_sqnr_db": sqnr_db(ref_logits, q),
                      "agreement": top1_agreement(ref_logits, q)}
        if y is not None:
            out[label]["top1"] = float(np.mean(q.argmax(1) == y))
    if y is not None:
        out["fp32_top1"] = float(np.mean(ref_logits.argmax(1) == y))
    return out


def corrupt_weight_scale(gm: torch.fx.GraphModule, block: str, names: list[str], factor: float = 8.0) -> int:
    """Test helper: multiply the weight dequantize scale of every conv/linear in ``block`` by
    ``factor`` (the int8 path only; fp32 is untouched). Returns how many scales changed."""
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or _block_of(node, names) != block or \
                node.target not in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
            continue
        dq = node.args[1]
        if "dequantize_per_channel" not in str(getattr(dq, "target", "")) or dq.args[1].op != "get_attr":
            continue
        attr = f"_corrupted_scale_{changed}_{node.name}"
        gm.register_buffer(attr, getattr(gm, dq.args[1].target) * factor)
        with gm.graph.inserting_before(dq):
            new_scale = gm.graph.get_attr(attr)
        dq.args = (dq.args[0], new_scale, *dq.args[2:])
        changed += 1
    gm.recompile()
    return changed



def localize_artifact(art, ev, keep_fp32=(), depth: int = 1) -> dict:
    """``check --localize`` on an artifact: rebuild the eager model, re-read the calibration
    samples its manifest records, and rank the blocks (``localize``); with ``keep_fp32``, also
    ``what_if_fp32`` on the evaluation samples ``ev``."""
    import warnings

    from .card import check_module_paths
    from .data import load_data
    from .parity import reference_model
    m = art.manifest
    model = reference_model(art)
    if getattr(model, "input_shape", None) is None:  # a graph module from a .pt2 program
        model.input_shape = tuple(m.input_shape_nchw[1:])
    calib = m.calibration or {}
    source = calib.get("source")
    if not (source == "digits" or (source and Path(source).is_dir())):
        raise ValueError(f"{art.path}: --localize re-reads the calibration samples, but the manifest's source "
                         f"{source!r} is not 'digits' or a folder that exists here")
    recipe = m.recipe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its unreadable files were reported when the artifact was made
        cal = load_data(source, input_shape=tuple(m.input_shape_nchw[1:]), preprocess=m.preprocess, split="calib",
                        calib_count=int(calib.get("count") or recipe.calib_count), labels=m.labels,
                        class_index=calib.get("class_index"), labelled=False)
    if calib.get("digests") and sorted(cal.digests) != sorted(calib["digests"]):
        raise ValueError(f"{art.path}: the calibration folder {source} has changed since the export (its "
                         "calibration images are not the ones the manifest records); --localize would rank "
                         "the blocks on other samples: export again from this folder")
    out = {"localize": localize(model, cal.x, quant=recipe, depth=depth)}
    if keep_fp32:
        check_module_paths(_with_card(model, m), keep_fp32)
        out["what_if"] = what_if_fp32(model, cal.x, ev.x, keep_fp32, y=ev.y, quant=recipe)
    return out


def _with_card(model, manifest):
    from .card import ModelCard
    if getattr(model, "card", None) is None:
        model.card = ModelCard(manifest.model, tuple(manifest.input_shape_nchw[1:]))
    return model
