"""``edgeconv export`` and ``edgeconv verify``: artifact folders and their parity matrix."""
from __future__ import annotations

import json
import sys
import warnings

import click
from rich.table import Table

from ..artifact import FORMATS, PRECISIONS
from ..cost import human
from ..exporters import PARALLEL_MIN_LAYERS
from .common import Progress, console, csv_option, err_console, model_options, positive, with_model_help


@click.command()
@click.argument("model")
@model_options
@click.option("--formats", default=",".join(FORMATS), show_default=True,
              help=f"Comma-separated: {', '.join(FORMATS)}.")
@click.option("--precision", default=",".join(PRECISIONS), show_default=True, help="Comma-separated: fp32, int8.")
@click.option("--calib", default="digits", show_default=True,
              help="Calibration data for int8: digits (bundled), an image folder, a .npy of inputs, "
                   "or random (noise; only for smoke tests).")
@click.option("--calib-count", default=64, show_default=True, callback=positive("calib-count", 1),
              help="Calibration samples.")
@click.option("--class-index", type=click.Path(dir_okay=False),
              help="For ImageNet-style folders: a file of wnids, one per line (line number = label).")
@click.option("--calib-method", default="percentile", show_default=True,
              type=click.Choice(["minmax", "percentile"]),
              help="ONNX Runtime activation ranges: min-max, or the 99.999th percentile of a histogram.")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Correct each conv's bias for the mean shift int8 leaves in its output, measured on "
                   "the calibration data (every format).")
@click.option("--keep-fp32", default="", help="Modules to leave in fp32, e.g. blocks.3,head.0 (module paths).")
@click.option("--channels-last", is_flag=True, help="TFLite: take NHWC input (camera frames).")
@click.option("--int8-io", is_flag=True, help="TFLite int8: int8 input/output tensors (scale and zero point "
                                              "in the manifest).")
@click.option("--out", type=click.Path(file_okay=False), help="Artifact folder [default: artifacts/MODEL].")
@click.option("--force", is_flag=True, help="Replace an earlier export in --out (only the files edgeconv wrote).")
@click.option("--workers", type=int, callback=positive("workers", 1),
              help="Files exported at once, each in a process of its own (the files are the same) "
                   f"[default: one per core for models of {PARALLEL_MIN_LAYERS} or more conv/linear layers, "
                   "else 1].")
@click.option("--android", "android_dir", type=click.Path(file_okay=False),
              help="Also install the TFLite model into this android_demo app folder.")
def export(model, twin, weights, pretrained, width, input_size, formats, precision, calib, calib_count,
           class_index, calib_method, bias_correction, keep_fp32, channels_last, int8_io, out, force,
           workers, android_dir):
    """Quantize and export MODEL to ONNX, TFLite and ExecuTorch (XNNPACK).

    \b
    Writes one artifact folder: model_<precision>.<onnx|tflite|pte>, labels.txt, the eager
    reference (for `verify`: a state dict, never a pickle of code) and manifest.json (I/O names,
    shapes, layouts, dtypes, int8 scale/zero point, preprocessing, labels, params, MACs,
    exporter versions, sha256 of every file, and which ops run in int8). Running the same
    export again fills in what an interrupted one did not write.

    \b
    Examples:
      edgeconv export tiny --weights runs/tiny.pt --calib digits
      edgeconv export efficientnet_lite0 --pretrained --calib ~/photos --out artifacts/lite0
      edgeconv export my_card.toml --calib ~/photos
      edgeconv export tiny --formats tflite --precision int8 --channels-last --int8-io --android android_demo
    """
    from ..data import calibration
    from ..exporters import ExportIO, export as do_export
    from ..quantize import QuantRecipe
    fmts = csv_option(formats, tuple(FORMATS), "--formats")
    precs = csv_option(precision, PRECISIONS, "--precision")
    if android_dir:
        from ..android import check_app
        if "tflite" not in fmts:
            raise click.BadParameter("--android installs the TFLite file: add tflite to --formats")
        check_app(android_dir)
    recipe = QuantRecipe(method=calib_method, calib_count=calib_count, bias_correction=bias_correction,
                         keep_fp32=tuple(b for b in keep_fp32.split(",") if b))
    from .common import build_model
    net = build_model(model, twin, weights, pretrained, width, input_size)
    if hasattr(net, "spec") and not (weights or pretrained):
        warnings.warn(f"{net.card.name}{' (twin)' if twin else ''} has random weights: the files will run but "
                      "predict nothing. Load real ones with --weights CHECKPOINT (e.g. from `edgeconv train "
                      f"{model}`)" + (" or --pretrained" if net.spec.pretrained and not twin else ""), stacklevel=1)
    out = out or f"artifacts/{net.card.name}{'_twin' if twin else ''}"
    calib_x, calib_info = None, None
    if "int8" in precs:
        ds = calibration(calib, net, calib_count, class_index)
        calib_x, calib_info = ds.x, ds.describe()
        err_console.print(f"calibration: {len(ds)} samples from {ds.source}"
                          + (f" ({len(ds.skipped)} unreadable files skipped)" if ds.skipped else ""))
    with Progress("export ") as bar:
        art = do_export(net, formats=fmts, precisions=precs, calib=calib_x, recipe=recipe,
                        io=ExportIO(channels_last=channels_last, int8_io=int8_io), out=out, force=force,
                        calib_info=calib_info, progress=bar, log=lambda m: err_console.print(m), workers=workers)
    print_artifact(art)
    if android_dir:
        from ..android import install
        installed = install(art.path, android_dir)
        console.print(f"installed into the app: {installed}")
    if art.errors:
        for e in art.errors:
            err_console.print(f"[bold red]error:[/] {e['format']} {e['precision']}: {e['message']}")
        err_console.print(f"[yellow]partial result:[/] {len(art.files)} file(s) exported to {art.path}, "
                          f"{len(art.errors)} failed")
        sys.exit(1)


with_model_help(export)


def print_artifact(art):
    table = Table(title=f"artifact {art.path}")
    for col in ("file", "input", "size", "int8 ops", "convs int8", "not int8", "export s"):
        table.add_column(col, no_wrap=col != "not int8")
    for name, e in art.files.items():
        r = e.int8_report or {}
        io = f"{e.input.layout or ''} {e.input.dtype}".strip()
        table.add_row(name, io, human(e.bytes, "B"),
                      f"{r['ops_int8']}/{r['ops']}" if r else "-",
                      f"{r.get('convs_int8', '-')}/{r.get('convs', '-')}" if r else "-",
                      ", ".join(f"{k} x{v}" for k, v in r.get("float_ops", {}).items()) if r else "",
                      f"{e.export_seconds:.1f}")
    console.print(table)


@click.command()
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--count", default=32, show_default=True, callback=positive("count", 1),
              help="Inputs to run (held-out samples of the calibration source).")
@click.option("--fp32-rtol", default=1e-4, show_default=True, callback=positive("fp32-rtol"),
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
    top-1 agreement); int8 files against each other. Exits 1 when a threshold is broken, a
    file cannot be loaded or is not the file that was exported, or the export did not finish;
    writes verify.json into the folder.
    """
    from ..parity import Thresholds, verify as do_verify
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
            table.add_row(r["file"], vs, f"{r['max_abs']:.2e}" if "max_abs" in r else "",
                          f"{r['max_rel']:.2e}" if "max_rel" in r else "",
                          f"{r['sqnr_db']:.1f}" if isinstance(r.get("sqnr_db"), float) else str(r.get("sqnr_db", "")),
                          f"{100 * r['agreement']:.1f}%" if "agreement" in r else "",
                          "[green]ok" if r["ok"] else "[red]FAIL")
        for p in res["int8_pairs"]:
            sq = p["sqnr_db"]
            table.add_row(p["a"], p["b"], "", "", f"{sq:.1f}" if isinstance(sq, float) else str(sq),
                          f"{100 * p['agreement']:.1f}%", "")
        console.print(table)
        for r in res["rows"]:
            if "error" in r:
                err_console.print(f"[bold red]error:[/] {r['error']}", highlight=False)
        for e in res["export_errors"]:
            err_console.print(f"[bold red]export error:[/] {e}", highlight=False)
    sys.exit(0 if res["ok"] else 1)


COMMANDS = [export, verify]
