"""``edgeconv run``: model -> twin -> train -> export -> verify -> check -> bench -> report.

Each stage reads what the previous ones wrote into the run folder and records itself as done
in ``run.json``; running the same command again skips the finished stages, so an
interrupted run resumes where it stopped (the bench stage also resumes record by record).

Run folder::

    run.json                  config, stage status and timings
    models.json               per-block costs of the model and its twin
    checkpoints/{model,twin}.pt + .json   trained weights and held-out accuracy (digits)
    artifacts/{model,twin}/   exported files, manifest.json, verify.json, accuracy.json
    results.jsonl             one benchmark record per (file, runtime, device, threads)
    report.html, report.md, plots/*.png
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .export import write_json_atomic

STAGES = ("build", "train", "export", "verify", "check", "bench", "report")
ALLOWED = {
    "formats": ("onnx", "tflite", "executorch"),
    "precisions": ("fp32", "int8"),
    "runtimes": ("onnxruntime", "litert", "executorch"),
}


@dataclass
class RunConfig:
    """The TOML config of ``edgeconv run``; every key optional (the embedded default)."""
    model: str = "tiny"
    pretrained: bool = False
    weights: str = ""
    twin_weights: str = ""
    input_size: int = 0
    data: str = "digits"
    class_index: str = ""
    calib_count: int = 64
    eval_limit: int = 0
    train_epochs: int = 0
    formats: list = field(default_factory=lambda: list(ALLOWED["formats"]))
    precisions: list = field(default_factory=lambda: list(ALLOWED["precisions"]))
    max_drop: float = 1.0
    devices: list = field(default_factory=lambda: ["local"])
    inventory: str = ""
    runtimes: list = field(default_factory=list)
    threads: list = field(default_factory=lambda: [1])
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 3.0

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        from .spec import read_toml
        raw = read_toml(path, "config file")
        flat = {}
        for key, value in raw.items():  # sections ([model], [bench] ...) are only for reading
            flat.update(value if isinstance(value, dict) else {key: value})
        try:
            return cls.from_dict(flat)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(known)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
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
        from .zoo import list_models
        if self.model not in list_models() and not self.model.endswith(".toml"):
            raise ValueError(f"key 'model' = {self.model!r}: allowed values: {', '.join(list_models())} "
                             "or the path of a spec .toml")
        for key in ("calib_count", "warmup", "min_runs"):
            if getattr(self, key) < 0 or (key == "calib_count" and self.calib_count < 1):
                raise ValueError(f"key {key!r} = {getattr(self, key)}: must be positive")
        if any(not isinstance(t, int) or t < 1 for t in self.threads):
            raise ValueError(f"key 'threads' = {self.threads}: thread counts are whole numbers >= 1")


class Run:
    def __init__(self, folder: str | Path, config: RunConfig, log=print, progress=None):
        self.dir = Path(folder)
        self.cfg = config
        self.log = log
        self.progress = progress
        self.state_path = self.dir / "run.json"
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("config") != asdict(config):
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
        ov = {"input_size": self.cfg.input_size} if self.cfg.input_size else {}
        return create_model(self.cfg.model, twin=twin, pretrained=self.cfg.pretrained and not twin, **ov)

    def build(self):
        out = {}
        for side, twin in (("model", False), ("twin", True)):
            m = self._model(twin)
            out[side] = {"name": m.spec.name, "spec": m.spec.to_dict(), "cost": m.cost().to_dict()}
        write_json_atomic(self.dir / "models.json", out)
        return {"mac_ratio": out["twin"]["cost"]["macs"] / out["model"]["cost"]["macs"]}

    def _weights(self, side: str) -> Path | None:
        given = self.cfg.weights if side == "model" else self.cfg.twin_weights
        if given:
            return Path(given)
        ckpt = self.dir / "checkpoints" / f"{side}.pt"
        return ckpt if ckpt.exists() else None

    def _has_weights(self, side: str) -> bool:
        return bool(self.cfg.weights if side == "model" else self.cfg.twin_weights) or \
            (side == "model" and self.cfg.pretrained)

    def train(self):
        needs = [s for s in ("model", "twin") if not self._has_weights(s)]
        if not needs:
            return {"skipped": "weights given"}
        if self.cfg.data != "digits":
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
        from .data import load_data
        from .export import export
        from .quantize import QuantConfig
        from .zoo import load_weights
        info = {}
        for side in ("model", "twin"):
            model = self._model(side == "twin")
            w = self._weights(side)
            if w is not None:
                load_weights(model, w)
            calib = load_data(self.cfg.data, input_shape=model.input_shape, preprocess=model.spec.preprocess,
                              calib_count=self.cfg.calib_count, class_index=self.cfg.class_index or None)
            art = export(model, calib=calib.x, out=self.dir / "artifacts" / side, force=True,
                         formats=self.cfg.formats, precisions=self.cfg.precisions,
                         quant=QuantConfig(calib_count=self.cfg.calib_count),
                         calib_info={**calib.describe(), "class_index": self.cfg.class_index or None})
            info[side] = {"files": len(art.files), "errors": [e["message"] for e in art.errors]}
            for e in art.errors:
                self.log(f"  export error: {e['message']}")
        return info

    def verify(self):
        from .verify import verify
        return {side: verify(self.dir / "artifacts" / side)["ok"] for side in ("model", "twin")}

    def check(self):
        from .accuracy import check_artifact, eval_data
        from .export import Artifact
        info = {}
        for side in ("model", "twin"):
            if self._weights(side) is None and not self._has_weights(side):
                info[side] = "skipped: random weights"
                continue
            art = Artifact.load(self.dir / "artifacts" / side)
            data = eval_data(art, self.cfg.data, self.cfg.class_index or None, self.cfg.eval_limit or None)
            res = check_artifact(art, data, max_drop=self.cfg.max_drop)
            info[side] = res["ok"]
        return info

    def bench(self):
        from .bench import TimingConfig, bench
        recs = bench([self.dir / "artifacts" / "model", self.dir / "artifacts" / "twin"], self.cfg.devices,
                     self.dir / "results.jsonl", inventory=self.cfg.inventory or None,
                     runtimes=self.cfg.runtimes or None, threads=tuple(self.cfg.threads),
                     cfg=TimingConfig(warmup=self.cfg.warmup, min_runs=self.cfg.min_runs,
                                      min_seconds=self.cfg.min_seconds),
                     progress=self.progress)
        return {"records": len(recs), "errors": sum(r.get("status") != "ok" for r in recs)}

    def report(self):
        from .report import write_report
        paths = write_report(self.dir)
        return {"report": str(paths["html"])}

    def run(self) -> Path:
        for name in STAGES:
            self.stage(name, getattr(self, name))
        return self.dir / "report.html"


def run(config: RunConfig | str | Path | None = None, out: str | Path = "runs/default", force: bool = False,
        log=print, progress=None) -> Path:
    """Run the whole pipeline; returns the path of report.html."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_toml(config) if config else RunConfig()
    out = Path(out)
    if force and (out / "run.json").exists():
        import shutil
        shutil.rmtree(out)
    return Run(out, cfg, log=log, progress=progress).run()
