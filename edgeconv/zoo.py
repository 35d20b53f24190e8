"""The model zoo: specs in ``edgeconv/models/*.toml`` built into ``EdgeNet`` modules, and the
one entry point for every model edgeconv works on.

``create_model(model, twin=False, **overrides)`` builds a zoo model, an arch-string spec file's
model, or your own model from a card (``edgeconv.card``); ``twin=True`` builds its
standard-conv twin (the zoo's rule in ``edgeconv.spec``, the generic rule in ``edgeconv.card``).
Every model it returns carries a ``card`` (``edgeconv.card.ModelCard``).
"""
from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from . import blocks as B
from .cost import BlockRow, ModelCost, linear_cost
from .spec import BlockSpec, ModelSpec, make_divisible, parse_block

MODELS_DIR = Path(str(resources.files("edgeconv") / "models"))


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

    @property
    def card(self):
        from .card import ModelCard
        from .data import Preprocess
        s = self.spec
        return ModelCard(s.name, self.input_shape, s.num_classes, tuple(labels_for(s)),
                         Preprocess.from_dict(s.preprocess, s.input_size).to_dict(),
                         {"kind": "spec", "spec": s.to_dict()}, s.twin, s.description)

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
    """A zoo name (``mobilenet_v2``) or the path of an arch-string spec TOML file."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.exists():
            raise FileNotFoundError(f"model file {path} does not exist")
        spec = ModelSpec.from_toml(path)
        if spec.labels and not Path(spec.labels).is_absolute():  # relative to the spec file
            spec = replace(spec, labels=str(path.resolve().parent / spec.labels))
        return spec
    candidate = MODELS_DIR / f"{name}.toml"
    if not candidate.exists():
        raise ValueError(f"unknown model {str(name)!r}; known: {', '.join(list_models())} "
                         "(or the path of a model card .toml, or a source: pkg.mod:fn, file.py:fn, model.pt2)")
    return ModelSpec.from_toml(candidate)


def create_model(name, twin: bool = False, *, pretrained: bool = False, seed: int = 0, **overrides):
    """Build a model: a zoo name, a model card / spec ``.toml``, a ``ModelSpec``, or a source given
    directly (``pkg.mod:fn``, ``file.py:fn``, ``model.pt2``; then ``input_size`` is required).

    Zoo and arch-string models take ``overrides`` of spec fields (``width``, ``input_size``,
    ``num_classes``, ``act``, ``dropout`` ...); card models take ``input_size`` only. The initial
    weights of all of them come from ``seed`` (the global random state is left as it was)."""
    from .card import card_from_dict, is_source, read_card
    if not isinstance(name, ModelSpec):
        text = str(name)
        card = None
        if text.endswith(".toml") and Path(text).exists():
            from .spec import read_toml
            if "source" in read_toml(text, "model card"):
                card = read_card(text)
        elif is_source(text) and text not in list_models():
            size = overrides.get("input_size")
            if size is None:
                raise ValueError(f"model {text!r} is given as a source: pass --input-size (or write a model card "
                                 "with input_size, labels and [preprocess])")
            card = card_from_dict({"source": text, "input_size": size}, Path.cwd(), where=text)
        if card is not None:
            return _card_model(card, twin, pretrained, overrides, seed)
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
    from .card import seeded
    with seeded(seed):
        model = EdgeNet(spec)
    if pretrained:
        from .weights import load_pretrained
        load_pretrained(model, spec.pretrained)
    return model.eval()


def model_pair(model, weights=None, input_size=None, pretrained: bool = False, width=None) -> list[tuple[str, nn.Module]]:
    """``[("model", the model with ``weights`` (or its pretrained ones) loaded), ("twin", its
    standard-conv twin)]``."""
    out = []
    for side in ("model", "twin"):
        net = create_model(model, twin=side == "twin", input_size=input_size, width=width,
                           pretrained=pretrained and side == "model")
        if weights and side == "model":
            load_weights(net, weights)
        out.append((side, net))
    return out


def _card_model(card, twin: bool, pretrained: bool, overrides: dict, seed: int = 0):
    from .card import build_card_model
    if pretrained:
        raise ValueError(f"{card.name}: --pretrained is for zoo models; a card loads its weights in its source "
                         "or from its 'weights' file")
    unknown = sorted(k for k, v in overrides.items() if v is not None and k != "input_size")
    if unknown:
        raise ValueError(f"{card.name}: {', '.join(unknown)} apply to zoo models only; a card model is built "
                         "by its source (pass options through [source_args])")
    if overrides.get("input_size") is not None:
        from .spec import MAX_INPUT_SIZE
        size = overrides["input_size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_INPUT_SIZE:
            raise ValueError(f"input_size={size!r}: must be a whole number from 1 to {MAX_INPUT_SIZE}")
        card = replace(card, input_shape=(card.input_shape[0], size, size))
    return build_card_model(card, twin, seed=seed)


def load_reference(source: dict, path: Path):
    """The eager model an artifact was exported from, rebuilt from the manifest's ``source``
    record and the reference file ``path`` (``Artifact.reference()``: checked against the
    manifest), never unpickling anything."""
    from .card import SourceCard, build_card_model, load_pt2
    path, folder = Path(path), Path(path).parent
    kind = source.get("kind")
    if kind == "pt2":
        return load_pt2(path).eval()
    weights = path
    if kind == "spec":
        try:
            model = EdgeNet(ModelSpec.from_dict(source["spec"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{folder}: the manifest's model spec cannot be rebuilt ({e}); export again") from None
    elif kind == "card":
        try:
            card = SourceCard(source["name"], source["source"], Path("/"), tuple(source["input_shape"]),
                              source.get("source_args") or {}, source.get("num_classes"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{folder}: the manifest's source record lacks {e}; export again") from None
        model = build_card_model(card, twin=bool(source.get("twin")), where=f"{folder}: the model's source")
    else:
        raise ValueError(f"{folder}: the manifest does not say how to rebuild the model (source {kind!r}); "
                         "export it again with this edgeconv")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"] if "state_dict" in state else state)
    except Exception as e:  # a damaged or foreign reference file
        raise ValueError(f"{weights}: not the reference weights of this model ({type(e).__name__}: "
                         f"{str(e)[:200]}); export again") from None
    return model.eval()


def load_weights(model, path: str | Path):
    """Load a checkpoint saved by ``torch.save(model.state_dict())`` or edgeconv's trainer."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors from a file that is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         "pass a state dict saved by torch.save or `edgeconv train`") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict; pass a checkpoint saved by "
                         "torch.save(model.state_dict()) or `edgeconv train`")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise ValueError(f"{path} does not fit {model.card.name}{' (twin)' if model.card.twin else ''}: "
                         f"{' '.join(first)}; were these weights saved from the other of model/twin, or "
                         "another width or class count?") from None
    return model.eval()


def labels_for(spec: ModelSpec) -> list[str]:
    """Class names: a labels file named in the spec (relative to the zoo's folder), else class_<i>."""
    if spec.labels:
        path = Path(spec.labels)
        path = path if path.is_absolute() else MODELS_DIR / path
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) == spec.num_classes:
            return names
    return [f"class_{i}" for i in range(spec.num_classes)]
