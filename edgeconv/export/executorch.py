"""ExecuTorch (.pte) lowered to the XNNPACK delegate; int8 through the XNNPACK quantizer
(PT2E: per-channel symmetric int8 weights, per-tensor int8 activations)."""
from __future__ import annotations

import collections
import warnings
from pathlib import Path

import torch

from . import register

QDQ = ("quantize_per_tensor", "dequantize_per_tensor", "quantize_per_channel", "dequantize_per_channel",
       "choose_qparams")


def _op_name(node) -> str:
    name = getattr(node.target, "__name__", None) or str(node.target)
    parts = name.split(".")
    return parts[1] if len(parts) == 3 else parts[-1]


def xnnpack_quantizer():
    """The XNNPACK PT2E quantizer: per-channel symmetric int8 weights, per-tensor int8 activations."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


@register
class ExecuTorchExporter:
    name = "executorch"
    suffix = ".pte"

    def __init__(self):
        self._reports: dict[str, dict] = {}

    def export(self, model, example, precision, calib, quant, path: Path) -> dict:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        module = model.eval()
        quant_rows = None
        if precision == "int8":
            from ..quantize import quantize_pt2e
            module = quantize_pt2e(module, example, calib, xnnpack_quantizer(), quant)
            quant_rows = self._quantized_convs(module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(torch.export.export(module, (example,)),
                                               partitioner=[XnnpackPartitioner()])
            et = edge.to_executorch()
        with open(path, "wb") as f:
            et.write_to_file(f)
        self._reports[str(path)] = self._delegation(edge, quant_rows)
        io = {"shape": list(example.shape), "layout": "NCHW", "dtype": "float32", "quant": None}
        return {"input": {"name": "x", **io, "shape_nchw": list(example.shape)},
                "output": {"name": "output", "shape": None, "layout": None, "dtype": "float32", "quant": None}}

    @staticmethod
    def _quantized_convs(gm) -> list[tuple[str, bool]]:
        """Each conv/linear after convert_pt2e: int8 when its activation comes from a
        dequantize and its weight from a per-channel dequantize."""
        rows = []
        for n in gm.graph.nodes:
            if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default,
                                                        torch.ops.aten.linear.default):
                act, w = n.args[0], n.args[1]
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
        inside = collections.Counter()
        for _, sub in gm.named_children():
            if hasattr(sub, "original_module"):
                for n in sub.original_module.graph.nodes:
                    if n.op == "call_function" and _op_name(n) != "getitem":
                        inside[_op_name(n)] += 1
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
        # delegated ops run int8 except the convs/linears left float (keep_fp32): XNNPACK takes those in fp32
        float_compute = sum(not ok for _, ok in quant_rows) if quant_rows is not None else 0
        report["ops_int8"] = report["ops_delegated"] - float_compute if quant_rows is not None else 0
        report["float_ops"] = dict(portable)
        if float_compute:
            report["float_ops"]["convolution/linear kept fp32"] = float_compute
        return report

    def inspect(self, path: Path) -> dict:
        if str(path) not in self._reports:
            raise ValueError(f"{path}: the ExecuTorch int8 report is made at export time")
        return self._reports[str(path)]
