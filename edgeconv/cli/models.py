"""``edgeconv models`` and ``edgeconv info``: what a model costs, beside its standard-conv twin."""
from __future__ import annotations

import json

import click
from rich.table import Table

from ..cost import human
from .common import console, with_model_help


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json):
    """List the zoo models with their params and MACs (and their standard-conv twins')."""
    from ..zoo import create_model, list_models, load_spec
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
    console.print("Your own model: `edgeconv info path/to/card.toml` (see README, \"Your own model\").")


@click.command()
@click.argument("model")
@click.option("--twin", is_flag=True, help="Show the standard-conv twin's rows instead.")
@click.option("--width", type=float, help="Width multiplier (zoo models), e.g. 0.5.")
@click.option("--input-size", type=int, help="Input resolution, e.g. 160.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def info(model, twin, width, input_size, as_json):
    """Cost of MODEL, block by block (zoo) or layer by layer (your own model), and totals beside
    its standard-conv twin's.

    \b
    For a card model every Conv2d and Linear met in a real forward pass is a row: module path,
    kind (standard / pointwise / depthwise / grouped / linear), output shape, params, MACs.
    """
    from ..card import model_cost
    from ..zoo import create_model
    net = create_model(model, width=width, input_size=input_size)
    twin_net = create_model(model, twin=True, width=width, input_size=input_size)
    cost, twin_cost = model_cost(net), model_cost(twin_net)
    shown = twin_cost if twin else cost
    if as_json:
        click.echo(json.dumps({"model": net.card.name, "source": net.card.source, "cost": cost,
                               "twin_cost": twin_cost, "mac_ratio": twin_cost["macs"] / cost["macs"],
                               "param_ratio": twin_cost["params"] / cost["params"]}, indent=2))
        return
    per_layer = not hasattr(net, "spec")
    title = f"{net.card.name}{' (standard-conv twin)' if twin else ''} @ {tuple(shown['input_shape'])}"
    table = Table(title=title)
    cols = ("layer", "kind", "output", "params", "MACs", "MAC share") if per_layer else \
        ("block", "kind", "arch", "output", "params", "MACs", "MAC share")
    for col in cols:
        table.add_column(col, justify="right" if col in ("params", "MACs", "MAC share") else "left", no_wrap=True)
    for b in shown["blocks"]:
        cells = [b["name"], b["kind"]] + ([] if per_layer else [b["arch"]])
        table.add_row(*cells, "x".join(map(str, b["out_shape"])), f"{b['params']:,}", f"{b['macs']:,}",
                      f"{100 * b['macs'] / shown['macs']:.1f}%")
    console.print(table)
    totals = Table(title="totals")
    for col in ("", "params", "MACs", "activations (fp32)"):
        totals.add_column(col, justify="right")
    totals.add_row("model", f"{cost['params']:,}", f"{cost['macs']:,}", human(cost["act_bytes"], "B"))
    totals.add_row("standard-conv twin", f"{twin_cost['params']:,}", f"{twin_cost['macs']:,}",
                   human(twin_cost["act_bytes"], "B"))
    totals.add_row("twin / model", f"{twin_cost['params'] / cost['params']:.2f}x",
                   f"{twin_cost['macs'] / cost['macs']:.2f}x", "")
    console.print(totals)


with_model_help(info)
COMMANDS = [models, info]
