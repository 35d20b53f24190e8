"""Convolution blocks, each able to state its own cost.

* Standard conv + norm + activation, pointwise (1x1) and depthwise (groups = channels)
  convs, and the depthwise-separable block: MobileNets, Howard et al. 2017,
  arXiv:1704.04861, Fig. 3.
* Inverted residual with linear bottleneck: MobileNetV2, Sandler et al. 2018,
  arXiv:1801.04381, Table 1.
* Grouped conv with channel shuffle: ShuffleNet, Zhang et al. 2017, arXiv:1707.01083.
* ``padding="tf_same"``: TensorFlow's asymmetric SAME padding (extra pixel bottom/right),
  which weights trained in TensorFlow (EfficientNet-Lite) need at stride 2.

Every block has ``cost(in_hw) -> Cost`` computed from the formulas in ``edgeconv.cost``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cost import Cost, conv_cost, tf_same_pads

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "none": nn.Identity,
}
PADDINGS = ("same", "tf_same", "an int >= 0")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a positive integer")


def _check_padding(padding, kernel_size: int, dilation: int) -> None:
    if padding == "same":
        if (dilation * (kernel_size - 1)) % 2:
            raise ValueError(f"kernel_size={kernel_size} with padding='same': an even kernel has no "
                             "symmetric 'same' padding; use an odd kernel, padding='tf_same' or an "
                             "explicit int padding")
    elif padding == "tf_same":
        pass
    elif not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding={padding!r}: must be one of {', '.join(PADDINGS)}")


def make_act(act: str) -> nn.Module:
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r}: unknown activation; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[act]() if act in ("none", "hswish") else ACTIVATIONS[act](inplace=False)


class TfSamePad(nn.Module):
    """Pads like TensorFlow's SAME: computed from the input size, extra pixel at the end."""

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_pads(x.shape[-2], self.kernel_size, self.stride, self.dilation)
        left, right = tf_same_pads(x.shape[-1], self.kernel_size, self.stride, self.dilation)
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))


class ConvNormAct(nn.Module):
    """Conv2d -> BatchNorm2d -> activation: the standard conv block."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
                 groups: int = 1, dilation: int = 1, act: str = "relu", padding="same",
                 bias: bool = False, norm: bool = True):
        super().__init__()
        _check_positive(in_chs=in_chs, out_chs=out_chs, kernel_size=kernel_size, stride=stride,
                        groups=groups, dilation=dilation)
        if in_chs % groups or out_chs % groups:
            raise ValueError(f"groups={groups} must divide in_chs={in_chs} and out_chs={out_chs}")
        _check_padding(padding, kernel_size, dilation)
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.groups, self.dilation, self.padding, self.bias, self.norm = groups, dilation, padding, bias, norm
        self.act_name = act
        # At stride 1 an odd kernel's TF SAME padding is symmetric: the conv pads it itself.
        asymmetric = padding == "tf_same" and (stride > 1 or (dilation * (kernel_size - 1)) % 2)
        self.pad = TfSamePad(kernel_size, stride, dilation) if asymmetric else nn.Identity()
        pad = (0 if asymmetric else dilation * (kernel_size - 1) // 2) if padding in ("same", "tf_same") else padding
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, pad, dilation=dilation,
                              groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = make_act(act)

    def forward(self, x):
        return self.act(self.bn(self.conv(self.pad(x))))

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        return conv_cost(self.in_chs, self.out_chs, self.kernel_size, in_hw, stride=self.stride,
                         groups=self.groups, dilation=self.dilation, padding=self.padding,
                         bias=self.bias, norm=self.norm)


def Pointwise(in_chs: int, out_chs: int, *, act: str = "relu", bias: bool = False,
              norm: bool = True, groups: int = 1) -> ConvNormAct:
    """1x1 conv: mixes channels, no spatial extent."""
    return ConvNormAct(in_chs, out_chs, 1, 1, groups=groups, act=act, bias=bias, norm=norm, padding=0)


def Depthwise(chs: int, kernel_size: int = 3, stride: int = 1, *, dilation: int = 1,
              act: str = "relu", padding="same", bias: bool = False, norm: bool = True) -> ConvNormAct:
    """k x k conv with one filter per channel (groups = channels)."""
    return ConvNormAct(chs, chs, kernel_size, stride, groups=chs, dilation=dilation, act=act,
                       padding=padding, bias=bias, norm=norm)


class Sequence(nn.Module):
    """Runs named sub-blocks in order; its cost is theirs chained."""

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        total = None
        shape = (self.in_chs, *in_hw)
        for m in self.children():
            if not hasattr(m, "cost"):
                continue
            c = m.cost(shape[1:])
            total = c if total is None else total.then(c)
            shape = c.out_shape
        return total


class DepthwiseSeparable(Sequence):
    """Depthwise k x k + norm + act, then pointwise 1x1 + norm + act (MobileNets Fig. 3)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
                 dilation: int = 1, act: str = "relu", padding="same", bias: bool = False,
                 norm: bool = True):
        super().__init__()
        self.in_chs, self.out_chs = in_chs, out_chs
        self.dw = Depthwise(in_chs, kernel_size, stride, dilation=dilation, act=act,
                            padding=padding, bias=bias, norm=norm)
        self.pw = Pointwise(in_chs, out_chs, act=act, bias=bias, norm=norm)


class ChannelShuffle(nn.Module):
    """Interleaves channels across groups so the next grouped conv sees every group."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class GroupedConv(Sequence):
    """Grouped k x k conv (+ norm + act), optionally followed by a channel shuffle."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
                 groups: int = 2, shuffle: bool = True, dilation: int = 1, act: str = "relu",
                 padding="same", bias: bool = False, norm: bool = True):
        super().__init__()
        self.in_chs, self.out_chs = in_chs, out_chs
        self.conv = ConvNormAct(in_chs, out_chs, kernel_size, stride, groups=groups,
                                dilation=dilation, act=act, padding=padding, bias=bias, norm=norm)
        self.shuffle = ChannelShuffle(groups) if shuffle and groups > 1 else nn.Identity()


class InvertedResidual(Sequence):
    """MobileNetV2 block: 1x1 expand + act, k x k depthwise + act, linear 1x1 project;
    the input is added back when the output has the input's shape (stride 1, in_chs ==
    out_chs, size-keeping padding).

    ``exp_ratio == 1`` has no expansion conv. ``depthwise=False`` makes the k x k conv a
    standard (dense) conv over the hidden channels: the standard-conv twin.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
                 exp_ratio: float = 6, dilation: int = 1, act: str = "relu6", padding="same",
                 bias: bool = False, norm: bool = True, depthwise: bool = True):
        super().__init__()
        if not exp_ratio > 0:
            raise ValueError(f"exp_ratio={exp_ratio!r}: must be > 0")
        self.in_chs, self.out_chs = in_chs, out_chs
        hidden = int(round(in_chs * exp_ratio))
        _check_positive(in_chs=in_chs, hidden_chs=hidden)
        keeps_size = padding in ("same", "tf_same") or 2 * padding == dilation * (kernel_size - 1)
        self.has_skip = stride == 1 and in_chs == out_chs and keeps_size
        if exp_ratio != 1:
            self.expand = Pointwise(in_chs, hidden, act=act, bias=bias, norm=norm)
        self.dw = ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden if depthwise else 1,
                              dilation=dilation, act=act, padding=padding, bias=bias, norm=norm)
        self.project = Pointwise(hidden, out_chs, act="none", bias=bias, norm=norm)

    def forward(self, x):
        y = super().forward(x)
        return x + y if self.has_skip else y
