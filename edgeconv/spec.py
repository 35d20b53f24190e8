"""Model specs as data: arch strings in the style of timm's EfficientNet builder.

An arch string names one block kind and its settings, e.g. ``ir_r2_k3_s2_e6_c24`` is two
inverted residuals, 3x3 depthwise, the first at stride 2, expansion 6, 24 output channels.
Tokens, in canonical order (the printer emits this order; ``r``, ``k``, ``s``, ``c`` always):

  ====  ===============================  =========================================
  r<n>  repeats (stride on the first)    all kinds
  k<n>  kernel size                      all kinds (``pw`` is always 1)
  s<n>  stride                           all kinds
  e<x>  expansion ratio                  ``ir`` only (required there)
  c<n>  output channels                  all kinds (required)
  g<n>  groups                           ``gc`` (required), ``cn``, ``pw``
  d<n>  dilation                         spatial kinds
  a<x>  activation override              relu, relu6, hswish, none
  sh    channel shuffle after the conv   ``gc`` only
  dense standard (not depthwise) conv    ``ir`` only: the standard-conv twin
  ====  ===============================  =========================================

Kinds: ``cn`` conv+norm+act, ``pw`` pointwise, ``dw`` depthwise, ``ds`` depthwise-separable,
``gc`` grouped conv, ``ir`` inverted residual.

The standard-conv twin (``ModelSpec.twin()``) keeps the topology and replaces each
depthwise(-separable) spatial stage with a standard conv of the same kernel, stride and
channel counts; stem and head are unchanged:

  ``ds`` (dw k x k + pw 1x1, in->out)  ->  ``cn`` k x k, in->out (the MobileNets paper's
                                          "full convolution" baseline, Table 4)
  ``dw`` k x k on C channels           ->  ``cn`` k x k, C->C
  ``gc`` k x k in G groups             ->  ``cn`` k x k, groups 1, no shuffle
  ``ir`` expand, dw k x k, project     ->  ``ir ... dense``: the k x k conv over the hidden
                                          channels becomes a standard conv; expansion and
                                          projection stay
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .blocks import ACTIVATIONS

KINDS = {
    "cn": "conv + norm + act",
    "pw": "pointwise 1x1",
    "dw": "depthwise",
    "ds": "depthwise-separable",
    "gc": "grouped conv",
    "ir": "inverted residual",
}
# Bounds that keep a typo from asking for terabytes: the widest zoo variants use 2x, the
# largest classifier inputs ~600 px; beyond these a model is a mistake, not a configuration.
MAX_WIDTH = 8.0
MAX_INPUT_SIZE = 4096
MAX_CHANNELS = 65536
MAX_EXPANSION = 64
_TOKEN = re.compile(r"^(r|k|s|e|c|g|d|a)(.+)$")
_INT_TOKENS = {"r": "repeats", "k": "kernel_size", "s": "stride", "c": "out_chs", "g": "groups",
               "d": "dilation"}


@dataclass(frozen=True)
class BlockSpec:
    kind: str
    out_chs: int
    repeats: int = 1
    kernel_size: int = 3
    stride: int = 1
    exp_ratio: float | None = None
    groups: int = 1
    dilation: int = 1
    act: str | None = None
    shuffle: bool = False
    dense: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: unknown block kind; known: {', '.join(KINDS)}")
        for name in ("out_chs", "repeats", "kernel_size", "stride", "groups", "dilation"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_CHANNELS:
                raise ValueError(f"{name}={v!r}: must be a whole number from 1 to {MAX_CHANNELS}")
        if self.kind == "pw" and self.kernel_size != 1:
            raise ValueError(f"kernel_size={self.kernel_size}: a 'pw' block is always 1x1")
        if self.kind == "ir":
            if self.exp_ratio is None or not 0 < self.exp_ratio <= MAX_EXPANSION:
                raise ValueError(f"exp_ratio={self.exp_ratio!r}: an 'ir' block needs e<ratio> in (0, {MAX_EXPANSION}]")
        elif self.exp_ratio is not None:
            raise ValueError(f"exp_ratio={self.exp_ratio!r}: only 'ir' blocks take an expansion ratio")
        if self.kind == "gc" and self.groups < 2:
            raise ValueError(f"groups={self.groups}: a 'gc' block needs g<groups> >= 2")
        if self.groups != 1 and self.kind not in ("gc", "cn", "pw"):
            raise ValueError(f"groups={self.groups}: '{self.kind}' blocks do not take groups")
        if self.out_chs % self.groups:
            raise ValueError(f"groups={self.groups} must divide out_chs={self.out_chs}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"act={self.act!r}: unknown activation; known: {', '.join(ACTIVATIONS)}")
        if self.shuffle and self.kind != "gc":
            raise ValueError(f"shuffle: only 'gc' blocks shuffle channels, not '{self.kind}'")
        if self.dense and self.kind != "ir":
            raise ValueError(f"dense: only 'ir' blocks take the dense flag, not '{self.kind}'")

    def __str__(self) -> str:
        parts = [self.kind, f"r{self.repeats}", f"k{self.kernel_size}", f"s{self.stride}"]
        if self.exp_ratio is not None:
            parts.append(f"e{self.exp_ratio:g}")
        parts.append(f"c{self.out_chs}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if self.dilation != 1:
            parts.append(f"d{self.dilation}")
        if self.act is not None:
            parts.append(f"a{self.act}")
        if self.shuffle:
            parts.append("sh")
        if self.dense:
            parts.append("dense")
        return "_".join(parts)

    def twin(self) -> BlockSpec:
        """The standard-conv replacement of this block (see the module docstring)."""
        if self.kind in ("ds", "dw", "gc"):
            return replace(self, kind="cn", groups=1, shuffle=False)
        if self.kind == "ir":
            return replace(self, dense=True)
        return self


def parse_block(arch: str) -> BlockSpec:
    """``'ir_r2_k3_s2_e6_c24'`` -> BlockSpec. Raises ValueError naming the bad part."""
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"arch string {arch!r}: must be a non-empty string like 'ir_r2_k3_s2_e6_c24'")
    kind, *tokens = arch.split("_")
    if kind not in KINDS:
        raise ValueError(f"arch string {arch!r}: unknown block kind {kind!r}; known: {', '.join(KINDS)}")
    kw: dict = {}
    for tok in tokens:
        if tok in ("sh", "dense"):
            key, value = ("shuffle" if tok == "sh" else "dense"), True
        else:
            m = _TOKEN.match(tok)
            if not m:
                raise ValueError(f"arch string {arch!r}: malformed token {tok!r}; expected one of "
                                 "r<n> k<n> s<n> e<x> c<n> g<n> d<n> a<act> sh dense")
            letter, raw = m.groups()
            if letter == "a":
                key, value = "act", raw
            elif letter == "e":
                key = "exp_ratio"
                try:
                    value = float(raw)
                except ValueError:
                    raise ValueError(f"arch string {arch!r}: malformed token {tok!r}; "
                                     "e takes a number, e.g. e6") from None
            else:
                key = _INT_TOKENS[letter]
                if not raw.isdigit():
                    raise ValueError(f"arch string {arch!r}: malformed token {tok!r}; "
                                     f"{letter} takes a whole number, e.g. {letter}3")
                value = int(raw)
        if key in kw:
            raise ValueError(f"arch string {arch!r}: token {tok!r} repeats {key}")
        kw[key] = value
    if "out_chs" not in kw:
        raise ValueError(f"arch string {arch!r}: missing output channels c<n>")
    if kind == "pw":
        kw.setdefault("kernel_size", 1)
    try:
        return BlockSpec(kind, **kw)
    except ValueError as e:
        raise ValueError(f"arch string {arch!r}: {e}") from None


def read_toml(path: str | Path, what: str = "file", hint: str = "") -> dict:
    """A TOML file as a dict; a missing file or bad TOML is an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist{hint}")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (TOML is UTF-8 text)") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; name the {what} (.toml)") from None


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never below 90% of ``value`` (MobileNetV2)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


@dataclass(frozen=True)
class ModelSpec:
    """A whole network: stem, stages of arch strings, head, classifier, and how to feed it."""
    name: str
    stem: str
    stages: tuple[tuple[str, ...], ...]
    head: tuple[str, ...] = ()
    num_classes: int = 1000
    input_size: int = 224
    in_chs: int = 3
    act: str = "relu"
    padding: str = "same"
    width: float = 1.0
    dropout: float = 0.0
    bn_eps: float = 1e-5
    twin: bool = False
    description: str = ""
    preprocess: dict = field(default_factory=dict)
    labels: str = ""
    pretrained: str = ""

    def __post_init__(self):
        for s in (self.stem, *self.head, *(a for st in self.stages for a in st)):
            parse_block(s)
        for name, top in (("num_classes", MAX_CHANNELS), ("input_size", MAX_INPUT_SIZE), ("in_chs", MAX_CHANNELS)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
                raise ValueError(f"{name}={v!r}: must be a whole number from 1 to {top}")
        if not isinstance(self.width, (int, float)) or isinstance(self.width, bool) \
                or not 0 < self.width <= MAX_WIDTH:
            raise ValueError(f"width={self.width!r}: the width multiplier must be a finite number in (0, {MAX_WIDTH:g}]")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r}: must be in [0, 1)")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act={self.act!r}: unknown activation; known: {', '.join(ACTIVATIONS)}")
        if self.padding not in ("same", "tf_same"):
            raise ValueError(f"padding={self.padding!r}: must be 'same' or 'tf_same'")
        if self.preprocess:
            from .data import Preprocess
            try:
                Preprocess.from_dict(self.preprocess, self.input_size)
            except (TypeError, ValueError) as e:
                raise ValueError(f"[preprocess]: {e}") from None

    @property
    def arch(self) -> list[list[str]]:
        return [list(st) for st in self.stages]

    def blocks(self) -> list[list[BlockSpec]]:
        return [[parse_block(a) for a in st] for st in self.stages]

    def as_twin(self) -> ModelSpec:
        if self.twin:
            return self
        stages = tuple(tuple(str(parse_block(a).twin()) for a in st) for st in self.stages)
        return replace(self, stages=stages, twin=True)

    def with_overrides(self, **overrides) -> ModelSpec:
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: "
                             f"{', '.join(sorted(self.__dataclass_fields__))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = self.arch
        d["head"] = list(self.head)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in model spec; known: "
                             f"{', '.join(sorted(cls.__dataclass_fields__))}")
        d = dict(d)
        if "stages" in d:
            d["stages"] = tuple(tuple(st) for st in d["stages"])
        if "head" in d:
            d["head"] = tuple(d["head"])
        return cls(**d)

    @classmethod
    def from_toml(cls, path: str | Path) -> ModelSpec:
        data = read_toml(path, "model spec file")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
