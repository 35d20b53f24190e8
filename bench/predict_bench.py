"""How well `edgeconv predict` predicts latency on this machine, per runtime and precision.

Fit: the per-block profiles (`edgeconv.profiling.plan_profile`, model and twin blocks) of the
zoo models at six (width, input size) configurations (the grid's diagonal, one corner and two
points near the others, off the held-out grid), and nothing else the results file holds.
Held out: the same zoo models at every other (width, input size) point of the grid of width
multipliers 0.35-1.0 x input sizes 96-224 (16 each), each exported whole and timed as `edgeconv
profile` times (1 thread, the process pinned to one core), with 5 warm-up runs, then at least 20
runs and 1 s (--min-seconds). A shared VM's speed moves by tens of percent within minutes, and the predictor fits
absolute times, so the timing runs in --rounds rounds, each in random order: every profiled and
held-out whole model once per round, and a share of the block micro-models (each block file at
least once in all), up to 16 files in one agent process as `edgeconv profile` times them. A
drift of the machine's speed then falls on fit and held-out alike; a whole model counts with the
median of its rounds (as `edgeconv predict` takes the median of a file timed more than
once), and how far its rounds lie apart is reported beside the errors: a prediction cannot be
shown to be within +-10% of a measurement that does not repeat to +-10%. All of it twice, from
the same records: for the p50 of a file's runs (the goal's statistic) and for their min (as
`predict --statistic min`), each counted as the median over the file's rounds. On a VM whose
speed jumps between two levels ~1.5x apart within seconds (MobileNetV1 x0.35 @96 int8: a fast
~0.20 ms and a slow ~0.30 ms level; `bench/bench_timing.py --pin`), the p50 of a timing is the
share of it the machine spent slow, and the min is the one that repeats.
Reported per (runtime, precision) and statistic: the share of held-out models whose predicted
latency is within +-10% of the measured one, the median and worst error, and the share whose
rounds all lie within +-10% of their median. Everything runs on this host, 1 thread, pinned to one core;
exports and records resume, so an interrupted run continues with the round it stopped in (and
a second run into the same --work times nothing again: give it a new one to time afresh).
Writes bench/results/predict.json, with the time span of the records it used, and beside it
predict.png: predicted against measured p50 of every held-out model, one panel per runtime and
precision, each round's timing drawn as a bar, with the +-10% band (`--plot JSON` draws it again
from a JSON this benchmark wrote).

    python bench/predict_bench.py [--runtimes onnxruntime,litert] [--precisions fp32,int8] [--models M,..]
        [--rounds 3] [--min-seconds 1] [--work DIR] [--out JSON] [--export-only] [--plot JSON]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("mobilenet_v1", "mobilenet_v2", "efficientnet_lite0")
WIDTHS = (0.35, 0.5, 0.75, 1.0)
SIZES = (96, 128, 160, 192, 224)
FIT = {(0.5, 128), (0.75, 160), (1.0, 224),    # profiled: the grid's diagonal,
       (0.35, 112), (0.35, 208), (1.0, 96)}      # a corner and two points near the others
# timed whole and predicted, none of them profiled: every other point of the grid (16 per model)
HELD_OUT = {m: [(w, s) for w in WIDTHS for s in SIZES if (w, s) not in FIT] for m in MODELS}


def fit_check(predictor) -> list[dict]:
    """Every profiled whole model against the sum of its own measured blocks, and what the
    whole-model plane makes of those measured blocks: the plane's error with no block-model
    error in it, and a whole record timed in a slow moment shows as an outlier here."""
    rows = []
    for (_, side, folder), m in sorted(predictor.profiled.items(), key=lambda km: (Path(km[0][2]).name, km[0][1])):
        if m["whole_ms"] is None or not m["blocks"] or m["missing"]:
            continue
        ms, feats = [t for t, _ in m["blocks"]], [f for _, f in m["blocks"]]
        w, plane = m["whole_ms"], predictor.total_ms(ms, feats, side)
        rows.append({"config": Path(folder).name, "side": side, "whole_ms": w, "sum_of_blocks_ms": sum(ms),
                     "whole_over_sum": w / sum(ms), "plane_from_measured_blocks_ms": plane,
                     "plane_error": plane / w - 1, "whole_timestamp": m["whole_timestamp"]})
    return rows


def evaluate(records, jobs, held_jobs, runtime, precision, rounds, key, statistic) -> dict:
    """The predictor of ``statistic`` (p50 or min) fitted on the profile records among ``records``
    and checked on the held-out models' records: the share within +-10%, errors, how well the
    rounds repeat, per-model rows."""
    import numpy as np

    from edgeconv.benchmark import record_stats, repeated
    from edgeconv.prediction import Predictor
    fit = {(j.entry.sha256, j.block) for j in jobs}
    predictor = Predictor([r for r in records if (r.get("sha256"), r.get("block")) in fit], "local", runtime, precision,
                          statistic)
    label = f"{runtime} {precision} {statistic}"
    timed = repeated(records)
    used = [r["timestamp"] for j in jobs + [j for _, j in held_jobs.values()] for r in timed.get(key(j), [])]
    rows = []
    for (m, w, s), (feats, j) in held_jobs.items():
        vals = [record_stats(r)[statistic] for r in timed.get(key(j), [])]
        if not vals:
            print(f"{label} {m} w{w} s{s}: no round ran", flush=True)
            continue
        measured = float(np.median(vals))   # as the predictor counts a file timed more than once
        predicted = predictor.total_ms(predictor.block_ms(feats), feats, "model")
        # a model some round missed counts as not repeatable
        spread = max(abs(t / measured - 1) for t in vals) if len(vals) >= rounds else None
        rows.append({"model": m, "width": w, "input_size": s, "measured_ms": measured,
                     "rounds_ms": vals, "round_spread": spread,
                     "predicted_ms": predicted, "error": predicted / measured - 1})
        print(f"{label} {m} w{w} s{s}: measured {measured:.3f} ms (rounds "
              f"{', '.join(f'{t:.3f}' for t in vals)}), predicted {predicted:.3f} ms "
              f"({100 * rows[-1]['error']:+.1f}%)", flush=True)
    errs = np.abs([r["error"] for r in rows])
    spreads = [row["round_spread"] for row in rows]
    res = {"statistic": statistic, "held_out_models": len(rows), "within_10pct": float(np.mean(errs <= 0.10)),
           "median_abs_error": float(np.median(errs)), "worst_abs_error": float(errs.max()), "rounds": rounds,
           "repeatable_10pct": float(np.mean([s is not None and s <= 0.10 for s in spreads])),
           "median_round_spread": float(np.median([s for s in spreads if s is not None] or [np.nan])),
           "incomplete_rounds": sum(len(row["rounds_ms"]) < rounds for row in rows),
           # the machine's speed per round: the median over held-out models of a round's timing
           # over the model's median (1.0 everywhere on a steady machine)
           "round_speed": [float(np.median([row["rounds_ms"][i] / row["measured_ms"] for row in rows
                                            if len(row["rounds_ms"]) > i])) for i in range(rounds)],
           "fit_check": fit_check(predictor),
           "block_records": predictor.blocks, "block_correction": predictor.block_fit,
           "whole_fits": predictor.whole_fits, "timed_from": min(used),
           "timed_to": max(used), "rows": rows}
    print(f"== {label}: {100 * res['within_10pct']:.0f}% of {len(rows)} held-out models within "
          f"+-10%, median error {100 * res['median_abs_error']:.1f}%, worst {100 * res['worst_abs_error']:.1f}%; "
          f"{100 * res['repeatable_10pct']:.0f}% of them repeat within +-10% over {rounds} rounds", flush=True)
    return res


def plot(res: dict, path: Path) -> Path:
    """Predicted against measured p50 of the held-out models of each (runtime, precision) in
    ``res`` (this benchmark's JSON): a point per model at the median of its rounds, a bar across
    its rounds' range, the +-10% band around the diagonal."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    from edgeconv.reporting.profile import _plt, _save
    panels = list(res["results"].items())
    fig, axes = _plt().subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    colors = dict(zip(MODELS, ("tab:blue", "tab:orange", "tab:green")))
    for ax, (label, r) in zip(axes[0], panels):
        rows = r["rows"]
        ms = [t for row in rows for t in row["rounds_ms"] + [row["predicted_ms"]]]
        line = [min(ms) / 1.2, max(ms) * 1.2]
        ax.fill_between(line, [v * 0.9 for v in line], [v * 1.1 for v in line], color="0.9", label="within +-10%")
        ax.plot(line, line, color="0.5", lw=0.8)
        for m in MODELS:
            mine = [row for row in rows if row["model"] == m]
            if not mine:
                continue
            ax.errorbar([row["measured_ms"] for row in mine], [row["predicted_ms"] for row in mine],
                        xerr=[[row["measured_ms"] - min(row["rounds_ms"]) for row in mine],
                              [max(row["rounds_ms"]) - row["measured_ms"] for row in mine]],
                        fmt="o", ms=4, lw=0.8, color=colors[m], label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("measured p50 (ms; bar: its rounds)")
        ax.set_ylabel("predicted (ms)")
        ax.set_title(f"{label}: {100 * r['within_10pct']:.0f}% of {r['held_out_models']} within +-10%", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runtimes", default="onnxruntime,litert", help="runtimes to fit and check, comma-separated")
    p.add_argument("--precisions", default="fp32,int8", help="precisions, comma-separated")
    p.add_argument("--models", default=",".join(MODELS), help="zoo models, comma-separated")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "edgeconv" / "predict_bench"),
                   help="exports and results.jsonl (resumed; a new folder times afresh)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="least time each file is timed for")
    p.add_argument("--rounds", type=int, default=3,
                   help="times each whole model is timed, in random order with a share of the blocks (median kept)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "predict.json"),
                   help="the figures (JSON), with the plot beside it (.png)")
    p.add_argument("--plot", metavar="JSON", help="only draw the plot of a JSON this benchmark wrote (beside it)")
    p.add_argument("--export-only", action="store_true",
                   help="export every micro-model and held-out model, time nothing (a later run times them)")
    a = p.parse_args()
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    if a.plot:
        print(f"-> {plot(json.loads(Path(a.plot).read_text()), Path(a.plot).with_suffix('.png'))}")
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    from bench_device.agent import device_facts
    from edgeconv.artifact import format_of
    from edgeconv.benchmark import Job, ResultsFile, TimingConfig, repeated, run_jobs, run_key
    from edgeconv.data import calibration
    from edgeconv.device.inventory import get_device
    from edgeconv.exporters import export
    from edgeconv.prediction import model_features
    from edgeconv.profiling import FILES_PER_AGENT, plan_profile
    from edgeconv.quantize import QuantRecipe
    from edgeconv.zoo import create_model

    work = Path(a.work)
    cfg = TimingConfig(warmup=5, min_runs=20, min_seconds=a.min_seconds, affinity=None,
                       files_per_agent=FILES_PER_AGENT)
    dev = get_device("local")
    recipe = QuantRecipe(calib_count=16)
    models = a.models.split(",")
    held = {m: HELD_OUT[m] for m in models}
    out = {"host": device_facts(), "load_average_before": os.getloadavg(), "fit_configs": sorted(FIT),
           "held_out": {m: [list(c) for c in cs] for m, cs in held.items()}, "results": {}}

    def key(j):
        return run_key(j.entry.sha256, j.runtime, dev.name, j.threads, j.block)

    def held_export(m, w, s, fmt, precision):
        net = create_model(m, width=w, input_size=s)
        ds = calibration("digits", net, recipe.calib_count)
        return net, export(net, calib=ds.x, formats=[fmt], precisions=[precision], recipe=recipe,
                           out=work / "held" / f"{m}_w{w}_s{s}", calib_info=ds.describe())

    for runtime, precision in itertools.product(a.runtimes.split(","), a.precisions.split(",")):
        fmt = format_of(runtime)
        rf = ResultsFile(work / "results.jsonl")   # one file: a folder's other formats, timed once
        t0 = time.time()
        jobs = []
        for m, (w, s) in itertools.product(models, sorted(FIT)):
            jobs += plan_profile(m, work / "fit" / f"{m}_w{w}_s{s}", fmt=fmt, precision=precision,
                                 input_size=s, width=w, recipe=recipe, log=lambda x: print(x, flush=True))
        held_jobs = {}
        for m in models:
            for w, s in held[m]:
                net, art = held_export(m, w, s, fmt, precision)
                name = art.name_of(fmt, precision)
                held_jobs[(m, w, s)] = ([f for _, f in model_features(net)], Job(art, name, art.files[name], 1))
        held_sha = {j.entry.sha256 for _, j in held_jobs.values()}
        if a.export_only:
            print(f"{runtime} {precision}: exported in {time.time() - t0:.0f} s", flush=True)
            continue
        # the rounds: in each, every whole model (profiled and held out) timed once more and a share
        # of the blocks timed once, all in random order; a round an interruption cut short resumes
        wholes = [j for j in jobs if j.block is None] + [j for _, j in held_jobs.values()]
        blocks = [j for j in jobs if j.block is not None]
        random.Random(0).shuffle(blocks)
        for i in range(a.rounds):
            timed = repeated(rf.records())
            todo = [j for j in blocks[i::a.rounds] if key(j) not in timed]
            todo += [j for j in wholes if len(timed.get(key(j), ())) <= i]
            random.Random(i + 1).shuffle(todo)
            print(f"{runtime} {precision}: round {i + 1} of {a.rounds}, {len(todo)} files", flush=True)
            run_jobs(todo, [dev], rf, cfg, force=True)
        # the records of this plan only, with the blocks' features as this version computes them
        # (a record keeps those of its first timing)
        arch = {(j.entry.sha256, j.block): j.artifact.manifest.arch for j in jobs}
        raw = [{**r, "arch": arch.get((r.get("sha256"), r.get("block")), r.get("arch"))} for r in rf.records()
               if (r.get("sha256"), r.get("block")) in arch or r.get("sha256") in held_sha]
        out["results"][f"{runtime}/{precision}"] = {
            **evaluate(raw, jobs, held_jobs, runtime, precision, a.rounds, key, "p50"),
            "min": evaluate(raw, jobs, held_jobs, runtime, precision, a.rounds, key, "min")}
        out["load_average_after"] = os.getloadavg()
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2))
        plot(out, Path(a.out).with_suffix(".png"))
    if not a.export_only:
        print(f"-> {a.out}, {Path(a.out).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
