"""int8 post-training quantization: one versioned recipe, applied per backend.

The recipe (``QuantConfig``) is a dataclass that survives a JSON round trip, so a manifest
records exactly how an artifact was quantized. Every backend gets the same scheme:
static int8, weights symmetric per output channel, activations per tensor, ranges
calibrated on real samples; batch norm is folded into the convs first (``fold_batchnorm``)
and ReLU/ReLU6 fuse into the conv they follow in every backend's int8 kernels.

The recipe's defaults, chosen on the pretrained EfficientNet-Lite0 (bench/accuracy_bench.py):
64 calibration images; ONNX Runtime calibrates with the percentile method (min-max let a few
outliers stretch the ranges: 87.5% -> 89.7% top-1 against 89.7% fp32); the PT2E quantizers
(TFLite, ExecuTorch) quantize a conv's output after its ReLU6 clamp (``ClampFusingQuantizer``),
not before: their stock annotation shares the clamp's observer with the conv, whose folded
output spans hundreds, and the logits' SQNR fell to 5-7 dB. First and last layers stay int8:
keeping the stem or the classifier in fp32 did not move accuracy; keeping the first block
(``keep_fp32=("blocks.0",)``) gained one image of 136 in TFLite and ExecuTorch, an option
rather than the default since it leaves an fp32 island.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QuantConfig:
    version: int = 1
    weights: str = "int8_symmetric_per_channel"
    activations: str = "int8_per_tensor"
    method: str = "percentile"
    calib_count: int = 64
    keep_fp32: tuple[str, ...] = ()
    int8_io: bool = False
    channels_last: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"method={self.method!r}: calibration method must be one of "
                             f"{', '.join(CALIBRATION_METHODS)}")
        if self.calib_count < 1:
            raise ValueError(f"calib_count={self.calib_count}: need at least one calibration sample")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keep_fp32"] = list(self.keep_fp32)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown quantization option(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
        d = dict(d)
        d["keep_fp32"] = tuple(d.get("keep_fp32", ()))
        return cls(**d)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``conv -> bn`` pair (our ``ConvNormAct``)
    folded into one conv with bias; the outputs are unchanged up to float rounding."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(getattr(m, "bn", None), nn.BatchNorm2d) and isinstance(getattr(m, "conv", None), nn.Conv2d):
            m.conv = _fold(m.conv, m.bn)
            m.bn = nn.Identity()
    return model


def fuse_clamp_annotations(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Annotate ``conv/linear -> hardtanh`` (ReLU6) like ``conv -> relu``: one int8 output after
    the clamp. The stock XNNPACK / litert-torch quantizers treat hardtanh as an op that *shares*
    its input's observer, so the conv output is quantized over its pre-clamp range (hundreds,
    after batch-norm folding in EfficientNet-Lite's depthwise convs) and the [0, 6] that matters
    gets a handful of int8 steps. Every int8 backend fuses a clamp into the conv anyway."""
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


class ClampFusingQuantizer:
    """Wraps a PT2E quantizer: its annotations, then ``fuse_clamp_annotations``."""

    def __new__(cls, inner):
        from torchao.quantization.pt2e.quantizer import Quantizer

        class _Q(Quantizer):
            def transform_for_annotation(self, model):
                return inner.transform_for_annotation(model)

            def annotate(self, model):
                return fuse_clamp_annotations(inner.annotate(model))

            def validate(self, model):
                return inner.validate(model)

        q = _Q()
        q.inner = inner
        return q
