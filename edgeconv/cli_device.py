"""``edgeconv device check``, ``edgeconv bench`` and ``edgeconv compare``: latency on devices.
Registered into the ``edgeconv`` command by ``cli.py`` through ``COMMANDS``."""
from __future__ import annotations

import json
import sys
import threading

import click
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

inventory_option = click.option("--inventory", type=click.Path(dir_okay=False),
                                help="Device inventory (TOML) [default: ./devices.toml if present]. "
                                     "`local` and `qemu-arm64` need none.")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def timing_options(f):
    for opt in reversed([
        click.option("--warmup", default=10, show_default=True, help="Untimed runs first."),
        click.option("--min-runs", default=50, show_default=True, help="Timed runs at least."),
        click.option("--min-seconds", default=3.0, show_default=True, help="Timed seconds at least."),
        click.option("--max-seconds", default=120.0, show_default=True, help="Stop timing after this."),
        click.option("--affinity", help="Pin the agent to these CPUs, e.g. 2,3 or 0-3."),
    ]):
        f = opt(f)
    return f


class _DeviceProgress:
    """One rich progress bar per device, fed from the device threads."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        self.progress = Progress(TextColumn("[bold]{task.fields[device]}[/] {task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=err_console)
        self.tasks = {}
        self.lock = threading.Lock()

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, device, done, total, label):
        with self.lock:
            if device not in self.tasks:
                self.tasks[device] = self.progress.add_task(label, total=max(total, 1), device=device)
            self.progress.update(self.tasks[device], completed=done, total=max(total, 1), description=label)


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def print_records(records: list[dict]) -> None:
    from .bench import record_stats
    table = Table(title="latency (ms)")
    for col in ("device", "model", "file", "runtime", "thr", "status", "n", "p50", "p90", "mean", "CoV"):
        table.add_column(col, justify="right" if col in ("thr", "n", "p50", "p90", "mean", "CoV") else "left")
    for r in records:
        s = record_stats(r)
        name = f"{r.get('model')}{' twin' if r.get('twin') else ''}"
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/]"
        table.add_row(r["device"]["name"], name, r["file"], r["runtime"], str(r["threads"]), status,
                      str(s["n"] or "-"), _fmt(s["p50"]), _fmt(s["p90"]), _fmt(s["mean"]),
                      "-" if s["cov"] is None else f"{100 * s['cov']:.1f}%")
    console.print(table)
    for r in records:
        if r["status"] != "ok":
            err_console.print(f"[red]error[/] {r['device']['name']} {r['file']} {r['runtime']} "
                              f"t{r['threads']}: {r.get('error')}")
    emulated = {r["device"]["name"] for r in records if r["device"].get("emulated")}
    if emulated:
        err_console.print(f"note: {', '.join(sorted(emulated))} is emulated (qemu): its times are not "
                          "an ARM board's latency.")


@click.group()
def device():
    """Devices: check that a board, phone or the emulated arm64 device is ready."""


@device.command("check")
@click.argument("name")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def check(name, inventory, as_json):
    """Reach device NAME, copy the agent there and report arch, cores, governor, runtimes
    present with their versions, and what is missing with how to install it."""
    from .device import TransportError
    from .device.inventory import get_device
    dev = get_device(name, inventory)
    try:
        with dev.open() as tr:
            if not tr.has_agent_python():
                facts = {"device": {"name": name}, "runtimes": {}, "native": tr.native}
                rc, out, err = tr.run(["getprop", "ro.product.model"], timeout=30)
                facts["device"]["cpu"] = out.strip()
                rc, out, err = tr.run(["uname", "-m"], timeout=30)
                facts["device"]["arch"] = out.strip()
            else:
                tr.push_agent()
                rc, out, err = tr.run([tr.python, tr.agent, "--facts"], timeout=tr.default_timeout)
                if rc != 0:
                    raise click.ClickException(f"device {name}: the agent failed there (rc {rc}): "
                                               f"{(err or out).strip()[-500:]}\n(needs Python 3 with numpy: "
                                               "pip install -r bench_device/requirements.txt)")
                facts = json.loads(out.strip().splitlines()[-1])
    except TransportError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    d = facts["device"]
    table = Table(title=f"device {name} ({dev.transport}): reachable")
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
    wanted = dev.runtimes or [k for k in rts if "_" not in k]
    for rt in [k for k in rts if "_" not in k]:
        v = rts[rt]
        if v:
            table.add_row(f"runtime {rt}", f"[green]{v}[/]")
        else:
            hint = rts.get(f"{rt}_install", "")
            table.add_row(f"runtime {rt}", f"{'[red]missing[/]' if rt in wanted else 'absent'} "
                                           f"({rts.get(rt + '_error', '')}) install: {hint}")
    for tool, path in facts.get("native", {}).items():
        table.add_row(f"native {tool}", path)
    console.print(table)
    missing = [rt for rt in wanted if not rts.get(rt)]
    if missing and dev.runtimes:
        raise click.ClickException(f"device {name}: missing runtime(s) {', '.join(missing)}")


@click.command("bench")
@click.argument("artifact_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--device", "devices", default="local", show_default=True,
              help="Comma-separated device names (run in parallel, one thread each).")
@inventory_option
@click.option("--runtime", "runtimes", help="Comma-separated: onnxruntime, litert, executorch [default: all].")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts, e.g. 1,4.")
@click.option("--precision", help="Comma-separated: fp32, int8 [default: both].")
@click.option("--results", default="results.jsonl", show_default=True, type=click.Path(dir_okay=False),
              help="JSON Lines file the records are appended to.")
@click.option("--force", is_flag=True, help="Run again what the results file already holds.")
@timing_options
def bench_cmd(artifact_dirs, devices, inventory, runtimes, threads, precision, results, force,
              warmup, min_runs, min_seconds, max_seconds, affinity):
    """Time every model file of ARTIFACT_DIRS on the devices and append one record per
    (file, runtime, device, threads) to --results. Running it again resumes: runs already
    in the file with status ok are skipped (unless --force).

    \b
    Examples:
      edgeconv bench artifacts/tiny --threads 1,2
      edgeconv bench artifacts/tiny --device qemu-arm64 --min-runs 3 --min-seconds 0 --warmup 1
      edgeconv bench artifacts/tiny --device pi4,pixel7 --inventory devices.toml --precision int8
    """
    from .bench import TimingConfig, bench
    cfg = TimingConfig(warmup, min_runs, min_seconds, max_seconds, affinity)
    with _DeviceProgress() as progress:
        recs = bench(artifact_dirs, _csv(devices), results, inventory=inventory,
                     runtimes=_csv(runtimes) or None, threads=[int(t) for t in _csv(threads)],
                     precisions=_csv(precision) or None, cfg=cfg, force=force, progress=progress)
    if recs:
        print_records(recs)
    else:
        err_console.print(f"nothing new: every run is already in {results} (use --force to run again)")
    err_console.print(f"results: {results}")
    if any(r["status"] != "ok" for r in recs):
        sys.exit(1)


@click.command("compare")
@click.argument("model")
@click.option("--device", "devices", default="local", show_default=True, help="Comma-separated device names.")
@inventory_option
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint for the model (not the twin).")
@click.option("--input-size", type=int, help="Input resolution.")
@click.option("--formats", default="onnx,tflite", show_default=True, help="Comma-separated: onnx, tflite, executorch.")
@click.option("--precision", default="fp32,int8", show_default=True, help="Comma-separated: fp32, int8.")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts.")
@click.option("--out", default="artifacts/compare", show_default=True, type=click.Path(file_okay=False),
              help="Where the model and twin artifacts go (reused when present).")
@click.option("--results", type=click.Path(dir_okay=False), help="[default: OUT/results.jsonl]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the rows here.")
@click.option("--force", is_flag=True, help="Export and run again.")
@timing_options
def compare(model, devices, inventory, weights, input_size, formats, precision, threads, out, results,
            json_out, force, warmup, min_runs, min_seconds, max_seconds, affinity):
    """Export MODEL and its standard-conv twin (or reuse them in --out), time both in each
    format and precision, and print the latency ratio twin/model beside the MAC and param
    ratios."""
    from pathlib import Path

    from .bench import TimingConfig, bench, compare_rows, export_pair, latest, plan
    from .bench import ResultsFile
    fmts, precs = _csv(formats), _csv(precision)
    mdir, tdir = export_pair(model, out, formats=fmts, precisions=precs, weights=weights,
                             input_size=input_size, force=force, log=lambda m: err_console.print(m))
    results = results or str(Path(out) / "results.jsonl")
    cfg = TimingConfig(warmup, min_runs, min_seconds, max_seconds, affinity)
    with _DeviceProgress() as progress:
        bench([mdir, tdir], _csv(devices), results, inventory=inventory, threads=[int(t) for t in _csv(threads)],
              precisions=precs, formats=fmts, cfg=cfg, force=force, progress=progress)
    wanted = {j.sha256 for j in plan([mdir, tdir], precisions=precs, formats=fmts)}
    recs = [r for r in ResultsFile(results).records() if r.get("sha256") in wanted
            and r["device"]["name"] in _csv(devices)]
    rows = compare_rows(list(latest(recs).values()), mdir, tdir)
    table = Table(title=f"{model}: standard-conv twin vs model")
    for col in ("device", "format", "precision", "runtime", "thr", "model p50 ms", "twin p50 ms",
                "latency ratio", "MAC ratio", "param ratio"):
        table.add_column(col, justify="left" if col in ("device", "format", "precision", "runtime") else "right")
    for r in rows:
        table.add_row(r["device"], r["format"], r["precision"], r["runtime"], str(r["threads"]),
                      _fmt(r["model_p50_ms"]), _fmt(r["twin_p50_ms"]), _fmt(r["latency_ratio"], ".2f"),
                      _fmt(r["mac_ratio"], ".2f"), _fmt(r["param_ratio"], ".2f"))
    console.print(table)
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2))
    failed = [r for r in latest(recs).values() if r.get("status") != "ok"]
    for r in failed:
        err_console.print(f"[red]error[/] {r['device']['name']} {r['artifact']}/{r['file']} {r['runtime']}: {r.get('error')}")
    if failed:
        sys.exit(1)


COMMANDS = [device, bench_cmd, compare]
