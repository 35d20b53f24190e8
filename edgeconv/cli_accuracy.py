"""``edgeconv check`` (fp32 vs int8 accuracy per runtime, per-block localisation) and
``edgeconv train`` (the embedded default: tiny and its twin on the bundled digits).
Registered into the ``edgeconv`` group by ``edgeconv.cli`` through ``COMMANDS``."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click
from rich.table import Table

from .cli import console, err_console


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def device_runner(name: str):
    """The int8 runner for ``--device NAME``: ``edgeconv.device.model_runner(name)`` must return a
    callable ``(model_file: Path, inputs NCHW float32) -> logits``. Transports live in
    ``edgeconv.device``; this is only the hook."""
    try:
        from . import device
        factory = getattr(device, "model_runner")
    except (ImportError, AttributeError):
        raise ValueError(f"--device {name}: this build has no device runner (edgeconv.device.model_runner); "
                         "run without --device to evaluate locally") from None
    return factory(name)


def _print_result(res: dict) -> None:
    d = res["data"]
    cal = d["calibration"]
    table = Table(title=f"accuracy: {res['artifact']} ({res.get('model')}{' twin' if res.get('twin') else ''})")
    for col in ("runtime", "fp32 top-1", "fp32 top-5", "int8 top-1", "int8 top-5",
                "Δ top-1 pts [95% CI]", "agree", "SQNR dB", "ok"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("runtime", "ok") else "right")
    for r in res["rows"]:
        if "error" in r and "delta_top1" not in r:
            f32 = r.get("fp32", {})
            table.add_row(r["runtime"], _pct(f32.get("top1")), _pct(f32.get("top5")), "", "", "", "", "",
                          "[red]FAIL")
            continue
        dt = r["delta_top1"]
        table.add_row(r["runtime"], _pct(r["fp32"]["top1"]), _pct(r["fp32"]["top5"]), _pct(r["int8"]["top1"]),
                      _pct(r["int8"]["top5"]),
                      f"{100 * dt['delta']:+.1f} [{100 * dt['ci_low']:+.1f}, {100 * dt['ci_high']:+.1f}]",
                      f"{100 * r['agreement']:.1f}%", f"{r['sqnr_db']:.1f}",
                      "[green]ok" if r["ok"] else f"[red]drop > {res['max_drop_points']:g}")
    console.print(table)
    console.print(f"evaluation: {d['count']} images from {d['source']} ({d['split']} split"
                  + (f", {d['skipped']} unreadable files skipped" if d["skipped"] else "") + "); "
                  f"calibration: {cal.get('count')} from {cal.get('source')}; {cal['how']}")
    if res.get("quant"):
        from .quantize import QuantConfig
        console.print(f"int8 recipe: {QuantConfig.from_dict(res['quant']).describe()}")
    for r in res["rows"]:
        if "error" in r:
            err_console.print(f"[bold red]error:[/] {r['runtime']}: {r['error']}")


def _print_localize(loc: dict, top: int) -> None:
    table = Table(title=f"per-block int8 error ({loc['count']} calibration samples; {loc['method']})")
    for col in ("rank", "block", "arch", "alone dB", "SQNR dB", "lost here dB"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("block", "arch") else "right")
    for b in loc["blocks"]:
        style = "bold red" if b["rank"] <= min(top, 3) else ""
        table.add_row(str(b["rank"]), b["name"], b["arch"], "" if b.get("alone_db") is None else f"{b['alone_db']:.1f}",
                      f"{b['sqnr_db']:.1f}", "" if b["added_db"] is None else f"{b['added_db']:+.1f}", style=style)
    console.print(table)
    console.print("alone: the block's SQNR fed the fp32 model's input (its own error; the ranking); SQNR: "
                  "accumulated up to the block in the int8 model; lost here: what the block took off it")
    console.print(f"logits: SQNR {loc['logits_sqnr_db']:.1f} dB, top-1 agreement {100 * loc['agreement']:.1f}%; "
                  f"worst blocks: {', '.join(loc['ranked'][:top])}")


def _localize(art, data_source, class_index, ev, keep_fp32, top):
    from .data import load_data
    from .localize import localize, what_if_fp32
    from .quantize import QuantConfig
    from .verify import reference_model
    m = art.manifest
    model = reference_model(art)
    calib = m.get("calibration") or {}
    source = calib.get("source")
    if not (source == "digits" or (source and Path(source).is_dir())):
        source, class_index = data_source, class_index
    with warnings.catch_warnings():
        if Path(str(source)).resolve() == Path(str(data_source)).resolve():  # its skipped files were reported
            warnings.simplefilter("ignore")
        cal = load_data(source, input_shape=tuple(m["input_shape_nchw"][1:]), preprocess=m.get("preprocess"),
                        split="calib", calib_count=int(calib.get("count") or m["quant"]["calib_count"]),
                        labels=m.get("labels"), class_index=calib.get("class_index") or class_index)
    quant = QuantConfig.from_dict(m["quant"])
    loc = localize(model, cal.x, quant=quant)
    _print_localize(loc, top)
    out = {"localize": loc}
    if keep_fp32:
        unknown = [b for b in keep_fp32 if b not in getattr(model, "arch", {})]
        if unknown:
            raise ValueError(f"--keep-fp32: no block named {', '.join(unknown)}")
        w = what_if_fp32(model, cal.x, ev.x, keep_fp32, y=ev.y, quant=quant)
        out["what_if"] = w
        a, k = w["all_int8"], w["keep_fp32"]
        console.print(f"keeping {', '.join(keep_fp32)} in fp32 (PyTorch int8 simulation, {len(ev.x)} eval images): "
                      f"logits SQNR {a['logits_sqnr_db']:.1f} -> {k['logits_sqnr_db']:.1f} dB, agreement "
                      f"{100 * a['agreement']:.1f}% -> {100 * k['agreement']:.1f}%, top-1 {100 * a['top1']:.1f} -> "
                      f"{100 * k['top1']:.1f} (fp32 {100 * w['fp32_top1']:.1f}); export with --keep-fp32 "
                      f"{','.join(keep_fp32)} and check it to measure every runtime")
    return out


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data", required=True, help="Labelled evaluation data: digits (bundled) or an image folder "
                                            "(a sub-folder per class, or ImageNet-style with --class-index).")
@click.option("--class-index", type=click.Path(dir_okay=False),
              help="For ImageNet-style <wnid>_*.JPEG folders: a file of wnids, one per line.")
@click.option("--max-drop", default=1.0, show_default=True, type=float,
              help="Fail (exit 1) when int8 top-1 is more than this many points below fp32 in any runtime.")
@click.option("--limit", type=int, help="Evaluate at most this many images.")
@click.option("--formats", default="", help="Only these formats (comma-separated), default all in the artifact.")
@click.option("--localize", "do_localize", is_flag=True,
              help="Also rank the blocks by the int8 error they add (PyTorch PT2E simulation).")
@click.option("--keep-fp32", default="", help="With --localize: show what keeping these blocks in fp32 recovers.")
@click.option("--top", default=5, show_default=True, help="Blocks to name as the worst.")
@click.option("--device", help="Run the int8 files on this device (edgeconv.device runner).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of tables.")
def check(artifacts, data, class_index, max_drop, limit, formats, do_localize, keep_fp32, top, device, as_json):
    """fp32 vs int8 accuracy of every runtime in ARTIFACTS on labelled data.

    \b
    Per runtime (each format's fp32 and int8 file): top-1/top-5 of both, the int8 - fp32 top-1
    difference with a 95% interval from the paired per-image results, top-1 agreement and logit
    SQNR. Writes accuracy.json into each artifact folder; exits 1 when a runtime fails or drops
    more than --max-drop points (a CI gate). Data that calibrated the artifact is left out.

    \b
    Examples:
      edgeconv check artifacts/tiny --data digits
      edgeconv check artifacts/lite0 --data ~/imagenet-val --class-index classes.txt --localize
    """
    from .accuracy import check_artifact, eval_data
    from .export import Artifact
    int8_runner = device_runner(device) if device else None
    ok = True
    outputs = []
    for path in artifacts:
        art = Artifact.load(path)
        ev = eval_data(art, data, class_index, limit)
        fmts = [f.strip() for f in formats.split(",") if f.strip()] or None
        res = check_artifact(art, ev, max_drop=max_drop, int8_runner=int8_runner, formats=fmts, write=False)
        if device:
            res["int8_device"] = device
        if do_localize:
            res.update(_localize(art, data, class_index, ev, tuple(b for b in keep_fp32.split(",") if b), top))
        from .accuracy import _jsonable
        from .export import write_json_atomic
        write_json_atomic(art.path / "accuracy.json", _jsonable(res))
        ok &= res["ok"]
        outputs.append(res)
        if not as_json:
            _print_result(res)
            console.print(f"wrote {art.path / 'accuracy.json'}")
    if as_json:
        from .accuracy import _jsonable
        click.echo(json.dumps(_jsonable(outputs if len(outputs) > 1 else outputs[0]), indent=2))
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("model")
@click.option("--twin", is_flag=True, help="Train the standard-conv twin instead.")
@click.option("--data", default="digits", show_default=True, help="Training data (the bundled digits).")
@click.option("--epochs", default=None, type=int, help="Epochs [default: the recipe's].")
@click.option("--threads", type=int, help="torch threads [default: all cores].")
@click.option("--out", type=click.Path(dir_okay=False), help="Checkpoint [default: runs/MODEL[_twin].pt].")
def train(model, twin, data, epochs, threads, out):
    """Train MODEL (the tiny zoo model, or its --twin) on the bundled digits on CPU.

    \b
    Saves a checkpoint (state_dict + spec + metrics) and a metrics JSON beside it, and prints
    the fp32 accuracy on the 500 held-out digits. Then:
      edgeconv export tiny --weights runs/tiny.pt --calib digits --out artifacts/tiny
      edgeconv check artifacts/tiny --data digits
    """
    from dataclasses import replace

    from .train import TrainConfig, train as do_train
    from .zoo import create_model
    net = create_model(model, twin=twin)
    cfg = TrainConfig()
    if epochs is not None:
        if epochs < 1:
            raise click.BadParameter("--epochs must be at least 1")
        cfg = replace(cfg, epochs=epochs)
    if threads:
        cfg = replace(cfg, threads=threads)
    out = out or f"runs/{net.spec.name}{'_twin' if twin else ''}.pt"
    metrics = do_train(net, data, cfg, out=out, log=lambda s: err_console.print(s))
    console.print(f"{net.spec.name}{' (twin)' if twin else ''}: fp32 top-1 {100 * metrics['fp32_top1']:.1f}% on the "
                  f"{metrics['eval_count']} held-out digits (train {100 * metrics['train_top1']:.1f}%), "
                  f"{metrics['seconds']:.0f} s on {metrics['threads']} thread(s); wrote {out}")


COMMANDS = [check, train]
