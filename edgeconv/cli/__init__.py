"""The ``edgeconv`` command: one thin module per stage, each verb one library function."""
from __future__ import annotations

import click

from . import accuracy, device, export, models, profile, run
from .common import Group, configure


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="edgeconv")
@click.option("-v", "--verbose", is_flag=True, help="Also show the native libraries' own log lines.")
def main(verbose):
    """Depthwise-separable conv nets, from spec to phone.

    \b
    The flow, one verb a stage (`edgeconv run` chains them on the embedded default):
      edgeconv models                       the zoo, with params and MACs
      edgeconv info mobilenet_v2 --twin     per-block cost table, model vs its standard-conv twin
      edgeconv info my_card.toml            your own model (a card naming its nn.Module), layer by layer
      edgeconv train tiny --out tiny.pt     train on the bundled digits
      edgeconv export tiny --weights tiny.pt   int8 + fp32 to ONNX, TFLite, ExecuTorch (artifact folder)
      edgeconv verify artifacts/tiny        parity matrix across runtimes
      edgeconv check artifacts/tiny --data digits   fp32 vs int8 accuracy per runtime
      edgeconv bench artifacts/tiny --device local,qemu-arm64   latency -> results.jsonl
      edgeconv compare mobilenet_v2         latency of model vs its standard-conv twin
      edgeconv profile mobilenet_v2         ... block by block, with bar and roofline charts
      edgeconv predict mobilenet_v1 --width 0.75 --input-size 160   latency from the profiles
      edgeconv run                          all of it, with a report (runs/default/report.html)
      edgeconv report runs/default          rebuild a run's or a profile's report from its files
    """
    configure(verbose)


for module in (models, export, accuracy, device, profile, run):
    for command in module.COMMANDS:
        main.add_command(command)

if __name__ == "__main__":
    main()
