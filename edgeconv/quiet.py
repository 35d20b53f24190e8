"""Keep other libraries' chatter off the terminal; edgeconv's own output always shows.

Two layers:

* ``configure(verbose)``, once at CLI start (before the exporters and runtimes are
  imported): environment variables the native libraries honour, levels for the Python
  loggers that talk at import, a root log handler that shows other libraries' records
  only from ERROR up (all of them with ``verbose``), and warnings filters that hide other
  libraries' warnings (edgeconv's own always show). Nothing is touched with ``verbose``
  except that the root handler is installed (so a library's bare ``logging.warning()``
  cannot call ``basicConfig`` behind our back).
* ``native_output(label)``: a context manager around calls into native code that log
  with printf / absl / ET_LOG straight to file descriptors 1 and 2, which no Python switch
  reaches. Inside it fds 1 and 2 (and ``sys.stdout`` / ``sys.stderr``) go to the log file
  ``log_path()``; the rich consoles registered with ``keep_on_terminal`` are pinned to the
  saved terminal fds, so progress bars and edgeconv's warnings keep drawing. When the
  block raises, the captured text (its tail) is added to the exception as a PEP 678 note
  (``message(e)`` gives str(e) plus the notes, for one-line error printers) and stays in
  the log file in full. With ``verbose`` (or before ``configure``) it does nothing.
"""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import io
import logging
import os
import sys
import tempfile
import threading
import time
import warnings

# Read by the native libraries when they load (set only where the user has not).
# TF_CPP_MIN_LOG_LEVEL=2 drops absl/TF INFO and WARNING, keeps ERROR (so an error still
# reaches native_output and the exception): jaxlib's "pjrt_client.cc PjRt-IFRT device
# count" pair and the litert converter's "flatbuffer_export.cc Estimated count of
# arithmetic ops" (one per TFLite export). Not honoured by the litert_converter._mlir
# static initialiser (absl "All log messages before absl::InitializeLog()" + oneDNN
# notice) nor by TFLite's minimal logger (XNNPACK line): those need native_output.
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}

# Python loggers that either do not propagate to the root (torch installs its own
# handler with propagate=False) or that we want quiet however the root is set up.
LOGGER_LEVELS = {
    "torch.utils._pytree": logging.ERROR,   # "<enum 'KernelPreference'> is an Enum subclass ..." (torchao import)
    "torchao": logging.ERROR,               # "Failed to load .../_C_mxfp8...so" (torchao import, CUDA/py3.10 .so)
}

OWN = "edgeconv"          # logger / module prefix of edgeconv's own messages
_TAIL_CHARS = 2000        # how much captured native text goes into an exception note

_state = {"configured": False, "verbose": True, "log_path": None}
_consoles: list = []
_lock = threading.RLock()
_depth = 0


def verbose() -> bool:
    """Whether other libraries' output is shown (``configure(verbose=True)``, or not configured)."""
    return _state["verbose"]


def log_path() -> str:
    return _state["log_path"] or os.environ.get("EDGECONV_NATIVE_LOG") or os.path.join(
        tempfile.gettempdir(), f"edgeconv-native-{os.getuid() if hasattr(os, 'getuid') else 'user'}.log")


class _RootHandler(logging.Handler):
    """Other libraries' records from ``level_others`` up, edgeconv's from WARNING up, on
    whatever stderr is current (rich's Live proxy keeps them above a progress bar)."""

    def __init__(self, level_others: int):
        super().__init__(logging.NOTSET)
        self.level_others = level_others
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record):
        own = record.name == OWN or record.name.startswith(OWN + ".")
        if record.levelno < (logging.WARNING if own else self.level_others):
            return
        try:
            stream = _terminal_stream(2)
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure(verbose: bool = False, log_file: str | None = None) -> None:
    """Call once at CLI start, before the exporters and runtimes are imported."""
    _state.update(configured=True, verbose=bool(verbose), log_path=log_file)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _RootHandler)]:
        root.removeHandler(h)
    # A handler on the root before any library logs: a library's bare logging.warning()
    # (litert-torch's "converted in training mode") then no longer runs basicConfig().
    root.addHandler(_RootHandler(logging.WARNING if verbose else logging.ERROR))
    if verbose:
        return
    for var, val in ENV.items():
        os.environ.setdefault(var, val)
    for name, level in LOGGER_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    if not sys.warnoptions:  # python -W / PYTHONWARNINGS win
        own = rf"{OWN}(\.|$)"
        warnings.filterwarnings("ignore")                       # other libraries' warnings
        warnings.filterwarnings("default", module=own)          # ...but every warning edgeconv's code raises
        for cat in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=cat, module=own)  # API notices aimed at developers
    # A crash inside a native block must not be silent: fatal-signal tracebacks go to the
    # terminal's stderr even while fd 2 is redirected.
    if _state.get("fault_file") is None:
        try:
            _state["fault_file"] = os.fdopen(os.dup(2), "w", closefd=True)
            faulthandler.enable(file=_state["fault_file"])
            atexit.register(_close_fault_file)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass


def _close_fault_file() -> None:
    f = _state.pop("fault_file", None)
    if f is not None:
        faulthandler.disable()
        f.close()


def keep_on_terminal(*consoles) -> None:
    """Rich consoles (edgeconv's own output) that stay on the terminal inside ``native_output``."""
    for c in consoles:
        if c not in _consoles:
            _consoles.append(c)


_term = {}   # fd -> text file on the saved terminal fd, while a block is active


def _terminal_stream(fd: int):
    return _term.get(fd) or (sys.stderr if fd == 2 else sys.stdout)


def _fileno(f):
    try:
        return f.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


class Capture:
    """What a block wrote to fds 1/2 (``text`` after the block)."""

    def __init__(self, label: str):
        self.label, self.text, self.path = label, "", None


def message(e: BaseException) -> str:
    """``str(e)`` followed by its notes (the captured native output): for one-line printers."""
    notes = getattr(e, "__notes__", None) or []
    return "\n".join([str(e), *notes])


@contextlib.contextmanager
def native_output(label: str = "", verbose: bool | None = None):
    """Send native output of the block (fds 1 and 2) to ``log_path()``; see the module doc."""
    global _depth
    verbose = _state["verbose"] if verbose is None else verbose
    cap = Capture(label)
    if verbose or _depth:  # shown as is / already captured by an outer block
        yield cap
        return
    path = log_path()
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    log = open(path, "ab")
    head = log.tell()
    log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} {label}\n".encode())
    log.flush()
    start = log.tell()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    old_sys = sys.stdout, sys.stderr
    pinned = []
    with _lock:
        _depth += 1
        for fd in (1, 2):
            _term[fd] = open(saved[fd], "w", closefd=False, buffering=1,
                             encoding=getattr(old_sys[fd - 1], "encoding", None) or "utf-8",
                             errors="backslashreplace")
        for c in _consoles:   # edgeconv's consoles: onto the saved terminal fd, or stay where they write
            fd = _fileno(c.file)
            if fd in (1, 2):
                pinned.append(c)
                c.file = _term[fd]
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python-level writes of other code inside the block go with the native ones.
        capture_text = open(log.fileno(), "w", closefd=False, buffering=1, encoding="utf-8",
                            errors="backslashreplace")
        sys.stdout = sys.stderr = capture_text
    try:
        yield cap
    except BaseException as e:
        capture_text.flush()
        cap.text = _read(path, start)
        if cap.text.strip() and not isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            tail = cap.text.strip()[-_TAIL_CHARS:]
            with contextlib.suppress(Exception):
                e.add_note(f"native output{f' ({label})' if label else ''}, full text in {path}:\n{tail}")
        raise
    finally:
        with _lock:
            with contextlib.suppress(Exception):
                capture_text.flush()
            sys.stdout, sys.stderr = old_sys
            for c in pinned:  # back to following sys.stdout / sys.stderr
                c.file = None
            for fd in (1, 2):
                f = _term.pop(fd)
                with contextlib.suppress(Exception):
                    f.flush()
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
            _depth -= 1
        if not cap.text:
            cap.text = _read(path, start)
        cap.path = path
        if not cap.text and os.path.getsize(path) == start:  # nothing said: drop the header again
            log.truncate(head)
        log.close()


def _read(path: str, start: int) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "backslashreplace")
