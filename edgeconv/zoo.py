"""The model zoo: specs in ``models/*.toml`` built into ``EdgeNet`` modules.

``create_model(name, twin=False, **overrides)`` builds a zoo model (or a spec file's model);
``twin=True`` builds its standard-conv twin (rule in ``edgeconv.spec``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import blocks as B
from .cost import BlockRow, ModelCost, linear_cost
from .spec import BlockSpec, ModelSpec, make_divisible, parse_block

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def _build_block(b: BlockSpec, in_chs: int, stride: int, act: str, padding: str) -> nn.Module:
    act = b.act or act
    spatial = dict(dilation=b.dilation, padding=padding, act=act)
    table = {
        "cn": lambda: B.ConvNormAct(in_chs, b.out_chs, b.kernel_size, stride, groups=b.groups, **spatial),
        "pw": lambda: B.Pointwise(in_chs, b.out_chs, groups=b.groups, act=act),
        "dw": lambda: B.Depthwise(in_chs, b.kernel_size, stride, **spatial),
        "ds": lambda: B.DepthwiseSeparable(in_chs, b.out_chs, b.kernel_size, stride, **spatial),
        "gc": lambda: B.GroupedConv(in_chs, b.out_chs, b.kernel_size, stride, groups=b.groups,
                                    shuffle=b.shuffle, **spatial),
        "ir": lambda: B.InvertedResidual(in_chs, b.out_chs, b.kernel_size, stride,
                                         exp_ratio=b.exp_ratio, depthwise=not b.dense, **spatial),
    }
    if b.kind == "dw" and b.out_chs != in_chs:
        raise ValueError(f"'{b}': a depthwise block keeps its channels, but its input has {in_chs}")
    try:
        return table[b.kind]()
    except ValueError as e:
        raise ValueError(f"block '{b}' on {in_chs} input channels: {e}") from None


class EdgeNet(nn.Module):
    """Stem -> blocks -> head -> global average pool -> dropout -> linear classifier."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        w = spec.width
        scale = lambda c: make_divisible(c * w) if w != 1.0 else c  # noqa: E731
        self.arch: dict[str, str] = {}

        def add(seq: nn.Sequential | None, name: str, b: BlockSpec, in_chs: int, stride: int,
                out_chs: int) -> int:
            one = replace(b, repeats=1, stride=stride, out_chs=out_chs)
            module = _build_block(one, in_chs, stride, spec.act, spec.padding)
            if seq is None:
                setattr(self, name, module)
            else:
                seq.append(module)
                name = f"{name}.{len(seq) - 1}"
            self.arch[name] = str(one)
            return out_chs

        stem = parse_block(spec.stem)
        chs = add(None, "stem", stem, spec.in_chs, stem.stride, scale(stem.out_chs))
        self.blocks = nn.Sequential()
        self.stage_of: list[int] = []
        for i, stage in enumerate(spec.blocks()):
            for b in stage:
                for r in range(b.repeats):
                    out = chs if b.kind == "dw" else scale(b.out_chs)
                    chs = add(self.blocks, "blocks", b, chs, b.stride if r == 0 else 1, out)
                    self.stage_of.append(i)
        self.head = nn.Sequential()
        for a in spec.head:
            b = parse_block(a)
            for r in range(b.repeats):
                out = make_divisible(b.out_chs * w) if w > 1.0 else b.out_chs
                chs = add(self.head, "head", b, chs, b.stride if r == 0 else 1, out)
        self.num_features = chs
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.classifier = nn.Linear(chs, spec.num_classes)
        self.arch["classifier"] = f"linear_{chs}x{spec.num_classes}"
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = spec.bn_eps

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.spec.in_chs, self.spec.input_size, self.spec.input_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def named_blocks(self) -> list[tuple[str, nn.Module]]:
        """Top-level blocks in execution order, named as in the state dict."""
        mods = dict(self.named_modules())
        return [(name, mods[name]) for name in self.arch]

    def cost(self, input_size: int | None = None) -> ModelCost:
        size = input_size or self.spec.input_size
        shape = (self.spec.in_chs, size, size)
        rows, cur = [], shape
        for name, m in self.named_blocks():
            c = (linear_cost(self.classifier.in_features, self.classifier.out_features)
                 if name == "classifier" else m.cost(cur[1:]))
            rows.append(BlockRow(name, self.arch[name].split("_")[0], self.arch[name], c))
            cur = c.out_shape
        return ModelCost(shape, tuple(rows))


def list_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def load_spec(name: str | Path) -> ModelSpec:
    """A zoo name (``mobilenet_v2``) or the path of a spec TOML file."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.exists():
            raise FileNotFoundError(f"model spec file {path} does not exist")
        return ModelSpec.from_toml(path)
    candidate = MODELS_DIR / f"{name}.toml"
    if not candidate.exists():
        raise ValueError(f"unknown model {str(name)!r}; known: {', '.join(list_models())} "
                         "(or pass the path of a spec .toml file)")
    return ModelSpec.from_toml(candidate)


def create_model(name: str | Path | ModelSpec, twin: bool = False, *, pretrained: bool = False,
                 seed: int = 0, **overrides) -> EdgeNet:
    """Build a zoo model. ``overrides`` replace spec fields: ``width``, ``input_size``,
    ``num_classes``, ``act``, ``dropout`` ... The initial weights come from ``seed`` (the global
    random state is left as it was), so the same call builds the same model and a training run
    can be repeated."""
    spec = name if isinstance(name, ModelSpec) else load_spec(name)
    spec = spec.with_overrides(**overrides)
    if twin:
        spec = spec.as_twin()
    if pretrained:
        if spec.twin:
            raise ValueError(f"{spec.name}: there are no pretrained weights for the standard-conv twin")
        if not spec.pretrained:
            raise ValueError(f"{spec.name}: the spec names no pretrained weights "
                             "(pass your own checkpoint with --weights)")
        if spec.width != 1.0 or spec.num_classes != 1000:
            raise ValueError(f"{spec.name}: pretrained weights exist only for width=1.0 and "
                             "num_classes=1000")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EdgeNet(spec)
    if pretrained:
        from .weights import load_pretrained
        load_pretrained(model, spec.pretrained)
    return model.eval()


def load_weights(model: EdgeNet, path: str | Path) -> EdgeNet:
    """Load a checkpoint saved by ``torch.save(model.state_dict())`` or edgeconv's trainer."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors from a file that is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise ValueError(f"{path} does not fit {model.spec.name}{' (twin)' if model.spec.twin else ''}: "
                         f"{' '.join(first)}; were these weights saved from the other of model/twin, or "
                         "another width or class count?") from None
    return model.eval()


def labels_for(spec: ModelSpec) -> list[str]:
    """Class names: a labels file named in the spec (relative to models/), else class_<i>."""
    if spec.labels:
        path = Path(spec.labels)
        path = path if path.is_absolute() else MODELS_DIR / path
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) == spec.num_classes:
            return names
    return [f"class_{i}" for i in range(spec.num_classes)]
