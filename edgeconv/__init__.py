"""edgeconv: depthwise-separable conv nets to phones and ARM boards.

One function per verb of the flow (``create_model`` -> ``export`` -> ``verify`` / ``check`` ->
``bench`` / ``compare`` / ``profile`` -> ``predict``, ``report``; ``run`` chains them). Names load on first use, so
``import edgeconv`` (and a transport) does not import torch.
"""
from __future__ import annotations

import importlib

_VERBS = {
    "create_model": "zoo", "list_models": "zoo", "export": "exporters", "verify": "parity",
    "check": "accuracy", "bench": "benchmark", "compare": "benchmark", "device_facts": "device",
    "profile": "profiling", "predict": "prediction", "report": "reporting", "run": "pipeline",
}
__all__ = sorted(_VERBS)


def __getattr__(name: str):
    if name in _VERBS:
        value = getattr(importlib.import_module(f".{_VERBS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeconv' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
