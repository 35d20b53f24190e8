"""``edgeconv run`` (the main job) and ``edgeconv report``."""
from __future__ import annotations

import time

import click

from .common import Progress, console, err_console


@click.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--out", default="runs/default", show_default=True, type=click.Path(file_okay=False),
              help="Run folder; running again resumes where the last run stopped.")
@click.option("--force", is_flag=True, help="Start over: delete what an earlier run wrote in --out.")
def run_cmd(config, out, force):
    """The main job: model and twin -> train -> export -> verify -> check -> bench -> report.

    \b
    Without CONFIG it runs the embedded default: the tiny model and its standard-conv twin,
    trained on scikit-learn's bundled digits, exported to all three formats in fp32 and int8,
    checked for accuracy on held-out digits and benchmarked on this host. CONFIG is a TOML
    file with one table per stage ([model], [data], [train], [export], [quant], [bench],
    [sweep]; see configs/lite0_pi.toml); every key is checked before anything runs. With
    cluster = "HOST:PORT" under [bench] the benchmarks and the [sweep] variants run on that
    Ray cluster (README: "A device lab on a Ray cluster").

    \b
    Examples:
      edgeconv run                                  # the embedded default, into runs/default
      edgeconv run configs/lite0_pi.toml --out runs/lite0
    """
    from ..pipeline import run
    t0 = time.perf_counter()
    with Progress() as bar:
        report = run(config, out, force=force, log=lambda m: err_console.print(m, markup=False), progress=bar)
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s; report: {report}")


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report_cmd(run_dir):
    """Rebuild report.html (self-contained), report.md, report.json and the plots (RUN_DIR/plots/)
    of RUN_DIR from its files alone: a run folder (`edgeconv run`), a profile folder (`edgeconv
    profile`: per-block tables, bar and roofline charts), or any folder whose results.jsonl holds
    bench records (sustained runs: latency and temperature over time). What cannot be read is left
    out with a warning.

    \b
    Examples:
      edgeconv report runs/default
      edgeconv report profiles/mobilenet_v2_onnxruntime"""
    from ..reporting import report
    paths = report(run_dir)
    for p in paths["problems"]:
        err_console.print(f"[yellow]warning:[/] {p}", highlight=False)
    console.print(f"report: {paths['html']} (+ report.md, {len(paths['plots'])} plots)")


COMMANDS = [run_cmd, report_cmd]
