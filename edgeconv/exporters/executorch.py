"""ExecuTorch (.pte) lowered to the XNNPACK delegate; int8 through the XNNPACK quantizer
(PT2E: per-channel symmetric int8 weights, per-tensor int8 activations).

Explicit zero pads (TensorFlow SAME padding before stride-2 convs) are quantized with their
input's parameters (``edgeconv.quantize.share_pad_annotations``) and lowered as ``dequantize ->
pad -> conv`` (``fold_pad_requantize``), the pattern XNNPACK's partitioner takes into the
quantized conv: the pad becomes an int8 pad that XNNPACK fuses into the conv's padding. Left to
the stock quantizer, each pad ran in fp32 inside the delegate between a qs8->f32 and an f32->qs8
convert, unfused, on the largest activations of the network (EfficientNet-Lite0 int8: 1.52x ->
1.79x faster than fp32 on one x86 core)."""
from __future__ import annotations

import collections
import warnings
from pathlib import Path

import torch

from ..artifact import IOSpec
from . import register

QDQ = ("quantize_per_tensor", "dequantize_per_tensor", "quantize_per_channel", "dequantize_per_channel",
       "choose_qparams")


def _op_name(node) -> str:
    name = getattr(node.target, "__name__", None) or str(node.target)
    parts = name.split(".")
    return parts[1] if len(parts) == 3 else parts[-1]


def _is(node, op) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target == op


def fold_pad_requantize(gm: torch.fx.GraphModule) -> int:
    """``dequantize -> pad -> quantize -> dequantize -> conv`` with the same parameters on both
    sides (``share_pad_annotations``) becomes ``dequantize -> pad -> conv``: the requantize was
    exact, and this is the form XNNPACK's partitioner folds into the quantized conv (its
    ``ConvolutionConfig`` takes a zero pad feeding a conv as part of the conv's int8 input, and
    its ``InsertPadQDQPass`` makes the pad an int8 pad, which XNNPACK fuses into the conv).
    Returns how many pads were folded."""
    from ..quantize import is_zero_pad
    qd = torch.ops.quantized_decomposed
    folded = 0
    for pad in list(gm.graph.nodes):
        if not is_zero_pad(pad) or not _is(pad.args[0], qd.dequantize_per_tensor.default) or len(pad.users) != 1:
            continue
        q = next(iter(pad.users))
        same = list(q.args[1:]) == list(pad.args[0].args[1:])
        if not _is(q, qd.quantize_per_tensor.default) or len(q.users) != 1 or not same:
            continue
        dq = next(iter(q.users))
        if not _is(dq, qd.dequantize_per_tensor.default) or list(dq.args[1:]) != list(q.args[1:]) or len(dq.users) != 1:
            continue
        conv = next(iter(dq.users))
        if not _is(conv, torch.ops.aten.conv2d.default) or conv.args[0] is not dq:
            continue
        conv.replace_input_with(dq, pad)
        gm.graph.erase_node(dq)
        gm.graph.erase_node(q)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded


def _requantized(gm, node, dq):
    """``node`` followed by a quantize/dequantize pair with the parameters of ``dq``: keeps an
    op that only moves or pads values on the int8 path (the requantize is exact)."""
    qd = torch.ops.quantized_decomposed
    with gm.graph.inserting_after(node):
        q = gm.graph.call_function(qd.quantize_per_tensor.default, (node, *dq.args[1:]))
    with gm.graph.inserting_after(q):
        return gm.graph.call_function(qd.dequantize_per_tensor.default, (q, *dq.args[1:]))


def xnnpack_rewrites(gm: torch.fx.GraphModule, example: torch.Tensor) -> int:
    """Two ops XNNPACK's partitioner leaves to ExecuTorch's portable kernels (in fp32, outside the
    delegate), rewritten into equivalents it takes:

    * ``mean(x, (2, 3))`` without ``keepdim`` (the usual ``x.mean((2, 3))`` before a classifier):
      XNNPACK's global average pooling keeps the dims, so ``mean(..., keepdim=True)`` and a
      reshape;
    * ``avg_pool2d`` with padding counted in the average (PyTorch's default, ShuffleNet's
      shortcut): XNNPACK cannot count padding, so an explicit zero pad and an unpadded pool,
      which averages the same values over the same divisor.

    On an int8 graph the new reshape and pad get a requantize with their input's parameters.
    Returns how many ops were rewritten."""
    from torch.fx.passes.shape_prop import ShapeProp
    aten, qd = torch.ops.aten, torch.ops.quantized_decomposed
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    changed = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function":
            continue
        x = n.args[0] if n.args else None
        meta = x.meta.get("tensor_meta") if isinstance(x, torch.fx.Node) else None
        rank = len(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        if n.target == aten.mean.dim and rank == 4 and not (len(n.args) > 2 and n.args[2]) \
                and not n.kwargs.get("dtype") and sorted(int(d) % 4 for d in n.args[1]) == [2, 3]:
            users = list(n.users)
            with gm.graph.inserting_before(n):
                kept = gm.graph.call_function(aten.mean.dim, (x, [2, 3], True))
            n.replace_all_uses_with(kept)
            gm.graph.erase_node(n)
            q = users[0] if len(users) == 1 and _is(users[0], qd.quantize_per_tensor.default) else None
            for tail in ([u for u in q.users if _is(u, qd.dequantize_per_tensor.default)] if q else [kept]):
                rest = list(tail.users)
                with gm.graph.inserting_after(tail):
                    flat = gm.graph.call_function(aten.flatten.using_ints, (tail, 1))
                out = _requantized(gm, flat, tail) if q else flat
                for u in rest:
                    u.replace_input_with(tail, out)
            changed += 1
        elif n.target == aten.avg_pool2d.default and rank == 4:
            args = list(n.args) + [None] * (7 - len(n.args))
            kernel = list(args[1]) if len(args[1]) == 2 else list(args[1]) * 2
            padding = list(args[3] or [0, 0])
            padding = padding * 2 if len(padding) == 1 else padding
            ceil, include, divisor = bool(args[4]), args[5] is None or bool(args[5]), args[6]
            if not any(padding) or ceil or not include or divisor not in (None, kernel[0] * kernel[1]):
                continue
            with gm.graph.inserting_before(n):
                pad = gm.graph.call_function(aten.constant_pad_nd.default,
                                             (x, [padding[1], padding[1], padding[0], padding[0]], 0.0))
            src = _requantized(gm, pad, x) if _is(x, qd.dequantize_per_tensor.default) else pad
            n.args = (src, args[1], args[2] if args[2] is not None else args[1], [0, 0], False, True)
            changed += 1
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed


def _float_in_quantized_context(graph) -> collections.Counter:
    """Ops of a delegated (XNNPACK) graph that sit between int8 tensors (an activation input from
    a per-tensor dequantize, or the output into a per-tensor quantize) but have no int8 kernel in
    XNNPACK (their partitioner config lacks static quantization): XNNPACK runs them in fp32 with a
    qs8->f32 convert before and an f32->qs8 convert after. Not counted: clones (XNNPACK removes
    them) and zero pads that feed a conv directly (folded into the conv's int8 padding)."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    int8_kernel = {}
    for cfg in ALL_PARTITIONER_CONFIGS:
        name = getattr(cfg, "target_name", None)
        if name:
            int8_kernel[name.split(".")[0]] = ConfigPrecisionType.STATIC_QUANT in cfg().supported_precision_types()
    found = collections.Counter()
    for n in graph.nodes:
        if n.op != "call_function" or _op_name(n) == "getitem" or any(q in _op_name(n) for q in QDQ):
            continue
        op = _op_name(n)
        if "clone" in op or int8_kernel.get(op, True):
            continue
        from_int8 = any("dequantize_per_tensor" in _op_name(a) for a in n.all_input_nodes if a.op == "call_function")
        to_int8 = len(n.users) == 1 and "quantize_per_tensor" in _op_name(next(iter(n.users))) \
            and "dequantize" not in _op_name(next(iter(n.users)))
        folded_pad = op == "constant_pad_nd" and all(_op_name(u) == "convolution" for u in n.users)
        if (from_int8 or to_int8) and not folded_pad:
            found[op] += 1
    return found


@register
class ExecuTorchExporter:
    name = "executorch"
    suffix = ".pte"

    def export(self, model, example, precision, calib, recipe, io_options, path: Path) -> dict:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        module = model.eval()
        quant_rows = None
        if precision == "int8":
            from ..quantize import quantize_pt2e
            module, _ = quantize_pt2e(module, example, calib, "xnnpack", recipe)
            fold_pad_requantize(module)
            quant_rows = self._quantized_convs(module)
        else:
            module = torch.export.export(module, (example,)).module()
        xnnpack_rewrites(module, example)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(torch.export.export(module, (example,)),
                                               partitioner=[XnnpackPartitioner()])
            et = edge.to_executorch()
        with open(path, "wb") as f:
            et.write_to_file(f)
        shape = list(example.shape)
        with torch.no_grad():
            out_shape = list(module(example).shape)
        return {"input": IOSpec("x", shape, "NCHW", "float32", None, shape),
                "output": IOSpec("output", out_shape, None, "float32", None),
                "int8_report": self._delegation(edge, quant_rows) if precision == "int8" else None}

    @staticmethod
    def _quantized_convs(gm) -> list[tuple[str, bool]]:
        """Each conv/linear after convert_pt2e: int8 when its activation comes from a
        dequantize (through a folded zero pad) and its weight from a per-channel dequantize."""
        from ..quantize import is_zero_pad
        rows = []
        for n in gm.graph.nodes:
            if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default,
                                                        torch.ops.aten.linear.default):
                act, w = n.args[0], n.args[1]
                if is_zero_pad(act):
                    act = act.args[0]
                ok = (getattr(act, "target", None) == torch.ops.quantized_decomposed.dequantize_per_tensor.default
                      and getattr(w, "target", None) in (
                          torch.ops.quantized_decomposed.dequantize_per_channel.default,
                          torch.ops.quantized_decomposed.dequantize_per_tensor.default))
                rows.append((n.target.__name__.split(".")[0], ok))
        return rows

    @staticmethod
    def _delegation(edge, quant_rows) -> dict:
        gm = edge.exported_program().graph_module
        outside = collections.Counter(_op_name(n) for n in gm.graph.nodes
                                      if n.op == "call_function" and _op_name(n) != "getitem")
        inside, float_inside = collections.Counter(), collections.Counter()
        for _, sub in gm.named_children():
            if hasattr(sub, "original_module"):
                for n in sub.original_module.graph.nodes:
                    if n.op == "call_function" and _op_name(n) != "getitem":
                        inside[_op_name(n)] += 1
                float_inside.update(_float_in_quantized_context(sub.original_module.graph))
        delegates = outside.pop("executorch_call_delegate", 0)
        portable = {k: v for k, v in outside.items() if not any(q in k for q in QDQ)}
        compute_inside = {k: v for k, v in inside.items() if not any(q in k for q in QDQ)}
        convs_outside = sum(v for k, v in portable.items() if "convolution" in k)
        report = {"delegates": delegates, "ops_delegated": sum(compute_inside.values()),
                  "ops_portable": sum(portable.values()), "portable_ops": portable,
                  "delegated_ops": compute_inside}
        convs = sum(v for k, v in compute_inside.items() if "convolution" in k) + convs_outside
        report["convs"] = convs
        if quant_rows is not None:
            conv_ok = [ok for kind, ok in quant_rows if kind == "conv2d"]
            report["convs_int8"] = sum(conv_ok) if convs_outside == 0 else 0
            report["linear_int8"] = sum(ok for kind, ok in quant_rows if kind == "linear")
        report["ops"] = report["ops_delegated"] + report["ops_portable"]
        # delegated ops run int8 except the convs/linears left float (keep_fp32), and ops XNNPACK
        # has no int8 kernel for: it runs those in fp32 between qs8->f32 and f32->qs8 converts
        float_compute = sum(not ok for _, ok in quant_rows) if quant_rows is not None else 0
        float_delegated = sum(float_inside.values()) if quant_rows is not None else 0
        report["ops_int8"] = (report["ops_delegated"] - float_compute - float_delegated
                              if quant_rows is not None else 0)
        report["float_ops"] = dict(portable)
        if float_compute:
            report["float_ops"]["convolution/linear kept fp32"] = float_compute
        for op, k in float_inside.items() if float_delegated else ():
            report["float_ops"][f"{op} (fp32 inside XNNPACK)"] = k
        return report
