"""``edgeconv run``: model -> twin -> train -> export -> verify -> check -> [sweep] -> bench -> report.

Each stage reads what the previous ones wrote into the run folder and records itself as done
in ``run.json``; running the same command again skips the finished stages, so an
interrupted run resumes where it stopped (the bench stage also resumes record by record).
The run folder is locked while a run writes to it; ``force`` starts over by deleting only what
a run writes there.

Run folder::

    run.json                  config, stage status and timings
    models.json               per-block costs of the model and its twin
    checkpoints/{model,twin}.pt + .json   trained weights and held-out accuracy (digits)
    artifacts/{model,twin}/   exported files, manifest.json, verify.json, accuracy.json
    sweep/<variant-id>/       with a [sweep] table: one artifact folder per variant, with
                              verify.json, accuracy.json and variant.json; sweep.json
    results.jsonl             one benchmark record per (file, runtime, device, threads)
    report.html, report.md, report.json, plots/*.png

The config (TOML) has one table per stage; every key is checked, with the table it belongs
to, before any stage runs, as are the model, the data, the weights and the devices; a
``cluster`` that does not answer is an error before any stage runs.

A ``[sweep]`` table (models, widths, input_sizes, recipes: a list of tables of
``QuantRecipe`` fields) adds the variants model x width x input size x recipe: each is built,
trained on the digits when the run's data is the digits, exported in the run's formats and
precisions, verified, and checked when trained (``run_variant``), as Ray tasks over the
cluster's nodes (``edgeconv.cluster.sweep``); a rerun runs only the variants not yet in
``sweep/``.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .artifact import FORMATS, PRECISIONS, RUNTIMES, FolderLock, ensure_writable, write_json_atomic

STAGES = ("build", "train", "export", "verify", "check", "sweep", "bench", "report")
RUN_FILES = ("run.json", "models.json", "results.jsonl", "report.html", "report.md", "report.json")
RUN_FOLDERS = ("checkpoints", "artifacts", "plots", "sweep")
SIDES = ("model", "twin")
ALLOWED = {"formats": tuple(FORMATS), "precisions": PRECISIONS, "runtimes": RUNTIMES}
SECTIONS = {
    "model": ("model", "pretrained", "weights", "twin_weights", "input_size"),
    "data": ("data", "class_index", "eval_limit"),
    "train": ("train_epochs",),
    "export": ("formats", "precisions", "max_drop"),
    "quant": ("quant",),
    "bench": ("devices", "inventory", "runtimes", "threads", "warmup", "min_runs", "min_seconds", "cluster"),
    "sweep": ("models", "widths", "input_sizes", "recipes"),
}
# Where a run computes, not what: a run resumes on another cluster address.
NOT_COMPARED = ("cluster",)


@dataclass
class RunConfig:
    """The TOML config of ``edgeconv run``; every key optional (the embedded default). The
    ``[quant]`` table is the int8 recipe (``edgeconv.quantize.QuantRecipe``), the ``[sweep]``
    table the variants of ``sweep_variants``."""
    model: str = "tiny"
    pretrained: bool = False
    weights: str = ""
    twin_weights: str = ""
    input_size: int = 0
    data: str = "digits"
    class_index: str = ""
    eval_limit: int = 0
    train_epochs: int = 0
    formats: list = field(default_factory=lambda: list(ALLOWED["formats"]))
    precisions: list = field(default_factory=lambda: list(ALLOWED["precisions"]))
    max_drop: float = 1.0
    quant: dict = field(default_factory=dict)
    devices: list = field(default_factory=lambda: ["local"])
    inventory: str = ""
    runtimes: list = field(default_factory=list)
    threads: list = field(default_factory=lambda: [1])
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 3.0
    cluster: str = ""
    sweep: dict = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        from .spec import read_toml
        path = Path(path)
        raw = read_toml(path, "config file")
        try:
            cfg = cls.from_sections(raw)
            cfg.resolve_paths(path.resolve().parent)
            cfg.validate()
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return cfg

    @classmethod
    def from_sections(cls, raw: dict) -> RunConfig:
        """One table per stage; a key outside its table, or in another one, is an error naming
        where it belongs."""
        home = {k: s for s, keys in SECTIONS.items() for k in keys}
        flat: dict = {}
        for section, value in raw.items():
            if not isinstance(value, dict):
                where = f"; it belongs in [{home[section]}]" if section in home else ""
                raise ValueError(f"key {section!r} is outside any table{where}; tables: "
                                 f"{', '.join(f'[{s}]' for s in SECTIONS)}")
            if section not in SECTIONS:
                raise ValueError(f"unknown table [{section}]; tables: {', '.join(f'[{s}]' for s in SECTIONS)}")
            if section == "quant":
                flat["quant"] = dict(value)
                continue
            for key, v in value.items():
                if key not in home:
                    raise ValueError(f"unknown key {key!r}; allowed keys: {', '.join(SECTIONS[section])} (in [{section}])")
                if home[key] != section:
                    raise ValueError(f"key {key!r} is in [{section}] but belongs in [{home[key]}]")
                if section == "sweep":
                    flat.setdefault("sweep", {})[key] = v
                else:
                    flat[key] = v
        return cls(**flat)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(known)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def resolve_paths(self, base: Path) -> None:
        """File names in a config are relative to the config file."""
        for key in ("weights", "twin_weights", "class_index", "inventory"):
            v = getattr(self, key)
            if isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
                setattr(self, key, str(base / v))
        if isinstance(self.data, str) and self.data not in ("digits", "random") and \
                not Path(self.data).expanduser().is_absolute():
            self.data = str(base / self.data)
        if isinstance(self.model, str) and self.model.endswith(".toml") and not Path(self.model).is_absolute():
            self.model = str(base / self.model)
        if isinstance(self.sweep.get("models"), list):
            self.sweep["models"] = [str(base / m) if isinstance(m, str) and m.endswith(".toml") and
                                    not Path(m).is_absolute() else m for m in self.sweep["models"]]

    def recipe(self):
        from .quantize import QuantRecipe
        return QuantRecipe.from_dict(self.quant)

    def validate(self) -> None:
        """Every value, and what it names (model, data, files, devices), before any stage runs."""
        defaults = RunConfig()
        for f in fields(self):
            value, expected = getattr(self, f.name), type(getattr(defaults, f.name))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"key {f.name!r} = {value!r}: expected {expected.__name__}")
        for key, allowed in ALLOWED.items():
            bad = [v for v in getattr(self, key) if v not in allowed]
            if bad:
                raise ValueError(f"key {key!r}: {bad[0]!r} is not allowed; allowed values: {', '.join(allowed)}")
        if not self.formats or not self.precisions:
            raise ValueError("keys 'formats' and 'precisions' need at least one value each")
        if not self.devices:
            raise ValueError("key 'devices' is empty: name at least one device (local, qemu-arm64 or one of the "
                             "inventory)")
        for key in ("warmup", "eval_limit", "train_epochs", "input_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"key {key!r} = {getattr(self, key)}: must be >= 0")
        if self.min_runs < 1:
            raise ValueError(f"key 'min_runs' = {self.min_runs}: must be >= 1")
        for key in ("min_seconds", "max_drop"):
            v = getattr(self, key)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"key {key!r} = {v}: must be a finite number >= 0")
        if any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in self.threads) or not self.threads:
            raise ValueError(f"key 'threads' = {self.threads}: thread counts are whole numbers >= 1")
        try:
            self.recipe()
        except ValueError as e:
            raise ValueError(f"[quant]: {e}") from None
        self.timing()
        if self.cluster:
            from .cluster import resolve
            if self.cluster != "auto":
                resolve(self.cluster)
        self._validate_names()
        if self.sweep:
            sweep_variants(self)

    def timing(self):
        """The bench stage's timing (``edgeconv.benchmark.TimingConfig``, which checks it)."""
        from .benchmark import TimingConfig
        try:
            return TimingConfig(warmup=self.warmup, min_runs=self.min_runs, min_seconds=self.min_seconds)
        except ValueError as e:
            raise ValueError(f"[bench]: {e}") from None

    def _validate_names(self) -> None:
        from .zoo import list_models
        if self.model not in list_models() and not (self.model.endswith(".toml") and Path(self.model).exists()):
            raise ValueError(f"key 'model' = {self.model!r}: allowed values: {', '.join(list_models())} "
                             "or the path of a model card .toml")
        for key in ("weights", "twin_weights", "class_index"):
            v = getattr(self, key)
            if v and not Path(v).expanduser().is_file():
                raise ValueError(f"key {key!r} = {v!r}: no such file")
        if self.data not in ("digits",) and not Path(self.data).expanduser().is_dir():
            raise ValueError(f"key 'data' = {self.data!r}: not 'digits' or an existing image folder")
        from .device.inventory import get_device
        for name in self.devices:
            try:
                get_device(name, self.inventory or None)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"key 'devices': {e}") from None
        exported = {FORMATS[f].runtime for f in self.formats}
        idle = [r for r in self.runtimes if r not in exported]
        if idle:
            raise ValueError(f"key 'runtimes': {idle[0]!r} runs none of the formats exported "
                             f"({', '.join(self.formats)}); runtimes of those: {', '.join(sorted(exported))}")
        self._validate_model()

    def _validate_model(self) -> None:
        """What the stages would find out late about the model: its options, weights, the modules
        the recipe keeps in fp32, and the data folder's classes against its labels."""
        from .card import check_module_paths
        from .spec import read_toml
        from .zoo import create_model, load_spec, load_weights
        is_card = self.model.endswith(".toml") and "source" in read_toml(self.model, "model card")
        if self.pretrained:
            if is_card:
                raise ValueError("key 'pretrained' = true: a model card loads its own weights (its source or "
                                 "'weights'); drop 'pretrained'")
            if not load_spec(self.model).pretrained:
                raise ValueError(f"key 'pretrained' = true: {self.model} has no pretrained weights; set 'weights' "
                                 "or leave the model to be trained")
        keep = self.recipe().keep_fp32
        for twin, key in ((False, "weights"), (True, "twin_weights")):
            try:
                model = create_model(self.model, twin=twin, input_size=self.input_size or None)
            except ValueError as e:
                raise ValueError(f"key 'model' = {self.model!r}: {e}") from None
            if getattr(self, key):
                try:
                    load_weights(model, getattr(self, key))
                except ValueError as e:
                    raise ValueError(f"key {key!r}: {e}") from None
            check_module_paths(model, keep, "[quant] keep_fp32")
        if self.data != "digits":
            from .data import folder_labels, image_files
            root = Path(self.data).expanduser()
            try:
                folder_labels(root, image_files(root)[0], list(model.card.labels or []) or None,
                              Path(self.class_index) if self.class_index else None)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"key 'data': {e}") from None
        elif self.class_index:
            raise ValueError("key 'class_index' labels the images of a data folder; 'data' is 'digits' "
                             "(drop class_index or set data to an image folder)")


def _compared(config: dict | None) -> dict | None:
    """A run's config as far as it decides the results: a key the run was written without reads
    as its default."""
    if not isinstance(config, dict):
        return config
    return {k: v for k, v in {**asdict(RunConfig()), **config}.items() if k not in NOT_COMPARED}


# -- sweeps -----------------------------------------------------------------------------------------
@dataclass
class Variant:
    """One point of a ``[sweep]``: a zoo model (or arch-string spec file) at a width and input
    size, quantized with a recipe (a table of ``QuantRecipe`` fields)."""
    model: str
    width: float
    input_size: int
    recipe: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The variant's folder name; the recipe enters as a hash of all its fields, so
        reordering the config's lists keeps every finished variant."""
        from .quantize import QuantRecipe
        recipe = json.dumps(QuantRecipe.from_dict(self.recipe).to_dict(), sort_keys=True)
        return (f"{Path(self.model).stem}-w{self.width:g}-r{self.input_size}-"
                f"q{hashlib.sha256(recipe.encode()).hexdigest()[:8]}")


def sweep_variants(cfg: RunConfig) -> list[Variant]:
    """Every model x width x input size x recipe of the ``[sweep]`` table of ``cfg``. A key left
    out keeps the run's own (its model, the model's width, the run's input size, its ``[quant]``);
    every value is checked, naming the key and what it takes."""
    from .quantize import QuantRecipe
    from .zoo import list_models, load_spec
    sw = cfg.sweep

    def listed(key: str, ok, what: str, default) -> list:
        if key not in sw:
            return [default]
        v = sw[key]
        if not isinstance(v, list) or not v or not all(ok(x) for x in v):
            raise ValueError(f"[sweep] {key} = {v!r}: {what} (leave the key out for the run's own)")
        return v

    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    models = listed("models", lambda m: isinstance(m, str) and (m in list_models() or m.endswith(".toml")),
                    f"a list of zoo models ({', '.join(list_models())}) or arch-string spec .toml files", cfg.model)
    widths = listed("widths", lambda w: number(w) and 0 < w <= 16,
                    "a list of width multipliers > 0, e.g. [0.5, 0.75, 1.0]", None)
    sizes = listed("input_sizes", lambda s: isinstance(s, int) and not isinstance(s, bool) and s >= 1,
                   "a list of input sizes in pixels, e.g. [128, 160, 224]", cfg.input_size or None)
    recipes = listed("recipes", lambda r: isinstance(r, dict),
                     "a list of tables of int8 recipe fields, e.g. [{}, {method = \"minmax\"}]", cfg.quant)
    for i, r in enumerate(recipes):
        try:
            QuantRecipe.from_dict(r)
        except ValueError as e:
            raise ValueError(f"[sweep] recipes[{i}]: {e}") from None
    out: dict[str, Variant] = {}
    for m in models:
        try:
            spec = load_spec(m)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"[sweep] models: {m!r}: {e} (a sweep takes zoo models and arch-string spec files, "
                             "not model cards)") from None
        for w in widths:
            for size in sizes:
                try:
                    v = spec.with_overrides(width=None if w is None else float(w), input_size=size)
                except ValueError as e:
                    raise ValueError(f"[sweep] {m} at width {w}, input size {size}: {e}") from None
                for r in recipes:
                    var = Variant(m, float(v.width), v.input_size, dict(r))
                    out.setdefault(var.id, var)
    return list(out.values())


def run_variant(cfg: RunConfig, v: Variant, out: str | Path, threads: int | None = None,
                about: dict | None = None) -> dict:
    """One sweep variant into the folder ``out``: build it, train it when the run's data is the
    digits (so its int8 check means something), export the run's formats and precisions with
    the variant's recipe, verify, and check on the run's data when trained. Writes
    ``variant.json`` (with ``about``) beside the files and returns it."""
    from .accuracy import check
    from .data import calibration
    from .exporters import export
    from .parity import verify
    from .quantize import QuantRecipe
    from .train import TrainConfig, set_threads, train
    from .zoo import create_model
    t0 = time.perf_counter()
    threads = set_threads(threads)
    model = create_model(v.model, width=v.width, input_size=v.input_size)
    info = {"id": v.id, "model": v.model, "width": v.width, "input_size": v.input_size, "recipe": v.recipe,
            **(about or {})}
    trained = cfg.data == "digits" and model.card.num_classes == 10
    if trained:
        tc = TrainConfig(epochs=cfg.train_epochs, threads=threads) if cfg.train_epochs else TrainConfig(threads=threads)
        metrics = train(model, "digits", tc, log=None)
        info["train"] = {k: m for k, m in metrics.items() if isinstance(m, (int, float, str))}
    recipe = QuantRecipe.from_dict(v.recipe)
    calib_x, calib_info = None, None
    if "int8" in cfg.precisions:
        calib = calibration(cfg.data, model, recipe.calib_count, cfg.class_index or None)
        calib_x, calib_info = calib.x, calib.describe()
    art = export(model, calib=calib_x, out=out, force=True, formats=cfg.formats, precisions=cfg.precisions,
                 recipe=recipe, calib_info=calib_info)
    info["export_errors"] = [e["message"] for e in art.errors]
    info["verify_ok"] = verify(art)["ok"]
    if trained:
        res = check(art, cfg.data, class_index=cfg.class_index or None, max_drop=cfg.max_drop,
                    limit=cfg.eval_limit or None)
        info["check"] = "ok" if res["ok"] else f"int8 drop above {cfg.max_drop} points"
    else:
        info["check"] = "skipped: random weights (not trained on this data)"
    info["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(Path(out) / "variant.json", info)
    return info


class Run:
    def __init__(self, folder: str | Path, config: RunConfig, log=print, progress=None):
        self.dir = Path(folder)
        self.cfg = config
        self.log = log
        self.progress = progress
        self.state_path = self.dir / "run.json"
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ValueError(f"{self.state_path} is not valid JSON; start over with --force") from None
            if not isinstance(state, dict) or not isinstance(state.get("stages"), dict) or not all(
                    isinstance(v, dict) for v in state["stages"].values()):
                raise ValueError(f"{self.state_path} is not a run record (an object with 'config' and a "
                                 "'stages' table); start over with --force")
            if _compared(state.get("config")) != _compared(asdict(config)):
                raise ValueError(f"{self.dir} holds a run with another config; use a new folder or "
                                 "--force to start over")
            self.state = state
        else:
            self.state = {"schema_version": 1, "config": asdict(config), "stages": {}}
            self._save()

    def _save(self):
        write_json_atomic(self.state_path, self.state)

    def done(self, stage: str) -> bool:
        return self.state["stages"].get(stage, {}).get("status") == "done"

    def stage(self, name: str, fn) -> None:
        if self.done(name):
            self.log(f"[{name}] done before, skipped")
            return
        self.log(f"[{name}] ...")
        t0 = time.perf_counter()
        self.state["stages"][name] = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._save()
        info = fn() or {}
        self.state["stages"][name] = {"status": "done", "seconds": round(time.perf_counter() - t0, 1), **info}
        self._save()
        self.log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")

    # -- the stages -------------------------------------------------------------------------
    def _model(self, twin: bool):
        from .zoo import create_model
        return create_model(self.cfg.model, twin=twin, pretrained=self.cfg.pretrained and not twin,
                            input_size=self.cfg.input_size or None)

    def build(self):
        from .card import model_cost
        out = {}
        for side, twin in (("model", False), ("twin", True)):
            m = self._model(twin)
            out[side] = {"name": m.card.name, "source": m.card.source, "cost": model_cost(m)}
        write_json_atomic(self.dir / "models.json", out)
        return {"mac_ratio": out["twin"]["cost"]["macs"] / out["model"]["cost"]["macs"]}

    def _weights(self, side: str) -> Path | None:
        given = self.cfg.weights if side == "model" else self.cfg.twin_weights
        if given:
            return Path(given)
        ckpt = self.dir / "checkpoints" / f"{side}.pt"
        return ckpt if ckpt.exists() else None

    def _has_weights(self, side: str) -> bool:
        if side == "model" and self._is_card():
            return True  # a card's source (or its weights file) gives the weights
        return bool(self.cfg.weights if side == "model" else self.cfg.twin_weights) or \
            (side == "model" and self.cfg.pretrained)

    def _is_card(self) -> bool:
        from .spec import read_toml
        return self.cfg.model.endswith(".toml") and "source" in read_toml(self.cfg.model, "model card")

    def train(self):
        needs = [s for s in ("model", "twin") if not self._has_weights(s)]
        if not needs:
            return {"skipped": "weights given"}
        if self.cfg.data != "digits" or self._is_card():
            if "model" in needs:
                raise ValueError("no weights for the model and the data is not the bundled digits: set "
                                 "'weights' or 'pretrained = true' in the config")
            self.log("  twin: no twin_weights; it keeps random weights (a latency baseline, not checked "
                     "for accuracy)")
            return {"twin": "random weights (latency baseline)"}
        from .train import TrainConfig, save_checkpoint, train
        info = {}
        for side in needs:
            model = self._model(side == "twin")
            cfg = TrainConfig(epochs=self.cfg.train_epochs) if self.cfg.train_epochs else TrainConfig()
            metrics = train(model, "digits", cfg)
            save_checkpoint(model, metrics, self.dir / "checkpoints" / f"{side}.pt")
            info[side] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
            self.log(f"  {side}: {100 * metrics['fp32_top1']:.1f}% top-1 on the {metrics['eval_count']} held-out digits")
        return info

    def export(self):
        from .data import calibration
        from .exporters import export
        from .zoo import load_weights
        recipe = self.cfg.recipe()
        info = {}
        for side in ("model", "twin"):
            model = self._model(side == "twin")
            w = self._weights(side)
            if w is not None:
                load_weights(model, w)
            calib_x, calib_info = None, None
            if "int8" in self.cfg.precisions:
                calib = calibration(self.cfg.data, model, recipe.calib_count, self.cfg.class_index or None)
                calib_x, calib_info = calib.x, calib.describe()
            art = export(model, calib=calib_x, out=self.dir / "artifacts" / side, force=True,
                         formats=self.cfg.formats, precisions=self.cfg.precisions, recipe=recipe,
                         calib_info=calib_info)
            info[side] = {"files": len(art.files), "errors": [e["message"] for e in art.errors]}
            for e in art.errors:
                self.log(f"  export error: {e['message']}")
        return info

    def verify(self):
        from .parity import verify
        return {side: verify(self.dir / "artifacts" / side)["ok"] for side in ("model", "twin")}

    def check(self):
        from .accuracy import check
        info = {}
        for side in ("model", "twin"):
            if self._weights(side) is None and not self._has_weights(side):
                info[side] = "skipped: random weights"
                continue
            res = check(self.dir / "artifacts" / side, self.cfg.data, class_index=self.cfg.class_index or None,
                        max_drop=self.cfg.max_drop, limit=self.cfg.eval_limit or None)
            info[side] = res["ok"]
        return info

    def sweep(self):
        if not self.cfg.sweep:
            return {"skipped": "no [sweep] table"}
        from .cluster import sweep
        res = sweep(self.cfg, self.dir / "sweep", self.cfg.cluster or None, log=self.log)
        return {"variants": len(res["variants"]), "ran": len(res["ran"]), "seconds": res["seconds"]}

    def bench(self):
        from .benchmark import bench
        recs = bench([self.dir / "artifacts" / "model", self.dir / "artifacts" / "twin"], self.cfg.devices,
                     self.dir / "results.jsonl", inventory=self.cfg.inventory or None,
                     runtimes=self.cfg.runtimes or None, threads=tuple(self.cfg.threads), cfg=self.cfg.timing(),
                     progress=self.progress, cluster=self.cfg.cluster or None)
        return {"records": len(recs), "errors": sum(r.get("status") != "ok" for r in recs)}

    def report(self):
        from .reporting import report
        paths = report(self.dir)
        return {"report": str(paths["html"])}

    def run(self) -> Path:
        for name in STAGES:
            self.stage(name, getattr(self, name))
        return self.dir / "report.html"


def _clear_run(out: Path, force: bool) -> None:
    """Make the folder ``out`` ready for a run: empty, or a run folder (kept to resume, or with
    ``force`` emptied of what a run writes there, and of nothing else). A folder holding anything
    else is refused."""
    entries = [p for p in out.iterdir() if p.name != FolderLock.NAME]
    if not entries:
        return
    if not (out / "run.json").is_file():
        raise FileExistsError(f"{out} is not empty and is not a run folder (no run.json); edgeconv will not "
                              "write into it or delete anything there: choose another --out")
    if force:
        for path in _run_files(out):
            path.unlink()
        sweep = [p for p in (out / "sweep").iterdir() if p.is_dir()] if (out / "sweep").is_dir() else []
        for folder in [out / "artifacts" / side for side in SIDES] + sweep + [out / name for name in RUN_FOLDERS]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _run_files(out: Path) -> list[Path]:
    """The files of run folder ``out`` that a run wrote (a user's own files there are not among
    them). An artifact whose manifest cannot be read is refused: what it holds is unknown."""
    from .artifact import Artifact, ArtifactError
    names = list(RUN_FILES) + [f"checkpoints/{side}{ext}" for side in SIDES for ext in (".pt", ".json")]
    names += [f"plots/{p}.png" for p in ("cost", "latency", "twin_speedup", "accuracy")]
    variants = sorted(p.name for p in (out / "sweep").iterdir() if p.is_dir()) if (out / "sweep").is_dir() else []
    names += ["sweep/sweep.json"] + [f"sweep/{v}/variant.json" for v in variants]
    for rel in [f"artifacts/{side}" for side in SIDES] + [f"sweep/{v}" for v in variants]:
        folder = out / rel
        if not (folder / "manifest.json").is_file():
            continue
        try:
            names += [f"{rel}/{name}" for name in Artifact.load(folder).own_files()]
        except ArtifactError as e:
            raise FileExistsError(f"{folder} holds a manifest edgeconv cannot read, so --force cannot tell which "
                                  f"files there the run wrote and deletes none: remove {folder} yourself or choose "
                                  f"another --out ({e})") from None
    return [out / n for n in names if (out / n).is_file()]


def run(config: RunConfig | str | Path | None = None, out: str | Path = "runs/default", force: bool = False,
        log=print, progress=None) -> Path:
    """``edgeconv run``: the whole pipeline into the run folder ``out``; returns the path of
    report.html. Everything is validated before the first stage; the folder is locked while
    the run writes to it."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_toml(config) if config else RunConfig()
    cfg.validate()
    if cfg.cluster:
        from .cluster import connect
        connect(cfg.cluster)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out names a run folder")
    ensure_writable(out, "--out")
    # The folder is judged under the lock: another run may be writing it right now.
    with FolderLock(out, "--out folder"):
        _clear_run(out, force)
        return Run(out, cfg, log=log, progress=progress).run()
