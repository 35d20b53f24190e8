"""``predict``: a model's latency on a profiled device, without running it.

Fit per (device, runtime, precision) from the block records of ``edgeconv profile`` runs: a
gradient-boosted regressor (scikit-learn) from each block's features (MACs of each conv kind,
weight and activation elements, layer count, kernel, stride, channels, size; all but the counts
in log scale) to the log of its measured p50; then the whole model's latency from the sum of
its blocks' and their count, through a plane fitted for relative error on the profiled models
(whole = a * sum - c * blocks - d * boundary elements + b): the per-model overhead, what each
micro-model pays and the whole model does not (a call, and moving its input and output in and
out of the runtime's own layout), and what fusion saves across blocks.
"""
from __future__ import annotations

import math

import numpy as np

FEATURES = ("macs", "macs_standard", "macs_pointwise", "macs_depthwise", "macs_grouped", "macs_linear",
            "params", "in_elems", "out_elems", "in_chs", "out_chs", "in_hw", "out_hw")
COUNTS = ("layers", "kernel", "stride")


def vector(f: dict) -> list[float]:
    return [math.log1p(f.get(k, 0) or 0) for k in FEATURES] + [float(f.get(k, 0) or 0) for k in COUNTS]


class Predictor:
    """Block latency model of one (device, runtime, precision)."""

    def __init__(self, records: list[dict], device: str, runtime: str, precision: str):
        from sklearn.ensemble import GradientBoostingRegressor

        from .benchmark import latest, record_stats
        from .profiling import PEAK
        self.device, self.runtime, self.precision = device, runtime, precision
        recs = [r for r in latest(records).values() if r.get("status") == "ok" and r["device"]["name"] == device
                and r.get("runtime") == runtime and r.get("precision") == precision
                and isinstance(r.get("arch"), dict) and "side" in r["arch"]]
        blocks = [r for r in recs if r["arch"]["block"] not in (None, PEAK)]
        if len(blocks) < 5:
            raise ValueError(f"no profile to predict from for device {device!r}, {runtime} {precision} "
                             f"({len(blocks)} block records); make one first: edgeconv profile MODEL --device "
                             f"{device} --runtime {runtime} --precision {precision} --results FILE")
        self.emulated = any(r["device"].get("emulated") for r in recs)
        x = np.array([vector(r["arch"]) for r in blocks])
        y = np.log([record_stats(r)["p50"] for r in blocks])
        self.model = GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8,
                                               random_state=0).fit(x, y)
        self.blocks = len(blocks)
        # whole model = a * (sum of its blocks') - c * (blocks) - d * (boundary elements) + b on the
        # profiled models, fitted for relative error (see the module docstring)
        sums, counts, elems, wholes = {}, {}, {}, {}
        for r in recs:
            key = (r.get("model"), r["arch"]["side"], r.get("artifact", "").rsplit("/", 2)[0])
            if r["arch"]["block"] is None:
                wholes[key] = record_stats(r)["p50"]
            elif r["arch"]["block"] != PEAK:
                sums[key] = sums.get(key, 0.0) + record_stats(r)["p50"]
                counts[key] = counts.get(key, 0) + 1
                elems[key] = elems.get(key, 0.0) + _io_elems(r["arch"])
        keys = [k for k in wholes if k in sums]
        s, n, e, w = (np.array([d[k] for k in keys], float) for d in (sums, counts, elems, wholes))
        a, c, d, b = 1.0, 0.0, 0.0, 0.0
        if len(keys) >= 5:
            (a, c, d, b), *_ = np.linalg.lstsq(np.stack([s, -n, -e, np.ones_like(s)], 1) / w[:, None],
                                               np.ones_like(w), rcond=None)
        elif keys:
            b = float(np.median(w - s))
        self.whole_fit = {"a": float(a), "c": float(c), "d": float(d), "b": float(b), "models": len(keys)}

    def block_ms(self, feats: list[dict]) -> np.ndarray:
        return np.exp(self.model.predict(np.array([vector(f) for f in feats])))

    def total_ms(self, block_ms, feats: list[dict]) -> float:
        """The whole model from its blocks' predicted times and their features."""
        f = self.whole_fit
        e = sum(_io_elems(x) for x in feats)
        total = f["a"] * float(np.sum(block_ms)) - f["c"] * len(block_ms) - f["d"] * e + f["b"]
        return total if total > 0 else float(np.sum(block_ms))


def _io_elems(f: dict) -> float:
    """Elements a block reads and writes at its boundary, in millions: what a micro-model moves
    in and out of the runtime's own layout, and the whole model does not."""
    return ((f.get("in_elems") or 0) + (f.get("out_elems") or 0)) / 1e6


def model_features(model, depth: int = 1) -> list[tuple[str, dict]]:
    """(block, features) of every block of a built model, from its fp32 forward pass on zeros."""
    from .card import blocks
    from .profiling import _block_in_shape, _Micro, capture_inputs, features
    names = blocks(model, depth)
    x = np.zeros((1, *model.input_shape), np.float32)
    inputs = capture_inputs(model, names, x)
    mods = dict(model.named_modules())
    out = []
    for name in names:
        if name not in inputs:
            continue
        shape = tuple(inputs[name].shape[1:])
        out.append((name, features(_Micro.build(mods[name], _block_in_shape(mods[name], inputs[name])), shape)))
    return out


def predict(model, device: str, *, runtime: str = "onnxruntime", precision: str = "int8", profile="profile.jsonl",
            twin: bool = False, width=None, input_size=None, depth: int = 1) -> dict:
    """``edgeconv predict``: the latency of ``model`` (zoo name or card) on ``device`` predicted from
    the profile records in ``profile``, per block and in total (``predicted_ms``)."""
    from pathlib import Path

    from .benchmark import ResultsFile
    from .zoo import create_model
    if not Path(profile).exists():
        raise FileNotFoundError(f"profile {profile} does not exist; make one: edgeconv profile MODEL --device {device} "
                                f"--runtime {runtime} --precision {precision} --results {profile}")
    p = Predictor(ResultsFile(profile).records(), device, runtime, precision)
    net = create_model(model, twin=twin, width=width, input_size=input_size)
    feats = model_features(net, depth)
    ms = p.block_ms([f for _, f in feats])
    return {"model": net.card.name, "twin": twin, "device": device, "runtime": runtime, "precision": precision,
            "predicted_ms": p.total_ms(ms, [f for _, f in feats]), "sum_of_blocks_ms": float(np.sum(ms)),
            "blocks": [{"block": n, "macs": f["macs"], "predicted_ms": float(t)} for (n, f), t in zip(feats, ms)],
            "fit": {"block_records": p.blocks, **p.whole_fit, "emulated": p.emulated}}
