"""ONNX: torch.onnx (torch.export based) for fp32; ONNX Runtime static quantization in QDQ
format for int8: per-channel symmetric int8 weights, per-tensor asymmetric 8-bit
activations. Activations are uint8 (U8S8), the combination ONNX Runtime's CPU kernels fuse
into QLinearConv on x86 and ARM alike; with int8 activations its x86 build left half the
convs as DequantizeLinear -> float Conv -> QuantizeLinear and ran slower than fp32."""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..artifact import IOSpec
from . import cores, register

COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Ops that only move or reshape data: a QDQ model keeps them in int8 without a Q/DQ pair.
LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Constant"}


def _io(tensor, shape_nchw=None) -> IOSpec:
    shape = [d.dim_value for d in tensor.type.tensor_type.shape.dim]
    return IOSpec(tensor.name, shape, "NCHW" if len(shape) == 4 else None, "float32", None, shape_nchw)


RUNTIME_FLOAT_COMPUTE = {"Conv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def _runtime_ops(path: Path) -> dict:
    """The op types ONNX Runtime's CPU provider runs after its graph optimizations
    (QDQ groups fused into QLinearConv, QGemm, ...)."""
    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
        return dict(collections.Counter(n.op_type for n in graph.node))


def _global_pool(m) -> bool:
    """ReduceMean over H and W (what torch.export makes of a global average pool) becomes
    GlobalAveragePool, which ONNX Runtime's QDQ quantizer keeps in int8. True if changed."""
    import onnx
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    changed = False
    for i, n in enumerate(m.graph.node):
        if n.op_type != "ReduceMean":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        axes = attrs.get("axes")
        if axes is None and len(n.input) > 1:
            axes = inits.get(n.input[1])
        if axes is None or attrs.get("keepdims", 1) != 1 or sorted(int(a) % 4 for a in axes) != [2, 3]:
            continue
        pool = onnx.helper.make_node("GlobalAveragePool", [n.input[0]], list(n.output), name=n.name)
        pool.metadata_props.extend(n.metadata_props)
        m.graph.node.remove(n)
        m.graph.node.insert(i, pool)
        changed = True
    if changed:
        used = {i for node in m.graph.node for i in node.input}
        for init in [i for i in m.graph.initializer if i.name not in used]:
            m.graph.initializer.remove(init)
    return changed


def _channel_mean(values: list) -> np.ndarray:
    """Per-channel (axis 1 of each sample's value) mean over samples and positions."""
    return np.mean([_per_channel(v) for v in values], axis=0)


def _session(model, outputs: list[str] | None = None):
    """An ONNX Runtime session that runs ``model`` op by op as written (no graph optimization,
    so no QDQ fusion: a quantized model runs fake-quantized, like PT2E's), with ``outputs``
    (default: the model's own) as its outputs. One thread per run: ``_map`` runs samples side
    by side instead, which gives the same values without the per-op hand-offs between
    threads that stall whenever another process holds a core."""
    import onnx
    import onnxruntime as ort
    if outputs is not None:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
        model = m
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _map(fn, items: list) -> list:
    """``[fn(item) for item in items]``, on as many threads as this process may use cores
    (ONNX Runtime and numpy let go of the GIL while they compute)."""
    workers = cores()
    if workers < 2 or len(items) < 2:
        return [fn(i) for i in items]
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v.mean(axis=tuple(d for d in range(v.ndim) if d != 1))


def _channel_means(model, outputs: list[str], feeds: list[dict]) -> list[np.ndarray]:
    """``_channel_mean`` of each of ``outputs`` over the ``feeds``, in one pass that keeps
    only each sample's per-channel means."""
    sess = _session(model, outputs)
    per_sample = _map(lambda f: [_per_channel(v) for v in sess.run(outputs, f)], feeds)
    return [np.mean([means[k] for means in per_sample], axis=0) for k in range(len(outputs))]


def _node_inputs(node) -> list[str]:
    """Every tensor ``node`` reads, including outer-scope names its subgraphs use."""
    names = [i for i in node.input if i]
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            inner = {o for n in g.node for o in n.output} | {i.name for i in g.initializer} | \
                    {i.name for i in g.input}
            names += [i for n in g.node for i in _node_inputs(n) if i not in inner]
    return names


def _run_in_stages(model, layers: list[str], feeds: list[dict], values: dict):
    """Run ``model`` on every sample of ``feeds`` once, stopping after each node named in
    ``layers`` (in graph order): yields ``(k, outputs)``, every sample's first output of
    ``layers[k]``. The initializers named in ``values`` take their value from it at the time
    the rest of the graph runs, so a caller that changes ``values[bias of layers[k]]`` before
    taking the next item sees every later layer fed by the changed one.

    The graph is cut into one sub-model per layer: stage ``k`` runs the nodes after
    ``layers[k - 1]`` up to ``layers[k]``, each op as written, on the tensors the stages
    before it left. It starts by running ``layers[k - 1]`` again with its current
    initializers (each layer runs twice in all, not once per later change); nodes that
    read only initializers (the DequantizeLinear of a weight) go with every stage that
    reads them."""
    import onnx
    from onnx import numpy_helper
    g = model.graph
    nodes = list(g.node)
    inits = {i.name: i for i in g.initializer}
    producer = {o: p for p, n in enumerate(nodes) for o in n.output}
    reads = [_node_inputs(n) for n in nodes]
    varying = {i.name for i in g.input if i.name not in inits}
    dynamic = []
    for n, r in zip(nodes, reads):
        dynamic.append(any(i in varying for i in r))
        if dynamic[-1]:
            varying.update(n.output)
    position = {n.name: p for p, n in enumerate(nodes)}
    cuts = [position[name] for name in layers]
    members = []
    for k, cut in enumerate(cuts):
        low = cuts[k - 1] if k else -1
        ps = ([low] if k else []) + [p for p in range(low + 1, cut + 1) if dynamic[p]]
        todo, with_constants = list(ps), set(ps)
        while todo:  # the constant nodes these read, and the constant nodes those read
            for i in reads[todo.pop()]:
                p = producer.get(i)
                if p is not None and not dynamic[p] and p not in with_constants:
                    with_constants.add(p)
                    todo.append(p)
        members.append(sorted(with_constants))
    last_read = {}
    for k, ps in enumerate(members):
        for p in ps:
            for i in reads[p]:
                last_read[i] = k

    store = [dict(f) for f in feeds]
    for k, ps in enumerate(members):
        made = {o for p in ps for o in nodes[p].output}
        ins = sorted({i for p in ps for i in reads[p] if i not in made and i not in inits})
        out = nodes[cuts[k]].output[0]
        outs = sorted({o for o in made if last_read.get(o, -1) > k} | {out})
        first = store[0]
        constants = sorted({i for p in ps for i in reads[p] if i in inits})
        graph = onnx.helper.make_graph(
            [nodes[p] for p in ps], f"stage{k}",
            [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(first[i].dtype),
                                                list(first[i].shape)) for i in ins],
            [onnx.helper.make_empty_tensor_value_info(o) for o in outs],
            [numpy_helper.from_array(values[i], i) if i in values else inits[i] for i in constants])
        sub = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        sub.functions.extend(model.functions)
        sess = _session(sub)
        results = _map(lambda sample: dict(zip(outs, sess.run(outs, {i: sample[i] for i in ins}))), store)
        got = []
        for sample, result in zip(store, results):
            got.append(result[out])
            sample.update((o, v) for o, v in result.items() if last_read.get(o, -1) > k)
            for name in [n for n in sample if last_read.get(n, -1) <= k]:
                del sample[name]
        yield k, got


def bias_correct(reference: Path, quantized: Path, feeds: list[dict]) -> int:
    """Empirical bias correction of a QDQ model (the ONNX counterpart of
    ``edgeconv.quantize.bias_correct``): for each Conv and Gemm with a bias, in graph order, the
    mean of every output channel over the calibration ``feeds`` is measured in the ``quantized``
    model (with the biases corrected so far, every op run as written: fake-quantized) and in the
    float ``reference`` model it was quantized from (layers matched by node name); the quantized
    bias moves by the difference (int32 biases by whole steps of their scale). ``quantized`` is
    rewritten in place. Returns how many biases changed.

    Each correction changes what every later layer sees, so the layers are corrected in order
    (correcting all of them from one measurement overshoots: EfficientNet-Lite0's shifts grow
    pass after pass). The quantized model runs once, cut after each corrected layer
    (``_run_in_stages``), which runs that layer again with its corrected bias before the
    layers after it read its output: the same values as a full pass per layer."""
    import onnx
    from onnx import numpy_helper

    ref = onnx.load(str(reference))
    ref_out = {n.name: n.output[0] for n in ref.graph.node if n.op_type in ("Conv", "Gemm")}
    model = onnx.load(str(quantized))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    layers = []  # (node name, output, bias initializer, its scale or None for a float bias)
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm") or n.name not in ref_out or len(n.input) < 3 or not n.input[2]:
            continue
        b = n.input[2]
        if b in inits:
            layers.append((n.name, n.output[0], b, None))
        elif b in producer and producer[b].op_type == "DequantizeLinear" and producer[b].input[0] in inits:
            dq = producer[b]
            zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else 0
            if np.any(zp != 0) or dq.input[1] not in inits:
                continue
            layers.append((n.name, n.output[0], dq.input[0], numpy_helper.to_array(inits[dq.input[1]])))
    if not layers:
        return 0

    targets = _channel_means(ref, [ref_out[name] for name, *_ in layers], feeds)
    values = {b: numpy_helper.to_array(inits[b]).copy() for _, _, b, _ in layers}
    changed = 0
    for k, outs in _run_in_stages(model, [name for name, *_ in layers], feeds, values):
        _, _, b, scale = layers[k]
        got, target = _channel_mean(outs), targets[k]
        if got.shape != target.shape:
            continue
        shift = got - target
        if scale is None:
            values[b] = (values[b] - shift).astype(values[b].dtype)
        else:
            values[b] = values[b] - np.round(shift / scale).astype(values[b].dtype)
        changed += 1
    for init in model.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(values[init.name], init.name))
    onnx.save(model, str(quantized))
    return changed


def _torchlib_table_once() -> None:
    """``torch.onnx.export`` rebuilds its table of ONNX functions (onnxscript's torchlib) from their
    Python source on every call, ~1 s each time (half the export of a block micro-model): the
    table is the same every time, so it is built once per process. Where torch looks it up
    elsewhere, nothing changes but the time."""
    try:
        from torch.onnx._internal._lazy_import import onnxscript_apis
        ops = onnxscript_apis.get_torchlib_ops
    except (ImportError, AttributeError):
        return
    if not hasattr(ops, "cache_info"):
        onnxscript_apis.get_torchlib_ops = functools.cache(ops)


@register
class OnnxExporter:
    name = "onnx"
    suffix = ".onnx"

    def _export_fp32(self, model, example, path: Path) -> None:
        import onnx
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        _torchlib_table_once()
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["input"],
                              output_names=["logits"], external_data=False, optimize=True, verbose=False)
        m = onnx.load(str(path))
        if _global_pool(m):
            onnx.save(m, str(path))

    def export(self, model, example, precision, calib, recipe, io_options, path: Path) -> dict:
        import onnx
        if precision == "fp32":
            self._export_fp32(model, example, path)
        else:
            from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                                  QuantType, quantize_static)
            from onnxruntime.quantization.shape_inference import quant_pre_process
            methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}

            class Reader(CalibrationDataReader):
                def __init__(self, name):
                    self.items = iter([{name: t.numpy()} for t in calib[:recipe.calib_count]])

                def get_next(self):
                    return next(self.items, None)

            with tempfile.TemporaryDirectory() as tmp:
                fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
                self._export_fp32(model, example, fp32)
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                input_name = onnx.load(str(pre)).graph.input[0].name
                with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their ranges
                    quantize_static(
                        str(pre), str(path), calibration_data_reader=Reader(input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=methods[recipe.method],
                        nodes_to_exclude=self._excluded(pre, recipe.keep_fp32),
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                       **recipe.extra.get("onnx", {})})
                if recipe.bias_correction:
                    bias_correct(pre, path, [{input_name: t.numpy()} for t in calib[:recipe.calib_count]])
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
        return {"input": _io(m.graph.input[0], list(example.shape)), "output": _io(m.graph.output[0]),
                "int8_report": self.inspect(path) if precision == "int8" else None}

    @staticmethod
    def _excluded(path: Path, keep_fp32) -> list[str]:
        """ONNX nodes inside the named blocks, found by the module path the exporter records
        in each node's ``pkg.torch.onnx.name_scopes`` metadata."""
        if not keep_fp32:
            return []
        import onnx
        out = []
        for n in onnx.load(str(path)).graph.node:
            scopes = next((p.value for p in n.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
            if any(f"'{b}'" in scopes for b in keep_fp32):
                out.append(n.name)
        return out

    def inspect(self, path: Path) -> dict:
        """Which ops run int8: a compute op (Conv/Gemm/MatMul) is int8 when its activation and
        weight come from DequantizeLinear and its output goes to QuantizeLinear; any other op
        when all its inputs are dequantized and its outputs requantized (or it only moves data)."""
        import onnx
        m = onnx.load(str(path))
        producer = {o: n for n in m.graph.node for o in n.output}
        consumers = collections.defaultdict(list)
        for n in m.graph.node:
            for i in n.input:
                consumers[i].append(n)
        graph_outputs = {o.name for o in m.graph.output}
        inits = {i.name for i in m.graph.initializer}

        def from_dq(t):
            p = producer.get(t)
            return p is not None and p.op_type == "DequantizeLinear"

        def to_q(t):
            cs = consumers[t]
            return bool(cs) and all(c.op_type == "QuantizeLinear" for c in cs)

        def int8_flow(t):  # an int8 tensor: produced by Q/DQ chain or a layout op on one
            p = producer.get(t)
            return p is not None and (p.op_type in QDQ_OPS or (p.op_type in LAYOUT_OPS and
                                                               all(int8_flow(i) for i in p.input[:1])))

        ops, float_ops, not_int8 = collections.Counter(), collections.Counter(), []
        convs = convs_int8 = 0
        for n in m.graph.node:
            if n.op_type in QDQ_OPS or n.op_type == "Constant":
                continue
            ops[n.op_type] += 1
            ins = [i for i in n.input if i and i not in inits]
            if n.op_type in COMPUTE_OPS:
                ok = all(from_dq(i) for i in n.input[:2]) and (to_q(n.output[0]) or n.output[0] in graph_outputs
                                                                and n.op_type != "Conv")
                if n.op_type == "Conv":
                    convs += 1
                    convs_int8 += ok
            elif n.op_type in LAYOUT_OPS:
                ok = all(int8_flow(i) for i in ins[:1])
            else:
                ok = all(from_dq(i) for i in ins) and all(to_q(o) for o in n.output)
            if not ok:
                float_ops[n.op_type] += 1
                not_int8.append(n.name)
        total = sum(ops.values())
        runtime = _runtime_ops(path)
        runtime_float = sum(v for k, v in runtime.items() if k in RUNTIME_FLOAT_COMPUTE)
        if runtime_float:  # QDQ in the file, but ONNX Runtime did not fuse it: a float conv runs
            float_ops["Conv (not fused by onnxruntime)"] = runtime_float
        convs_int8 = min(convs_int8, sum(v for k, v in runtime.items() if "QLinearConv" in k))
        return {"ops": total, "ops_int8": total - sum(float_ops.values()), "convs": convs,
                "convs_int8": convs_int8, "float_ops": dict(float_ops), "not_int8": not_int8[:20],
                "op_types": dict(ops), "runtime_ops": runtime}
