"""The ``edgeconv`` command. Each verb is one stage of the flow and one Python function."""
from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from .cost import human

console = Console()
err_console = Console(stderr=True)


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
    The flow, one verb a stage:
      edgeconv models                      the zoo, with params and MACs
      edgeconv info mobilenet_v2 --twin    per-block cost table, model vs its standard-conv twin
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


if __name__ == "__main__":
    main()
