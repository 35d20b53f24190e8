"""``edgeconv profile`` and ``edgeconv predict``: per-block latency of a model and its twin on a
device, and latency predicted from such profiles."""
from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from ..artifact import PRECISIONS, RUNTIMES
from ..benchmark import STATISTICS
from ..cost import human
from ..profiling import FILES_PER_AGENT, OP_PROFILE_RUNS
from .common import Progress, console, err_console, fmt, inventory_option, positive, timing_options, with_model_help


def print_profile(t: dict) -> None:
    table = Table(title=f"{t['model']} vs its standard-conv twin, block by block: {t['device']}, {t['runtime']} "
                        f"{t['precision']}")
    profiled = bool(t.get("op_profile"))
    # with an op profile, each side's block time inside its whole model beside its micro-model's
    cols = ("block", "kind", "MACs", "weights", "activations", "model ms", *(("in whole",) if profiled else ()),
            "twin ms", *(("in whole",) if profiled else ()), "latency ratio", "MAC ratio", "model GMAC/s", "twin GMAC/s")
    for c in cols:
        table.add_column(c, justify="left" if c in ("block", "kind") else "right", no_wrap=True)
    for r in t["rows"]:
        table.add_row(r["block"], r["kind"], human(r["macs"]), human(r["weight_bytes"], "B"), human(r["act_bytes"], "B"),
                      fmt(r["model_ms"]), *((fmt(r.get("model_in_whole_ms")),) if profiled else ()),
                      fmt(r["twin_ms"]), *((fmt(r.get("twin_in_whole_ms")),) if profiled else ()),
                      fmt(r["latency_ratio"], ".2f"), fmt(r["mac_ratio"], ".2f"),
                      fmt(r["model_gmacs"], ".2f"), fmt(r["twin_gmacs"], ".2f"))
    console.print(table)
    w, s = t["whole_ms"], t["sum_of_blocks_ms"]
    console.print(f"whole model {fmt(w['model'])} ms (sum of blocks {fmt(s['model'])} ms); twin {fmt(w['twin'])} ms "
                  f"(sum {fmt(s['twin'])} ms); MACs {human(t['model_macs'])} vs {human(t['twin_macs'])}; device peak "
                  f"(dense 3x3 conv) {fmt(t['peak_gmacs'], '.2f')} GMAC/s", highlight=False)
    for side, op in (t.get("op_profile") or {}).items():
        console.print(f"in whole: the {side}'s node times under the runtime's op profiler ({op.get('source')}; a "
                      f"cross-check, its overhead included): blocks "
                      f"{fmt(op['blocks_ms'])} ms, outside any block (layout, quantize) {fmt(op['outside_blocks_ms'])} ms",
                      highlight=False)
    if t["note"]:
        err_console.print(f"note: {t['note']}")


@click.command()
@click.argument("model")
@click.option("--device", default="local", show_default=True, help="Device name (see `edgeconv device check`).")
@inventory_option
@click.option("--runtime", default="onnxruntime", show_default=True, type=click.Choice(RUNTIMES))
@click.option("--precision", default="int8", show_default=True, type=click.Choice(PRECISIONS))
@click.option("--results", type=click.Path(dir_okay=False),
              help="JSON Lines file the records go to (resumes like bench; `predict --profile` reads it) "
                   "[default: OUT/results.jsonl; only then is the report (report.html, report.md, plots/) "
                   "written beside it].")
@click.option("--out", type=click.Path(file_okay=False),
              help="The profile folder: the micro-models, fp32 and int8 side by side, and by default "
                   "results.jsonl and the report; one folder for every precision, device and thread count "
                   "[default: profiles/MODEL[_wWIDTH][_SIZEpx][_depthN]_RUNTIME].")
@click.option("--calib", default="digits", show_default=True, help="Calibration data (as for export).")
@click.option("--class-index", type=click.Path(dir_okay=False), help="For ImageNet-style calibration folders.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint for the model (not the twin).")
@click.option("--pretrained", is_flag=True, help="The zoo spec's pretrained weights for the model (not the twin).")
@click.option("--input-size", type=int, help="Input resolution.")
@click.option("--width", type=float, help="Width multiplier (zoo models).")
@click.option("--depth", default=1, show_default=True, callback=positive("depth", 1),
              help="Your own models: profile the modules this many levels down.")
@click.option("--threads", default=1, show_default=True, callback=positive("threads", 1),
              help="Threads the runtime uses (a prediction from this profile takes the same `predict --threads`).")
@click.option("--files-per-agent", default=FILES_PER_AGENT, show_default=True, callback=positive("files-per-agent", 1),
              help="Micro-models timed one after another in one agent process (its interpreter start-up "
                   "and runtime import paid once); 1 starts a fresh process for every file.")
@click.option("--op-profile-runs", type=int, callback=positive("op-profile-runs"),
              help="Runs of every file (each block's micro-model and each whole model) under the runtime's "
                   "op profiler, after its timing; the whole models' give the \"in whole\" columns. "
                   f"0 leaves the cross-check out [default: {OP_PROFILE_RUNS} under onnxruntime and "
                   "executorch].")
@click.option("--force", is_flag=True, help="Export and time again.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@timing_options
def profile(model, device, inventory, runtime, precision, results, out, calib, class_index, weights, pretrained,
            input_size, width, depth, threads, files_per_agent, op_profile_runs, force, as_json, warmup, min_runs,
            min_seconds, max_seconds, affinity):
    """Per-block latency of MODEL and its standard-conv twin on a device: each block exported as a
    micro-model at its real input shape (int8 calibrated on its real inputs), timed beside the
    whole model and a dense conv (the device's peak).

    \b
    The table: block, kind, MACs, weight and activation bytes, model ms, twin ms, latency ratio
    beside MAC ratio, achieved GMAC/s. Records go to --results with a `block` field.
    Under onnxruntime and executorch, "in whole" beside each side's ms is the block's time
    inside the whole model under the runtime's own op profiler (ETDump for ExecuTorch).

    \b
    Examples:
      edgeconv profile mobilenet_v2 --runtime onnxruntime --precision int8 --input-size 160
      edgeconv profile tiny --device qemu-arm64 --runtime litert --min-runs 5 --min-seconds 0
      edgeconv profile efficientnet_lite0 --pretrained --runtime executorch --precision int8
    """
    from ..benchmark import TimingConfig
    from ..profiling import profile as do_profile
    with Progress() as bar:
        t = do_profile(model, device, runtime=runtime, precision=precision, results=results, out=out,
                       inventory=inventory, calib=calib, class_index=class_index, weights=weights,
                       pretrained=pretrained, input_size=input_size, width=width, depth=depth, threads=threads,
                       cfg=TimingConfig(warmup, min_runs, min_seconds, max_seconds, affinity,
                                        op_profile_runs=op_profile_runs, files_per_agent=files_per_agent),
                       force=force, progress=bar, log=lambda m: err_console.print(m, highlight=False))
    if as_json:
        click.echo(json.dumps(t, indent=2))
    else:
        print_profile(t)
        console.print(f"records: {t['results']}" + (f"; report: {t['report']}" if t.get("report") else ""),
                      highlight=False)
    for e in t["errors"]:
        err_console.print(f"error: {e['block']}: {e['error']}", highlight=False)
    if t["errors"]:
        err_console.print(f"{len(t['errors'])} file(s) of the profile failed: their rows are empty; the error records "
                          f"are in {t['results']} (run again to retry them)", highlight=False)
        sys.exit(1)


with_model_help(profile)


@click.command()
@click.argument("model")
@click.option("--device", default="local", show_default=True, help="The profiled device.")
@click.option("--runtime", default="onnxruntime", show_default=True, type=click.Choice(RUNTIMES))
@click.option("--precision", default="int8", show_default=True, type=click.Choice(PRECISIONS))
@click.option("--profile", "profile_files", multiple=True, metavar="FILE",
              help="Results of `edgeconv profile` runs on that device: repeat it, or give a quoted glob; the "
                   "more profiled models, the better the fit [default: profiles/*/results.jsonl, where "
                   "`edgeconv profile` writes].")
@click.option("--threads", default=1, show_default=True, callback=positive("threads", 1),
              help="The thread count the profile was timed with (`profile --threads`).")
@click.option("--twin", is_flag=True, help="Predict the standard-conv twin instead.")
@click.option("--width", type=float, help="Width multiplier (zoo models).")
@click.option("--input-size", type=int, help="Input resolution.")
@click.option("--depth", default=1, show_default=True, callback=positive("depth", 1),
              help="Your own models: blocks this many levels down (as the profile's `--depth`).")
@click.option("--statistic", default="p50", show_default=True, type=click.Choice(STATISTICS),
              help="What is predicted: the median run (p50) or the fastest (min). On a shared machine whose "
                   "speed jumps between runs (a VM beside others), min is the one that repeats.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (predicted_ms, per block).")
def predict(model, device, runtime, precision, profile_files, threads, twin, width, input_size, depth, statistic,
            as_json):
    """Predict MODEL's latency on a profiled device without running it: per block and in total,
    fitted on the blocks of every profile of that device, runtime, precision and thread count.

    \b
    Example (three profiles, then a model none of them is):
      edgeconv profile mobilenet_v2 --input-size 128
      edgeconv profile mobilenet_v1 --width 0.5 --input-size 224
      edgeconv profile efficientnet_lite0 --width 0.75 --input-size 160
      edgeconv predict mobilenet_v1 --width 0.75 --input-size 160
    """
    from ..prediction import predict as do_predict
    res = do_predict(model, device, runtime=runtime, precision=precision, profile=list(profile_files) or None,
                     twin=twin, width=width, input_size=input_size, depth=depth, statistic=statistic, threads=threads)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    table = Table(title=f"{res['model']}{' twin' if twin else ''} on {device}, {runtime} {precision}: predicted "
                        f"{statistic}")
    for c in ("block", "MACs", f"predicted {statistic} ms"):
        table.add_column(c, justify="left" if c == "block" else "right")
    for b in res["blocks"]:
        table.add_row(b["block"], human(b["macs"]), fmt(b["predicted_ms"]))
    console.print(table)
    f = res["fit"]
    console.print(f"predicted latency ({statistic}): {res['predicted_ms']:.3f} ms "
                  f"(sum of blocks {res['sum_of_blocks_ms']:.3f} ms; "
                  f"fitted on {f['block_records']} block records and {f['models']} whole models"
                  f"{' of both sides (too few of its own side for a plane of its own)' if f['pooled'] else ''}"
                  + (f"; whole model from its measured blocks: {100 * f['loo_median_error']:.1f}% median error, each "
                     f"profiled model left out of the fit" if f["loo_median_error"] is not None else "") + ")",
                  highlight=False)
    if f["emulated"]:
        err_console.print("note: the profile is of an emulated device: functional timings, not latency")


with_model_help(predict)

COMMANDS = [profile, predict]
