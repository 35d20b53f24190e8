"""``edgeconv device``, ``edgeconv bench`` and ``edgeconv compare``: latency on devices."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ..artifact import FORMATS, PRECISIONS, RUNTIMES
from .common import (Progress, console, csv_option, err_console, fmt, int_list, inventory_option, positive,
                     timing_options, with_model_help)


def print_records(records: list[dict]) -> None:
    from ..benchmark import record_stats
    table = Table(title="latency (ms)")
    on_nodes = any(r.get("node") for r in records)  # made through a cluster: say where
    for col in ("device", *(("node",) if on_nodes else ()), "model", "file", "runtime", "thr", "status", "n",
                "p50", "p90", "mean", "CoV"):
        table.add_column(col, justify="right" if col in ("thr", "n", "p50", "p90", "mean", "CoV") else "left")
    for r in records:
        s = record_stats(r)
        name = f"{r.get('model')}{' twin' if r.get('twin') else ''}"
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/]"
        node = r.get("node") or {}
        where = (f"{node.get('hostname')} {node.get('id', '')[:8]}" if node else "-",) if on_nodes else ()
        table.add_row(r["device"]["name"], *where, name, r["file"], r["runtime"], str(r["threads"]), status,
                      str(s["n"] or "-"), fmt(s["p50"]), fmt(s["p90"]), fmt(s["mean"]),
                      "-" if s["cov"] is None else f"{100 * s['cov']:.1f}%")
    console.print(table)
    for r in records:
        if r.get("drift"):
            d = r["drift"]
            flag = "[red]DRIFTED[/]" if d["drifted"] else "steady"
            console.print(f"sustained {r['device']['name']} {r['file']} {r['runtime']}: p50 first {d['window_s']:.0f} s "
                          f"{d['p50_first_ms']:.3f} ms, last {d['p50_last_ms']:.3f} ms ({100 * d['change']:+.1f}%): "
                          f"{flag} (threshold {100 * d['threshold']:.0f}%)")
    for r in records:
        if r["status"] != "ok":
            err_console.print(f"[red]error[/] {r['device']['name']} {r['file']} {r['runtime']} "
                              f"t{r['threads']}: {r.get('error')}", highlight=False)
    emulated = {r["device"]["name"] for r in records if r["device"].get("emulated")}
    if emulated:
        err_console.print(f"note: {', '.join(sorted(emulated))} is emulated (qemu): its times are not "
                          "an ARM board's latency.")


@click.group()
def device():
    """Devices: check that a board, phone or the emulated arm64 device is ready; build the
    emulated arm64 device."""


cluster_option = click.option(
    "--cluster", metavar="auto|HOST:PORT",
    help="Run on a Ray cluster (pip install 'edgeconv[cluster]'): auto, or the head's address; each device runs on "
         "the node that declares edgeconv_device:<name> (see README, \"A device lab on a Ray cluster\").")


@device.command("check")
@click.argument("name", required=False)
@inventory_option
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def device_check(name, inventory, cluster, as_json):
    """Reach device NAME, copy the agent there and report arch, cores, governor, runtimes
    present with their versions, and what is missing with how to install it. Warns when the
    CPU governor is not `performance` (and says how to set it), and when a Raspberry Pi reports
    throttling (under-voltage, capped clocks, temperature); exits 1 when a runtime the inventory
    asks of the device is missing.

    With --cluster: device NAME, or with no NAME every device of the inventory, the node that
    drives it and whether it answers; exit 1 when one does not.

    \b
    Examples:
      edgeconv device check local
      edgeconv device check qemu-arm64
      edgeconv device check pi5 --inventory devices.toml
      edgeconv device check --cluster auto --inventory lab.toml"""
    if cluster:
        return _check_cluster(name, inventory, cluster, as_json)
    if not name:
        raise click.UsageError("name the device to check (or give --cluster to check every device of the inventory)")
    from ..device import device_facts
    facts = device_facts(name, inventory)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    d = facts["device"]
    table = Table(title=f"device {name} ({facts['transport']}): reachable")
    table.add_column("fact")
    table.add_column("value")
    for k in ("arch", "cpu", "cores", "governor", "freq_mhz", "emulated", "os", "python"):
        if k in d:
            table.add_row(k, str(d[k]))
    if facts.get("throttled") is not None:
        table.add_row("throttled", str(facts["throttled"]))
    if facts.get("temp_c") is not None:
        table.add_row("temp_c", str(facts["temp_c"]))
    rts = facts.get("runtimes", {})
    wanted = facts.get("wanted_runtimes") or [k for k in rts if "_" not in k]
    for rt in [k for k in rts if "_" not in k]:
        v = rts[rt]
        if v:
            table.add_row(f"runtime {rt}", f"[green]{v}[/]")
        else:
            table.add_row(f"runtime {rt}", f"{'[red]missing[/]' if rt in wanted else 'absent'} "
                                           f"({rts.get(rt + '_error', '')}) install: {rts.get(rt + '_install', '')}")
    for tool, path in facts.get("native", {}).items():
        table.add_row(f"native {tool}", path)
    console.print(table)
    for w in facts.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    missing = [rt for rt in wanted if not rts.get(rt)]
    if missing and facts.get("wanted_runtimes"):
        raise click.ClickException(f"device {name}: missing runtime(s) {', '.join(missing)}")


def _check_cluster(name, inventory, cluster, as_json):
    from ..cluster import check_devices
    rows = check_devices(cluster, inventory, [name] if name else None)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title=f"devices on the cluster at {cluster}")
        for col in ("device", "transport", "node", "answers", "arch", "cores", "runtimes / error"):
            table.add_column(col)
        for r in rows:
            node = r["node"] or {}
            where = f"{node.get('hostname')} {node.get('ip')} {node.get('id', '')[:12]}" if node else "-"
            if r["answers"]:
                d = r["facts"].get("device", {})
                rts = ", ".join(f"{k} {v}" for k, v in r["facts"].get("runtimes", {}).items() if v and "_" not in k)
                table.add_row(r["device"], r["transport"], where, "[green]yes[/]", str(d.get("arch", "")),
                              str(d.get("cores", "")), rts)
            else:
                table.add_row(r["device"], r["transport"] or "-", where, "[red]no[/]", "", "",
                              f"[red]{escape(r['error'])}[/]")
        console.print(table)
    if not all(r["answers"] for r in rows):
        sys.exit(1)


@device.command("setup-arm64")
@click.option("--with-executorch", is_flag=True, help="Also the ExecuTorch runtime (~2.7 GB of downloads).")
@click.option("--force", is_flag=True, help="Build everything again.")
def setup_arm64(with_executorch, force):
    """Build the emulated arm64 device (qemu-aarch64 10 + an arm64 Debian Python with numpy,
    onnxruntime and LiteRT), for `--device qemu-arm64`. Needs bash, network access to Debian's
    mirror and PyPI; root is not required. Its times are an emulator's, for checking ARM
    kernels, not for latency."""
    import subprocess
    from importlib import resources
    script = Path(str(resources.files("bench_device") / "setup_arm64.sh"))
    argv = ["bash", str(script), *(["--with-executorch"] if with_executorch else []), *(["--force"] if force else [])]
    sys.exit(subprocess.call(argv))


@click.command("bench")
@click.argument("artifact_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--device", "devices", default="local", show_default=True,
              help="Comma-separated device names (run in parallel, one thread each, or one Ray actor each "
                   "with --cluster).")
@inventory_option
@click.option("--runtime", "runtimes", help=f"Comma-separated: {', '.join(RUNTIMES)} [default: all].")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts, e.g. 1,4.")
@click.option("--precision", help="Comma-separated: fp32, int8 [default: both].")
@click.option("--results", default="results.jsonl", show_default=True, type=click.Path(dir_okay=False),
              help="JSON Lines file the records are appended to.")
@click.option("--force", is_flag=True, help="Run again what the results file already holds.")
@click.option("--sustained", type=float, metavar="MINUTES", callback=positive("sustained", 0.001),
              help="Sustained mode: time each file for this many minutes (in place of --min-runs, "
                   "--min-seconds and --max-seconds; one file per agent process), sampling temperature, clock "
                   "and throttling, and flag a p50 that drifts between the first and last minute (third, in a "
                   "run under three minutes). `edgeconv report DIR` plots it over time when the records are "
                   "DIR/results.jsonl.")
@click.option("--drift-threshold", default=5.0, show_default=True, callback=positive("drift-threshold"),
              help="With --sustained: percent change of p50 that flags a run.")
@click.option("--files-per-agent", default=1, show_default=True, callback=positive("files-per-agent", 1),
              help="Time up to this many files in one agent process, paying the device's interpreter start-up "
                   "and runtime import once (2-3 s a file under qemu-arm64 here). Then the load and "
                   "first-run times of all but the first file are those of a warm process, and only the "
                   "first has a peak RSS.")
@cluster_option
@timing_options
def bench_cmd(artifact_dirs, devices, inventory, runtimes, threads, precision, results, force, sustained,
              drift_threshold, files_per_agent, cluster, warmup, min_runs, min_seconds, max_seconds, affinity):
    """Time every model file of ARTIFACT_DIRS on the devices and append one record per
    (file, runtime, device, threads) to --results. Running it again resumes: runs already
    in the file with status ok are skipped (unless --force).

    \b
    Examples:
      edgeconv bench artifacts/tiny --threads 1,2
      edgeconv bench artifacts/tiny --device qemu-arm64 --min-runs 3 --min-seconds 0 --warmup 1
      edgeconv bench artifacts/tiny --device pi4,pixel7 --inventory devices.toml --precision int8
      edgeconv bench artifacts/tiny --device pi5 --inventory devices.toml --sustained 10
      edgeconv bench artifacts/tiny --device local,pi5,pixel7 --inventory lab.toml --cluster auto
    """
    from ..benchmark import TimingConfig, bench
    cfg = TimingConfig(warmup, min_runs, min_seconds, max_seconds, affinity,
                       sustained_seconds=60 * sustained if sustained else 0.0,
                       sample_every=min(5.0, max(0.5, 60 * sustained / 12)) if sustained else 5.0,
                       drift_threshold=drift_threshold / 100, files_per_agent=files_per_agent)
    with Progress() as progress:
        recs = bench(artifact_dirs, csv_option(devices, _anything, "--device"), results, inventory=inventory,
                     runtimes=csv_option(runtimes, RUNTIMES, "--runtime", required=False) or None,
                     threads=int_list(threads, "--threads"),
                     precisions=csv_option(precision, PRECISIONS, "--precision", required=False) or None,
                     cfg=cfg, force=force, progress=progress, cluster=cluster)
    if recs:
        print_records(recs)
    else:
        err_console.print(f"nothing new: every run is already in {results} (use --force to run again)")
    err_console.print(f"results: {results}")
    if any(r["status"] != "ok" for r in recs):
        sys.exit(1)


class _Anything(tuple):
    """Device names are checked against the inventory by the library, not here."""

    def __contains__(self, item):
        return True


_anything = _Anything(("local", "qemu-arm64", "a name from the inventory"))


@click.command("compare")
@click.argument("model")
@click.option("--device", "devices", default="local", show_default=True, help="Comma-separated device names.")
@inventory_option
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint for the model (not the twin).")
@click.option("--input-size", type=int, help="Input resolution.")
@click.option("--calib", default="digits", show_default=True, help="Calibration data for int8 (as for export).")
@click.option("--class-index", type=click.Path(dir_okay=False), help="For ImageNet-style calibration folders.")
@click.option("--calib-count", default=64, show_default=True, callback=positive("calib-count", 1),
              help="Calibration samples.")
@click.option("--formats", default="onnx,tflite", show_default=True, help=f"Comma-separated: {', '.join(FORMATS)}.")
@click.option("--precision", default="fp32,int8", show_default=True, help="Comma-separated: fp32, int8.")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts.")
@click.option("--out", default="artifacts/compare", show_default=True, type=click.Path(file_okay=False),
              help="Where the model and twin artifacts go (reused when they match).")
@click.option("--results", type=click.Path(dir_okay=False), help="[default: OUT/results.jsonl]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the rows here.")
@click.option("--force", is_flag=True, help="Export and run again.")
@timing_options
def compare(model, devices, inventory, weights, input_size, calib, class_index, calib_count, formats, precision,
            threads, out, results, json_out, force, warmup, min_runs, min_seconds, max_seconds, affinity):
    """Export MODEL and its standard-conv twin (or reuse them in --out), time both in each
    format and precision, and print the latency ratio twin/model beside the MAC and param
    ratios."""
    from ..benchmark import TimingConfig, compare as do_compare
    from ..quantize import QuantRecipe
    with Progress() as progress:
        res = do_compare(model, csv_option(devices, _anything, "--device"), out=out, results=results,
                         inventory=inventory, weights=weights, input_size=input_size, calib=calib,
                         class_index=class_index, recipe=QuantRecipe(calib_count=calib_count),
                         formats=csv_option(formats, tuple(FORMATS), "--formats"),
                         precisions=csv_option(precision, PRECISIONS, "--precision"),
                         threads=int_list(threads, "--threads"),
                         cfg=TimingConfig(warmup, min_runs, min_seconds, max_seconds, affinity), force=force,
                         progress=progress, log=lambda m: err_console.print(m, highlight=False))
    table = Table(title=f"{model}: standard-conv twin vs model")
    for col in ("device", "format", "precision", "runtime", "thr", "model p50 ms", "twin p50 ms",
                "latency ratio", "MAC ratio", "param ratio"):
        table.add_column(col, justify="left" if col in ("device", "format", "precision", "runtime") else "right")
    for r in res["rows"]:
        table.add_row(r["device"], r["format"], r["precision"], r["runtime"], str(r["threads"]),
                      fmt(r["model_p50_ms"]), fmt(r["twin_p50_ms"]), fmt(r["latency_ratio"], ".2f"),
                      fmt(r["mac_ratio"], ".2f"), fmt(r["param_ratio"], ".2f"))
    console.print(table)
    if json_out:
        Path(json_out).write_text(json.dumps(res["rows"], indent=2))
    for r in res["failed"]:
        err_console.print(f"[red]error[/] {r['device']['name']} {r['artifact']}/{r['file']} {r['runtime']}: "
                          f"{r.get('error')}", highlight=False)
    if res["failed"]:
        sys.exit(1)


with_model_help(compare)
COMMANDS = [device, bench_cmd, compare]
