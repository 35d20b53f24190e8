"""The ``edgeconv`` command. Each verb is one stage of the flow and one Python function."""
from __future__ import annotations

import json
import os
import sys
import warnings

# The exporters' native libraries log to stderr at import; keep the terminal for our output.
for _var, _val in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GLOG_minloglevel", "2"),
                   ("LITERT_TORCH_SHOW_PROGRESS", "n")):
    os.environ.setdefault(_var, _val)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import click
from rich.console import Console
from rich.table import Table

from .cost import human

# Wide tables when piped to a file or CI log, the terminal's width otherwise.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """edgeconv's own warnings as one line on stderr, without Python's echo of the source line."""
    if os.path.abspath(filename).startswith(_PACKAGE):
        err_console.print(f"[yellow]warning:[/] {message}")
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


warnings.showwarning = _show_warning


def _fail(message: str, code: int = 2):
    err_console.print(f"[bold red]error:[/] {message}")
    sys.exit(code)


class Group(click.Group):
    """Turns the library's ValueError / FileNotFoundError / FileExistsError into a one-line
    error with a non-zero exit, instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            _fail(str(e))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="edgeconv")
def main():
    """Depthwise-separable conv nets, from spec to phone.

    \b
    The flow, one verb a stage (`edgeconv run` chains them on the embedded default):
      edgeconv models                        the zoo, with params and MACs
      edgeconv info mobilenet_v2 --twin      per-block cost table, model vs its standard-conv twin
      edgeconv train tiny --out tiny.pt      train on the bundled digits
      edgeconv export tiny --weights tiny.pt int8 + fp32 to ONNX, TFLite, ExecuTorch (artifact folder)
      edgeconv verify artifacts/tiny         parity matrix across runtimes
      edgeconv check artifacts/tiny --data digits   fp32 vs int8 accuracy per runtime
      edgeconv bench artifacts/tiny --device local,qemu-arm64   latency -> results.jsonl
      edgeconv compare mobilenet_v2          latency of model vs its standard-conv twin
      edgeconv run                           all of it, with a report (runs/default/report.html)
    """


def _overrides(width, input_size):
    return {k: v for k, v in (("width", width), ("input_size", input_size)) if v is not None}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json):
    """List the zoo models with their params and MACs (and their standard-conv twins')."""
    from .zoo import create_model, list_models, load_spec
    rows = []
    for name in list_models():
        spec = load_spec(name)
        c, t = create_model(name).cost(), create_model(name, twin=True).cost()
        rows.append({"name": name, "input_size": spec.input_size, "params": c.params, "macs": c.macs,
                     "twin_params": t.params, "twin_macs": t.macs,
                     "description": spec.description.split(":")[0].split(" (")[0]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="edgeconv zoo")
    for col in ("model", "input", "params", "MACs", "twin params", "twin MACs", "twin/model MACs"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], f"{r['input_size']}", human(r["params"]), human(r["macs"]),
                      human(r["twin_params"]), human(r["twin_macs"]), f"{r['twin_macs'] / r['macs']:.1f}x")
    console.print(table)


@main.command()
@click.argument("model")
@click.option("--twin", is_flag=True, help="Show the standard-conv twin's blocks instead.")
@click.option("--width", type=float, help="Width multiplier (channel scale), e.g. 0.5.")
@click.option("--input-size", type=int, help="Input resolution, e.g. 160.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def info(model, twin, width, input_size, as_json):
    """Per-block cost table of MODEL (a zoo name or a spec .toml) and totals beside its twin's.

    \b
    Example:
      edgeconv info mobilenet_v1 --width 0.5 --input-size 160
    """
    from .zoo import create_model
    ov = _overrides(width, input_size)
    net = create_model(model, **ov)
    twin_net = create_model(model, twin=True, **ov)
    cost, twin_cost = net.cost(), twin_net.cost()
    shown = twin_cost if twin else cost
    if as_json:
        click.echo(json.dumps({"model": net.spec.name, "spec": net.spec.to_dict(), "cost": cost.to_dict(),
                               "twin_cost": twin_cost.to_dict(),
                               "mac_ratio": twin_cost.macs / cost.macs,
                               "param_ratio": twin_cost.params / cost.params}, indent=2))
        return
    title = f"{net.spec.name}{' (standard-conv twin)' if twin else ''} @ {shown.input_shape}"
    table = Table(title=title)
    for col in ("block", "kind", "arch", "output", "params", "MACs", "MAC share"):
        table.add_column(col, justify="right" if col in ("params", "MACs", "MAC share") else "left",
                         no_wrap=True)
    for r in shown.rows:
        table.add_row(r.name, r.kind, r.arch, "x".join(map(str, r.cost.out_shape)),
                      f"{r.cost.params:,}", f"{r.cost.macs:,}", f"{100 * r.cost.macs / shown.macs:.1f}%")
    console.print(table)
    totals = Table(title="totals")
    for col in ("", "params", "MACs", "activations (fp32)"):
        totals.add_column(col, justify="right")
    totals.add_row("model", f"{cost.params:,}", f"{cost.macs:,}", human(cost.act_bytes, "B"))
    totals.add_row("standard-conv twin", f"{twin_cost.params:,}", f"{twin_cost.macs:,}",
                   human(twin_cost.act_bytes, "B"))
    totals.add_row("twin / model", f"{twin_cost.params / cost.params:.2f}x",
                   f"{twin_cost.macs / cost.macs:.2f}x", "")
    console.print(totals)


def _csv(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise click.BadParameter(f"{', '.join(bad) or value!r}: {what} must be a comma-separated list of "
                                 f"{', '.join(allowed)}")
    return items


def build(model, twin=False, weights=None, pretrained=False, width=None, input_size=None):
    """The model a command works on: a zoo name or spec file, optionally its twin, with
    weights from a checkpoint or the spec's pretrained source."""
    from .zoo import create_model, load_weights
    net = create_model(model, twin=twin, pretrained=pretrained, **_overrides(width, input_size))
    if weights:
        load_weights(net, weights)
    return net


def model_options(f):
    for opt in reversed([
        click.option("--twin", is_flag=True, help="Use the standard-conv twin instead of the model."),
        click.option("--weights", type=click.Path(dir_okay=False),
                     help="Checkpoint (state dict) to load, e.g. from `edgeconv train`."),
        click.option("--pretrained", is_flag=True, help="Load the spec's pretrained weights (efficientnet_lite0)."),
        click.option("--width", type=float, help="Width multiplier."),
        click.option("--input-size", type=int, help="Input resolution."),
    ]):
        f = opt(f)
    return f


class _Progress:
    """A rich progress bar fed by (done, total, label) callbacks."""

    def __init__(self, title: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        self.progress = Progress(TextColumn(f"{title} [bold]{{task.description}}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=err_console, transient=False)
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, done, total, label):
        if self.task is None:
            self.task = self.progress.add_task(label, total=total)
        self.progress.update(self.task, completed=done, description=label)


@main.command()
@click.argument("model")
@model_options
@click.option("--formats", default="onnx,tflite,executorch", show_default=True,
              help="Comma-separated: onnx, tflite, executorch.")
@click.option("--precision", default="fp32,int8", show_default=True, help="Comma-separated: fp32, int8.")
@click.option("--calib", default="digits", show_default=True,
              help="Calibration data for int8: digits (bundled), an image folder, a .npy of inputs, "
                   "or random (noise; only for smoke tests).")
@click.option("--calib-count", default=64, show_default=True, help="Calibration samples.")
@click.option("--class-index", type=click.Path(dir_okay=False),
              help="For ImageNet-style folders: a file of wnids, one per line (line number = label).")
@click.option("--calib-method", default="percentile", show_default=True,
              type=click.Choice(["minmax", "percentile"]),
              help="ONNX Runtime activation ranges: min-max, or the 99.999th percentile of a histogram.")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Correct each conv's bias for the mean shift int8 leaves in its output, measured on "
                   "the calibration data (every format).")
@click.option("--keep-fp32", default="", help="Blocks to leave in fp32, e.g. blocks.3,head.0.")
@click.option("--channels-last", is_flag=True, help="TFLite: take NHWC input (camera frames).")
@click.option("--int8-io", is_flag=True, help="TFLite int8: int8 input/output tensors (scale and zero point "
                                              "in the manifest).")
@click.option("--out", type=click.Path(file_okay=False), help="Artifact folder [default: artifacts/MODEL].")
@click.option("--force", is_flag=True, help="Overwrite an existing output folder.")
@click.option("--android", "android_dir", type=click.Path(file_okay=False),
              help="Also install the TFLite model into this android_demo app folder.")
def export(model, twin, weights, pretrained, width, input_size, formats, precision, calib, calib_count,
           class_index, calib_method, bias_correction, keep_fp32, channels_last, int8_io, out, force,
           android_dir):
    """Quantize and export MODEL to ONNX, TFLite and ExecuTorch (XNNPACK).

    \b
    Writes one artifact folder: model_<precision>.<onnx|tflite|pte>, labels.txt, reference.pt
    (the eager model, for `verify`) and manifest.json (I/O names, shapes, layouts, dtypes,
    int8 scale/zero point, preprocessing, labels, arch, params, MACs, exporter versions,
    sha256 of every file, and which ops run in int8).

    \b
    Examples:
      edgeconv export tiny --weights runs/demo/tiny.pt --calib digits
      edgeconv export efficientnet_lite0 --pretrained --calib ~/photos --out artifacts/lite0
      edgeconv export tiny --formats tflite --precision int8 --channels-last --int8-io --android android_demo
    """
    from .data import load_data
    from .export import export as do_export, formats as known_formats, refuse_existing
    from .quantize import QuantConfig
    fmts = _csv(formats, known_formats(), "--formats")
    precs = _csv(precision, ["fp32", "int8"], "--precision")
    net = build(model, twin, weights, pretrained, width, input_size)
    out = out or f"artifacts/{net.spec.name}{'_twin' if twin else ''}"
    refuse_existing(out, force)  # before calibration data is loaded
    quant = QuantConfig(method=calib_method, calib_count=calib_count, bias_correction=bias_correction,
                        keep_fp32=tuple(b for b in keep_fp32.split(",") if b),
                        channels_last=channels_last, int8_io=int8_io)
    unknown = [b for b in quant.keep_fp32 if b not in net.arch]
    if unknown:
        raise ValueError(f"--keep-fp32: no block named {', '.join(unknown)}; blocks: "
                         f"{', '.join(list(net.arch)[:6])} ... (see `edgeconv info {model}`)")
    calib_x, calib_info = None, None
    if "int8" in precs:
        ds = load_data(calib, input_shape=net.input_shape, preprocess=net.spec.preprocess, split="calib",
                       calib_count=calib_count, labels=None, class_index=class_index)
        calib_x = ds.x
        calib_info = {**ds.describe(), "class_index": class_index}
        err_console.print(f"calibration: {len(ds)} samples from {ds.source}"
                          + (f" ({len(ds.skipped)} unreadable files skipped)" if ds.skipped else ""))
    with _Progress("export") as bar:
        art = do_export(net, formats=fmts, precisions=precs, calib=calib_x, quant=quant, out=out,
                        force=force, calib_info=calib_info, progress=bar)
    _print_artifact(art)
    if android_dir:
        from .android import install
        installed = install(art.path, android_dir)
        console.print(f"installed into the app: {installed}")
    if art.errors:
        for e in art.errors:
            err_console.print(f"[bold red]error:[/] {e['format']} {e['precision']}: {e['message']}")
        err_console.print(f"[yellow]partial result:[/] {len(art.files)} file(s) exported to {art.path}, "
                          f"{len(art.errors)} failed")
        sys.exit(1)


def _print_artifact(art):
    table = Table(title=f"artifact {art.path}")
    for col in ("file", "input", "size", "int8 ops", "convs int8", "not int8", "export s"):
        table.add_column(col, no_wrap=col != "not int8")
    for name, e in art.files.items():
        r = e.get("int8_report") or {}
        inp = e["input"]
        io = f"{inp.get('layout') or ''} {inp['dtype']}".strip()
        table.add_row(name, io, human(e["bytes"], "B"),
                      f"{r['ops_int8']}/{r['ops']}" if r else "-",
                      f"{r.get('convs_int8', '-')}/{r.get('convs', '-')}" if r else "-",
                      ", ".join(f"{k} x{v}" for k, v in r.get("float_ops", {}).items()) if r else "",
                      f"{e.get('export_seconds', 0):.1f}")
    console.print(table)


@main.command()
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--count", default=32, show_default=True, help="Inputs to run (held-out samples of the "
                                                              "calibration source).")
@click.option("--fp32-rtol", default=1e-4, show_default=True,
              help="fp32 files: max |error| / max |reference| allowed.")
@click.option("--min-sqnr", default=15.0, show_default=True,
              help="int8 files: logit SQNR vs fp32 eager, dB (the pretrained EfficientNet-Lite0 gives "
                   "~19.5 dB at under 1.5 points of top-1).")
@click.option("--min-agreement", default=0.9, show_default=True, help="int8 files: top-1 agreement with fp32.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(artifact, count, fp32_rtol, min_sqnr, min_agreement, as_json):
    """Run every file of an ARTIFACT folder on the same inputs: the parity matrix.

    \b
    fp32 files vs PyTorch eager (max abs / relative error); int8 files vs fp32 eager (SQNR,
    top-1 agreement); int8 files against each other. Exits 1 when a threshold is broken or a
    file cannot be loaded; writes verify.json into the folder.
    """
    from .verify import Thresholds, verify as do_verify
    res = do_verify(artifact, Thresholds(fp32_rtol, min_sqnr, min_agreement), count)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        table = Table(title=f"parity: {artifact} on {res['inputs']}")
        for col in ("file", "vs", "max abs", "max rel", "SQNR dB", "top-1 agree", "ok"):
            table.add_column(col, no_wrap=True)
        for r in res["rows"]:
            vs = "eager fp32"
            if "error" in r:
                table.add_row(r["file"], vs, "", "", "", "", "[red]FAIL")
                continue
            table.add_row(r["file"], vs, f"{r.get('max_abs', float('nan')):.2e}" if "max_abs" in r else "",
                          f"{r['max_rel']:.2e}" if "max_rel" in r else "",
                          f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else "",
                          f"{100 * r['agreement']:.1f}%" if "agreement" in r else "",
                          "[green]ok" if r["ok"] else "[red]FAIL")
        for p in res["int8_pairs"]:
            table.add_row(p["a"], p["b"], "", "", f"{p['sqnr_db']:.1f}", f"{100 * p['agreement']:.1f}%", "")
        console.print(table)
        for r in res["rows"]:
            if "error" in r:
                err_console.print(f"[bold red]error:[/] {r['error']}")
        for e in res["export_errors"]:
            err_console.print(f"[bold red]export error:[/] {e}")
    sys.exit(0 if res["ok"] else 1)


@main.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--out", default="runs/default", show_default=True, type=click.Path(file_okay=False),
              help="Run folder; running again resumes where the last run stopped.")
@click.option("--force", is_flag=True, help="Start over: delete the run folder's earlier results.")
def run_cmd(config, out, force):
    """The main job: model and twin -> train -> export -> verify -> check -> bench -> report.

    \b
    Without CONFIG it runs the embedded default: the tiny model and its standard-conv twin,
    trained on scikit-learn's bundled digits, exported to all three formats in fp32 and int8,
    checked for accuracy on held-out digits and benchmarked on this host. CONFIG is a TOML
    file (see configs/): model, data, formats, precisions, devices, threads, runs...

    \b
    Examples:
      edgeconv run                                  # the embedded default, into runs/default
      edgeconv run configs/lite0_pi.toml --out runs/lite0
    """
    import time
    from .cli_device import _DeviceProgress
    from .run import run
    t0 = time.perf_counter()
    with _DeviceProgress() as bar:
        report = run(config, out, force=force, log=lambda m: err_console.print(m, markup=False), progress=bar)
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s; report: {report}")


@main.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report_cmd(run_dir):
    """Rebuild report.html, report.md and the plots of RUN_DIR from its files."""
    from .report import write_report
    paths = write_report(run_dir)
    console.print(f"report: {paths['html']} (+ report.md, {len(paths['plots'])} plots)")


def _add_commands() -> None:
    from .cli_accuracy import COMMANDS as accuracy_commands
    from .cli_device import COMMANDS as device_commands
    for cmd in (*accuracy_commands, *device_commands):
        main.add_command(cmd)


_add_commands()

if __name__ == "__main__":
    main()
