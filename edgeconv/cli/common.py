"""What every ``edgeconv`` command shares: the consoles, error handling, progress bars and the
option parsers. Each stage's commands live in a module of their own and call one library
function each."""
from __future__ import annotations

import inspect
import os
import sys
import threading
import warnings

import click
from rich.console import Console
from rich.markup import escape

# Wide tables when piped to a file or CI log, the terminal's width otherwise.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message: str, code: int = 2):
    """``message`` is markup-escaped by the caller where it may hold brackets."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """edgeconv's own warnings as one line on stderr, without Python's echo of the source line."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def configure(verbose: bool) -> None:
    """Called once when the command starts: edgeconv's warnings as one line each, other
    libraries' chatter off the terminal unless ``verbose`` (``edgeconv.quiet``)."""
    from .. import quiet
    quiet.configure(verbose)
    quiet.keep_on_terminal(console, err_console)
    if not verbose:
        warnings.showwarning = _show_warning


class Group(click.Group):
    """Turns the library's named errors (ValueError, FileNotFoundError, FileExistsError, the lock
    and transport errors, and a file the system refuses) into a one-line error with exit code 2,
    instead of a traceback."""

    def invoke(self, ctx):
        from ..artifact import LockedError
        from ..device import TransportError
        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError, FileExistsError, LockedError, TransportError) as e:
            from ..quiet import message
            fail(escape(message(e)))
        except OSError as e:
            import errno
            hints = {errno.ENOSPC: "free some space or choose another folder",
                     errno.EDQUOT: "free some space or choose another folder",
                     errno.EROFS: "choose a folder you can write to", errno.EACCES: "choose a folder you can write to",
                     errno.EPERM: "choose a folder you can write to"}
            if e.filename is None and e.errno not in hints:
                raise  # no file to name: not the user's input but a fault to show whole
            fail(escape(f"cannot use {e.filename or 'the file'}: {e.strerror}; {hints.get(e.errno, 'check the path')}"))


def csv_option(value: str | None, allowed, what: str, required: bool = True) -> list[str]:
    """A comma-separated option checked against ``allowed``: an unknown or empty value is named
    with the allowed ones before any work starts."""
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or (required and not items):
        raise click.BadParameter(f"{', '.join(bad) or repr(value)}: {what} takes a comma-separated list of "
                                 f"{', '.join(sorted(allowed))}")
    return items


def int_list(value: str, what: str, minimum: int = 1) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: {what} takes whole numbers, e.g. 1,4") from None
    if not items or any(v < minimum for v in items):
        raise click.BadParameter(f"{value!r}: {what} takes whole numbers >= {minimum}")
    return items


def positive(name: str, minimum=0):
    """A click callback refusing values below ``minimum`` (and NaN / infinity)."""
    def check(ctx, param, value):
        import math
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise click.BadParameter(f"{value}: must be a finite number")
        if value < minimum:
            raise click.BadParameter(f"{value}: must be >= {minimum}")
        return value
    return check


class Progress:
    """Rich progress bars on stderr, one per key (a device, or one bar for an export), fed by
    ``(key, done, total, label)`` or ``(done, total, label)`` callbacks from any thread."""

    def __init__(self, title: str = ""):
        from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
        self.progress = RichProgress(TextColumn(f"{title}[bold]{{task.fields[key]}}[/] {{task.description}}"),
                                     BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                     console=err_console, transient=False)
        self.tasks: dict = {}
        self.lock = threading.Lock()

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, *args):
        key, done, total, label = args if len(args) == 4 else ("", *args)
        with self.lock:
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(label, total=max(total, 1), key=key)
            self.progress.update(self.tasks[key], completed=done, total=max(total, 1), description=label)


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


inventory_option = click.option(
    "--inventory", type=click.Path(dir_okay=False),
    help="Device inventory (TOML) [default: ./devices.toml if present]. `local` and `qemu-arm64` need none.")


def timing_options(f):
    for opt in reversed([
        click.option("--warmup", default=10, show_default=True, callback=positive("warmup"),
                     help="Untimed runs first."),
        click.option("--min-runs", default=50, show_default=True, callback=positive("min-runs", 1),
                     help="Timed runs at least."),
        click.option("--min-seconds", default=3.0, show_default=True, callback=positive("min-seconds"),
                     help="Timed seconds at least."),
        click.option("--max-seconds", default=120.0, show_default=True, callback=positive("max-seconds", 0.001),
                     help="Stop timing after this."),
        click.option("--affinity", help="Pin the agent to these CPUs, e.g. 2,3 or 0-3."),
    ]):
        f = opt(f)
    return f


def model_options(f):
    for opt in reversed([
        click.option("--twin", is_flag=True, help="Use the standard-conv twin instead of the model."),
        click.option("--weights", type=click.Path(dir_okay=False),
                     help="Checkpoint (state dict) to load, e.g. from `edgeconv train`."),
        click.option("--pretrained", is_flag=True, help="Load the zoo spec's pretrained weights (efficientnet_lite0)."),
        click.option("--width", type=float, help="Width multiplier (zoo models)."),
        click.option("--input-size", type=int,
                     help="Input resolution (required for a source given directly, e.g. nets.py:build)."),
    ]):
        f = opt(f)
    return f


MODEL_HELP = ("MODEL is a zoo name (`edgeconv models`), a model card or spec .toml, or a source given "
              "directly: pkg.module:callable, file.py:callable or model.pt2 (with --input-size).")


def with_model_help(cmd: click.Command) -> click.Command:
    """``cmd`` with MODEL_HELP after its own help (dedented first: click dedents a help text
    only as a whole, and MODEL_HELP's lines start at column 0)."""
    cmd.help = inspect.cleandoc(cmd.help or "") + "\n\n" + MODEL_HELP
    return cmd


def build_model(model, twin=False, weights=None, pretrained=False, width=None, input_size=None):
    """The model a command works on (``edgeconv.create_model``), with weights from a checkpoint."""
    from ..zoo import create_model, load_weights
    net = create_model(model, twin=twin, pretrained=pretrained, width=width, input_size=input_size)
    if weights:
        load_weights(net, weights)
    return net
