"""Your own model: model cards, foreign modules, their standard-conv twin and their cost.

A model card is a TOML file of the same kind as ``models/*.toml``. Where a zoo spec lists arch
strings, a card names a ``source``:

* ``source = "package.module:callable"`` or ``"path/to/file.py:callable"`` (relative to the
  card), called with the ``[source_args]`` table as keyword arguments; it returns an
  ``nn.Module``;
* ``source = "path/to/model.pt2"``: a program saved with ``torch.export.save``.

Beside it: ``name``, ``input_size`` (or ``input_shape = [C, H, W]``), ``num_classes``, ``labels``
(a file, one class per line), ``weights`` (a state dict to load), ``description`` and a
``[preprocess]`` table (resize, crop, mean, std, interpolation).

Every model edgeconv works on, zoo or card, carries a ``ModelCard`` (``model.card``): its name,
input shape, labels, preprocessing and the ``source`` record that rebuilds it without
unpickling anything (a spec, a card's source plus a state dict, or a ``.pt2`` program).

**The standard-conv twin of any module** (``dense_twin``): every ``Conv2d`` with ``groups > 1``
becomes a dense ``Conv2d`` with the same in/out channels, kernel, stride, padding, dilation and
bias; nothing else changes. The zoo's rule differs for one block kind: a depthwise-separable
``ds`` block (depthwise k x k + pointwise) becomes *one* standard k x k conv from its input to
its output channels (the MobileNets paper's baseline), while the generic rule, which cannot
know which pointwise conv pairs with which depthwise one, keeps the pointwise conv and makes
the depthwise conv dense (C -> C). For ``dw``, ``gc`` and ``ir`` blocks the two rules agree.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

CARD_KEYS = ("name", "source", "source_args", "input_size", "input_shape", "num_classes", "labels",
             "weights", "preprocess", "description")
PREPROCESS_KEYS = ("resize", "crop", "mean", "std", "interpolation")


@dataclass(frozen=True)
class ModelCard:
    """What every verb needs to know about a model, zoo or your own."""
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int | None = None
    labels: tuple[str, ...] | None = None
    preprocess: dict | None = None
    source: dict = field(default_factory=dict)
    twin: bool = False
    description: str = ""

    def missing_for_check(self) -> list[str]:
        """The card fields ``check`` needs and this card lacks."""
        out = []
        if not self.labels:
            out.append("labels (a file with one class name per line)")
        if not self.preprocess:
            out.append("[preprocess] (resize, crop, mean, std)")
        return out


class CardError(ValueError):
    """A model card, or the model it names, that edgeconv cannot use: names the field and the fix."""


def is_source(text: str) -> bool:
    """A MODEL argument naming a source directly (``pkg.mod:fn``, ``file.py:fn``, ``x.pt2``)."""
    return text.endswith(".pt2") or bool(re.match(r"^[\w./\\-]+(\.py)?:[\w.]+$", text))


# -- reading a card ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceCard:
    """A parsed card whose model comes from a ``source``."""
    name: str
    source: str
    base: Path
    input_shape: tuple[int, int, int]
    source_args: dict = field(default_factory=dict)
    num_classes: int | None = None
    labels: str = ""
    weights: str = ""
    preprocess: dict = field(default_factory=dict)
    description: str = ""
    path: Path | None = None

    def resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.base / q

    def record(self) -> dict:
        """The manifest's ``source`` record: the card's fields with paths made absolute. A ``.pt2``
        program is kept in the artifact itself (``reference.pt2``); a callable is imported again
        and given the reference weights (``reference.pt``)."""
        src = self.source
        if ":" in src and src.split(":", 1)[0].endswith(".py"):
            file, fn = src.split(":", 1)
            src = f"{self.resolve(file)}:{fn}"
        elif src.endswith(".pt2"):
            src = str(self.resolve(src))
        return {"kind": "pt2" if src.endswith(".pt2") else "card", "name": self.name, "source": src, "source_args": self.source_args,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "card": str(self.path) if self.path else None}


def read_card(path: str | Path) -> SourceCard:
    """Parse a card with a ``source`` (see the module docstring); every problem names the key."""
    from .spec import read_toml
    path = Path(path)
    data = read_toml(path, "model card")
    return card_from_dict(data, path.resolve().parent, path, where=str(path))


def card_from_dict(data: dict, base: Path, path: Path | None = None, where: str = "model card") -> SourceCard:
    unknown = sorted(set(data) - set(CARD_KEYS))
    if unknown:
        raise CardError(f"{where}: unknown key {unknown[0]!r}; allowed keys in a card with a source: "
                        f"{', '.join(CARD_KEYS)} (arch-string cards take the zoo spec's keys instead)")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        raise CardError(f"{where}: 'source' must name 'package.module:callable', 'file.py:callable' or 'model.pt2'")
    if not (source.endswith(".pt2") or ":" in source):
        raise CardError(f"{where}: source {source!r} names no callable; write 'package.module:callable', "
                        "'file.py:callable' or a .pt2 file")
    shape = _input_shape(data, where)
    num_classes = data.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 1):
        raise CardError(f"{where}: num_classes = {num_classes!r}: must be a whole number >= 1")
    args = data.get("source_args", {})
    if not isinstance(args, dict):
        raise CardError(f"{where}: [source_args] must be a table of keyword arguments")
    pre = data.get("preprocess", {})
    if not isinstance(pre, dict):
        raise CardError(f"{where}: [preprocess] must be a table with {', '.join(PREPROCESS_KEYS)}")
    bad = sorted(set(pre) - set(PREPROCESS_KEYS))
    if bad:
        raise CardError(f"{where}: unknown key preprocess.{bad[0]}; allowed: {', '.join(PREPROCESS_KEYS)}")
    if pre:
        from .data import Preprocess
        try:
            Preprocess.from_dict(pre, shape[1])
        except (TypeError, ValueError) as e:
            raise CardError(f"{where}: [preprocess] {e}") from None
    for key in ("labels", "weights", "description", "name"):
        if key in data and not isinstance(data[key], str):
            raise CardError(f"{where}: {key!r} must be a string")
    name = data.get("name") or (path.stem if path else re.sub(r"\W+", "_", source.split(":")[-1]).strip("_"))
    card = SourceCard(name, source, base, shape, args, num_classes, data.get("labels", ""),
                      data.get("weights", ""), pre, data.get("description", ""), path)
    for key in ("labels", "weights"):
        value = getattr(card, key)
        if value and not card.resolve(value).exists():
            raise CardError(f"{where}: {key} file {card.resolve(value)} does not exist")
    if source.endswith(".pt2") and not card.resolve(source).exists():
        raise CardError(f"{where}: source {card.resolve(source)} does not exist")
    return card


def _input_shape(data: dict, where: str) -> tuple[int, int, int]:
    from .spec import MAX_CHANNELS, MAX_INPUT_SIZE
    if "input_shape" in data:
        s = data["input_shape"]
        if not (isinstance(s, list) and len(s) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                            for v in s)
                and s[0] <= MAX_CHANNELS and max(s[1:]) <= MAX_INPUT_SIZE):
            raise CardError(f"{where}: input_shape = {s!r}: must be [C, H, W] with whole numbers, H and W from 1 "
                            f"to {MAX_INPUT_SIZE}")
        return tuple(s)
    size = data.get("input_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_INPUT_SIZE:
        raise CardError(f"{where}: needs input_size from 1 to {MAX_INPUT_SIZE} (e.g. 224) or input_shape = [C, H, W]"
                        + (f"; got input_size = {size!r}" if size is not None else ""))
    return (3, size, size)


# -- building the module ----------------------------------------------------------------------------
def _import_callable(source: str, base: Path, where: str):
    target, _, attr = source.rpartition(":")
    if target.endswith(".py"):
        file = Path(target).expanduser()
        file = file if file.is_absolute() else base / file
        if not file.exists():
            raise CardError(f"{where}: source file {file} does not exist")
        name = f"edgeconv_card_{re.sub(r'[^0-9A-Za-z_]', '_', str(file.resolve()))}"
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(file.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # any error in the user's file: named, not a traceback
            raise CardError(f"{where}: source file {file} does not import: {type(e).__name__}: {e}") from None
        finally:
            sys.path.remove(str(file.parent))
        what = str(file)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # ImportError, or any error the package raises at import
            raise CardError(f"{where}: source module {target!r} does not import ({type(e).__name__}: {e}); "
                            "install it or fix 'source'") from None
        what = target
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")][:12]
            raise CardError(f"{where}: {what} has no callable {attr!r} (found: {', '.join(public)}); "
                            "fix the part of 'source' after ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CardError(f"{where}: {what}:{attr} is a {type(obj).__name__}, not a callable")
    return obj


@contextlib.contextmanager
def _weights_only_load():
    """``torch.export.load`` falls back to an unrestricted unpickle when the safe load fails;
    while a program is read, any unpickling is restricted to tensors and plain data."""
    import torch
    stock = torch.load

    def safe(*args, **kwargs):
        kwargs["weights_only"] = True
        return stock(*args, **kwargs)
    torch.load = safe
    try:
        yield
    finally:
        torch.load = stock


def load_pt2(path: Path, where: str = ""):
    """The module of a ``torch.export`` program, read without running any pickled code."""
    import torch
    import types
    try:
        with _weights_only_load():
            ep = torch.export.load(str(path))
    except Exception as e:  # corrupt zip, wrong file, refused pickle: one named error
        raise CardError(f"{where or path}: {path} is not a readable torch.export program "
                        f"({type(e).__name__}: {str(e)[:200]}); save it with torch.export.save") from None
    gm = ep.module()
    # A program's train/eval behaviour was fixed when it was captured; torch refuses to switch it,
    # so switching is a no-op here and the module goes wherever an nn.Module goes.
    gm.train = types.MethodType(lambda self, mode=True: self, gm)
    gm.eval = types.MethodType(lambda self: self, gm)
    return gm


def _build_source(card: SourceCard, where: str):
    from torch import nn
    if card.source.endswith(".pt2"):
        module = load_pt2(card.resolve(card.source), where)
    else:
        fn = _import_callable(card.source, card.base, where)
        try:
            module = fn(**card.source_args)
        except Exception as e:  # the user's factory failing
            raise CardError(f"{where}: calling {card.source}({', '.join(f'{k}={v!r}' for k, v in card.source_args.items())}) "
                            f"failed: {type(e).__name__}: {e}") from None
        if not isinstance(module, nn.Module):
            raise CardError(f"{where}: {card.source} returned a {type(module).__name__}, not a torch.nn.Module")
    if card.weights:
        _load_state(module, card.resolve(card.weights), where)
    return module.eval()


def _load_state(module, path: Path, where: str) -> None:
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a checkpoint
        raise CardError(f"{where}: weights {path} is not a PyTorch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CardError(f"{where}: weights {path} do not fit the model: {' '.join(str(e).splitlines()[:2])}") from None


def check_single_input(module, input_shape, where: str):
    """Run one forward pass on zeros; refuse a model with several inputs or a non-tensor output.
    Returns the output shape."""
    import torch
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) > 1:
        raise CardError(f"{where}: the model's forward takes {len(params)} inputs "
                        f"({', '.join(p.name for p in params)}); edgeconv handles single-input models")
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape))
    except Exception as e:  # wrong input size, the model's own errors
        raise CardError(f"{where}: the model fails on a 1 x {' x '.join(map(str, input_shape))} input: "
                        f"{type(e).__name__}: {str(e)[:300]}; check input_size / input_shape") from None
    if not isinstance(out, torch.Tensor):
        raise CardError(f"{where}: the model returns a {type(out).__name__}; edgeconv handles models "
                        "with one output tensor")
    return tuple(out.shape)


@contextlib.contextmanager
def seeded(seed: int):
    """torch's random state seeded from ``seed`` inside, and the global state left as it was: the
    same build gives the same initial weights whatever ran before in the process."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_card_model(card: SourceCard, twin: bool = False, where: str | None = None, seed: int = 0):
    """The card's module (its twin if asked), with ``.card`` and ``.input_shape`` set. The source
    builds it with torch's random state seeded from ``seed`` (and the global state left as it
    was): the same card gives the same initial weights whatever ran before in the process."""
    import torch

    from .data import Preprocess
    where = where or (str(card.path) if card.path else card.source)
    with seeded(seed):
        module = _build_source(card, where)
    out_shape = check_single_input(module, card.input_shape, where)
    if twin:
        module = dense_twin(module)
    labels = None
    if card.labels:
        labels = tuple(line.strip() for line in card.resolve(card.labels).read_text().splitlines() if line.strip())
        if card.num_classes and len(labels) != card.num_classes:
            raise CardError(f"{where}: labels file {card.resolve(card.labels)} has {len(labels)} entries; "
                            f"num_classes is {card.num_classes}")
    num_classes = card.num_classes or (len(labels) if labels else None)
    if num_classes is None and len(out_shape) == 2:
        num_classes = out_shape[1]
    pre = Preprocess.from_dict(card.preprocess, card.input_shape[1]).to_dict() if card.preprocess else None
    module.card = ModelCard(card.name, tuple(card.input_shape), num_classes, labels, pre,
                            {**card.record(), "twin": twin}, twin, card.description)
    module.input_shape = tuple(card.input_shape)
    return module


def adopt(module, example=None, name: str | None = None):
    """Give a module that came without a card (the Python API) the card its export needs: its
    name and input shape; rebuilt from a ``.pt2`` program."""
    if getattr(module, "card", None) is not None:
        return module
    if example is None and getattr(module, "input_shape", None) is None:
        raise CardError(f"{type(module).__name__} has no model card: pass example= (one input tensor) "
                        "or load it with edgeconv.create_model(card)")
    shape = tuple(example.shape[1:]) if example is not None else tuple(module.input_shape)
    out = check_single_input(module.eval(), shape, type(module).__name__)
    classes = out[1] if len(out) == 2 else None
    module.card = ModelCard(name or type(module).__name__, shape, classes, None, None, {"kind": "pt2"})
    module.input_shape = shape
    return module


# -- the standard-conv twin of any module ---------------------------------------------------------
def dense_twin(module, seed: int = 0):
    """A copy of ``module`` with every grouped ``Conv2d`` (``groups > 1``) dense: same channels,
    kernel, stride, padding, dilation, bias and padding mode; new weights from ``seed``. For a
    graph module (a ``.pt2`` program) the conv nodes of the graph are rewritten likewise."""
    import copy

    import torch
    from torch import nn
    module = copy.deepcopy(module)
    with seeded(seed):
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        for m in convs:  # the module itself keeps its class (e.g. a conv that pads TF-style in forward)
            weight = torch.empty(m.out_channels, m.in_channels, *m.kernel_size)
            nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
            m.groups = 1
            m.weight = nn.Parameter(weight)
        if not convs and isinstance(module, torch.fx.GraphModule):
            _dense_graph(module)
    return module.eval()


def _dense_graph(gm) -> int:
    import torch
    from torch import nn
    changed = 0
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target != torch.ops.aten.conv2d.default:
            continue
        args = list(n.args) + [None] * (7 - len(n.args))
        groups = args[6] if args[6] is not None else 1
        w = args[1]
        if groups <= 1:
            continue
        if not (isinstance(w, torch.fx.Node) and w.op == "get_attr"):
            raise CardError("the .pt2 program's grouped convs take computed weights; its standard-conv twin "
                            "cannot be made from the graph (give the card a source callable instead)")
        old = gm.get_parameter(w.target) if w.target in dict(gm.named_parameters()) else getattr(gm, w.target)
        dense = torch.empty(old.shape[0], old.shape[1] * groups, *old.shape[2:])
        nn.init.kaiming_uniform_(dense, a=5 ** 0.5)
        owner, _, attr = w.target.rpartition(".")
        setattr(gm.get_submodule(owner) if owner else gm, attr, nn.Parameter(dense, requires_grad=False))
        args[6] = 1
        n.args = tuple(a for a in args[:7])
        changed += 1
    gm.recompile()
    return changed


# -- cost of any module -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str            # standard / pointwise / depthwise / grouped / linear
    out_shape: tuple
    params: int
    macs: int


def conv_kind(in_chs: int, out_chs: int, groups: int, kernel: tuple) -> str:
    if groups == 1:
        return "pointwise" if tuple(kernel) == (1, 1) else "standard"
    if groups == in_chs and out_chs % in_chs == 0:
        return "depthwise"
    return "grouped"


def layer_costs(module, input_shape) -> list[LayerRow]:
    """One row per Conv2d / Linear met in a real forward pass (module path, kind, output shape,
    params, MACs); a graph module without conv modules is read from its graph."""
    import torch
    from torch import nn
    rows: list[LayerRow] = []
    names = {m: n for n, m in module.named_modules()}

    def conv_hook(m, _i, out):
        kh, kw = m.kernel_size
        macs = out[0].numel() * (m.in_channels // m.groups) * kh * kw
        rows.append(LayerRow(names[m], conv_kind(m.in_channels, m.out_channels, m.groups, m.kernel_size),
                             tuple(out.shape[1:]), sum(p.numel() for p in m.parameters()), macs))

    def linear_hook(m, _i, out):
        rows.append(LayerRow(names[m], "linear", tuple(out.shape[1:]), sum(p.numel() for p in m.parameters()),
                             out[0].numel() * m.in_features))

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        if hooks:
            with torch.no_grad():
                module.eval()(torch.zeros(1, *input_shape))
        elif isinstance(module, torch.fx.GraphModule):
            rows = _graph_costs(module, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return rows


def _graph_costs(gm, input_shape) -> list[LayerRow]:
    import torch
    from torch.fx.passes.shape_prop import ShapeProp
    ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    rows = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
            continue
        out = n.meta["tensor_meta"].shape
        w = n.args[1].meta["tensor_meta"].shape
        has_bias = len(n.args) > 2 and n.args[2] is not None
        stack = n.meta.get("nn_module_stack") or {}
        name = list(stack.values())[-1][0] if stack else n.name
        if n.target == torch.ops.aten.linear.default:
            rows.append(LayerRow(name, "linear", tuple(out[1:]), w.numel() + (w[0] if has_bias else 0), w.numel()))
            continue
        groups = n.args[6] if len(n.args) > 6 else 1
        per_out = w[1] * w[2] * w[3]
        rows.append(LayerRow(name, conv_kind(w[1] * groups, w[0], groups, tuple(w[2:])), tuple(out[1:]),
                             w.numel() + (w[0] if has_bias else 0), out[1] * out[2] * out[3] * per_out))
    return rows


def blocks(module, depth: int = 1) -> list[str]:
    """Module paths of the blocks to rank or keep in fp32: the zoo's named blocks, else the
    modules ``depth`` levels down that hold parameters (or less deep, where a module has no
    such children), in the order the forward pass calls them. A container the forward pass
    never calls itself (a ``ModuleList`` of blocks) stands for its children, so every
    parameter of the model is in some block at every depth."""
    if hasattr(module, "named_blocks"):
        return [n for n, _ in module.named_blocks()]
    import torch
    if depth < 1:
        raise ValueError(f"--depth {depth}: must be 1 or more")
    first_call: dict[str, int] = {}

    def seen(name):
        def hook(_m, _inputs):
            first_call.setdefault(name, len(first_call))
        return hook

    hooks = [m.register_forward_pre_hook(seen(n)) for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, *module.input_shape))
    finally:
        for h in hooks:
            h.remove()

    def kids(name, m):
        return [(f"{name}.{c}" if name else c, ch) for c, ch in m.named_children()
                if any(True for _ in ch.parameters())]

    def pick(name, m, level) -> list[str]:
        inner = kids(name, m)
        if name in first_call and (level >= depth or not inner):
            return [name]
        return [p for n, ch in inner for p in pick(n, ch, level + 1)]

    found = [p for n, ch in kids("", module) for p in pick(n, ch, 1)]
    return sorted(dict.fromkeys(found), key=first_call.__getitem__)


def check_module_paths(module, names, what: str = "--keep-fp32") -> None:
    known = dict(module.named_modules())
    bad = [n for n in names if n not in known]
    if bad:
        shown = ", ".join(blocks(module)[:8])
        raise ValueError(f"{what}: no module named {', '.join(bad)} in {module.card.name}; "
                         f"its blocks: {shown} ... (module paths, as in the state dict)")


def with_card(module, **changes):
    module.card = replace(module.card, **changes)
    return module


def model_cost(model) -> dict:
    """Per-block (zoo) or per-layer (any module) cost as one dict: input shape, params, MACs,
    activation bytes and the rows, the same shape for every model."""
    if hasattr(model, "cost"):
        return model.cost().to_dict()
    from math import prod
    rows = layer_costs(model, model.input_shape)
    blocks = [{"name": r.name, "kind": r.kind, "arch": r.kind, "out_shape": list(r.out_shape), "params": r.params,
               "macs": r.macs, "act_bytes": 4 * prod(r.out_shape)} for r in rows]
    return {"input_shape": list(model.input_shape), "params": sum(p.numel() for p in model.parameters()),
            "macs": sum(r.macs for r in rows), "act_bytes": sum(b["act_bytes"] for b in blocks), "blocks": blocks}
