"""int8 post-training quantization: one versioned recipe, applied per backend.

The recipe (``QuantConfig``) is a dataclass that survives a JSON round trip, so a manifest
records exactly how an artifact was quantized. Every backend gets the same scheme:
static int8, weights symmetric per output channel, activations per tensor, ranges
calibrated on real samples; batch norm is folded into the convs first (``fold_batchnorm``)
and ReLU/ReLU6 fuse into the conv they follow in every backend's int8 kernels.
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
    method: str = "minmax"
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
