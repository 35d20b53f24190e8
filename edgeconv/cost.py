"""Cost accounting: parameters, multiply-accumulates (MACs), output shape, activation bytes.

Two independent ways to count, which the tests hold equal for every block and model:

* analytic: the textbook formulas (MobileNets, Howard et al. 2017, section 3.1):
  a k x k conv from C_in to C_out channels in G groups on an H_out x W_out output costs
  k*k*(C_in/G)*C_out weights and k*k*(C_in/G)*C_out*H_out*W_out MACs; a linear layer
  costs in*out of both.
* measured: parameters read off the module, MACs counted by forward hooks on every
  ``nn.Conv2d`` and ``nn.Linear`` during a real forward pass.

Only convolutions and linear layers count as MACs (batch norm folds into the conv at
export; activations, pooling and residual adds are element-wise). Batch-norm weight and
bias count as parameters; running statistics are buffers and do not.
Activation bytes are the fp32 bytes of a block's output tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FP32_BYTES = 4


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    out_shape: tuple[int, int, int]  # (C, H, W); (features, 1, 1) after a linear layer
    act_bytes: int

    def then(self, other: Cost) -> Cost:
        """Cost of running ``self`` and then ``other`` on its output."""
        return Cost(self.params + other.params, self.macs + other.macs, other.out_shape,
                    self.act_bytes + other.act_bytes)

    @staticmethod
    def identity(shape: tuple[int, int, int]) -> Cost:
        return Cost(0, 0, tuple(shape), 0)


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Symmetric padding that keeps the size at stride 1 (odd effective kernels only)."""
    return dilation * (kernel_size - 1) // 2


def tf_same_pads(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding: output ceil(size/stride), extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel_size - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def conv_out_size(size: int, kernel_size: int, stride: int, dilation: int, padding) -> int:
    if padding == "tf_same":
        return -(-size // stride)
    pad = same_padding(kernel_size, dilation) if padding == "same" else int(padding)
    out = (size + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(f"input size {size} is too small for kernel_size={kernel_size}, "
                         f"stride={stride}, padding={padding!r}: the output would be empty")
    return out


def conv_cost(in_chs: int, out_chs: int, kernel_size: int, in_hw: tuple[int, int], *,
              stride: int = 1, groups: int = 1, dilation: int = 1, padding="same",
              bias: bool = False, norm: bool = False) -> Cost:
    """Analytic cost of one conv (+ optional batch norm)."""
    h, w = (conv_out_size(s, kernel_size, stride, dilation, padding) for s in in_hw)
    weights = kernel_size * kernel_size * (in_chs // groups) * out_chs
    params = weights + (out_chs if bias else 0) + (2 * out_chs if norm else 0)
    return Cost(params, weights * h * w, (out_chs, h, w), out_chs * h * w * FP32_BYTES)


def linear_cost(in_features: int, out_features: int, bias: bool = True) -> Cost:
    params = in_features * out_features + (out_features if bias else 0)
    return Cost(params, in_features * out_features, (out_features, 1, 1),
                out_features * FP32_BYTES)


def count_params(module: nn.Module, include_norm: bool = True) -> int:
    """Parameters read off the module; ``include_norm=False`` leaves out batch-norm weights
    and biases, which is how the MobileNet papers count (they fold into the convs)."""
    if include_norm:
        return sum(p.numel() for p in module.parameters())
    return sum(p.numel() for m in module.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)
               for p in m.parameters(recurse=False))


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one sample, counted by hooks on convs and linears in a real forward pass."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out[0].numel() * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


@dataclass(frozen=True)
class BlockRow:
    name: str
    kind: str
    arch: str
    cost: Cost


@dataclass(frozen=True)
class ModelCost:
    """Per-block costs of a model at one input size, and their totals."""
    input_shape: tuple[int, int, int]
    rows: tuple[BlockRow, ...]

    @property
    def params(self) -> int:
        return sum(r.cost.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.cost.macs for r in self.rows)

    @property
    def act_bytes(self) -> int:
        return sum(r.cost.act_bytes for r in self.rows)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.rows[-1].cost.out_shape

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape), "params": self.params, "macs": self.macs,
            "act_bytes": self.act_bytes,
            "blocks": [{"name": r.name, "kind": r.kind, "arch": r.arch,
                        "out_shape": list(r.cost.out_shape), "params": r.cost.params,
                        "macs": r.cost.macs, "act_bytes": r.cost.act_bytes} for r in self.rows],
        }
