"""int8 post-training quantization: one versioned recipe, applied per backend.

The recipe (``QuantRecipe``) is a dataclass that survives a JSON round trip, so a manifest
records exactly how an artifact was quantized. Every backend gets the same scheme:
static int8, weights symmetric per output channel, activations per tensor, ranges
calibrated on real samples; batch norm is folded into the convs first (``fold_batchnorm``,
for any module: conv -> batch-norm pairs are found in the exported graph)
and ReLU/ReLU6 fuse into the conv they follow in every backend's int8 kernels.

The recipe's defaults, chosen on the pretrained EfficientNet-Lite0 (bench/accuracy_bench.py,
200 ImageNet photos: calibrate on 64, evaluate on the other 136, five shuffles):

* 64 calibration images (32 scored the same within one image).
* ONNX Runtime ranges from the 99.999th percentile of a histogram (``method="percentile"``):
  logit SQNR 23.5 dB against 20.5 dB with min-max. (ONNX Runtime's entropy calibrator is not
  offered: through ``quantize_static`` its 128-bin defaults give exactly the min-max ranges,
  and with a 2048-bin histogram it clipped EfficientNet-Lite0 to 16% top-1.)
* The PT2E quantizers (TFLite, ExecuTorch) quantize a conv's output after its ReLU6 clamp
  (``ClampFusingQuantizer``), not before: their stock annotation shares the clamp's observer
  with the conv, whose folded output spans hundreds; logit SQNR 4.9-7.4 dB -> 19.5 dB.
* Bias correction in every format (``bias_correct`` here for the PT2E graphs,
  ``edgeconv.export.onnx.bias_correct`` for ONNX): int8 rounding shifts the mean of each conv's
  output channels and the shifts add up through the network; each bias is moved to cancel the
  shift measured on the calibration samples, layer by layer. Logit SQNR 19.5 -> 23.4 dB (ONNX
  Runtime), 19.4 -> 21.6 dB (LiteRT), 19.5 -> 21.8 dB (ExecuTorch), medians over five splits;
  mean top-1 drop over the splits 1.18 -> 1.03 / 0.88 -> 0.44 / 0.88 -> 0.29 points.
* One PT2E entry point (``quantize_pt2e``) for every PT2E backend, with its quantizer from
  ``make_quantizer("xnnpack" | "litert", recipe)``.
* First and last layers stay int8. Keeping the first block in fp32 (``keep_fp32=("blocks.0",)``,
  the block localisation ranks worst) adds 1-2 dB and stays an option: it leaves an fp32
  island of 2.6% of the MACs.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field, fields

CALIBRATION_METHODS = ("minmax", "percentile")
MAX_CALIB_COUNT = 10_000  # ranges settle within a few hundred images; more only fills memory
BACKENDS = ("xnnpack", "litert")


@dataclass(frozen=True)
class QuantRecipe:
    """How the int8 files are made, the same in every format (recorded in each manifest).

    Version 3; version 1 had no bias correction and version 2 also carried the I/O options
    (``channels_last``, ``int8_io``), which are export options (``edgeconv.export.ExportIO``),
    not part of the recipe."""
    version: int = 3
    weights: str = "int8_symmetric_per_channel"
    activations: str = "int8_per_tensor"
    method: str = "percentile"
    calib_count: int = 64
    bias_correction: bool = True
    keep_fp32: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"method={self.method!r}: calibration method must be one of "
                             f"{', '.join(CALIBRATION_METHODS)}")
        if not isinstance(self.calib_count, int) or isinstance(self.calib_count, bool) \
                or not 1 <= self.calib_count <= MAX_CALIB_COUNT:
            raise ValueError(f"calib_count={self.calib_count!r}: need a whole number of calibration samples from 1 "
                             f"to {MAX_CALIB_COUNT}")
        if not isinstance(self.bias_correction, bool):
            raise ValueError(f"bias_correction={self.bias_correction!r}: must be true or false")
        if isinstance(self.keep_fp32, str) or not all(isinstance(b, str) and b for b in self.keep_fp32):
            raise ValueError(f"keep_fp32={self.keep_fp32!r}: must be a list of module paths, e.g. [\"blocks.0\"]")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keep_fp32"] = list(self.keep_fp32)
        return d

    def describe(self) -> str:
        """One line for reports: how the int8 files were made."""
        parts = [f"{self.calib_count} calibration samples", "int8 weights per channel, activations per tensor",
                 f"ONNX Runtime {self.method} ranges", "bias correction" if self.bias_correction else "no bias correction"]
        if self.keep_fp32:
            parts.append(f"fp32 kept in {', '.join(self.keep_fp32)}")
        return "; ".join(parts)

    @classmethod
    def from_dict(cls, d: dict) -> QuantRecipe:
        if not isinstance(d, dict):
            raise ValueError(f"the int8 recipe must be a table of options, not {d!r}")
        d = {k: v for k, v in d.items() if k not in ("channels_last", "int8_io")}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown quantization option(s) {sorted(unknown)}; known: "
                             f"{', '.join(sorted(known - {'version'}))}")
        version = d.get("version", 1)
        if version < 2:  # version 1 recipes had no bias correction
            d.setdefault("bias_correction", False)
        d["version"] = 3
        keep = d.get("keep_fp32", ())
        if not isinstance(keep, (list, tuple)):  # a string would become a tuple of its letters
            raise ValueError(f"keep_fp32={keep!r}: must be a list of module paths, e.g. [\"blocks.0\"]")
        d["keep_fp32"] = tuple(keep)
        return cls(**d)


def _fold(conv, bn):
    import torch
    from torch import nn
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
    return fused


def conv_bn_pairs(model, example) -> list[tuple[str, str]]:
    """(conv module path, batch-norm module path) for every ``Conv2d -> BatchNorm2d`` whose conv
    output feeds only that batch norm, found in the ``torch.export`` graph of ``model``, so any
    module qualifies whatever its attribute names."""
    import torch
    from torch import nn
    graph = torch.export.export(model, (example,)).graph
    mods = dict(model.named_modules())
    calls: dict[str, int] = {}

    def path(node) -> str | None:
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else None

    for n in graph.nodes:
        if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.batch_norm.default):
            p = path(n)
            calls[p] = calls.get(p, 0) + 1
    pairs = []
    for n in graph.nodes:
        if n.op != "call_function" or n.target != torch.ops.aten.batch_norm.default:
            continue
        src = n.args[0]
        if getattr(src, "target", None) != torch.ops.aten.conv2d.default or len(src.users) != 1:
            continue
        conv_path, bn_path = path(src), path(n)
        if calls.get(conv_path) != 1 or calls.get(bn_path) != 1:  # a module called twice is shared
            continue
        if isinstance(mods.get(conv_path), nn.Conv2d) and isinstance(mods.get(bn_path), nn.BatchNorm2d):
            pairs.append((conv_path, bn_path))
    return pairs


def fold_batchnorm(model, example=None):
    """A copy of ``model`` in eval mode with every conv -> batch-norm pair (``conv_bn_pairs``)
    folded into one conv with bias and the batch norm replaced by ``Identity``; the outputs
    are unchanged up to float rounding. ``example``: one input (default: zeros of
    ``model.input_shape``)."""
    import torch
    from torch import nn
    model = copy.deepcopy(model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    if example is None:
        example = torch.zeros(1, *model.input_shape)
    for conv_path, bn_path in conv_bn_pairs(model, example):
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        for p, new in ((conv_path, _fold(conv, bn)), (bn_path, nn.Identity())):
            owner, _, name = p.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, name, new)
    return model


def fuse_clamp_annotations(gm):
    """Annotate ``conv/linear -> hardtanh`` (ReLU6) like ``conv -> relu``: one int8 output after
    the clamp. The stock XNNPACK / litert-torch quantizers treat hardtanh as an op that *shares*
    its input's observer, so the conv output is quantized over its pre-clamp range (hundreds,
    after batch-norm folding in EfficientNet-Lite's depthwise convs) and the [0, 6] that matters
    gets a handful of int8 steps. Every int8 backend fuses a clamp into the conv anyway."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    key = "quantization_annotation"
    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    producers = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in clamps:
            continue
        src = n.args[0]
        ann = src.meta.get(key) if isinstance(src, torch.fx.Node) else None
        if src.target not in producers or len(src.users) != 1 or ann is None or ann.output_qspec is None:
            continue
        n.meta[key] = QuantizationAnnotation(input_qspec_map={}, output_qspec=ann.output_qspec, _annotated=True)
        ann.output_qspec = None
    return gm


def share_through(gm, skip=lambda n: False):
    """Quantize an activation or pooling op (ReLU, ReLU6, mean, average or max pooling) that the
    stock annotators left float although its input is int8, with its input's parameters. The
    stock PT2E quantizers annotate these only in patterns they know (conv -> relu, add -> relu
    feeding a conv); elsewhere, e.g. a ShuffleNet unit's ``relu(x + y)`` feeding the global mean,
    the op ran in float between a dequantize and a quantize: an fp32 island. Sharing the input's
    parameters is exact for ReLU and max pooling and keeps averages within their input's range.
    Nodes ``skip`` says no to (``keep_fp32`` modules) stay float."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    aten = torch.ops.aten
    ops = (aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default, aten.mean.dim,
           aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default, aten.max_pool2d.default)
    key = "quantization_annotation"
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in ops or skip(n):
            continue
        ann = n.meta.get(key)
        if ann is not None and (ann.output_qspec is not None or ann.input_qspec_map):
            continue
        src = n.args[0]
        src_ann = src.meta.get(key) if isinstance(src, torch.fx.Node) else None
        if src_ann is None or src_ann.output_qspec is None:
            continue
        n.meta[key] = QuantizationAnnotation(input_qspec_map={src: SharedQuantizationSpec(src)},
                                             output_qspec=SharedQuantizationSpec((src, n)), _annotated=True)
    return gm


def is_zero_pad(n) -> bool:
    """``F.pad(x, pads)`` / ``constant_pad_nd`` with the value 0 (TensorFlow SAME padding)."""
    import torch
    pads = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
    if not isinstance(n, torch.fx.Node) or n.op != "call_function" or n.target not in pads:
        return False
    if n.target == torch.ops.aten.pad.default:
        mode = n.args[2] if len(n.args) > 2 else n.kwargs.get("mode", "constant")
        value = n.args[3] if len(n.args) > 3 else n.kwargs.get("value")
        if mode != "constant":
            return False
    else:
        value = n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0.0)
    return not value


def share_pad_annotations(gm):
    """Give a zero pad (``TfSamePad`` before EfficientNet-Lite's stride-2 convs) int8 input and
    output with the *same* parameters, those its consumers ask for. The XNNPACK quantizer does not
    annotate pads: the pad's input is quantized by its producer and its output again by the
    consumer's own observer, so the pad runs in float between a dequantize and a requantize.
    Shared, the pad is exact in int8 (observers always keep 0 in range, so the zeros it adds are
    the zero point) and XNNPACK folds it into the conv that follows. Pads already annotated, or
    with an unquantized consumer (``keep_fp32``), are left alone."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    key = "quantization_annotation"
    for n in gm.graph.nodes:
        if not is_zero_pad(n) or key in n.meta or not n.users or not isinstance(n.args[0], torch.fx.Node):
            continue
        anns = [u.meta.get(key) for u in n.users]
        if any(a is None or a.input_qspec_map.get(n) is None for a in anns):
            continue
        src = n.args[0]
        shared = SharedQuantizationSpec((src, n))
        n.meta[key] = QuantizationAnnotation(input_qspec_map={src: anns[0].input_qspec_map[n]},
                                             output_qspec=shared, _annotated=True)
        for a in anns:
            a.input_qspec_map[n] = shared
    return gm


@contextlib.contextmanager
def _litert_module_names():
    """litert-torch's module-name filter expects torch.export's old ``L__self___blocks_0`` labels
    (and turns every ``_`` of a module path into ``.``), so names given to ``keep_fp32`` never
    matched; torchao's filter, the one the XNNPACK quantizer uses, reads today's labels. Applied
    only while litert-torch's quantizer annotates."""
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter
    stock = pt2e_quantizer._get_module_name_filter
    pt2e_quantizer._get_module_name_filter = get_module_name_filter
    try:
        yield
    finally:
        pt2e_quantizer._get_module_name_filter = stock


def make_quantizer(backend: str, recipe: QuantRecipe):
    """A fresh PT2E quantizer for ``backend`` ("xnnpack": ExecuTorch and the localisation
    simulation; "litert": TFLite) set up by ``recipe``: per-channel symmetric int8 weights,
    per-tensor int8 activations, the ``keep_fp32`` modules unannotated (float), conv outputs
    quantized after their ReLU6 (``fuse_clamp_annotations``), activations and pooling the stock
    annotators miss made int8 (``share_through``); for XNNPACK, zero pads keep their input's int8
    parameters (``share_pad_annotations``). ``.inner`` is the backend's own quantizer object."""
    from torchao.quantization.pt2e.quantizer import Quantizer
    if backend == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        inner = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                is_dynamic=False))
        scope, extra = contextlib.nullcontext, share_pad_annotations
    elif backend == "litert":
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        inner = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                             is_dynamic=False))
        scope, extra = _litert_module_names, (lambda gm: gm)
    else:
        raise ValueError(f"unknown PT2E backend {backend!r}; known: {', '.join(BACKENDS)}")
    for name in recipe.keep_fp32:
        # set_module_name(name, None) asserts in these quantizers; their annotators skip a None config
        inner.module_name_config[name] = None
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter
    kept = [get_module_name_filter(name) for name in recipe.keep_fp32]

    def fix(gm):
        return extra(share_through(fuse_clamp_annotations(gm), skip=lambda n: any(f(n) for f in kept)))

    class RecipeQuantizer(Quantizer):
        def transform_for_annotation(self, model):
            return inner.transform_for_annotation(model)

        def annotate(self, model):
            with scope():
                return fix(inner.annotate(model))

        def validate(self, model):
            return inner.validate(model)

    q = RecipeQuantizer()
    q.inner = inner
    return q


def quantize_pt2e(module, example, samples, backend: str, recipe: QuantRecipe, *,
                  before_prepare=None, fold_quantize: bool = True):
    """The int8 path of every PT2E backend (TFLite, ExecuTorch, the localisation simulation):
    ``torch.export``, ``prepare_pt2e`` with ``make_quantizer(backend, recipe)``, calibration one
    sample at a time on the first ``recipe.calib_count`` of ``samples`` (batch-1 tensors, the
    shape of ``example``), ``convert_pt2e``, then ``bias_correct`` on the same samples if the
    recipe asks for it. ``before_prepare(gm)`` may edit the exported graph first. Returns
    (the converted graph, its quantize/dequantize pairs running in float; the quantizer)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    quantizer = make_quantizer(backend, recipe)
    samples = list(samples)[:recipe.calib_count]
    exported = torch.export.export(module.eval(), (example,)).module()
    if before_prepare is not None:
        before_prepare(exported)
    gm = prepare_pt2e(exported, quantizer)
    targets = calibrate(gm, samples, float_means=recipe.bias_correction)
    gm = convert_pt2e(gm, fold_quantize=fold_quantize)
    if recipe.bias_correction:
        bias_correct(gm, None, samples, targets=targets)
    return gm, quantizer


def _linear_ops():
    import torch
    return (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)


class _Samples(list):
    """The values of one graph node for every sample, in sample order."""


def _per_sample(gm, on_output):
    """An ``fx.Interpreter`` that runs a graph exported for batch 1 on a list of samples one node
    at a time, each node on every sample before the next node runs; ``on_output(node, values)``
    sees (and may replace) the outputs of every conv and linear."""
    import torch
    linear_ops = _linear_ops()

    class PerSample(torch.fx.Interpreter):
        def _each(self, fn, args, kwargs):
            flat = torch.utils._pytree.tree_leaves((args, kwargs))
            n = next((len(a) for a in flat if isinstance(a, _Samples)), None)
            if n is None:
                return fn(*args, **kwargs)

            def pick(i):
                return torch.utils._pytree.tree_map(lambda a: a[i] if isinstance(a, _Samples) else a, (args, kwargs),
                                                    is_leaf=lambda a: isinstance(a, _Samples))
            return _Samples(fn(*a, **k) for a, k in (pick(i) for i in range(n)))

        def call_function(self, target, args, kwargs):
            return self._each(target, args, kwargs)

        def call_module(self, target, args, kwargs):
            return self._each(self.fetch_attr(target), args, kwargs)

        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and n.target in linear_ops and isinstance(out, _Samples):
                out = on_output(n, out)
            return out

    return PerSample(gm)


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside: the calibration and bias-correction passes run one batch-1
    sample at a time, where splitting each op over threads gains at most the core count on an
    idle machine and loses several times over when another process holds a core (2 cores,
    load 4: ~5x slower than one thread). The int8 graph then no longer depends on the machine's
    core count either: convolutions and means round alike whatever it is."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def calibrate(gm, samples, *, float_means: bool = False):
    """Feed ``samples`` (batch-1 tensors) one at a time through a ``prepare_pt2e`` graph, so its
    observers see them. With ``float_means``, the same pass also returns the per-channel mean
    of every conv and linear output in graph order: the float model's, since observers pass
    their input through, which spares ``bias_correct`` a float pass of its own."""
    import torch
    linear_ops = _linear_ops()

    class FloatMeans(torch.fx.Interpreter):
        def __init__(self, module):
            super().__init__(module)
            self.means = []

        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and n.target in linear_ops and isinstance(out, torch.Tensor):
                self.means.append(out.mean(dim=[d for d in range(out.dim()) if d != 1]))
            return out

    with torch.no_grad(), one_thread():
        if not float_means:
            for x in samples:
                gm(x)
            return None
        per_sample = []
        for x in samples:
            run = FloatMeans(gm)
            run.run(x)
            per_sample.append(run.means)
    if not per_sample:
        return []
    return [torch.stack([means[k] for means in per_sample]).mean(0) for k in range(len(per_sample[0]))]


def _channel_mean(values):
    import torch
    return torch.stack([v.mean(dim=[d for d in range(v.dim()) if d != 1]) for v in values]).mean(0)


def bias_correct(quantized, reference, samples, *, targets=None) -> int:
    """Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2;
    Finkelstein et al. 2019): int8 weights and inputs shift the *mean* of a conv's output
    channels, and the shift adds up through the network. For every conv and linear with a
    bias, in graph order, the mean of each output channel over the calibration ``samples``
    (and over pixels) is measured in the ``quantized`` graph, already corrected up to that
    layer, and in the float ``reference`` graph (the same export before quantization); the
    difference is subtracted from the bias. Layers are matched by their order in the two graphs.
    ``targets``, the float means if already known (``calibrate(..., float_means=True)``), stand in
    for ``reference``. Returns how many biases changed."""
    import torch
    from torch import nn
    if targets is None:
        targets = []
        with torch.no_grad(), one_thread():
            _per_sample(reference, lambda n, out: targets.append(_channel_mean(out)) or out).run(_Samples(samples))
    layers = [n for n in quantized.graph.nodes if n.op == "call_function" and n.target in _linear_ops()]
    if len(layers) != len(targets):
        raise RuntimeError(f"bias correction: the int8 graph has {len(layers)} convs/linears, "
                           f"the float graph {len(targets)}")
    index = {n: i for i, n in enumerate(layers)}
    changed = 0

    def correct(node, out):
        nonlocal changed
        shift = _channel_mean(out) - targets[index[node]]
        bias = node.args[2] if len(node.args) > 2 else None
        if not isinstance(bias, torch.fx.Node) or bias.op != "get_attr" or shift.shape != targets[index[node]].shape:
            return out
        owner, _, name = bias.target.rpartition(".")
        module = quantized.get_submodule(owner) if owner else quantized
        old = getattr(module, name)
        new = (old.detach() - shift).to(old.dtype)  # a new tensor: the old one may be shared with the float model
        setattr(module, name, nn.Parameter(new, requires_grad=False) if isinstance(old, nn.Parameter) else new)
        changed += 1
        view = (1, -1) + (1,) * (out[0].dim() - 2)
        return _Samples(v - shift.reshape(view) for v in out)

    with torch.no_grad(), one_thread():
        _per_sample(quantized, correct).run(_Samples(samples))
    return changed
