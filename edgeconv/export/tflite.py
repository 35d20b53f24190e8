"""TFLite (LiteRT): litert-torch for fp32; litert-torch's PT2E quantizer for int8
(per-channel symmetric int8 weights, per-tensor int8 activations).

Phone-friendly I/O: ``channels_last`` makes the model take NHWC input (camera frames) and
``int8_io`` drops the float QUANTIZE/DEQUANTIZE at the edges so the app feeds and reads int8
(ai_edge_litert's own ModifyModelInterface tool); the scale and zero point go to the manifest.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import torch

from . import register

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}
INT_TYPES = ("int8", "uint8", "int16", "int32")


def _io(detail: dict, nchw: list[int]) -> dict:
    scale, zp = detail["quantization"]
    dtype = np.dtype(detail["dtype"]).name
    shape = [int(d) for d in detail["shape"]]
    layout = None
    if len(shape) == 4:
        layout = "NCHW" if shape == nchw else "NHWC"
    return {"name": detail["name"], "shape": shape, "layout": layout, "dtype": dtype,
            "quant": {"scale": float(scale), "zero_point": int(zp)} if dtype != "float32" and scale else None}


@register
class TFLiteExporter:
    name = "tflite"
    suffix = ".tflite"

    def export(self, model, example, precision, calib, quant, path: Path) -> dict:
        import litert_torch
        from ai_edge_litert.interpreter import Interpreter
        module, ex, samples = model, example, calib
        if quant.channels_last:
            module = litert_torch.to_channel_last_io(model, args=[0]).eval()
            ex = example.permute(0, 2, 3, 1).contiguous()
            samples = [c.permute(0, 2, 3, 1).contiguous() for c in calib]
        if precision == "fp32":
            edge = litert_torch.convert(module.eval(), (ex,))
        else:
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig as LiteRTQuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            quantizer = PT2EQuantizer().set_global(
                get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
            for block in quant.keep_fp32:
                quantizer.set_module_name(block, None)
            gm = prepare_pt2e(torch.export.export(module.eval(), (ex,)).module(), quantizer)
            with torch.no_grad():
                for c in samples[:quant.calib_count]:
                    gm(c)
            gm = convert_pt2e(gm, fold_quantize=False)
            edge = litert_torch.convert(gm, (ex,), quant_config=LiteRTQuantConfig(pt2e_quantizer=quantizer))
        edge.export(str(path))
        if precision == "int8" and quant.int8_io:
            from ai_edge_litert import _pywrap_modify_model_interface as mmi
            from ai_edge_litert import schema_py_generated as schema
            tmp = path.with_suffix(".float_io.tflite")
            path.rename(tmp)
            try:
                status = mmi.modify_model_interface(str(tmp), str(path), schema.TensorType.INT8,
                                                    schema.TensorType.INT8)
                if status != 0:
                    raise RuntimeError(f"ModifyModelInterface failed (status {status}): the model has no "
                                       "QUANTIZE/DEQUANTIZE at its edges to remove")
            finally:
                tmp.unlink(missing_ok=True)
        it = Interpreter(model_path=str(path))
        nchw = list(example.shape)
        inp = _io(it.get_input_details()[0], nchw) | {"shape_nchw": nchw}
        return {"input": inp, "output": _io(it.get_output_details()[0], nchw)}

    def inspect(self, path: Path) -> dict:
        """Op and tensor types straight from the flatbuffer: an op runs int8 when its first
        (activation) input is an integer tensor; QUANTIZE/DEQUANTIZE at the edges are I/O."""
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
        m = flatbuffer_utils.read_model(str(path))
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        sg = m.subgraphs[0]
        ops, float_ops, not_int8 = collections.Counter(), collections.Counter(), []
        convs = convs_int8 = 0
        for i, op in enumerate(sg.operators):
            code = m.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            ops[name] += 1
            if name in ("QUANTIZE", "DEQUANTIZE"):
                continue
            types = [type_names[sg.tensors[t].type] for t in op.inputs if t >= 0]
            ok = bool(types) and types[0] in INT_TYPES
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                convs += 1
                convs_int8 += ok
            if not ok:
                float_ops[name] += 1
                not_int8.append(f"{i}:{name}")
        edges = ops["QUANTIZE"] + ops["DEQUANTIZE"]
        total = sum(ops.values()) - edges
        return {"ops": total, "ops_int8": total - sum(float_ops.values()), "convs": convs,
                "convs_int8": convs_int8, "float_ops": dict(float_ops), "not_int8": not_int8[:20],
                "io_quantize_ops": edges, "op_types": dict(ops)}
