"""TFLite (LiteRT): litert-torch for fp32; litert-torch's PT2E quantizer for int8
(per-channel symmetric int8 weights, per-tensor int8 activations).

Phone-friendly I/O (``ExportIO``): ``channels_last`` makes the model take NHWC input (camera
frames). The PT2E int8 conversion yields int8 input and output tensors; unless ``int8_io`` is
asked for, QUANTIZE/DEQUANTIZE ops are added at the edges so the file takes and gives float32.
Either way the manifest records each tensor's dtype, scale and zero point.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import torch

from ..artifact import IOSpec
from . import register

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}
INT_TYPES = ("int8", "uint8", "int16", "int32")


def _io(detail: dict, nchw: list[int], shape_nchw=None) -> IOSpec:
    scale, zp = detail["quantization"]
    dtype = np.dtype(detail["dtype"]).name
    shape = [int(d) for d in detail["shape"]]
    layout = None
    if len(shape) == 4:
        layout = "NCHW" if shape == nchw else "NHWC"
    return IOSpec(detail["name"], shape, layout, dtype,
                  {"scale": float(scale), "zero_point": int(zp)} if dtype != "float32" and scale else None, shape_nchw)


def add_float_io(tflite: bytes) -> bytes:
    """Give an int8-I/O model float32 I/O: a QUANTIZE after each int8 input and a DEQUANTIZE
    before each int8 output, edited in the flatbuffer (schema shipped in ai_edge_litert)."""
    import copy
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils
    tt = schema.TensorType
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))

    def opcode(builtin):
        for i, oc in enumerate(model.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin:
                return i
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 2
        model.operatorCodes.append(oc)
        return len(model.operatorCodes) - 1

    q_op, dq_op = opcode(schema.BuiltinOperator.QUANTIZE), opcode(schema.BuiltinOperator.DEQUANTIZE)
    for sg_index, sg in enumerate(model.subgraphs):
        remap, front, back = {}, [], []

        def float_twin(t_index):
            t = sg.tensors[t_index]
            f = copy.deepcopy(t)
            f.type, f.quantization = tt.FLOAT32, None
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            f.name, t.name = name, name + "_int8"
            model.buffers.append(schema.BufferT())
            f.buffer = len(model.buffers) - 1
            sg.tensors.append(f)
            return len(sg.tensors) - 1

        for ends, ops, op_index, into in ((sg.inputs, front, q_op, True), (sg.outputs, back, dq_op, False)):
            for k, t_index in enumerate(ends):
                if sg.tensors[t_index].type not in (tt.INT8, tt.UINT8):
                    continue
                f_index = float_twin(t_index)
                op = schema.OperatorT()
                op.opcodeIndex = op_index
                op.inputs, op.outputs = ([f_index], [t_index]) if into else ([t_index], [f_index])
                ops.append(op)
                ends[k] = remap[t_index] = f_index
        sg.operators = front + list(sg.operators) + back
        for sd in model.signatureDefs or []:
            if sd.subgraphIndex == sg_index:
                for tm in list(sd.inputs or []) + list(sd.outputs or []):
                    tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _mark_adds(gm) -> None:
    """Tag every tensor add with its own ``source_fn_stack``. torch.export (non-strict) leaves
    that metadata empty, and litert-torch's add annotator finds adds only through it: the
    adds it missed stayed float wherever one residual add feeds the next (every stage of
    three or more inverted residuals)."""
    import operator
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in (torch.ops.aten.add.Tensor, operator.add) \
                and not node.meta.get("source_fn_stack"):
            node.meta["source_fn_stack"] = [(node.name, operator.add)]


@register
class TFLiteExporter:
    name = "tflite"
    suffix = ".tflite"

    def export(self, model, example, precision, calib, recipe, io_options, path: Path) -> dict:
        import litert_torch
        from ai_edge_litert.interpreter import Interpreter
        module, ex, samples = model, example, calib
        if io_options.channels_last:
            module = litert_torch.to_channel_last_io(model, args=[0]).eval()
            ex = example.permute(0, 2, 3, 1).contiguous()
            samples = [c.permute(0, 2, 3, 1).contiguous() for c in calib]
        if precision == "fp32":
            edge = litert_torch.convert(module.eval(), (ex,))
        else:
            from litert_torch.quantize.quant_config import QuantConfig as LiteRTQuantConfig

            from ..quantize import quantize_pt2e
            gm, quantizer = quantize_pt2e(module, ex, samples, "litert", recipe, before_prepare=_mark_adds,
                                          fold_quantize=False)
            edge = litert_torch.convert(gm, (ex,), quant_config=LiteRTQuantConfig(pt2e_quantizer=quantizer.inner))
        if precision == "int8" and not io_options.int8_io:
            path.write_bytes(add_float_io(edge.model_content()))
        else:
            edge.export(str(path))
        it = Interpreter(model_path=str(path))
        nchw = list(example.shape)
        return {"input": _io(it.get_input_details()[0], nchw, nchw), "output": _io(it.get_output_details()[0], nchw),
                "int8_report": self.inspect(path) if precision == "int8" else None}

    def inspect(self, path: Path) -> dict:
        """Op and tensor types straight from the flatbuffer: an op runs int8 when its first
        (activation) input is an integer tensor. A QUANTIZE of a graph input and a DEQUANTIZE
        of a graph output are float I/O edges; any other float<->int8 conversion is the
        border of a float island and counts against the model."""
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
        m = flatbuffer_utils.read_model(str(path))
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        sg = m.subgraphs[0]
        ops, float_ops, not_int8 = collections.Counter(), collections.Counter(), []
        convs = convs_int8 = edges = 0
        for i, op in enumerate(sg.operators):
            code = m.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            types = [type_names[sg.tensors[t].type] for t in op.inputs if t >= 0]
            if (name == "QUANTIZE" and op.inputs[0] in sg.inputs) or \
                    (name == "DEQUANTIZE" and op.outputs[0] in sg.outputs):
                edges += 1
                continue
            ops[name] += 1
            if name == "DEQUANTIZE":
                ok = False
            else:
                ok = bool(types) and types[0] in INT_TYPES
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                convs += 1
                convs_int8 += ok
            if not ok:
                float_ops[name] += 1
                not_int8.append(f"{i}:{name}")
        total = sum(ops.values())
        return {"ops": total, "ops_int8": total - sum(float_ops.values()), "convs": convs,
                "convs_int8": convs_int8, "float_ops": dict(float_ops), "not_int8": not_int8[:20],
                "io_edge_ops": edges, "op_types": dict(ops)}
