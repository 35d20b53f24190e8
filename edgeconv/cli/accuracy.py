"""``edgeconv check`` (fp32 vs int8 accuracy per runtime, on this host and on a device, and the
per-block localisation) and ``edgeconv train`` (the embedded default on the bundled digits)."""
from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from ..artifact import FORMATS
from .common import console, csv_option, err_console, inventory_option, positive


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def _db(v) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else str(v)


def _delta(dt: dict) -> str:
    return f"{100 * dt['delta']:+.1f} [{100 * dt['ci_low']:+.1f}, {100 * dt['ci_high']:+.1f}]"


def print_result(res: dict) -> None:
    d = res["data"]
    cal = d["calibration"]
    dev = res.get("device")
    table = Table(title=f"accuracy: {res['artifact']} ({res.get('model')}{' twin' if res.get('twin') else ''})"
                        + (f": int8 on this host and on {dev}" if dev else ""))
    cols = ["runtime", "fp32 top-1", "int8 top-1", "Δ top-1 pts [95% CI]", "agree", "SQNR dB"]
    if dev:
        cols = ["runtime", "fp32 top-1", "int8 top-1", "agree", "SQNR dB", f"{dev} int8 top-1",
                f"{dev} agree (host int8)", f"{dev} SQNR dB (host int8)"]
    else:
        cols[2:2] = ["fp32 top-5"]
        cols[4:4] = ["int8 top-5"]
    cols.append("ok")
    for col in cols:
        table.add_column(col, no_wrap=True, justify="left" if col in ("runtime", "ok") else "right")
    for r in res["rows"]:
        if "error" in r and "delta_top1" not in r:
            f32 = r.get("fp32", {})
            table.add_row(r["runtime"], _pct(f32.get("top1")), *[""] * (len(cols) - 3), "[red]FAIL")
            continue
        ok = "[green]ok" if r["ok"] else f"[red]drop > {res['max_drop_points']:g}"
        if dev:
            dv = r.get("device") or {}
            extra = [_pct(dv.get("int8", {}).get("top1")),
                     f"{100 * dv['agreement_with_host_int8']:.1f}%" if "agreement_with_host_int8" in dv else "",
                     _db(dv.get("sqnr_db_vs_host_int8", ""))]
            table.add_row(r["runtime"], _pct(r["fp32"]["top1"]), _pct(r["int8"]["top1"]),
                          f"{100 * r['agreement']:.1f}%", _db(r["sqnr_db"]), *extra, ok)
        else:
            table.add_row(r["runtime"], _pct(r["fp32"]["top1"]), _pct(r["fp32"]["top5"]), _pct(r["int8"]["top1"]),
                          _pct(r["int8"]["top5"]), _delta(r["delta_top1"]), f"{100 * r['agreement']:.1f}%",
                          _db(r["sqnr_db"]), ok)
    console.print(table)
    console.print(f"evaluation: {d['count']} images from {d['source']}"
                  + (f" ({d['skipped']} unreadable files skipped)" if d["skipped"] else "") + "; "
                  f"calibration: {cal.get('count')} from {cal.get('source')}; {cal['how']}", highlight=False)
    if res.get("quant"):
        from ..quantize import QuantRecipe
        console.print(f"int8 recipe: {QuantRecipe.from_dict(res['quant']).describe()}", highlight=False)
    for r in res["rows"]:
        if "error" in r:
            err_console.print(f"[bold red]error:[/] {r['runtime']}: {r['error']}", highlight=False)


def print_localize(loc: dict, top: int) -> None:
    table = Table(title=f"per-block int8 error ({loc['count']} calibration samples; {loc['method']})")
    for col in ("rank", "block", "arch", "alone dB", "SQNR dB", "lost here dB"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("block", "arch") else "right")
    for b in loc["blocks"]:
        style = "bold red" if b["rank"] <= min(top, 3) else ""
        table.add_row(str(b["rank"]), b["name"], b["arch"], "" if b.get("alone_db") is None else _db(b["alone_db"]),
                      _db(b["sqnr_db"]), "" if b["added_db"] is None else f"{b['added_db']:+.1f}", style=style)
    console.print(table)
    console.print("alone: the block's SQNR fed the fp32 model's input (its own error; the ranking); SQNR: "
                  "accumulated up to the block in the int8 model; lost here: what the block took off it")
    console.print(f"logits: SQNR {_db(loc['logits_sqnr_db'])} dB, top-1 agreement {100 * loc['agreement']:.1f}%; "
                  f"worst blocks: {', '.join(loc['ranked'][:top])}")


def print_what_if(w: dict, count: int) -> None:
    a, k = w["all_int8"], w["keep_fp32"]
    keep = ", ".join(k["keep_fp32"])
    console.print(f"keeping {keep} in fp32 (PyTorch int8 simulation, {count} eval images): logits SQNR "
                  f"{_db(a['logits_sqnr_db'])} -> {_db(k['logits_sqnr_db'])} dB, agreement "
                  f"{100 * a['agreement']:.1f}% -> {100 * k['agreement']:.1f}%, top-1 {100 * a['top1']:.1f} -> "
                  f"{100 * k['top1']:.1f} (fp32 {100 * w['fp32_top1']:.1f}); export with --keep-fp32 "
                  f"{','.join(k['keep_fp32'])} and check it to measure every runtime")


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data", required=True, help="Labelled evaluation data: digits (bundled) or an image folder "
                                            "(a sub-folder per class, or ImageNet-style with --class-index).")
@click.option("--class-index", type=click.Path(dir_okay=False),
              help="For ImageNet-style <wnid>_*.JPEG folders: a file of wnids, one per line.")
@click.option("--max-drop", default=1.0, show_default=True, type=float, callback=positive("max-drop", -100),
              help="Fail (exit 1) when int8 top-1 is more than this many points below fp32 in any runtime.")
@click.option("--limit", type=int, callback=positive("limit", 1), help="Evaluate at most this many images.")
@click.option("--formats", default="", help="Only these formats (comma-separated), default all in the artifact.")
@click.option("--localize", "do_localize", is_flag=True,
              help="Also rank the blocks by the int8 error they add (PyTorch PT2E simulation).")
@click.option("--keep-fp32", default="", help="With --localize: show what keeping these modules in fp32 recovers.")
@click.option("--depth", default=1, show_default=True, callback=positive("depth", 1),
              help="With --localize, for your own models: rank the modules this many levels down.")
@click.option("--top", default=5, show_default=True, callback=positive("top", 1), help="Blocks to name as the worst.")
@click.option("--device", help="Also run the int8 files on this device, beside this host's (see `edgeconv device`).")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of tables.")
def check(artifacts, data, class_index, max_drop, limit, formats, do_localize, keep_fp32, depth, top, device,
          inventory, as_json):
    """fp32 vs int8 accuracy of every runtime in ARTIFACTS on labelled data.

    \b
    Per runtime (each format's fp32 and int8 file): top-1/top-5 of both, the int8 - fp32 top-1
    difference with a 95% interval from the paired per-image results, top-1 agreement and logit
    SQNR. With --device the int8 files also run on that device's own kernels, shown beside this
    host's (agreement and SQNR between the two). Writes accuracy.json into each artifact folder;
    exits 1 when a runtime fails or drops more than --max-drop points (a CI gate). Images that
    calibrated the artifact are left out, recognised by their content.

    \b
    Examples:
      edgeconv check artifacts/tiny --data digits
      edgeconv check artifacts/tiny --data digits --device qemu-arm64
      edgeconv check artifacts/lite0 --data ~/imagenet-val --class-index classes.txt --localize
    """
    from ..accuracy import check as do_check
    fmts = csv_option(formats, tuple(FORMATS), "--formats", required=False) or None
    keep = tuple(b for b in keep_fp32.split(",") if b)
    if keep and not do_localize:
        raise click.BadParameter("--keep-fp32 goes with --localize (it shows what keeping those modules in fp32 "
                                 "recovers)")
    from ..artifact import Artifact
    arts = [Artifact.load(path) for path in artifacts]  # every folder judged before any is checked
    for art in arts:
        art.require_complete()
    ok, outputs = True, []
    for path in arts:
        res = do_check(path, data, class_index=class_index, max_drop=max_drop, limit=limit, formats=fmts,
                       device=device, inventory=inventory, localize=do_localize, keep_fp32=keep, depth=depth)
        ok &= res["ok"]
        outputs.append(res)
        if not as_json:
            print_result(res)
            if "localize" in res:
                print_localize(res["localize"], top)
            if "what_if" in res:
                print_what_if(res["what_if"], res["data"]["count"])
            if res["saved"]:
                console.print(f"wrote {res['artifact']}/accuracy.json", highlight=False)
    if as_json:
        click.echo(json.dumps(outputs if len(outputs) > 1 else outputs[0], indent=2))
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("model")
@click.option("--twin", is_flag=True, help="Train the standard-conv twin instead.")
@click.option("--data", default="digits", show_default=True, help="Training data (the bundled digits).")
@click.option("--epochs", default=None, type=int, callback=positive("epochs", 1), help="Epochs [default: the recipe's].")
@click.option("--threads", type=int, callback=positive("threads", 1), help="torch threads [default: all cores].")
@click.option("--out", type=click.Path(dir_okay=False), help="Checkpoint [default: runs/MODEL[_twin].pt].")
def train(model, twin, data, epochs, threads, out):
    """Train MODEL (the tiny zoo model, a card model with 10 classes, or its --twin) on the bundled
    digits on CPU.

    \b
    Saves a checkpoint (state_dict + spec + metrics) and a metrics JSON beside it, and prints
    the fp32 accuracy on the 500 held-out digits. Then:
      edgeconv export tiny --weights runs/tiny.pt --calib digits --out artifacts/tiny
      edgeconv check artifacts/tiny --data digits
    """
    from dataclasses import replace

    from ..train import TrainConfig, train as do_train
    from ..zoo import create_model
    net = create_model(model, twin=twin)
    cfg = TrainConfig()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    if threads:
        cfg = replace(cfg, threads=threads)
    out = out or f"runs/{net.card.name}{'_twin' if twin else ''}.pt"
    metrics = do_train(net, data, cfg, out=out, log=lambda s: err_console.print(s))
    console.print(f"{net.card.name}{' (twin)' if twin else ''}: fp32 top-1 {100 * metrics['fp32_top1']:.1f}% on the "
                  f"{metrics['eval_count']} held-out digits (train {100 * metrics['train_top1']:.1f}%), "
                  f"{metrics['seconds']:.0f} s on {metrics['threads']} thread(s); wrote {out}")


COMMANDS = [check, train]
