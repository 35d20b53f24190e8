"""``predict``: a model's latency on a profiled device, without running it.

Fit per (device, runtime, precision, thread count) from the block records of ``edgeconv profile`` runs, in
two stages. First a roofline-style line through every block: a fixed cost per block and per
layer, a cost per MAC of each conv kind (standard, pointwise, depthwise, grouped, linear), per
activation element read and written, per depthwise element and per weight, non-negative and
fitted for relative error (``linear_terms``); it extrapolates to sizes and widths no profiled
block had. Then a gradient-boosted regressor (scikit-learn) from each block's features (MACs of
each conv kind, weight and activation elements, layer count, kernel, stride, channels, size;
all but the counts in log scale) to the log of measured / line: what the line misses (cache
fits, kernel choices), bounded to the ratios it saw. Its size (trees, depth) is the one of
``BOOSTS`` that predicts each profile's blocks best when fitted on the other profiles'. The
whole model comes from the sum of its blocks' and their count, through a plane fitted for
relative error on the profiled models of its side (whole = a * sum - c * blocks - d * boundary
elements + b + g * cached weights + h * streamed weights): the per-model overhead, what each
micro-model pays and the whole model does not (a call, and moving its input and output in and out
of the runtime's own layout), what fusion saves across blocks, and what the whole model pays and
the micro-models do not. A micro-model timed over and over keeps its weights in cache when they
fit, the whole model reads every block's from further out (g per MB of the weights of the blocks
that fit in a cache of ``cache_mb``; a block too big for it streams its weights in its own timing
already); and once all its weights together exceed a cache of ``stream_mb``, the whole model reads
those beyond it from memory on every run, which no micro-model does (h per MB beyond it: ONNX
Runtime fp32 on an x86 VM, EfficientNet-Lite0 x1.0, 18 MB of weights, runs its late blocks and
classifier 1.26-1.65x slower inside the whole model than alone; the depthwise models' int8
weights, a quarter the bytes, stay under it, their dense twins' do not).
Every coefficient is fitted non-negative: each term is a cost or a saving of a known sign. With
8 or more models in a plane's fit the two cache sizes are the pair of ``CACHE_MB`` and
``STREAM_MB`` whose plane predicts each of them best when fitted on the others (0: no such term,
also reported when its coefficient comes out 0); from ``MIN_PLANE`` models the plane has neither
term; with fewer it is the median offset of whole from sum (which may be negative). Each side has
a plane of its own, the depthwise models and their dense twins keep and lose different things
between blocks (ONNX Runtime fp32 on an x86 VM: the twins' whole models run 1.0-1.4x their blocks'
sum, the models 0.7-1.3x), fitted on that side's profiled models once it has ``MIN_PLANE`` of
them, else on all.
"""
from __future__ import annotations

import itertools
import math
from functools import cached_property

import numpy as np

FEATURES = ("macs", "macs_standard", "macs_pointwise", "macs_depthwise", "macs_grouped", "macs_linear",
            "params", "in_elems", "out_elems", "pad_elems", "in_chs", "out_chs", "in_hw", "out_hw")
COUNTS = ("layers", "kernel", "stride")
LATER = ("pad_elems",)   # features profiles made by earlier versions do not record
CACHE_MB = (0, 0.5, 1, 2, 4, 8, 16, 32)   # the cache sizes (MB) the whole-model plane chooses among
STREAM_MB = (0, 1, 2, 4, 6, 8, 12, 16, 24, 32)   # the sizes (MB) beyond which a whole model streams its weights
MIN_PLANE = 5   # profiled models a side needs for a plane of its own
BOOSTS = ((200, 3), (400, 4))   # the block correction's (trees, depth) to choose among
PROFILES = "profiles/*/results.jsonl"   # where `edgeconv profile` writes by default


def vector(f: dict) -> list[float]:
    return [math.log1p(f.get(k, 0) or 0) for k in FEATURES] + [float(f.get(k, 0) or 0) for k in COUNTS]


def linear_terms(f: dict) -> list[float]:
    """What a block's time is made of, to first order (millions where a count): one call, its
    layers, its MACs of each conv kind, the activation elements it reads and writes, the
    elements its depthwise convs pass over, those its explicit pads write, and its weights."""
    def g(k):
        return float(f.get(k, 0) or 0)
    kernel = max(g("kernel"), 1.0)
    return [1.0, g("layers"), g("macs_standard") / 1e6, g("macs_pointwise") / 1e6, g("macs_depthwise") / 1e6,
            g("macs_grouped") / 1e6, g("macs_linear") / 1e6, (g("in_elems") + g("out_elems")) / 1e6,
            g("macs_depthwise") / kernel ** 2 / 1e6, g("pad_elems") / 1e6, g("params") / 1e6]


class BlockModel:
    """Block time (p50 or min) from features: the non-negative line of ``linear_terms`` times a
    boosted correction of its ratio (see the module docstring). The correction's size, of
    ``BOOSTS``, is the one that predicts the blocks of each profile best when fitted on the
    others' (with ``groups``, the profile of each block, and at least 3 of them)."""

    def __init__(self, feats: list[dict], ms: np.ndarray, groups=None):
        lin = np.array([linear_terms(f) for f in feats])
        x = np.array([vector(f) for f in feats])
        self.boost_size, self.cv_error = BOOSTS[0], {}
        if groups is not None and len(set(groups)) >= 3 and len(BOOSTS) > 1:
            self.cv_error = {size: _cv_error(lin, x, ms, np.asarray(groups), size) for size in BOOSTS}
            self.boost_size = min(BOOSTS, key=self.cv_error.get)
        self.coef, self.boost = _fit(lin, x, ms, self.boost_size)

    def _line(self, lin: np.ndarray) -> np.ndarray:
        return _line(lin, self.coef)

    def predict(self, feats: list[dict]) -> np.ndarray:
        line = self._line(np.array([linear_terms(f) for f in feats]))
        return line * np.exp(self.boost.predict(np.array([vector(f) for f in feats])))


def _line(lin: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return np.maximum(lin @ coef, 1e-6)


def _fit(lin: np.ndarray, x: np.ndarray, ms: np.ndarray, size: tuple[int, int]):
    """The line (non-negative, for relative error) and the boosted correction of its log ratio,
    of ``size`` (trees, depth)."""
    from scipy.optimize import nnls
    from sklearn.ensemble import GradientBoostingRegressor
    coef, _ = nnls(lin / ms[:, None], np.ones_like(ms))
    boost = GradientBoostingRegressor(n_estimators=size[0], max_depth=size[1], learning_rate=0.05, subsample=0.8,
                                      random_state=0).fit(x, np.log(ms / _line(lin, coef)))
    return coef, boost


def _cv_error(lin, x, ms, groups, size) -> float:
    """Mean absolute log error of the blocks of each group predicted by the model of ``size``
    fitted on the other groups."""
    err = []
    for g in np.unique(groups):
        out = groups == g
        coef, boost = _fit(lin[~out], x[~out], ms[~out], size)
        err.append(np.abs(np.log(_line(lin[out], coef)) + boost.predict(x[out]) - np.log(ms[out])))
    return float(np.mean(np.concatenate(err)))


class Predictor:
    """Block latency model of one (device, runtime, precision), of one statistic of the timings:
    the p50 of the runs, or their min (what repeats on a machine whose speed jumps)."""

    def __init__(self, records: list[dict], device: str, runtime: str, precision: str, statistic: str = "p50",
                 threads: int = 1):
        from .benchmark import file_timings
        from .profiling import PEAK, profile_folder
        self.device, self.runtime, self.precision, self.threads = device, runtime, precision, threads
        # (newest record, its time by the statistic) per file
        profiled = [(r, t) for r, t in file_timings(records, statistic) if t   # not None, nor 0 (a tool's floor)
                    and isinstance(r.get("arch"), dict) and "side" in r["arch"]]
        recs = [(r, t) for r, t in profiled if r["device"]["name"] == device and r.get("runtime") == runtime
                and r.get("precision") == precision and r.get("threads") == threads]
        blocks = [(r, t) for r, t in recs if r["arch"]["block"] not in (None, PEAK)]
        if len(blocks) < 5:
            held = sorted({f"{r['device']['name']} {r.get('runtime')} {r.get('precision')} {r.get('threads')} "
                           f"thread{'s' if r.get('threads') != 1 else ''}" for r, _ in profiled})
            raise ValueError(f"no profile to predict from for device {device!r}, {runtime} {precision}, {threads} "
                             f"thread{'s' if threads != 1 else ''} ({len(blocks)} block records; the profiles hold "
                             f"{'; '.join(held) if held else 'none'}); make one first: edgeconv profile MODEL "
                             f"--device {device} --runtime {runtime} --precision {precision}"
                             + (f" --threads {threads}" if threads != 1 else ""))
        self.emulated = any(r["device"].get("emulated") for r, _ in recs)
        # a feature some records lack is left out (zero) on both sides of the fit
        self.unrecorded = {k for k in LATER if any(k not in r["arch"] for r, _ in blocks)}
        self.model = BlockModel(self._known([r["arch"] for r, _ in blocks]), np.array([t for _, t in blocks]),
                                [profile_folder(r) for r, _ in blocks])
        self.blocks = len(blocks)
        self.block_fit = {"trees": self.model.boost_size[0], "depth": self.model.boost_size[1],
                          "cv_error": {f"{t}x{d}": e for (t, d), e in self.model.cv_error.items()}}
        # the profiled models, (model, side, folder): the whole model's time and its blocks' (time,
        # features), the blocks found by the files the whole model's record lists (a block two
        # profiles share, such as a classifier at the same width, is one file timed once), or in
        # profiles that list none, by folder
        timed = {(r.get("sha256"), r.get("block")): (t, r["arch"]) for r, t in blocks}
        self.profiled = {}
        for r, t in recs:
            if r["arch"]["block"] is None:
                files, side = (r["arch"].get("block_files") or {}).get(r.get("file")), r["arch"]["side"]
                keys = [(sha, f"{side}:{name}") for name, sha in (files or {}).items()]
                self.profiled[(r.get("model"), side, profile_folder(r))] = {
                    "whole_ms": t, "whole_timestamp": r.get("timestamp"), "listed": files is not None,
                    "blocks": [timed[k] for k in keys if k in timed], "missing": sum(k not in timed for k in keys)}
        for r, t in blocks:
            m = self.profiled.setdefault((r.get("model"), r["arch"]["side"], profile_folder(r)),
                                         {"whole_ms": None, "listed": False, "blocks": [], "missing": 0})
            if not m["listed"]:
                m["blocks"].append((t, r["arch"]))
        # whole model = a * (sum of its blocks') - c * (blocks) - d * (boundary elements) + b
        # + g * (cached weights) + h * (streamed weights), fitted for relative error on the profiled
        # models of each side (module docstring)
        self._fitted = [(k[1], m) for k, m in self.profiled.items() if m["whole_ms"] is not None and m["blocks"]
                        and not m["missing"]]
        self._left_out = [k[1] for k, m in self.profiled.items() if m["whole_ms"] is not None and m["missing"]]
        self.whole_fits = {}
        for side in sorted({k[1] for k in self.profiled}):
            mine = [m for s, m in self._fitted if s == side]
            self.whole_fits[side] = ({**self._whole_plane(mine), "left_out": self._left_out.count(side)}
                                     if len(mine) >= MIN_PLANE else self.pooled_fit)

    @cached_property
    def pooled_fit(self) -> dict:
        """The plane of all profiled models, both sides: fitted only when a side has too few of its own."""
        return {**self._whole_plane([m for _, m in self._fitted]), "pooled": True, "left_out": len(self._left_out)}

    def whole_fit(self, side: str = "model") -> dict:
        """The plane a whole model of ``side`` is predicted with (that of all profiled models for a
        side with too few of its own)."""
        return self.whole_fits.get(side, self.pooled_fit)

    def _whole_plane(self, models: list[dict]) -> dict:
        """The whole-model plane fitted on ``models`` (profiled models with every block timed)."""
        w = np.array([m["whole_ms"] for m in models], float)
        fit = {"a": 1.0, "c": 0.0, "d": 0.0, "b": 0.0, "g": 0.0, "h": 0.0, "cache_mb": 0, "stream_mb": 0,
               "models": len(models), "loo_median_error": None, "pooled": False}
        if len(models) >= MIN_PLANE:
            # the cache sizes (from 8 models): the pair whose plane predicts each profiled model best
            # when fitted on the others (a size of 0: no such term)
            fits = []
            sizes = itertools.product(CACHE_MB, STREAM_MB) if len(models) >= 8 else [(0, 0)]
            for cache_mb, stream_mb in sizes:
                x = np.array([self._plane_terms([t for t, _ in m["blocks"]], [f for _, f in m["blocks"]], cache_mb,
                                                stream_mb) for m in models])
                loo = [abs(x[i] @ _relative_fit(np.delete(x, i, 0), np.delete(w, i)) / w[i] - 1) for i in range(len(w))]
                fits.append((float(np.median(loo)), cache_mb, stream_mb, _relative_fit(x, w)))
            # of pairs within 1e-6 of the best (a fit that matches exactly, whatever the sizes), the first
            # in order: the smaller cache_mb, then the smaller stream_mb
            best = min(f[0] for f in fits)
            loo, cache_mb, stream_mb, (a, c, d, b, g, h) = next(f for f in fits if f[0] <= best + 1e-6)
            fit.update(a=a, c=c, d=d, b=b, g=g, h=h, cache_mb=cache_mb if g > 0 else 0,
                       stream_mb=stream_mb if h > 0 else 0, loo_median_error=loo)
        elif models:
            fit["b"] = float(np.median(w - [sum(t for t, _ in m["blocks"]) for m in models]))
        return fit

    def _plane_terms(self, block_ms, feats: list[dict], cache_mb: float, stream_mb: float = 0) -> list[float]:
        """The whole model's plane terms: the sum of its blocks' times, their count, the elements at
        their boundaries (millions), the MB of weights of the blocks whose weights fit in ``cache_mb``
        and the MB of all its weights beyond ``stream_mb`` (a size of 0: no such term, 0)."""
        from .profiling import block_bytes
        mb = [block_bytes(f, self.precision)["weight_bytes"] / 2 ** 20 for f in feats]
        small = sum(m for m in mb if m <= cache_mb)
        streamed = max(0.0, sum(mb) - stream_mb) if stream_mb else 0.0
        return [float(np.sum(block_ms)), -len(feats), -sum(_io_elems(f) for f in feats), 1.0, small, streamed]

    def _known(self, feats: list[dict]) -> list[dict]:
        return [{**f, **{k: 0 for k in self.unrecorded}} for f in feats] if self.unrecorded else feats

    def block_ms(self, feats: list[dict]) -> np.ndarray:
        return self.model.predict(self._known(feats))

    def total_ms(self, block_ms, feats: list[dict], side: str = "model") -> float:
        """The whole model (of ``side``: model or twin) from its blocks' predicted times and their
        features."""
        f = self.whole_fit(side)
        terms = self._plane_terms(block_ms, feats, f["cache_mb"], f["stream_mb"])
        total = float(np.dot([f["a"], f["c"], f["d"], f["b"], f["g"], f["h"]], terms))
        return total if total > 0 else float(np.sum(block_ms))


def _relative_fit(x: np.ndarray, w: np.ndarray) -> list[float]:
    """Non-negative least squares of x @ coef = w for relative error: every term of the plane is a
    cost or a saving of a known sign, so a coefficient the noise of a few whole timings would turn
    around (a negative per-model overhead) is held at zero instead."""
    from scipy.optimize import nnls
    coef, _ = nnls(x / w[:, None], np.ones_like(w))
    return [float(v) for v in coef]


def _io_elems(f: dict) -> float:
    """Elements a block reads and writes at its boundary, in millions: what a micro-model moves
    in and out of the runtime's own layout, and the whole model does not."""
    return ((f.get("in_elems") or 0) + (f.get("out_elems") or 0)) / 1e6


def model_features(model, depth: int = 1) -> list[tuple[str, dict]]:
    """(block, features) of every block of a built model, from its fp32 forward pass on zeros."""
    from .card import blocks
    from .profiling import _Micro, capture_inputs, features
    names = blocks(model, depth)
    x = np.zeros((1, *model.input_shape), np.float32)
    inputs = capture_inputs(model, names, x)
    mods = dict(model.named_modules())
    out = []
    for name in names:
        if name not in inputs:
            continue
        x, shape = inputs[name]
        out.append((name, features(_Micro.build(mods[name], shape), tuple(x.shape[1:]))))
    return out


def profile_files(profile=None) -> list:
    """The results files ``profile`` names: a path or a glob, or a list of them (default
    ``PROFILES``, where ``edgeconv profile`` writes), each that exists; raises naming those that
    do not."""
    import glob
    from pathlib import Path
    names = [profile] if isinstance(profile, (str, Path)) else list(profile or [PROFILES])
    found, missing = [], []
    for n in map(str, names):
        hits = [n] if Path(n).is_file() else [h for h in sorted(glob.glob(n)) if Path(h).is_file()]
        found += [Path(h) for h in hits if Path(h) not in found]
        if not hits:
            missing.append(n)
    if missing and (profile or not found):
        raise FileNotFoundError(f"no profile results file at {', '.join(missing)}")
    return found


def predict(model, device: str, *, runtime: str = "onnxruntime", precision: str = "int8", profile=None,
            twin: bool = False, width=None, input_size=None, depth: int = 1, statistic: str = "p50",
            threads: int = 1) -> dict:
    """``edgeconv predict``: the latency of ``model`` (zoo name or card) on ``device`` predicted from
    the profile records in ``profile`` (results files or globs; default every profile under
    ``profiles/``), per block and in total (``predicted_ms``: the p50 of its runs, or with
    ``statistic="min"`` the fastest)."""
    from .benchmark import ResultsFile
    from .zoo import create_model
    try:
        files = profile_files(profile)
    except FileNotFoundError as e:
        default = "" if profile else (f" (it writes profiles/MODEL..._{runtime}/results.jsonl, which predict reads "
                                      "by default)")
        raise FileNotFoundError(f"{e}; make one: edgeconv profile MODEL --device {device} --runtime {runtime} "
                                f"--precision {precision}{default}") from None
    records = [r for f in files for r in ResultsFile(f).records()]
    p = Predictor(records, device, runtime, precision, statistic, threads)
    net = create_model(model, twin=twin, width=width, input_size=input_size)
    feats = model_features(net, depth)
    ms = p.block_ms([f for _, f in feats])
    side = "twin" if twin else "model"
    return {"model": net.card.name, "twin": twin, "device": device, "runtime": runtime, "precision": precision,
            "threads": threads, "statistic": statistic, "profiles": [str(f) for f in files],
            "predicted_ms": p.total_ms(ms, [f for _, f in feats], side),
            "sum_of_blocks_ms": float(np.sum(ms)),
            "blocks": [{"block": n, "macs": f["macs"], "predicted_ms": float(t)} for (n, f), t in zip(feats, ms)],
            "fit": {"block_records": p.blocks, "block_correction": p.block_fit, **p.whole_fit(side),
                    "emulated": p.emulated}}
